//! Decodes the MS-OXCFXICS property stream that an item stream's TransferBuffers carry, into an
//! [`ItemSummary`] (docs/upstream.md section 7).
//!
//! The grammar, as MS-OXCFXICS gives it for a message's content:
//!
//! ```text
//! item        = properties* recipient* attachment*
//! recipient   = StartRecip properties* EndToRecip
//! attachment  = NewAttach properties* [StartEmbed item EndEmbed] EndAttach
//! property    = tag [guid kind (u32 id | UTF-16 name NUL)] value
//! ```
//!
//! The decoder is strict about what makes a stream unreadable (an unknown type, a length past the end, a
//! marker out of place, a recipient or attachment never closed) and lenient about what does not (the
//! order of properties, recipients and attachments within an item; strings without terminator or with
//! broken UTF-16). It reads values in place, across frame boundaries, and copies only the strings the
//! summary shows; every declared length and count is weighed against the bytes left before anything is
//! read or allocated, and embedded items nest at most [`MAX_EMBEDDING_DEPTH`] deep, so hostile input
//! costs no more than its own size.

use chrono::{DateTime, Utc};

use super::cursor::Cursor;
use super::error::{Scope, StreamError, StreamProblem};
use super::frames::{check, transfer_buffers};
use super::summary::{
    Attachment, Guid, ItemSummary, MessageSummary, NamedProperty, PropertyName, Recipient,
    RecipientKind, Sender,
};
use super::tags::{
    is_marker, is_meta_property, CODE_PAGE_STRING, END_ATTACH, END_EMBED, END_TO_RECIP,
    FIRST_NAMED_ID, ID_ATTACH_FILENAME, ID_ATTACH_LONG_FILENAME, ID_ATTACH_MIME_TAG,
    ID_DISPLAY_NAME, ID_EMAIL_ADDRESS, ID_MESSAGE_CLASS, ID_SENDER_EMAIL_ADDRESS, ID_SENDER_NAME,
    ID_SENDER_SMTP_ADDRESS, ID_SENT_REPRESENTING_EMAIL_ADDRESS, ID_SENT_REPRESENTING_NAME,
    ID_SENT_REPRESENTING_SMTP_ADDRESS, ID_SMTP_ADDRESS, ID_SUBJECT, MULTI_VALUED, NEW_ATTACH,
    PID_TAG_ATTACH_DATA_BINARY, PID_TAG_ATTACH_METHOD, PID_TAG_ATTACH_NUMBER, PID_TAG_ATTACH_SIZE,
    PID_TAG_CLIENT_SUBMIT_TIME, PID_TAG_INTERNET_CODEPAGE, PID_TAG_MESSAGE_CODEPAGE,
    PID_TAG_MESSAGE_DELIVERY_TIME, PID_TAG_MESSAGE_SIZE, PID_TAG_MESSAGE_SIZE_EXTENDED,
    PID_TAG_RECIPIENT_TYPE, PT_BINARY, PT_BOOLEAN, PT_CURRENCY, PT_ERROR_CODE, PT_FLOATING32,
    PT_FLOATING64, PT_FLOATING_TIME, PT_GUID, PT_INTEGER16, PT_INTEGER32, PT_INTEGER64, PT_OBJECT,
    PT_SERVER_ID, PT_STRING8, PT_TIME, PT_UNICODE, START_EMBED, START_RECIP,
};
use super::text::{RawText, DEFAULT_CODE_PAGE};

/// How deep embedded items may nest (an item attached to an item attached to ...). Mail rarely nests
/// more than a few levels; the bound keeps the decoder's recursion, and so its stack, small.
pub const MAX_EMBEDDING_DEPTH: usize = 32;

