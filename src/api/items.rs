//! The import routes' handlers: create and update from a raw item stream, and Graph's own JSON shape.
//!
//! Each route checks its input locally (ids, rights, headers, size, stream), then hands one
//! [`ImportCommand`] to [`super::import_task::run`], which claims the `Idempotency-Key` and runs the
//! import as a task of its own.

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::input::{
    idempotency_key, if_match_change_key, read_body, require_content_type, reserve, BodyLimits,
};
use super::{authorize, ApiError};
use crate::access::{Client, Operation};
use crate::app::AppState;
use crate::budget::Reservation;
use crate::graph::{ImportMode, ImportedItem};
use crate::idempotency::Fingerprint;
use crate::ids::{check_exchange_id, FolderRef, MailboxRef};

/// Response header marking a response replayed for a repeated `Idempotency-Key`.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Characters escaped in a `Location` path segment: all but unreserved ones and those ids use.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@')
    .remove(b':');

/// JSON overhead allowed on top of the base64 of the largest item on the Graph-shaped route.
const JSON_ENVELOPE_BYTES: u64 = 64 * 1024;

/// Which route an import came through; it decides the success response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    Create,
    Update,
    GraphJson,
}

impl Route {
    /// A stable name, part of the idempotency fingerprint.
    fn name(self) -> &'static str {
        match self {
            Route::Create => "create",
            Route::Update => "update",
            Route::GraphJson => "graph-json",
        }
    }
}

/// One import, checked and ready to run.
#[derive(Debug)]
pub(super) struct ImportCommand {
    pub(super) client: Client,
    route: Route,
    pub(super) mailbox: MailboxRef,
    pub(super) folder: FolderRef,
    pub(super) mode: ImportMode,
    pub(super) data: Bytes,
    /// What the item is, for its audit line.
    pub(super) facts: ItemFacts,
    /// The item's bytes in the memory budget, given back when the import has been answered.
    _reserved: Reservation,
}

/// What an item is, as far as its property stream says: for the audit line, never to refuse an item
/// (Exchange judges the properties; the gateway checks only the framing).
#[derive(Debug, Default)]
pub(super) struct ItemFacts {
    /// The message class, such as `IPM.Note`, cut to [`MAX_CLASS_CHARS`].
    pub(super) message_class: Option<String>,
    /// Attachments of the item itself (not of embedded items).
    pub(super) attachments: Option<usize>,
}

/// Longest message class written to an audit line.
const MAX_CLASS_CHARS: usize = 64;

impl ItemFacts {
    fn of(data: &[u8]) -> ItemFacts {
        match crate::fts::summarize(data) {
            Ok(summary) => ItemFacts {
                message_class: summary
                    .message
                    .message_class
                    .map(|class| class.chars().take(MAX_CLASS_CHARS).collect()),
                attachments: Some(summary.message.attachments.len()),
            },
            Err(_) => ItemFacts::default(),
        }
    }
}

/// `POST /v1/mailboxes/{mailbox}/folders/{folder}/items`: creates an item from its raw stream.
pub async fn create_item(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path((mailbox, folder)) = path?;
    let mailbox = MailboxRef::parse(&mailbox).map_err(ApiError::InvalidMailbox)?;
    let folder = FolderRef::parse(&folder).map_err(ApiError::InvalidFolder)?;
    authorize(&state, &client, &mailbox, Operation::Create)?;
    let key = idempotency_key(&headers)?;
    let (data, reserved) = read_item_stream(&state, &client, &headers, body).await?;
    let command = ImportCommand {
        client,
        route: Route::Create,
        mailbox,
        folder,
        mode: ImportMode::Create,
        facts: ItemFacts::of(&data),
        data,
        _reserved: reserved,
    };
    super::import_task::run(state, key, command).await
}

