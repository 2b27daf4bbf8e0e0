//! Checks that an import's decoded `Data` is a well-formed item stream (docs/upstream.md section 7),
//! and reads the one property Graph lists of an item, its message class.
//!
//! This is the simulator's own frame walker, written from the contract rather than borrowed from the
//! crate's `fts` module, so that a misreading of the format on either side shows up as a failing test.
//! The check is of framing only: the MS-OXCFXICS property stream inside the TransferBuffers is read
//! only by [`message_class`], which gives up (rather than refusing the item) on anything it does not
//! understand.

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

/// PidTagMessageClass's property id; its type is a string: Unicode (`0x001F`), 8-bit (`0x001E`) or
/// in a code page (`0x8000 | codepage`, such as `0x84B0` for UTF-16LE).
const MESSAGE_CLASS_ID: u16 = 0x001A;

/// How much of the property stream [`message_class`] reads: the class is among an item's first
/// properties, and an item may be 150 MB.
const PROPERTY_WINDOW: usize = 64 * 1024;

/// The bare marker tags of an item's property stream; they carry no value.
const MARKERS: [u32; 6] = [
    0x4000_0003, // NewAttach
    0x4001_0003, // StartEmbed
    0x4002_0003, // EndEmbed
    0x4003_0003, // StartRecip
    0x4004_0003, // EndToRecip
    0x400E_0003, // EndAttach
];

/// The message class (PidTagMessageClass, such as `IPM.Note`) among the item's own properties, those
/// before its first recipient or attachment; `None` when the stream is not well-formed, has no such
/// property in its first 64 KiB of properties, or holds something this reader does not understand.
pub(crate) fn message_class(data: &[u8]) -> Option<String> {
    let frames = validate(data).ok()?;
    let mut properties = Vec::new();
    for frame in frames.iter().filter(|f| f.opcode == TRANSFER_BUFFER) {
        let room = PROPERTY_WINDOW - properties.len();
        properties.extend_from_slice(&frame.payload[..frame.payload.len().min(room)]);
        if properties.len() == PROPERTY_WINDOW {
            break;
        }
    }
    let mut reader = PropertyReader {
        bytes: &properties,
        at: 0,
    };
    loop {
        let tag = reader.u32()?;
        if MARKERS.contains(&tag) {
            return None;
        }
        let (id, kind) = ((tag >> 16) as u16, tag as u16);
        if id >= 0x8000 {
            reader.skip_name()?;
        }
        if id == MESSAGE_CLASS_ID {
            let class = reader.string(kind)?;
            return (!class.is_empty()).then_some(class);
        }
        reader.skip_value(kind)?;
    }
}

/// A cursor over a property stream; every read is `None` past the end.
struct PropertyReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl PropertyReader<'_> {
    fn take(&mut self, len: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(len)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    /// A named property's name: a 16-byte GUID, then a kind byte, then a u32 id (kind 0) or a
    /// NUL-terminated UTF-16 name (kind 1).
    fn skip_name(&mut self) -> Option<()> {
        self.take(16)?;
        match self.take(1)?[0] {
            0 => self.take(4).map(drop),
            1 => loop {
                if self.take(2)? == [0, 0] {
                    return Some(());
                }
            },
            _ => None,
        }
    }

    /// Skips one value of property type `kind`, multi-valued ones included.
    fn skip_value(&mut self, kind: u16) -> Option<()> {
        if kind & 0x1000 != 0 && kind & 0x8000 == 0 {
            let count = self.u32()?;
            for _ in 0..count {
                self.skip_value(kind & !0x1000)?;
            }
            return Some(());
        }
        let len = match kind {
            0x0002 | 0x000B => 2,
            0x0003 | 0x0004 | 0x000A => 4,
            0x0005 | 0x0006 | 0x0007 | 0x0014 | 0x0040 => 8,
            0x0048 => 16,
            _ if is_variable(kind) => self.u32()? as usize,
            _ => return None,
        };
        self.take(len).map(drop)
    }

    /// A string value of type `kind`, without its terminator.
    fn string(&mut self, kind: u16) -> Option<String> {
        let utf16 = match kind {
            0x001F | 0x84B0 => true,
            0x001E => false,
            _ if kind & 0x8000 != 0 => false,
            _ => return None,
        };
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        let text = if utf16 {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
                .collect();
            String::from_utf16(&units).ok()?
        } else {
            // Message classes are ASCII; any 8-bit code page agrees with ASCII there.
            bytes.iter().map(|&b| char::from(b)).collect()
        };
        Some(text.trim_end_matches('\0').to_owned())
    }
}

