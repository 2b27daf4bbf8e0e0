//! Walks the frames of an item stream: `[u32 opcode][i32 length][payload]`, little-endian, back to back
//! to the last byte (docs/upstream.md section 7).
//!
//! The gateway walks the frames before it spends any upstream call, so a truncated or corrupt upload is
//! refused with the byte offset of the problem. The walk allocates nothing and looks at each byte of
//! frame headers once; payloads are skipped, not read.

use super::error::{StreamError, StreamProblem};

/// Opcode of the `Config` FastTransfer call.
pub const OP_CONFIG: u32 = 1;
/// Opcode of a `TransferBuffer`: a slice of the MS-OXCFXICS property stream.
pub const OP_TRANSFER_BUFFER: u32 = 2;
/// Opcode of the `IsInterfaceOk` call.
pub const OP_IS_INTERFACE_OK: u32 = 3;
/// Opcode of the `TellPartnerVersion` call.
pub const OP_TELL_PARTNER_VERSION: u32 = 4;

/// Bytes in a frame header: the opcode and the payload length.
pub(crate) const HEADER_LEN: usize = 8;

/// What a well-formed stream holds, for logs and audit lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    /// Number of frames in the stream.
    pub frames: usize,
    /// Total payload bytes of all TransferBuffer frames (the property stream's length).
    pub transfer_bytes: usize,
}

/// Walks the frames of `stream` and says whether it is a well-formed item stream.
///
/// Well formed means: a whole number of frames ending exactly at the end, every opcode known, every
/// length non-negative and inside the buffer, the fixed-size calls (Config, IsInterfaceOk,
/// TellPartnerVersion) of their documented size, and at least one TransferBuffer, none of them empty.
pub fn check(stream: &[u8]) -> Result<StreamSummary, StreamError> {
    if stream.is_empty() {
        return Err(StreamError {
            offset: 0,
            problem: StreamProblem::Empty,
        });
    }
    let mut offset = 0;
    let mut summary = StreamSummary {
        frames: 0,
        transfer_bytes: 0,
    };
    while offset < stream.len() {
        let fail = |problem| Err(StreamError { offset, problem });
        let remaining = stream.len() - offset;
        if remaining < HEADER_LEN {
            return fail(StreamProblem::TruncatedHeader { remaining });
        }
        let opcode = u32::from_le_bytes(stream[offset..offset + 4].try_into().expect("4 bytes"));
        let length =
            i32::from_le_bytes(stream[offset + 4..offset + 8].try_into().expect("4 bytes"));
        let Ok(declared) = usize::try_from(length) else {
            return fail(StreamProblem::NegativeLength(length));
        };
        match (opcode, fixed_payload_size(opcode)) {
            (_, Some(expected)) if expected != declared => {
                return fail(StreamProblem::WrongPayloadSize {
                    opcode,
                    expected,
                    declared,
                })
            }
            (OP_TRANSFER_BUFFER, _) if declared == 0 => {
                return fail(StreamProblem::EmptyTransferBuffer)
            }
            (OP_TRANSFER_BUFFER, _) | (11..=17, _) | (_, Some(_)) => {}
            _ => return fail(StreamProblem::UnknownOpcode(opcode)),
        }
        let remaining = remaining - HEADER_LEN;
        if declared > remaining {
            return fail(StreamProblem::TruncatedPayload {
                declared,
                remaining,
            });
        }
        if opcode == OP_TRANSFER_BUFFER {
            summary.transfer_bytes += declared;
        }
        summary.frames += 1;
        offset += HEADER_LEN + declared;
    }
    if summary.transfer_bytes == 0 {
        return Err(StreamError {
            offset: stream.len(),
            problem: StreamProblem::NoTransferBuffer,
        });
    }
    Ok(summary)
}

/// The payload size of the calls whose parameters are fixed (docs/upstream.md section 7).
fn fixed_payload_size(opcode: u32) -> Option<usize> {
    match opcode {
        OP_CONFIG => Some(8),
        OP_IS_INTERFACE_OK => Some(24),
        OP_TELL_PARTNER_VERSION => Some(6),
        _ => None,
    }
}

