//! `GET /v1/mailboxes/{mailbox}/folders/{folder}/export`: a whole folder as a tar stream, written as its
//! items arrive so a folder of any size passes through in bounded memory.
//!
//! The archive holds one `<name>.fts` entry per item (its exact bytes; the name is derived from the item
//! id and safe on every file system, case-insensitive ones included), then `index.json`, which lists every
//! file with its itemId, changeKey, size and SHA-256. The index comes last because it is only known once
//! every item has passed. If the export fails midway, the stream ends with an `error.json` entry and is
//! then cut off without the end-of-archive blocks, so no client mistakes it for a complete, shorter folder.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{audit, authorize, ApiError};
use crate::access::{Client, Operation};
use crate::app::AppState;
use crate::budget::Reservation;
use crate::graph::{
    CallContext, ErrorKind, Exported, GraphError, ItemPage, ItemSummary, PageQuery, MAX_EXPORT_IDS,
};
use crate::ids::{FolderRef, MailboxRef};

/// Items asked of Graph per listing page during an export.
const EXPORT_PAGE_SIZE: u32 = 100;
/// Most bytes (as the listing counts them) asked of exportItems in one call; a larger item goes alone.
const EXPORT_CALL_BYTES: u64 = 16 * 1024 * 1024;
/// Chunks of the archive written ahead of the client: the export's memory is bounded by this and one
/// exportItems answer.
const CHUNKS_AHEAD: usize = 4;
/// The name of the index entry.
pub const INDEX_ENTRY: &str = "index.json";
/// The name of the entry that says why an export stopped.
pub const ERROR_ENTRY: &str = "error.json";

/// The archive's index: every item written, and those that disappeared while the folder was exported.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    mailbox: String,
    mailbox_id: &'a str,
    folder: String,
    folder_id: &'a str,
    items: &'a [IndexEntry],
    /// Items listed but gone (deleted or moved) by the time they were exported.
    missing: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    file: String,
    item_id: String,
    change_key: String,
    size: usize,
    sha256: String,
}

/// The name of an item's entry: the first 128 bits of its id's SHA-256 in hex. Ids are case-sensitive
/// base64 with `/` and `+`, so they cannot be file names themselves; the index maps names back to ids.
pub fn entry_name(item_id: &str) -> String {
    let digest = Sha256::digest(item_id.as_bytes());
    format!("{}.fts", hex::encode(&digest[..16]))
}

/// `GET /v1/mailboxes/{mailbox}/folders/{folder}/export`.
pub async fn export_folder(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((mailbox, folder)) = path?;
    let mailbox = MailboxRef::parse(&mailbox).map_err(ApiError::InvalidMailbox)?;
    let folder = FolderRef::parse(&folder).map_err(ApiError::InvalidFolder)?;
    authorize(&state, &client, &mailbox, Operation::Read)?;
    let context = super::graph_context(&state, &client);
    // The mailbox, the folder and the first page are found before answering, so the common failures
    // (no such mailbox or folder, throttling) are a problem response rather than a broken archive.
    let first = async {
        let (mailbox_id, folder_id) = super::resolve(&state, &mailbox, &folder, &context).await?;
        let page = state
            .graph
            .list_items(&mailbox_id, &folder_id, &first_page(), &context)
            .await?;
        Ok::<_, ApiError>((mailbox_id, folder_id, page))
    }
    .await;
    let (mailbox_id, folder_id, page) = match first {
        Ok(found) => found,
        Err(error) => {
            super::read::record_read(
                &state,
                &audit::ReadEvent {
                    client: &client,
                    operation: "export",
                    mailbox: &mailbox,
                    folder: Some(&folder),
                    item_ids: &[],
                    items: 0,
                    bytes: 0,
                    status: error.status(),
                    code: Some(error.code()),
                },
            );
            let mut response = error.into_response();
            response.extensions_mut().insert(audit::Audited);
            return Ok(response);
        }
    };
    let (sender, receiver) = mpsc::channel(CHUNKS_AHEAD);
    let finished = Arc::new(AtomicBool::new(false));
    let export = FolderExport {
        state: state.clone(),
        client,
        mailbox,
        mailbox_id,
        folder,
        folder_id,
        context,
        out: sender,
        finished: finished.clone(),
        seen: HashSet::new(),
        written: Vec::new(),
        missing: Vec::new(),
        bytes: 0,
    };
    // Tracked like an import, so a shutdown lets it finish; with the request's ids, for its audit line.
    state.tasks.spawn(
        super::request_id::carry_request_id(export.run(page)).instrument(tracing::Span::current()),
    );
    let body = Body::from_stream(tokio_stream_from(receiver, finished));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"folder.tar\""),
    );
    response.extensions_mut().insert(audit::Audited);
    Ok(response)
}

fn first_page() -> PageQuery {
    PageQuery {
        page_size: EXPORT_PAGE_SIZE,
        created_after: None,
        token: None,
    }
}

