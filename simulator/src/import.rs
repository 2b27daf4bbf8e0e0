//! Plays Exchange Online's pre-authenticated `importItem` endpoint: session check, strict body
//! validation, and item create/update, with its non-Graph `{"Message": ...}` errors.
//!
//! In sink mode (`Behaviour::sink`) every check still runs, but a stored item keeps only its digest.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::access::ACCESS_DENIED;
use super::state::{Content, Shared};
use super::stream;

/// `POST /api/gv1.0/Mailboxes('{mailboxId}')/importItem?authtoken=...`.
pub(crate) async fn import_item(
    State(shared): State<Arc<Shared>>,
    Path(segment): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match import(&shared, &segment, query.as_deref(), &headers, &body) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// An importItem error: a status and Exchange's `{"Message": ...}` body.
#[derive(Debug)]
struct ImportError {
    status: StatusCode,
    message: String,
}

fn fail(status: StatusCode, message: impl Into<String>) -> ImportError {
    ImportError {
        status,
        message: message.into(),
    }
}

fn bad_request(message: impl Into<String>) -> ImportError {
    fail(StatusCode::BAD_REQUEST, message)
}

/// Exchange's `{"Message": ...}` answer, for errors decided outside this module (scripted faults).
pub(crate) fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    fail(status, message).into_response()
}

impl IntoResponse for ImportError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            json!({ "Message": self.message }).to_string(),
        )
            .into_response()
    }
}

/// The documented body, and nothing else: unknown fields are refused, names are case-sensitive.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody<'a> {
    #[serde(rename = "FolderId")]
    folder_id: Option<String>,
    #[serde(rename = "Mode")]
    mode: Option<String>,
    /// Borrowed from the request body when it holds no escapes (base64 never needs one), so that a
    /// large item's base64 is not copied before it is decoded.
    #[serde(rename = "Data", borrow)]
    data: Option<Cow<'a, str>>,
    #[serde(rename = "ItemId")]
    item_id: Option<String>,
    #[serde(rename = "ChangeKey")]
    change_key: Option<String>,
}

/// What a valid request asks for.
enum Mode {
    Create,
    Update { item_id: String, change_key: String },
}

/// What a successful request did.
enum Stored {
    /// A new item; `duplicate` when the mailbox already held an item with the same data.
    Created {
        duplicate: bool,
    },
    Updated,
}

