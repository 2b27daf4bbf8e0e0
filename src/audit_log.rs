//! Formats audit events as JSON lines, one flat object per event, for the audit stream's writer.
//!
//! Why not tracing-subscriber's `fmt::layer().json().flatten_event(true)`: the benchmark profile showed
//! that path at about 6% of the gateway's CPU per 4 KiB item, in machinery an audit line does not need
//! (span lookups in the registry, `fmt::Write` adaptors over serde). This layer writes the same keys with the same value types straight into one buffer per event
//! and hands it to the writer in a single `write_all`, which is what `batch_writer` relies on to keep each
//! line whole.

use std::fmt;
use std::io::Write;

use chrono::{SecondsFormat, Utc};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};

/// A line's starting capacity: an import's audit line is about 400 bytes, so it rarely grows.
const LINE_CAPACITY: usize = 512;

/// Writes each event as one JSON object followed by `\n`: `timestamp` (RFC 3339, UTC, microseconds),
/// `level`, `target`, then the event's fields in the order recorded, which puts `message` first.
///
/// Values keep their types: strings, integers, floats and booleans as such, `%display` and `?debug`
/// values as strings of their formatted text. A field recorded as `None` is absent. Spans are not
/// looked at: audit events carry everything they need in their own fields.
pub struct AuditLayer<W> {
    writer: W,
}

impl<W> AuditLayer<W> {
    pub fn new(writer: W) -> Self {
        Self { writer }
    }
}

impl<S, W> Layer<S> for AuditLayer<W>
where
    S: Subscriber,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        line.extend_from_slice(b"{\"timestamp\":\"");
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        line.extend_from_slice(now.as_bytes());
        line.extend_from_slice(b"\",\"level\":\"");
        line.extend_from_slice(metadata.level().as_str().as_bytes());
        line.extend_from_slice(b"\",\"target\":");
        write_json_str(&mut line, metadata.target());
        event.record(&mut JsonFields { line: &mut line });
        line.extend_from_slice(b"}\n");
        // One `write_all` per event: a `batch_writer` hands over each write as one line.
        let mut writer = self.writer.make_writer_for(metadata);
        if let Err(error) = writer.write_all(&line) {
            // Where the fmt layer reported its write errors too; the debug log may be the broken stream,
            // and a lost audit line must not pass silently.
            eprintln!("error: cannot write an audit event: {error}");
        }
    }
}

/// Appends each field as `,"name":value` to a line whose object is already open.
struct JsonFields<'a> {
    line: &'a mut Vec<u8>,
}

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(b',');
        write_json_str(self.line, field.name());
        self.line.push(b':');
    }

    fn number(&mut self, field: &Field, value: impl serde::Serialize) {
        self.key(field);
        // serde_json writes a non-finite float as `null`, as the fmt layer did.
        serde_json::to_writer(&mut *self.line, &value).expect("a Vec<u8> accepts every write");
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        write_json_str(self.line, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.number(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// `%display`, `?debug` and the message. The text is formatted straight into the line and escaped
    /// only if it has to be: ids, addresses and digests never need it, so they are neither copied nor
    /// given a buffer of their own.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        let quote = self.line.len();
        self.line.push(b'"');
        // A `Debug` or `Display` that fails leaves the text it wrote before failing.
        let _ = write!(self.line, "{value:?}");
        let text = &self.line[quote + 1..];
        if text.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
            let raw = self.line.split_off(quote + 1);
            self.line.truncate(quote);
            // Formatting writes whole `str`s, so this never actually replaces anything.
            write_json_str(self.line, &String::from_utf8_lossy(&raw));
        } else {
            self.line.push(b'"');
        }
    }
}

