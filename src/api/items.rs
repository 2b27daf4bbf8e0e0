//! The import routes: create and update from a raw item stream, and Graph's own JSON shape.
//!
//! Each route checks its input locally, then hands one [`ImportCommand`] to [`run`]. There the client's
//! `Idempotency-Key`, when it sent one, is claimed, and the import runs as a task of its own: a client that
//! hangs up does not cancel an import that may already be under way upstream, and its outcome is kept
//! under the key for the client's retry.

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use http_body_util::BodyExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::input::{
    idempotency_key, if_match_change_key, read_body, require_content_type, reserve, BodyLimits,
};
use super::request_id::carry_request_id;
use super::{authorize, ApiError};
use crate::access::{Client, Operation};
use crate::app::AppState;
use crate::budget::Reservation;
use crate::graph::{CallContext, ErrorKind, GraphError, ImportMode, ImportRequest, ImportedItem};
use crate::idempotency::{Claim, Claimed, Fingerprint, StoredResponse};
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
enum Route {
    Create,
    Update,
    GraphJson,
}

/// One import, checked and ready to run.
#[derive(Debug)]
struct ImportCommand {
    client: Client,
    route: Route,
    mailbox: MailboxRef,
    folder: FolderRef,
    mode: ImportMode,
    data: Bytes,
    /// The item's bytes in the memory budget, given back when the import has been answered.
    _reserved: Reservation,
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
    let (data, reserved) = read_item_stream(&state, &headers, body).await?;
    let command = ImportCommand {
        client,
        route: Route::Create,
        mailbox,
        folder,
        mode: ImportMode::Create,
        data,
        _reserved: reserved,
    };
    run(state, key, command).await
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
    let (data, reserved) = read_item_stream(&state, &headers, body).await?;
    let command = ImportCommand {
        client,
        route: Route::Update,
        mailbox,
        folder,
        mode: ImportMode::Update {
            item_id,
            change_key,
        },
        data,
        _reserved: reserved,
    };
    run(state, key, command).await
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
        BodyLimits {
            limit: json_limit,
            item_limit: state.max_item_bytes,
            idle: state.client_body_timeout,
            budget: &state.budget,
        },
    )
    .await?;
    let request: GraphImportBody = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::InvalidBody(format!("the body is not an importItem request: {e}"))
    })?;
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
        .map_err(|e| ApiError::InvalidBase64(e.to_string()))?;
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
        data: Bytes::from(data),
        _reserved: reserved,
    };
    run(state, key, command).await
}

/// Claims the idempotency key (replaying or refusing where it says so), then runs the import as a task
/// of its own and answers with its outcome.
async fn run(
    state: AppState,
    key: Option<String>,
    command: ImportCommand,
) -> Result<Response, ApiError> {
    // The item's SHA-256 is for the audit line and the idempotency fingerprint; at about 0.58 ms per MiB
    // it is the gateway's largest cost per byte, so it is only computed when one of them needs it.
    let digest = if state.audit_digest || key.is_some() {
        Some(sha256(&command.data).await)
    } else {
        None
    };
    let claimed = match key {
        None => None,
        Some(key) => {
            let fingerprint = command.fingerprint(&digest.expect("computed when a key is present"));
            match claim(&state, &command.client.name, &key, fingerprint).await? {
                Ok(claimed) => Some(claimed),
                Err(stored) => {
                    tracing::info!(idempotency_key = %key, "replaying the stored response");
                    let mut response = into_response(stored);
                    response
                        .headers_mut()
                        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                    return Ok(response);
                }
            }
        }
    };
    // Detached from this handler: if the client hangs up, this future is dropped but the task runs on,
    // and the shutdown sequence waits for it (`AppState::tasks`).
    // Boxed where it is made: the wrappers and the spawn then move a pointer, not the whole state
    // machine (kilobytes, copied once per wrapper: a visible share of the 4 KiB profile's memmove).
    let import = Box::pin(import_and_answer(state.clone(), command, digest, claimed));
    let task = state
        .tasks
        .spawn(carry_request_id(import).instrument(tracing::Span::current()));
    task.await.map_err(|_| ApiError::Internal)
}

