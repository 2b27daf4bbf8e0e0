//! The decoder against hand-made property streams: every property type, named properties, markers,
//! values split across frames, and hostile input.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::fts::ItemBuilder;

/// Bytes of the three set-up frames every stream here starts with.
const SETUP: usize = 62;

/// `properties` in well-formed frames: the set-up calls, then TransferBuffers of at most `chunk` bytes.
fn framed(properties: &[u8], chunk: usize) -> Vec<u8> {
    let mut stream = Vec::new();
    let mut frame = |opcode: u32, payload: &[u8]| {
        stream.extend(opcode.to_le_bytes());
        stream.extend((payload.len() as i32).to_le_bytes());
        stream.extend(payload);
    };
    frame(1, &[0, 0, 0, 0, 1, 0, 0, 0]);
    let mut interface = vec![1, 0, 0, 0];
    interface.extend([
        0x07, 0x03, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x46,
    ]);
    interface.extend(0x8000_2400u32.to_le_bytes());
    frame(3, &interface);
    frame(4, &[0x14, 0x0F, 0xD6, 0x91, 0x86, 0x17]);
    for piece in properties.chunks(chunk.max(1)) {
        frame(2, piece);
    }
    stream
}

/// `properties` in one TransferBuffer.
fn stream(properties: &[u8]) -> Vec<u8> {
    framed(properties, usize::MAX)
}

/// The stream offset of byte `n` of the property stream, when it is all in one TransferBuffer.
fn at(n: usize) -> usize {
    SETUP + 8 + n
}

fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn utf16(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// A variable-size property: tag, u32 length, bytes.
fn variable(tag: u32, value: &[u8]) -> Vec<u8> {
    let mut out = u32s(&[tag, value.len() as u32]);
    out.extend(value);
    out
}

fn unicode(tag: u32, text: &str) -> Vec<u8> {
    variable(tag, &utf16(text))
}

fn subject(text: &str) -> Vec<u8> {
    unicode(0x0037_001F, text)
}

fn summary(properties: &[u8]) -> ItemSummary {
    summarize(&stream(properties)).unwrap()
}

fn problem(properties: &[u8]) -> StreamError {
    summarize(&stream(properties)).unwrap_err()
}

const PUBLIC_STRINGS: [u8; 16] = [
    0x29, 0x03, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x46,
];

#[test]
fn every_fixed_size_type_is_read_by_its_size() {
    for (kind, size) in [
        (0x0002u32, 2),
        (0x000B, 2),
        (0x0003, 4),
        (0x0004, 4),
        (0x000A, 4),
        (0x0005, 8),
        (0x0006, 8),
        (0x0007, 8),
        (0x0014, 8),
        (0x0040, 8),
        (0x0048, 16),
    ] {
        let mut properties = 0x6800_0000u32.wrapping_add(kind).to_le_bytes().to_vec();
        // A value of 0xFF bytes, which would read as a tag of an unknown type if the size were wrong.
        properties.extend(vec![0xFF; size]);
        properties.extend(subject("after"));
        let item = summary(&properties);
        assert_eq!(
            item.message.subject.as_deref(),
            Some("after"),
            "type {kind:#06x}"
        );
        assert_eq!(item.message.properties, 2);
    }
}

#[test]
fn every_variable_size_type_carries_its_length() {
    for kind in [0x001Fu32, 0x001E, 0x0102, 0x000D, 0x00FB, 0x84B0, 0x84E4] {
        let mut properties = variable(0x6801_0000 | kind, &[0x03, 0x00, 0x17, 0x00, 0, 0]);
        properties.extend(subject("after"));
        let item = summary(&properties);
        assert_eq!(
            item.message.subject.as_deref(),
            Some("after"),
            "type {kind:#06x}"
        );
        assert_eq!(item.total_properties, 2);
    }
}

#[test]
fn multi_valued_properties_carry_a_count_then_each_value() {
    let mut properties = u32s(&[0x6802_1003, 3, 7, 8, 9]);
    properties.extend(u32s(&[0x6803_101F, 2]));
    properties.extend(variable(0, &utf16("one"))[4..].to_vec());
    properties.extend(variable(0, &utf16("two"))[4..].to_vec());
    properties.extend(u32s(&[0x6804_1102, 1, 2]));
    properties.extend([0xAB, 0xCD]);
    properties.extend(u32s(&[0x6805_1048, 1]));
    properties.extend([0x11; 16]);
    properties.extend(u32s(&[0x6806_1014, 0]));
    properties.extend(subject("after"));
    let item = summary(&properties);
    assert_eq!(item.message.subject.as_deref(), Some("after"));
    assert_eq!(item.message.properties, 6);
}

#[test]
fn the_item_fields_are_read_from_their_properties() {
    // 2000-01-01T00:00:00Z and 2000-01-01T00:00:01.5Z as FILETIMEs.
    let sent: u64 = 125_911_584_000_000_000;
    let mut properties = unicode(0x001A_001F, "IPM.Note.Custom");
    properties.extend(subject("Hello"));
    properties.extend(unicode(0x0C1A_001F, "Ann Example"));
    properties.extend(unicode(0x0C1F_001F, "/o=Example/cn=Ann"));
    properties.extend(unicode(0x5D01_001F, "ann@example.com"));
    properties.extend(u32s(&[0x0039_0040]));
    properties.extend(sent.to_le_bytes());
    properties.extend(u32s(&[0x0E06_0040]));
    properties.extend((sent + 15_000_000).to_le_bytes());
    properties.extend(u32s(&[0x0E08_0003, 4321]));
    let message = summary(&properties).message;
    assert_eq!(message.message_class.as_deref(), Some("IPM.Note.Custom"));
    assert_eq!(message.subject.as_deref(), Some("Hello"));
    let sender = message.sender.unwrap();
    assert_eq!(sender.name.as_deref(), Some("Ann Example"));
    assert_eq!(
        sender.address.as_deref(),
        Some("ann@example.com"),
        "SMTP first"
    );
    assert_eq!(
        message.sent,
        Some(Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap())
    );
    assert_eq!(
        message.received,
        Some(
            Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 1).unwrap()
                + chrono::Duration::milliseconds(500)
        )
    );
    assert_eq!(message.message_size, Some(4321));
}

