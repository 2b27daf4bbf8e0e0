//! Calls Microsoft Graph and the importItem endpoint for one tenant: resolves mailboxes and folders, keeps
//! import sessions, and imports items.
//!
//! This module and `auth` are the only ones that make outbound HTTP calls, and neither knows anything of
//! axum. Every call carries a `client-request-id`; every failure becomes a classified [`GraphError`].
//!
//! One concern per file: `resolve` turns addresses and well-known names into ids and lists folders,
//! `import` is the import protocol (sessions, the post, what each answer means), `pacing` keeps each
//! mailbox within its limits, `error` classifies every answer, and this file holds the client and its
//! one way of calling Graph (`graph_json`).

mod body;
mod error;
mod import;
mod pacing;
mod per_mailbox;
mod resolve;
mod retry;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use thread_local::ThreadLocal;
use url::Url;

// What the rest of the gateway uses; everything else here is graph's own.
pub(crate) use error::{ErrorKind, GraphError, Missing};
pub(crate) use import::{ImportMode, ImportRequest, ImportedItem};
pub(crate) use pacing::MailboxPacer;
pub(crate) use retry::CallContext;

use sessions::SessionCache;

use crate::auth::{Credential, CredentialError, TokenProvider};
use crate::config::{ImportHosts, TenantConfig, Timeouts};
use crate::metrics::Metrics;
use error::{classify_graph_status, transport_error, upstream_answer};

/// How long a resolved mailbox or folder id is trusted before it is looked up again.
const RESOLVED_ID_TTL: Duration = Duration::from_secs(60 * 60);
/// How many resolved ids are kept, per kind.
const RESOLVED_ID_CAPACITY: u64 = 100_000;

/// A Graph client for one tenant, with its token, sessions and resolved ids.
pub struct GraphClient {
    /// One HTTP client, and so one connection pool, per thread: the gateway serves each connection on
    /// one worker thread (`server::Workers`), and an upstream connection used by the thread that opened
    /// it needs no cross-thread wake-up per request.
    http: ThreadLocal<reqwest::Client>,
    graph_url: Url,
    import_hosts: ImportHosts,
    timeouts: Timeouts,
    tokens: TokenProvider,
    sessions: SessionCache,
    pacer: MailboxPacer,
    metrics: Arc<Metrics>,
    /// Lower-cased address to mailbox id. moka coalesces concurrent look-ups of the same key.
    mailboxes: Cache<String, String>,
    /// (mailbox id, well-known name) to folder id.
    folders: Cache<(String, &'static str), String>,
}

impl GraphClient {
    /// A client for `tenant` whose mailboxes are paced by `pacer`. Loads the credential now, so a bad
    /// certificate stops start-up.
    pub fn new(
        tenant: &TenantConfig,
        timeouts: Timeouts,
        pacer: MailboxPacer,
        metrics: Arc<Metrics>,
    ) -> Result<GraphClient, CredentialError> {
        let credential = Credential::load(&tenant.credential)?;
        Ok(GraphClient {
            tokens: TokenProvider::new(
                http_client(timeouts.connect),
                tenant,
                credential,
                metrics.clone(),
            ),
            http: ThreadLocal::new(),
            graph_url: tenant.graph_url.clone(),
            import_hosts: tenant.import_hosts.clone(),
            timeouts,
            sessions: SessionCache::default(),
            pacer,
            metrics,
            mailboxes: Cache::builder()
                .max_capacity(RESOLVED_ID_CAPACITY)
                .time_to_live(RESOLVED_ID_TTL)
                .build(),
            folders: Cache::builder()
                .max_capacity(RESOLVED_ID_CAPACITY)
                .time_to_live(RESOLVED_ID_TTL)
                .build(),
        })
    }

    /// This thread's HTTP client, built on first use.
    fn http(&self) -> &reqwest::Client {
        self.http.get_or(|| http_client(self.timeouts.connect))
    }

    /// Whether an app token can be had now (for readiness).
    pub async fn check_token(&self) -> Result<(), crate::auth::AuthError> {
        self.tokens.token().await.map(drop)
    }

