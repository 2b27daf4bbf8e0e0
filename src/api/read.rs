//! The read and delete routes: one item's raw stream, a folder's items page by page, Graph's own
//! `exportItems` shape, and deleting an item. The folder export as a tar stream is in [`super::export`].
//!
//! Each handler checks its input and the client's rights before the first Graph call, like the import
//! routes, and every answer after that check leaves an audit line.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::input::{if_match_change_key, read_body, require_content_type, BodyLimits};
use super::items::encode_segment;
use super::{audit, authorize, ApiError};
use crate::access::{Client, Operation};
use crate::app::AppState;
use crate::budget::Reservation;
use crate::graph::{
    decode_page_token, Disposal, ErrorKind, Exported, GraphError, ItemSummary, PageQuery,
    MAX_EXPORT_IDS,
};
use crate::ids::{check_exchange_id, FolderRef, MailboxRef};

/// Items per page when the client does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The most items per page a client may ask for.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Largest `exportItems` request body: 20 ids of the longest accepted length, and room for JSON.
const EXPORT_ITEMS_BODY_BYTES: u64 = 64 * 1024;

/// `GET /v1/mailboxes/{mailbox}/folders/{folder}/items/{itemId}`: the item's raw stream, its change key
/// as `ETag`. With `If-None-Match` naming the current change key, `304` and no body.
pub async fn get_item(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (mailbox, folder, item_id) = item_path(path)?;
    authorize(&state, &client, &mailbox, Operation::Read)?;
    let if_none_match = if_none_match_change_key(&headers)?;
    let context = super::graph_context(&state, &client);
    let outcome = async {
        let mailbox_id = state.graph.resolve_mailbox(&mailbox, &context).await?;
        if let Some(seen) = &if_none_match {
            // The metadata answers whether the client's copy is current without moving the item's bytes.
            let folder_id = state
                .graph
                .resolve_folder(&mailbox_id, &folder, &context)
                .await?;
            let current = state
                .graph
                .item(&mailbox_id, &folder_id, &item_id, &context)
                .await?;
            if &current.change_key == seen {
                return Ok(Read::NotModified(current.change_key));
            }
        }
        let (item, held) = state
            .graph
            .export_one(&mailbox_id, &item_id, &state.budget, &client.name, &context)
            .await?;
        Ok::<_, ApiError>(Read::Item(item.change_key, item.data, held))
    }
    .await;
    let (status, bytes) = match &outcome {
        Ok(Read::Item(_, data, _)) => (StatusCode::OK, data.len()),
        Ok(Read::NotModified(_)) => (StatusCode::NOT_MODIFIED, 0),
        Err(error) => (error.status(), 0),
    };
    record_read(
        &state,
        &audit::ReadEvent {
            client: &client,
            operation: "get",
            mailbox: &mailbox,
            folder: Some(&folder),
            item_ids: std::slice::from_ref(&item_id),
            items: usize::from(status == StatusCode::OK),
            bytes,
            status,
            code: outcome.as_ref().err().map(ApiError::code),
        },
    );
    let mut response = match outcome? {
        Read::NotModified(change_key) => {
            with_etag(StatusCode::NOT_MODIFIED.into_response(), &change_key)
        }
        Read::Item(change_key, data, held) => {
            let length = data.len();
            let mut response = Response::new(Body::new(HeldBody {
                data: Some(data),
                _held: held,
            }));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            with_etag(response, &change_key)
        }
    };
    response.extensions_mut().insert(audit::Audited);
    Ok(response)
}

/// Writes a read's audit line and counts it in the metrics, under the same operation and outcome.
pub(super) fn record_read(state: &AppState, event: &audit::ReadEvent<'_>) {
    audit::read(event);
    state
        .metrics
        .item_read(event.operation, event.code.unwrap_or("ok"));
}

