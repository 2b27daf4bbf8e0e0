//! `mailbox-gateway restore`: sends a tree of item streams to a gateway's raw import route, each exactly
//! once.
//!
//! Every item is checked locally first (the gateway's own frame check), then sent with an
//! `Idempotency-Key` derived from the target mailbox, folder and the item's SHA-256, so a retry or a
//! re-run is answered from the gateway's memory of the key instead of creating the item again. A journal
//! (JSON lines, append-only, fsync'd in batches) lets a later run skip what is done; a run killed at any
//! moment and started again re-sends at most the items whose outcome it had not written down yet, under
//! the same keys. `outcome_unknown` is never re-sent blindly: the import may have reached Exchange.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Mutex};

use super::progress::Progress;
use super::{problem_text, Failure, Opened, Target};

/// The outcomes an item can have, in the order the progress display counts them.
const OUTCOMES: &[&str] = &["created", "skipped", "failed", "outcome_unknown"];
/// Journal lines written between two fsyncs, at most.
const JOURNAL_BATCH: usize = 64;
/// Longest time a journal line waits for its fsync.
const JOURNAL_SYNC_EVERY: Duration = Duration::from_secs(1);
/// Attempts per item on `429`, `503`, a key in flight, or a lost connection.
const MAX_ATTEMPTS: u32 = 30;
/// The wait before a retry when the gateway names none.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest wait honoured between two attempts.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// The arguments of `mailbox-gateway restore`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each item is sent with an Idempotency-Key derived from the target mailbox, folder and the item's \
SHA-256, so re-running a restore (or retrying one item) never creates an item twice while the gateway \
remembers the key (MAILBOX_GATEWAY_IDEMPOTENCY_TTL_SECS, a day by default). Two items with identical \
bytes restored into one folder are therefore restored once; the second is reported as skipped.

Exit status: 0 when every item was created or skipped, 1 when any failed or has an unknown outcome, \
2 for usage errors.")]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Items in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// A journal of outcomes: a later run with the same journal skips what is done.
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Checks every stream and the target folder, and sends nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Sends again the items the journal records as outcome_unknown, under keys of their own (the
    /// gateway would replay the unknown outcome for the old ones): only after you have checked the
    /// folder and not found them.
    #[arg(long)]
    pub retry_unknown: bool,
    /// .fts files, directories (searched recursively for .fts files) and tar files of a folder export.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// What happened to one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Created,
    Skipped,
    Failed,
    OutcomeUnknown,
}

impl Outcome {
    fn index(self) -> usize {
        self as usize
    }
}

/// One item's line in the report (and the journal).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemReport {
    pub path: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The report: counts, then every item.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    created: usize,
    skipped: usize,
    failed: usize,
    outcome_unknown: usize,
    items: Vec<ItemReport>,
}

/// A journal line: the item's key and what happened to it.
#[derive(Debug, Serialize, Deserialize)]
struct JournalLine {
    key: String,
    #[serde(flatten)]
    item: ItemReport,
}

/// Where an item stream is.
#[derive(Clone, Debug)]
enum Source {
    File(PathBuf),
    /// The entry `name` of the tar file `tar`.
    TarEntry {
        tar: PathBuf,
        name: String,
    },
}

impl Source {
    fn display(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::TarEntry { tar, name } => format!("{}:{name}", tar.display()),
        }
    }
}

/// An item read and checked, ready to send.
struct Ready {
    path: String,
    /// The item's key, which the journal records.
    key: String,
    /// The key it is sent under: the same, but for an explicit `--retry-unknown`.
    send_key: String,
    data: Vec<u8>,
}

/// Runs the command.
pub async fn run(args: Args) -> ExitCode {
    restore(args).await.unwrap_or_else(Failure::exit)
}

