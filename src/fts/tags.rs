//! The property types, tags and markers of the MS-OXCFXICS property stream that the decoder reads and the
//! builder writes (docs/upstream.md section 7; names as in MS-OXPROPS and MS-OXCFXICS).
//!
//! A tag is a u32: the property id in the high 16 bits, the type in the low 16. Properties are matched
//! by id where the type may vary (strings come as Unicode, 8-bit or in a code page), by whole tag
//! elsewhere.

// Property types (the low 16 bits of a tag).
pub(crate) const PT_INTEGER16: u16 = 0x0002;
pub(crate) const PT_INTEGER32: u16 = 0x0003;
pub(crate) const PT_FLOATING32: u16 = 0x0004;
pub(crate) const PT_FLOATING64: u16 = 0x0005;
pub(crate) const PT_CURRENCY: u16 = 0x0006;
pub(crate) const PT_FLOATING_TIME: u16 = 0x0007;
pub(crate) const PT_ERROR_CODE: u16 = 0x000A;
pub(crate) const PT_BOOLEAN: u16 = 0x000B;
pub(crate) const PT_OBJECT: u16 = 0x000D;
pub(crate) const PT_INTEGER64: u16 = 0x0014;
pub(crate) const PT_STRING8: u16 = 0x001E;
pub(crate) const PT_UNICODE: u16 = 0x001F;
pub(crate) const PT_TIME: u16 = 0x0040;
pub(crate) const PT_GUID: u16 = 0x0048;
pub(crate) const PT_SERVER_ID: u16 = 0x00FB;
pub(crate) const PT_BINARY: u16 = 0x0102;
/// Set on a base type for a multi-valued property: a u32 count, then the values.
pub(crate) const MULTI_VALUED: u16 = 0x1000;
/// Set on a string type whose low 15 bits are the code page of its bytes (`0x84B0`: 1200, UTF-16LE).
pub(crate) const CODE_PAGE_STRING: u16 = 0x8000;

/// Property ids from here up are named: the tag is followed by the name's GUID and kind.
pub(crate) const FIRST_NAMED_ID: u16 = 0x8000;

// Markers: bare tags with no value that open and close the parts of an item.
pub(crate) const NEW_ATTACH: u32 = 0x4000_0003;
pub(crate) const START_EMBED: u32 = 0x4001_0003;
pub(crate) const END_EMBED: u32 = 0x4002_0003;
pub(crate) const START_RECIP: u32 = 0x4003_0003;
pub(crate) const END_TO_RECIP: u32 = 0x4004_0003;
pub(crate) const END_ATTACH: u32 = 0x400E_0003;

/// The markers of folder and synchronization streams (MS-OXCFXICS 2.2.4.1.4), which have no place in an
/// item stream; the decoder refuses them rather than reading them as properties with a value.
const OTHER_MARKERS: [(u32, &str); 18] = [
    (0x4009_0003, "StartTopFld"),
    (0x400A_0003, "StartSubFld"),
    (0x400B_0003, "EndFolder"),
    (0x400C_0003, "StartMessage"),
    (0x400D_0003, "EndMessage"),
    (0x4010_0003, "StartFAIMsg"),
    (0x4012_0003, "IncrSyncChg"),
    (0x4013_0003, "IncrSyncDel"),
    (0x4014_0003, "IncrSyncEnd"),
    (0x4015_0003, "IncrSyncMessage"),
    (0x4018_0003, "FXErrorInfo"),
    (0x402F_0003, "IncrSyncRead"),
    (0x403A_0003, "IncrSyncStateBegin"),
    (0x403B_0003, "IncrSyncStateEnd"),
    (0x4074_000B, "IncrSyncProgressMode"),
    (0x4075_000B, "IncrSyncProgressPerMsg"),
    (0x407B_0102, "IncrSyncGroupInfo"),
    (0x407D_0003, "IncrSyncChgPartial"),
];

/// Meta-properties: ids whose values direct the reader instead of describing the item
/// (MetaTagDnPrefix, MetaTagEcWarning, MetaTagFXDelProp). They are read past and not counted.
const META_PROPERTY_IDS: [u16; 3] = [0x4008, 0x400F, 0x4016];

/// Whether `tag` is a marker (of item streams or of any other FastTransfer stream).
pub(crate) fn is_marker(tag: u32) -> bool {
    matches!(
        tag,
        NEW_ATTACH | START_EMBED | END_EMBED | START_RECIP | END_TO_RECIP | END_ATTACH
    ) || OTHER_MARKERS.iter().any(|(marker, _)| *marker == tag)
}

