//! Checks that an import's decoded `Data` is a well-formed item stream (docs/upstream.md section 7).
//!
//! This is the simulator's own frame walker, written from the contract rather than borrowed from the
//! crate's `fts` module, so that a misreading of the format on either side shows up as a failing test.
//! It checks framing only; the MS-OXCFXICS property stream inside the TransferBuffers is not parsed.

/// Frame opcode of a `TransferBuffer`, the frame that carries the item's property stream.
pub(crate) const TRANSFER_BUFFER: u32 = 2;

/// Every frame is `[u32 LE opcode][i32 LE length][length bytes of payload]`.
const HEADER_LEN: usize = 8;

/// One frame of an item stream, borrowing its payload from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame<'a> {
    pub opcode: u32,
    pub payload: &'a [u8],
}

/// Why a buffer is not a well-formed item stream; offsets are byte offsets of the offending frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("frame header at offset {offset} is truncated ({remaining} bytes left, 8 needed)")]
    TruncatedHeader { offset: usize, remaining: usize },
    #[error("frame at offset {offset} has unknown opcode {opcode}")]
    UnknownOpcode { offset: usize, opcode: u32 },
    #[error("frame at offset {offset} declares a negative length {length}")]
    NegativeLength { offset: usize, length: i32 },
    #[error(
        "frame at offset {offset} declares {length} payload bytes but only {remaining} remain"
    )]
    PayloadPastEnd {
        offset: usize,
        length: usize,
        remaining: usize,
    },
    #[error("TransferBuffer frame at offset {offset} is empty")]
    EmptyTransferBuffer { offset: usize },
    #[error("the stream contains no TransferBuffer frame")]
    NoTransferBuffer,
}

/// Walks `data` frame by frame and returns the frames if the whole buffer is a well-formed item stream.
///
/// Well-formed means: frames follow each other exactly to the end of the buffer, every opcode is one of
/// the FastTransfer calls (1-4, 11-17), no length is negative or runs past the end, there is at least one
/// TransferBuffer, and no TransferBuffer is empty (Exchange's own reader rejects that as corrupt).
pub(crate) fn validate(data: &[u8]) -> Result<Vec<Frame<'_>>, StreamError> {
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let rest = &data[offset..];
        if rest.len() < HEADER_LEN {
            return Err(StreamError::TruncatedHeader {
                offset,
                remaining: rest.len(),
            });
        }
        let opcode = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
        let length = i32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if !is_known_opcode(opcode) {
            return Err(StreamError::UnknownOpcode { offset, opcode });
        }
        let length =
            usize::try_from(length).map_err(|_| StreamError::NegativeLength { offset, length })?;
        let remaining = rest.len() - HEADER_LEN;
        if length > remaining {
            return Err(StreamError::PayloadPastEnd {
                offset,
                length,
                remaining,
            });
        }
        if opcode == TRANSFER_BUFFER && length == 0 {
            return Err(StreamError::EmptyTransferBuffer { offset });
        }
        frames.push(Frame {
            opcode,
            payload: &rest[HEADER_LEN..HEADER_LEN + length],
        });
        offset += HEADER_LEN + length;
    }
    if !frames.iter().any(|frame| frame.opcode == TRANSFER_BUFFER) {
        return Err(StreamError::NoTransferBuffer);
    }
    Ok(frames)
}

