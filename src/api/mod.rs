//! The gateway's HTTP API (version 1): routes, request checks and responses.
//!
//! Handlers check everything they can locally (ids, headers, size, the item stream) before the first
//! Graph call, then hand over to [`crate::graph::GraphClient`]. Failures become problem responses in
//! [`error`].

mod audit;
mod error;
mod export;
mod import_task;
mod input;
mod items;
mod read;
mod request_id;
mod unread;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Extension, Json, Router};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use error::{ApiError, Problem};
pub use export::{entry_name, ERROR_ENTRY, INDEX_ENTRY};
pub use input::IDEMPOTENCY_KEY;
pub use items::IDEMPOTENT_REPLAYED;
pub use request_id::X_REQUEST_ID;

use crate::access::{Client, Operation};
use crate::app::AppState;
use crate::graph::CallContext;
use crate::ids::{FolderRef, MailboxRef};
use items::{create_item, import_item_json, update_item};
use request_id::{assign_request_id, graph_client_request_id};

/// The OpenAPI description of this API, served at `/openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

const ITEMS: &str = "/v1/mailboxes/{mailbox}/folders/{folder}/items";
const ITEM: &str = "/v1/mailboxes/{mailbox}/folders/{folder}/items/{itemId}";
const IMPORT_ITEM: &str = "/v1/mailboxes/{mailbox}/importItem";
const FOLDERS: &str = "/v1/mailboxes/{mailbox}/folders";
const EXPORT_FOLDER: &str = "/v1/mailboxes/{mailbox}/folders/{folder}/export";
const EXPORT_ITEMS: &str = "/v1/mailboxes/{mailbox}/exportItems";

/// Whether a route needs an authenticated client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guard {
    Open,
    Client,
}

/// Every route: method, path, handler and guard. The router is built from this table, and a test checks
/// it against `openapi.yaml` in both directions.
fn routes() -> Vec<(Method, &'static str, MethodRouter<AppState>, Guard)> {
    vec![
        (Method::POST, ITEMS, post(create_item), Guard::Client),
        (Method::PUT, ITEM, put(update_item), Guard::Client),
        (
            Method::POST,
            IMPORT_ITEM,
            post(import_item_json),
            Guard::Client,
        ),
        (Method::GET, FOLDERS, get(list_folders), Guard::Client),
        (Method::GET, ITEMS, get(read::list_items), Guard::Client),
        (Method::GET, ITEM, get(read::get_item), Guard::Client),
        (
            Method::DELETE,
            ITEM,
            delete(read::delete_item),
            Guard::Client,
        ),
        (
            Method::GET,
            EXPORT_FOLDER,
            get(export::export_folder),
            Guard::Client,
        ),
        (
            Method::POST,
            EXPORT_ITEMS,
            post(read::export_items_json),
            Guard::Client,
        ),
        (Method::GET, "/healthz", get(healthz), Guard::Open),
        (Method::GET, "/readyz", get(readyz), Guard::Open),
        (Method::GET, "/openapi.yaml", get(openapi), Guard::Open),
        (Method::GET, "/metrics", get(metrics), Guard::Open),
    ]
}

/// The method and path of every route, for the OpenAPI conformance test.
pub fn route_table() -> Vec<(Method, &'static str)> {
    routes()
        .into_iter()
        .map(|(method, path, _, _)| (method, path))
        .collect()
}

/// Assembles every route and layer of the gateway.
pub fn router(state: AppState) -> Router {
    let (mut open, mut guarded) = (Router::new(), Router::new());
    for (_, path, handler, guard) in routes() {
        match guard {
            Guard::Open => open = open.route(path, handler),
            Guard::Client => guarded = guarded.route(path, handler),
        }
    }
    // Only matched, guarded routes authenticate; health checks and the spec stay open. Inside it, every
    // refusal of an authenticated client's request that has no audit line yet gets one.
    let guarded = guarded
        .route_layer(axum::middleware::from_fn(audit_refusals))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    open.merge(guarded)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Per route (Router::layer), so the matched route template is known for the metrics label.
        .layer(axum::middleware::from_fn_with_state(state.clone(), measure))
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
            tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path(), client = tracing::field::Empty)
        }))
        // Around everything that may answer before reading the body (authentication included).
        .layer(axum::middleware::from_fn(unread::close_when_unread))
        // Outermost, so every response, including the fallbacks' and panics', carries the request id.
        .layer(axum::middleware::from_fn(assign_request_id))
}

