//! `mailbox-gateway sample`: writes a well-formed item stream with a given subject and size, for trying
//! the gateway, tests and benchmarks.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{SubsecRound, Utc};

use crate::fts::{ItemBuilder, RecipientKind};

/// The largest --size and attachment size: far above Exchange Online's 150 MB per item, and below the
/// 4 GiB a single property value can hold.
const MAX_SIZE: usize = 2 * 1024 * 1024 * 1024;

/// The most recipients a sample item gets.
const MAX_RECIPIENTS: u32 = 100_000;

/// The arguments of `mailbox-gateway sample`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The item is an IPM.Note from \"Sample Sender\" <sender@example.com>, sent and received now, with the \
given subject, recipients (\"Recipient N\" <recipientN@example.com>, To) and attachments (generated \
bytes). It is a raw item stream (docs/upstream.md section 7), not base64.

--size is exact: the file is exactly SIZE bytes. The item is padded with a binary property \
(0x67000102), and the number of TransferBuffer frames (at most 32 KiB each) is chosen so that the \
count comes out. Without --size the item is as small as its contents allow. Every SIZE from 16 bytes \
above that up can be made; a smaller one that cannot is refused with the sizes that work.

Examples:
  mailbox-gateway sample --subject \"Export memory check\" --size 40MiB --out big.fts
  mailbox-gateway sample --subject Hello --recipients 3 --attachment report.pdf:120KiB > hello.fts")]
pub struct Args {
    /// The item's subject.
    #[arg(long)]
    pub subject: String,
    /// The size of the whole file, exactly: bytes (12345) or KiB, MiB, GiB (4KiB, 40MiB).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<usize>,
    /// Where to write the item; standard output when absent (refused when that is a terminal).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// How many recipients to add.
    #[arg(long, default_value_t = 0, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_RECIPIENTS)))]
    pub recipients: u32,
    /// Adds an attached file of SIZE bytes (bytes, KiB, MiB, GiB) named NAME; repeat for more.
    #[arg(long = "attachment", value_name = "NAME:SIZE", value_parser = parse_attachment)]
    pub attachments: Vec<AttachmentArg>,
}

/// One `--attachment NAME:SIZE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentArg {
    /// The file name.
    pub name: String,
    /// Its size in bytes.
    pub size: usize,
}

/// Runs the command.
pub async fn run(args: Args) -> ExitCode {
    match write_sample(&args) {
        Ok(message) => {
            eprintln!("{message}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the item the arguments describe; says what it wrote, or why it could not.
fn write_sample(args: &Args) -> Result<String, String> {
    let item = builder(args)?;
    let len = item.stream_len();
    match &args.out {
        Some(path) => {
            let written = File::create(path).and_then(|file| {
                let mut out = BufWriter::new(file);
                item.write_to(&mut out)?;
                out.flush()
            });
            if let Err(error) = written {
                // Leave no half-written item behind to be mistaken for a whole one.
                let _ = std::fs::remove_file(path);
                return Err(format!("cannot write {}: {error}", path.display()));
            }
            Ok(format!("wrote {len} bytes to {}", path.display()))
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err("refusing to write a binary item stream to a terminal: \
                            use --out FILE or redirect standard output"
                    .to_owned());
            }
            let mut out = BufWriter::new(stdout.lock());
            item.write_to(&mut out)
                .and_then(|()| out.flush())
                .map_err(|error| format!("cannot write to standard output: {error}"))?;
            Ok(format!("wrote {len} bytes to standard output"))
        }
    }
}

/// The item the arguments describe, padded to `--size` when given.
fn builder(args: &Args) -> Result<ItemBuilder, String> {
    // Whole seconds: what a person reads back from `inspect`, and what mail clients show.
    let now = Utc::now().trunc_subsecs(0);
    let mut item = ItemBuilder::new(&args.subject)
        .sender("Sample Sender", "sender@example.com")
        .sent(now)
        .received(now);
    for n in 1..=args.recipients {
        item = item.recipient(
            RecipientKind::To,
            &format!("Recipient {n}"),
            &format!("recipient{n}@example.com"),
        );
    }
    for attachment in &args.attachments {
        item = item.attachment(&attachment.name, attachment.size);
    }
    let Some(size) = args.size else {
        return Ok(item);
    };
    let unpadded = item.stream_len();
    let item = item.total_size(size);
    if item.stream_len() != size {
        return Err(format!(
            "cannot make an item of exactly {size} bytes: with this subject, {} recipient(s) and \
             {} attachment(s) it takes {unpadded} bytes unpadded, so --size must be {unpadded} or \
             at least {}",
            args.recipients,
            args.attachments.len(),
            unpadded + 16
        ));
    }
    Ok(item)
}

/// A size: a byte count (`12345`, `12345B`) or a count of KiB, MiB or GiB (`4KiB`, `40MiB`), at most 2 GiB.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: give bytes (12345) or 4KiB, 40MiB, 1GiB"))?;
    let unit_bytes: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "k" | "kb" | "m" | "mb" | "g" | "gb" => {
            return Err(format!(
                "{text:?}: say KiB, MiB or GiB (units of 1024), or give the bytes"
            ))
        }
        other => {
            return Err(format!(
                "{text:?} has an unknown unit {other:?} (KiB, MiB, GiB)"
            ))
        }
    };
    match number.checked_mul(unit_bytes) {
        Some(size) if size <= MAX_SIZE => Ok(size),
        _ => Err(format!("{text:?} is more than the 2 GiB a sample can be")),
    }
}

/// `NAME:SIZE`, split at the last colon so that names may hold colons.
fn parse_attachment(text: &str) -> Result<AttachmentArg, String> {
    let (name, size) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not NAME:SIZE (report.pdf:120KiB)"))?;
    if name.is_empty() {
        return Err(format!("{text:?} has no name before the colon"));
    }
    Ok(AttachmentArg {
        name: name.to_owned(),
        size: parse_size(size)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bytes_or_binary_units() {
        assert_eq!(parse_size("12345"), Ok(12345));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("40MiB"), Ok(40 * 1024 * 1024));
        assert_eq!(parse_size("1 gib"), Ok(1 << 30));
        assert_eq!(parse_size("7B"), Ok(7));
    }

    #[test]
    fn ambiguous_unknown_and_huge_sizes_are_refused() {
        assert!(parse_size("40MB").unwrap_err().contains("MiB"));
        assert!(parse_size("40M").is_err());
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("3GiB").unwrap_err().contains("2 GiB"));
        assert!(parse_size("99999999999999999999999").is_err());
    }

    #[test]
    fn attachments_split_at_the_last_colon() {
        assert_eq!(
            parse_attachment("C:report.pdf:2KiB"),
            Ok(AttachmentArg {
                name: "C:report.pdf".to_owned(),
                size: 2048
            })
        );
        assert!(parse_attachment("report.pdf").is_err());
        assert!(parse_attachment(":12").is_err());
    }
}
