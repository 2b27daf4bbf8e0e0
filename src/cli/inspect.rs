//! `mailbox-gateway inspect`: decodes an item stream and prints what it holds, as text or as one JSON
//! object, or says at which byte it is broken.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::fts::{
    summarize, Attachment, ItemSummary, MessageSummary, NamedProperty, PropertyName, Recipient,
    RecipientKind, Sender,
};

/// The arguments of `mailbox-gateway inspect`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Prints the item's message class, subject, sender, sent and received times, size, recipients, \
attachments (names and sizes, embedded items opened) and how many properties it has. FILE is a raw \
item stream (docs/upstream.md section 7), not base64. A broken stream exits with status 1 and names \
the byte, counted from the start of the file, where it breaks.")]
pub struct Args {
    /// Prints one JSON object (messageClass, subject, size, recipients, attachments, ...) instead of text.
    #[arg(long)]
    pub json: bool,
    /// The item stream to read; `-` for standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Runs the command.
pub async fn run(args: Args) -> ExitCode {
    let stdin = args.file == Path::new("-");
    let name = if stdin {
        "standard input".to_owned()
    } else {
        args.file.display().to_string()
    };
    let read = if stdin {
        let mut data = Vec::new();
        std::io::stdin().read_to_end(&mut data).map(|_| data)
    } else {
        std::fs::read(&args.file)
    };
    let data = match read {
        Ok(data) => data,
        Err(error) => {
            eprintln!("error: cannot read {name}: {error}");
            return ExitCode::FAILURE;
        }
    };
    match summarize(&data) {
        Ok(summary) if args.json => {
            let json = ItemJson::new(&summary, &name);
            println!(
                "{}",
                serde_json::to_string_pretty(&json).expect("the summary serializes")
            );
            ExitCode::SUCCESS
        }
        Ok(summary) => {
            print!("{}", text(&summary, &name));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {name} is not a well-formed item stream: {error}");
            if looks_like_base64(&data) {
                eprintln!(
                    "hint: it looks like base64 text (the Data of exportItems); decode it first, \
                     for example with `base64 -d`"
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// The summary as text: one field a line, recipients and attachments indented under their counts.
fn text(summary: &ItemSummary, name: &str) -> String {
    let mut out = String::new();
    let frames = summary.stream.frames;
    let buffers = summary.transfer_buffers;
    line(&mut out, 0, "file", &printable(name));
    line(
        &mut out,
        0,
        "size",
        &format!(
            "{} bytes in {frames} frame{}, {} bytes of properties in {buffers} TransferBuffer{}",
            summary.size,
            plural(frames),
            summary.stream.transfer_bytes,
            plural(buffers),
        ),
    );
    message_text(&mut out, 0, &summary.message);
    line(
        &mut out,
        0,
        "in all",
        &format!(
            "{} properties with those of recipients, attachments and embedded items",
            summary.total_properties
        ),
    );
    out
}

fn message_text(out: &mut String, indent: usize, message: &MessageSummary) {
    let or_none = |text: &Option<String>| text.as_deref().map_or("(none)".into(), printable);
    line(
        out,
        indent,
        "message class",
        &or_none(&message.message_class),
    );
    line(out, indent, "subject", &or_none(&message.subject));
    let sender = message.sender.as_ref().map_or("(none)".into(), party);
    line(out, indent, "sender", &sender);
    line(out, indent, "sent", &time_text(message.sent));
    line(out, indent, "received", &time_text(message.received));
    if let Some(size) = message.message_size {
        line(
            out,
            indent,
            "message size",
            &format!("{size} bytes (PidTagMessageSize)"),
        );
    }
    if let Some(code_page) = message.code_page {
        line(out, indent, "code page", &code_page.to_string());
    }
    line(
        out,
        indent,
        "recipients",
        &message.recipients.len().to_string(),
    );
    for recipient in &message.recipients {
        let kind = recipient
            .kind
            .map_or("?".to_owned(), |kind| kind.to_string());
        let who = party(&Sender {
            name: recipient.name.clone(),
            address: recipient.address.clone(),
        });
        let _ = writeln!(out, "{:indent$}  {kind:<4} {who}", "");
    }
    line(
        out,
        indent,
        "attachments",
        &message.attachments.len().to_string(),
    );
    for attachment in &message.attachments {
        let name = attachment
            .name
            .as_deref()
            .map_or("(no name)".into(), printable);
        let size = attachment
            .size()
            .map_or("size unknown".to_owned(), |size| format!("{size} bytes"));
        match &attachment.embedded {
            None => {
                let _ = writeln!(out, "{:indent$}  {name}  {size}", "");
            }
            Some(item) => {
                let _ = writeln!(out, "{:indent$}  {name}  (embedded item)", "");
                message_text(out, indent + 4, item);
            }
        }
    }
    line(
        out,
        indent,
        "properties",
        &format!(
            "{} ({} named)",
            message.properties,
            message.named_properties.len()
        ),
    );
    for named in &message.named_properties {
        let set = named
            .guid
            .property_set_name()
            .map_or_else(|| named.guid.to_string(), str::to_owned);
        let name = match &named.name {
            PropertyName::Id(id) => format!("0x{id:04X}"),
            PropertyName::Name(name) => printable(name),
        };
        let _ = writeln!(
            out,
            "{:indent$}  {set} {name} (type 0x{:04X})",
            "", named.property_type
        );
    }
}

fn line(out: &mut String, indent: usize, label: &str, value: &str) {
    let _ = writeln!(out, "{:indent$}{label:<15} {value}", "");
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn party(sender: &Sender) -> String {
    match (&sender.name, &sender.address) {
        (Some(name), Some(address)) => format!("{} <{}>", printable(name), printable(address)),
        (Some(name), None) => printable(name),
        (None, Some(address)) => format!("<{}>", printable(address)),
        (None, None) => "(none)".to_owned(),
    }
}

fn time_text(time: Option<DateTime<Utc>>) -> String {
    time.map_or("(none)".to_owned(), rfc3339)
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `text` with control characters escaped, so that a hostile subject cannot drive the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Whether a stream that failed to decode is base64 text instead: only base64 characters and line breaks.
fn looks_like_base64(data: &[u8]) -> bool {
    data.len() >= 16
        && data
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=\r\n".contains(b))
}

/// The JSON form of `inspect --json`: the item's fields, then the stream's.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemJson<'a> {
    file: &'a str,
    /// The stream's bytes (the file's size).
    size: usize,
    frames: usize,
    transfer_buffers: usize,
    property_bytes: usize,
    #[serde(flatten)]
    message: MessageJson<'a>,
    total_properties: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageJson<'a> {
    message_class: Option<&'a str>,
    subject: Option<&'a str>,
    sender: Option<SenderJson<'a>>,
    sent: Option<String>,
    received: Option<String>,
    message_size: Option<u64>,
    code_page: Option<u32>,
    recipients: Vec<RecipientJson<'a>>,
    attachments: Vec<AttachmentJson<'a>>,
    properties: usize,
    named_properties: Vec<NamedJson<'a>>,
}

#[derive(Serialize)]
struct SenderJson<'a> {
    name: Option<&'a str>,
    address: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecipientJson<'a> {
    /// `to`, `cc`, `bcc` or `other`; `recipientType` holds the number.
    #[serde(rename = "type")]
    kind: Option<&'static str>,
    recipient_type: Option<u32>,
    name: Option<&'a str>,
    address: Option<&'a str>,
    properties: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AttachmentJson<'a> {
    name: Option<&'a str>,
    /// The file's bytes when the stream carries them, else PidTagAttachSize.
    size: Option<u64>,
    data_bytes: Option<u64>,
    attach_size: Option<u32>,
    number: Option<u32>,
    method: Option<u32>,
    mime_type: Option<&'a str>,
    properties: usize,
    embedded: Option<Box<MessageJson<'a>>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NamedJson<'a> {
    guid: String,
    property_set: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u32>,
    #[serde(rename = "type")]
    property_type: u16,
}

impl<'a> ItemJson<'a> {
    fn new(summary: &'a ItemSummary, file: &'a str) -> Self {
        ItemJson {
            file,
            size: summary.size,
            frames: summary.stream.frames,
            transfer_buffers: summary.transfer_buffers,
            property_bytes: summary.stream.transfer_bytes,
            message: MessageJson::new(&summary.message),
            total_properties: summary.total_properties,
        }
    }
}

impl<'a> MessageJson<'a> {
    fn new(message: &'a MessageSummary) -> Self {
        MessageJson {
            message_class: message.message_class.as_deref(),
            subject: message.subject.as_deref(),
            sender: message.sender.as_ref().map(|sender| SenderJson {
                name: sender.name.as_deref(),
                address: sender.address.as_deref(),
            }),
            sent: message.sent.map(rfc3339),
            received: message.received.map(rfc3339),
            message_size: message.message_size,
            code_page: message.code_page,
            recipients: message.recipients.iter().map(RecipientJson::new).collect(),
            attachments: message
                .attachments
                .iter()
                .map(AttachmentJson::new)
                .collect(),
            properties: message.properties,
            named_properties: message
                .named_properties
                .iter()
                .map(NamedJson::new)
                .collect(),
        }
    }
}

impl<'a> RecipientJson<'a> {
    fn new(recipient: &'a Recipient) -> Self {
        RecipientJson {
            kind: recipient.kind.map(|kind| match kind {
                RecipientKind::To => "to",
                RecipientKind::Cc => "cc",
                RecipientKind::Bcc => "bcc",
                RecipientKind::Other(_) => "other",
            }),
            recipient_type: recipient.kind.map(RecipientKind::raw),
            name: recipient.name.as_deref(),
            address: recipient.address.as_deref(),
            properties: recipient.properties,
        }
    }
}

impl<'a> AttachmentJson<'a> {
    fn new(attachment: &'a Attachment) -> Self {
        AttachmentJson {
            name: attachment.name.as_deref(),
            size: attachment.size(),
            data_bytes: attachment.data_bytes,
            attach_size: attachment.attach_size,
            number: attachment.number,
            method: attachment.method,
            mime_type: attachment.mime_type.as_deref(),
            properties: attachment.properties,
            embedded: attachment
                .embedded
                .as_deref()
                .map(|item| Box::new(MessageJson::new(item))),
        }
    }
}

impl<'a> NamedJson<'a> {
    fn new(named: &'a NamedProperty) -> Self {
        let (name, id) = match &named.name {
            PropertyName::Name(name) => (Some(name.as_str()), None),
            PropertyName::Id(id) => (None, Some(*id)),
        };
        NamedJson {
            guid: named.guid.to_string(),
            property_set: named.guid.property_set_name(),
            name,
            id,
            property_type: named.property_type,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert_eq!(printable("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
        assert_eq!(printable("Grüße"), "Grüße");
    }

    #[test]
    fn base64_text_is_recognised() {
        assert!(looks_like_base64(b"AQAAAAgAAAAAAAAAAQAAAA==\n"));
        assert!(!looks_like_base64(&[
            1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0
        ]));
    }
}
