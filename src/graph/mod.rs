//! Calls Microsoft Graph and the importItem endpoint for one tenant: resolves mailboxes and folders, keeps
//! import sessions, and imports items.
//!
//! This module and `auth` are the only ones that make outbound HTTP calls, and neither knows anything of
//! axum. Every call carries a `client-request-id`; every failure becomes a classified [`GraphError`].

mod body;
mod error;
mod pacing;
mod per_mailbox;
mod retry;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thread_local::ThreadLocal;
use url::Url;

// What the rest of the gateway uses; everything else here is graph's own.
pub(crate) use error::{ErrorKind, GraphError, Missing};
pub(crate) use pacing::MailboxPacer;
pub(crate) use retry::CallContext;

use body::ImportBody;
use sessions::{ImportSession, SessionCache};

use crate::auth::{Credential, CredentialError, TokenProvider};
use crate::config::{ImportHosts, TenantConfig, Timeouts};
use crate::ids::{FolderRef, MailboxRef};
use crate::metrics::Metrics;
use error::{classify_graph_status, import_transport_error, transport_error, upstream_answer};

/// How long a resolved mailbox or folder id is trusted before it is looked up again.
const RESOLVED_ID_TTL: Duration = Duration::from_secs(60 * 60);
/// How many resolved ids are kept, per kind.
const RESOLVED_ID_CAPACITY: u64 = 100_000;
/// Extra time an import may take per MiB of item, on top of the request timeout, so large items are not
/// cut off on a slow link.
const IMPORT_TIME_PER_MIB: Duration = Duration::from_secs(1);
/// Most pages of folders followed, so a misbehaving `@odata.nextLink` cannot loop forever.
const MAX_FOLDER_PAGES: usize = 1000;

/// A folder of a mailbox, as Graph describes it (the fields the gateway passes on).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MailboxFolder {
    pub id: String,
    pub display_name: Option<String>,
    pub parent_folder_id: Option<String>,
    pub well_known_name: Option<String>,
    #[serde(rename = "type")]
    pub folder_type: Option<String>,
    pub total_item_count: Option<u64>,
    pub child_folder_count: Option<u64>,
}

/// Create a new item, or replace an existing one whose change key is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportMode {
    Create,
    Update { item_id: String, change_key: String },
}

/// One item to import: where, how, and its raw item stream.
#[derive(Clone, Debug)]
pub struct ImportRequest {
    /// The folder id (already resolved from any well-known name).
    pub folder_id: String,
    pub mode: ImportMode,
    /// The raw item stream; shared, so a retry sends it again without a copy.
    pub data: Bytes,
}