/// The mailbox, folder and item id of an item's path, each checked.
fn item_path(
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<(MailboxRef, FolderRef, String), ApiError> {
    let Path((mailbox, folder, item_id)) = path?;
    let mailbox = MailboxRef::parse(&mailbox).map_err(ApiError::InvalidMailbox)?;
    let folder = FolderRef::parse(&folder).map_err(ApiError::InvalidFolder)?;
    check_exchange_id(&item_id, "item").map_err(ApiError::InvalidItemId)?;
    Ok((mailbox, folder, item_id))
}

/// What a single-item read found.
enum Read {
    Item(String, Bytes, Arc<Reservation>),
    NotModified(String),
}

/// The query of a folder listing.
#[derive(Debug, PartialEq, Eq)]
struct ListQuery {
    page_size: u32,
    created_after: Option<String>,
    page_token: Option<String>,
}

impl ListQuery {
    /// Reads `pageSize`, `createdAfter` and `pageToken`; anything else is refused, so a typo is not
    /// silently ignored.
    fn parse(query: Option<&str>) -> Result<ListQuery, ApiError> {
        let mut parsed = ListQuery {
            page_size: DEFAULT_PAGE_SIZE,
            created_after: None,
            page_token: None,
        };
        let (mut sized, mut seen) = (false, std::collections::HashSet::new());
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if !seen.insert(key.clone()) {
                return Err(ApiError::InvalidQuery(format!("{key} is given twice")));
            }
            match key.as_ref() {
                "pageSize" => {
                    sized = true;
                    parsed.page_size = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                        .ok_or_else(|| {
                            ApiError::InvalidQuery(format!(
                                "pageSize must be a whole number from 1 to {MAX_PAGE_SIZE}, not {value:?}"
                            ))
                        })?;
                }
                "createdAfter" => {
                    let at = chrono::DateTime::parse_from_rfc3339(&value).map_err(|_| {
                        ApiError::InvalidQuery(format!(
                            "createdAfter must be an RFC 3339 date and time such as \
                             2026-12-01T10:00:00Z, not {value:?}"
                        ))
                    })?;
                    parsed.created_after = Some(
                        at.with_timezone(&chrono::Utc)
                            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    );
                }
                "pageToken" => {
                    decode_page_token(&value).map_err(|_| ApiError::InvalidPageToken)?;
                    parsed.page_token = Some(value.into_owned());
                }
                other => {
                    return Err(ApiError::InvalidQuery(format!(
                    "unknown query parameter {other:?} (this route takes pageSize, createdAfter \
                         and pageToken)"
                )))
                }
            }
        }
        if parsed.page_token.is_some() && (sized || parsed.created_after.is_some()) {
            return Err(ApiError::InvalidQuery(
                "pageToken carries the listing's pageSize and createdAfter; send it alone, as \
                 nextLink does"
                    .into(),
            ));
        }
        Ok(parsed)
    }
}

/// One page of a listing, as the client sees it.
#[derive(Serialize)]
struct ListPage {
    value: Vec<ItemSummary>,
    #[serde(rename = "nextLink", skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
}

/// `GET /v1/mailboxes/{mailbox}/folders/{folder}/items`: one page of the folder's items; `nextLink`
/// fetches the next, one Graph page per gateway page.
pub async fn list_items(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let Path((mailbox_text, folder_text)) = path?;
    let mailbox = MailboxRef::parse(&mailbox_text).map_err(ApiError::InvalidMailbox)?;
    let folder = FolderRef::parse(&folder_text).map_err(ApiError::InvalidFolder)?;
    authorize(&state, &client, &mailbox, Operation::Read)?;
    let query = ListQuery::parse(query.as_deref())?;
    let context = super::graph_context(&state, &client);
    let outcome = async {
        let (mailbox_id, folder_id) = super::resolve(&state, &mailbox, &folder, &context).await?;
        let page = state
            .graph
            .list_items(
                &mailbox_id,
                &folder_id,
                &PageQuery {
                    page_size: query.page_size,
                    created_after: query.created_after.clone(),
                    token: query.page_token.clone(),
                },
                &context,
            )
            .await?;
        Ok::<_, ApiError>(ListPage {
            value: page.items,
            next_link: page.next.map(|token| {
                format!(
                    "/v1/mailboxes/{}/folders/{}/items?pageToken={token}",
                    encode_segment(&mailbox.to_string()),
                    encode_segment(&folder.to_string()),
                )
            }),
        })
    }
    .await;
    let status = outcome
        .as_ref()
        .map_or_else(ApiError::status, |_| StatusCode::OK);
    record_read(
        &state,
        &audit::ReadEvent {
            client: &client,
            operation: "list",
            mailbox: &mailbox,
            folder: Some(&folder),
            item_ids: &[],
            items: outcome.as_ref().map_or(0, |page| page.value.len()),
            bytes: 0,
            status,
            code: outcome.as_ref().err().map(ApiError::code),
        },
    );
    let mut response = Json(outcome?).into_response();
    response.extensions_mut().insert(audit::Audited);
    Ok(response)
}