/// Checks the frames of `stream` as [`check`] does, then decodes the property stream they carry: the
/// item's class, subject, sender, times, recipients, attachments (embedded items included) and how many
/// properties it has.
///
/// Errors carry the byte offset in `stream` of the frame or field at fault, also when the field is
/// split across TransferBuffers.
///
/// ```
/// use mailbox_gateway::fts::{summarize, ItemBuilder};
///
/// let stream = ItemBuilder::new("Quarterly report").attachment("report.pdf", 1200).build();
/// let summary = summarize(&stream).unwrap();
/// assert_eq!(summary.message.message_class.as_deref(), Some("IPM.Note"));
/// assert_eq!(summary.message.subject.as_deref(), Some("Quarterly report"));
/// assert_eq!(summary.message.attachments[0].size(), Some(1200));
/// ```
pub fn summarize(stream: &[u8]) -> Result<ItemSummary, StreamError> {
    let frames = check(stream)?;
    let buffers = transfer_buffers(stream);
    let transfer_buffers = buffers.len();
    let mut decoder = Decoder {
        cursor: Cursor::new(buffers),
        total_properties: 0,
    };
    let message = decoder.item(0, None, DEFAULT_CODE_PAGE)?;
    Ok(ItemSummary {
        size: stream.len(),
        stream: frames,
        transfer_buffers,
        message,
        total_properties: decoder.total_properties,
    })
}

struct Decoder<'a> {
    cursor: Cursor<'a>,
    total_properties: usize,
}

/// One property, with what the summary needs of its value.
struct Property {
    tag: u32,
    named: Option<NamedProperty>,
    value: Value,
}

enum Value {
    /// Integer16, Boolean, Integer32, ErrorCode and Integer64, zero-extended.
    Integer(u64),
    /// A Time: 100-nanosecond ticks since 1601-01-01 UTC.
    Time(u64),
    /// A string the summary shows.
    Text(RawText),
    /// Any other variable-size value: its length.
    Length(u64),
    /// Anything else (floating-point, currency, GUIDs, multi-valued properties).
    Other,
}

impl Property {
    fn id(&self) -> u16 {
        (self.tag >> 16) as u16
    }

    fn integer(&self) -> Option<u64> {
        match self.value {
            Value::Integer(value) => Some(value),
            _ => None,
        }
    }

    fn time(&self) -> Option<DateTime<Utc>> {
        match self.value {
            Value::Time(ticks) => file_time(ticks),
            _ => None,
        }
    }

    fn text(self) -> Option<RawText> {
        match self.value {
            Value::Text(text) => Some(text),
            _ => None,
        }
    }
}

