//! What [`summarize`](super::summarize) reads out of an item stream: the item's class, subject, sender and
//! times, its recipients and attachments, and how many properties it has.

use std::fmt;

use chrono::{DateTime, Utc};

use super::frames::StreamSummary;

/// An item stream, decoded: its frames and the item its property stream describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemSummary {
    /// Bytes in the whole stream (for a file, its size).
    pub size: usize,
    /// The frames, as [`check`](super::check) counts them.
    pub stream: StreamSummary,
    /// How many TransferBuffer frames carry the property stream.
    pub transfer_buffers: usize,
    /// The item.
    pub message: MessageSummary,
    /// Properties in the whole stream: the item's own, its recipients', its attachments' and those of
    /// embedded items. Markers and meta-properties (MetaTagDnPrefix and the like) are not counted.
    pub total_properties: usize,
}

/// An item (a message, or an item embedded in an attachment) as its properties describe it. A field is
/// `None` when the stream does not carry the property.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageSummary {
    /// PidTagMessageClass, such as `IPM.Note`.
    pub message_class: Option<String>,
    /// PidTagSubject.
    pub subject: Option<String>,
    /// PidTagSenderName and its address, else PidTagSentRepresentingName and its address.
    pub sender: Option<Sender>,
    /// PidTagClientSubmitTime: when the sender sent it.
    pub sent: Option<DateTime<Utc>>,
    /// PidTagMessageDeliveryTime: when it arrived.
    pub received: Option<DateTime<Utc>>,
    /// PidTagMessageSize (or PidTagMessageSizeExtended): the size the store gave the item, which is not
    /// the stream's size.
    pub message_size: Option<u64>,
    /// PidTagMessageCodepage, else PidTagInternetCodepage: the code page of the item's 8-bit strings.
    pub code_page: Option<u32>,
    /// The recipients, in stream order.
    pub recipients: Vec<Recipient>,
    /// The attachments, in stream order.
    pub attachments: Vec<Attachment>,
    /// The item's own properties (not those of its recipients and attachments), named ones included.
    pub properties: usize,
    /// The item's own named properties, with the names the stream carries for them.
    pub named_properties: Vec<NamedProperty>,
}

/// Who sent an item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sender {
    /// The display name.
    pub name: Option<String>,
    /// The SMTP address when the stream has one, else the address in the sender's address type (for
    /// `EX`, an Exchange distinguished name).
    pub address: Option<String>,
}

/// One recipient of an item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// PidTagRecipientType.
    pub kind: Option<RecipientKind>,
    /// PidTagDisplayName.
    pub name: Option<String>,
    /// PidTagSmtpAddress, else PidTagEmailAddress.
    pub address: Option<String>,
    /// The recipient's properties.
    pub properties: usize,
}

/// How a recipient receives an item (PidTagRecipientType).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecipientKind {
    /// 1: a primary recipient.
    To,
    /// 2: a carbon copy.
    Cc,
    /// 3: a blind carbon copy.
    Bcc,
    /// Any other value, as it was.
    Other(u32),
}

impl RecipientKind {
    /// The kind a PidTagRecipientType value stands for, ignoring the flags MAPI may set on it
    /// (`MAPI_SUBMITTED` 0x80000000, `MAPI_P1` 0x10000000).
    pub fn from_raw(value: u32) -> RecipientKind {
        match value & !0x9000_0000 {
            1 => RecipientKind::To,
            2 => RecipientKind::Cc,
            3 => RecipientKind::Bcc,
            _ => RecipientKind::Other(value),
        }
    }

    /// The PidTagRecipientType value.
    pub fn raw(self) -> u32 {
        match self {
            RecipientKind::To => 1,
            RecipientKind::Cc => 2,
            RecipientKind::Bcc => 3,
            RecipientKind::Other(value) => value,
        }
    }
}

impl fmt::Display for RecipientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecipientKind::To => f.write_str("To"),
            RecipientKind::Cc => f.write_str("Cc"),
            RecipientKind::Bcc => f.write_str("Bcc"),
            RecipientKind::Other(value) => write!(f, "type {value}"),
        }
    }
}

