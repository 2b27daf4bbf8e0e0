//! Queues the faults tests script with [`Simulator::inject`](super::Simulator::inject) and plays them
//! on the token, Graph and importItem endpoints, so the gateway can be tested against a misbehaving
//! upstream.
//!
//! A fault is consumed by one request that reaches its endpoint, before the endpoint looks at the
//! request: the token route's faults fire before the form is read, Graph's before the bearer check
//! (on every request under `/v1.0`, the set `graph_requests` counts), importItem's before the authtoken
//! check. `Status` and `ThrottledUntil` answer instead of the endpoint; `Delay` and
//! `DropAfterHandling` let it act first, so an import they hit is stored.
//!
//! Scripted faults take precedence over the random behaviour of module `behaviour`, whose middleware
//! sits inside this one: a request a fault answers never reaches it, and a request a fault lets
//! through is marked with [`ScriptedFault`] so that it draws nothing at random.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::{stream, StreamExt as _};
use http_body_util::BodyExt as _;

use super::state::Shared;
use super::{graph, import, login, Counters, RequestId};

/// Which endpoint a fault applies to. A fault fires before its endpoint looks at the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultTarget {
    /// `POST /{tenant}/oauth2/v2.0/token`, before the form is read (other methods don't consume
    /// faults).
    Token,
    /// Every request under `/v1.0` (the set `graph_requests` counts, unknown paths included), before
    /// the bearer check: a faulted request needs no valid token.
    Graph,
    /// `POST /api/gv1.0/Mailboxes('{id}')/importItem`, before the authtoken check.
    Import,
}

/// What the simulator does instead of (or on top of) answering normally.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answers `status` (400-599) without handling the request, in the endpoint's own error shape,
    /// with `Retry-After: <secs>` when `retry_after` is Some.
    ///
    /// - Token: Entra's AADSTS JSON; `code` replaces the OAuth `error` (by default
    ///   `temporarily_unavailable` for 429 and 5xx, `invalid_client` for 401, else `invalid_request`).
    /// - Graph: `{"error": {"code", "message", "innerError"}}`; `code` replaces the default taken from
    ///   the status (`TooManyRequests`, `ServiceUnavailable`, `Forbidden`, `generalException` for 500,
    ///   `InvalidAuthenticationToken` for 401, ...).
    /// - Import: `{"Message": ...}`; that shape has no code, so `code` prefixes the message
    ///   (`"{code}: {message}"`), as in Exchange's own `ErrorItemNotFound: ...` messages.
    ///
    /// For 429 the message is the documented "Application is over its MailboxConcurrency limit."
    Status {
        status: u16,
        retry_after: Option<u64>,
        code: Option<String>,
    },
    /// Answers 429 without handling the request, like `Status` with no code, but with `Retry-After`
    /// as an HTTP-date (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`) `secs` seconds from now.
    ThrottledUntil { secs: u64 },
    /// Handles the request normally (an import IS stored), then waits this long before answering.
    Delay(Duration),
    /// Handles the request normally (an import IS stored), then sends the status line, the headers
    /// and half of the body and breaks the connection: the client sees a transport error, the
    /// "dropped after storing" ambiguous case.
    DropAfterHandling,
}

/// Marks a request that a scripted `Delay` or `DropAfterHandling` lets through to its endpoint, so
/// that the random behaviour leaves it alone.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScriptedFault;

/// The over-concurrency text of Outlook throttling, as reported by users (docs/upstream.md, section 5).
const MAILBOX_CONCURRENCY: &str = "Application is over its MailboxConcurrency limit.";

/// `ThrottledUntil` dates further out than this could leave IMF-fixdate's four-digit years.
const MAX_THROTTLE_SECS: u64 = 100 * 365 * 24 * 60 * 60;

impl Fault {
    /// Panics on a fault no real service could produce, so the test that scripted it fails at
    /// `inject` rather than with a confusing answer later.
    pub(crate) fn check(&self) {
        match self {
            Fault::Status { status, .. } => assert!(
                (400..=599).contains(status),
                "Fault::Status must be an error status (400-599), got {status}"
            ),
            Fault::ThrottledUntil { secs } => assert!(
                *secs <= MAX_THROTTLE_SECS,
                "Fault::ThrottledUntil must be within a century, got {secs} seconds"
            ),
            Fault::Delay(_) | Fault::DropAfterHandling => {}
        }
    }

    /// Whether the endpoint still handles the request (and counts it itself).
    fn handles_request(&self) -> bool {
        matches!(self, Fault::Delay(_) | Fault::DropAfterHandling)
    }

    /// Whether the fault answers 429, which `Counters::throttled` counts.
    fn throttles(&self) -> bool {
        match self {
            Fault::Status { status, .. } => *status == 429,
            Fault::ThrottledUntil { .. } => true,
            Fault::Delay(_) | Fault::DropAfterHandling => false,
        }
    }
}