/// Claims the client's key: `Ok` to run the request under it, `Err` with the stored response to replay.
/// A request with the key still running elsewhere is waited for as long as an import may retry; a key
/// whose replica vanished mid-import is settled as `outcome_unknown`.
async fn claim(
    state: &AppState,
    client: &str,
    key: &str,
    fingerprint: Fingerprint,
) -> Result<Result<Claimed, StoredResponse>, ApiError> {
    let store = &state.idempotency;
    let claim = store
        .claim(client, key, fingerprint, state.retry.budget)
        .await
        .map_err(ApiError::SharedStateUnavailable)?;
    let claim = match claim {
        Claim::Abandoned => {
            let unknown = ApiError::from(GraphError::new(
                "importing the item on a gateway replica that stopped during the import",
                ErrorKind::OutcomeUnknown { timed_out: false },
            ));
            let unknown = stored_response(unknown.into_response()).await;
            store
                .settle_abandoned(client, key, fingerprint, unknown)
                .await
                .map_err(ApiError::SharedStateUnavailable)?
        }
        claim => claim,
    };
    match claim {
        Claim::Run(claimed) => Ok(Ok(claimed)),
        Claim::Replay(stored) => Ok(Err(stored)),
        Claim::Conflict => Err(ApiError::IdempotencyKeyReused),
        Claim::InFlight | Claim::Abandoned => Err(ApiError::IdempotencyKeyInFlight),
    }
}

/// Items larger than this are hashed on the blocking pool.
const HASH_INLINE_BYTES: usize = 1024 * 1024;

/// The item's SHA-256. A large item is hashed on tokio's blocking pool: a worker thread serves many
/// connections on its single-threaded runtime, and hashing 100 MiB inline would hold all of them up for
/// about 60 ms; up to 1 MiB (0.6 ms) the hand-over would cost more than it saves.
async fn sha256(data: &Bytes) -> [u8; 32] {
    if data.len() <= HASH_INLINE_BYTES {
        return Sha256::digest(data).into();
    }
    let shared = data.clone();
    match tokio::task::spawn_blocking(move || Sha256::digest(&shared).into()).await {
        Ok(digest) => digest,
        // The runtime is shutting down and cancelled it: hash here.
        Err(_) => Sha256::digest(data).into(),
    }
}

/// Imports, audits, renders the outcome as a response, and settles the idempotency key with it.
async fn import_and_answer(
    state: AppState,
    command: ImportCommand,
    digest: Option<[u8; 32]>,
    claimed: Option<Claimed>,
) -> Response {
    let _in_flight = state.metrics.bytes_in_flight(command.data.len());
    let outcome = import(&state, &command).await;
    let (status, code) = match &outcome {
        Ok(_) => (command.success_status(), None),
        Err(error) => (error.status(), Some(error.code())),
    };
    audit(&command, digest.as_ref(), &outcome, status);
    state.metrics.import_finished(
        command.mode_name(),
        code.unwrap_or("ok"),
        command.data.len(),
    );
    // A retry must get the same answer, unless this one provably did nothing and may go better.
    let settles = match &outcome {
        Ok(_) => true,
        Err(error) => error.is_settled(),
    };
    let response = match outcome {
        Ok((_, item)) => command.success(item),
        Err(error) => error.into_response(),
    };
    let Some(claimed) = claimed else {
        return response;
    };
    let stored = stored_response(response).await;
    if settles {
        claimed.complete(stored.clone()).await;
    } else {
        claimed.release().await;
    }
    into_response(stored)
}

/// Resolves the mailbox and folder (cached after the first time) and imports the item; returns the
/// mailbox id it went to and Exchange's answer.
async fn import(
    state: &AppState,
    command: &ImportCommand,
) -> Result<(String, ImportedItem), ApiError> {
    let context = CallContext::new(super::request_id::graph_client_request_id(), state.retry);
    let mailbox_id = state
        .graph
        .resolve_mailbox(&command.mailbox, &context)
        .await?;
    let folder_id = state
        .graph
        .resolve_folder(&mailbox_id, &command.folder, &context)
        .await?;
    let request = ImportRequest {
        folder_id,
        mode: command.mode.clone(),
        data: command.data.clone(),
    };
    let item = state
        .graph
        .import_item(&mailbox_id, &request, &context)
        .await?;
    // Debug, not info: the audit stream has a line for every import already.
    tracing::debug!(mailbox = %mailbox_id, folder = %request.folder_id, size = request.data.len(), item_id = %item.item_id, "imported an item");
    Ok((mailbox_id, item))
}