/// One piece of the archive, with the memory-budget reservation of the item it carries (if any): the
/// bytes count against the budget until the body hands them to the connection.
type Chunk = Result<(Bytes, Option<Arc<Reservation>>), std::io::Error>;

/// The chunks of the archive as a body stream; an `Err` cuts the response off, and so does the end of
/// the channel before the archive was finished (the export's task ended without finishing it).
fn tokio_stream_from(
    mut receiver: mpsc::Receiver<Chunk>,
    finished: Arc<AtomicBool>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let mut ended = false;
    futures_util::stream::poll_fn(move |cx| {
        if ended {
            return std::task::Poll::Ready(None);
        }
        match receiver.poll_recv(cx) {
            std::task::Poll::Ready(Some(Ok((bytes, _held)))) => {
                std::task::Poll::Ready(Some(Ok(bytes)))
            }
            std::task::Poll::Ready(Some(Err(error))) => {
                ended = true;
                std::task::Poll::Ready(Some(Err(error)))
            }
            std::task::Poll::Ready(None) if !finished.load(Ordering::Acquire) => {
                ended = true;
                std::task::Poll::Ready(Some(Err(std::io::Error::other(
                    "the folder export ended before its archive was complete",
                ))))
            }
            other => other.map(|_| None),
        }
    })
}

/// Why writing the archive stopped early.
enum Stop {
    /// The client went away: nothing more to write, nobody to tell.
    ClientGone,
    /// Exporting failed: say so in the archive, then cut it off.
    Failed(ApiError, Option<String>),
}

impl From<GraphError> for Stop {
    fn from(error: GraphError) -> Stop {
        Stop::Failed(error.into(), None)
    }
}

/// One folder export under way.
struct FolderExport {
    state: AppState,
    client: Client,
    mailbox: MailboxRef,
    mailbox_id: String,
    folder: FolderRef,
    folder_id: String,
    context: CallContext,
    out: mpsc::Sender<Chunk>,
    /// Set once the archive's end (or its error) has been handed over.
    finished: Arc<AtomicBool>,
    /// Item ids written, so an item the listing shows twice (it shifted meanwhile) is written once.
    seen: HashSet<String>,
    written: Vec<IndexEntry>,
    missing: Vec<String>,
    bytes: usize,
}

impl FolderExport {
    /// Writes every page's items, then the index and the end of the archive; or, on failure, the error
    /// entry and a cut.
    async fn run(mut self, first: ItemPage) {
        let outcome = self.write_all(first).await;
        let (status, code) = match &outcome {
            Ok(()) => (StatusCode::OK, None),
            Err(Stop::ClientGone) => (StatusCode::OK, Some("client_gone")),
            Err(Stop::Failed(error, _)) => (error.status(), Some(error.code())),
        };
        super::read::record_read(
            &self.state,
            &audit::ReadEvent {
                client: &self.client,
                operation: "export",
                mailbox: &self.mailbox,
                folder: Some(&self.folder),
                item_ids: &[],
                items: self.written.len(),
                bytes: self.bytes,
                status,
                code,
            },
        );
        if let Err(Stop::Failed(error, item_id)) = outcome {
            tracing::warn!(error = %error, "a folder export stopped midway");
            let problem = serde_json::json!({
                "code": error.code(),
                "status": error.status().as_u16(),
                "detail": error.to_string(),
                "itemId": item_id,
                "itemsWritten": self.written.len(),
            });
            let text = serde_json::to_vec_pretty(&problem).expect("JSON values serialise");
            let _ = self.send(entry(ERROR_ENTRY, Bytes::from(text)), None).await;
            self.finished.store(true, Ordering::Release);
            let _ = self
                .out
                .send(Err(std::io::Error::other(
                    "the folder export failed midway",
                )))
                .await;
        }
    }

    async fn write_all(&mut self, first: ItemPage) -> Result<(), Stop> {
        let mut page = first;
        loop {
            for batch in batches(&page.items) {
                self.write_batch(batch).await?;
            }
            let Some(token) = page.next.take() else { break };
            let query = PageQuery {
                token: Some(token),
                ..first_page()
            };
            page = self
                .state
                .graph
                .list_items(&self.mailbox_id, &self.folder_id, &query, &self.call())
                .await?;
        }
        let index = Index {
            mailbox: self.mailbox.to_string(),
            mailbox_id: &self.mailbox_id,
            folder: self.folder.to_string(),
            folder_id: &self.folder_id,
            items: &self.written,
            missing: &self.missing,
        };
        let text = serde_json::to_vec_pretty(&index).expect("the index serialises");
        self.send(entry(INDEX_ENTRY, Bytes::from(text)), None)
            .await?;
        // The end of the archive: two zero blocks.
        self.finished.store(true, Ordering::Release);
        self.send(vec![Bytes::from_static(&[0; 1024])], None).await
    }