#[test]
fn the_representing_sender_stands_in_when_there_is_no_sender() {
    let mut properties = unicode(0x0042_001F, "On behalf");
    properties.extend(unicode(0x0065_001F, "behalf@example.com"));
    let sender = summary(&properties).message.sender.unwrap();
    assert_eq!(sender.name.as_deref(), Some("On behalf"));
    assert_eq!(sender.address.as_deref(), Some("behalf@example.com"));
}

#[test]
fn eight_bit_strings_are_read_in_the_item_code_page_even_when_it_comes_after_them() {
    let mut properties = variable(0x0037_001E, b"Caf\xc3\xa9\0");
    properties.extend(variable(0x001A_84B0, &utf16("IPM.Note")));
    properties.extend(u32s(&[0x3FFD_0003, 65001]));
    let message = summary(&properties).message;
    assert_eq!(message.subject.as_deref(), Some("Café"));
    assert_eq!(message.message_class.as_deref(), Some("IPM.Note"));
    assert_eq!(message.code_page, Some(65001));

    let windows = summary(&variable(0x0037_001E, b"Caf\xe9 \x80\0")).message;
    assert_eq!(
        windows.subject.as_deref(),
        Some("Café €"),
        "windows-1252 by default"
    );
}

#[test]
fn named_properties_carry_their_guid_and_id_or_name() {
    let mut properties = u32s(&[0x8001_0003]);
    properties.extend(PUBLIC_STRINGS);
    properties.push(0);
    properties.extend(u32s(&[0x8512, 42]));
    properties.extend(u32s(&[0x8002_101F]));
    properties.extend(PUBLIC_STRINGS);
    properties.push(1);
    properties.extend(utf16("Keywords"));
    properties.extend(u32s(&[1]));
    properties.extend(variable(0, &utf16("blue"))[4..].to_vec());
    // A named property with a string id must not be taken for the subject, whatever its id's low bits.
    properties.extend(u32s(&[0x8037_001F]));
    properties.extend([0x22; 16]);
    properties.push(0);
    properties.extend(u32s(&[7]));
    properties.extend(variable(0, &utf16("not the subject"))[4..].to_vec());
    let message = summary(&properties).message;
    assert_eq!(message.properties, 3);
    assert_eq!(message.subject, None);
    assert_eq!(
        message.named_properties,
        vec![
            NamedProperty {
                guid: Guid(PUBLIC_STRINGS),
                name: PropertyName::Id(0x8512),
                property_type: 0x0003,
            },
            NamedProperty {
                guid: Guid(PUBLIC_STRINGS),
                name: PropertyName::Name("Keywords".to_owned()),
                property_type: 0x101F,
            },
            NamedProperty {
                guid: Guid([0x22; 16]),
                name: PropertyName::Id(7),
                property_type: 0x001F,
            },
        ]
    );
}