/// One audit event per import, on the `audit` target, which the binary writes apart from the debug log
/// (one JSON object per line). It names the client, the mailbox and folder, the mode, the item's size
/// and SHA-256 (unless `MAILBOX_GATEWAY_AUDIT_DIGEST=off`), the outcome, and the ids to find the request
/// again here and at Microsoft.
fn audit(
    command: &ImportCommand,
    digest: Option<&[u8; 32]>,
    outcome: &Result<(String, ImportedItem), ApiError>,
    status: StatusCode,
) {
    let (mailbox_id, item_id, code, graph_request_id) = match outcome {
        Ok((mailbox_id, item)) => (
            Some(mailbox_id.as_str()),
            Some(item.item_id.as_str()),
            None,
            None,
        ),
        Err(error) => (None, None, Some(error.code()), error.graph_request_id()),
    };
    tracing::info!(
        target: "audit",
        client = %command.client.name,
        mailbox = %command.mailbox,
        mailbox_id,
        folder = %command.folder,
        mode = command.mode_name(),
        size = command.data.len(),
        sha256 = digest.map(|d| tracing::field::display(Hex(d))),
        status = status.as_u16(),
        code,
        item_id,
        request_id = %super::request_id::current_request_id(),
        client_request_id = %super::request_id::graph_client_request_id(),
        graph_request_id = graph_request_id.as_deref(),
        "import"
    );
}

/// Lower-case hex, written straight into the log line.
struct Hex<'a>(&'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl ImportCommand {
    fn mode_name(&self) -> &'static str {
        match self.mode {
            ImportMode::Create => "create",
            ImportMode::Update { .. } => "update",
        }
    }

    /// `201` for a create, else `200`.
    fn success_status(&self) -> StatusCode {
        if self.route == Route::Create {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        }
    }

    /// The success response of the route: `201` with `Location` for a create, else `200`; always the
    /// change key as `ETag`.
    fn success(&self, item: ImportedItem) -> Response {
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
    fn fingerprint(&self, digest: &[u8; 32]) -> Fingerprint {
        let mut hash = Sha256::new();
        let (mode, item_id, change_key) = match &self.mode {
            ImportMode::Create => ("create", "", ""),
            ImportMode::Update {
                item_id,
                change_key,
            } => ("update", item_id.as_str(), change_key.as_str()),
        };
        let route = format!("{:?}", self.route);
        for part in [
            route.as_str(),
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
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Reservation), ApiError> {
    require_content_type(headers, "application/octet-stream")?;
    let (data, reserved) = read_body(
        headers,
        body,
        BodyLimits {
            limit: state.max_item_bytes,
            item_limit: state.max_item_bytes,
            idle: state.client_body_timeout,
            budget: &state.budget,
        },
    )
    .await?;
    crate::fts::check(&data).map_err(ApiError::InvalidItemStream)?;
    Ok((data, reserved))
}

/// A response as a value that can be stored and replayed. Our responses have small, complete bodies.
async fn stored_response(response: Response) -> StoredResponse {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| *name != header::CONTENT_LENGTH)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    StoredResponse {
        status: parts.status,
        headers,
        body,
    }
}

fn into_response(stored: StoredResponse) -> Response {
    let mut response = (stored.status, stored.body).into_response();
    let headers = response.headers_mut();
    for (name, value) in stored.headers {
        headers.insert::<HeaderName>(name, value);
    }
    response
}

fn encode_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_and_large_items_hash_alike_inline_or_on_the_blocking_pool() {
        for len in [
            0,
            1000,
            HASH_INLINE_BYTES,
            HASH_INLINE_BYTES + 1,
            3 * HASH_INLINE_BYTES,
        ] {
            let data = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
            let expected: [u8; 32] = Sha256::digest(&data).into();
            assert_eq!(sha256(&data).await, expected, "{len} bytes");
        }
    }
}
