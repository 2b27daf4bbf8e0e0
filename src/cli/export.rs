//! `mailbox-gateway export`: a folder through the gateway's folder export, into a tar file or a
//! directory of `.fts` files and the index, each item's SHA-256 checked against the index.
//!
//! The archive is read as it streams: each entry's bytes are hashed as they pass and written straight to
//! the tar file or the entry's own file, so a folder of any size needs no more memory than one chunk.
//! The tar file is written under a `.partial` name and renamed only once every item has checked out.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use futures_util::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::progress::Progress;
use super::{Failure, Target};

/// The arguments of `mailbox-gateway export`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
--out FILE.tar writes the archive as the gateway sent it; any other --out is a directory (created if \
needed) that receives one .fts file per item and index.json. Either way every item's SHA-256 is checked \
against the index, and the command exits 1 if the export failed midway or an item does not match.")]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// A tar file (ending in .tar) or a directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// The parts of the archive's index the command checks.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    items: Vec<IndexEntry>,
    #[serde(default)]
    missing: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    file: String,
    item_id: String,
    size: u64,
    sha256: String,
}

/// Runs the command.
pub async fn run(args: Args) -> ExitCode {
    match export(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.exit(),
    }
}

async fn export(args: Args) -> Result<(), Failure> {
    let target = args.target.open()?;
    let mut sink = Sink::open(&args.out)?;
    let url = format!("{}/export", target.folder_url);
    let response = target
        .client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("the gateway could not be reached: {e}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        return Err(Failure::Run(format!(
            "the gateway refused the export: {}",
            super::problem_text(status, &body)
        )));
    }
    let progress = Progress::new("export", &["exported"], None);
    let mut reader = TarReader::default();
    let mut body = response.bytes_stream();
    let mut cut = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => reader.feed(&chunk, &mut sink, &progress)?,
            Err(error) => {
                cut = Some(error);
                break;
            }
        }
    }
    progress.finish();
    if let Some(error) = &reader.error {
        return Err(Failure::Run(format!(
            "the export failed midway after {} items: {}",
            reader.hashes.len(),
            error
        )));
    }
    if let Some(error) = cut {
        return Err(Failure::Run(format!("the export was cut off: {error}")));
    }
    let index = reader
        .index
        .as_ref()
        .ok_or_else(|| Failure::Run("the archive ended without its index".into()))?;
    let index: Index = serde_json::from_slice(index)
        .map_err(|e| format!("the archive's index cannot be read: {e}"))?;
    verify(&index, &reader.hashes)?;
    sink.finish(reader.index.as_deref().unwrap_or_default())?;
    eprintln!(
        "exported {} items into {}{}",
        index.items.len(),
        args.out.display(),
        if index.missing.is_empty() {
            String::new()
        } else {
            format!(
                " ({} listed items were gone before they could be exported)",
                index.missing.len()
            )
        }
    );
    Ok(())
}

/// Checks every item of the index against what arrived.
fn verify(index: &Index, hashes: &HashMap<String, (u64, String)>) -> Result<(), Failure> {
    for entry in &index.items {
        match hashes.get(&entry.file) {
            Some((size, sha256)) if *size == entry.size && *sha256 == entry.sha256 => {}
            Some(_) => {
                return Err(Failure::Run(format!(
                    "item {} ({}) does not match its SHA-256 in the index",
                    entry.item_id, entry.file
                )))
            }
            None => {
                return Err(Failure::Run(format!(
                    "item {} ({}) is in the index but not in the archive",
                    entry.item_id, entry.file
                )))
            }
        }
    }
    if hashes.len() != index.items.len() {
        return Err(Failure::Run(format!(
            "the archive holds {} items but its index lists {}",
            hashes.len(),
            index.items.len()
        )));
    }
    Ok(())
}

/// Where the archive goes: a tar file (as received) or a directory (one file per entry).
enum Sink {
    Tar {
        file: std::fs::File,
        partial: PathBuf,
        path: PathBuf,
    },
    Directory {
        dir: PathBuf,
        current: Option<std::fs::File>,
    },
}

impl Sink {
    fn open(out: &Path) -> Result<Sink, Failure> {
        if out
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tar"))
        {
            let partial = out.with_extension("tar.partial");
            let file = std::fs::File::create(&partial)
                .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", partial.display())))?;
            Ok(Sink::Tar {
                file,
                partial,
                path: out.to_owned(),
            })
        } else {
            std::fs::create_dir_all(out)
                .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", out.display())))?;
            Ok(Sink::Directory {
                dir: out.to_owned(),
                current: None,
            })
        }
    }

    /// Bytes of the archive as received (for a tar file).
    fn raw(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        if let Sink::Tar { file, partial, .. } = self {
            file.write_all(bytes)
                .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
        }
        Ok(())
    }