    /// Calls a Graph endpoint with the app token and reads its JSON answer.
    ///
    /// Calls about a mailbox wait for the mailbox's turn first. A 401 drops the token and tries once more
    /// with a fresh one (Graph did not act on a request it refused); throttling holds the mailbox and, like
    /// timeouts and lost connections, is retried within the request's budget.
    async fn graph_json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        action: &str,
        endpoint: Endpoint,
        mailbox_id: Option<&str>,
        context: &CallContext,
    ) -> Result<T, GraphError> {
        let mut token_renewed = false;
        for attempt in 1.. {
            let permit = match mailbox_id {
                Some(mailbox_id) => Some(self.pacer.acquire(mailbox_id, 0, context).await?),
                None => None,
            };
            let token = self
                .tokens
                .token()
                .await
                .map_err(|e| GraphError::new(action, e.into()))?;
            let mut request = self
                .http()
                .request(method.clone(), url.clone())
                .bearer_auth(token.bearer())
                .header("client-request-id", &context.request_id)
                .timeout(self.timeouts.request);
            if method == Method::POST {
                request = request.header(reqwest::header::CONTENT_LENGTH, 0);
            }
            let answer = match request.send().await {
                Ok(response) => {
                    let (status, headers) = (response.status(), response.headers().clone());
                    response.bytes().await.map(|body| (status, headers, body))
                }
                Err(e) => Err(e),
            };
            if let Some(permit) = permit {
                permit.release().await;
            }
            self.metrics.upstream(
                endpoint.label(),
                answer.as_ref().ok().map(|(status, ..)| status.as_u16()),
            );
            let error = match answer {
                Err(e) => transport_error(action, e),
                Ok((status, _, body)) if status.is_success() => {
                    return serde_json::from_slice(&body).map_err(|e| {
                        GraphError::new(
                            action,
                            ErrorKind::InvalidResponse(format!("unexpected JSON: {e}")),
                        )
                    });
                }
                Ok((StatusCode::UNAUTHORIZED, _, _)) if !token_renewed => {
                    tracing::info!("Graph refused the app token; requesting a new one");
                    self.tokens.invalidate(&token);
                    self.metrics.retry("token_refused");
                    token_renewed = true;
                    continue;
                }
                Ok((status, headers, body)) => {
                    let answer = upstream_answer(status, &headers, &body);
                    tracing::warn!(
                        status = status.as_u16(),
                        code = answer.code.as_deref(),
                        request_id = answer.request_id.as_deref(),
                        "{action} failed"
                    );
                    GraphError {
                        action: action.to_owned(),
                        kind: classify_graph_status(
                            status,
                            &headers,
                            answer.code.as_deref(),
                            endpoint.missing(),
                        ),
                        upstream: Some(answer),
                    }
                }
            };
            self.note_throttling(mailbox_id, &error).await;
            let reason = retry_reason(&error);
            context.before_retry(error, attempt).await?;
            self.metrics.retry(reason);
        }
        unreachable!("the attempts are bounded by the budget")
    }

    /// Holds the mailbox when the upstream throttled it and said for how long.
    async fn note_throttling(&self, mailbox_id: Option<&str>, error: &GraphError) {
        if let (
            Some(mailbox_id),
            ErrorKind::Throttled {
                retry_after: Some(wait),
            },
        ) = (mailbox_id, &error.kind)
        {
            self.pacer.hold(mailbox_id, *wait).await;
        }
    }

    /// `{graph}/seg/seg/...`, each segment percent-encoded, so no id can change the path or query.
    fn graph_endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.graph_url.clone();
        url.path_segments_mut()
            .expect("the Graph URL is an http(s) URL")
            .pop_if_empty()
            .extend(segments);
        url
    }
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("graph_url", &self.graph_url.as_str())
            .field("import_hosts", &self.import_hosts)
            .finish_non_exhaustive()
    }
}

/// The Graph endpoints the gateway calls: a metrics label, and what a 404 from each means.
#[derive(Clone, Copy, Debug)]
enum Endpoint {
    /// `users/{upn}/settings/exchange`.
    Users,
    /// `.../folders/{name}`.
    Folder,
    /// `.../folders`.
    Folders,
    /// `.../createImportSession`.
    Session,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::Users => "users",
            Endpoint::Folder => "folder",
            Endpoint::Folders => "folders",
            Endpoint::Session => "session",
        }
    }

    fn missing(self) -> Missing {
        match self {
            Endpoint::Folder => Missing::Folder,
            Endpoint::Users | Endpoint::Folders | Endpoint::Session => Missing::Mailbox,
        }
    }
}

/// The metrics label for why a call is tried again.
fn retry_reason(error: &GraphError) -> &'static str {
    match error.kind {
        ErrorKind::Throttled { .. } => "throttled",
        ErrorKind::Timeout { .. } => "timeout",
        _ => "unreachable",
    }
}

/// The gateway's upstream HTTP client: pooled keep-alive connections (HTTP/2 where the server offers
/// it), redirects only within an origin.
fn http_client(connect_timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .redirect(same_origin_redirects())
        .user_agent(concat!("mailbox-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client's TLS set-up is static")
}

/// Follows redirects only within the origin that was asked, so a bearer token never travels elsewhere.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if attempt.previous().len() > 5 || !same_origin {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}
