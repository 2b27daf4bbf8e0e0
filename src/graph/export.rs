//! Reading items back as raw item streams: Graph's `exportItems` (at most 20 ids a call, per-item errors
//! inside a 200, an auto-expanded archive's items redirected once), and the batching of single-item
//! reads of one mailbox that arrive together into as few calls as possible, since every call takes one
//! of the mailbox's few concurrent slots.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde::Deserialize;
use tokio::sync::{oneshot, Notify};

use super::{
    invalid_json, parse_json, Call, CallContext, Endpoint, ErrorKind, GraphClient, GraphError,
    Missing,
};
use crate::budget::{MemoryBudget, Reservation};
use crate::ids::MailboxRef;

/// Most item ids Graph's `exportItems` takes in one call.
pub const MAX_EXPORT_IDS: usize = 20;

/// How long the first single-item read of a mailbox waits for others to share its call.
const BATCH_WINDOW: Duration = Duration::from_millis(3);

/// The per-item error code of an item that lives in the mailbox's auto-expanded archive.
const ARCHIVE_MOVED: &str = "ErrorArchiveFolderMovedPermanently";

/// One exported item: its ids and its exact item stream.
#[derive(Clone, Debug)]
pub struct ExportedItem {
    pub item_id: String,
    pub change_key: String,
    pub data: Bytes,
}

/// What `exportItems` said about one id.
#[derive(Clone, Debug)]
pub enum Exported {
    Item(ExportedItem),
    /// A per-item error inside the 200: Graph's code and message.
    Failed {
        item_id: String,
        code: String,
        message: String,
    },
}

impl Exported {
    pub fn item_id(&self) -> &str {
        match self {
            Exported::Item(item) => &item.item_id,
            Exported::Failed { item_id, .. } => item_id,
        }
    }

    /// The error a client is told for a per-item failure: a missing item is 404, anything else a
    /// refusal by the upstream.
    pub fn failure(action: &str, code: &str, message: &str) -> GraphError {
        // A malformed id names no item either (Exchange answers ErrorInvalidId or
        // ErrorInvalidIdMalformed for it).
        let kind = if code.contains("NotFound") || code.starts_with("ErrorInvalidId") {
            ErrorKind::NotFound(Missing::Item)
        } else {
            ErrorKind::Rejected
        };
        let mut error = GraphError::new(action, kind);
        error.upstream = Some(super::error::UpstreamAnswer {
            code: Some(code.to_owned()),
            message: Some(message.to_owned()),
            ..Default::default()
        });
        error
    }
}

/// The items of one call, and the memory budget their bytes are held against until dropped.
#[derive(Debug)]
pub struct ExportBatch {
    pub items: Vec<Exported>,
    pub held: Reservation,
}

#[derive(Deserialize)]
struct ExportAnswer<'a> {
    #[serde(borrow)]
    value: Vec<ExportEntry<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExportEntry<'a> {
    item_id: String,
    change_key: Option<String>,
    #[serde(borrow)]
    data: Option<Base64<'a>>,
    /// Graph spells it `error`; one of its samples `Error`.
    #[serde(alias = "Error")]
    error: Option<EntryError>,
}

/// An item's base64, borrowed from the answer unless it holds a JSON escape. A newtype, because serde
/// borrows a `Cow<str>` only as a field of its own: inside an `Option` it would always copy (53 MiB for a
/// 40 MiB item).
#[derive(Deserialize)]
struct Base64<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct EntryError {
    #[serde(alias = "Code")]
    code: Option<String>,
    #[serde(alias = "Message")]
    message: Option<String>,
}

