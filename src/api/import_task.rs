//! The import itself, detached from its handler: the client's `Idempotency-Key` is claimed (replaying or
//! refusing where it says so), the import runs as a task of its own, is audited, and its answer is kept
//! under the key. A client that hangs up does not cancel an import that may already be under way
//! upstream; its outcome waits under the key for the client's retry.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::items::{ImportCommand, IDEMPOTENT_REPLAYED};
use super::request_id::carry_request_id;
use super::ApiError;
use crate::app::AppState;
use crate::graph::{CallContext, ErrorKind, GraphError, ImportRequest, ImportedItem};
use crate::idempotency::{Claim, Claimed, Fingerprint, StoredResponse};

/// Claims the idempotency key (replaying or refusing where it says so), then runs the import as a task
/// of its own and answers with its outcome.
pub(super) async fn run(
    state: AppState,
    key: Option<String>,
    command: ImportCommand,
) -> Result<Response, ApiError> {
    // The item's SHA-256 is for the audit line and the idempotency fingerprint; at about 0.58 ms per MiB
    // it is the gateway's largest cost per byte, so it is only computed when one of them needs it.
    let digest = if state.audit_digest || key.is_some() {
        Some(sha256(&command.data).await)
    } else {
        None
    };
    let claimed = match key {
        None => None,
        Some(key) => {
            let fingerprint = command.fingerprint(&digest.expect("computed when a key is present"));
            match claim(&state, &command.client.key_scope(), &key, fingerprint).await? {
                Ok(claimed) => Some(claimed),
                Err(stored) => {
                    tracing::info!(idempotency_key = %key, "replaying the stored response");
                    let mut response = replay(stored);
                    response
                        .headers_mut()
                        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                    // The import it replays has its audit line; a replay adds none.
                    response.extensions_mut().insert(super::audit::Audited);
                    return Ok(response);
                }
            }
        }
    };
    // Detached from this handler: if the client hangs up, this future is dropped but the task runs on,
    // and the shutdown sequence waits for it (`AppState::tasks`).
    // Boxed where it is made: the wrappers and the spawn then move a pointer, not the whole state
    // machine (kilobytes, copied once per wrapper: a visible share of the 4 KiB profile's memmove).
    let import = Box::pin(import_and_answer(state.clone(), command, digest, claimed));
    let task = state
        .tasks
        .spawn(carry_request_id(import).instrument(tracing::Span::current()));
    let mut response = task.await.map_err(|_| ApiError::Internal)?;
    response.extensions_mut().insert(super::audit::Audited);
    Ok(response)
}

/// Claims the client's key: `Ok` to run the request under it, `Err` with the stored response to replay.
/// A request with the key still running elsewhere is waited for as long as an import may retry; a key
/// whose replica vanished mid-import is settled as `outcome_unknown`.
async fn claim(
    state: &AppState,
    client: &str,
    key: &str,
    fingerprint: Fingerprint,
) -> Result<Result<Claimed, StoredResponse>, ApiError> {
    let store = &state.idempotency;
    let claim = store
        .claim(client, key, fingerprint, state.retry.budget)
        .await
        .map_err(ApiError::SharedStateUnavailable)?;
    let claim = match claim {
        Claim::Abandoned => {
            let unknown = ApiError::from(GraphError::new(
                "importing the item on a gateway replica that stopped during the import",
                ErrorKind::OutcomeUnknown { timed_out: false },
            ));
            let unknown = stored_response(unknown.into_response()).await;
            store
                .settle_abandoned(client, key, fingerprint, unknown)
                .await
                .map_err(ApiError::SharedStateUnavailable)?
        }
        claim => claim,
    };
    match claim {
        Claim::Run(claimed) => Ok(Ok(claimed)),
        Claim::Replay(stored) => Ok(Err(stored)),
        Claim::Conflict => Err(ApiError::IdempotencyKeyReused),
        Claim::Full => Err(ApiError::IdempotencyKeysExhausted),
        Claim::InFlight | Claim::Abandoned => Err(ApiError::IdempotencyKeyInFlight),
    }
}

/// Items larger than this are hashed on the blocking pool.
const HASH_INLINE_BYTES: usize = 1024 * 1024;