impl FaultTarget {
    /// Counts a request that a fault (or the random behaviour) answers, since the endpoint, which
    /// counts the others, never sees it. The token endpoint counts only outcomes (issued or
    /// rejected), and Graph requests are all counted on their way in (`graph::count`), so nothing is
    /// counted for those two.
    pub(crate) fn count_unhandled_request(self, counters: &mut Counters) {
        match self {
            FaultTarget::Token | FaultTarget::Graph => {}
            FaultTarget::Import => counters.import_requests += 1,
        }
    }
}

/// The scripted faults, in the order they were injected.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    queued: VecDeque<Queued>,
}

/// One `inject` call: `fault` for the next `remaining` requests to `target`.
#[derive(Debug)]
struct Queued {
    target: FaultTarget,
    fault: Fault,
    remaining: usize,
}

impl FaultQueue {
    pub fn push(&mut self, target: FaultTarget, fault: Fault, times: usize) {
        if times > 0 {
            self.queued.push_back(Queued {
                target,
                fault,
                remaining: times,
            });
        }
    }

    /// The oldest fault queued for `target`, consumed by the request asking.
    pub fn take(&mut self, target: FaultTarget) -> Option<Fault> {
        let index = self.queued.iter().position(|q| q.target == target)?;
        let entry = &mut self.queued[index];
        entry.remaining -= 1;
        if entry.remaining == 0 {
            self.queued.remove(index).map(|q| q.fault)
        } else {
            Some(entry.fault.clone())
        }
    }

    pub fn clear(&mut self) {
        self.queued.clear();
    }
}

/// The state of the middleware in front of one endpoint.
#[derive(Clone)]
pub(crate) struct FaultPoint {
    shared: Arc<Shared>,
    target: FaultTarget,
}

impl FaultPoint {
    pub fn new(shared: &Arc<Shared>, target: FaultTarget) -> FaultPoint {
        FaultPoint {
            shared: shared.clone(),
            target,
        }
    }
}

/// Middleware: plays the next fault queued for this endpoint, if any, around or instead of it.
pub(crate) async fn intercept(
    State(point): State<FaultPoint>,
    mut request: Request,
    next: Next,
) -> Response {
    let fault = {
        let mut inner = point.shared.lock();
        let fault = inner.faults.take(point.target);
        if let Some(fault) = &fault {
            inner.counters.faults_injected += 1;
            if !fault.handles_request() {
                point.target.count_unhandled_request(&mut inner.counters);
            }
            if fault.throttles() {
                inner.counters.throttled += 1;
            }
        }
        fault
    };
    if fault.as_ref().is_some_and(Fault::handles_request) {
        request.extensions_mut().insert(ScriptedFault);
    }
    match fault {
        None => next.run(request).await,
        Some(Fault::Status {
            status,
            retry_after,
            code,
        }) => {
            let status = StatusCode::from_u16(status).expect("checked by Fault::check");
            let retry_after = retry_after.map(HeaderValue::from);
            refuse(
                point.target,
                status,
                code.as_deref(),
                retry_after,
                None,
                request,
                point.shared.clock.wall(),
            )
            .await
        }
        Some(Fault::ThrottledUntil { secs }) => {
            // An HTTP-date is wall-clock time, so it comes from `Clock::wall`, not tokio's clock.
            let now = point.shared.clock.wall();
            let until = now + chrono::Duration::seconds(secs as i64);
            let date = until.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            let retry_after = HeaderValue::from_str(&date).expect("a date is a valid header value");
            refuse(
                point.target,
                StatusCode::TOO_MANY_REQUESTS,
                None,
                Some(retry_after),
                None,
                request,
                now,
            )
            .await
        }
        Some(Fault::Delay(delay)) => {
            let response = next.run(request).await;
            tokio::time::sleep(delay).await;
            response
        }
        Some(Fault::DropAfterHandling) => {
            let response = next.run(request).await;
            if point.target == FaultTarget::Import && response.status().is_success() {
                point.shared.lock().counters.dropped_after_store += 1;
            }
            break_body(response).await
        }
    }
}

