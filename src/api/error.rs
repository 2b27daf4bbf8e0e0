//! Turns every failure into an RFC 9457 problem response, in this one place.
//!
//! The status follows from where the failure came from: bad client input is 4xx, an upstream that is
//! unreachable or misbehaving is 502, a slow one 504, a throttling one 503 with `Retry-After`, and our own
//! bug 500 (whose cause is logged, never sent). Every problem carries a stable `code` and the request id;
//! when Graph answered, also Graph's `request-id` and error code.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::budget::BudgetError;
use crate::fts::StreamError;
use crate::graph::{ErrorKind, GraphError, Missing};
use crate::ids::InvalidId;

use super::request_id::current_request_id;

/// The response header that passes on Graph's `request-id`.
pub const X_GRAPH_REQUEST_ID: &str = "x-graph-request-id";

/// `Retry-After` sent with `over_capacity`: memory frees as imports finish, within seconds.
const OVER_CAPACITY_RETRY_AFTER: Duration = Duration::from_secs(2);

/// `Retry-After` sent with `idempotency_key_in_flight`: the import under the key may answer any moment.
const IN_FLIGHT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `Retry-After` sent with `idempotency_keys_exhausted`: keys expire one by one, not all at once.
const KEYS_EXHAUSTED_RETRY_AFTER: Duration = Duration::from_secs(60);

/// `Retry-After` sent with a 503 when the upstream named no delay.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid mailbox: {0}")]
    InvalidMailbox(InvalidId),
    #[error("invalid folder: {0}")]
    InvalidFolder(InvalidId),
    #[error("invalid item id: {0}")]
    InvalidItemId(InvalidId),
    #[error("If-Match must be one quoted change key, like \"kNnynYavKEihA0la3Yt5UQABUftGQg==\"")]
    InvalidIfMatch,
    #[error("If-None-Match must be one quoted change key, as the item's ETag gave it")]
    InvalidIfNoneMatch,
    #[error("updating an item needs If-Match with the item's current change key in quotes")]
    IfMatchRequired,
    #[error("{0}")]
    InvalidBody(String),
    #[error("the body is not an importItem request: {0}")]
    InvalidJson(#[source] serde_json::Error),
    #[error("the URL path could not be read: {0}")]
    InvalidPath(String),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("pageToken is not one this gateway handed out; start the listing again without it")]
    InvalidPageToken,
    #[error("Data is not valid base64: {0}")]
    InvalidBase64(String),
    #[error("the request body could not be read: {0}")]
    UnreadableBody(String),
    #[error("the upload paused for more than {} seconds and was cut off", idle.as_secs())]
    RequestTimeout { idle: Duration },
    #[error(
        "Idempotency-Key must be 1 to 255 visible ASCII characters, optionally in double quotes"
    )]
    InvalidIdempotencyKey,
    #[error("this Idempotency-Key was already used for a different request (mailbox, folder, mode or item)")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still running; retry after the Retry-After delay to get its answer")]
    IdempotencyKeyInFlight,
    #[error("this client holds as many live Idempotency-Keys as it may (MAILBOX_GATEWAY_IDEMPOTENCY_CAPACITY); none is dropped before its time, so new keyed requests wait until older keys expire, or send this one without a key")]
    IdempotencyKeysExhausted,
    #[error("the shared store (Valkey/Redis) that keeps idempotency keys is unreachable, so a request with an Idempotency-Key cannot be run safely; retry later")]
    SharedStateUnavailable(#[source] crate::store::StoreUnavailable),
    #[error("this endpoint takes {expected}, {}", describe_received(received))]
    UnsupportedMediaType {
        expected: &'static str,
        received: String,
    },
    #[error("the item is larger than the limit of {limit} bytes (MAILBOX_GATEWAY_MAX_ITEM_BYTES)")]
    ItemTooLarge { limit: u64 },
    #[error("the request is larger than the gateway's whole memory budget of {total} bytes (MAILBOX_GATEWAY_MEMORY_BUDGET)")]
    LargerThanMemoryBudget { total: usize },
    #[error("the gateway holds as many item bytes as its memory budget allows; try again shortly")]
    OverCapacity,
    #[error("this client already holds its share of the gateway's memory budget ({share} bytes, MAILBOX_GATEWAY_CLIENT_BUDGET_SHARE); try again when its other uploads are done")]
    ClientOverCapacity { share: usize },
    #[error("the upload was slower than {min_rate} bytes per second ({received} bytes in {} seconds) and was cut off (MAILBOX_GATEWAY_MIN_UPLOAD_BYTES_PER_SEC)", after.as_secs())]
    UploadTooSlow {
        min_rate: u64,
        received: usize,
        after: Duration,
    },
    #[error("the body is not a well-formed item stream, {0}")]
    InvalidItemStream(StreamError),
    #[error("the body is base64 text, not an item stream's bytes ({0}): decode it first (base64 -d), or send it as Data to the importItem JSON route")]
    ItemStreamLooksLikeBase64(StreamError),
    #[error("no route {0}")]
    RouteNotFound(String),
    #[error("{method} is not allowed here")]
    MethodNotAllowed { method: String },
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("a valid credential is required (Authorization: Bearer ...)")]
    Unauthenticated,
    #[error("client {client} may not {operation} mailbox {mailbox}")]
    Forbidden {
        client: String,
        operation: crate::access::Operation,
        mailbox: String,
    },
    /// Our own bug (a handler panicked). The cause is logged, never sent.
    #[error("the gateway failed unexpectedly; the request id identifies the failure in its logs")]
    Internal,
    /// Boxed: upstream errors are the large, rare case.
    #[error(transparent)]
    Upstream(Box<GraphError>),
}

