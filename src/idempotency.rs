//! Remembers the outcome of requests sent with an `Idempotency-Key`, so a client's retry never imports an
//! item twice.
//!
//! The first request with a key claims it and runs; a retry with the same key and the same request gets
//! the stored response; a retry arriving while the first still runs waits for its outcome; the same key
//! with a different request is refused. Entries live for a configured time in a bounded in-memory cache.
//! The interface is the three calls of [`IdempotencyStore`] and [`Claimed`], so a shared store (Redis)
//! can replace this one for several replicas.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use moka::sync::Cache;
use tokio::sync::watch;

use crate::config::IdempotencySettings;

/// Longest key accepted.
const MAX_KEY_LEN: usize = 255;

/// A complete response, as stored for replay.
#[derive(Clone, Debug)]
pub struct StoredResponse {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// What a request fingerprints to: the SHA-256 of everything that makes it the same request.
pub type Fingerprint = [u8; 32];

/// The outcome of claiming a key.
#[derive(Debug)]
pub enum Claim {
    /// The key is new: run the request, then [`Claimed::complete`] or [`Claimed::release`] it.
    Run(Claimed),
    /// The key has a stored response for this same request.
    Replay(StoredResponse),
    /// The key was used for a different request.
    Conflict,
}

/// A key this request holds while it runs. Dropped without an outcome, it is released.
#[derive(Debug)]
pub struct Claimed {
    store: IdempotencyStore,
    key: String,
    entry: Arc<Entry>,
    done: bool,
}

#[derive(Debug)]
struct Entry {
    fingerprint: Fingerprint,
    outcome: watch::Sender<Outcome>,
}

/// Where the request holding a key is.
#[derive(Clone, Debug)]
enum Outcome {
    Running,
    Done(StoredResponse),
    /// Freed without an outcome; waiters claim the key afresh.
    Released,
}

/// The keys and their outcomes. A cheap `Clone` handle.
#[derive(Clone, Debug)]
pub struct IdempotencyStore {
    entries: Cache<String, Arc<Entry>>,
}

impl IdempotencyStore {
    /// An empty store.
    pub fn new(settings: IdempotencySettings) -> IdempotencyStore {
        IdempotencyStore {
            entries: Cache::builder()
                .max_capacity(settings.capacity)
                .time_to_live(settings.ttl)
                .build(),
        }
    }

    /// Claims `key` for a request with `fingerprint`, waiting while another request with the key runs.
    pub async fn claim(&self, key: &str, fingerprint: Fingerprint) -> Claim {
        loop {
            let candidate = Arc::new(Entry {
                fingerprint,
                outcome: watch::channel(Outcome::Running).0,
            });
            // Atomic: exactly one request inserts the entry for a key.
            let entry = self
                .entries
                .entry_by_ref(key)
                .or_insert_with(|| candidate.clone());
            if entry.is_fresh() {
                return Claim::Run(Claimed {
                    store: self.clone(),
                    key: key.to_owned(),
                    entry: entry.into_value(),
                    done: false,
                });
            }
            let entry = entry.into_value();
            if entry.fingerprint != fingerprint {
                return Claim::Conflict;
            }
            let mut outcome = entry.outcome.subscribe();
            drop(entry);
            let finished = outcome
                .wait_for(|o| !matches!(o, Outcome::Running))
                .await
                .map(|o| o.clone());
            match finished {
                Ok(Outcome::Done(stored)) => return Claim::Replay(stored),
                // Released without an outcome: the key is free again; claim it afresh.
                _ => continue,
            }
        }
    }
}

impl Claimed {
    /// Stores the response for replay and hands it to any waiting retries.
    pub fn complete(mut self, response: StoredResponse) {
        self.done = true;
        self.entry.outcome.send_replace(Outcome::Done(response));
    }

    /// Frees the key without an outcome, because the request provably did nothing (so a retry may run).
    pub fn release(mut self) {
        self.forget();
    }

    fn forget(&mut self) {
        self.done = true;
        let ours = self
            .store
            .entries
            .get(&self.key)
            .is_some_and(|current| Arc::ptr_eq(&current, &self.entry));
        if ours {
            self.store.entries.invalidate(&self.key);
        }
        self.entry.outcome.send_replace(Outcome::Released);
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if !self.done {
            self.forget();
        }
    }
}

/// Checks an `Idempotency-Key` value: a structured-field string (`"..."`) or a bare token of visible ASCII.
pub fn parse_key(value: &str) -> Option<&str> {
    let value = value.trim();
    let key = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    let valid = (1..=MAX_KEY_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    valid.then_some(key)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn store() -> IdempotencyStore {
        IdempotencyStore::new(IdempotencySettings::default())
    }

    fn response(body: &'static str) -> StoredResponse {
        StoredResponse {
            status: StatusCode::CREATED,
            headers: vec![],
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[tokio::test]
    async fn the_first_request_runs_and_a_retry_gets_its_response() {
        let store = store();
        let Claim::Run(claimed) = store.claim("k", [1; 32]).await else {
            panic!("first claim must run")
        };
        claimed.complete(response("first"));
        match store.claim("k", [1; 32]).await {
            Claim::Replay(stored) => assert_eq!(stored.body, "first"),
            other => panic!("expected a replay, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_same_key_for_another_request_is_a_conflict() {
        let store = store();
        let Claim::Run(claimed) = store.claim("k", [1; 32]).await else {
            panic!()
        };
        assert!(matches!(store.claim("k", [2; 32]).await, Claim::Conflict));
        claimed.complete(response("x"));
        assert!(matches!(store.claim("k", [2; 32]).await, Claim::Conflict));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_during_the_first_waits_for_its_outcome() {
        let store = store();
        let Claim::Run(claimed) = store.claim("k", [1; 32]).await else {
            panic!()
        };
        let waiter = tokio::spawn({
            let store = store.clone();
            async move { store.claim("k", [1; 32]).await }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiter.is_finished());
        claimed.complete(response("done"));
        match waiter.await.unwrap() {
            Claim::Replay(stored) => assert_eq!(stored.body, "done"),
            other => panic!("expected a replay, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_released_or_dropped_claim_frees_the_key_for_waiters_and_retries() {
        let store = store();
        let Claim::Run(claimed) = store.claim("k", [1; 32]).await else {
            panic!()
        };
        let waiter = tokio::spawn({
            let store = store.clone();
            async move { store.claim("k", [1; 32]).await }
        });
        tokio::task::yield_now().await;
        claimed.release();
        let Claim::Run(second) = waiter.await.unwrap() else {
            panic!("the waiter runs once the key is released")
        };
        drop(second);
        assert!(matches!(store.claim("k", [1; 32]).await, Claim::Run(_)));
    }

    #[test]
    fn keys_are_quoted_strings_or_bare_visible_ascii() {
        assert_eq!(parse_key("\"8e03978e-40d5\""), Some("8e03978e-40d5"));
        assert_eq!(parse_key("job-7/item-42"), Some("job-7/item-42"));
        for bad in ["", "\"\"", "a b", "a\u{7}b", &"k".repeat(256)] {
            assert_eq!(parse_key(bad), None, "{bad:?}");
        }
    }
}
