//! mailbox-gateway: puts raw FTS item streams back into Exchange Online mailboxes.
//!
//! The binary (`src/main.rs`) is thin; everything it runs lives here so that tests start the very same
//! servers on `127.0.0.1:0`. See `ARCHITECTURE.md` for the map.
//!
//! The public modules are what the binary, the tests and the benchmark use: the app and its
//! configuration, the API's route table, the stream format, client rules and the log writers. The rest
//! is the gateway's own business.

pub mod access;
pub mod api;
pub mod app;
pub mod audit_log;
mod auth;
pub mod batch_writer;
mod budget;
pub mod cli;
pub mod clock;
pub mod config;
pub mod fts;
mod graph;
mod idempotency;
mod ids;
mod metrics;
mod refresh;
mod server;
mod settings;
mod store;
mod tls;