/// The item's SHA-256. A large item is hashed on tokio's blocking pool: a worker thread serves many
/// connections on its single-threaded runtime, and hashing 100 MiB inline would hold all of them up for
/// about 60 ms; up to 1 MiB (0.6 ms) the hand-over would cost more than it saves.
async fn sha256(data: &Bytes) -> [u8; 32] {
    if data.len() <= HASH_INLINE_BYTES {
        return Sha256::digest(data).into();
    }
    let shared = data.clone();
    match tokio::task::spawn_blocking(move || Sha256::digest(&shared).into()).await {
        Ok(digest) => digest,
        // The runtime is shutting down and cancelled it: hash here.
        Err(_) => Sha256::digest(data).into(),
    }
}

/// Imports, audits, renders the outcome as a response, and settles the idempotency key with it.
async fn import_and_answer(
    state: AppState,
    command: ImportCommand,
    digest: Option<[u8; 32]>,
    claimed: Option<Claimed>,
) -> Response {
    let _in_flight = state.metrics.bytes_in_flight(command.data.len());
    let outcome = import(&state, &command).await;
    let (status, code) = match &outcome {
        Ok(_) => (command.success_status(), None),
        Err(error) => (error.status(), Some(error.code())),
    };
    super::audit::import(&command, digest.as_ref(), &outcome, status);
    state.metrics.import_finished(
        command.mode_name(),
        code.unwrap_or("ok"),
        command.data.len(),
    );
    // A retry must get the same answer, unless this one provably did nothing and may go better.
    let settles = match &outcome {
        Ok(_) => true,
        Err(error) => error.is_settled(),
    };
    let response = match outcome {
        Ok((_, item)) => command.success(item),
        Err(error) => error.into_response(),
    };
    let Some(claimed) = claimed else {
        return response;
    };
    let stored = stored_response(response).await;
    if settles {
        claimed.complete(stored.clone()).await;
    } else {
        claimed.release().await;
    }
    replay(stored)
}

/// Resolves the mailbox and folder (cached after the first time) and imports the item; returns the
/// mailbox id it went to and Exchange's answer.
async fn import(
    state: &AppState,
    command: &ImportCommand,
) -> Result<(String, ImportedItem), ApiError> {
    let context = CallContext::new(super::request_id::graph_client_request_id(), state.retry)
        .acting_for(command.client.user.clone());
    let mailbox_id = state
        .graph
        .resolve_mailbox(&command.mailbox, &context)
        .await?;
    let folder_id = state
        .graph
        .resolve_folder(&mailbox_id, &command.folder, &context)
        .await?;
    let request = ImportRequest {
        folder_id,
        mode: command.mode.clone(),
        data: command.data.clone(),
    };
    let item = state
        .graph
        .import_item(&mailbox_id, &request, &context)
        .await?;
    // Debug, not info: the audit stream has a line for every import already.
    tracing::debug!(mailbox = %mailbox_id, folder = %request.folder_id, size = request.data.len(), item_id = %item.item_id, "imported an item");
    Ok((mailbox_id, item))
}

/// A response as a value that can be stored and replayed. Our responses have small, complete bodies.
async fn stored_response(response: Response) -> StoredResponse {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| *name != header::CONTENT_LENGTH)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    StoredResponse {
        status: parts.status,
        headers,
        body,
    }
}

/// A stored response as a response again (a free function, not `IntoResponse`, which it would shadow).
fn replay(stored: StoredResponse) -> Response {
    let mut response = (stored.status, stored.body).into_response();
    let headers = response.headers_mut();
    for (name, value) in stored.headers {
        headers.insert::<HeaderName>(name, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_and_large_items_hash_alike_inline_or_on_the_blocking_pool() {
        for len in [
            0,
            1000,
            HASH_INLINE_BYTES,
            HASH_INLINE_BYTES + 1,
            3 * HASH_INLINE_BYTES,
        ] {
            let data = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
            let expected: [u8; 32] = Sha256::digest(&data).into();
            assert_eq!(sha256(&data).await, expected, "{len} bytes");
        }
    }
}
