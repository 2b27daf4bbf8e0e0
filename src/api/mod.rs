//! The gateway's HTTP API (version 1): routes, request checks and responses.
//!
//! Handlers check everything they can locally (ids, headers, size, the item stream) before the first
//! Graph call, then hand over to [`crate::graph::GraphClient`]. Failures become problem responses in
//! [`error`].

mod error;
mod request_id;

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put, MethodRouter};
use axum::{Json, Router};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use error::{ApiError, Problem};
pub use request_id::X_REQUEST_ID;

use crate::app::AppState;
use crate::graph::{ImportMode, ImportRequest, ImportedItem};
use crate::ids::{check_exchange_id, FolderRef, MailboxRef};
use request_id::{assign_request_id, graph_client_request_id};

/// The OpenAPI description of this API, served at `/openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

const ITEMS: &str = "/v1/mailboxes/{mailbox}/folders/{folder}/items";
const ITEM: &str = "/v1/mailboxes/{mailbox}/folders/{folder}/items/{itemId}";
const IMPORT_ITEM: &str = "/v1/mailboxes/{mailbox}/importItem";
const FOLDERS: &str = "/v1/mailboxes/{mailbox}/folders";

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

/// Every route: method, path and handler. The router is built from this table, and a test checks it
/// against `openapi.yaml` in both directions.
fn routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![
        (Method::POST, ITEMS, post(create_item)),
        (Method::PUT, ITEM, put(update_item)),
        (Method::POST, IMPORT_ITEM, post(import_item_json)),
        (Method::GET, FOLDERS, get(list_folders)),
        (Method::GET, "/healthz", get(healthz)),
        (Method::GET, "/readyz", get(readyz)),
        (Method::GET, "/openapi.yaml", get(openapi)),
    ]
}

/// The method and path of every route, for the OpenAPI conformance test.
pub fn route_table() -> Vec<(Method, &'static str)> {
    routes()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect()
}

/// Assembles every route and layer of the gateway.
pub fn router(state: AppState) -> Router {
    let router = routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        });
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // A panic in a handler becomes a 500 problem for that request instead of a dropped connection;
        // inside the request-id scope, so the problem carries the id.
        .layer(CatchPanicLayer::custom(|panic: Box<dyn std::any::Any + Send>| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %message, "a handler panicked");
            ApiError::Internal.into_response()
        }))
        // One span per request, carrying the request id assigned just outside it.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::extract::Request| {
            let id = request
                .headers()
                .get(X_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
        }))
        // Outermost, so every response, including the fallbacks' and panics', carries the request id.
        .layer(axum::middleware::from_fn(assign_request_id))
}

/// `POST /v1/mailboxes/{mailbox}/folders/{folder}/items`: creates an item from its raw stream.
async fn create_item(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path((mailbox, folder)) = path?;
    let mailbox = MailboxRef::parse(&mailbox).map_err(ApiError::InvalidMailbox)?;
    let folder = FolderRef::parse(&folder).map_err(ApiError::InvalidFolder)?;
    let data = read_item_stream(&headers, body, state.max_item_bytes).await?;
    let item = import(&state, &mailbox, &folder, ImportMode::Create, data).await?;
    let location = format!(
        "/v1/mailboxes/{}/folders/{}/items/{}",
        encode_segment(&mailbox.to_string()),
        encode_segment(&folder.to_string()),
        encode_segment(&item.item_id),
    );
    let mut response = item_response(StatusCode::CREATED, item);
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("percent-encoded path is a valid header"),
    );
    Ok(response)
}

