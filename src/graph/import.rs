//! The import protocol: a session per mailbox (created with the app token, its importUrl checked), the
//! mailbox's turn, the importItem post with its base64 body streamed, and what each answer means: a
//! refused session is renewed once, an auto-expanded archive's folder is followed once, throttling is
//! retried within the budget, and an import sent without an answer is never sent again.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use url::Url;

use super::body::ImportBody;
use super::error::{classify_import_status, import_transport_error, upstream_answer};
use super::sessions::ImportSession;
use super::{retry_reason, CallContext, Endpoint, ErrorKind, GraphClient, GraphError};
use crate::ids::MailboxRef;

/// Extra time an import may take per MiB of item, on top of the request timeout, so large items are not
/// cut off on a slow link.
const IMPORT_TIME_PER_MIB: Duration = Duration::from_secs(1);

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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionAnswer {
    import_url: String,
    expiration_date_time: String,
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
                .get(&context.session_key(&target), || {
                    self.create_import_session(&target, context)
                })
                .await?;
            let permit = self
                .pacer
                .acquire(&target, request.data.len() as u64, context)
                .await?;
            if !session.is_fresh_at(self.clock.now()) {
                // The session aged past its renewal margin while this request waited for its turn.
                continue;
            }
            let outcome = self.post_item(&target, &session, request, context).await;
            drop(permit);
            match outcome {
                Ok(item) => return Ok(item),
                Err(AttemptError::SessionRefused(_)) if !renewed => {
                    tracing::info!(mailbox = %target, "import session refused; creating a new one");
                    self.sessions
                        .invalidate(&context.session_key(&target), &session);
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
        Ok(ImportSession::new(&import_url, lifetime, self.clock.now()))
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
        tracing::warn!(
            status = status.as_u16(),
            message = answer.message.as_deref(),
            "importItem failed"
        );
        let archive = (status == StatusCode::CONFLICT)
            .then(|| answer.message.as_deref().and_then(archive_mailbox))
            .flatten();
        let kind = classify_import_status(
            status,
            &headers,
            matches!(request.mode, ImportMode::Update { .. }),
        );
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