#[test]
fn recipients_and_attachments_are_read_between_their_markers() {
    let mut properties = u32s(&[0x4008_001E, 3]);
    properties.extend(b"/o\0");
    properties.extend(subject("With parts"));
    properties.extend(u32s(&[START_RECIP, 0x0C15_0003, 0x8000_0002]));
    properties.extend(unicode(0x3001_001F, "Bob"));
    properties.extend(unicode(0x3003_001F, "bob@example.com"));
    properties.extend(u32s(&[
        END_TO_RECIP,
        NEW_ATTACH,
        0x0E21_0003,
        0,
        0x3705_0003,
        1,
    ]));
    properties.extend(unicode(0x3704_001F, "REPORT~1.PDF"));
    properties.extend(unicode(0x370E_001F, "application/pdf"));
    properties.extend(variable(0x3701_0102, &[7; 300]));
    properties.extend(u32s(&[0x0E20_0003, 512, END_ATTACH]));
    let item = summary(&properties);
    let message = &item.message;
    assert_eq!(message.properties, 1, "MetaTagDnPrefix is not counted");
    assert_eq!(message.recipients.len(), 1);
    let bob = &message.recipients[0];
    assert_eq!(bob.kind, Some(RecipientKind::Cc));
    assert_eq!(bob.name.as_deref(), Some("Bob"));
    assert_eq!(bob.address.as_deref(), Some("bob@example.com"));
    assert_eq!(bob.properties, 3);
    let report = &message.attachments[0];
    assert_eq!(report.name.as_deref(), Some("REPORT~1.PDF"));
    assert_eq!(report.mime_type.as_deref(), Some("application/pdf"));
    assert_eq!(report.data_bytes, Some(300));
    assert_eq!(report.attach_size, Some(512));
    assert_eq!(report.size(), Some(300));
    assert_eq!((report.number, report.method), (Some(0), Some(1)));
    assert_eq!(item.total_properties, 1 + 3 + 6);
}

#[test]
fn an_embedded_item_is_read_with_its_own_recipients_and_attachments() {
    let inner = ItemBuilder::new("Inner")
        .recipient(RecipientKind::Bcc, "Carol", "carol@example.com")
        .attachment("deep.txt", 5);
    let item = ItemBuilder::new("Outer")
        .embedded_item("Fwd: Inner", inner)
        .attachment("after.bin", 9)
        .build();
    let message = summarize(&item).unwrap().message;
    let forwarded = &message.attachments[0];
    assert_eq!(forwarded.name.as_deref(), Some("Fwd: Inner"));
    assert_eq!(forwarded.method, Some(5));
    let inner = forwarded.embedded.as_deref().unwrap();
    assert_eq!(inner.subject.as_deref(), Some("Inner"));
    assert_eq!(inner.recipients[0].kind, Some(RecipientKind::Bcc));
    assert_eq!(inner.attachments[0].size(), Some(5));
    assert_eq!(message.attachments[1].name.as_deref(), Some("after.bin"));
}

