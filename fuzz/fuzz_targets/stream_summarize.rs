//! Feeds arbitrary bytes to the item stream decoder: it must never panic, and its verdict must agree
//! with the frame check and stay inside the input.
//!
//! Random bytes rarely make valid frames, which would leave the property decoder unexercised. So when
//! the first byte is odd, the rest of the input is taken as a property stream and wrapped in well-formed
//! frames, cut into TransferBuffers of `first byte / 2 + 1` bytes, so that values split across frames
//! too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailbox_gateway::fts::{check, summarize, MessageSummary};

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((&mode, properties)) if mode & 1 == 1 && !properties.is_empty() => {
            let stream = framed(properties, usize::from(mode / 2) + 1);
            judge(&stream);
        }
        _ => judge(data),
    }
});

fn judge(stream: &[u8]) {
    match summarize(stream) {
        Ok(summary) => {
            let frames = check(stream).expect("what decodes has well-formed frames");
            assert_eq!(summary.stream, frames);
            assert_eq!(summary.size, stream.len());
            // Every property takes at least a tag and a two-byte value.
            assert!(summary.total_properties <= frames.transfer_bytes / 6);
            assert_eq!(counted(&summary.message), summary.total_properties);
        }
        Err(error) => {
            assert!(error.offset <= stream.len());
            // The decoder checks frames first, so a frame error is the frame check's own.
            if let Err(frame_error) = check(stream) {
                assert_eq!(error, frame_error);
            }
        }
    }
}

/// The properties of an item, its recipients and attachments, and its embedded items.
fn counted(message: &MessageSummary) -> usize {
    message.properties
        + message
            .recipients
            .iter()
            .map(|r| r.properties)
            .sum::<usize>()
        + message
            .attachments
            .iter()
            .map(|a| a.properties + a.embedded.as_deref().map_or(0, counted))
            .sum::<usize>()
}

/// `properties` in the set-up frames known producers write and TransferBuffers of at most `chunk` bytes.
fn framed(properties: &[u8], chunk: usize) -> Vec<u8> {
    let mut stream = Vec::with_capacity(properties.len() + 128);
    let mut frame = |opcode: u32, payload: &[u8]| {
        stream.extend_from_slice(&opcode.to_le_bytes());
        stream.extend_from_slice(&(payload.len() as i32).to_le_bytes());
        stream.extend_from_slice(payload);
    };
    frame(1, &[0, 0, 0, 0, 1, 0, 0, 0]);
    let mut interface = vec![1, 0, 0, 0];
    interface.extend_from_slice(&[
        0x07, 0x03, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x46,
    ]);
    interface.extend_from_slice(&0x8000_2400u32.to_le_bytes());
    frame(3, &interface);
    frame(4, &[0x14, 0x0F, 0xD6, 0x91, 0x86, 0x17]);
    for piece in properties.chunks(chunk) {
        frame(2, piece);
    }
    stream
}