/// Whether a property with this id is a meta-property.
pub(crate) fn is_meta_property(id: u16) -> bool {
    META_PROPERTY_IDS.contains(&id)
}

/// The MS-OXCFXICS name of a marker, for error messages.
pub(crate) fn tag_name(tag: u32) -> Option<&'static str> {
    let name = match tag {
        NEW_ATTACH => "NewAttach",
        START_EMBED => "StartEmbed",
        END_EMBED => "EndEmbed",
        START_RECIP => "StartRecip",
        END_TO_RECIP => "EndToRecip",
        END_ATTACH => "EndAttach",
        _ => {
            return OTHER_MARKERS
                .iter()
                .find(|(t, _)| *t == tag)
                .map(|(_, n)| *n)
        }
    };
    Some(name)
}

// The item's own properties. Strings by id, the rest by tag.
pub(crate) const PID_TAG_IMPORTANCE: u32 = 0x0017_0003;
pub(crate) const ID_MESSAGE_CLASS: u16 = 0x001A;
pub(crate) const ID_SUBJECT: u16 = 0x0037;
pub(crate) const PID_TAG_CLIENT_SUBMIT_TIME: u32 = 0x0039_0040;
pub(crate) const ID_SENT_REPRESENTING_NAME: u16 = 0x0042;
pub(crate) const ID_SENT_REPRESENTING_EMAIL_ADDRESS: u16 = 0x0065;
pub(crate) const ID_SENDER_NAME: u16 = 0x0C1A;
pub(crate) const ID_SENDER_ADDRESS_TYPE: u16 = 0x0C1E;
pub(crate) const ID_SENDER_EMAIL_ADDRESS: u16 = 0x0C1F;
pub(crate) const PID_TAG_MESSAGE_DELIVERY_TIME: u32 = 0x0E06_0040;
pub(crate) const PID_TAG_MESSAGE_SIZE: u32 = 0x0E08_0003;
pub(crate) const PID_TAG_MESSAGE_SIZE_EXTENDED: u32 = 0x0E08_0014;
pub(crate) const ID_BODY: u16 = 0x1000;
pub(crate) const PID_TAG_INTERNET_CODEPAGE: u32 = 0x3FDE_0003;
pub(crate) const PID_TAG_MESSAGE_CODEPAGE: u32 = 0x3FFD_0003;
pub(crate) const ID_SENDER_SMTP_ADDRESS: u16 = 0x5D01;
pub(crate) const ID_SENT_REPRESENTING_SMTP_ADDRESS: u16 = 0x5D02;
/// A property in the range MAPI leaves to applications (0x6700-0x67FF), used to pad synthetic items.
pub(crate) const PID_TAG_PADDING: u32 = 0x6700_0102;

// A recipient's properties.
pub(crate) const PID_TAG_RECIPIENT_TYPE: u32 = 0x0C15_0003;
pub(crate) const ID_DISPLAY_NAME: u16 = 0x3001;
pub(crate) const ID_ADDRESS_TYPE: u16 = 0x3002;
pub(crate) const ID_EMAIL_ADDRESS: u16 = 0x3003;
pub(crate) const ID_SMTP_ADDRESS: u16 = 0x39FE;

// An attachment's properties (its display name is ID_DISPLAY_NAME too).
pub(crate) const PID_TAG_ATTACH_SIZE: u32 = 0x0E20_0003;
pub(crate) const PID_TAG_ATTACH_NUMBER: u32 = 0x0E21_0003;
pub(crate) const PID_TAG_ATTACH_DATA_BINARY: u32 = 0x3701_0102;
pub(crate) const ID_ATTACH_FILENAME: u16 = 0x3704;
pub(crate) const PID_TAG_ATTACH_METHOD: u32 = 0x3705_0003;
pub(crate) const ID_ATTACH_LONG_FILENAME: u16 = 0x3707;
pub(crate) const ID_ATTACH_MIME_TAG: u16 = 0x370E;

/// PidTagAttachMethod of an attachment whose content is a file's bytes.
pub(crate) const ATTACH_BY_VALUE: u32 = 1;
/// PidTagAttachMethod of an attachment whose content is an embedded item.
pub(crate) const ATTACH_EMBEDDED_MSG: u32 = 5;

/// Builds a tag from an id and a type.
pub(crate) const fn tag(id: u16, kind: u16) -> u32 {
    ((id as u32) << 16) | kind as u32
}