/// String, String8, Binary, Object, ServerId and strings in a code page carry a u32 byte count.
fn is_variable(kind: u16) -> bool {
    matches!(kind, 0x001F | 0x001E | 0x0102 | 0x000D | 0x00FB) || kind & 0x8000 != 0
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

    /// A Unicode string property: tag, u32 byte count, UTF-16LE with its terminator.
    fn unicode(tag: u32, text: &str) -> Vec<u8> {
        let mut value: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        value.extend([0, 0]);
        let mut out = tag.to_le_bytes().to_vec();
        out.extend((value.len() as u32).to_le_bytes());
        out.extend(value);
        out
    }

    fn with_properties(properties: &[u8]) -> Vec<u8> {
        let mut data = frame(1, &[0, 0, 0, 0, 1, 0, 0, 0]);
        data.extend(frame(3, &[0; 24]));
        data.extend(frame(4, &[0x14, 0x0F, 0xD6, 0x91, 0x86, 0x17]));
        data.extend(frame(2, properties));
        data
    }

    #[test]
    fn the_message_class_is_read_after_other_properties_and_across_transfer_buffers() {
        // MetaTagDnPrefix (String8), Importance (Integer32), a named property with a string name, a
        // multi-valued Integer32, then the message class, split over two TransferBuffers.
        let mut properties = 0x4008_001Eu32.to_le_bytes().to_vec();
        properties.extend(3u32.to_le_bytes());
        properties.extend(b"/o\0");
        properties.extend(0x0017_0003u32.to_le_bytes());
        properties.extend(1u32.to_le_bytes());
        properties.extend(0x8001_001Fu32.to_le_bytes());
        properties.extend([0x11; 16]);
        properties.push(1);
        properties.extend([b'K', 0, 0, 0]);
        properties.extend(2u32.to_le_bytes());
        properties.extend([0, 0]);
        properties.extend(0x1234_1003u32.to_le_bytes());
        properties.extend(2u32.to_le_bytes());
        properties.extend([0; 8]);
        properties.extend(unicode(0x001A_001F, "IPM.Note.Custom"));
        let (first, second) = properties.split_at(properties.len() - 5);
        let mut data = with_properties(first);
        data.extend(frame(2, second));
        assert_eq!(message_class(&data).as_deref(), Some("IPM.Note.Custom"));
    }

    #[test]
    fn an_eight_bit_message_class_is_read_too() {
        let mut properties = 0x001A_001Eu32.to_le_bytes().to_vec();
        properties.extend(13u32.to_le_bytes());
        properties.extend(b"IPM.Contact\0\0");
        assert_eq!(
            message_class(&with_properties(&properties)).as_deref(),
            Some("IPM.Contact")
        );
    }

    #[test]
    fn no_message_class_is_read_from_recipients_unknown_types_or_truncated_properties() {
        let mut in_recipient = 0x4003_0003u32.to_le_bytes().to_vec();
        in_recipient.extend(unicode(0x001A_001F, "IPM.Note"));
        let mut unknown_type = 0x0001_0999u32.to_le_bytes().to_vec();
        unknown_type.extend(unicode(0x001A_001F, "IPM.Note"));
        let truncated = &unicode(0x001A_001F, "IPM.Note")[..9];
        for properties in [&in_recipient[..], &unknown_type[..], truncated, b"x"] {
            assert_eq!(message_class(&with_properties(properties)), None);
        }
        assert_eq!(message_class(&[]), None);
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
