//! mailbox-gateway: puts raw FTS item streams back into Exchange Online mailboxes.
//!
//! The binary (`src/main.rs`) is thin; everything it runs lives here so that tests start the very same
//! servers on `127.0.0.1:0`. See `ARCHITECTURE.md` for the map.

pub mod access;
pub mod api;
pub mod app;
pub mod audit_log;
pub mod auth;
pub mod batch_writer;
pub mod budget;
pub mod config;
pub mod fts;
pub mod graph;
pub mod idempotency;
pub mod ids;
pub mod metrics;
pub mod refresh;
pub mod server;
pub mod simulator;
pub mod store;
pub mod tls;