/// `DELETE /v1/mailboxes/{mailbox}/folders/{folder}/items/{itemId}[?disposal=soft|hard]`: `204`.
/// With `If-Match`, only while the item's change key is the one named.
pub async fn delete_item(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (mailbox, folder, item_id) = item_path(path)?;
    authorize(&state, &client, &mailbox, Operation::Delete)?;
    let disposal = parse_disposal(query.as_deref())?;
    let expected = match headers.contains_key(header::IF_MATCH) {
        true => Some(if_match_change_key(&headers)?),
        false => None,
    };
    let context = super::graph_context(&state, &client);
    let outcome = async {
        let (mailbox_id, folder_id) = super::resolve(&state, &mailbox, &folder, &context).await?;
        if let Some(expected) = &expected {
            let current = state
                .graph
                .item(&mailbox_id, &folder_id, &item_id, &context)
                .await?;
            if &current.change_key != expected {
                return Err(ApiError::from(GraphError::new(
                    format!("deleting an item of {mailbox_id}"),
                    ErrorKind::ChangeKeyMismatch,
                )));
            }
        }
        state
            .graph
            .delete_item(&mailbox_id, &folder_id, &item_id, disposal, &context)
            .await?;
        Ok(())
    }
    .await;
    let status = outcome
        .as_ref()
        .map_or_else(ApiError::status, |()| StatusCode::NO_CONTENT);
    audit::delete(
        &client,
        &mailbox,
        &folder,
        &item_id,
        disposal,
        status,
        outcome.as_ref().err().map(ApiError::code),
    );
    state.metrics.item_read(
        "delete",
        outcome.as_ref().map_or_else(ApiError::code, |()| "ok"),
    );
    outcome?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.extensions_mut().insert(audit::Audited);
    Ok(response)
}

/// `disposal=soft|hard`, soft when absent.
fn parse_disposal(query: Option<&str>) -> Result<Disposal, ApiError> {
    let mut disposal = Disposal::Soft;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        disposal = match (key.as_ref(), value.as_ref()) {
            ("disposal", "soft") => Disposal::Soft,
            ("disposal", "hard") => Disposal::Hard,
            ("disposal", other) => {
                return Err(ApiError::InvalidQuery(format!(
                "disposal must be soft (to Recoverable Items, the default) or hard, not {other:?}"
            )))
            }
            (other, _) => {
                return Err(ApiError::InvalidQuery(format!(
                    "unknown query parameter {other:?} (this route takes disposal=soft|hard)"
                )))
            }
        };
    }
    Ok(disposal)
}

/// Graph's `exportItems` request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExportItemsBody {
    item_ids: Vec<String>,
}

/// Writes one entry of the `exportItems` answer in Graph's shape: `{"itemId","changeKey","data"}` with
/// the base64 encoded straight into the answer, or `{"itemId","error":{"code","message"}}`.
fn write_entry(out: &mut Vec<u8>, entry: Exported, items: &mut usize, bytes: &mut usize) {
    let string = |out: &mut Vec<u8>, text: &str| {
        serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail")
    };
    out.extend_from_slice(b"{\"itemId\":");
    match entry {
        Exported::Item(item) => {
            string(out, &item.item_id);
            out.extend_from_slice(b",\"changeKey\":");
            string(out, &item.change_key);
            out.extend_from_slice(b",\"data\":\"");
            let start = out.len();
            out.resize(
                start + base64_simd::STANDARD.encoded_length(item.data.len()),
                0,
            );
            let written = base64_simd::STANDARD
                .encode(&item.data, base64_simd::Out::from_slice(&mut out[start..]))
                .len();
            debug_assert_eq!(start + written, out.len());
            out.extend_from_slice(b"\"}");
            *items += 1;
            *bytes += item.data.len();
        }
        Exported::Failed {
            item_id,
            code,
            message,
        } => {
            string(out, &item_id);
            out.extend_from_slice(b",\"error\":");
            serde_json::to_writer(&mut *out, &json!({ "code": code, "message": message }))
                .expect("writing to a Vec cannot fail");
            out.push(b'}');
        }
    }
}

