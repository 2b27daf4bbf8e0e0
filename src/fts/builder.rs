//! Builds well-formed item streams for tests, the shipped sample, benchmarks and `mailbox-gateway sample`:
//! the three set-up calls known producers emit, then the item's properties, recipients and attachments
//! split over one or more TransferBuffers.

use std::io::{self, Write};

use chrono::{DateTime, Utc};

use super::frames::{OP_CONFIG, OP_IS_INTERFACE_OK, OP_TELL_PARTNER_VERSION, OP_TRANSFER_BUFFER};
use super::summary::RecipientKind;
use super::tags::{
    tag, ATTACH_BY_VALUE, ATTACH_EMBEDDED_MSG, END_ATTACH, END_EMBED, END_TO_RECIP,
    ID_ADDRESS_TYPE, ID_ATTACH_LONG_FILENAME, ID_BODY, ID_DISPLAY_NAME, ID_EMAIL_ADDRESS,
    ID_MESSAGE_CLASS, ID_SENDER_ADDRESS_TYPE, ID_SENDER_EMAIL_ADDRESS, ID_SENDER_NAME,
    ID_SMTP_ADDRESS, ID_SUBJECT, NEW_ATTACH, PID_TAG_ATTACH_DATA_BINARY, PID_TAG_ATTACH_METHOD,
    PID_TAG_ATTACH_NUMBER, PID_TAG_ATTACH_SIZE, PID_TAG_CLIENT_SUBMIT_TIME, PID_TAG_IMPORTANCE,
    PID_TAG_MESSAGE_DELIVERY_TIME, PID_TAG_PADDING, PID_TAG_RECIPIENT_TYPE, PT_UNICODE,
    START_EMBED, START_RECIP,
};

/// Builds small, well-formed item streams: the three set-up calls known producers emit, then the
/// message's properties split over one or more TransferBuffers.
///
/// ```
/// let stream = mailbox_gateway::fts::ItemBuilder::new("Quarterly report").body("See attached.").build();
/// assert!(mailbox_gateway::fts::check(&stream).is_ok());
/// ```
///
/// Large values (padding, attachment contents) are generated as the stream is written, so
/// [`write_to`](ItemBuilder::write_to) makes an item of any size in constant memory.
#[derive(Clone, Debug)]
pub struct ItemBuilder {
    message_class: String,
    subject: String,
    body: String,
    sender: Option<(String, String)>,
    sent: Option<DateTime<Utc>>,
    received: Option<DateTime<Utc>>,
    recipients: Vec<(RecipientKind, String, String)>,
    attachments: Vec<AttachmentSpec>,
    padding: usize,
    total_size: Option<usize>,
    max_transfer_buffer: usize,
}

#[derive(Clone, Debug)]
enum AttachmentSpec {
    File {
        name: String,
        size: usize,
    },
    Item {
        name: String,
        item: Box<ItemBuilder>,
    },
}

/// IID_IMessage `{00020307-0000-0000-C000-000000000046}` in its on-the-wire byte order.
const IID_IMESSAGE: [u8; 16] = [
    0x07, 0x03, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x46,
];

/// Bytes of the three set-up frames: Config (8 + 8), IsInterfaceOk (8 + 24), TellPartnerVersion (8 + 6).
const SETUP_LEN: usize = 16 + 32 + 14;

/// Bytes of a frame header.
const FRAME_HEADER: usize = 8;

/// Bytes a binary property adds besides its value: the tag and the length.
const BINARY_OVERHEAD: usize = 8;

impl ItemBuilder {
    /// An IPM.Note with the given subject and no body.
    pub fn new(subject: &str) -> Self {
        ItemBuilder {
            message_class: "IPM.Note".to_owned(),
            subject: subject.to_owned(),
            body: String::new(),
            sender: None,
            sent: None,
            received: None,
            recipients: Vec::new(),
            attachments: Vec::new(),
            padding: 0,
            total_size: None,
            max_transfer_buffer: 32 * 1024,
        }
    }

    /// Sets the message class (PidTagMessageClass), `IPM.Note` unless set.
    pub fn message_class(mut self, class: &str) -> Self {
        self.message_class = class.to_owned();
        self
    }