/// `GET /v1/mailboxes/{mailbox}/folders`: every folder of the mailbox, all pages followed.
async fn list_folders(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(mailbox) = path?;
    let mailbox = MailboxRef::parse(&mailbox).map_err(ApiError::InvalidMailbox)?;
    authorize(&state, &client, &mailbox, Operation::ListFolders)?;
    let context = graph_context(&state, &client);
    let mailbox_id = state.graph.resolve_mailbox(&mailbox, &context).await?;
    let folders = state.graph.list_folders(&mailbox_id, &context).await?;
    Ok(Json(json!({ "mailboxId": mailbox_id, "value": folders })).into_response())
}

/// Middleware: lets in only authenticated clients, and hands the client to the handler.
async fn authenticate(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match state.access.authenticate(request.headers()).await {
        Ok(client) => {
            tracing::Span::current().record("client", client.name.as_str());
            request.extensions_mut().insert(client);
            next.run(request).await
        }
        Err(reason) => {
            // The reason is for the operator's log; the client only learns that it is not let in.
            tracing::info!(%reason, "client not authenticated");
            audit::unauthenticated(request.method(), request.uri().path());
            ApiError::Unauthenticated.into_response()
        }
    }
}

/// Writes the audit line of a refused request that has none yet (imports and denials write their own).
async fn audit_refusals(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let client = request
        .extensions()
        .get::<Client>()
        .map_or_else(|| "-".to_owned(), |client| client.name.clone());
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "-".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    if status.as_u16() >= 400 && response.extensions().get::<audit::Audited>().is_none() {
        let code = response
            .extensions()
            .get::<audit::ProblemCode>()
            .map_or("-", |code| code.0);
        audit::refused(&client, &method, &route, status, code);
    }
    response
}

/// Refuses, before any Graph call, what the client's rules do not allow.
fn authorize(
    state: &AppState,
    client: &Client,
    mailbox: &MailboxRef,
    operation: Operation,
) -> Result<(), ApiError> {
    if state.access.allows(client, mailbox, operation) {
        Ok(())
    } else {
        let error = ApiError::Forbidden {
            client: client.name.clone(),
            operation,
            mailbox: mailbox.to_string(),
        };
        audit::denied(client, mailbox, operation, &error);
        Err(error)
    }
}

/// The Graph call context of one client request: its `client-request-id` and retry budget.
fn graph_context(state: &AppState, client: &Client) -> CallContext {
    CallContext::new(graph_client_request_id(), state.retry).acting_for(client.user.clone())
}

/// The ids of a mailbox and one of its folders, as clients name them.
async fn resolve(
    state: &AppState,
    mailbox: &MailboxRef,
    folder: &FolderRef,
    context: &CallContext,
) -> Result<(String, String), crate::graph::GraphError> {
    let mailbox_id = state.graph.resolve_mailbox(mailbox, context).await?;
    let folder_id = state
        .graph
        .resolve_folder(&mailbox_id, folder, context)
        .await?;
    Ok((mailbox_id, folder_id))
}

/// `GET /healthz`: the process is up. Cheap by design.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: configuration is loaded, an app token can be had, and the gateway is not shutting down.
/// A shared store that does not answer is reported but keeps the replica ready: imports without an
/// `Idempotency-Key` go on under degraded limits, and taking every replica out of service would stop them.
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.is_shutting_down() {
        return Err(ApiError::NotReady("the gateway is shutting down".into()));
    }
    state.graph.check_token().await.map_err(|error| {
        // The cause (which may name a credential file's path) is for the operator's log; the open
        // probe says only which kind of trouble it is.
        tracing::warn!(%error, "not ready: no app token can be had");
        ApiError::NotReady(readiness_problem(&error))
    })?;
    let shared_state = match &state.store {
        None => json!({ "store": "memory", "up": true }),
        Some(store) => json!({ "store": "redis", "up": store.is_up() }),
    };
    Ok(Json(json!({
        "status": "ready",
        "memoryBudget": {
            "totalBytes": state.budget.total(),
            "availableBytes": state.budget.available(),
        },
        "sharedState": shared_state,
    })))
}

/// What the open `/readyz` says about a token failure: the AADSTS code when Entra ID refused the
/// credential (it is what an operator looks up), never a file path or other detail of the configuration,
/// which the log has.
fn readiness_problem(error: &crate::auth::AuthError) -> String {
    use crate::auth::AuthError;
    match error {
        AuthError::Rejected {
            aadsts: Some(code), ..
        } => format!("the token endpoint refused the app's credential ({code})"),
        AuthError::Rejected { .. } => "the token endpoint refused the app's credential".into(),
        AuthError::Unreachable(_) => "the token endpoint could not be reached".into(),
        _ => "no app token can be had; the gateway's log says why".into(),
    }
}