async fn restore(args: Args) -> Result<ExitCode, Failure> {
    // The target as the gateway reads it (an address in lower case, a well-known name in lower case),
    // so naming the same folder differently does not make new idempotency keys.
    let Opened {
        client,
        mailbox,
        folder,
        folder_url,
    } = args.target.open()?;
    let sources = find_sources(&args.paths).map_err(Failure::Usage)?;
    let done = match &args.journal {
        Some(journal) => read_journal(journal)?,
        None => HashMap::new(),
    };
    let items_url = format!("{folder_url}/items");
    if args.dry_run {
        check_target(&client, &items_url).await?;
    }
    let journal = match &args.journal {
        Some(path) => Some(Arc::new(Mutex::new(Journal::open(path)?))),
        None => None,
    };
    let progress = Arc::new(Progress::new(
        "restore",
        OUTCOMES,
        Some(sources.len() as u64),
    ));
    let reports = Arc::new(Mutex::new(Vec::with_capacity(sources.len())));

    // One reader checks and hashes items in order; `concurrency` senders post them.
    let (ready_tx, ready_rx) = mpsc::channel::<Ready>(usize::from(args.concurrency));
    let ready_rx = Arc::new(Mutex::new(ready_rx));
    let mut senders = Vec::new();
    for _ in 0..args.concurrency {
        let (client, url, ready_rx) = (client.clone(), items_url.clone(), ready_rx.clone());
        let (journal, progress, reports) = (journal.clone(), progress.clone(), reports.clone());
        let dry_run = args.dry_run;
        senders.push(tokio::spawn(async move {
            loop {
                let Some(item) = ready_rx.lock().await.recv().await else {
                    break;
                };
                let size = item.data.len() as u64;
                let report = if dry_run {
                    ItemReport {
                        path: item.path.clone(),
                        outcome: Outcome::Skipped,
                        item_id: None,
                        change_key: None,
                        error: Some("dry run: checked, not sent".into()),
                    }
                } else {
                    send(&client, &url, &item).await
                };
                if let (Some(journal), false) = (&journal, dry_run) {
                    journal.lock().await.write(&item.key, &report);
                }
                progress.item(report.outcome.index(), size);
                reports.lock().await.push(report);
            }
        }));
    }

    let read = {
        let (progress, reports) = (progress.clone(), reports.clone());
        let retry_unknown = args.retry_unknown;
        tokio::task::spawn_blocking(move || {
            read_items(&sources, |path, data| {
                let result = data.and_then(|data| {
                    crate::fts::check(&data)
                        .map_err(|e| format!("not a well-formed item stream, {e}; not sent"))?;
                    Ok(data)
                });
                let data = match result {
                    Ok(data) => data,
                    Err(error) => {
                        progress.item(Outcome::Failed.index(), 0);
                        reports.blocking_lock().push(failed(path, error));
                        return true;
                    }
                };
                let key = idempotency_key(&mailbox, &folder, &data);
                let mut send_key = key.clone();
                if let Some(previous) = done.get(&key) {
                    let again = previous.outcome == Outcome::OutcomeUnknown && retry_unknown;
                    if !again && previous.outcome != Outcome::Failed {
                        progress.item(Outcome::Skipped.index(), data.len() as u64);
                        reports.blocking_lock().push(from_journal(path, previous));
                        return true;
                    }
                    if again {
                        // The gateway answers the old key with its stored outcome_unknown for as long
                        // as it remembers it: the operator's explicit retry needs a key of its own.
                        send_key = format!("{key}-retry");
                    }
                }
                ready_tx
                    .blocking_send(Ready {
                        path,
                        key,
                        send_key,
                        data,
                    })
                    .is_ok()
            })
        })
    };
    read.await
        .map_err(|e| format!("reading the items failed: {e}"))?;
    for sender in senders {
        sender
            .await
            .map_err(|e| format!("sending an item failed: {e}"))?;
    }
    if let Some(journal) = &journal {
        journal.lock().await.sync();
    }
    progress.finish();

    let items = std::mem::take(&mut *reports.lock().await);
    let count = |outcome| items.iter().filter(|i| i.outcome == outcome).count();
    let report = Report {
        created: count(Outcome::Created),
        skipped: count(Outcome::Skipped),
        failed: count(Outcome::Failed),
        outcome_unknown: count(Outcome::OutcomeUnknown),
        items,
    };
    summarise(&report, args.dry_run);
    if let Some(path) = &args.report {
        let text = serde_json::to_vec_pretty(&report).expect("the report serialises");
        std::fs::write(path, text)
            .map_err(|e| format!("cannot write the report {}: {e}", path.display()))?;
    }
    Ok(if report.failed + report.outcome_unknown == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The human summary, on stderr.
fn summarise(report: &Report, dry_run: bool) {
    let verb = if dry_run {
        "checked (dry run)"
    } else {
        "restored"
    };
    eprintln!(
        "{verb}: {} created, {} skipped, {} failed, {} outcome unknown",
        report.created, report.skipped, report.failed, report.outcome_unknown
    );
    for item in &report.items {
        match item.outcome {
            Outcome::Failed => eprintln!(
                "  failed: {}: {}",
                item.path,
                item.error.as_deref().unwrap_or("")
            ),
            Outcome::OutcomeUnknown => eprintln!("  outcome unknown: {}", item.path),
            _ => {}
        }
    }
    if report.outcome_unknown > 0 {
        eprintln!(
            "Items with an unknown outcome may or may not be in the folder: the gateway sent them but \
             got no answer. Look for them (GET .../items?createdAfter=<when the restore ran>); the \
             journal will not send them again unless you re-run with --retry-unknown, which sends them \
             under new Idempotency-Keys: use it only for items you did not find."
        );
    }
}

/// The `Idempotency-Key` of an item restored into a mailbox's folder: the SHA-256 of the three, so
/// the same item restored into the same folder always carries the same key.
pub fn idempotency_key(mailbox: &str, folder: &str, data: &[u8]) -> String {
    let item = Sha256::digest(data);
    let mut hash = Sha256::new();
    for part in [mailbox.as_bytes(), folder.as_bytes(), &item[..]] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    format!("restore-{}", hex::encode(&hash.finalize()[..24]))
}

/// Sends one item until it has an outcome: created (or replayed), failed, or unknown.
async fn send(client: &reqwest::Client, url: &str, item: &Ready) -> ItemReport {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let answer = client
            .post(url)
            .header("content-type", "application/octet-stream")
            .header("idempotency-key", &item.send_key)
            .body(item.data.clone())
            .send()
            .await;
        let response = match answer {
            Ok(response) => response,
            // Sent under its key: trying again is answered from the gateway's memory of it.
            Err(error) if attempts < MAX_ATTEMPTS => {
                tracing::debug!(%error, "the gateway could not be reached; retrying");
                tokio::time::sleep(backoff(attempts)).await;
                continue;
            }
            Err(error) => {
                return failed(item.path.clone(), format!("gateway unreachable: {error}"))
            }
        };
        let status = response.status();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let code = body["code"].as_str().unwrap_or("");
        let retryable = status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::SERVICE_UNAVAILABLE
            || code == "idempotency_key_in_flight";
        if status == StatusCode::CREATED || status == StatusCode::OK {
            let (item_id, change_key) = (body["itemId"].as_str(), body["changeKey"].as_str());
            return ItemReport {
                path: item.path.clone(),
                outcome: if replayed {
                    Outcome::Skipped
                } else {
                    Outcome::Created
                },
                item_id: item_id.map(str::to_owned),
                change_key: change_key.map(str::to_owned),
                error: replayed.then(|| "already restored under this key (replayed)".to_owned()),
            };
        }
        if code == "outcome_unknown" {
            return ItemReport {
                outcome: Outcome::OutcomeUnknown,
                ..failed(item.path.clone(), problem_text(status, &body))
            };
        }
        if retryable && attempts < MAX_ATTEMPTS {
            let wait = retry_after
                .unwrap_or(DEFAULT_RETRY_AFTER)
                .min(MAX_RETRY_AFTER);
            tokio::time::sleep(wait).await;
            continue;
        }
        return failed(item.path.clone(), problem_text(status, &body));
    }
}

fn backoff(attempts: u32) -> Duration {
    Duration::from_millis(200 * 2u64.pow(attempts.min(6)))
}

fn failed(path: String, error: String) -> ItemReport {
    ItemReport {
        path,
        outcome: Outcome::Failed,
        item_id: None,
        change_key: None,
        error: Some(error),
    }
}

/// The report line of an item the journal says is done.
fn from_journal(path: String, previous: &ItemReport) -> ItemReport {
    let reason = match previous.outcome {
        Outcome::OutcomeUnknown => {
            "outcome unknown in an earlier run; not sent again without --retry-unknown"
        }
        _ => "done in an earlier run (journal)",
    };
    ItemReport {
        path,
        outcome: if previous.outcome == Outcome::OutcomeUnknown {
            Outcome::OutcomeUnknown
        } else {
            Outcome::Skipped
        },
        item_id: previous.item_id.clone(),
        change_key: previous.change_key.clone(),
        error: Some(reason.to_owned()),
    }
}

/// Asks the gateway about the target folder (a dry run's check): it must exist, and the client must be
/// allowed to read it or at least be told so.
async fn check_target(client: &reqwest::Client, items_url: &str) -> Result<(), String> {
    let response = client
        .get(format!("{items_url}?pageSize=1"))
        .send()
        .await
        .map_err(|e| format!("the gateway could not be reached: {e}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    match status {
        s if s.is_success() => {
            eprintln!("the target folder exists");
            Ok(())
        }
        StatusCode::FORBIDDEN => {
            eprintln!(
                "the client may not read the target mailbox, so the folder could not be checked; \
                 imports may still be allowed"
            );
            Ok(())
        }
        _ => Err(format!(
            "the target folder cannot be used: {}",
            problem_text(status, &body)
        )),
    }
}

/// Every item stream the paths name, in a stable order: files as given, directories' `.fts` files
/// sorted, tar files' `.fts` entries in archive order.
fn find_sources(paths: &[PathBuf]) -> Result<Vec<Source>, String> {
    let mut sources = Vec::new();
    for path in paths {
        let metadata =
            std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if metadata.is_dir() {
            let mut files = Vec::new();
            walk(path, &mut files)?;
            files.sort();
            sources.extend(files.into_iter().map(Source::File));
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tar"))
        {
            sources.extend(tar_entries(path)?);
        } else {
            sources.push(Source::File(path.clone()));
        }
    }
    Ok(sources)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        if path.is_dir() {
            walk(&path, files)?;
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("fts"))
        {
            files.push(path);
        }
    }
    Ok(())
}

/// The `.fts` entries of a folder-export tar. A tar whose export failed midway (it holds `error.json`,
/// or lacks the `index.json` a finished export ends with) is refused: it is not the whole folder.
fn tar_entries(path: &Path) -> Result<Vec<Source>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut sources = Vec::new();
    let mut indexed = false;
    let entries = archive
        .entries()
        .map_err(|e| format!("{} is not a tar file: {e}", path.display()))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| format!("{} is not a readable tar file: {e}", path.display()))?;
        let name = entry
            .path()
            .map_err(|e| format!("{}: an entry has no readable name: {e}", path.display()))?
            .display()
            .to_string();
        if name == "error.json" {
            return Err(format!(
                "{} holds error.json: its export failed midway, so it is not the whole folder; export \
                 the folder again",
                path.display()
            ));
        }
        indexed |= name == "index.json";
        if name.ends_with(".fts") {
            sources.push(Source::TarEntry {
                tar: path.to_owned(),
                name,
            });
        }
    }
    if !indexed {
        return Err(format!(
            "{} has no index.json: it is not a whole folder export (or it was cut off); export the \
             folder again",
            path.display()
        ));
    }
    Ok(sources)
}

