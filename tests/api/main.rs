//! Integration tests: the simulator and the gateway as real HTTP servers on loopback.

mod auth;
mod capacity;
mod contract;
mod delegated;
mod errors;
mod folders;
mod helpers;
mod idempotency;
mod items;
mod observability;
mod reads;
mod replicas;
mod resilience;
mod security;
mod sessions;
mod soak;
mod upstream;