    /// Sets the plain-text body.
    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }

    /// Sets the sender: PidTagSenderName, PidTagSenderAddressType `SMTP` and PidTagSenderEmailAddress.
    pub fn sender(mut self, name: &str, address: &str) -> Self {
        self.sender = Some((name.to_owned(), address.to_owned()));
        self
    }

    /// Sets when the item was sent (PidTagClientSubmitTime).
    pub fn sent(mut self, at: DateTime<Utc>) -> Self {
        self.sent = Some(at);
        self
    }

    /// Sets when the item arrived (PidTagMessageDeliveryTime).
    pub fn received(mut self, at: DateTime<Utc>) -> Self {
        self.received = Some(at);
        self
    }

    /// Adds a recipient (StartRecip, PidTagRecipientType, PidTagDisplayName, PidTagAddressType `SMTP`,
    /// PidTagEmailAddress, PidTagSmtpAddress, EndToRecip).
    pub fn recipient(mut self, kind: RecipientKind, name: &str, address: &str) -> Self {
        self.recipients
            .push((kind, name.to_owned(), address.to_owned()));
        self
    }

    /// Adds an attached file of `size` bytes of generated content (NewAttach, PidTagAttachNumber,
    /// PidTagAttachMethod 1, PidTagAttachLongFilename, PidTagAttachSize, PidTagAttachDataBinary,
    /// EndAttach). A property value holds less than 4 GiB, so `size` must be smaller.
    pub fn attachment(mut self, name: &str, size: usize) -> Self {
        self.attachments.push(AttachmentSpec::File {
            name: name.to_owned(),
            size,
        });
        self
    }

    /// Adds an attached item (PidTagAttachMethod 5, its properties between StartEmbed and EndEmbed).
    /// The embedded builder's padding counts; its total size and transfer-buffer size do not.
    pub fn embedded_item(mut self, name: &str, item: ItemBuilder) -> Self {
        self.attachments.push(AttachmentSpec::Item {
            name: name.to_owned(),
            item: Box::new(item),
        });
        self
    }

    /// Adds a binary property of `bytes` bytes, to make items of a given size. Less than 4 GiB.
    pub fn padding(mut self, bytes: usize) -> Self {
        self.padding = bytes;
        self
    }

    /// Pads the item so that the whole stream is exactly `bytes` long, replacing [`padding`]. The
    /// padding is a binary property (0x67000102) whose size, together with how many TransferBuffers
    /// carry the properties (each at most the [`max_transfer_buffer`] size, split evenly), makes the
    /// count come out. That works for the unpadded item's size and for any size 16 bytes or more above
    /// it (with TransferBuffers of at least 16 bytes); for others the item is built unpadded, which
    /// [`stream_len`] tells.
    ///
    /// [`padding`]: ItemBuilder::padding
    /// [`max_transfer_buffer`]: ItemBuilder::max_transfer_buffer
    /// [`stream_len`]: ItemBuilder::stream_len
    pub fn total_size(mut self, bytes: usize) -> Self {
        self.total_size = Some(bytes);
        self
    }

    /// Splits the property stream into TransferBuffers of at most `bytes` bytes (at least 1, and at most
    /// what a frame's i32 length can say).
    pub fn max_transfer_buffer(mut self, bytes: usize) -> Self {
        self.max_transfer_buffer = bytes.clamp(1, i32::MAX as usize);
        self
    }

    /// How many bytes [`build`](ItemBuilder::build) will make.
    pub fn stream_len(&self) -> usize {
        self.plan().stream_len()
    }

    /// Writes the framed stream.
    pub fn build(&self) -> Vec<u8> {
        let plan = self.plan();
        let mut out = Vec::with_capacity(plan.stream_len());
        plan.write(&mut out)
            .expect("writing to a vector does not fail");
        out
    }

    /// Writes the framed stream to `out`, generating large values as it goes. Buffer `out` if it is a
    /// file: the stream is written in pieces of a few kilobytes.
    pub fn write_to<W: Write>(&self, mut out: W) -> io::Result<()> {
        self.plan().write(&mut out)
    }

    /// What to write: the properties, and how to cut them into TransferBuffers.
    fn plan(&self) -> Plan {
        let max = self.max_transfer_buffer;
        let unpadded = self.properties(None);
        if let Some(target) = self.total_size {
            if let Some((padding, frames)) = exact_padding(target, unpadded.len, max) {
                let properties = self.properties(Some(padding));
                let chunks = Chunks::Even {
                    total: properties.len,
                    count: frames,
                };
                return Plan { properties, chunks };
            }
        }
        let properties = match (self.total_size, self.padding) {
            (None, padding) if padding > 0 => self.properties(Some(padding)),
            _ => unpadded,
        };
        let chunks = Chunks::Fixed {
            total: properties.len,
            max,
        };
        Plan { properties, chunks }
    }

    /// The property stream of this item, with a padding property of `padding` bytes if any.
    fn properties(&self, padding: Option<usize>) -> Properties {
        let mut out = Properties::default();
        self.write_item(&mut out, padding);
        out
    }

    fn write_item(&self, out: &mut Properties, padding: Option<usize>) {
        out.integer32(PID_TAG_IMPORTANCE, 1);
        out.unicode(tag(ID_MESSAGE_CLASS, PT_UNICODE), &self.message_class);
        out.unicode(tag(ID_SUBJECT, PT_UNICODE), &self.subject);
        if let Some((name, address)) = &self.sender {
            out.unicode(tag(ID_SENDER_NAME, PT_UNICODE), name);
            out.unicode(tag(ID_SENDER_ADDRESS_TYPE, PT_UNICODE), "SMTP");
            out.unicode(tag(ID_SENDER_EMAIL_ADDRESS, PT_UNICODE), address);
        }
        if let Some(at) = self.sent {
            out.time(PID_TAG_CLIENT_SUBMIT_TIME, at);
        }
        if let Some(at) = self.received {
            out.time(PID_TAG_MESSAGE_DELIVERY_TIME, at);
        }
        if !self.body.is_empty() {
            out.unicode(tag(ID_BODY, PT_UNICODE), &self.body);
        }
        if let Some(padding) = padding {
            out.generated(PID_TAG_PADDING, padding);
        }
        for (kind, name, address) in &self.recipients {
            out.marker(START_RECIP);
            out.integer32(PID_TAG_RECIPIENT_TYPE, kind.raw());
            out.unicode(tag(ID_DISPLAY_NAME, PT_UNICODE), name);
            out.unicode(tag(ID_ADDRESS_TYPE, PT_UNICODE), "SMTP");
            out.unicode(tag(ID_EMAIL_ADDRESS, PT_UNICODE), address);
            out.unicode(tag(ID_SMTP_ADDRESS, PT_UNICODE), address);
            out.marker(END_TO_RECIP);
        }
        for (number, attachment) in self.attachments.iter().enumerate() {
            out.marker(NEW_ATTACH);
            out.integer32(PID_TAG_ATTACH_NUMBER, number as u32);
            match attachment {
                AttachmentSpec::File { name, size } => {
                    out.integer32(PID_TAG_ATTACH_METHOD, ATTACH_BY_VALUE);
                    out.unicode(tag(ID_ATTACH_LONG_FILENAME, PT_UNICODE), name);
                    out.integer32(
                        PID_TAG_ATTACH_SIZE,
                        u32::try_from(*size).unwrap_or(u32::MAX),
                    );
                    out.generated(PID_TAG_ATTACH_DATA_BINARY, *size);
                }
                AttachmentSpec::Item { name, item } => {
                    out.integer32(PID_TAG_ATTACH_METHOD, ATTACH_EMBEDDED_MSG);
                    out.unicode(tag(ID_DISPLAY_NAME, PT_UNICODE), name);
                    out.marker(START_EMBED);
                    item.write_item(out, (item.padding > 0).then_some(item.padding));
                    out.marker(END_EMBED);
                }
            }
            out.marker(END_ATTACH);
        }
    }
}

