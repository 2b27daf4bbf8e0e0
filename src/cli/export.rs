//! `mailbox-gateway export`.

use std::process::ExitCode;

/// The arguments of `mailbox-gateway export`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub async fn run(_args: Args) -> ExitCode {
    eprintln!("error: not built yet");
    ExitCode::FAILURE
}