/// Config (1), TransferBuffer (2), IsInterfaceOk (3), TellPartnerVersion (4) and the other FastTransfer
/// calls (11-17); nothing else has ever been seen in an item stream.
fn is_known_opcode(opcode: u32) -> bool {
    matches!(opcode, 1..=4 | 11..=17)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = opcode.to_le_bytes().to_vec();
        out.extend_from_slice(&(payload.len() as i32).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn header(opcode: u32, length: i32) -> Vec<u8> {
        let mut out = opcode.to_le_bytes().to_vec();
        out.extend_from_slice(&length.to_le_bytes());
        out
    }

    fn typical_item() -> Vec<u8> {
        let mut data = frame(1, &[0, 0, 0, 0, 1, 0, 0, 0]);
        data.extend(frame(3, &[0; 24]));
        data.extend(frame(4, &[0x14, 0x0F, 0xD6, 0x91, 0x86, 0x17]));
        data.extend(frame(2, b"first part"));
        data.extend(frame(2, b"second part"));
        data
    }

    #[test]
    fn a_typical_item_stream_yields_its_frames_in_order() {
        let data = typical_item();
        let frames = validate(&data).unwrap();
        let opcodes: Vec<u32> = frames.iter().map(|f| f.opcode).collect();
        assert_eq!(opcodes, [1, 3, 4, 2, 2]);
        assert_eq!(frames[4].payload, b"second part");
    }

    #[test]
    fn a_lone_transfer_buffer_is_enough() {
        assert_eq!(validate(&frame(2, b"x")).unwrap().len(), 1);
    }

    #[test]
    fn every_fast_transfer_opcode_is_accepted() {
        for opcode in [1, 3, 4, 11, 12, 13, 14, 15, 16, 17] {
            let mut data = frame(opcode, b"");
            data.extend(frame(2, b"x"));
            assert!(validate(&data).is_ok(), "opcode {opcode}");
        }
    }

    #[test]
    fn an_empty_buffer_has_no_transfer_buffer() {
        assert_eq!(validate(&[]), Err(StreamError::NoTransferBuffer));
    }

    #[test]
    fn a_stream_without_transfer_buffer_is_rejected() {
        assert_eq!(
            validate(&frame(1, &[0; 8])),
            Err(StreamError::NoTransferBuffer)
        );
    }

    #[test]
    fn a_zero_length_transfer_buffer_is_rejected() {
        let mut data = frame(2, b"x");
        data.extend(frame(2, b""));
        assert_eq!(
            validate(&data),
            Err(StreamError::EmptyTransferBuffer { offset: 9 })
        );
    }

    #[test]
    fn unknown_opcodes_are_rejected() {
        for opcode in [0, 5, 10, 18, u32::MAX] {
            let mut data = frame(2, b"x");
            data.extend(frame(opcode, b"y"));
            assert_eq!(
                validate(&data),
                Err(StreamError::UnknownOpcode { offset: 9, opcode })
            );
        }
    }

    #[test]
    fn a_truncated_header_is_rejected() {
        let mut data = frame(2, b"x");
        data.extend([1, 0, 0]);
        assert_eq!(
            validate(&data),
            Err(StreamError::TruncatedHeader {
                offset: 9,
                remaining: 3
            })
        );
    }

    #[test]
    fn a_payload_running_past_the_end_is_rejected() {
        let mut data = header(2, 31_680);
        data.extend([0; 23]);
        assert_eq!(
            validate(&data),
            Err(StreamError::PayloadPastEnd {
                offset: 0,
                length: 31_680,
                remaining: 23
            })
        );
    }

    #[test]
    fn a_negative_length_is_rejected() {
        let mut data = frame(2, b"x");
        data.extend(header(1, -1));
        assert_eq!(
            validate(&data),
            Err(StreamError::NegativeLength {
                offset: 9,
                length: -1
            })
        );
    }

    #[test]
    fn the_documentation_sample_is_rejected_as_truncated() {
        use base64::Engine as _;
        // Rebuilt from docs/upstream.md section 7: Config, IsInterfaceOk, TellPartnerVersion, then a
        // TransferBuffer declaring 31,680 bytes of which only 23 are present.
        let mut data = frame(1, &[0, 0, 0, 0, 1, 0, 0, 0]);
        data.extend(frame(3, &[0; 24]));
        data.extend(frame(4, &[0x14, 0x0F, 0xD6, 0x91, 0x86, 0x17]));
        let offset = data.len();
        data.extend(header(2, 31_680));
        data.extend([0; 23]);
        let encoded = base64::engine::general_purpose::STANDARD.encode(&data);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert!(matches!(
            validate(&decoded),
            Err(StreamError::PayloadPastEnd { offset: o, .. }) if o == offset
        ));
    }
}