/// A synthetic item of `size` bytes, exactly (unless `size` is below the smallest item with this
/// subject, about 100 bytes, which is then what it gets), for load tests.
pub fn synthetic_item(subject: &str, size: usize) -> Vec<u8> {
    ItemBuilder::new(subject)
        .max_transfer_buffer(1024 * 1024)
        .total_size(size)
        .build()
}

/// The padding and the number of TransferBuffers that make a stream of exactly `target` bytes out of
/// `unpadded` bytes of properties, each TransferBuffer at most `max` bytes; `None` when no padding can.
///
/// The stream is `SETUP_LEN + properties + 8 × frames`. The fewest frames that can carry what is left
/// after the set-up calls is `ceil(left / (max + 8))`; with that many, the properties take the rest,
/// which is at most `frames × max` and must hold the unpadded properties, the padding property's tag and
/// length, and one byte per frame.
fn exact_padding(target: usize, unpadded: usize, max: usize) -> Option<(usize, usize)> {
    let left = target.checked_sub(SETUP_LEN)?;
    let frames = left.div_ceil(max + FRAME_HEADER).max(1);
    let properties = left.checked_sub(frames * FRAME_HEADER)?;
    let padding = properties.checked_sub(unpadded + BINARY_OVERHEAD)?;
    (properties >= frames).then_some((padding, frames))
}

struct Plan {
    properties: Properties,
    chunks: Chunks,
}

/// How the property stream is cut into TransferBuffers.
enum Chunks {
    /// `max` bytes each, the last one shorter.
    Fixed { total: usize, max: usize },
    /// `count` buffers whose sizes differ by at most one byte.
    Even { total: usize, count: usize },
}

