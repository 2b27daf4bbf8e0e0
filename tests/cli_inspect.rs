//! `mailbox-gateway sample` and `mailbox-gateway inspect`, run as the real binary: what one writes the
//! other reads back, the shipped sample, and broken streams named by the byte where they break.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use mailbox_gateway::fts::{ItemBuilder, RecipientKind};
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_mailbox-gateway");

/// Runs the binary with `args`, with an empty environment and no standard input.
fn gateway(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `inspect --json FILE`, which must succeed, as JSON.
fn inspect_json(file: &Path) -> serde_json::Value {
    let output = gateway(&["inspect", "--json", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `inspect FILE`, which must succeed, as text.
fn inspect_text(file: &Path) -> String {
    let output = gateway(&["inspect", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

#[test]
fn a_sample_inspects_as_json_with_its_subject_size_recipients_and_attachments() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("item.fts");
    let written = gateway(&[
        "sample",
        "--subject",
        "Quarterly report",
        "--size",
        "64KiB",
        "--recipients",
        "3",
        "--attachment",
        "report.pdf:12345",
        "--attachment",
        "notes:v2.txt:1KiB",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(written.status.success(), "{}", stderr(&written));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 64 * 1024);

    let item = inspect_json(&file);
    assert_eq!(item["messageClass"], "IPM.Note");
    assert_eq!(item["subject"], "Quarterly report");
    assert_eq!(item["size"], 64 * 1024);
    assert_eq!(item["sender"]["address"], "sender@example.com");
    assert!(item["sent"].as_str().unwrap().ends_with('Z'), "{item}");
    assert!(item["received"].is_string(), "{item}");
    let recipients = item["recipients"].as_array().unwrap();
    assert_eq!(recipients.len(), 3);
    assert_eq!(recipients[2]["type"], "to");
    assert_eq!(recipients[2]["name"], "Recipient 3");
    assert_eq!(recipients[2]["address"], "recipient3@example.com");
    let attachments = item["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 2);
    assert_eq!(attachments[0]["name"], "report.pdf");
    assert_eq!(attachments[0]["size"], 12345);
    assert_eq!(attachments[1]["name"], "notes:v2.txt");
    assert_eq!(attachments[1]["size"], 1024);
    assert!(item["properties"].as_u64().unwrap() >= 8, "{item}");
    assert!(item["totalProperties"].as_u64().unwrap() > item["properties"].as_u64().unwrap());
}

#[test]
fn a_sample_inspects_as_text_with_the_same_fields() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("item.fts");
    let written = gateway(&[
        "sample",
        "--subject",
        "Grüße aus Köln",
        "--size",
        "5000",
        "--recipients",
        "2",
        "--attachment",
        "photo.jpg:2KiB",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(written.status.success(), "{}", stderr(&written));
    assert!(
        stderr(&written).contains("wrote 5000 bytes"),
        "{}",
        stderr(&written)
    );

    let text = inspect_text(&file);
    for expected in [
        "message class   IPM.Note",
        "subject         Grüße aus Köln",
        "sender          Sample Sender <sender@example.com>",
        "size            5000 bytes",
        "recipients      2",
        "To   Recipient 2 <recipient2@example.com>",
        "attachments     1",
        "photo.jpg  2048 bytes",
        "properties      ",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}

#[test]
fn the_bench_scripts_form_writes_exactly_forty_mebibytes() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("big.fts");
    let written = gateway(&[
        "sample",
        "--subject",
        "Export memory check",
        "--size",
        "40MiB",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(written.status.success(), "{}", stderr(&written));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 40 * 1024 * 1024);
    let item = inspect_json(&file);
    assert_eq!(item["subject"], "Export memory check");
    assert_eq!(item["size"], 40 * 1024 * 1024);
}

#[test]
fn a_sample_goes_to_standard_output_when_it_is_not_a_terminal() {
    let output = gateway(&["sample", "--subject", "Piped", "--size", "4KiB"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(output.stdout.len(), 4096);
    let summary = mailbox_gateway::fts::summarize(&output.stdout).unwrap();
    assert_eq!(summary.message.subject.as_deref(), Some("Piped"));
}

#[test]
fn a_size_the_item_cannot_have_is_refused_with_the_sizes_that_work() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("small.fts");
    let output = gateway(&[
        "sample",
        "--subject",
        "Too small",
        "--size",
        "50",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("--size must be"),
        "{}",
        stderr(&output)
    );
    assert!(!file.exists(), "nothing is written");
}

#[test]
fn the_shipped_sample_inspects() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/welcome.fts");
    let item = inspect_json(&sample);
    assert_eq!(item["messageClass"], "IPM.Note");
    assert_eq!(item["subject"], "Welcome to mailbox-gateway");
    assert_eq!(item["size"], std::fs::metadata(&sample).unwrap().len());
    assert_eq!(item["recipients"], serde_json::json!([]));
    assert_eq!(item["attachments"], serde_json::json!([]));
    let text = inspect_text(&sample);
    assert!(
        text.contains("subject         Welcome to mailbox-gateway"),
        "{text}"
    );
}

#[test]
fn a_truncated_file_exits_non_zero_naming_the_byte_offset() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("cut.fts");
    let item = ItemBuilder::new("Cut short").padding(1000).build();
    // Cut inside the one TransferBuffer, whose header starts after the 62 bytes of set-up frames.
    std::fs::write(&file, &item[..item.len() - 10]).unwrap();
    for json in [false, true] {
        let mut args = vec!["inspect", file.to_str().unwrap()];
        if json {
            args.insert(1, "--json");
        }
        let output = gateway(&args);
        assert_eq!(output.status.code(), Some(1));
        assert!(output.stdout.is_empty());
        let message = stderr(&output);
        assert!(message.contains("at byte 62:"), "{message}");
        assert!(message.contains("payload bytes but only"), "{message}");
    }
}

#[test]
fn a_broken_property_stream_is_named_by_the_byte_in_the_file() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("long.fts");
    let mut item = ItemBuilder::new("x").build();
    // The frames are fine; the subject's length (after the set-up frames, a frame header, Importance,
    // the class and the subject's tag) claims more bytes than there are.
    let class_len = 8 + 18;
    let subject_len_at = 62 + 8 + 8 + class_len + 4;
    item[subject_len_at..subject_len_at + 4].copy_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
    std::fs::write(&file, &item).unwrap();
    let output = gateway(&["inspect", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains(&format!("at byte {subject_len_at}:"))
            && message.contains("declares 2147483632 bytes"),
        "{message}"
    );
}

#[test]
fn values_split_across_frames_decode_as_one() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("split.fts");
    // Frames of five bytes cut every tag, length and string in two or more.
    let item = ItemBuilder::new("Split across many TransferBuffers")
        .sender("Ann Example", "ann@example.com")
        .recipient(RecipientKind::Cc, "Bob", "bob@example.com")
        .attachment("a.bin", 33)
        .embedded_item(
            "Forwarded",
            ItemBuilder::new("Inner").message_class("IPM.Note.Inner"),
        )
        .max_transfer_buffer(5)
        .build();
    std::fs::write(&file, &item).unwrap();
    let summary = inspect_json(&file);
    assert!(
        summary["transferBuffers"].as_u64().unwrap() > 50,
        "{summary}"
    );
    assert_eq!(summary["subject"], "Split across many TransferBuffers");
    assert_eq!(summary["sender"]["name"], "Ann Example");
    assert_eq!(summary["recipients"][0]["type"], "cc");
    assert_eq!(summary["recipients"][0]["address"], "bob@example.com");
    assert_eq!(summary["attachments"][0]["size"], 33);
    let embedded = &summary["attachments"][1]["embedded"];
    assert_eq!(embedded["messageClass"], "IPM.Note.Inner");
    assert_eq!(embedded["subject"], "Inner");
}

#[test]
fn base64_text_is_refused_with_a_hint_to_decode_it() {
    use base64::Engine as _;
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("item.b64");
    let item = ItemBuilder::new("x").build();
    std::fs::write(
        &file,
        base64::engine::general_purpose::STANDARD.encode(item),
    )
    .unwrap();
    let output = gateway(&["inspect", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("base64 -d"), "{}", stderr(&output));
}

#[test]
fn a_missing_file_exits_one_and_usage_errors_exit_two() {
    let output = gateway(&["inspect", "/nonexistent/item.fts"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot read"),
        "{}",
        stderr(&output)
    );
    assert_eq!(gateway(&["inspect"]).status.code(), Some(2));
    assert_eq!(
        gateway(&["sample", "--size", "4KiB"]).status.code(),
        Some(2)
    );
    assert_eq!(
        gateway(&["sample", "--subject", "x", "--size", "4MB"])
            .status
            .code(),
        Some(2)
    );
}
