//! Drives the Exchange Online simulator over real sockets, as the gateway will; one file per concern.

mod admin;
mod behaviour;
mod clock;
mod delegated;
mod export;
mod faults;
mod graph;
mod helpers;
mod import;
mod items;
mod stream;
mod token;
