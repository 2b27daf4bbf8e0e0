//! Classifies what went wrong upstream: what it means for the client, whether a retry is safe, and whether
//! the upstream may already have acted.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::auth::AuthError;
use crate::budget::BudgetError;

/// A failed upstream call, with what we were doing and what the upstream said.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{action}: {kind}")]
pub struct GraphError {
    /// What the gateway was doing, e.g. `creating an import session for MBX:...`. Never holds a secret.
    pub action: String,
    /// What went wrong.
    pub kind: ErrorKind,
    /// What the upstream answered, when it answered.
    pub upstream: Option<UpstreamAnswer>,
}

/// The parts of an upstream error answer worth passing on for support cases.
#[derive(Clone, Debug, Default)]
pub struct UpstreamAnswer {
    /// HTTP status.
    pub status: u16,
    /// Graph's error `code`, when the body was Graph-shaped.
    pub code: Option<String>,
    /// The error message (Graph's `message`, or importItem's `Message`).
    pub message: Option<String>,
    /// Graph's `request-id`.
    pub request_id: Option<String>,
}

/// What a missing resource was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    Mailbox,
    Folder,
    Item,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Missing::Mailbox => "mailbox",
            Missing::Folder => "folder",
            Missing::Item => "item",
        })
    }
}

/// The kinds of upstream failure the gateway tells apart.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ErrorKind {
    /// The mailbox, folder or item does not exist.
    #[error("the {0} was not found")]
    NotFound(Missing),
    /// An update named a change key that is no longer the item's current one.
    #[error("the change key is not the item's current one")]
    ChangeKeyMismatch,
    /// Exchange refused the item itself (importItem answered 400).
    #[error("Exchange refused the item")]
    ItemRejected,
    /// Throttled (429 or 503), or held because of an earlier 429 for longer than the request can wait.
    #[error("the upstream is throttling this mailbox")]
    Throttled { retry_after: Option<Duration> },
    /// The mailbox's queue (concurrency or upload pacing) did not give this request a turn in time.
    #[error("too many requests for this mailbox are already waiting or in flight")]
    MailboxBusy { retry_after: Duration },
    /// Graph refused the app's token or the import session, even after a fresh one.
    #[error("the upstream refused the app's credentials")]
    Unauthorized,
    /// Graph says the app lacks a permission (403).
    #[error("the app lacks a Graph permission")]
    Forbidden,
    /// Acting for a user (delegated mode), Graph refused: the mailbox is not one the user may reach.
    #[error("the signed-in user may not reach this mailbox")]
    NotTheUsers,
    /// The on-behalf-of exchange of the caller's token was refused (consent missing, an unknown user, a
    /// refused assertion).
    #[error("Entra ID refused to act for the signed-in user: {0}")]
    Delegation(AuthError),
    /// Exchange refused to delete the item (403 to a delete: a hold or retention keeps it).
    #[error("Exchange refused to delete the item (a hold or retention policy keeps it, or the app may not hard-delete; a soft delete may still work)")]
    DeleteRefused,
    /// The upstream's answer did not fit in the gateway's memory budget.
    #[error("the upstream's answer does not fit in the memory budget")]
    Budget(BudgetError),
    /// Any other 4xx: the gateway sent something the upstream did not accept.
    #[error("the upstream rejected the request")]
    Rejected,
    /// The upstream failed (5xx).
    #[error("the upstream failed")]
    ServerError,
    /// No answer in time. `sent` tells whether the request may have reached the upstream.
    #[error("the upstream did not answer in time")]
    Timeout { sent: bool },
    /// The connection failed. `sent` tells whether the request may have reached the upstream.
    #[error("the upstream could not be reached ({reason})")]
    Unreachable { sent: bool, reason: String },
    /// An import was sent but no usable answer came back (timeout, broken connection, or a 500/502/504
    /// while handling it): the item may or may not exist now, and sending it again blindly could make a
    /// duplicate.
    #[error("the import was sent but its outcome is unknown")]
    OutcomeUnknown { timed_out: bool },
    /// The upstream answered 2xx with something the gateway cannot read.
    #[error("the upstream's answer could not be read ({0})")]
    InvalidResponse(String),
    /// Graph handed out an importUrl on an origin that MAILBOX_GATEWAY_IMPORT_HOSTS does not allow.
    #[error("the importUrl's origin {0} is not in MAILBOX_GATEWAY_IMPORT_HOSTS")]
    ImportHostNotAllowed(String),
    /// No app token could be had.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl GraphError {
    /// An error without an upstream answer.
    pub fn new(action: impl Into<String>, kind: ErrorKind) -> GraphError {
        GraphError {
            action: action.into(),
            kind,
            upstream: None,
        }
    }

    /// Whether repeating the same request could succeed and cannot cause a duplicate: throttling, and
    /// calls that timed out or lost their connection. Imports never carry the last two kinds once sent
    /// (they become `OutcomeUnknown`), so what remains of them is either unsent or a lookup or session
    /// creation, which is safe to repeat.
    pub fn retryable(&self) -> bool {
        matches!(
            &self.kind,
            ErrorKind::Throttled { .. } | ErrorKind::Timeout { .. } | ErrorKind::Unreachable { .. }
        )
    }

    /// Whether the upstream may have carried out a state-changing request despite the error: an import
    /// that was sent and never answered.
    pub fn may_have_acted(&self) -> bool {
        matches!(&self.kind, ErrorKind::OutcomeUnknown { .. })
    }

    /// How long the upstream asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.kind {
            ErrorKind::Throttled { retry_after } => *retry_after,
            ErrorKind::MailboxBusy { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Maps a failed import to a kind: once the request may have arrived, its outcome is unknown.
pub(crate) fn import_transport_error(
    action: impl Into<String>,
    error: reqwest::Error,
) -> GraphError {
    let mut graph_error = transport_error(action, error);
    graph_error.kind = match graph_error.kind {
        ErrorKind::Timeout { sent: true } => ErrorKind::OutcomeUnknown { timed_out: true },
        ErrorKind::Unreachable { sent: true, .. } => ErrorKind::OutcomeUnknown { timed_out: false },
        other => other,
    };
    graph_error
}

/// Maps a failed send to a kind, telling requests that never left from those that may have arrived.
pub(crate) fn transport_error(action: impl Into<String>, error: reqwest::Error) -> GraphError {
    // A connect error means no byte of the request reached the upstream.
    let sent = !error.is_connect();
    let kind = if error.is_timeout() {
        ErrorKind::Timeout { sent }
    } else {
        // `without_url`: an importUrl carries its authtoken in the query.
        ErrorKind::Unreachable {
            sent,
            reason: error.without_url().to_string(),
        }
    };
    GraphError::new(action, kind)
}

#[derive(Deserialize)]
struct GraphErrorBody {
    error: GraphErrorDetail,
}

#[derive(Deserialize)]
struct GraphErrorDetail {
    code: Option<String>,
    message: Option<String>,
    #[serde(rename = "innerError")]
    inner_error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ImportErrorBody {
    #[serde(rename = "Message")]
    message: Option<String>,
}

/// Reads an error answer: Graph's `{"error":{...}}` or importItem's `{"Message": ...}`.
pub(crate) fn upstream_answer(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> UpstreamAnswer {
    let mut answer = UpstreamAnswer {
        status: status.as_u16(),
        request_id: headers
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ..UpstreamAnswer::default()
    };
    if let Ok(graph) = serde_json::from_slice::<GraphErrorBody>(body) {
        answer.code = graph.error.code;
        answer.message = graph.error.message;
        if answer.request_id.is_none() {
            answer.request_id = graph.error.inner_error.as_ref().and_then(find_request_id);
        }
    } else if let Ok(import) = serde_json::from_slice::<ImportErrorBody>(body) {
        answer.message = import.message;
    }
    answer
}

/// `innerError` can nest; the first `request-id` found wins.
fn find_request_id(inner: &serde_json::Value) -> Option<String> {
    let object = inner.as_object()?;
    if let Some(id) = object.get("request-id").and_then(|v| v.as_str()) {
        return Some(id.to_owned());
    }
    object.values().find_map(find_request_id)
}

/// The `Retry-After` delay, in seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// Graph error codes that say the mailbox itself does not exist. Which code Graph uses for an unknown
/// mailbox id is undocumented; these are the Exchange codes for it.
const MAILBOX_MISSING_CODES: &[&str] = &[
    "ErrorInvalidMailbox",
    "ErrorNonExistentMailbox",
    "ErrorMailboxNotFound",
    "MailboxNotEnabledForRESTAPI",
];

/// The kind of a non-2xx answer from importItem, for a create or (`update`) an update. Beside
/// [`classify_graph_status`], which it falls back on, because the two must be read together: importItem
/// differs where the answer says something about the item (a stale change key, a refused item) or about
/// whether it may have been stored (500, 502 and 504 after the body was sent).
pub(crate) fn classify_import_status(
    status: StatusCode,
    headers: &HeaderMap,
    update: bool,
) -> ErrorKind {
    let missing = if update {
        Missing::Item
    } else {
        Missing::Folder
    };
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Unauthorized,
        StatusCode::NOT_FOUND => ErrorKind::NotFound(missing),
        // Undocumented: a stale change key most likely answers 409 (EWS's ErrorIrresolvableConflict)
        // or 412; both mean the same to the client. A create has no change key to be stale.
        StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED if update => {
            ErrorKind::ChangeKeyMismatch
        }
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::ItemRejected,
        // The service (or a proxy in front of it) failed while handling the item: it may have been
        // stored. 503 is throttling or overload before any work, and stays retryable.
        StatusCode::INTERNAL_SERVER_ERROR | StatusCode::BAD_GATEWAY => {
            ErrorKind::OutcomeUnknown { timed_out: false }
        }
        StatusCode::GATEWAY_TIMEOUT => ErrorKind::OutcomeUnknown { timed_out: true },
        _ => classify_graph_status(status, headers, None, missing),
    }
}

/// The kind of a non-2xx answer from a Graph endpoint (not importItem). A 404 means `missing` is
/// missing, unless its code says the mailbox itself is unknown.
pub(crate) fn classify_graph_status(
    status: StatusCode,
    headers: &HeaderMap,
    code: Option<&str>,
    missing: Missing,
) -> ErrorKind {
    match status {
        StatusCode::NOT_FOUND if code.is_some_and(|c| MAILBOX_MISSING_CODES.contains(&c)) => {
            ErrorKind::NotFound(Missing::Mailbox)
        }
        StatusCode::NOT_FOUND => ErrorKind::NotFound(missing),
        StatusCode::UNAUTHORIZED => ErrorKind::Unauthorized,
        StatusCode::FORBIDDEN => ErrorKind::Forbidden,
        // 503 is how Graph sometimes throttles, and otherwise means "not now": either way nothing was
        // done, and a later try may succeed.
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => ErrorKind::Throttled {
            retry_after: retry_after(headers),
        },
        StatusCode::GATEWAY_TIMEOUT => ErrorKind::Timeout { sent: true },
        s if s.is_server_error() => ErrorKind::ServerError,
        _ => ErrorKind::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn graph_error_bodies_give_code_message_and_nested_request_id() {
        let body = br#"{"error":{"code":"ErrorItemNotFound","message":"gone","innerError":{"date":"x","innerError":{"request-id":"abc"}}}}"#;
        let answer = upstream_answer(StatusCode::NOT_FOUND, &HeaderMap::new(), body);
        assert_eq!(answer.code.as_deref(), Some("ErrorItemNotFound"));
        assert_eq!(answer.message.as_deref(), Some("gone"));
        assert_eq!(answer.request_id.as_deref(), Some("abc"));
    }

    #[test]
    fn import_error_bodies_give_their_message() {
        let answer = upstream_answer(
            StatusCode::CONFLICT,
            &HeaderMap::new(),
            br#"{"Message":"Invalid import session."}"#,
        );
        assert_eq!(answer.message.as_deref(), Some("Invalid import session."));
        assert_eq!(answer.code, None);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = chrono::Utc::now() + chrono::Duration::seconds(120);
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&later.to_rfc2822()).unwrap(),
        );
        let wait = retry_after(&headers).unwrap();
        assert!(
            (Duration::from_secs(118)..=Duration::from_secs(120)).contains(&wait),
            "{wait:?}"
        );
    }

    #[test]
    fn imports_whose_outcome_is_unknown_are_never_retryable() {
        let unsent = GraphError::new(
            "x",
            ErrorKind::Unreachable {
                sent: false,
                reason: "refused".into(),
            },
        );
        let lookup_timeout = GraphError::new("x", ErrorKind::Timeout { sent: true });
        let unknown = GraphError::new("x", ErrorKind::OutcomeUnknown { timed_out: true });
        assert!(unsent.retryable() && !unsent.may_have_acted());
        assert!(lookup_timeout.retryable() && !lookup_timeout.may_have_acted());
        assert!(!unknown.retryable() && unknown.may_have_acted());
    }
}
