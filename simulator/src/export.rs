//! Plays Graph's `exportItems` action: up to 20 items of one mailbox per request, each answered
//! with its stream in base64 (exactly the bytes stored) or with an error of its own inside the `200`.
//!
//! Per item, in the order asked (duplicates answered each time):
//!
//! - `{"itemId", "changeKey", "data"}` for an item of the mailbox, in whatever folder;
//! - `ErrorInvalidIdMalformed` for an id that is not base64, as no Exchange id is;
//! - `ErrorArchiveFolderMovedPermanently`, whose `message` is the archive's own `exportItems` URL,
//!   for an item of the mailbox's auto-expanded archive ([`Simulator::add_archive`](super::Simulator::add_archive));
//! - `ErrorItemCorrupt` for an item imported in sink mode, whose data the simulator did not keep:
//!   an error rather than wrong bytes;
//! - `ErrorItemNotFound` otherwise.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Extension;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::graph::{graph_json, unknown_mailbox, GraphContext, GraphError, GraphResult};
use super::state::{Mailbox, Shared};

/// The most item ids one request may name (docs/upstream.md section 4).
const MAX_ITEM_IDS: usize = 20;

/// The documented body, and nothing else: unknown parameters are refused, names are case-sensitive
/// (as OData's are).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportBody {
    #[serde(rename = "itemIds")]
    item_ids: Option<Vec<String>>,
}

/// The answer for one item id, read under the lock and written out after it.
enum Entry {
    Data {
        item_id: String,
        change_key: String,
        data: Bytes,
    },
    Error {
        item_id: String,
        code: &'static str,
        message: String,
    },
}

/// `POST /admin/exchange/mailboxes/{mailboxId}/exportItems`.
pub(crate) async fn export_items(
    State(shared): State<Arc<Shared>>,
    Extension(context): Extension<GraphContext>,
    Path(mailbox_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> GraphResult {
    check_json(&context, &headers)?;
    let item_ids = parse_body(&context, &body)?;
    let graph_url = shared.graph_url();
    let entries = {
        let mut inner = shared.lock();
        let batch = &mut inner.counters.max_export_batch;
        *batch = (*batch).max(item_ids.len());
        if item_ids.is_empty() || item_ids.len() > MAX_ITEM_IDS {
            return Err(invalid_request(
                &context,
                format!(
                    "itemIds must name 1 to {MAX_ITEM_IDS} items; it names {}.",
                    item_ids.len()
                ),
            ));
        }
        let mailbox = inner
            .mailbox(&mailbox_id)
            .ok_or_else(|| unknown_mailbox(&context, &mailbox_id))?;
        let archive = inner
            .mailboxes
            .iter()
            .find(|m| m.archive_of.as_deref() == Some(mailbox_id.as_str()));
        let entries: Vec<Entry> = item_ids
            .into_iter()
            .map(|item_id| entry(mailbox, archive, item_id, &graph_url))
            .collect();
        let exported = entries
            .iter()
            .filter(|e| matches!(e, Entry::Data { .. }))
            .count() as u64;
        inner.counters.items_exported += exported;
        inner.counters.export_item_errors += entries.len() as u64 - exported;
        entries
    };
    // The base64 is written after the lock is released: items may be large.
    let value: Vec<Value> = entries
        .into_iter()
        .map(|entry| match entry {
            Entry::Data {
                item_id,
                change_key,
                data,
            } => json!({
                "itemId": item_id,
                "changeKey": change_key,
                "data": STANDARD.encode(&data),
            }),
            Entry::Error {
                item_id,
                code,
                message,
            } => json!({
                "itemId": item_id,
                "error": { "code": code, "message": message },
            }),
        })
        .collect();
    let body = json!({
        "@odata.context": format!("{graph_url}/$metadata#Collection(microsoft.graph.exportItemResponse)"),
        "value": value,
    });
    Ok(graph_json(StatusCode::OK, &body))
}

/// The answer for `item_id`, looked up in `mailbox` and then in its archive, if it has one.
fn entry(mailbox: &Mailbox, archive: Option<&Mailbox>, item_id: String, graph_url: &str) -> Entry {
    let error = |code, message: String| Entry::Error {
        item_id: item_id.clone(),
        code,
        message,
    };
    if let Some(item) = mailbox.item_index(&item_id).map(|i| &mailbox.items[i]) {
        // A well-formed stream is never empty: empty data was dropped in sink mode.
        if item.data.is_empty() {
            return error(
                "ErrorItemCorrupt",
                "The simulator kept only a digest of this item (it was imported in sink mode), so it cannot export it.".to_owned(),
            );
        }
        return Entry::Data {
            change_key: item.change_key.clone(),
            data: item.data.clone(),
            item_id,
        };
    }
    if item_id.is_empty() || STANDARD.decode(&item_id).is_err() {
        return error("ErrorInvalidIdMalformed", "Id is malformed.".to_owned());
    }
    if let Some(archive) = archive.filter(|a| a.item_index(&item_id).is_some()) {
        // The mailbox id goes into the URL raw, as into import URLs.
        return error(
            "ErrorArchiveFolderMovedPermanently",
            format!(
                "{graph_url}/admin/exchange/mailboxes/{}/exportItems",
                archive.id
            ),
        );
    }
    error(
        "ErrorItemNotFound",
        "The specified object was not found in the store.".to_owned(),
    )
}

/// The body must be JSON, as for every Graph action with parameters.
fn check_json(context: &GraphContext, headers: &HeaderMap) -> Result<(), GraphError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(context.error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "The request Content-Type must be application/json.",
        ))
    }
}

/// The item ids of a well-formed body, however many.
fn parse_body(context: &GraphContext, body: &[u8]) -> Result<Vec<String>, GraphError> {
    let body: ExportBody = serde_json::from_slice(body).map_err(|error| {
        invalid_request(
            context,
            format!("The request body is not a valid exportItems request: {error}."),
        )
    })?;
    body.item_ids
        .ok_or_else(|| invalid_request(context, "The itemIds parameter is required.".to_owned()))
}

fn invalid_request(context: &GraphContext, message: String) -> GraphError {
    context.error(StatusCode::BAD_REQUEST, "ErrorInvalidRequest", message)
}