#[test]
fn values_split_across_transfer_buffers_read_as_one_and_errors_name_the_file_offset() {
    let mut properties = subject("split in pieces");
    properties.extend(u32s(&[START_RECIP]));
    properties.extend(unicode(0x3001_001F, "Dee"));
    properties.extend(u32s(&[END_TO_RECIP]));
    for chunk in 1..properties.len() {
        let item = summarize(&framed(&properties, chunk)).unwrap();
        assert_eq!(item.message.subject.as_deref(), Some("split in pieces"));
        assert_eq!(item.message.recipients[0].name.as_deref(), Some("Dee"));
    }
    // With three-byte frames, the subject's length (property-stream bytes 4-7) starts in the second
    // frame at its second byte: after the set-up, one whole frame (8 + 3) and a header (8), plus one.
    let mut broken = subject("x");
    broken[4..8].copy_from_slice(&1000u32.to_le_bytes());
    let error = summarize(&framed(&broken, 3)).unwrap_err();
    assert_eq!(error.offset, SETUP + 11 + 8 + 1);
    assert!(matches!(
        error.problem,
        StreamProblem::ValueTooLong { declared: 1000, .. }
    ));
}

#[test]
fn a_declared_length_past_the_end_is_an_error_not_an_allocation() {
    let mut properties = subject("x");
    properties.extend(u32s(&[0x6800_0102, u32::MAX]));
    properties.extend([1, 2, 3]);
    let error = problem(&properties);
    assert_eq!(error.offset, at(subject("x").len() + 4));
    assert_eq!(
        error.problem,
        StreamProblem::ValueTooLong {
            declared: u32::MAX,
            remaining: 3
        }
    );
}

#[test]
fn a_value_count_the_stream_cannot_hold_is_refused_before_reading_values() {
    let error = problem(&u32s(&[0x6800_1014, 0x1000_0000, 0, 0]));
    assert_eq!(error.offset, at(4));
    assert_eq!(
        error.problem,
        StreamProblem::TooManyValues {
            declared: 0x1000_0000,
            remaining: 8,
            tag: 0x6800_1014
        }
    );
    let strings = problem(&u32s(&[0x6800_101F, u32::MAX]));
    assert!(matches!(
        strings.problem,
        StreamProblem::TooManyValues { .. }
    ));
}

#[test]
fn an_unterminated_name_is_an_error_at_the_name() {
    let mut properties = u32s(&[0x8001_001F]);
    properties.extend(PUBLIC_STRINGS);
    properties.push(1);
    properties.extend(b"K\0e\0y\0s");
    let error = problem(&properties);
    assert_eq!(error.offset, at(4 + 16 + 1));
    assert_eq!(error.problem, StreamProblem::UnterminatedName);
}

#[test]
fn an_unknown_name_kind_or_type_is_an_error_at_its_byte() {
    let mut properties = u32s(&[0x8001_0003]);
    properties.extend(PUBLIC_STRINGS);
    properties.push(2);
    let error = problem(&properties);
    assert_eq!(error.offset, at(20));
    assert_eq!(error.problem, StreamProblem::UnknownNameKind(2));

    let mut properties = subject("x");
    properties.extend(u32s(&[0x6800_0099, 0]));
    let error = problem(&properties);
    assert_eq!(error.offset, at(subject("x").len()));
    assert_eq!(
        error.problem,
        StreamProblem::UnknownPropertyType { tag: 0x6800_0099 }
    );
    assert!(error.to_string().contains("type 0x0099"), "{error}");
}

#[test]
fn a_stream_ending_inside_a_tag_or_a_value_says_how_much_was_missing() {
    let mut properties = subject("x");
    properties.extend([0x03, 0x00]);
    let error = problem(&properties);
    assert_eq!(error.offset, at(subject("x").len()));
    assert_eq!(
        error.problem,
        StreamProblem::TruncatedProperty {
            needed: 4,
            remaining: 2
        }
    );
    let error = problem(&u32s(&[0x0E06_0040, 1]));
    assert_eq!(
        error.problem,
        StreamProblem::TruncatedProperty {
            needed: 8,
            remaining: 4
        }
    );
}