/// One attachment of an item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// PidTagAttachNumber.
    pub number: Option<u32>,
    /// PidTagAttachMethod: 1 a file's bytes, 5 an embedded item, 6 an OLE object, and so on.
    pub method: Option<u32>,
    /// PidTagAttachLongFilename, else PidTagAttachFilename, else PidTagDisplayName.
    pub name: Option<String>,
    /// PidTagAttachMimeTag.
    pub mime_type: Option<String>,
    /// The length of PidTagAttachDataBinary: the attached file's bytes.
    pub data_bytes: Option<u64>,
    /// PidTagAttachSize: the size the store gave the attachment, its properties included.
    pub attach_size: Option<u32>,
    /// The item between StartEmbed and EndEmbed, for an attached item.
    pub embedded: Option<Box<MessageSummary>>,
    /// The attachment's own properties (not those of an embedded item).
    pub properties: usize,
}

impl Attachment {
    /// The attachment's size: its file's bytes when the stream carries them, else PidTagAttachSize.
    pub fn size(&self) -> Option<u64> {
        self.data_bytes.or(self.attach_size.map(u64::from))
    }
}

/// A named property (id 0x8000 or above): its property set and its name or numeric id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedProperty {
    /// The property set.
    pub guid: Guid,
    /// The name within the set.
    pub name: PropertyName,
    /// The property's type, the low 16 bits of its tag.
    pub property_type: u16,
}

/// How a named property is named within its property set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PropertyName {
    /// Kind 0: a numeric id (a LID).
    Id(u32),
    /// Kind 1: a string name.
    Name(String),
}

impl fmt::Display for PropertyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropertyName::Id(id) => write!(f, "0x{id:04X}"),
            PropertyName::Name(name) => f.write_str(name),
        }
    }
}

/// A GUID as MS-OXCFXICS writes it: 16 bytes, the first three fields little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The MS-OXPROPS name of the common property sets (`PS_PUBLIC_STRINGS`, `PSETID_Common`, ...).
    pub fn property_set_name(&self) -> Option<&'static str> {
        const SETS: [(&str, &str); 10] = [
            ("00020329-0000-0000-C000-000000000046", "PS_PUBLIC_STRINGS"),
            ("00020328-0000-0000-C000-000000000046", "PS_MAPI"),
            (
                "00020386-0000-0000-C000-000000000046",
                "PS_INTERNET_HEADERS",
            ),
            ("00062008-0000-0000-C000-000000000046", "PSETID_Common"),
            ("00062004-0000-0000-C000-000000000046", "PSETID_Address"),
            ("00062002-0000-0000-C000-000000000046", "PSETID_Appointment"),
            ("00062003-0000-0000-C000-000000000046", "PSETID_Task"),
            ("0006200A-0000-0000-C000-000000000046", "PSETID_Log"),
            ("0006200E-0000-0000-C000-000000000046", "PSETID_Note"),
            ("6ED8DA90-450B-101B-98DA-00AA003F1305", "PSETID_Meeting"),
        ];
        let text = self.to_string();
        SETS.iter()
            .find(|(guid, _)| *guid == text)
            .map(|(_, name)| *name)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9]
        )?;
        b[10..].iter().try_for_each(|byte| write!(f, "{byte:02X}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_read_with_their_first_fields_little_endian() {
        let public_strings = Guid([
            0x29, 0x03, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x46,
        ]);
        assert_eq!(
            public_strings.to_string(),
            "00020329-0000-0000-C000-000000000046"
        );
        assert_eq!(
            public_strings.property_set_name(),
            Some("PS_PUBLIC_STRINGS")
        );
        assert_eq!(Guid([0x11; 16]).property_set_name(), None);
    }

    #[test]
    fn recipient_kinds_ignore_mapi_flags() {
        assert_eq!(RecipientKind::from_raw(0x8000_0002), RecipientKind::Cc);
        assert_eq!(RecipientKind::from_raw(1), RecipientKind::To);
        assert_eq!(RecipientKind::from_raw(9), RecipientKind::Other(9));
        assert_eq!(RecipientKind::Bcc.raw(), 3);
    }
}
