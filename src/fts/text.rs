//! Turns the string values of a property stream into text: Unicode (UTF-16LE), 8-bit strings in the item's
//! code page, and strings typed with their own code page (`0x8000 | codepage`).
//!
//! The decoder reads exactly the code pages it can without tables: UTF-16LE (1200), UTF-8 (65001),
//! windows-1252 (1252, also Exchange's default when an item names none), ISO-8859-1 (28591) and US-ASCII
//! (20127). In any other code page the ASCII bytes come through and the rest become U+FFFD, which is
//! enough for message classes and addresses and says honestly that the rest was not decoded.

use super::tags::{CODE_PAGE_STRING, PT_STRING8, PT_UNICODE};

/// The code page of 8-bit strings when the item names none (windows-1252, Western European).
pub(crate) const DEFAULT_CODE_PAGE: u32 = 1252;

const UTF16LE: u32 = 1200;
const UTF8: u32 = 65001;
const LATIN1: u32 = 28591;

/// A string value as it was in the stream, decoded once the item's code page is known (the code page
/// property may come after the strings it governs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawText {
    bytes: Vec<u8>,
    encoding: Encoding,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    /// PT_UNICODE: UTF-16LE.
    Utf16,
    /// PT_STRING8: 8-bit, in the item's code page.
    ItemCodePage,
    /// A code-page string type: bytes in this code page.
    CodePage(u32),
}

impl RawText {
    /// The value's bytes with the string type they came with, or `None` when the type is no string.
    pub(crate) fn new(bytes: Vec<u8>, kind: u16) -> Option<RawText> {
        let encoding = match kind {
            PT_UNICODE => Encoding::Utf16,
            PT_STRING8 => Encoding::ItemCodePage,
            _ if kind & CODE_PAGE_STRING != 0 => {
                Encoding::CodePage(u32::from(kind & !CODE_PAGE_STRING))
            }
            _ => return None,
        };
        Some(RawText { bytes, encoding })
    }

    /// The text, decoded with `item_code_page` if it is an 8-bit string, without its terminator.
    pub(crate) fn decode(&self, item_code_page: u32) -> String {
        let code_page = match self.encoding {
            Encoding::Utf16 => UTF16LE,
            Encoding::ItemCodePage => item_code_page,
            Encoding::CodePage(code_page) => code_page,
        };
        let mut text = decode(&self.bytes, code_page);
        // Strings carry their terminator (docs/upstream.md section 7); a missing one is forgiven, since
        // the length already says where the value ends.
        let kept = text.trim_end_matches('\0').len();
        text.truncate(kept);
        text
    }
}

/// `bytes` in `code_page`.
fn decode(bytes: &[u8], code_page: u32) -> String {
    match code_page {
        UTF16LE => {
            let units = bytes
                .chunks_exact(2)
                .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
            let mut text: String = char::decode_utf16(units)
                .map(|unit| unit.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect();
            if bytes.len() % 2 == 1 {
                text.push(char::REPLACEMENT_CHARACTER);
            }
            text
        }
        UTF8 => String::from_utf8_lossy(bytes).into_owned(),
        1252 => bytes.iter().map(|&b| windows_1252(b)).collect(),
        LATIN1 => bytes.iter().map(|&b| char::from(b)).collect(),
        // US-ASCII (20127) and every code page without a table here: ASCII comes through.
        _ => bytes
            .iter()
            .map(|&b| {
                if b.is_ascii() {
                    char::from(b)
                } else {
                    char::REPLACEMENT_CHARACTER
                }
            })
            .collect(),
    }
}

/// One windows-1252 byte: ISO-8859-1 except 0x80-0x9F, where the five bytes the code page leaves
/// undefined map to the C1 control of the same value, as the WHATWG Encoding Standard does.
fn windows_1252(byte: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
        0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
    ];
    match byte {
        0x80..=0x9F => {
            char::from_u32(u32::from(HIGH[usize::from(byte - 0x80)])).expect("a BMP scalar")
        }
        _ => char::from(byte),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(text: &str) -> Vec<u8> {
        text.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    #[test]
    fn unicode_strings_lose_their_terminator() {
        let text = RawText::new(utf16("Grüße ✉"), PT_UNICODE).unwrap();
        assert_eq!(text.decode(1252), "Grüße ✉");
    }

    #[test]
    fn eight_bit_strings_follow_the_item_code_page() {
        let text = RawText::new(b"Gr\xfc\xdfe \x80\0".to_vec(), PT_STRING8).unwrap();
        assert_eq!(text.decode(1252), "Grüße €");
        assert_eq!(text.decode(28591), "Grüße \u{80}");
        assert_eq!(text.decode(932), "Gr\u{FFFD}\u{FFFD}e \u{FFFD}");
    }

    #[test]
    fn code_page_strings_carry_their_own_code_page() {
        let as_1252 = RawText::new(b"caf\xe9\0".to_vec(), 0x84E4).unwrap();
        assert_eq!(
            as_1252.decode(65001),
            "café",
            "the item's code page does not apply"
        );
        let as_utf16 = RawText::new(utf16("IPM.Note"), 0x84B0).unwrap();
        assert_eq!(as_utf16.decode(1252), "IPM.Note");
    }

    #[test]
    fn broken_utf16_is_replaced_not_refused() {
        let text = RawText::new(vec![0x00, 0xD8, b'a', 0, b'b'], PT_UNICODE).unwrap();
        assert_eq!(text.decode(1252), "\u{FFFD}a\u{FFFD}");
    }

    #[test]
    fn unterminated_strings_are_read_to_their_length() {
        let text = RawText::new(b"IPM.Note".to_vec(), PT_STRING8).unwrap();
        assert_eq!(text.decode(1252), "IPM.Note");
    }

    #[test]
    fn other_types_are_no_text() {
        assert_eq!(RawText::new(vec![], 0x0102), None);
    }
}