    /// Exports one batch of items and writes each as its entry, in listing order.
    async fn write_batch(&mut self, items: &[ItemSummary]) -> Result<(), Stop> {
        let ids: Vec<String> = items
            .iter()
            .filter(|i| self.seen.insert(i.item_id.clone()))
            .map(|i| i.item_id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let batch = self
            .state
            .graph
            .export_items(
                &self.mailbox_id,
                &ids,
                &self.state.budget,
                &self.client.name,
                &self.call(),
            )
            .await?;
        let held = Arc::new(batch.held);
        for exported in batch.items {
            match exported {
                Exported::Item(item) => {
                    let file = entry_name(&item.item_id);
                    self.written.push(IndexEntry {
                        file: file.clone(),
                        item_id: item.item_id,
                        change_key: item.change_key,
                        size: item.data.len(),
                        sha256: hex::encode(Sha256::digest(&item.data)),
                    });
                    self.bytes += item.data.len();
                    self.send(entry(&file, item.data), Some(&held)).await?;
                }
                Exported::Failed {
                    item_id,
                    code,
                    message,
                } => {
                    let error = Exported::failure("exporting an item", &code, &message);
                    if matches!(error.kind, ErrorKind::NotFound(_)) {
                        // Deleted or moved since it was listed: not part of the folder any more.
                        self.missing.push(item_id);
                    } else {
                        return Err(Stop::Failed(error.into(), Some(item_id)));
                    }
                }
            }
        }
        Ok(())
    }

    /// A fresh retry budget for each call: an export of a large folder outlasts any one request's
    /// budget, and each of its calls deserves the waits a single request would get.
    fn call(&self) -> CallContext {
        CallContext::new(self.context.request_id.clone(), self.state.retry)
            .acting_for(self.client.user.clone())
    }

    /// Hands chunks to the body, each holding `held` (the batch's reservation) until it is sent.
    async fn send(&self, chunks: Vec<Bytes>, held: Option<&Arc<Reservation>>) -> Result<(), Stop> {
        for chunk in chunks {
            self.out
                .send(Ok((chunk, held.cloned())))
                .await
                .map_err(|_| Stop::ClientGone)?;
        }
        Ok(())
    }
}

/// The listing's items in exportItems calls: at most 20 ids, and at most [`EXPORT_CALL_BYTES`] unless
/// one item alone is larger.
fn batches(items: &[ItemSummary]) -> Vec<&[ItemSummary]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (index, item) in items.iter().enumerate() {
        let size = item.size.unwrap_or(0);
        let count = index - start;
        if count > 0 && (count == MAX_EXPORT_IDS || bytes + size > EXPORT_CALL_BYTES) {
            batches.push(&items[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < items.len() {
        batches.push(&items[start..]);
    }
    batches
}

/// One archive entry: its header, its bytes (not copied), and the padding to a whole block.
fn entry(name: &str, data: Bytes) -> Vec<Bytes> {
    let mut header = tar::Header::new_ustar();
    header
        .set_path(name)
        .expect("entry names are short and plain");
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    header.set_cksum();
    let padding = (512 - data.len() % 512) % 512;
    let mut chunks = vec![Bytes::copy_from_slice(header.as_bytes()), data];
    if padding > 0 {
        chunks.push(Bytes::from(vec![0; padding]));
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(size: u64) -> ItemSummary {
        ItemSummary {
            item_id: "id".into(),
            change_key: "ck".into(),
            item_type: None,
            size: Some(size),
            created: None,
            last_modified: None,
        }
    }

    #[test]
    fn batches_hold_at_most_twenty_ids_and_sixteen_mib() {
        let small: Vec<ItemSummary> = (0..45).map(|_| item(1000)).collect();
        let sizes: Vec<usize> = batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [20, 20, 5]);
        let mib = 1024 * 1024;
        let mixed = [
            item(10 * mib),
            item(10 * mib),
            item(40 * mib),
            item(1),
            item(1),
        ];
        let sizes: Vec<usize> = batches(&mixed).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [1, 1, 1, 2]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn entries_are_whole_blocks_and_read_back_with_tar() {
        let mut archive = Vec::new();
        for chunk in entry("a.fts", Bytes::from_static(b"hello"))
            .into_iter()
            .chain(entry(INDEX_ENTRY, Bytes::from(vec![7; 512])))
        {
            archive.extend_from_slice(&chunk);
        }
        assert_eq!(archive.len() % 512, 0);
        archive.extend_from_slice(&[0; 1024]);
        let mut reader = tar::Archive::new(archive.as_slice());
        let names: Vec<(String, u64)> = reader
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.size())
            })
            .collect();
        assert_eq!(
            names,
            [("a.fts".to_owned(), 5), (INDEX_ENTRY.to_owned(), 512)]
        );
    }

    #[test]
    fn entry_names_are_file_system_safe_and_distinct_by_case() {
        let (a, b) = (entry_name("AAMk+/x=="), entry_name("aamk+/x=="));
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() || c == b'.' || c.is_ascii_lowercase()));
    }
}
