//! Feeds arbitrary bytes to the item stream check: it must never panic, and its verdict must hold up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailbox_gateway::fts::check;

fuzz_target!(|data: &[u8]| {
    match check(data) {
        Ok(summary) => {
            // A well-formed stream has a non-empty TransferBuffer inside the input.
            assert!(summary.transfer_bytes > 0 && summary.transfer_bytes <= data.len());
            assert!(summary.frames >= 1);
        }
        Err(error) => assert!(error.offset <= data.len()),
    }
});