/// What Exchange answered for an imported item.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImportedItem {
    pub item_id: String,
    pub change_key: String,
    /// Graph's `request-id` for the import, for support cases; not part of the JSON.
    #[serde(skip)]
    pub graph_request_id: Option<String>,
}

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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExchangeSettings {
    primary_mailbox_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionAnswer {
    import_url: String,
    expiration_date_time: String,
}

#[derive(Deserialize)]
struct FolderPage {
    value: Vec<MailboxFolder>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

/// Why one importItem attempt failed.
enum AttemptError {
    /// The importUrl refused its session (401/403): the service did not act on the request.
    SessionRefused(GraphError),
    /// The folder lives in another mailbox (an auto-expanded archive) whose session is needed.
    WrongMailbox(String, GraphError),
    Other(GraphError),
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

    /// The mailbox id for a mailbox reference; addresses are resolved once and cached.
    pub async fn resolve_mailbox(
        &self,
        mailbox: &MailboxRef,
        context: &CallContext,
    ) -> Result<String, GraphError> {
        let address = match mailbox {
            MailboxRef::Id(id) => return Ok(id.clone()),
            MailboxRef::Address(address) => address,
        };
        self.mailboxes
            .try_get_with_by_ref(address, async {
                let action = format!("looking up the mailbox of {address}");
                let url = self.graph_endpoint(&["users", address, "settings", "exchange"]);
                let settings: ExchangeSettings = self
                    .graph_json(Method::GET, url, &action, Endpoint::Users, None, context)
                    .await?;
                match settings
                    .primary_mailbox_id
                    .as_deref()
                    .map(MailboxRef::parse)
                {
                    Some(Ok(MailboxRef::Id(id))) => Ok(id),
                    _ => Err(GraphError::new(
                        action,
                        ErrorKind::InvalidResponse("no valid primaryMailboxId".into()),
                    )),
                }
            })
            .await
            .map_err(std::sync::Arc::unwrap_or_clone)
    }

    /// The folder id for a folder reference; well-known names are resolved once per mailbox and cached.
    pub async fn resolve_folder(
        &self,
        mailbox_id: &str,
        folder: &FolderRef,
        context: &CallContext,
    ) -> Result<String, GraphError> {
        let name = match folder {
            FolderRef::Id(id) => return Ok(id.clone()),
            FolderRef::WellKnown(name) => *name,
        };
        self.folders
            .try_get_with((mailbox_id.to_owned(), name), async {
                let action = format!("looking up the {name} folder of {mailbox_id}");
                let url = self.graph_endpoint(&[
                    "admin",
                    "exchange",
                    "mailboxes",
                    mailbox_id,
                    "folders",
                    name,
                ]);
                let folder: MailboxFolder = self
                    .graph_json(
                        Method::GET,
                        url,
                        &action,
                        Endpoint::Folder,
                        Some(mailbox_id),
                        context,
                    )
                    .await?;
                Ok(folder.id)
            })
            .await
            .map_err(std::sync::Arc::unwrap_or_clone)
    }

    /// Every folder of the mailbox, following `@odata.nextLink` to the last page.
    pub async fn list_folders(
        &self,
        mailbox_id: &str,
        context: &CallContext,
    ) -> Result<Vec<MailboxFolder>, GraphError> {
        let action = format!("listing the folders of {mailbox_id}");
        let mut url =
            self.graph_endpoint(&["admin", "exchange", "mailboxes", mailbox_id, "folders"]);
        let mut folders = Vec::new();
        for _ in 0..MAX_FOLDER_PAGES {
            let page: FolderPage = self
                .graph_json(
                    Method::GET,
                    url,
                    &action,
                    Endpoint::Folders,
                    Some(mailbox_id),
                    context,
                )
                .await?;
            folders.extend(page.value);
            let Some(next) = page.next_link else {
                return Ok(folders);
            };
            // The bearer token goes wherever nextLink points: only ever to Graph itself.
            url = match Url::parse(&next) {
                Ok(next) if next.origin() == self.graph_url.origin() => next,
                _ => {
                    return Err(GraphError::new(
                        action,
                        ErrorKind::InvalidResponse("@odata.nextLink points away from Graph".into()),
                    ))
                }
            };
        }
        Err(GraphError::new(
            action,
            ErrorKind::InvalidResponse(format!("more than {MAX_FOLDER_PAGES} pages of folders")),
        ))
    }

    /// Imports one item into a mailbox: takes (or creates) the mailbox's session, waits for the mailbox's
    /// turn, posts the item, renews a refused session once, follows the documented archive redirect once,
    /// and retries throttling within the request's budget. An import whose outcome is unknown is never
    /// sent again.
    pub async fn import_item(
        &self,
        mailbox_id: &str,
        request: &ImportRequest,
        context: &CallContext,
    ) -> Result<ImportedItem, GraphError> {
        let mut target = mailbox_id.to_owned();
        let (mut renewed, mut redirected) = (false, false);
        for attempt in 1.. {
            let session = self
                .sessions
                .get(&target, || self.create_import_session(&target, context))
                .await?;
            let permit = self
                .pacer
                .acquire(&target, request.data.len() as u64, context)
                .await?;
            if !session.is_fresh() {
                // The session aged past its renewal margin while this request waited for its turn.
                continue;
            }
            let outcome = self.post_item(&target, &session, request, context).await;
            permit.release().await;
            match outcome {
                Ok(item) => return Ok(item),
                Err(AttemptError::SessionRefused(_)) if !renewed => {
                    tracing::info!(mailbox = %target, "import session refused; creating a new one");
                    self.sessions.invalidate(&target, &session);
                    self.metrics.retry("session_refused");
                    renewed = true;
                }
                Err(AttemptError::WrongMailbox(archive, _)) if !redirected => {
                    tracing::info!(mailbox = %target, %archive, "folder is in an archive mailbox; importing there");
                    target = archive;
                    redirected = true;
                    self.metrics.retry("archive_redirect");
                }
                Err(AttemptError::Other(error)) if error.retryable() => {
                    self.note_throttling(Some(&target), &error).await;
                    let reason = retry_reason(&error);
                    context.before_retry(error, attempt).await?;
                    self.metrics.retry(reason);
                }
                Err(
                    AttemptError::SessionRefused(error)
                    | AttemptError::WrongMailbox(_, error)
                    | AttemptError::Other(error),
                ) => return Err(error),
            }
        }
        unreachable!("the attempts are bounded by the budget")
    }

    /// Creates an import session and checks that its importUrl points where we allow.
    async fn create_import_session(
        &self,
        mailbox_id: &str,
        context: &CallContext,
    ) -> Result<ImportSession, GraphError> {
        let action = format!("creating an import session for {mailbox_id}");
        let url = self.graph_endpoint(&[
            "admin",
            "exchange",
            "mailboxes",
            mailbox_id,
            "createImportSession",
        ]);
        let answer: SessionAnswer = self
            .graph_json(
                Method::POST,
                url,
                &action,
                Endpoint::Session,
                Some(mailbox_id),
                context,
            )
            .await?;
        let invalid =
            |why: &str| GraphError::new(action.clone(), ErrorKind::InvalidResponse(why.into()));
        let import_url =
            Url::parse(&answer.import_url).map_err(|_| invalid("importUrl is not a URL"))?;
        if !self.import_hosts.allows(&import_url) {
            let origin = import_url.origin().ascii_serialization();
            tracing::error!(%origin, "Graph returned an importUrl on an origin that is not allowed");
            return Err(GraphError::new(
                action,
                ErrorKind::ImportHostNotAllowed(origin),
            ));
        }
        // Seven fractional digits are usual; RFC 3339 parsing takes any number.
        let expires = chrono::DateTime::parse_from_rfc3339(&answer.expiration_date_time)
            .map_err(|_| invalid("expirationDateTime is not an RFC 3339 time"))?;
        let lifetime = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .map_err(|_| invalid("the session expired before it arrived"))?;
        tracing::info!(mailbox = %mailbox_id, lifetime_secs = lifetime.as_secs(), "created an import session");
        self.metrics.session_created();
        Ok(ImportSession::new(&import_url, lifetime))
    }

    async fn post_item(
        &self,
        mailbox_id: &str,
        session: &ImportSession,
        request: &ImportRequest,
        context: &CallContext,
    ) -> Result<ImportedItem, AttemptError> {
        let action = format!(
            "importing an item into folder {} of {mailbox_id}",
            request.folder_id
        );
        let mut fields = serde_json::Map::new();
        fields.insert("FolderId".into(), request.folder_id.clone().into());
        match &request.mode {
            ImportMode::Create => {
                fields.insert("Mode".into(), "create".into());
            }
            ImportMode::Update {
                item_id,
                change_key,
            } => {
                fields.insert("Mode".into(), "update".into());
                fields.insert("ItemId".into(), item_id.clone().into());
                fields.insert("ChangeKey".into(), change_key.clone().into());
            }
        }
        let mib = u32::try_from(request.data.len() / (1024 * 1024)).unwrap_or(u32::MAX);
        // No Authorization header: the importUrl is pre-authenticated.
        let response = self
            .http()
            .post(session.url().clone())
            .header(CONTENT_TYPE, "application/json")
            .header("client-request-id", &context.request_id)
            .timeout(self.timeouts.request + IMPORT_TIME_PER_MIB * mib)
            .body(reqwest::Body::wrap(ImportBody::new(
                fields,
                request.data.clone(),
            )))
            .send()
            .await
            .map_err(|e| {
                self.metrics.upstream("import", None);
                AttemptError::Other(import_transport_error(&action, e))
            })?;
        let (status, headers) = (response.status(), response.headers().clone());
        self.metrics.upstream("import", Some(status.as_u16()));
        let body = response
            .bytes()
            .await
            .map_err(|e| AttemptError::Other(import_transport_error(&action, e)))?;
        if status.is_success() {
            // Exchange accepted the item; only its ids are unreadable. Report that honestly rather than
            // as a failure a client would retry into a duplicate.
            let mut item: ImportedItem = serde_json::from_slice(&body).map_err(|_| {
                tracing::error!(
                    status = status.as_u16(),
                    "importItem succeeded without a readable itemId and changeKey"
                );
                AttemptError::Other(GraphError::new(
                    action,
                    ErrorKind::OutcomeUnknown { timed_out: false },
                ))
            })?;
            item.graph_request_id = headers
                .get("request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            tracing::debug!(graph_request_id = ?item.graph_request_id, "importItem answered");
            return Ok(item);
        }
        let answer = upstream_answer(status, &headers, &body);
        tracing::warn!(status = status.as_u16(), message = ?answer.message, "importItem failed");
        let archive = (status == StatusCode::CONFLICT)
            .then(|| answer.message.as_deref().and_then(archive_mailbox))
            .flatten();
        let missing = match request.mode {
            ImportMode::Create => Missing::Folder,
            ImportMode::Update { .. } => Missing::Item,
        };
        let kind = match (status, &request.mode) {
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => ErrorKind::Unauthorized,
            (StatusCode::NOT_FOUND, _) => ErrorKind::NotFound(missing),
            // Undocumented: a stale change key most likely answers 409 (EWS's ErrorIrresolvableConflict)
            // or 412; both mean the same to the client. A create has no change key to be stale.
            (StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED, ImportMode::Update { .. }) => {
                ErrorKind::ChangeKeyMismatch
            }
            (StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE, _) => ErrorKind::ItemRejected,
            // The service (or a proxy in front of it) failed while handling the item: it may have been
            // stored. 503 is throttling or overload before any work, and stays retryable.
            (StatusCode::INTERNAL_SERVER_ERROR | StatusCode::BAD_GATEWAY, _) => {
                ErrorKind::OutcomeUnknown { timed_out: false }
            }
            (StatusCode::GATEWAY_TIMEOUT, _) => ErrorKind::OutcomeUnknown { timed_out: true },
            _ => classify_graph_status(status, &headers, None, missing),
        };
        let error = GraphError {
            action,
            kind,
            upstream: Some(answer),
        };
        Err(match (status, archive) {
            (_, Some(archive)) => AttemptError::WrongMailbox(archive, error),
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => {
                AttemptError::SessionRefused(error)
            }
            _ => AttemptError::Other(error),
        })
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
                    tracing::warn!(status = status.as_u16(), code = ?answer.code, request_id = ?answer.request_id, "{action} failed");
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

/// The mailbox id named by importItem's documented archive conflict:
/// `Invalid import session. The target session is expected in mailbox MBX:...`.
fn archive_mailbox(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("expected in mailbox ")?;
    let id = rest
        .split_whitespace()
        .next()?
        .trim_end_matches(['.', ',', ';']);
    match MailboxRef::parse(id) {
        Ok(MailboxRef::Id(id)) => Some(id),
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_mailbox_is_read_from_the_documented_conflict() {
        assert_eq!(
            archive_mailbox("Invalid import session. The target session is expected in mailbox MBX:e0643f21@a7809c93.").as_deref(),
            Some("MBX:e0643f21@a7809c93")
        );
        assert_eq!(
            archive_mailbox("ErrorIrresolvableConflict: change key"),
            None
        );
        assert_eq!(archive_mailbox("expected in mailbox ../evil"), None);
    }
}