fn import(
    shared: &Shared,
    segment: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ImportError> {
    // Authenticate first, as the service does; the authtoken never appears in a message.
    let now = shared.clock.now();
    let (mailbox_id, sink) = {
        let mut inner = shared.lock();
        inner.counters.import_requests += 1;
        let mailbox_id = segment
            .strip_prefix("Mailboxes('")
            .and_then(|rest| rest.strip_suffix("')"))
            .map(str::to_owned);
        let authtoken = single_authtoken(query.unwrap_or(""));
        let session = authtoken.and_then(|token| inner.session(&token, now));
        match (mailbox_id, session) {
            (Some(mailbox_id), Some((session_mailbox, principal)))
                if mailbox_id == session_mailbox =>
            {
                // A session opened with a delegated token acts for its user, who can reach only
                // their own mailboxes; Graph checked that when it opened the session.
                if !inner.may_reach(&principal, &mailbox_id) {
                    inner.counters.delegated_access_denied += 1;
                    return Err(fail(StatusCode::FORBIDDEN, ACCESS_DENIED));
                }
                (mailbox_id, inner.config.behaviour.sink)
            }
            _ => {
                inner.counters.imports_rejected_unauthorized += 1;
                return Err(fail(
                    StatusCode::UNAUTHORIZED,
                    "The import session is invalid, expired or revoked, or belongs to another mailbox. Create a new import session.",
                ));
            }
        }
    };

    // The URL is the credential; a bearer token next to it means the client mixed up its calls.
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(bad_request(
            "The import URL is pre-authenticated; the request must not carry an Authorization header.",
        ));
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(fail(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The request Content-Type must be application/json.",
        ));
    }

    let (folder_id, mode, data) = parse_body(body)?;
    // Hashed and read before taking the lock, which every other request needs too; in sink mode the
    // data has been checked and is let go here, and only what was read from it is kept.
    let content = Content::read(data, sink);
    let data_len = content.size;
    let at = shared.clock.wall();

    // Nothing awaits while the lock is held.
    let mut inner = shared.lock();
    let in_session_mailbox = inner
        .mailbox(&mailbox_id)
        .is_some_and(|mailbox| mailbox.folder_by_id(&folder_id).is_some());
    if !in_session_mailbox {
        // Only ids are accepted: whether well-known names work here is undocumented, so the strict
        // reading refuses them like any other unknown folder.
        let archive = inner.mailboxes.iter().find(|m| {
            m.archive_of.as_deref() == Some(mailbox_id.as_str())
                && m.folder_by_id(&folder_id).is_some()
        });
        return Err(match archive {
            Some(archive) => fail(
                StatusCode::CONFLICT,
                format!(
                    "Invalid import session. The target session is expected in mailbox {}",
                    archive.id
                ),
            ),
            None => fail(
                StatusCode::NOT_FOUND,
                "ErrorFolderNotFound: The specified folder could not be found in the store.",
            ),
        });
    }
    let mailbox = inner.mailbox_mut(&mailbox_id).expect("checked above");
    let (item_id, change_key, stored) = match mode {
        Mode::Create => {
            let (item, duplicate) = mailbox.create_item(&folder_id, content, at);
            let stored = Stored::Created { duplicate };
            (item.item_id.clone(), item.change_key.clone(), stored)
        }
        Mode::Update {
            item_id,
            change_key,
        } => {
            let index = mailbox
                .items
                .iter()
                .position(|item| item.item_id == item_id && item.folder_id == folder_id)
                .ok_or_else(|| {
                    fail(
                        StatusCode::NOT_FOUND,
                        "ErrorItemNotFound: The specified object was not found in the store.",
                    )
                })?;
            if mailbox.items[index].change_key != change_key {
                return Err(fail(
                    StatusCode::CONFLICT,
                    "ErrorIrresolvableConflict: The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.",
                ));
            }
            let item = mailbox.replace_item(index, content, at);
            (
                item.item_id.clone(),
                item.change_key.clone(),
                Stored::Updated,
            )
        }
    };
    match stored {
        Stored::Created { duplicate } => {
            inner.counters.items_created += 1;
            // A duplicate is still stored, as Exchange does not deduplicate; a soak test checks the
            // count stays at zero.
            if duplicate {
                inner.counters.duplicate_items += 1;
            }
        }
        Stored::Updated => inner.counters.items_updated += 1,
    }
    if sink {
        inner.counters.sink_items += 1;
        inner.counters.sink_bytes += data_len;
    }
    drop(inner);

    let body = json!({
        "@odata.context": format!("{}/api/gv1.0/$metadata#Microsoft.OutlookServices.ImportItemResponse", shared.base_url),
        "itemId": item_id,
        "changeKey": change_key,
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response())
}

/// The `authtoken` query parameter, if there is exactly one.
fn single_authtoken(query: &str) -> Option<String> {
    let mut tokens = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| name == "authtoken")
        .map(|(_, value)| value.into_owned());
    match (tokens.next(), tokens.next()) {
        (Some(token), None) => Some(token),
        _ => None,
    }
}

/// Validates the body field by field; returns the folder id, mode and decoded item stream.
fn parse_body(body: &[u8]) -> Result<(String, Mode, Bytes), ImportError> {
    let body: ImportBody = serde_json::from_slice(body).map_err(|error| {
        bad_request(format!(
            "The request body is not a valid import request: {error}."
        ))
    })?;
    let folder_id = body
        .folder_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad_request("The FolderId field is required."))?;
    let mode = body
        .mode
        .ok_or_else(|| bad_request("The Mode field is required."))?;
    let data = body
        .data
        .ok_or_else(|| bad_request("The Data field is required."))?;
    let mode = match mode.as_str() {
        "create" => {
            if body.item_id.is_some() || body.change_key.is_some() {
                return Err(bad_request(
                    "ItemId and ChangeKey must not be specified when Mode is 'create'.",
                ));
            }
            Mode::Create
        }
        "update" => match (body.item_id, body.change_key) {
            (Some(item_id), Some(change_key)) if !item_id.is_empty() && !change_key.is_empty() => {
                Mode::Update {
                    item_id,
                    change_key,
                }
            }
            _ => {
                return Err(bad_request(
                    "ItemId and ChangeKey are required when Mode is 'update'.",
                ))
            }
        },
        other => {
            return Err(bad_request(format!(
                "The Mode '{other}' is not valid; expected 'create' or 'update'."
            )))
        }
    };
    let data = STANDARD
        .decode(data.as_bytes())
        .map_err(|_| bad_request("The Data field is not valid base64."))?;
    let frames = stream::validate(&data).map_err(|error| {
        bad_request(format!(
            "The Data field is not a well-formed item stream: {error}."
        ))
    })?;
    let property_bytes: usize = frames
        .iter()
        .filter(|frame| frame.opcode == stream::TRANSFER_BUFFER)
        .map(|frame| frame.payload.len())
        .sum();
    tracing::debug!(
        frames = frames.len(),
        property_bytes,
        "simulator accepted an item stream"
    );
    Ok((folder_id, mode, Bytes::from(data)))
}