impl GraphClient {
    /// Exports up to [`MAX_EXPORT_IDS`] items of one mailbox in one call (two when some live in its
    /// auto-expanded archive), in the order asked. The answer's bytes are reserved from `budget` as they
    /// arrive and stay reserved, decoded, in the returned batch.
    pub async fn export_items(
        &self,
        mailbox_id: &str,
        item_ids: &[String],
        budget: &MemoryBudget,
        client: &str,
        context: &CallContext,
    ) -> Result<ExportBatch, GraphError> {
        let mut batch = self
            .export_call(mailbox_id, item_ids, budget, client, context)
            .await?;
        // Items in the auto-expanded archive are asked again of the mailbox Graph names, once.
        let mut moved: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, entry) in batch.items.iter().enumerate() {
            if let Exported::Failed { code, message, .. } = entry {
                if code == ARCHIVE_MOVED {
                    if let Some(archive) = archive_mailbox(message) {
                        moved.entry(archive).or_default().push(index);
                    }
                }
            }
        }
        for (archive, indexes) in moved {
            let ids: Vec<String> = indexes
                .iter()
                .map(|&i| batch.items[i].item_id().to_owned())
                .collect();
            tracing::info!(
                count = ids.len(),
                "items live in the archive; exporting them there"
            );
            let found = self
                .export_call(&archive, &ids, budget, client, context)
                .await?;
            batch.held.merge(found.held);
            for (index, entry) in indexes.into_iter().zip(found.items) {
                batch.items[index] = entry;
            }
        }
        Ok(batch)
    }

    async fn export_call(
        &self,
        mailbox_id: &str,
        item_ids: &[String],
        budget: &MemoryBudget,
        client: &str,
        context: &CallContext,
    ) -> Result<ExportBatch, GraphError> {
        let action = format!("exporting {} items of {mailbox_id}", item_ids.len());
        let url =
            self.graph_endpoint(&["admin", "exchange", "mailboxes", mailbox_id, "exportItems"]);
        let json = serde_json::to_vec(&serde_json::json!({ "itemIds": item_ids }))
            .expect("a list of strings serialises");
        let call = Call {
            method: Method::POST,
            url,
            json: Some(Bytes::from(json)),
            action: &action,
            endpoint: Endpoint::Export,
            mailbox_id: Some(mailbox_id),
            held: Some((budget, client)),
        };
        let (body, held) = self.graph_call(call, context).await?;
        let mut held = held.expect("a budgeted call returns its reservation");
        let answer: ExportAnswer = parse_json(&body).map_err(|e| invalid_json(&action, e))?;
        // The decoded streams exist beside their base64 for a moment: reserve them before decoding, then
        // give back the answer's bytes.
        let decoded: usize = answer
            .value
            .iter()
            .filter_map(|e| e.data.as_ref())
            .map(|d| d.0.len() / 4 * 3)
            .sum();
        budget
            .grow(&mut held, decoded)
            .await
            .map_err(|e| GraphError::new(&action, ErrorKind::Budget(e)))?;
        let mut items = Vec::with_capacity(answer.value.len());
        let mut kept = 0;
        for entry in answer.value {
            items.push(match (entry.data, entry.change_key, entry.error) {
                (Some(data), Some(change_key), None) => {
                    let data = base64_simd::STANDARD
                        .decode_to_vec(data.0.as_bytes())
                        .map_err(|e| {
                            GraphError::new(
                                &action,
                                ErrorKind::InvalidResponse(format!("an item's data: {e}")),
                            )
                        })?;
                    kept += data.len();
                    Exported::Item(ExportedItem {
                        item_id: entry.item_id,
                        change_key,
                        data: Bytes::from(data),
                    })
                }
                (_, _, Some(error)) => Exported::Failed {
                    item_id: entry.item_id,
                    code: error.code.unwrap_or_default(),
                    message: error.message.unwrap_or_default(),
                },
                _ => {
                    return Err(GraphError::new(
                        &action,
                        ErrorKind::InvalidResponse("an entry has neither data nor error".into()),
                    ))
                }
            });
        }
        drop(body);
        held.shrink_to(kept);
        if items.len() != item_ids.len() {
            return Err(GraphError::new(
                &action,
                ErrorKind::InvalidResponse(format!(
                    "{} entries for {} ids",
                    items.len(),
                    item_ids.len()
                )),
            ));
        }
        Ok(ExportBatch { items, held })
    }

    /// Exports one item, sharing a call with the other single-item reads of the same mailbox that
    /// arrive within a few milliseconds (up to [`MAX_EXPORT_IDS`] a call). The returned reservation
    /// holds the shared call's bytes until every reader has let go of it.
    pub async fn export_one(
        self: &Arc<Self>,
        mailbox_id: &str,
        item_id: &str,
        budget: &MemoryBudget,
        client: &str,
        context: &CallContext,
    ) -> Result<(ExportedItem, Arc<Reservation>), GraphError> {
        let (sender, receiver) = oneshot::channel();
        self.batches
            .join(self, mailbox_id, item_id, sender, (budget, client), context);
        let action = "exporting an item";
        match receiver.await {
            Ok(Ok((Exported::Item(item), held))) => Ok((item, held)),
            Ok(Ok((Exported::Failed { code, message, .. }, _))) => {
                Err(Exported::failure(action, &code, &message))
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(GraphError::new(
                action,
                ErrorKind::InvalidResponse("the shared export call was abandoned".into()),
            )),
        }
    }
}

/// What one reader of a shared call is sent.
type BatchResult = Result<(Exported, Arc<Reservation>), GraphError>;

/// The single-item reads waiting for their mailbox's next call, per mailbox.
#[derive(Default)]
pub(super) struct ExportBatches {
    open: Mutex<HashMap<String, Arc<OpenBatch>>>,
}