#[test]
fn misplaced_markers_are_errors_naming_where_they_were() {
    let cases: [(&[u32], u32, Scope); 5] = [
        (&[END_ATTACH], END_ATTACH, Scope::Item),
        (&[END_EMBED], END_EMBED, Scope::Item),
        (&[START_RECIP, NEW_ATTACH], NEW_ATTACH, Scope::Recipient),
        (
            &[NEW_ATTACH, START_EMBED, END_EMBED, START_EMBED],
            START_EMBED,
            Scope::Attachment,
        ),
        (&[0x400C_0003], 0x400C_0003, Scope::Item),
    ];
    for (tags, tag, inside) in cases {
        let properties = u32s(tags);
        let error = problem(&properties);
        assert_eq!(error.offset, at(properties.len() - 4), "{tags:x?}");
        assert_eq!(
            error.problem,
            StreamProblem::MisplacedMarker { tag, inside }
        );
    }
    assert_eq!(
        problem(&u32s(&[0x400C_0003])).to_string(),
        format!(
            "at byte {}: StartMessage (0x400C0003) does not belong in the item",
            at(0)
        )
    );
}

#[test]
fn a_part_left_open_is_an_error_at_the_end_naming_where_it_opened() {
    for (tags, scope, opened) in [
        (vec![START_RECIP], Scope::Recipient, 0),
        (vec![NEW_ATTACH], Scope::Attachment, 0),
        (vec![NEW_ATTACH, START_EMBED], Scope::EmbeddedItem, 4),
    ] {
        let mut properties = subject("x");
        let start = properties.len();
        properties.extend(u32s(&tags));
        let error = problem(&properties);
        assert_eq!(error.offset, at(properties.len()));
        assert_eq!(
            error.problem,
            StreamProblem::Unclosed {
                scope,
                opened_at: at(start + opened)
            }
        );
    }
}

#[test]
fn embedded_items_nest_as_deep_as_the_limit_and_no_deeper() {
    let nested = |depth: usize| {
        let mut properties = Vec::new();
        for _ in 0..depth {
            properties.extend(u32s(&[NEW_ATTACH, START_EMBED]));
        }
        properties.extend(subject("innermost"));
        for _ in 0..depth {
            properties.extend(u32s(&[END_EMBED, END_ATTACH]));
        }
        properties
    };
    let mut message = summary(&nested(MAX_EMBEDDING_DEPTH)).message;
    for _ in 0..MAX_EMBEDDING_DEPTH {
        message = *message.attachments.remove(0).embedded.unwrap();
    }
    assert_eq!(message.subject.as_deref(), Some("innermost"));

    let error = problem(&nested(MAX_EMBEDDING_DEPTH + 1));
    assert_eq!(error.offset, at(8 * MAX_EMBEDDING_DEPTH + 4));
    assert_eq!(
        error.problem,
        StreamProblem::TooDeep {
            limit: MAX_EMBEDDING_DEPTH
        }
    );
    // A hundred thousand levels are refused at the limit, without exhausting the stack.
    let error = problem(&nested(100_000));
    assert!(matches!(error.problem, StreamProblem::TooDeep { .. }));
}

#[test]
fn frame_errors_are_those_of_the_frame_check() {
    let item = ItemBuilder::new("x").build();
    let cut = &item[..item.len() - 1];
    assert_eq!(summarize(cut).unwrap_err(), check(cut).unwrap_err());
    assert_eq!(summarize(&[]).unwrap_err().problem, StreamProblem::Empty);
}