/// `PUT /v1/mailboxes/{mailbox}/folders/{folder}/items/{itemId}`: replaces an item; `If-Match` names the
/// change key the client last saw.
pub async fn update_item(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path((mailbox, folder, item_id)) = path?;
    let mailbox = MailboxRef::parse(&mailbox).map_err(ApiError::InvalidMailbox)?;
    let folder = FolderRef::parse(&folder).map_err(ApiError::InvalidFolder)?;
    check_exchange_id(&item_id, "item").map_err(ApiError::InvalidItemId)?;
    authorize(&state, &client, &mailbox, Operation::Update)?;
    let change_key = if_match_change_key(&headers)?;
    let key = idempotency_key(&headers)?;
    let (data, reserved) = read_item_stream(&state, &client, &headers, body).await?;
    let command = ImportCommand {
        client,
        route: Route::Update,
        mailbox,
        folder,
        mode: ImportMode::Update {
            item_id,
            change_key,
        },
        facts: ItemFacts::of(&data),
        data,
        _reserved: reserved,
    };
    super::import_task::run(state, key, command).await
}

/// Graph's own importItem body, so an appliance that speaks Graph only swaps the URL. `Data` is borrowed
/// from the request body when it holds no JSON escapes, so the base64 text is not copied again.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphImportBody<'a> {
    #[serde(rename = "FolderId")]
    folder_id: String,
    #[serde(rename = "Mode")]
    mode: String,
    #[serde(rename = "Data", borrow)]
    data: Cow<'a, str>,
    #[serde(rename = "ItemId")]
    item_id: Option<String>,
    #[serde(rename = "ChangeKey")]
    change_key: Option<String>,
}

/// `POST /v1/mailboxes/{mailbox}/importItem`: Graph's JSON shape with base64 `Data`.
pub async fn import_item_json(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(mailbox) = path?;
    let mailbox = MailboxRef::parse(&mailbox).map_err(ApiError::InvalidMailbox)?;
    // The mode is in the body; a client allowed neither mode is refused before its body is read.
    if !state.access.allows(&client, &mailbox, Operation::Create) {
        authorize(&state, &client, &mailbox, Operation::Update)?;
    }
    require_content_type(&headers, "application/json")?;
    let key = idempotency_key(&headers)?;
    let json_limit = state.max_item_bytes.div_ceil(3) * 4 + JSON_ENVELOPE_BYTES;
    let (raw, mut reserved) = read_body(
        &headers,
        body,
        BodyLimits::new(&state, &client.name, json_limit),
    )
    .await?;
    // `Data` is borrowed from the body unless it holds a JSON escape (`\/` is common); then the parser
    // makes a copy of it, which is reserved before it exists, like every other copy this route makes.
    if raw.contains(&b'\\') {
        reserve(&state.budget, &mut reserved, raw.len()).await?;
    }
    let request: GraphImportBody = serde_json::from_slice(&raw).map_err(ApiError::InvalidJson)?;
    let folder = FolderRef::parse(&request.folder_id).map_err(ApiError::InvalidFolder)?;
    let mode = match (request.mode.as_str(), request.item_id, request.change_key) {
        ("create", None, None) => ImportMode::Create,
        ("create", _, _) => {
            return Err(ApiError::InvalidBody(
                "Mode create must not carry ItemId or ChangeKey".into(),
            ))
        }
        ("update", Some(item_id), Some(change_key)) => {
            check_exchange_id(&item_id, "item").map_err(ApiError::InvalidItemId)?;
            check_exchange_id(&change_key, "change key").map_err(|e| ApiError::InvalidBody(e.0))?;
            ImportMode::Update {
                item_id,
                change_key,
            }
        }
        ("update", _, _) => {
            return Err(ApiError::InvalidBody(
                "Mode update needs both ItemId and ChangeKey".into(),
            ))
        }
        (other, _, _) => {
            return Err(ApiError::InvalidBody(format!(
                "Mode must be \"create\" or \"update\", not {other:?}"
            )))
        }
    };
    // The decoded item exists beside its base64 for a moment: reserve it too, then give back the JSON.
    let decoded_len = request.data.len() / 4 * 3;
    reserve(&state.budget, &mut reserved, decoded_len).await?;
    let data = base64_simd::STANDARD
        .decode_to_vec(request.data.as_bytes())
        .map_err(|e| {
            if request.data.contains(['\n', '\r']) {
                ApiError::InvalidBase64(
                    "it contains line breaks; send it on one line (for example base64 -w0)".into(),
                )
            } else {
                ApiError::InvalidBase64(e.to_string())
            }
        })?;
    drop(request.data);
    drop(raw);
    reserved.shrink_to(data.len());
    if data.len() as u64 > state.max_item_bytes {
        return Err(ApiError::ItemTooLarge {
            limit: state.max_item_bytes,
        });
    }
    crate::fts::check(&data).map_err(ApiError::InvalidItemStream)?;
    let operation = match mode {
        ImportMode::Create => Operation::Create,
        ImportMode::Update { .. } => Operation::Update,
    };
    authorize(&state, &client, &mailbox, operation)?;
    let command = ImportCommand {
        client,
        route: Route::GraphJson,
        mailbox,
        folder,
        mode,
        facts: ItemFacts::of(&data),
        data: Bytes::from(data),
        _reserved: reserved,
    };
    super::import_task::run(state, key, command).await
}