/// Reads each source's bytes in order and hands them to `each` (with the path to report), which says
/// whether to go on. Tar files are read once, front to back.
fn read_items(sources: &[Source], mut each: impl FnMut(String, Result<Vec<u8>, String>) -> bool) {
    let mut index = 0;
    while index < sources.len() {
        match &sources[index] {
            Source::File(path) => {
                let data =
                    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
                if !each(sources[index].display(), data) {
                    return;
                }
                index += 1;
            }
            Source::TarEntry { tar, .. } => {
                // Every consecutive entry of this tar, in one pass.
                let count = sources[index..]
                    .iter()
                    .take_while(|s| matches!(s, Source::TarEntry { tar: t, .. } if t == tar))
                    .count();
                let wanted = &sources[index..index + count];
                if !read_tar(tar, wanted, &mut each) {
                    return;
                }
                index += count;
            }
        }
    }
}

fn read_tar(
    tar: &Path,
    wanted: &[Source],
    each: &mut impl FnMut(String, Result<Vec<u8>, String>) -> bool,
) -> bool {
    let opened =
        std::fs::File::open(tar).map_err(|e| format!("cannot open {}: {e}", tar.display()));
    let mut archive = match opened {
        Ok(file) => tar::Archive::new(file),
        Err(error) => {
            return wanted
                .iter()
                .all(|source| each(source.display(), Err(error.clone())))
        }
    };
    let Ok(entries) = archive.entries() else {
        return wanted.iter().all(|source| {
            each(
                source.display(),
                Err(format!("{} is no longer readable", tar.display())),
            )
        });
    };
    let mut next = wanted.iter();
    for entry in entries {
        let Ok(mut entry) = entry else { break };
        let name = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if !name.ends_with(".fts") {
            continue;
        }
        let Some(source) = next.next() else { break };
        let mut data = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
        let data = entry
            .read_to_end(&mut data)
            .map(|_| data)
            .map_err(|e| format!("cannot read {}: {e}", source.display()));
        if !each(source.display(), data) {
            return false;
        }
    }
    // Entries the tar no longer holds.
    next.all(|source| {
        each(
            source.display(),
            Err(format!("{} ended before this entry", tar.display())),
        )
    })
}