/// The payloads of the TransferBuffer frames of a stream `check` accepted, each with the byte offset
/// where it starts: the property stream, in the pieces the frames cut it into.
pub(crate) fn transfer_buffers(stream: &[u8]) -> Vec<(usize, &[u8])> {
    let mut buffers = Vec::new();
    let mut offset = 0;
    while let Some(header) = stream.get(offset..offset + HEADER_LEN) {
        let opcode = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let length = u32::from_le_bytes(header[4..].try_into().expect("4 bytes")) as usize;
        let start = offset + HEADER_LEN;
        let Some(payload) = stream.get(start..start.saturating_add(length)) else {
            break;
        };
        if opcode == OP_TRANSFER_BUFFER {
            buffers.push((start, payload));
        }
        offset = start + length;
    }
    buffers
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fts::ItemBuilder;

    proptest! {
        #[test]
        fn any_bytes_are_judged_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            match check(&bytes) {
                Ok(summary) => {
                    prop_assert!(summary.transfer_bytes > 0 && summary.transfer_bytes <= bytes.len());
                    prop_assert!(summary.frames >= 1);
                }
                Err(error) => prop_assert!(error.offset <= bytes.len()),
            }
        }

        #[test]
        fn built_items_pass_and_cuts_of_them_are_judged_by_their_frames(
            subject in "\\PC{0,40}",
            padding in 0usize..2000,
            chunk in 1usize..300,
            cut in any::<prop::sample::Index>(),
        ) {
            let item = ItemBuilder::new(&subject).padding(padding).max_transfer_buffer(chunk).build();
            let whole = check(&item).unwrap();
            prop_assert!(check(&item[..item.len() - 1]).is_err(), "a frame cut short is refused");
            // A cut at a frame boundary is a shorter, well-formed stream; anywhere else it is refused.
            let cut = cut.index(item.len());
            match check(&item[..cut]) {
                Ok(prefix) => prop_assert!(prefix.transfer_bytes < whole.transfer_bytes),
                Err(error) => prop_assert!(error.offset <= cut),
            }
        }

        #[test]
        fn a_corrupted_frame_header_never_panics(
            padding in 0usize..500,
            position in any::<prop::sample::Index>(),
            value in any::<u8>(),
        ) {
            let mut item = ItemBuilder::new("x").padding(padding).build();
            let position = position.index(item.len());
            item[position] = value;
            let _ = check(&item);
        }
    }

    fn frame(opcode: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = opcode.to_le_bytes().to_vec();
        out.extend_from_slice(&(payload.len() as i32).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn built_items_are_well_formed() {
        let item = ItemBuilder::new("Hello").body("World").build();
        let summary = check(&item).unwrap();
        assert_eq!(summary.frames, 4);
        assert!(summary.transfer_bytes > 20);
    }

    #[test]
    fn large_items_span_several_transfer_buffers() {
        let item = ItemBuilder::new("Big")
            .padding(100_000)
            .max_transfer_buffer(10_000)
            .build();
        let summary = check(&item).unwrap();
        assert_eq!(summary.frames, 3 + 11);
    }

    #[test]
    fn a_stream_cut_off_inside_its_transfer_buffer_is_rejected_there() {
        // The shape of the documentation's truncated sample (docs/upstream.md section 7): the three set-up
        // calls, then a TransferBuffer that declares 31,680 bytes of which 23 are present.
        let mut data = ItemBuilder::new("x").build();
        let setup_len = 8 + 8 + 8 + 24 + 8 + 6;
        data.truncate(setup_len);
        data.extend_from_slice(&OP_TRANSFER_BUFFER.to_le_bytes());
        data.extend_from_slice(&31_680i32.to_le_bytes());
        data.extend_from_slice(&[0x03, 0x00, 0x17, 0x00, 0x01, 0x00, 0x00, 0x00]);
        data.extend_from_slice(&[0; 15]);
        let err = check(&data).unwrap_err();
        assert_eq!(err.offset, setup_len);
        assert_eq!(
            err.problem,
            StreamProblem::TruncatedPayload {
                declared: 31_680,
                remaining: 23
            }
        );
    }

    #[test]
    fn an_empty_stream_is_rejected() {
        assert_eq!(check(&[]).unwrap_err().problem, StreamProblem::Empty);
    }

    #[test]
    fn trailing_bytes_are_a_truncated_header() {
        let mut item = ItemBuilder::new("x").build();
        let len = item.len();
        item.extend_from_slice(&[2, 0, 0]);
        let err = check(&item).unwrap_err();
        assert_eq!(err.offset, len);
        assert_eq!(err.problem, StreamProblem::TruncatedHeader { remaining: 3 });
    }

    #[test]
    fn unknown_opcodes_negative_lengths_and_empty_buffers_are_rejected() {
        let err = check(&frame(9, b"abc")).unwrap_err();
        assert_eq!(err.problem, StreamProblem::UnknownOpcode(9));

        let mut negative = 2u32.to_le_bytes().to_vec();
        negative.extend_from_slice(&(-5i32).to_le_bytes());
        assert_eq!(
            check(&negative).unwrap_err().problem,
            StreamProblem::NegativeLength(-5)
        );

        let mut empty_buffer = frame(OP_TRANSFER_BUFFER, b"props");
        empty_buffer.extend(frame(OP_TRANSFER_BUFFER, b""));
        let err = check(&empty_buffer).unwrap_err();
        assert_eq!(err.offset, 13);
        assert_eq!(err.problem, StreamProblem::EmptyTransferBuffer);
    }

    #[test]
    fn fixed_size_calls_must_have_their_size() {
        let err = check(&frame(OP_CONFIG, &[0; 4])).unwrap_err();
        assert_eq!(
            err.problem,
            StreamProblem::WrongPayloadSize {
                opcode: 1,
                expected: 8,
                declared: 4
            }
        );
    }

    #[test]
    fn a_stream_without_transfer_buffers_carries_no_item() {
        let err = check(&frame(OP_CONFIG, &[0; 8])).unwrap_err();
        assert_eq!(err.problem, StreamProblem::NoTransferBuffer);
        assert_eq!(err.offset, 16);
    }

    #[test]
    fn errors_read_as_sentences_with_the_offset() {
        let err = check(&frame(9, b"")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "at byte 0: unknown frame opcode 9 (item streams use 1-4 and 11-17)"
        );
    }
}