/// A call being collected: its readers, and a signal that it is full.
struct OpenBatch {
    readers: Mutex<Vec<(String, oneshot::Sender<BatchResult>)>>,
    full: Notify,
}

impl ExportBatches {
    /// Adds a reader to the mailbox's open batch, opening one (and its task) if there is none.
    fn join(
        &self,
        client: &Arc<GraphClient>,
        mailbox_id: &str,
        item_id: &str,
        sender: oneshot::Sender<BatchResult>,
        (budget, client_name): (&MemoryBudget, &str),
        context: &CallContext,
    ) {
        // One batch per mailbox and caller: in delegated mode a call carries one user's token, and a
        // batch's bytes count against one client's share of the memory budget.
        let key = format!("{client_name}|{}", context.session_key(mailbox_id));
        let mut open = self.open.lock().expect("not poisoned");
        let batch = open.entry(key.clone()).or_insert_with(|| {
            let batch = Arc::new(OpenBatch {
                readers: Mutex::new(Vec::new()),
                full: Notify::new(),
            });
            tokio::spawn(send_batch(
                client.clone(),
                mailbox_id.to_owned(),
                key.clone(),
                batch.clone(),
                budget.clone(),
                client_name.to_owned(),
                context.clone(),
            ));
            batch
        });
        let mut readers = batch.readers.lock().expect("not poisoned");
        readers.push((item_id.to_owned(), sender));
        let distinct = {
            let mut ids: Vec<&str> = readers.iter().map(|(id, _)| id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.len()
        };
        if distinct >= MAX_EXPORT_IDS {
            // Full: the next reader opens a new batch.
            batch.full.notify_one();
            drop(readers);
            open.remove(&key);
        }
    }
}

/// Waits out the collection window (or until the batch is full), closes the batch and makes its call.
async fn send_batch(
    client: Arc<GraphClient>,
    mailbox_id: String,
    key: String,
    batch: Arc<OpenBatch>,
    budget: MemoryBudget,
    client_name: String,
    context: CallContext,
) {
    tokio::select! {
        () = tokio::time::sleep(BATCH_WINDOW) => {}
        () = batch.full.notified() => {}
    }
    {
        let mut open = client.batches.open.lock().expect("not poisoned");
        if open.get(&key).is_some_and(|b| Arc::ptr_eq(b, &batch)) {
            open.remove(&key);
        }
    }
    let readers = std::mem::take(&mut *batch.readers.lock().expect("not poisoned"));
    let mut ids: Vec<String> = readers.iter().map(|(id, _)| id.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    client.metrics.export_batch(ids.len());
    match client
        .export_items(&mailbox_id, &ids, &budget, &client_name, &context)
        .await
    {
        Ok(exported) => {
            let held = Arc::new(exported.held);
            // By position: the answer's entries come in the order asked, whatever spelling of an id
            // Graph writes back.
            let by_id: HashMap<&str, &Exported> = ids
                .iter()
                .map(String::as_str)
                .zip(exported.items.iter())
                .collect();
            for (id, sender) in readers {
                let answer = match by_id.get(id.as_str()) {
                    Some(entry) => Ok(((*entry).clone(), held.clone())),
                    None => Err(GraphError::new(
                        "exporting an item",
                        ErrorKind::InvalidResponse("the answer left out an item".into()),
                    )),
                };
                let _ = sender.send(answer);
            }
        }
        Err(error) => {
            for (_, sender) in readers {
                let _ = sender.send(Err(error.clone()));
            }
        }
    }
}

/// The mailbox id in the per-item archive redirect's message, which names the right mailbox's
/// `exportItems` URL: `.../mailboxes/{id}/exportItems`.
fn archive_mailbox(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("/mailboxes/")?;
    let (segment, _) = rest.split_once('/')?;
    let id = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?;
    match MailboxRef::parse(&id) {
        Ok(MailboxRef::Id(id)) => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_mailbox_is_read_from_the_redirect_message() {
        assert_eq!(
            archive_mailbox("Use https://graph.microsoft.com/v1.0/admin/exchange/mailboxes/MBX:e0643f21@a7809c93/exportItems").as_deref(),
            Some("MBX:e0643f21@a7809c93")
        );
        assert_eq!(
            archive_mailbox("https://x/mailboxes/MBX%3Ae0643f21%40a7809c93/exportItems").as_deref(),
            Some("MBX:e0643f21@a7809c93")
        );
        assert_eq!(archive_mailbox("moved to /mailboxes/../exportItems"), None);
        assert_eq!(archive_mailbox("no url here"), None);
    }
}