/// Answers `status` in the endpoint's own error shape, without handling the request. `message`
/// replaces the default one (for 429 the documented MailboxConcurrency text); `now`, by the
/// simulator's clock, is the time the error body carries.
pub(crate) async fn refuse(
    target: FaultTarget,
    status: StatusCode,
    code: Option<&str>,
    retry_after: Option<HeaderValue>,
    message: Option<&str>,
    request: Request,
    now: DateTime<Utc>,
) -> Response {
    let (parts, body) = request.into_parts();
    // Read the body to its end, as a server that refuses after receiving the request does: closing a
    // connection with unread bytes makes the kernel reset it, and the client might see the reset
    // instead of this answer.
    let _ = body.collect().await;
    let request_id = parts
        .extensions
        .get::<RequestId>()
        .cloned()
        .expect("assign_request_id runs outside every route");
    let message = match (message, status) {
        (Some(message), _) => message.to_owned(),
        (None, StatusCode::TOO_MANY_REQUESTS) => MAILBOX_CONCURRENCY.to_owned(),
        (None, _) => format!("The simulator answered {status} as a test scripted."),
    };
    let mut response = match target {
        FaultTarget::Token => {
            let (default_error, aadsts, description) = token_error(status);
            login::error_response(
                status,
                code.unwrap_or(default_error),
                aadsts,
                description,
                &parts.headers,
                now,
            )
        }
        FaultTarget::Graph => {
            let code = code.map_or_else(|| graph_code(status), str::to_owned);
            let mut response = graph::GraphContext::new(&request_id, &parts.headers, now)
                .error(status, code, message)
                .into_response();
            // Graph echoes the caller's client-request-id on every answer.
            if let Some(echo) = parts.headers.get("client-request-id") {
                response
                    .headers_mut()
                    .insert("client-request-id", echo.clone());
            }
            response
        }
        FaultTarget::Import => {
            let message = match code {
                Some(code) => format!("{code}: {message}"),
                None => message,
            };
            import::error_response(status, message)
        }
    };
    if let Some(value) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The OAuth error, AADSTS number and description Entra would plausibly give for `status`.
fn token_error(status: StatusCode) -> (&'static str, u32, &'static str) {
    if status == StatusCode::TOO_MANY_REQUESTS {
        (
            "temporarily_unavailable",
            90055,
            "There are too many incoming requests. Try again later.",
        )
    } else if status.is_server_error() {
        (
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        )
    } else if status == StatusCode::UNAUTHORIZED {
        (
            "invalid_client",
            90100,
            "The request was refused by a fault a test injected.",
        )
    } else {
        (
            "invalid_request",
            90100,
            "The request was refused by a fault a test injected.",
        )
    }
}

/// Graph's error code for `status`: its reason phrase without spaces (`TooManyRequests`,
/// `ServiceUnavailable`, `Forbidden`), except where Graph is known to say something else.
fn graph_code(status: StatusCode) -> String {
    match status {
        StatusCode::UNAUTHORIZED => "InvalidAuthenticationToken".to_owned(),
        StatusCode::INTERNAL_SERVER_ERROR => "generalException".to_owned(),
        _ => match status.canonical_reason() {
            Some(reason) => reason.split_whitespace().collect(),
            None => "generalException".to_owned(),
        },
    }
}

/// Sends the status line, the headers and the first half of `response`'s body, then fails the body
/// stream so that hyper aborts the connection.
pub(crate) async fn break_body(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let head = body.slice(..body.len() / 2);
    let broken = stream::iter([Ok(head)]).chain(stream::once(async {
        // Hyper flushes what it has written while the body is pending; failing at once would drop
        // the connection with the headers still in its buffer.
        tokio::task::yield_now().await;
        Err(std::io::Error::other(
            "connection dropped on purpose by the simulator",
        ))
    }));
    // A length would promise bytes that never come; without one the body goes out chunked.
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from_stream(broken))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            retry_after: None,
            code: None,
        }
    }

    #[test]
    fn each_target_takes_its_own_faults_oldest_first() {
        let mut queue = FaultQueue::default();
        queue.push(FaultTarget::Import, status(503), 2);
        queue.push(FaultTarget::Graph, status(403), 1);
        queue.push(FaultTarget::Import, Fault::DropAfterHandling, 1);
        queue.push(FaultTarget::Token, status(500), 0);

        assert_eq!(queue.take(FaultTarget::Graph), Some(status(403)));
        assert_eq!(queue.take(FaultTarget::Graph), None);
        assert_eq!(queue.take(FaultTarget::Import), Some(status(503)));
        assert_eq!(queue.take(FaultTarget::Import), Some(status(503)));
        assert_eq!(
            queue.take(FaultTarget::Import),
            Some(Fault::DropAfterHandling)
        );
        assert_eq!(queue.take(FaultTarget::Import), None);
        assert_eq!(queue.take(FaultTarget::Token), None);
    }

    #[test]
    fn graph_codes_follow_the_status() {
        assert_eq!(graph_code(StatusCode::TOO_MANY_REQUESTS), "TooManyRequests");
        assert_eq!(
            graph_code(StatusCode::SERVICE_UNAVAILABLE),
            "ServiceUnavailable"
        );
        assert_eq!(graph_code(StatusCode::FORBIDDEN), "Forbidden");
        assert_eq!(
            graph_code(StatusCode::INTERNAL_SERVER_ERROR),
            "generalException"
        );
    }

    #[test]
    #[should_panic(expected = "400-599")]
    fn a_status_fault_must_be_an_error() {
        status(200).check();
    }
}