impl From<GraphError> for ApiError {
    fn from(error: GraphError) -> Self {
        // An upstream answer too large to hold is the gateway's memory budget speaking, as for uploads.
        match error.kind {
            ErrorKind::Budget(BudgetError::LargerThanBudget { total }) => {
                ApiError::LargerThanMemoryBudget { total }
            }
            ErrorKind::Budget(BudgetError::Full) => ApiError::OverCapacity,
            ErrorKind::Budget(BudgetError::ClientShare { share }) => {
                ApiError::ClientOverCapacity { share }
            }
            _ => ApiError::Upstream(Box::new(error)),
        }
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        ApiError::InvalidPath(rejection.body_text())
    }
}

/// An RFC 9457 problem body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub code: &'static str,
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph_request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph_error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aadsts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl ApiError {
    /// Whether a retry of the same request would get the same answer, so the answer is kept under the
    /// request's idempotency key: client errors, and imports that may have reached Exchange. Failures
    /// that provably did nothing (throttling, an unreachable upstream) leave the key free for a retry.
    pub fn is_settled(&self) -> bool {
        match self {
            ApiError::Upstream(error) if error.may_have_acted() => true,
            other => other.classify().0.is_client_error(),
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        self.classify().0
    }

    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        self.classify().1
    }

    /// Graph's `request-id`, when Graph answered.
    pub fn graph_request_id(&self) -> Option<String> {
        match self {
            ApiError::Upstream(error) => error.upstream.as_ref()?.request_id.clone(),
            _ => None,
        }
    }

    /// Status, stable code and title.
    fn classify(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::InvalidMailbox(_) => (S::BAD_REQUEST, "invalid_mailbox", "Invalid mailbox"),
            ApiError::InvalidFolder(_) => (S::BAD_REQUEST, "invalid_folder", "Invalid folder"),
            ApiError::InvalidItemId(_) => (S::BAD_REQUEST, "invalid_item_id", "Invalid item id"),
            ApiError::InvalidIfMatch => (S::BAD_REQUEST, "invalid_if_match", "Invalid If-Match"),
            ApiError::InvalidIfNoneMatch => (
                S::BAD_REQUEST,
                "invalid_if_none_match",
                "Invalid If-None-Match",
            ),
            ApiError::IfMatchRequired => (
                S::PRECONDITION_REQUIRED,
                "if_match_required",
                "If-Match required",
            ),
            ApiError::InvalidBody(_) | ApiError::InvalidJson(_) => {
                (S::BAD_REQUEST, "invalid_body", "Invalid request body")
            }
            ApiError::InvalidPath(_) => (S::BAD_REQUEST, "invalid_path", "Invalid URL path"),
            ApiError::InvalidQuery(_) => (S::BAD_REQUEST, "invalid_query", "Invalid query"),
            ApiError::InvalidPageToken => {
                (S::BAD_REQUEST, "invalid_page_token", "Invalid page token")
            }
            ApiError::InvalidBase64(_) => (S::BAD_REQUEST, "invalid_base64", "Invalid base64"),
            ApiError::UnreadableBody(_) => {
                (S::BAD_REQUEST, "unreadable_body", "Unreadable request body")
            }
            ApiError::RequestTimeout { .. } | ApiError::UploadTooSlow { .. } => {
                (S::REQUEST_TIMEOUT, "request_timeout", "Upload too slow")
            }
            ApiError::InvalidIdempotencyKey => (
                S::BAD_REQUEST,
                "invalid_idempotency_key",
                "Invalid Idempotency-Key",
            ),
            ApiError::IdempotencyKeyReused => (
                S::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency-Key reused",
            ),
            ApiError::IdempotencyKeyInFlight => (
                S::CONFLICT,
                "idempotency_key_in_flight",
                "Idempotency-Key in flight",
            ),
            ApiError::IdempotencyKeysExhausted => (
                S::TOO_MANY_REQUESTS,
                "idempotency_keys_exhausted",
                "Too many live Idempotency-Keys",
            ),
            ApiError::SharedStateUnavailable(_) => (
                S::SERVICE_UNAVAILABLE,
                "shared_state_unavailable",
                "Shared state unavailable",
            ),
            ApiError::UnsupportedMediaType { .. } => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported content type",
            ),
            ApiError::ItemTooLarge { .. } => {
                (S::PAYLOAD_TOO_LARGE, "item_too_large", "Item too large")
            }
            ApiError::InvalidItemStream(_) | ApiError::ItemStreamLooksLikeBase64(_) => (
                S::UNPROCESSABLE_ENTITY,
                "invalid_item_stream",
                "Not a well-formed item stream",
            ),
            ApiError::RouteNotFound(_) => (S::NOT_FOUND, "route_not_found", "No such route"),
            ApiError::MethodNotAllowed { .. } => (
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            ApiError::NotReady(_) => (S::SERVICE_UNAVAILABLE, "not_ready", "Not ready"),
            ApiError::LargerThanMemoryBudget { .. } => {
                (S::PAYLOAD_TOO_LARGE, "item_too_large", "Item too large")
            }
            ApiError::OverCapacity | ApiError::ClientOverCapacity { .. } => {
                (S::SERVICE_UNAVAILABLE, "over_capacity", "Over capacity")
            }
            ApiError::Unauthenticated => (S::UNAUTHORIZED, "unauthenticated", "Not authenticated"),
            ApiError::Forbidden { .. } => (S::FORBIDDEN, "forbidden", "Not allowed"),
            ApiError::Internal => (S::INTERNAL_SERVER_ERROR, "internal_error", "Internal error"),
            ApiError::Upstream(error) => classify_upstream(error),
        }
    }

    /// The sentence for the client. For upstream failures it says what we were doing and what happened;
    /// Graph's own message is added for answers that describe the client's data.
    fn detail(&self) -> String {
        match self {
            ApiError::Upstream(error) => {
                let mut detail = error.to_string();
                if error.may_have_acted() {
                    detail.push_str(
                        "; the request reached Exchange but no answer came back, so the item may or \
                         may not have been imported: check the mailbox before sending it again",
                    );
                }
                if matches!(error.kind, ErrorKind::ItemRejected | ErrorKind::Rejected) {
                    if let Some(message) =
                        error.upstream.as_ref().and_then(|u| u.message.as_deref())
                    {
                        detail.push_str(&format!(" (Exchange said: {message})"));
                    }
                }
                detail
            }
            other => other.to_string(),
        }
    }
}