impl ImportCommand {
    pub(super) fn mode_name(&self) -> &'static str {
        match self.mode {
            ImportMode::Create => "create",
            ImportMode::Update { .. } => "update",
        }
    }

    /// `201` for a create, else `200`.
    pub(super) fn success_status(&self) -> StatusCode {
        if self.route == Route::Create {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        }
    }

    /// The success response of the route: `201` with `Location` for a create, else `200`; always the
    /// change key as `ETag`.
    pub(super) fn success(&self, item: ImportedItem) -> Response {
        let location = (self.route == Route::Create).then(|| {
            format!(
                "/v1/mailboxes/{}/folders/{}/items/{}",
                encode_segment(&self.mailbox.to_string()),
                encode_segment(&self.folder.to_string()),
                encode_segment(&item.item_id),
            )
        });
        let status = self.success_status();
        let etag = HeaderValue::from_str(&format!("\"{}\"", item.change_key));
        let graph_request_id = item
            .graph_request_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok());
        let mut response = (status, Json(item)).into_response();
        let headers = response.headers_mut();
        if let Some(id) = graph_request_id {
            headers.insert(super::error::X_GRAPH_REQUEST_ID, id);
        }
        match etag {
            Ok(etag) => {
                headers.insert(header::ETAG, etag);
            }
            Err(_) => tracing::warn!("the change key is not a valid header value; no ETag sent"),
        }
        if let Some(location) = location {
            headers.insert(
                header::LOCATION,
                HeaderValue::from_str(&location).expect("a percent-encoded path is a valid header"),
            );
        }
        response
    }

    /// What makes two requests the same for an idempotency key: route, mailbox, folder, mode and the
    /// item's SHA-256.
    pub(super) fn fingerprint(&self, digest: &[u8; 32]) -> Fingerprint {
        let mut hash = Sha256::new();
        let (mode, item_id, change_key) = match &self.mode {
            ImportMode::Create => ("create", "", ""),
            ImportMode::Update {
                item_id,
                change_key,
            } => ("update", item_id.as_str(), change_key.as_str()),
        };
        for part in [
            self.route.name(),
            &self.mailbox.to_string(),
            &self.folder.to_string(),
            mode,
            item_id,
            change_key,
        ] {
            // Length-prefixed, so no two different sequences of parts hash alike.
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        hash.update(digest);
        hash.finalize().into()
    }
}

/// Checks the content type, reads the body within the size, pace and memory limits, and walks its frames.
async fn read_item_stream(
    state: &AppState,
    client: &Client,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Reservation), ApiError> {
    require_content_type(headers, "application/octet-stream")?;
    let (data, reserved) = read_body(
        headers,
        body,
        BodyLimits::new(state, &client.name, state.max_item_bytes),
    )
    .await?;
    crate::fts::check(&data).map_err(|error| {
        if looks_like_base64(&data) {
            ApiError::ItemStreamLooksLikeBase64(error)
        } else {
            ApiError::InvalidItemStream(error)
        }
    })?;
    Ok((data, reserved))
}

/// Whether a body that is not an item stream is base64 text (so the client encoded what it should have
/// sent raw): only base64 characters and line breaks, and long enough to tell.
fn looks_like_base64(data: &[u8]) -> bool {
    data.len() >= 16
        && data
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=\r\n".contains(b))
}

/// A path segment, percent-encoded for a `Location` or `nextLink`.
pub(super) fn encode_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}