/// `GET /metrics`: counters, gauges and histograms in the Prometheus text format. Open like the health
/// checks: it holds no mailbox id, address or secret.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

/// Middleware: times each answered request by route template, method and status, and counts requests
/// in flight.
async fn measure(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().clone();
    let _in_flight = state.metrics.request_in_flight();
    let response = next.run(request).await;
    state.metrics.http_answered(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// `GET /openapi.yaml`: this API's description.
async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML)
}

async fn route_not_found(uri: axum::http::Uri) -> ApiError {
    let path = uri.path();
    // Item and folder ids hold '/', so an id sent unencoded splits into more segments than any route has.
    let segments = path.trim_end_matches('/').split('/').count() - 1;
    if path.starts_with("/v1/mailboxes/") && segments > 7 {
        return ApiError::RouteNotFound(format!(
            "{path}: it has more segments than any route; item and folder ids contain '/', '+' and '=', \
             so percent-encode each id as one path segment ('/' as %2F, '+' as %2B, '=' as %3D)"
        ));
    }
    ApiError::RouteNotFound(path.to_owned())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use secrecy::SecretString;
    use sha2::{Digest, Sha256};
    use tower::ServiceExt;

    use super::*;
    use crate::access::{parse_rules, AccessConfig, AuthConfig};
    use crate::config::{Config, CredentialConfig, ImportHosts, TenantConfig};

    /// A gateway whose one client `appliance` has the key `key-1`, and the audit lines it writes.
    fn gateway() -> (Router, Arc<Mutex<Vec<u8>>>) {
        let tenant = TenantConfig {
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            credential: CredentialConfig::Secret(SecretString::from("unused".to_owned())),
            authority_host: "http://127.0.0.1:9".parse().unwrap(),
            graph_url: "http://127.0.0.1:9/v1.0".parse().unwrap(),
            import_hosts: ImportHosts::parse("http://127.0.0.1:9").unwrap(),
        };
        let config = Config {
            access: AccessConfig {
                auth: AuthConfig::ApiKeys(vec![("appliance".into(), Sha256::digest(b"key-1").into())]),
                rules: parse_rules(r#"[{"client":"appliance","mailboxes":["*@contoso.com"],"operations":["create","update"]}]"#)
                    .unwrap(),
            },
            max_item_bytes: 1024,
            ..Config::new(tenant)
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        (router(AppState::new(&config).unwrap()), lines)
    }

    #[tokio::test]
    async fn every_refused_request_leaves_one_audit_line_with_status_code_and_the_gateways_own_id()
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::Layer;
        let (router, lines) = gateway();
        let writer = {
            let lines = lines.clone();
            move || Capture(lines.clone())
        };
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(writer)
                .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                    m.target() == "audit"
                })),
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        let send = |key: Option<&str>, content_type: &str, body: &'static [u8]| {
            let mut request =
                http::Request::post("/v1/mailboxes/adele@contoso.com/folders/inbox/items")
                    .header("content-type", content_type)
                    .header("x-request-id", "same-id");
            if let Some(key) = key {
                request = request.header("x-api-key", key);
            }
            router
                .clone()
                .oneshot(request.body(Body::from(body)).unwrap())
        };
        assert_eq!(
            send(None, "application/octet-stream", b"x")
                .await
                .unwrap()
                .status(),
            401
        );
        assert_eq!(
            send(Some("key-1"), "text/plain", b"x")
                .await
                .unwrap()
                .status(),
            415
        );
        assert_eq!(
            send(Some("key-1"), "application/octet-stream", &[0; 2048])
                .await
                .unwrap()
                .status(),
            413
        );
        let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let field = |i: usize, name: &str| events[i]["fields"][name].clone();
        assert_eq!(events.len(), 3, "{text}");
        assert_eq!(field(0, "message"), "unauthenticated");
        assert_eq!(
            (field(0, "status"), field(0, "code")),
            (401.into(), "unauthenticated".into())
        );
        assert_eq!(field(1, "message"), "refused");
        assert_eq!(field(1, "client"), "appliance");
        assert_eq!(field(1, "code"), "unsupported_media_type");
        assert_eq!(
            (field(2, "status"), field(2, "code")),
            (413.into(), "item_too_large".into())
        );
        // The client's id is the same on all three; the gateway's own never is.
        let own: std::collections::BTreeSet<String> = (0..3)
            .map(|i| field(i, "gateway_request_id").to_string())
            .collect();
        assert_eq!(own.len(), 3, "{text}");
        assert!((0..3).all(|i| field(i, "request_id") == "same-id"));
    }

    /// A writer into a shared buffer, for capturing log lines.
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
