//! What is wrong with an item stream that is not well formed, and at which byte.

use std::fmt;

use super::frames::HEADER_LEN;
use super::tags::tag_name;

/// Why a stream is not well formed, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamError {
    /// Byte offset (from the start of the stream) of the frame or field at fault.
    pub offset: usize,
    /// What is wrong there.
    pub problem: StreamProblem,
}

/// The ways a stream can be malformed: its frames (found by [`check`](super::check) and
/// [`summarize`](super::summarize)) and the property stream the frames carry (found by
/// [`summarize`](super::summarize) only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamProblem {
    /// The stream has no bytes at all.
    Empty,
    /// Fewer than eight bytes remain where a frame header should start.
    TruncatedHeader { remaining: usize },
    /// The opcode is not a FastTransfer call that item streams carry.
    UnknownOpcode(u32),
    /// The length field is negative.
    NegativeLength(i32),
    /// The payload runs past the end of the stream.
    TruncatedPayload { declared: usize, remaining: usize },
    /// A call whose payload has a fixed size declares another size.
    WrongPayloadSize {
        opcode: u32,
        expected: usize,
        declared: usize,
    },
    /// A TransferBuffer with no bytes, which Exchange's own reader rejects as corrupt.
    EmptyTransferBuffer,
    /// No TransferBuffer at all: the stream carries no item.
    NoTransferBuffer,
    /// The property stream ends inside a tag or a fixed-size field.
    TruncatedProperty { needed: usize, remaining: usize },
    /// A tag whose type is none of the property types item streams use.
    UnknownPropertyType { tag: u32 },
    /// A variable-size value declares more bytes than the property stream has left.
    ValueTooLong { declared: u32, remaining: usize },
    /// A multi-valued property declares more values than the property stream has room for.
    TooManyValues {
        declared: u32,
        remaining: usize,
        tag: u32,
    },
    /// A named property's kind byte is neither 0 (a numeric id) nor 1 (a name).
    UnknownNameKind(u8),
    /// A named property's UTF-16 name runs to the end of the property stream without its terminator.
    UnterminatedName,
    /// A marker where it does not belong, such as EndAttach with no attachment open or a folder marker.
    MisplacedMarker { tag: u32, inside: Scope },
    /// The property stream ends inside a recipient, an attachment or an embedded item.
    Unclosed { scope: Scope, opened_at: usize },
    /// Embedded items nested deeper than the decoder follows.
    TooDeep { limit: usize },
}

/// The part of an item a marker opens, for errors about where a marker was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The item itself, outside any recipient or attachment.
    Item,
    /// Between StartRecip and EndToRecip.
    Recipient,
    /// Between NewAttach and EndAttach.
    Attachment,
    /// Between StartEmbed and EndEmbed.
    EmbeddedItem,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Item => "the item",
            Scope::Recipient => "a recipient",
            Scope::Attachment => "an attachment",
            Scope::EmbeddedItem => "an embedded item",
        })
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: ", self.offset)?;
        match &self.problem {
            StreamProblem::Empty => write!(f, "the item stream is empty"),
            StreamProblem::TruncatedHeader { remaining } => write!(
                f,
                "a frame header needs {HEADER_LEN} bytes but only {remaining} remain"
            ),
            StreamProblem::UnknownOpcode(op) => write!(
                f,
                "unknown frame opcode {op} (item streams use 1-4 and 11-17)"
            ),
            StreamProblem::NegativeLength(len) => write!(f, "frame length {len} is negative"),
            StreamProblem::TruncatedPayload {
                declared,
                remaining,
            } => write!(
                f,
                "the frame declares {declared} payload bytes but only {remaining} remain"
            ),
            StreamProblem::WrongPayloadSize {
                opcode,
                expected,
                declared,
            } => write!(
                f,
                "frame opcode {opcode} must carry {expected} payload bytes, not {declared}"
            ),
            StreamProblem::EmptyTransferBuffer => write!(f, "a TransferBuffer frame is empty"),
            StreamProblem::NoTransferBuffer => {
                write!(f, "the stream has no TransferBuffer frame, so no item")
            }
            StreamProblem::TruncatedProperty { needed, remaining } => write!(
                f,
                "the property stream ends here: {needed} more bytes were needed, {remaining} remain"
            ),
            StreamProblem::UnknownPropertyType { tag } => write!(
                f,
                "property tag 0x{tag:08X} has type 0x{:04X}, which item streams do not use",
                tag & 0xFFFF
            ),
            StreamProblem::ValueTooLong {
                declared,
                remaining,
            } => write!(
                f,
                "a value declares {declared} bytes but only {remaining} remain in the property stream"
            ),
            StreamProblem::TooManyValues {
                declared,
                remaining,
                tag,
            } => write!(
                f,
                "multi-valued property 0x{tag:08X} declares {declared} values, more than the \
                 {remaining} bytes left in the property stream can hold"
            ),
            StreamProblem::UnknownNameKind(kind) => write!(
                f,
                "a named property has kind {kind} (0 for a numeric id, 1 for a name)"
            ),
            StreamProblem::UnterminatedName => write!(
                f,
                "a named property's name has no terminator before the property stream ends"
            ),
            StreamProblem::MisplacedMarker { tag, inside } => write!(
                f,
                "{} (0x{tag:08X}) does not belong in {inside}",
                tag_name(*tag).unwrap_or("marker")
            ),
            StreamProblem::Unclosed { scope, opened_at } => write!(
                f,
                "the property stream ends inside {scope} opened at byte {opened_at}"
            ),
            StreamProblem::TooDeep { limit } => write!(
                f,
                "embedded items nest more than {limit} deep"
            ),
        }
    }
}

impl std::error::Error for StreamError {}