impl Chunks {
    fn sizes(&self) -> Box<dyn Iterator<Item = usize> + '_> {
        match *self {
            Chunks::Fixed { total, max } => {
                Box::new((0..total.div_ceil(max)).map(move |i| max.min(total - i * max)))
            }
            Chunks::Even { total, count } => {
                Box::new((0..count).map(move |i| total / count + usize::from(i < total % count)))
            }
        }
    }
}

impl Plan {
    fn stream_len(&self) -> usize {
        SETUP_LEN + self.properties.len + FRAME_HEADER * self.chunks.sizes().count()
    }

    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let mut config = Vec::new();
        config.extend_from_slice(&0u32.to_le_bytes());
        config.extend_from_slice(&1u32.to_le_bytes());
        write_frame_header(out, OP_CONFIG, config.len())?;
        out.write_all(&config)?;
        let mut interface = 1u32.to_le_bytes().to_vec();
        interface.extend_from_slice(&IID_IMESSAGE);
        interface.extend_from_slice(&0x8000_2400u32.to_le_bytes());
        write_frame_header(out, OP_IS_INTERFACE_OK, interface.len())?;
        out.write_all(&interface)?;
        // Version 15.20.4566.6022, encoded as docs/upstream.md section 7 describes.
        let version: [u16; 3] = [(15 << 8) | 20, 0x8000 | 4566, 6022];
        let version: Vec<u8> = version.iter().flat_map(|w| w.to_le_bytes()).collect();
        write_frame_header(out, OP_TELL_PARTNER_VERSION, version.len())?;
        out.write_all(&version)?;
        let mut source = PieceReader {
            pieces: &self.properties.pieces,
            index: 0,
            at: 0,
        };
        for size in self.chunks.sizes() {
            write_frame_header(out, OP_TRANSFER_BUFFER, size)?;
            source.copy(size, out)?;
        }
        Ok(())
    }
}

fn write_frame_header(out: &mut impl Write, opcode: u32, len: usize) -> io::Result<()> {
    let len = i32::try_from(len).expect("TransferBuffers are at most i32::MAX bytes");
    out.write_all(&opcode.to_le_bytes())?;
    out.write_all(&len.to_le_bytes())
}

/// A property stream under construction: literal bytes, and runs of generated content that take no
/// memory until they are written.
#[derive(Default)]
struct Properties {
    pieces: Vec<Piece>,
    len: usize,
}

enum Piece {
    Bytes(Vec<u8>),
    /// `n` bytes of content whose byte `i` is `i % 251`, so that no two nearby runs look alike.
    Generated(usize),
}

impl Properties {
    fn bytes(&mut self, bytes: &[u8]) {
        match self.pieces.last_mut() {
            Some(Piece::Bytes(last)) => last.extend_from_slice(bytes),
            _ => self.pieces.push(Piece::Bytes(bytes.to_vec())),
        }
        self.len += bytes.len();
    }

    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }

    fn marker(&mut self, tag: u32) {
        self.u32(tag);
    }

    fn integer32(&mut self, tag: u32, value: u32) {
        self.u32(tag);
        self.u32(value);
    }

    fn time(&mut self, tag: u32, at: DateTime<Utc>) {
        const UNIX_EPOCH_TICKS: i128 = 11_644_473_600 * 10_000_000;
        let ticks = i128::from(at.timestamp()) * 10_000_000
            + i128::from(at.timestamp_subsec_nanos() / 100)
            + UNIX_EPOCH_TICKS;
        self.u32(tag);
        self.bytes(&u64::try_from(ticks).unwrap_or(0).to_le_bytes());
    }

    fn unicode(&mut self, tag: u32, text: &str) {
        let utf16: Vec<u8> = text
            .encode_utf16()
            .chain(std::iter::once(0))
            .flat_map(u16::to_le_bytes)
            .collect();
        self.u32(tag);
        self.u32(value_len(utf16.len()));
        self.bytes(&utf16);
    }

    /// A binary property of `len` generated bytes.
    fn generated(&mut self, tag: u32, len: usize) {
        self.u32(tag);
        self.u32(value_len(len));
        self.pieces.push(Piece::Generated(len));
        self.len += len;
    }
}

fn value_len(len: usize) -> u32 {
    u32::try_from(len).expect("a property value holds less than 4 GiB")
}

/// The generated content's repeating pattern, several periods long so that one write covers many.
const PATTERN: [u8; 251 * 16] = {
    let mut pattern = [0; 251 * 16];
    let mut i = 0;
    while i < pattern.len() {
        pattern[i] = (i % 251) as u8;
        i += 1;
    }
    pattern
};