/// The journal's record of earlier runs: the last line per key.
fn read_journal(path: &Path) -> Result<HashMap<String, ItemReport>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(format!("cannot read the journal {}: {e}", path.display())),
    };
    let mut done = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<JournalLine>(line) {
            Ok(entry) => {
                done.insert(entry.key, entry.item);
            }
            // A run killed mid-write leaves at most one torn last line: the item is sent again under
            // its key, which the gateway answers from memory.
            Err(_) if number + 1 == text.lines().count() => {}
            Err(e) => {
                return Err(format!(
                    "the journal {} is damaged at line {}: {e}",
                    path.display(),
                    number + 1
                ))
            }
        }
    }
    Ok(done)
}

/// The journal being written: lines appended as outcomes arrive, fsync'd every [`JOURNAL_BATCH`] lines
/// or [`JOURNAL_SYNC_EVERY`].
struct Journal {
    file: std::fs::File,
    path: PathBuf,
    unsynced: usize,
    last_sync: Instant,
}

impl Journal {
    fn open(path: &Path) -> Result<Journal, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open the journal {}: {e}", path.display()))?;
        Ok(Journal {
            file,
            path: path.to_owned(),
            unsynced: 0,
            last_sync: Instant::now(),
        })
    }

    fn write(&mut self, key: &str, item: &ItemReport) {
        let line = JournalLine {
            key: key.to_owned(),
            item: item.clone(),
        };
        let mut text = serde_json::to_vec(&line).expect("a journal line serialises");
        text.push(b'\n');
        if let Err(error) = self.file.write_all(&text) {
            eprintln!(
                "warning: cannot write the journal {}: {error}",
                self.path.display()
            );
        }
        self.unsynced += 1;
        if self.unsynced >= JOURNAL_BATCH || self.last_sync.elapsed() >= JOURNAL_SYNC_EVERY {
            self.sync();
        }
    }

    fn sync(&mut self) {
        if let Err(error) = self.file.sync_data() {
            eprintln!(
                "warning: cannot sync the journal {}: {error}",
                self.path.display()
            );
        }
        self.unsynced = 0;
        self.last_sync = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_target_and_content_only() {
        let a = idempotency_key("adele@contoso.com", "inbox", b"item");
        assert_eq!(a, idempotency_key("adele@contoso.com", "inbox", b"item"));
        assert_ne!(a, idempotency_key("adele@contoso.com", "drafts", b"item"));
        assert_ne!(a, idempotency_key("alex@contoso.com", "inbox", b"item"));
        assert_ne!(a, idempotency_key("adele@contoso.com", "inbox", b"item2"));
        assert!(mailbox_gateway_key_is_valid(&a));
    }

    fn mailbox_gateway_key_is_valid(key: &str) -> bool {
        key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic())
    }

    #[test]
    fn a_torn_last_journal_line_is_ignored_but_a_damaged_middle_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let line =
            r#"{"key":"k1","path":"a.fts","outcome":"created","itemId":"i","changeKey":"c"}"#;
        std::fs::write(&path, format!("{line}\n{{\"key\":\"k2\",\"pa")).unwrap();
        let done = read_journal(&path).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done["k1"].outcome, Outcome::Created);
        std::fs::write(&path, format!("garbage\n{line}\n")).unwrap();
        assert!(read_journal(&path).is_err());
        assert!(read_journal(&dir.path().join("absent")).unwrap().is_empty());
    }
}