/// Appends `value` as a JSON string, quoted and escaped.
fn write_json_str(line: &mut Vec<u8>, value: &str) {
    serde_json::to_writer(line, value).expect("a Vec<u8> accepts every write");
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use chrono::DateTime;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Keeps every `write` call apart, so a test sees whether an event came in one write.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Writes {
        fn lines(&self) -> Vec<String> {
            let writes = self.0.lock().unwrap();
            writes
                .iter()
                .map(|write| String::from_utf8(write.clone()).unwrap())
                .collect()
        }
    }

    impl io::Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Writes {
        type Writer = Writes;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// Runs `emit` with only an `AuditLayer` installed and returns what it wrote, one entry per write.
    fn capture(emit: impl FnOnce()) -> Vec<String> {
        let writes = Writes::default();
        let subscriber = tracing_subscriber::registry().with(AuditLayer::new(writes.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        writes.lines()
    }

    const AWKWARD: &str = "a \"quoted\" C:\\path,\nsecond line, Zürich 📬";

    fn emit_import() {
        let digest = Some("9f86d081");
        tracing::info!(
            target: "audit",
            client = %"appliance",
            mailbox = %AWKWARD,
            mailbox_id = "MBX:1234",
            size = 4096_usize,
            offset = -7_i64,
            ratio = 0.5,
            replayed = false,
            sha256 = digest.map(tracing::field::display),
            code = None::<&str>,
            item_id = Some("AAMkAD"),
            status = 201_u16,
            headers = ?["x-ms-a"],
            "import"
        );
    }

    #[test]
    fn an_event_is_one_flat_json_object_on_a_line_of_its_own() {
        let writes = capture(emit_import);

        assert_eq!(writes.len(), 1, "one write per event: {writes:?}");
        let line = &writes[0];
        assert!(line.ends_with("}\n") && !line.ends_with("\n\n"), "{line:?}");
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let timestamp = event["timestamp"].as_str().unwrap();
        let expected = serde_json::json!({
            "timestamp": timestamp,
            "level": "INFO",
            "target": "audit",
            "message": "import",
            "client": "appliance",
            "mailbox": AWKWARD,
            "mailbox_id": "MBX:1234",
            "size": 4096,
            "offset": -7,
            "ratio": 0.5,
            "replayed": false,
            "sha256": "9f86d081",
            "item_id": "AAMkAD",
            "status": 201,
            "headers": "[\"x-ms-a\"]",
        });
        assert_eq!(event, expected);
        assert!(event.get("code").is_none(), "a None field is absent");
        assert!(
            DateTime::parse_from_rfc3339(timestamp).is_ok(),
            "{timestamp}"
        );
    }

    #[test]
    fn keys_come_in_a_fixed_order_with_text_escaped() {
        let writes = capture(emit_import);

        let line = &writes[0];
        let after_timestamp = line.find("\",\"level\"").unwrap();
        assert_eq!(
            &line[after_timestamp..],
            "\",\"level\":\"INFO\",\"target\":\"audit\",\"message\":\"import\",\
             \"client\":\"appliance\",\
             \"mailbox\":\"a \\\"quoted\\\" C:\\\\path,\\nsecond line, Zürich 📬\",\
             \"mailbox_id\":\"MBX:1234\",\"size\":4096,\"offset\":-7,\"ratio\":0.5,\
             \"replayed\":false,\"sha256\":\"9f86d081\",\"item_id\":\"AAMkAD\",\"status\":201,\
             \"headers\":\"[\\\"x-ms-a\\\"]\"}\n"
        );
    }

    #[test]
    fn output_matches_the_fmt_json_layer_it_replaces() {
        let ours = capture(emit_import);
        let writes = Writes::default();
        let fmt_layer = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writes.clone());
        let subscriber = tracing_subscriber::registry().with(fmt_layer);
        tracing::subscriber::with_default(subscriber, emit_import);
        let theirs = writes.lines();

        let parse = |line: &str| {
            let mut event: serde_json::Value = serde_json::from_str(line).unwrap();
            let timestamp = event.as_object_mut().unwrap().remove("timestamp").unwrap();
            (event, timestamp.as_str().unwrap().len())
        };
        assert_eq!(parse(&ours[0]), parse(&theirs[0]));
    }

    #[test]
    fn two_events_are_two_lines() {
        let writes = capture(|| {
            tracing::info!(target: "audit", status = 201, "import");
            tracing::warn!(target: "audit", status = 403, code = "forbidden", "denied");
        });

        assert_eq!(writes.len(), 2, "{writes:?}");
        let events: Vec<serde_json::Value> = writes
            .iter()
            .map(|line| {
                assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
                serde_json::from_str(line).unwrap()
            })
            .collect();
        assert_eq!(events[0]["message"], "import");
        assert_eq!(events[1]["message"], "denied");
        assert_eq!(events[1]["level"], "WARN");
        assert_eq!(events[1]["code"], "forbidden");
    }
}