/// How the 415 detail names what was sent: "the request had no Content-Type", or "not text/plain".
fn describe_received(received: &str) -> String {
    if received.is_empty() {
        "and the request had no Content-Type".to_owned()
    } else {
        format!("not {received}")
    }
}

fn classify_upstream(error: &GraphError) -> (StatusCode, &'static str, &'static str) {
    use StatusCode as S;
    match &error.kind {
        ErrorKind::OutcomeUnknown { timed_out: true } => {
            (S::GATEWAY_TIMEOUT, "outcome_unknown", "Outcome unknown")
        }
        ErrorKind::OutcomeUnknown { timed_out: false } => {
            (S::BAD_GATEWAY, "outcome_unknown", "Outcome unknown")
        }
        ErrorKind::NotFound(Missing::Mailbox) => {
            (S::NOT_FOUND, "mailbox_not_found", "Mailbox not found")
        }
        ErrorKind::NotFound(Missing::Folder) => {
            (S::NOT_FOUND, "folder_not_found", "Folder not found")
        }
        ErrorKind::NotFound(Missing::Item) => (S::NOT_FOUND, "item_not_found", "Item not found"),
        ErrorKind::ChangeKeyMismatch => (
            S::PRECONDITION_FAILED,
            "change_key_mismatch",
            "Stale change key",
        ),
        ErrorKind::ItemRejected => (
            S::UNPROCESSABLE_ENTITY,
            "item_rejected",
            "Exchange refused the item",
        ),
        ErrorKind::MailboxBusy { .. } => (S::SERVICE_UNAVAILABLE, "mailbox_busy", "Mailbox busy"),
        ErrorKind::Throttled { .. } => (
            S::SERVICE_UNAVAILABLE,
            "upstream_throttled",
            "Upstream throttling",
        ),
        ErrorKind::Timeout { .. } => (S::GATEWAY_TIMEOUT, "upstream_timeout", "Upstream timeout"),
        ErrorKind::Unauthorized => (
            S::BAD_GATEWAY,
            "upstream_unauthorized",
            "Upstream refused the app",
        ),
        ErrorKind::Forbidden => (
            S::BAD_GATEWAY,
            "upstream_forbidden",
            "App lacks a Graph permission",
        ),
        ErrorKind::NotTheUsers => (S::FORBIDDEN, "forbidden", "Not allowed"),
        ErrorKind::Delegation(_) => (
            S::FORBIDDEN,
            "delegation_refused",
            "Entra ID refused to act for the user",
        ),
        ErrorKind::DeleteRefused => (S::CONFLICT, "delete_refused", "Exchange keeps the item"),
        // Converted to the budget's own problems in `From<GraphError>`.
        ErrorKind::Budget(_) => (S::SERVICE_UNAVAILABLE, "over_capacity", "Over capacity"),
        ErrorKind::ImportHostNotAllowed(_) => (
            S::BAD_GATEWAY,
            "import_host_not_allowed",
            "importUrl origin not allowed",
        ),
        ErrorKind::Auth(_) => (S::BAD_GATEWAY, "upstream_auth_failed", "No Graph token"),
        ErrorKind::Rejected
        | ErrorKind::ServerError
        | ErrorKind::Unreachable { .. }
        | ErrorKind::InvalidResponse(_) => (S::BAD_GATEWAY, "upstream_error", "Upstream failure"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.classify();
        let request_id = current_request_id();
        if status.is_server_error() {
            tracing::error!(%request_id, code, error = %self, "request failed");
        } else {
            tracing::info!(%request_id, code, error = %self, "request refused");
        }
        let mut problem = Problem {
            problem_type: format!("urn:mailbox-gateway:problem:{code}"),
            title,
            status: status.as_u16(),
            detail: self.detail(),
            code,
            request_id,
            offset: None,
            graph_request_id: None,
            graph_error_code: None,
            aadsts: None,
            trace_id: None,
        };
        let mut retry_after = None;
        match &self {
            ApiError::InvalidItemStream(error) | ApiError::ItemStreamLooksLikeBase64(error) => {
                problem.offset = Some(error.offset)
            }
            ApiError::Upstream(error) => {
                if let Some(upstream) = &error.upstream {
                    problem.graph_request_id = upstream.request_id.clone();
                    problem.graph_error_code = upstream.code.clone();
                }
                if let ErrorKind::Auth(AuthError::Rejected {
                    aadsts, trace_id, ..
                })
                | ErrorKind::Delegation(AuthError::Rejected {
                    aadsts, trace_id, ..
                }) = &error.kind
                {
                    problem.aadsts = aadsts.clone();
                    problem.trace_id = trace_id.clone();
                }
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    retry_after = Some(error.retry_after().unwrap_or(DEFAULT_RETRY_AFTER));
                }
            }
            ApiError::NotReady(_) => retry_after = Some(DEFAULT_RETRY_AFTER),
            ApiError::OverCapacity | ApiError::ClientOverCapacity { .. } => {
                retry_after = Some(OVER_CAPACITY_RETRY_AFTER)
            }
            ApiError::IdempotencyKeyInFlight => retry_after = Some(IN_FLIGHT_RETRY_AFTER),
            ApiError::IdempotencyKeysExhausted => retry_after = Some(KEYS_EXHAUSTED_RETRY_AFTER),
            ApiError::SharedStateUnavailable(_) => retry_after = Some(DEFAULT_RETRY_AFTER),
            _ => {}
        }
        let mut response = (status, axum::Json(problem)).into_response();
        response
            .extensions_mut()
            .insert(super::audit::ProblemCode(code));
        if matches!(self, ApiError::Forbidden { .. }) {
            // `authorize` wrote its audit line already.
            response.extensions_mut().insert(super::audit::Audited);
        }
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(id) = self
            .graph_request_id()
            .and_then(|id| HeaderValue::from_str(&id).ok())
        {
            headers.insert(X_GRAPH_REQUEST_ID, id);
        }
        if matches!(self, ApiError::Unauthenticated) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mailbox-gateway\""),
            );
        }
        if let Some(wait) = retry_after {
            // Round up: waiting a little longer is harmless, retrying early is not.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}
