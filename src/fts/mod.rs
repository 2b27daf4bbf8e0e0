//! Checks, decodes and builds the framed "FTS" item streams that Graph's importItem carries
//! (docs/upstream.md section 7).
//!
//! An item stream is a sequence of frames `[u32 opcode][i32 length][payload]`, little-endian, that ends
//! exactly at the end of the buffer; the payloads of its TransferBuffer frames, read one after another,
//! are the item's MS-OXCFXICS property stream.
//!
//! - [`check`] walks the frames only, allocating nothing: what the gateway does to every upload before
//!   it spends an upstream call.
//! - [`summarize`] checks the frames and decodes the property stream into an [`ItemSummary`]: class,
//!   subject, sender, times, recipients, attachments. `mailbox-gateway inspect` prints it.
//! - [`ItemBuilder`] and [`synthetic_item`] make well-formed streams for tests, the shipped sample,
//!   benchmarks and `mailbox-gateway sample`.
//!
//! Both readers report a malformed stream as a [`StreamError`] with the byte offset of the problem.

mod builder;
mod cursor;
mod decode;
mod error;
mod frames;
mod summary;
mod tags;
mod text;

pub use builder::{synthetic_item, ItemBuilder};
pub use decode::{summarize, MAX_EMBEDDING_DEPTH};
pub use error::{Scope, StreamError, StreamProblem};
pub use frames::{
    check, StreamSummary, OP_CONFIG, OP_IS_INTERFACE_OK, OP_TELL_PARTNER_VERSION,
    OP_TRANSFER_BUFFER,
};
pub use summary::{
    Attachment, Guid, ItemSummary, MessageSummary, NamedProperty, PropertyName, Recipient,
    RecipientKind, Sender,
};