    /// An entry begins (for a directory).
    fn begin(&mut self, name: &str) -> Result<(), Failure> {
        if let Sink::Directory { dir, current } = self {
            // Only the names the gateway writes (32 hex digits and .fts): nothing may land outside the
            // directory or overwrite a file of another meaning.
            let plain = name.strip_suffix(".fts").is_some_and(|stem| {
                stem.len() == 32 && stem.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            });
            if !plain {
                return Err(Failure::Run(format!(
                    "the archive holds an unexpected entry {name:?}"
                )));
            }
            let path = dir.join(name);
            *current = Some(
                std::fs::File::create(&path)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
            );
        }
        Ok(())
    }

    /// An entry's bytes (for a directory).
    fn entry_bytes(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        if let Sink::Directory {
            current: Some(file),
            dir,
        } = self
        {
            file.write_all(bytes)
                .map_err(|e| format!("cannot write into {}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// Completes the output once everything checked out; a directory gets the index as its last file.
    fn finish(self, index: &[u8]) -> Result<(), Failure> {
        match self {
            Sink::Tar {
                file,
                partial,
                path,
            } => {
                file.sync_all()
                    .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
                std::fs::rename(&partial, &path)
                    .map_err(|e| format!("cannot rename {}: {e}", partial.display()))?;
            }
            Sink::Directory { dir, .. } => {
                let path = dir.join(crate::api::INDEX_ENTRY);
                std::fs::write(&path, index)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
        }
        Ok(())
    }
}

/// Reads a tar stream as it arrives: headers, entries' bytes (hashed and handed to the sink), padding.
#[derive(Default)]
struct TarReader {
    /// A header being collected.
    header: Vec<u8>,
    /// The entry being read: its name, bytes left, its hash so far and its size.
    entry: Option<Entry>,
    /// Padding bytes left after the current entry.
    padding: u64,
    /// Each `.fts` entry's size and SHA-256.
    hashes: HashMap<String, (u64, String)>,
    /// `index.json`, once read.
    index: Option<Vec<u8>>,
    /// What `error.json` said, if the export failed midway.
    error: Option<String>,
    /// The end-of-archive blocks were seen.
    ended: bool,
}

struct Entry {
    name: String,
    left: u64,
    size: u64,
    hash: Sha256,
    /// The bytes of `index.json` or `error.json`, which are small and read whole.
    kept: Option<Vec<u8>>,
}

impl TarReader {
    fn feed(
        &mut self,
        mut bytes: &[u8],
        sink: &mut Sink,
        progress: &Progress,
    ) -> Result<(), Failure> {
        sink.raw(bytes)?;
        while !bytes.is_empty() && !self.ended {
            if self.padding > 0 {
                let skip = (self.padding as usize).min(bytes.len());
                self.padding -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            if let Some(entry) = &mut self.entry {
                let take = (entry.left as usize).min(bytes.len());
                let (data, rest) = bytes.split_at(take);
                entry.hash.update(data);
                match &mut entry.kept {
                    Some(kept) => kept.extend_from_slice(data),
                    None => sink.entry_bytes(data)?,
                }
                entry.left -= take as u64;
                bytes = rest;
                if entry.left == 0 {
                    let entry = self.entry.take().expect("just read");
                    self.padding = (512 - entry.size % 512) % 512;
                    self.finish_entry(entry, progress);
                }
                continue;
            }
            let take = (512 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.header.len() == 512 {
                let block = std::mem::take(&mut self.header);
                self.begin_entry(&block, sink, progress)?;
            }
        }
        Ok(())
    }

    fn begin_entry(
        &mut self,
        block: &[u8],
        sink: &mut Sink,
        progress: &Progress,
    ) -> Result<(), Failure> {
        if block.iter().all(|&b| b == 0) {
            self.ended = true;
            return Ok(());
        }
        let header = tar::Header::from_byte_slice(block);
        let name = header
            .path()
            .map_err(|e| format!("the archive has an unreadable entry name: {e}"))?
            .display()
            .to_string();
        let size = header
            .size()
            .map_err(|e| format!("the archive's entry {name} has no readable size: {e}"))?;
        let kept =
            (name == crate::api::INDEX_ENTRY || name == crate::api::ERROR_ENTRY).then(Vec::new);
        if kept.is_none() {
            sink.begin(&name)?;
        }
        // Skipped once the entry's bytes are read.
        self.padding = 0;
        let entry = Entry {
            name,
            left: size,
            size,
            hash: Sha256::new(),
            kept,
        };
        if size == 0 {
            self.finish_entry(entry, progress);
        } else {
            self.entry = Some(entry);
        }
        Ok(())
    }

    fn finish_entry(&mut self, entry: Entry, progress: &Progress) {
        match entry.kept {
            Some(kept) if entry.name == crate::api::ERROR_ENTRY => {
                let problem: serde_json::Value = serde_json::from_slice(&kept).unwrap_or_default();
                self.error = Some(format!(
                    "{}: {}",
                    problem["code"].as_str().unwrap_or("error"),
                    problem["detail"].as_str().unwrap_or("(no detail)")
                ));
            }
            Some(kept) => self.index = Some(kept),
            None => {
                progress.item(0, entry.size);
                self.hashes
                    .insert(entry.name, (entry.size, hex::encode(entry.hash.finalize())));
            }
        }
    }
}
