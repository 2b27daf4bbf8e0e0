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
mod export;
mod import;
mod items;
mod pacing;
mod per_mailbox;
mod resolve;
mod retry;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use thread_local::ThreadLocal;
use url::Url;

// What the rest of the gateway uses; everything else here is graph's own.
pub(crate) use error::{ErrorKind, GraphError, Missing};
pub(crate) use export::{Exported, MAX_EXPORT_IDS};
pub(crate) use import::{ImportMode, ImportRequest, ImportedItem};
pub(crate) use items::{decode_page_token, Disposal, ItemPage, ItemSummary, PageQuery};
pub(crate) use pacing::MailboxPacer;
pub(crate) use retry::CallContext;

use sessions::SessionCache;

use crate::auth::{AccessToken, Credential, CredentialError, TokenProvider};
use crate::budget::{BudgetError, MemoryBudget, Reservation};
use crate::clock::Clock;
use crate::config::{GraphAccess, ImportHosts, TenantConfig, Timeouts};
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
    /// Single-item reads waiting to share an exportItems call.
    batches: export::ExportBatches,
    /// When tokens and sessions are due for renewal.
    clock: Clock,
    /// Delegated mode: each user's own mailboxes, by (tenant, object id).
    own: Cache<(String, String), resolve::OwnMailboxes>,
    /// Delegated mode: each user's Graph token, by (tenant, object id). Never the raw caller token as a
    /// key; concurrent exchanges for one user are coalesced.
    delegated: Option<Cache<(String, String), AccessToken>>,
}

impl GraphClient {
    /// A client for `tenant` whose mailboxes are paced by `pacer`. Loads the credential now, so a bad
    /// certificate stops start-up.
    pub fn new(
        tenant: &TenantConfig,
        access: GraphAccess,
        timeouts: Timeouts,
        pacer: MailboxPacer,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Result<GraphClient, CredentialError> {
        let credential = Credential::load(&tenant.credential)?;
        Ok(GraphClient {
            tokens: TokenProvider::new(
                http_client(timeouts.connect),
                tenant,
                credential,
                metrics.clone(),
                clock.clone(),
            ),
            http: ThreadLocal::new(),
            graph_url: tenant.graph_url.clone(),
            import_hosts: tenant.import_hosts.clone(),
            timeouts,
            sessions: SessionCache::new(clock.clone()),
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
            batches: export::ExportBatches::default(),
            clock,
            own: Cache::builder()
                .max_capacity(RESOLVED_ID_CAPACITY)
                .time_to_live(RESOLVED_ID_TTL)
                .build(),
            delegated: (access == GraphAccess::Delegated).then(|| {
                Cache::builder()
                    .max_capacity(RESOLVED_ID_CAPACITY)
                    .time_to_live(Duration::from_secs(2 * 60 * 60))
                    .build()
            }),
        })
    }

    /// This thread's HTTP client, built on first use.
    fn http(&self) -> &reqwest::Client {
        self.http.get_or(|| http_client(self.timeouts.connect))
    }

    /// Whether an app token can be had now (for readiness). In delegated mode there is no app token:
    /// tokens come with callers.
    pub async fn check_token(&self) -> Result<(), crate::auth::AuthError> {
        if self.delegated.is_some() {
            return Ok(());
        }
        self.tokens.token().await.map(drop)
    }

    /// The Graph token for a call: the app's, or in delegated mode the user's, exchanged on their behalf
    /// once and reused until it is due for renewal.
    async fn token_for(
        &self,
        context: &CallContext,
        action: &str,
    ) -> Result<AccessToken, GraphError> {
        let (Some(users), Some(user)) = (&self.delegated, &context.user) else {
            if self.delegated.is_some() {
                // Every delegated request carries its user; a call without one is a bug, not a reason to
                // fall back on a token the app may not even be allowed.
                return Err(GraphError::new(
                    action,
                    ErrorKind::InvalidResponse("no user to act for in delegated mode".into()),
                ));
            }
            return self
                .tokens
                .token()
                .await
                .map_err(|e| GraphError::new(action, e.into()));
        };
        let key = (user.tenant_id.clone(), user.oid.clone());
        if let Some(token) = users.get(&key).await {
            if token.is_fresh_at(self.clock.now()) {
                return Ok(token);
            }
            users.invalidate(&key).await;
        }
        users
            .try_get_with(key, async {
                self.tokens.on_behalf_of(&user.token, user.expires_at).await
            })
            .await
            .map_err(|e| {
                // A refusal is Entra's answer about this user; an unreachable endpoint is not.
                let kind = match &*e {
                    crate::auth::AuthError::Rejected { status, .. }
                        if *status != 429 && *status < 500 =>
                    {
                        ErrorKind::Delegation((*e).clone())
                    }
                    other => ErrorKind::Auth(other.clone()),
                };
                GraphError::new(action, kind)
            })
    }

    /// Drops a token Graph refused (401).
    async fn invalidate_token(&self, context: &CallContext, token: &AccessToken) {
        match (&self.delegated, &context.user) {
            (Some(users), Some(user)) => {
                users
                    .invalidate(&(user.tenant_id.clone(), user.oid.clone()))
                    .await;
            }
            _ => self.tokens.invalidate(token),
        }
    }

    /// Calls a Graph endpoint with the app token and reads its JSON answer.
    async fn graph_json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        action: &str,
        endpoint: Endpoint,
        mailbox_id: Option<&str>,
        context: &CallContext,
    ) -> Result<T, GraphError> {
        let call = Call {
            method,
            url,
            json: None,
            action,
            endpoint,
            mailbox_id,
            held: None,
        };
        let (body, _) = self.graph_call(call, context).await?;
        parse_json(&body).map_err(|e| invalid_json(action, e))
    }