#[test]
fn the_documentation_samples_cut_off_class_is_refused() {
    // docs/upstream.md section 7: Importance 1, then MessageClass "IPM." of a longer UTF-16 value.
    let mut properties = u32s(&[0x0017_0003, 1, 0x001A_001F, 20]);
    properties.extend(&utf16("IPM.")[..8]);
    let error = problem(&properties);
    assert_eq!(error.offset, at(12));
    assert_eq!(
        error.problem,
        StreamProblem::ValueTooLong {
            declared: 20,
            remaining: 8
        }
    );
}

proptest! {
    #[test]
    fn any_property_stream_is_judged_without_panicking_and_within_its_bytes(
        properties in proptest::collection::vec(any::<u8>(), 1..600),
        chunk in 1usize..64,
    ) {
        let stream = framed(&properties, chunk);
        match summarize(&stream) {
            Ok(item) => prop_assert!(item.total_properties <= properties.len() / 6),
            Err(error) => prop_assert!(error.offset <= stream.len()),
        }
    }

    #[test]
    fn plausible_property_streams_never_panic(
        // Tags from the ones the decoder knows, lengths and counts small and large.
        words in proptest::collection::vec(prop_oneof![
            Just(START_RECIP), Just(END_TO_RECIP), Just(NEW_ATTACH), Just(END_ATTACH),
            Just(START_EMBED), Just(END_EMBED), Just(0x0037_001F), Just(0x8001_001F),
            Just(0x6800_1003), Just(0x0E06_0040), Just(0), Just(1), Just(2), Just(u32::MAX),
            any::<u32>(),
        ], 0..64),
        chunk in 1usize..16,
    ) {
        let stream = framed(&u32s(&words), chunk);
        if let Err(error) = summarize(&stream) {
            prop_assert!(error.offset <= stream.len());
        }
    }

    #[test]
    fn a_corrupted_item_is_judged_without_panicking(
        chunk in 1usize..100,
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut item = ItemBuilder::new("corrupt me")
            .sender("Ann", "ann@example.com")
            .recipient(RecipientKind::To, "Bob", "bob@example.com")
            .embedded_item("inner", ItemBuilder::new("inner").attachment("a", 40))
            .attachment("b", 30)
            .max_transfer_buffer(chunk)
            .build();
        let position = position.index(item.len());
        item[position] = value;
        if let Err(error) = summarize(&item) {
            prop_assert!(error.offset <= item.len());
        }
    }

    #[test]
    fn built_items_read_back_whatever_their_frames(
        subject in "\\PC{0,30}",
        recipients in proptest::collection::vec(("\\PC{0,12}", "[a-z]{1,8}@example\\.com"), 0..4),
        attachments in proptest::collection::vec(("\\PC{1,12}", 0usize..3000), 0..3),
        chunk in 1usize..200,
        cut in any::<prop::sample::Index>(),
    ) {
        let mut builder = ItemBuilder::new(&subject).max_transfer_buffer(chunk);
        for (name, address) in &recipients {
            builder = builder.recipient(RecipientKind::To, name, address);
        }
        for (name, size) in &attachments {
            builder = builder.attachment(name, *size);
        }
        let stream = builder.build();
        let item = summarize(&stream).unwrap();
        prop_assert_eq!(item.message.subject.as_deref(), Some(subject.as_str()));
        prop_assert_eq!(item.message.recipients.len(), recipients.len());
        for (read, (name, address)) in item.message.recipients.iter().zip(&recipients) {
            prop_assert_eq!(read.name.as_deref(), Some(name.as_str()));
            prop_assert_eq!(read.address.as_deref(), Some(address.as_str()));
        }
        for (read, (name, size)) in item.message.attachments.iter().zip(&attachments) {
            prop_assert_eq!(read.name.as_deref(), Some(name.as_str()));
            prop_assert_eq!(read.size(), Some(*size as u64));
        }
        // Cut anywhere, the stream is refused at or before the cut, or (cut between frames, outside
        // any recipient or attachment) read as a shorter item.
        let cut = cut.index(stream.len());
        if let Err(error) = summarize(&stream[..cut]) {
            prop_assert!(error.offset <= cut);
        }
    }
}