/// `POST /v1/mailboxes/{mailbox}/exportItems`: Graph's own request and answer, base64 `data` and
/// per-item errors inside the `200`, for appliances that already speak Graph.
pub async fn export_items_json(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(mailbox) = path?;
    let mailbox = MailboxRef::parse(&mailbox).map_err(ApiError::InvalidMailbox)?;
    authorize(&state, &client, &mailbox, Operation::Read)?;
    require_content_type(&headers, "application/json")?;
    let limits = BodyLimits {
        item_limit: EXPORT_ITEMS_BODY_BYTES,
        ..BodyLimits::new(&state, &client.name, EXPORT_ITEMS_BODY_BYTES)
    };
    let (raw, _reserved) = read_body(&headers, body, limits).await?;
    let request: ExportItemsBody = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::InvalidBody(format!("the body must be {{\"itemIds\": [\"...\"]}} ({e})"))
    })?;
    if request.item_ids.is_empty() || request.item_ids.len() > MAX_EXPORT_IDS {
        return Err(ApiError::InvalidBody(format!(
            "itemIds must hold 1 to {MAX_EXPORT_IDS} ids, as Graph's exportItems takes; it holds {}",
            request.item_ids.len()
        )));
    }
    for id in &request.item_ids {
        check_exchange_id(id, "item").map_err(ApiError::InvalidItemId)?;
    }
    let context = super::graph_context(&state, &client);
    let outcome = async {
        let mailbox_id = state.graph.resolve_mailbox(&mailbox, &context).await?;
        let mut batch = state
            .graph
            .export_items(
                &mailbox_id,
                &request.item_ids,
                &state.budget,
                &client.name,
                &context,
            )
            .await?;
        // The answer is written once, straight from the decoded items (each dropped once written), so
        // the item exists twice only as raw bytes and its base64: reserve the base64 too.
        let encoded: usize = batch
            .items
            .iter()
            .map(|entry| match entry {
                Exported::Item(item) => base64_simd::STANDARD.encoded_length(item.data.len()),
                Exported::Failed { .. } => 0,
            })
            .sum();
        let envelope = 256 * batch.items.len() + 16;
        super::input::reserve(&state.budget, &mut batch.held, encoded + envelope).await?;
        let (mut items, mut bytes) = (0, 0);
        let mut body = Vec::with_capacity(encoded + envelope);
        body.extend_from_slice(b"{\"value\":[");
        for (index, entry) in batch.items.drain(..).enumerate() {
            if index > 0 {
                body.push(b',');
            }
            write_entry(&mut body, entry, &mut items, &mut bytes);
        }
        body.extend_from_slice(b"]}");
        Ok::<_, ApiError>((body, items, bytes, batch.held))
    }
    .await;
    let status = outcome
        .as_ref()
        .map_or_else(ApiError::status, |_| StatusCode::OK);
    let (items, bytes) = outcome
        .as_ref()
        .map_or((0, 0), |(_, items, bytes, _)| (*items, *bytes));
    record_read(
        &state,
        &audit::ReadEvent {
            client: &client,
            operation: "export_items",
            mailbox: &mailbox,
            folder: None,
            item_ids: &request.item_ids,
            items,
            bytes,
            status,
            code: outcome.as_ref().err().map(ApiError::code),
        },
    );
    let (body, _, _, held) = outcome?;
    let mut response = Response::new(Body::new(HeldBody {
        data: Some(Bytes::from(body)),
        _held: Arc::new(held),
    }));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.extensions_mut().insert(audit::Audited);
    Ok(response)
}

/// `If-None-Match: "<changeKey>"`, when sent.
fn if_none_match_change_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(header::IF_NONE_MATCH) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .ok()
        .map(str::trim)
        .and_then(|v| v.strip_prefix("W/").or(Some(v)))
        .and_then(|v| v.strip_prefix('"')?.strip_suffix('"'))
        .filter(|v| check_exchange_id(v, "change key").is_ok())
        .ok_or(ApiError::InvalidIfNoneMatch)?;
    Ok(Some(value.to_owned()))
}

fn with_etag(mut response: Response, change_key: &str) -> Response {
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{change_key}\"")) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// A response body that keeps its bytes' share of the memory budget until it has been sent or dropped.
struct HeldBody {
    data: Option<Bytes>,
    _held: Arc<Reservation>,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(
            self.data
                .take()
                .map(|data| Ok(http_body::Frame::data(data))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries_are_read_strictly() {
        assert_eq!(
            ListQuery::parse(None).unwrap(),
            ListQuery {
                page_size: DEFAULT_PAGE_SIZE,
                created_after: None,
                page_token: None
            }
        );
        let parsed = ListQuery::parse(Some(
            "pageSize=5&createdAfter=2026-12-01T11%3A00%3A00%2B01%3A00",
        ))
        .unwrap();
        assert_eq!(parsed.page_size, 5);
        assert_eq!(
            parsed.created_after.as_deref(),
            Some("2026-12-01T10:00:00Z")
        );
        for bad in [
            "pageSize=0",
            "pageSize=1001",
            "pageSize=ten",
            "createdAfter=yesterday",
            "top=5",
            "pageSize=5&pageSize=6",
            "pageToken=%21%21",
        ] {
            assert!(ListQuery::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn disposal_is_soft_unless_hard_is_asked() {
        assert_eq!(parse_disposal(None).unwrap(), Disposal::Soft);
        assert_eq!(
            parse_disposal(Some("disposal=hard")).unwrap(),
            Disposal::Hard
        );
        assert!(parse_disposal(Some("disposal=shred")).is_err());
        assert!(parse_disposal(Some("disposalType=hardDelete")).is_err());
    }
}