/// Reads the pieces of a property stream in order, generating content as it goes.
struct PieceReader<'a> {
    pieces: &'a [Piece],
    index: usize,
    at: usize,
}

impl PieceReader<'_> {
    /// Writes the next `len` bytes to `out`.
    fn copy(&mut self, mut len: usize, out: &mut impl Write) -> io::Result<()> {
        while len > 0 {
            let piece = &self.pieces[self.index];
            let piece_len = match piece {
                Piece::Bytes(bytes) => bytes.len(),
                Piece::Generated(n) => *n,
            };
            let take = len.min(piece_len - self.at);
            match piece {
                Piece::Bytes(bytes) => out.write_all(&bytes[self.at..self.at + take])?,
                Piece::Generated(_) => {
                    let mut written = 0;
                    while written < take {
                        let start = (self.at + written) % 251;
                        let n = (take - written).min(PATTERN.len() - start);
                        out.write_all(&PATTERN[start..start + n])?;
                        written += n;
                    }
                }
            }
            self.at += take;
            len -= take;
            if self.at == piece_len {
                self.index += 1;
                self.at = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fts::{check, summarize};

    proptest! {
        #[test]
        fn total_size_is_exact_from_a_little_above_the_unpadded_item(
            subject in "\\PC{0,20}",
            recipients in 0usize..4,
            chunk in 16usize..5000,
            extra in 16usize..200_000,
        ) {
            let mut item = ItemBuilder::new(&subject).max_transfer_buffer(chunk);
            for i in 0..recipients {
                item = item.recipient(RecipientKind::To, "R", &format!("r{i}@example.com"));
            }
            let unpadded = item.stream_len();
            let target = unpadded + extra;
            let item = item.total_size(target);
            let stream = item.build();
            prop_assert_eq!(stream.len(), target);
            prop_assert_eq!(item.stream_len(), target);
            prop_assert!(check(&stream).is_ok());
            let summary = summarize(&stream).unwrap();
            prop_assert_eq!(summary.message.recipients.len(), recipients);
        }
    }

    #[test]
    fn items_without_the_new_parts_are_built_as_before() {
        // The shape the shipped sample and existing tests rely on: Importance, class, subject, body.
        let item = ItemBuilder::new("Hi").body("B").build();
        let mut expected = Vec::new();
        expected.extend(0x0017_0003u32.to_le_bytes());
        expected.extend(1u32.to_le_bytes());
        for (tag, text) in [
            (0x001A_001Fu32, "IPM.Note"),
            (0x0037_001F, "Hi"),
            (0x1000_001F, "B"),
        ] {
            let utf16: Vec<u8> = text
                .encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect();
            expected.extend(tag.to_le_bytes());
            expected.extend((utf16.len() as u32).to_le_bytes());
            expected.extend(utf16);
        }
        assert_eq!(&item[SETUP_LEN + 8..], expected.as_slice());
        assert_eq!(item.len(), SETUP_LEN + 8 + expected.len());
    }

    #[test]
    fn synthetic_items_have_exactly_the_requested_size() {
        for size in [200, 4096, 64 * 1024, 1024 * 1024 + 3, 5 * 1024 * 1024 + 7] {
            let item = synthetic_item("x", size);
            assert!(check(&item).is_ok());
            assert_eq!(item.len(), size);
        }
    }

    #[test]
    fn a_size_below_the_smallest_item_gives_the_unpadded_item() {
        let unpadded = ItemBuilder::new("x").build();
        assert_eq!(synthetic_item("x", 10), unpadded);
        assert_eq!(synthetic_item("x", unpadded.len()), unpadded);
    }

    #[test]
    fn generated_content_is_the_same_written_in_any_pieces() {
        let item = ItemBuilder::new("x").padding(10_000);
        let whole = item.build();
        let split = item.clone().max_transfer_buffer(7).build();
        let properties = |stream: &[u8]| -> Vec<u8> {
            crate::fts::frames::transfer_buffers(stream)
                .into_iter()
                .flat_map(|(_, payload)| payload.to_vec())
                .collect()
        };
        assert_eq!(properties(&whole), properties(&split));
        let padding = &properties(&whole)[properties(&whole).len() - 10_000..];
        assert!(padding
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 251) as u8));
    }

    #[test]
    fn write_to_writes_what_build_builds() {
        let item = ItemBuilder::new("x")
            .attachment("a.bin", 70_000)
            .total_size(100_000);
        let mut written = Vec::new();
        item.write_to(&mut written).unwrap();
        assert_eq!(written, item.build());
        assert_eq!(written.len(), 100_000);
    }
}