    /// Calls a Graph endpoint with the app token and reads its answer's body.
    ///
    /// Calls about a mailbox wait for the mailbox's turn first. A 401 drops the token and tries once more
    /// with a fresh one (Graph did not act on a request it refused); throttling holds the mailbox and, like
    /// timeouts and lost connections, is retried within the request's budget. Every call the gateway
    /// makes through here reads or removes, so trying one again after a lost answer is safe.
    async fn graph_call(
        &self,
        call: Call<'_>,
        context: &CallContext,
    ) -> Result<(Bytes, Option<Reservation>), GraphError> {
        let Call {
            method,
            url,
            json,
            action,
            endpoint,
            mailbox_id,
            held,
        } = call;
        let mut token_renewed = false;
        for attempt in 1.. {
            let permit = match mailbox_id {
                Some(mailbox_id) => Some(self.pacer.acquire(mailbox_id, 0, context).await?),
                None => None,
            };
            let token = self.token_for(context, action).await?;
            let mut request = self
                .http()
                .request(method.clone(), url.clone())
                .bearer_auth(token.bearer())
                .header("client-request-id", &context.request_id)
                .timeout(self.timeouts.request);
            request = match &json {
                Some(json) => request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(json.clone()),
                None if method == Method::POST => {
                    request.header(reqwest::header::CONTENT_LENGTH, 0)
                }
                None => request,
            };
            let answer = match request.send().await {
                Ok(response) => {
                    let (status, headers) = (response.status(), response.headers().clone());
                    let budget = held.filter(|_| status.is_success());
                    read_answer(response, budget)
                        .await
                        .map(|(body, reserved)| (status, headers, body, reserved))
                }
                Err(e) => Err(AnswerError::Transport(e)),
            };
            drop(permit);
            self.metrics.upstream(
                endpoint.label(),
                answer.as_ref().ok().map(|(status, ..)| status.as_u16()),
            );
            let error = match answer {
                Err(AnswerError::Transport(e)) => transport_error(action, e),
                Err(AnswerError::Budget(e)) => {
                    return Err(GraphError::new(action, ErrorKind::Budget(e)))
                }
                Ok((status, _, body, reserved)) if status.is_success() => {
                    return Ok((body, reserved));
                }
                Ok((StatusCode::UNAUTHORIZED, ..)) if !token_renewed => {
                    tracing::info!("Graph refused the token; requesting a new one");
                    self.invalidate_token(context, &token).await;
                    self.metrics.retry("token_refused");
                    token_renewed = true;
                    continue;
                }
                Ok((status, headers, body, _)) => {
                    let answer = upstream_answer(status, &headers, &body);
                    tracing::warn!(
                        status = status.as_u16(),
                        code = answer.code.as_deref(),
                        request_id = answer.request_id.as_deref(),
                        "{action} failed"
                    );
                    let mut kind = endpoint.classify(status, &headers, answer.code.as_deref());
                    // Acting for a user, a 403 is Exchange saying the mailbox is not theirs to touch.
                    if context.user.is_some() && matches!(kind, ErrorKind::Forbidden) {
                        kind = ErrorKind::NotTheUsers;
                    }
                    GraphError {
                        action: action.to_owned(),
                        kind,
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

    /// Gives back the mailbox permits this replica has let go of but the shared store has not heard of
    /// yet; for a replica about to stop.
    pub async fn give_back_permits(&self) {
        self.pacer.give_back_now().await;
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

/// One call to Graph: what to send, where, and what the answer's bytes are held against.
struct Call<'a> {
    method: Method,
    url: Url,
    /// A JSON body; calls without one send none (a POST says `Content-Length: 0`).
    json: Option<Bytes>,
    /// What the gateway was doing, for errors and logs.
    action: &'a str,
    endpoint: Endpoint,
    /// The mailbox the call is about, which waits for the mailbox's turn.
    mailbox_id: Option<&'a str>,
    /// The memory budget a successful answer's body is reserved from as it arrives (large answers).
    /// Counted as the client's (the name), within its share of the budget.
    held: Option<(&'a MemoryBudget, &'a str)>,
}

/// Why an answer could not be read.
enum AnswerError {
    Transport(reqwest::Error),
    Budget(BudgetError),
}

/// Reads an answer's body. With a budget, its bytes are reserved before they are kept (the announced
/// length at once, else as they arrive), and the buffer is allocated once for an announced length.
async fn read_answer(
    mut response: reqwest::Response,
    budget: Option<(&MemoryBudget, &str)>,
) -> Result<(Bytes, Option<Reservation>), AnswerError> {
    let Some((budget, client)) = budget else {
        let body = response.bytes().await.map_err(AnswerError::Transport)?;
        return Ok((body, None));
    };
    let mut reserved = budget.empty_for(client);
    let announced = response
        .content_length()
        .and_then(|n| usize::try_from(n).ok());
    if let Some(announced) = announced {
        budget
            .grow(&mut reserved, announced)
            .await
            .map_err(AnswerError::Budget)?;
    }
    let mut body = Vec::with_capacity(announced.unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(AnswerError::Transport)? {
        let needed = (body.len() + chunk.len()).saturating_sub(reserved.bytes());
        if needed > 0 {
            budget
                .grow(&mut reserved, needed)
                .await
                .map_err(AnswerError::Budget)?;
        }
        body.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(body), Some(reserved)))
}

/// Reads a successful answer's JSON.
fn parse_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(body)
}

/// The error for a successful answer whose JSON is not what the endpoint documents.
fn invalid_json(action: &str, error: serde_json::Error) -> GraphError {
    GraphError::new(
        action,
        ErrorKind::InvalidResponse(format!("unexpected JSON: {error}")),
    )
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
    /// `.../exportItems`.
    Export,
    /// `.../folders/{id}/items`.
    Items,
    /// `.../folders/{id}/items/{id}`.
    Item,
    /// `DELETE .../folders/{id}/items/{id}`.
    Delete,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::Users => "users",
            Endpoint::Folder => "folder",
            Endpoint::Folders => "folders",
            Endpoint::Session => "session",
            Endpoint::Export => "export",
            Endpoint::Items => "items",
            Endpoint::Item => "item",
            Endpoint::Delete => "delete",
        }
    }

    fn missing(self) -> Missing {
        match self {
            Endpoint::Folder | Endpoint::Items => Missing::Folder,
            Endpoint::Item | Endpoint::Delete => Missing::Item,
            Endpoint::Users | Endpoint::Folders | Endpoint::Session | Endpoint::Export => {
                Missing::Mailbox
            }
        }
    }

    /// The kind of a non-2xx answer from this endpoint. A 403 to a delete is Exchange keeping the item
    /// (a hold or retention); elsewhere it is a permission the app lacks.
    fn classify(self, status: StatusCode, headers: &HeaderMap, code: Option<&str>) -> ErrorKind {
        match (
            self,
            classify_graph_status(status, headers, code, self.missing()),
        ) {
            (Endpoint::Delete, ErrorKind::Forbidden) => ErrorKind::DeleteRefused,
            (_, kind) => kind,
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