/// `PUT /v1/mailboxes/{mailbox}/folders/{folder}/items/{itemId}`: replaces an item; `If-Match` names the
/// change key the client last saw.
async fn update_item(
    State(state): State<AppState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path((mailbox, folder, item_id)) = path?;
    let mailbox = MailboxRef::parse(&mailbox).map_err(ApiError::InvalidMailbox)?;
    let folder = FolderRef::parse(&folder).map_err(ApiError::InvalidFolder)?;
    check_exchange_id(&item_id, "item").map_err(ApiError::InvalidItemId)?;
    let change_key = if_match_change_key(&headers)?;
    let data = read_item_stream(&headers, body, state.max_item_bytes).await?;
    let mode = ImportMode::Update {
        item_id,
        change_key,
    };
    let item = import(&state, &mailbox, &folder, mode, data).await?;
    Ok(item_response(StatusCode::OK, item))
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
async fn import_item_json(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(mailbox) = path?;
    let mailbox = MailboxRef::parse(&mailbox).map_err(ApiError::InvalidMailbox)?;
    require_content_type(&headers, "application/json")?;
    let json_limit = state.max_item_bytes.div_ceil(3) * 4 + JSON_ENVELOPE_BYTES;
    let raw = read_body(&headers, body, json_limit, state.max_item_bytes).await?;
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
    let data = base64::engine::general_purpose::STANDARD
        .decode(request.data.as_bytes())
        .map_err(|e| ApiError::InvalidBase64(e.to_string()))?;
    if data.len() as u64 > state.max_item_bytes {
        return Err(ApiError::ItemTooLarge {
            limit: state.max_item_bytes,
        });
    }
    crate::fts::check(&data).map_err(ApiError::InvalidItemStream)?;
    let item = import(&state, &mailbox, &folder, mode, Bytes::from(data)).await?;
    Ok(item_response(StatusCode::OK, item))
}

/// `GET /v1/mailboxes/{mailbox}/folders`: every folder of the mailbox, all pages followed.
async fn list_folders(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(mailbox) = path?;
    let mailbox = MailboxRef::parse(&mailbox).map_err(ApiError::InvalidMailbox)?;
    let request_id = graph_client_request_id();
    let mailbox_id = state.graph.resolve_mailbox(&mailbox, &request_id).await?;
    let folders = state.graph.list_folders(&mailbox_id, &request_id).await?;
    Ok(Json(json!({ "mailboxId": mailbox_id, "value": folders })).into_response())
}

/// `GET /healthz`: the process is up. Cheap by design.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: configuration is loaded and an app token can be had.
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state
        .graph
        .check_token()
        .await
        .map_err(|e| ApiError::NotReady(e.to_string()))?;
    Ok(Json(json!({ "status": "ready" })))
}

/// `GET /openapi.yaml`: this API's description.
async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML)
}

async fn route_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
    }
}

/// Resolves the mailbox and folder (cached after the first time) and imports the item.
async fn import(
    state: &AppState,
    mailbox: &MailboxRef,
    folder: &FolderRef,
    mode: ImportMode,
    data: Bytes,
) -> Result<ImportedItem, ApiError> {
    let request_id = graph_client_request_id();
    let mailbox_id = state.graph.resolve_mailbox(mailbox, &request_id).await?;
    let folder_id = state
        .graph
        .resolve_folder(&mailbox_id, folder, &request_id)
        .await?;
    let size = data.len();
    let request = ImportRequest {
        folder_id,
        mode,
        data,
    };
    let item = state
        .graph
        .import_item(&mailbox_id, &request, &request_id)
        .await?;
    tracing::info!(mailbox = %mailbox_id, folder = %request.folder_id, size, item_id = %item.item_id, "imported an item");
    Ok(item)
}

/// `{"itemId","changeKey"}` with the change key as the ETag.
fn item_response(status: StatusCode, item: ImportedItem) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", item.change_key));
    let mut response = (status, Json(item)).into_response();
    if let Ok(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// Checks the content type and size, reads the body within the limit, and walks its frames.
async fn read_item_stream(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, ApiError> {
    require_content_type(headers, "application/octet-stream")?;
    let data = read_body(headers, body, limit, limit).await?;
    crate::fts::check(&data).map_err(ApiError::InvalidItemStream)?;
    Ok(data)
}

/// Reads at most `limit` bytes; a declared or actual larger body is refused as over `item_limit` without
/// being buffered.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    item_limit: u64,
) -> Result<Bytes, ApiError> {
    let too_large = ApiError::ItemTooLarge { limit: item_limit };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large);
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large),
        Err(e) => Err(ApiError::UnreadableBody(e.to_string())),
    }
}

fn require_content_type(headers: &HeaderMap, expected: &'static str) -> Result<(), ApiError> {
    let received = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = received.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType {
            expected,
            received: if received.is_empty() {
                "no Content-Type".into()
            } else {
                received.to_owned()
            },
        })
    }
}

/// The change key in `If-Match: "<changeKey>"`: one strong entity tag.
fn if_match_change_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers
        .get(header::IF_MATCH)
        .ok_or(ApiError::IfMatchRequired)?
        .to_str()
        .map_err(|_| ApiError::InvalidIfMatch)?
        .trim();
    let change_key = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .ok_or(ApiError::InvalidIfMatch)?;
    check_exchange_id(change_key, "change key").map_err(|_| ApiError::InvalidIfMatch)?;
    Ok(change_key.to_owned())
}

fn encode_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}