impl Decoder<'_> {
    /// An item's content up to the end of the property stream (the top item) or to its EndEmbed (an
    /// embedded item opened by StartEmbed at `opened_at`).
    fn item(
        &mut self,
        depth: usize,
        opened_at: Option<usize>,
        inherited_code_page: u32,
    ) -> Result<MessageSummary, StreamError> {
        let scope = match opened_at {
            None => Scope::Item,
            Some(_) => Scope::EmbeddedItem,
        };
        let mut item = ItemDraft::default();
        loop {
            let Some((tag, at)) = self.tag()? else {
                return match opened_at {
                    None => Ok(item.finish(inherited_code_page)),
                    Some(opened_at) => Err(self.unclosed(scope, opened_at)),
                };
            };
            match tag {
                START_RECIP => item.recipients.push(self.recipient(at)?),
                NEW_ATTACH => {
                    let code_page = item.code_page().unwrap_or(inherited_code_page);
                    item.attachments
                        .push(self.attachment(at, depth, code_page)?);
                }
                END_EMBED if opened_at.is_some() => return Ok(item.finish(inherited_code_page)),
                _ if is_marker(tag) => return Err(misplaced(at, tag, scope)),
                _ => {
                    if let Some(property) = self.property(tag, at, ItemDraft::SHOWN)? {
                        item.properties += 1;
                        item.apply(property);
                    }
                }
            }
        }
    }

    /// A recipient's properties up to its EndToRecip; StartRecip was at `opened_at`.
    fn recipient(&mut self, opened_at: usize) -> Result<RecipientDraft, StreamError> {
        let mut recipient = RecipientDraft::default();
        loop {
            let Some((tag, at)) = self.tag()? else {
                return Err(self.unclosed(Scope::Recipient, opened_at));
            };
            match tag {
                END_TO_RECIP => return Ok(recipient),
                _ if is_marker(tag) => return Err(misplaced(at, tag, Scope::Recipient)),
                _ => {
                    if let Some(property) = self.property(tag, at, RecipientDraft::SHOWN)? {
                        recipient.properties += 1;
                        recipient.apply(property);
                    }
                }
            }
        }
    }

    /// An attachment's properties and embedded item up to its EndAttach; NewAttach was at `opened_at`.
    fn attachment(
        &mut self,
        opened_at: usize,
        depth: usize,
        code_page: u32,
    ) -> Result<AttachmentDraft, StreamError> {
        let mut attachment = AttachmentDraft::default();
        loop {
            let Some((tag, at)) = self.tag()? else {
                return Err(self.unclosed(Scope::Attachment, opened_at));
            };
            match tag {
                END_ATTACH => return Ok(attachment),
                START_EMBED if attachment.embedded.is_none() => {
                    if depth + 1 > MAX_EMBEDDING_DEPTH {
                        return Err(StreamError {
                            offset: at,
                            problem: StreamProblem::TooDeep {
                                limit: MAX_EMBEDDING_DEPTH,
                            },
                        });
                    }
                    let item = self.item(depth + 1, Some(at), code_page)?;
                    attachment.embedded = Some(Box::new(item));
                }
                _ if is_marker(tag) => return Err(misplaced(at, tag, Scope::Attachment)),
                _ => {
                    if let Some(property) = self.property(tag, at, AttachmentDraft::SHOWN)? {
                        attachment.properties += 1;
                        attachment.apply(property);
                    }
                }
            }
        }
    }

    /// The next tag and its offset, or `None` at the end of the property stream.
    fn tag(&mut self) -> Result<Option<(u32, usize)>, StreamError> {
        if self.cursor.remaining() == 0 {
            return Ok(None);
        }
        let at = self.cursor.offset();
        Ok(Some((self.u32()?, at)))
    }

    /// The property whose tag was read at `at`: its name (for a named property) and its value, with the
    /// text of string ids in `shown` kept. `None` for a meta-property, which is read past but is no
    /// property of the item. Counts the property in the stream's total.
    fn property(
        &mut self,
        tag: u32,
        at: usize,
        shown: &[u16],
    ) -> Result<Option<Property>, StreamError> {
        let (id, kind) = ((tag >> 16) as u16, tag as u16);
        if !is_known_type(kind) {
            return Err(StreamError {
                offset: at,
                problem: StreamProblem::UnknownPropertyType { tag },
            });
        }
        let named = if id >= FIRST_NAMED_ID {
            Some(self.name(kind)?)
        } else {
            None
        };
        let value = if kind & CODE_PAGE_STRING == 0 && kind & MULTI_VALUED != 0 {
            self.values(tag, kind & !MULTI_VALUED)?;
            Value::Other
        } else {
            self.value(kind, named.is_none() && shown.contains(&id))?
        };
        if is_meta_property(id) {
            return Ok(None);
        }
        self.total_properties += 1;
        Ok(Some(Property { tag, named, value }))
    }

    /// A named property's name: the property set's GUID, a kind byte, and a u32 id (kind 0) or a
    /// NUL-terminated UTF-16 name (kind 1).
    fn name(&mut self, property_type: u16) -> Result<NamedProperty, StreamError> {
        let guid = Guid(self.array::<16>()?);
        let kind_at = self.cursor.offset();
        let name = match self.array::<1>()? {
            [0] => PropertyName::Id(self.u32()?),
            [1] => {
                let name_at = self.cursor.offset();
                let mut units = Vec::new();
                loop {
                    let Some(unit) = self.cursor.array::<2>() else {
                        return Err(StreamError {
                            offset: name_at,
                            problem: StreamProblem::UnterminatedName,
                        });
                    };
                    match u16::from_le_bytes(unit) {
                        0 => break,
                        unit => units.push(unit),
                    }
                }
                PropertyName::Name(String::from_utf16_lossy(&units))
            }
            [kind] => {
                return Err(StreamError {
                    offset: kind_at,
                    problem: StreamProblem::UnknownNameKind(kind),
                })
            }
        };
        Ok(NamedProperty {
            guid,
            name,
            property_type,
        })
    }

    /// One value of single-valued type `kind`; a string's text is copied only if `keep_text`.
    fn value(&mut self, kind: u16, keep_text: bool) -> Result<Value, StreamError> {
        if let Some(size) = fixed_size(kind) {
            let mut bytes = [0; 16];
            if !self.cursor.read(&mut bytes[..size]) {
                return Err(self.truncated(size));
            }
            let integer = |n: usize| {
                let mut wide = [0; 8];
                wide[..n].copy_from_slice(&bytes[..n]);
                u64::from_le_bytes(wide)
            };
            return Ok(match kind {
                PT_INTEGER16 | PT_BOOLEAN => Value::Integer(integer(2)),
                PT_INTEGER32 | PT_ERROR_CODE => Value::Integer(integer(4)),
                PT_INTEGER64 => Value::Integer(integer(8)),
                PT_TIME => Value::Time(integer(8)),
                _ => Value::Other,
            });
        }
        // Every other known type has a variable size: a u32 byte count, then the bytes.
        let at = self.cursor.offset();
        let declared = self.u32()?;
        let len = declared as usize;
        if len > self.cursor.remaining() {
            return Err(StreamError {
                offset: at,
                problem: StreamProblem::ValueTooLong {
                    declared,
                    remaining: self.cursor.remaining(),
                },
            });
        }
        if keep_text {
            let bytes = self.cursor.bytes(len).expect("the length was checked");
            if let Some(text) = RawText::new(bytes, kind) {
                return Ok(Value::Text(text));
            }
        } else {
            assert!(self.cursor.skip(len), "the length was checked");
        }
        Ok(Value::Length(u64::from(declared)))
    }

    /// The values of a multi-valued property of base type `kind`: a u32 count, then each value.
    fn values(&mut self, tag: u32, kind: u16) -> Result<(), StreamError> {
        let at = self.cursor.offset();
        let declared = self.u32()?;
        // Each value takes at least its fixed size, or the four bytes of its length; a count the rest of
        // the stream cannot hold is refused before the loop, not after four billion turns of it.
        let least = fixed_size(kind).unwrap_or(4) as u64;
        if u64::from(declared) * least > self.cursor.remaining() as u64 {
            return Err(StreamError {
                offset: at,
                problem: StreamProblem::TooManyValues {
                    declared,
                    remaining: self.cursor.remaining(),
                    tag,
                },
            });
        }
        for _ in 0..declared {
            self.value(kind, false)?;
        }
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, StreamError> {
        self.array::<4>().map(u32::from_le_bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StreamError> {
        self.cursor.array::<N>().ok_or_else(|| self.truncated(N))
    }

    /// The error for a field of `needed` bytes that the property stream has no room for.
    fn truncated(&self, needed: usize) -> StreamError {
        StreamError {
            offset: self.cursor.offset(),
            problem: StreamProblem::TruncatedProperty {
                needed,
                remaining: self.cursor.remaining(),
            },
        }
    }

    /// The error for a property stream that ends inside `scope`, opened at `opened_at`.
    fn unclosed(&self, scope: Scope, opened_at: usize) -> StreamError {
        StreamError {
            offset: self.cursor.offset(),
            problem: StreamProblem::Unclosed { scope, opened_at },
        }
    }
}

fn misplaced(at: usize, tag: u32, inside: Scope) -> StreamError {
    StreamError {
        offset: at,
        problem: StreamProblem::MisplacedMarker { tag, inside },
    }
}

/// The size of a value of fixed-size type `kind` (docs/upstream.md section 7).
fn fixed_size(kind: u16) -> Option<usize> {
    match kind {
        PT_INTEGER16 | PT_BOOLEAN => Some(2),
        PT_INTEGER32 | PT_FLOATING32 | PT_ERROR_CODE => Some(4),
        PT_FLOATING64 | PT_CURRENCY | PT_FLOATING_TIME | PT_INTEGER64 | PT_TIME => Some(8),
        PT_GUID => Some(16),
        _ => None,
    }
}

/// Whether `kind` is a type item streams use: a fixed-size or variable-size type, one of them
/// multi-valued, or a string in a code page.
fn is_known_type(kind: u16) -> bool {
    let single = |kind| {
        fixed_size(kind).is_some()
            || matches!(
                kind,
                PT_STRING8 | PT_UNICODE | PT_BINARY | PT_OBJECT | PT_SERVER_ID
            )
    };
    if kind & CODE_PAGE_STRING != 0 {
        true
    } else if kind & MULTI_VALUED != 0 {
        single(kind & !MULTI_VALUED)
    } else {
        single(kind)
    }
}

/// A FILETIME (100-nanosecond ticks since 1601-01-01 UTC) as a UTC time.
fn file_time(ticks: u64) -> Option<DateTime<Utc>> {
    const TICKS_PER_SECOND: u64 = 10_000_000;
    /// Seconds from 1601-01-01 to 1970-01-01.
    const UNIX_EPOCH: i64 = 11_644_473_600;
    let seconds = (ticks / TICKS_PER_SECOND) as i64 - UNIX_EPOCH;
    let nanoseconds = (ticks % TICKS_PER_SECOND) as u32 * 100;
    DateTime::from_timestamp(seconds, nanoseconds)
}

/// An item's properties as they are read; strings wait for the item's code page.
#[derive(Default)]
struct ItemDraft {
    message_class: Option<RawText>,
    subject: Option<RawText>,
    sender_name: Option<RawText>,
    sender_address: Option<RawText>,
    sender_smtp_address: Option<RawText>,
    representing_name: Option<RawText>,
    representing_address: Option<RawText>,
    representing_smtp_address: Option<RawText>,
    sent: Option<DateTime<Utc>>,
    received: Option<DateTime<Utc>>,
    message_size: Option<u64>,
    message_code_page: Option<u32>,
    internet_code_page: Option<u32>,
    recipients: Vec<RecipientDraft>,
    attachments: Vec<AttachmentDraft>,
    properties: usize,
    named_properties: Vec<NamedProperty>,
}

impl ItemDraft {
    /// The string properties the summary shows.
    const SHOWN: &'static [u16] = &[
        ID_MESSAGE_CLASS,
        ID_SUBJECT,
        ID_SENDER_NAME,
        ID_SENDER_EMAIL_ADDRESS,
        ID_SENDER_SMTP_ADDRESS,
        ID_SENT_REPRESENTING_NAME,
        ID_SENT_REPRESENTING_EMAIL_ADDRESS,
        ID_SENT_REPRESENTING_SMTP_ADDRESS,
    ];

    fn apply(&mut self, mut property: Property) {
        if let Some(named) = property.named.take() {
            self.named_properties.push(named);
            return;
        }
        match property.tag {
            PID_TAG_CLIENT_SUBMIT_TIME => self.sent = property.time(),
            PID_TAG_MESSAGE_DELIVERY_TIME => self.received = property.time(),
            PID_TAG_MESSAGE_SIZE | PID_TAG_MESSAGE_SIZE_EXTENDED => {
                self.message_size = property.integer()
            }
            PID_TAG_MESSAGE_CODEPAGE => self.message_code_page = property.integer().map(low_u32),
            PID_TAG_INTERNET_CODEPAGE => self.internet_code_page = property.integer().map(low_u32),
            _ => {
                let slot = match property.id() {
                    ID_MESSAGE_CLASS => &mut self.message_class,
                    ID_SUBJECT => &mut self.subject,
                    ID_SENDER_NAME => &mut self.sender_name,
                    ID_SENDER_EMAIL_ADDRESS => &mut self.sender_address,
                    ID_SENDER_SMTP_ADDRESS => &mut self.sender_smtp_address,
                    ID_SENT_REPRESENTING_NAME => &mut self.representing_name,
                    ID_SENT_REPRESENTING_EMAIL_ADDRESS => &mut self.representing_address,
                    ID_SENT_REPRESENTING_SMTP_ADDRESS => &mut self.representing_smtp_address,
                    _ => return,
                };
                if let Some(text) = property.text() {
                    *slot = Some(text);
                }
            }
        }
    }

    fn code_page(&self) -> Option<u32> {
        self.message_code_page.or(self.internet_code_page)
    }

    /// The summary, with 8-bit strings read in the item's code page (else `inherited_code_page`).
    fn finish(self, inherited_code_page: u32) -> MessageSummary {
        let code_page = self.code_page();
        let decode = |text: Option<RawText>| {
            text.map(|text| text.decode(code_page.unwrap_or(inherited_code_page)))
        };
        let sender = party(
            decode(self.sender_name),
            decode(self.sender_smtp_address).or(decode(self.sender_address)),
        )
        .or_else(|| {
            party(
                decode(self.representing_name),
                decode(self.representing_smtp_address).or(decode(self.representing_address)),
            )
        });
        let own_code_page = code_page.unwrap_or(inherited_code_page);
        MessageSummary {
            message_class: decode(self.message_class),
            subject: decode(self.subject),
            sender,
            sent: self.sent,
            received: self.received,
            message_size: self.message_size,
            code_page,
            recipients: self
                .recipients
                .into_iter()
                .map(|recipient| recipient.finish(own_code_page))
                .collect(),
            attachments: self
                .attachments
                .into_iter()
                .map(|attachment| attachment.finish(own_code_page))
                .collect(),
            properties: self.properties,
            named_properties: self.named_properties,
        }
    }
}

fn party(name: Option<String>, address: Option<String>) -> Option<Sender> {
    (name.is_some() || address.is_some()).then_some(Sender { name, address })
}

/// A PtypInteger32 value, which the decoder zero-extends.
fn low_u32(value: u64) -> u32 {
    value as u32
}

#[derive(Default)]
struct RecipientDraft {
    kind: Option<RecipientKind>,
    name: Option<RawText>,
    address: Option<RawText>,
    smtp_address: Option<RawText>,
    properties: usize,
}

impl RecipientDraft {
    const SHOWN: &'static [u16] = &[ID_DISPLAY_NAME, ID_EMAIL_ADDRESS, ID_SMTP_ADDRESS];

    fn apply(&mut self, property: Property) {
        if property.tag == PID_TAG_RECIPIENT_TYPE {
            self.kind = property.integer().map(low_u32).map(RecipientKind::from_raw);
            return;
        }
        let slot = match (property.named.is_some(), property.id()) {
            (false, ID_DISPLAY_NAME) => &mut self.name,
            (false, ID_EMAIL_ADDRESS) => &mut self.address,
            (false, ID_SMTP_ADDRESS) => &mut self.smtp_address,
            _ => return,
        };
        if let Some(text) = property.text() {
            *slot = Some(text);
        }
    }

    fn finish(self, code_page: u32) -> Recipient {
        let decode = |text: Option<RawText>| text.map(|text| text.decode(code_page));
        Recipient {
            kind: self.kind,
            name: decode(self.name),
            address: decode(self.smtp_address).or(decode(self.address)),
            properties: self.properties,
        }
    }
}

#[derive(Default)]
struct AttachmentDraft {
    number: Option<u32>,
    method: Option<u32>,
    long_filename: Option<RawText>,
    filename: Option<RawText>,
    display_name: Option<RawText>,
    mime_type: Option<RawText>,
    data_bytes: Option<u64>,
    attach_size: Option<u32>,
    embedded: Option<Box<MessageSummary>>,
    properties: usize,
}

impl AttachmentDraft {
    const SHOWN: &'static [u16] = &[
        ID_ATTACH_LONG_FILENAME,
        ID_ATTACH_FILENAME,
        ID_DISPLAY_NAME,
        ID_ATTACH_MIME_TAG,
    ];

    fn apply(&mut self, property: Property) {
        match property.tag {
            PID_TAG_ATTACH_NUMBER => self.number = property.integer().map(low_u32),
            PID_TAG_ATTACH_METHOD => self.method = property.integer().map(low_u32),
            PID_TAG_ATTACH_SIZE => self.attach_size = property.integer().map(low_u32),
            PID_TAG_ATTACH_DATA_BINARY => {
                if let Value::Length(len) = property.value {
                    self.data_bytes = Some(len);
                }
            }
            _ => {
                let slot = match (property.named.is_some(), property.id()) {
                    (false, ID_ATTACH_LONG_FILENAME) => &mut self.long_filename,
                    (false, ID_ATTACH_FILENAME) => &mut self.filename,
                    (false, ID_DISPLAY_NAME) => &mut self.display_name,
                    (false, ID_ATTACH_MIME_TAG) => &mut self.mime_type,
                    _ => return,
                };
                if let Some(text) = property.text() {
                    *slot = Some(text);
                }
            }
        }
    }

    fn finish(self, code_page: u32) -> Attachment {
        let decode = |text: Option<RawText>| text.map(|text| text.decode(code_page));
        Attachment {
            number: self.number,
            method: self.method,
            name: decode(self.long_filename)
                .or(decode(self.filename))
                .or(decode(self.display_name)),
            mime_type: decode(self.mime_type),
            data_bytes: self.data_bytes,
            attach_size: self.attach_size,
            embedded: self.embedded,
            properties: self.properties,
        }
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
