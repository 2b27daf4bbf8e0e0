//! Gives every request an id: the client's `X-Request-Id` when it is sane, else a fresh GUID.
//!
//! The id is echoed in the response, logged with the request, put in problem bodies and sent to Graph as
//! `client-request-id`. It is kept in a task-local for the duration of the request so that the one place
//! that renders errors can reach it without threading it through every function.

use std::future::Future;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The request id header, in and out.
pub const X_REQUEST_ID: &str = "x-request-id";
/// Longest client-supplied request id kept.
const MAX_REQUEST_ID_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_IDS: RequestIds;
}

#[derive(Clone)]
struct RequestIds {
    id: String,
    /// A GUID, as Graph wants for `client-request-id`: the request id itself when it is one.
    graph: String,
    /// The gateway's own id for the request, always fresh: two requests can share a client's id, never
    /// this one.
    own: String,
}

/// Middleware: assigns the id, runs the request with it in scope, and echoes it.
pub async fn assign_request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let header = HeaderValue::from_str(&id).expect("a sane id is a valid header value");
    request.headers_mut().insert(X_REQUEST_ID, header.clone());
    let graph = match uuid::Uuid::parse_str(&id) {
        Ok(guid) => guid.to_string(),
        Err(_) => uuid::Uuid::new_v4().to_string(),
    };
    if graph != id {
        tracing::debug!(request_id = %id, client_request_id = %graph, "request id is not a GUID");
    }
    let own = uuid::Uuid::new_v4().to_string();
    let mut response = REQUEST_IDS
        .scope(RequestIds { id, graph, own }, next.run(request))
        .await;
    response.headers_mut().insert(X_REQUEST_ID, header);
    response
}

/// Runs `future` (typically on a task of its own) with the current request's ids in scope.
pub fn carry_request_id<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let ids = REQUEST_IDS.try_with(Clone::clone).ok();
    async move {
        match ids {
            Some(ids) => REQUEST_IDS.scope(ids, future).await,
            None => future.await,
        }
    }
}

/// The current request's id, or `-` outside a request.
pub fn current_request_id() -> String {
    REQUEST_IDS
        .try_with(|ids| ids.id.clone())
        .unwrap_or_else(|_| "-".to_owned())
}

/// The gateway's own id for the current request (never the client's), or `-` outside a request.
pub fn gateway_request_id() -> String {
    REQUEST_IDS
        .try_with(|ids| ids.own.clone())
        .unwrap_or_else(|_| "-".to_owned())
}

/// The GUID to send Graph as `client-request-id` for the current request.
pub fn graph_client_request_id() -> String {
    REQUEST_IDS
        .try_with(|ids| ids.graph.clone())
        .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string())
}

fn is_sane(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}
