//! Remembers the outcome of requests sent with an `Idempotency-Key`, so a client's retry never imports an
//! item twice.
//!
//! The first request with a key claims it and runs; a retry with the same key and the same request gets
//! the stored response; a retry arriving while the first still runs waits for its outcome (for at most a
//! bound, then `Claim::InFlight`); the same key with a different request is refused. Keys are scoped by
//! client: one client's key never replays another's answer.
//!
//! Two stores sit behind the same three calls ([`IdempotencyStore::claim`], [`Claimed::complete`],
//! [`Claimed::release`]): a bounded in-memory cache with a TTL for one process, and the shared store
//! (Valkey/Redis) for several replicas. There a claim is a hash per key holding the fingerprint, the
//! state, and while running a lease that its replica renews; when a replica dies mid-import, its lease
//! runs out and the key is settled as `outcome_unknown` by the next request that finds it (the import may
//! have reached Exchange), never run again.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use moka::sync::Cache;
use redis::Script;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::config::IdempotencySettings;
use crate::store::{SharedStore, StoreUnavailable, NOW};

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
    /// The request holding the key was still running when the wait ran out.
    InFlight,
    /// The replica that held the key stopped renewing it mid-request: the outcome is unknown. Settle it
    /// with [`IdempotencyStore::settle_abandoned`].
    Abandoned,
    /// The client holds as many live keys as it may; no key is dropped before its time to make room.
    Full,
}

/// A key this request holds while it runs. Dropped without an outcome, it is released.
#[derive(Debug)]
pub struct Claimed {
    held: Held,
    done: bool,
}

#[derive(Debug)]
enum Held {
    Memory {
        entries: Cache<String, Arc<Entry>>,
        key: String,
        entry: Arc<Entry>,
    },
    Shared {
        store: Arc<SharedStore>,
        key: String,
        /// The client's index of live keys.
        index: String,
        owner: String,
        ttl: Duration,
        renewal: AbortHandle,
    },
}

#[derive(Debug)]
struct Entry {
    /// Whose key it is, for the client's count of live keys.
    client: Arc<str>,
    fingerprint: Fingerprint,
    outcome: watch::Sender<Outcome>,
}

/// The in-memory keys: a cache that drops a key only when its TTL has passed (or when it is released),
/// and each client's count of live keys, which a client may not take beyond its capacity.
#[derive(Clone, Debug)]
struct MemoryKeys {
    entries: Cache<String, Arc<Entry>>,
    /// A std `Mutex`: held for a count's change, never across an await.
    counts: Arc<Mutex<HashMap<Arc<str>, u64>>>,
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
    settings: IdempotencySettings,
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Memory(MemoryKeys),
    Shared(Arc<SharedStore>),
}

/// How often a request polls a key that runs on another replica.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Claims a key: `run` when new (and its client holds fewer live keys than its capacity; else `full`),
/// else what is there. KEYS: the key, the client's index of live keys. ARGV: fingerprint, owner, lease
/// ms, TTL ms, capacity.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}{}",
        r#"
local entry = redis.call('HMGET', KEYS[1], 'fingerprint', 'state', 'lease', 'response')
if not entry[1] then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return {'full'} end
  redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'state', 'running', 'owner', ARGV[2],
    'lease', now + tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), KEYS[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return {'run'}
end
if entry[1] ~= ARGV[1] then return {'conflict'} end
if entry[2] == 'done' then return {'replay', entry[4]} end
if tonumber(entry[3]) <= now then return {'abandoned'} end
return {'running'}
"#
    ))
});

/// Settles a key whose lease ran out with the given response, unless something else settled it first;
/// answers with what is stored. KEYS: the key. ARGV: fingerprint, response, TTL ms.
static SETTLE_ABANDONED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}{}",
        r#"
local entry = redis.call('HMGET', KEYS[1], 'fingerprint', 'state', 'lease', 'response')
if entry[1] == ARGV[1] and entry[2] == 'done' then return entry[4] end
if entry[1] == ARGV[1] and tonumber(entry[3]) > now then return false end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'state', 'done', 'response', ARGV[2])
redis.call('HDEL', KEYS[1], 'owner', 'lease')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return ARGV[2]
"#
    ))
});

/// Stores the response of a key this owner still holds. KEYS: the key. ARGV: owner, response, TTL ms.
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'response', ARGV[2])
redis.call('HDEL', KEYS[1], 'owner', 'lease')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#,
    )
});

/// Frees a key this owner still holds. KEYS: the key, the client's index. ARGV: owner.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return 1
"#,
    )
});

/// Extends the lease of a key this owner still holds. KEYS: the key. ARGV: owner, lease ms.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}{}",
        r#"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease', now + tonumber(ARGV[2]))
return 1
"#
    ))
});

impl IdempotencyStore {
    /// An empty store in this process's memory.
    pub fn new(settings: IdempotencySettings) -> IdempotencyStore {
        let counts: Arc<Mutex<HashMap<Arc<str>, u64>>> = Arc::default();
        let listener_counts = counts.clone();
        let entries = Cache::builder()
            // No capacity: a live key is a promise, so nothing but its TTL (or a release) removes it.
            .time_to_live(settings.ttl)
            .eviction_listener(move |_key, entry: Arc<Entry>, _cause| {
                let mut counts = listener_counts.lock().expect("key counts poisoned");
                if let Some(count) = counts.get_mut(&entry.client) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        counts.remove(&entry.client);
                    }
                }
            })
            .build();
        IdempotencyStore {
            settings,
            backend: Backend::Memory(MemoryKeys { entries, counts }),
        }
    }

    /// Keys kept in the shared store, for several replicas.
    pub fn shared(settings: IdempotencySettings, store: Arc<SharedStore>) -> IdempotencyStore {
        IdempotencyStore {
            settings,
            backend: Backend::Shared(store),
        }
    }

    /// Claims `client`'s `key` for a request with `fingerprint`, waiting up to `wait` while another
    /// request with the key runs. Fails only when the shared store is unreachable.
    pub async fn claim(
        &self,
        client: &str,
        key: &str,
        fingerprint: Fingerprint,
        wait: Duration,
    ) -> Result<Claim, StoreUnavailable> {
        match &self.backend {
            Backend::Memory(keys) => {
                // Length-prefixed, so no client name and key combine like another pair.
                let scoped = format!("{}:{client}:{key}", client.len());
                Ok(keys
                    .claim(client, &scoped, fingerprint, wait, self.settings.capacity)
                    .await)
            }
            Backend::Shared(store) => {
                self.claim_shared(store, client, key, fingerprint, wait)
                    .await
            }
        }
    }

    /// Stores `outcome_unknown` (rendered by the caller) for a key whose holder vanished, unless it was
    /// settled meanwhile, and answers with what the key now holds.
    pub async fn settle_abandoned(
        &self,
        client: &str,
        key: &str,
        fingerprint: Fingerprint,
        outcome_unknown: StoredResponse,
    ) -> Result<Claim, StoreUnavailable> {
        let Backend::Shared(store) = &self.backend else {
            // A claim in memory cannot outlive its process.
            return Ok(Claim::Replay(outcome_unknown));
        };
        let stored: Option<String> = store
            .run(
                SETTLE_ABANDONED
                    .key(shared_key(store, client, key))
                    .arg(hex(&fingerprint))
                    .arg(outcome_unknown.encode())
                    .arg(millis(self.settings.ttl)),
            )
            .await?;
        Ok(match stored {
            Some(stored) => Claim::Replay(StoredResponse::decode(&stored)),
            // Renewed after all: its holder is alive.
            None => Claim::InFlight,
        })
    }

    async fn claim_shared(
        &self,
        store: &Arc<SharedStore>,
        client: &str,
        key: &str,
        fingerprint: Fingerprint,
        wait: Duration,
    ) -> Result<Claim, StoreUnavailable> {
        let key = shared_key(store, client, key);
        let index = client_index(store, client);
        let owner = store.holder_name();
        let lease = self.settings.lease;
        let give_up = Instant::now() + wait;
        loop {
            let answer: Vec<String> = store
                .run(
                    CLAIM
                        .key(&key)
                        .key(&index)
                        .arg(hex(&fingerprint))
                        .arg(&owner)
                        .arg(millis(lease))
                        .arg(millis(self.settings.ttl))
                        .arg(self.settings.capacity),
                )
                .await?;
            match answer.first().map(String::as_str) {
                Some("run") => {
                    let renewal =
                        tokio::spawn(renew(store.clone(), key.clone(), owner.clone(), lease))
                            .abort_handle();
                    return Ok(Claim::Run(Claimed {
                        held: Held::Shared {
                            store: store.clone(),
                            key,
                            index,
                            owner,
                            ttl: self.settings.ttl,
                            renewal,
                        },
                        done: false,
                    }));
                }
                Some("replay") => {
                    return Ok(Claim::Replay(StoredResponse::decode(
                        answer.get(1).map_or("", String::as_str),
                    )))
                }
                Some("conflict") => return Ok(Claim::Conflict),
                Some("full") => return Ok(Claim::Full),
                Some("abandoned") => return Ok(Claim::Abandoned),
                _ if Instant::now() >= give_up => return Ok(Claim::InFlight),
                _ => tokio::time::sleep(POLL_EVERY.min(give_up - Instant::now())).await,
            }
        }
    }
}

impl MemoryKeys {
    /// The in-memory claim: atomic insertion in the cache (if the client has room for one more key),
    /// then waiting on the holder's outcome.
    async fn claim(
        &self,
        client: &str,
        key: &str,
        fingerprint: Fingerprint,
        wait: Duration,
        capacity: u64,
    ) -> Claim {
        let entries = &self.entries;
        let client: Arc<str> = Arc::from(client);
        let give_up = Instant::now() + wait;
        loop {
            let candidate = Arc::new(Entry {
                client: client.clone(),
                fingerprint,
                outcome: watch::channel(Outcome::Running).0,
            });
            // Atomic: exactly one request inserts the entry for a key, and only while its client has room.
            let entry = entries.entry_by_ref(key).or_optionally_insert_with(|| {
                let mut counts = self.counts.lock().expect("key counts poisoned");
                let count = counts.entry(client.clone()).or_insert(0);
                (*count < capacity).then(|| {
                    *count += 1;
                    candidate.clone()
                })
            });
            let Some(entry) = entry else {
                return Claim::Full;
            };
            if entry.is_fresh() {
                return Claim::Run(Claimed {
                    held: Held::Memory {
                        entries: entries.clone(),
                        key: key.to_owned(),
                        entry: entry.into_value(),
                    },
                    done: false,
                });
            }
            let entry = entry.into_value();
            if entry.fingerprint != fingerprint {
                return Claim::Conflict;
            }
            let mut outcome = entry.outcome.subscribe();
            drop(entry);
            let finished = tokio::time::timeout_at(
                give_up,
                outcome.wait_for(|o| !matches!(o, Outcome::Running)),
            )
            .await;
            match finished {
                Err(_) => return Claim::InFlight,
                Ok(Ok(outcome)) => {
                    if let Outcome::Done(stored) = &*outcome {
                        return Claim::Replay(stored.clone());
                    }
                }
                // Released without an outcome: the key is free again; claim it afresh.
                Ok(Err(_)) => {}
            }
        }
    }
}

/// Renews a shared claim's lease until aborted, or until the claim turns out to be gone.
async fn renew(store: Arc<SharedStore>, key: String, owner: String, lease: Duration) {
    loop {
        tokio::time::sleep(lease / 3).await;
        match store
            .run::<i64>(RENEW.key(&key).arg(&owner).arg(millis(lease)))
            .await
        {
            Ok(1) => {}
            Ok(_) => {
                tracing::warn!("an idempotency key's claim was lost while its request ran; a retry will read outcome_unknown");
                return;
            }
            // Unreachable for now: keep trying while the lease may still be saved.
            Err(_) => {}
        }
    }
}

/// The client's index of live keys (by expiry), which its capacity counts.
fn client_index(store: &SharedStore, client: &str) -> String {
    store.key("idempotency", client, "index")
}

fn shared_key(store: &SharedStore, client: &str, key: &str) -> String {
    store.key("idempotency", client, &hex(&Sha256::digest(key.as_bytes())))
}

impl Claimed {
    /// Stores the response for replay and hands it to any waiting retries.
    pub async fn complete(mut self, response: StoredResponse) {
        self.done = true;
        match &self.held {
            Held::Memory { entry, .. } => {
                entry.outcome.send_replace(Outcome::Done(response));
            }
            Held::Shared {
                store,
                key,
                owner,
                ttl,
                renewal,
                ..
            } => {
                let stored = store
                    .run::<i64>(
                        COMPLETE
                            .key(key)
                            .arg(owner)
                            .arg(response.encode())
                            .arg(millis(*ttl)),
                    )
                    .await;
                renewal.abort();
                if !matches!(stored, Ok(1)) {
                    tracing::warn!("the answer could not be stored under its idempotency key; a retry will read outcome_unknown once the lease has run out");
                }
            }
        }
    }

    /// Frees the key without an outcome, because the request provably did nothing (so a retry may run).
    pub async fn release(mut self) {
        self.done = true;
        if let Held::Shared {
            store,
            key,
            index,
            owner,
            renewal,
            ..
        } = &self.held
        {
            renewal.abort();
            // If this fails, the lease runs out and the key reads outcome_unknown: safe, if unhelpful.
            let _ = store
                .run::<i64>(RELEASE.key(key).key(index).arg(owner))
                .await;
        } else {
            self.forget_in_memory();
        }
    }

    fn forget_in_memory(&mut self) {
        if let Held::Memory {
            entries,
            key,
            entry,
        } = &self.held
        {
            let ours = entries
                .get(key)
                .is_some_and(|current| Arc::ptr_eq(&current, entry));
            if ours {
                entries.invalidate(key);
            }
            entry.outcome.send_replace(Outcome::Released);
        }
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match &self.held {
            Held::Memory { .. } => self.forget_in_memory(),
            Held::Shared {
                store,
                key,
                index,
                owner,
                renewal,
                ..
            } => {
                renewal.abort();
                let (store, key, index, owner) =
                    (store.clone(), key.clone(), index.clone(), owner.clone());
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let _ = store
                            .run::<i64>(RELEASE.key(&key).key(&index).arg(&owner))
                            .await;
                    });
                }
            }
        }
    }
}

/// A stored response as kept in the shared store: JSON with the body in base64.
#[derive(Serialize, Deserialize)]
struct Encoded {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl StoredResponse {
    fn encode(&self) -> String {
        let encoded = Encoded {
            status: self.status.as_u16(),
            headers: self
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((name.to_string(), value.to_str().ok()?.to_owned()))
                })
                .collect(),
            body: base64::engine::general_purpose::STANDARD.encode(&self.body),
        };
        serde_json::to_string(&encoded).expect("a stored response serializes")
    }

    /// Reads what [`StoredResponse::encode`] wrote. Anything else (a foreign value under our prefix)
    /// becomes a 500 that says so, rather than a guess.
    fn decode(text: &str) -> StoredResponse {
        let decoded = serde_json::from_str::<Encoded>(text).ok().and_then(|e| {
            Some(StoredResponse {
                status: StatusCode::from_u16(e.status).ok()?,
                headers: e
                    .headers
                    .into_iter()
                    .filter_map(|(name, value)| Some((name.parse().ok()?, value.parse().ok()?)))
                    .collect(),
                body: base64::engine::general_purpose::STANDARD
                    .decode(e.body)
                    .ok()?
                    .into(),
            })
        });
        decoded.unwrap_or_else(|| {
            tracing::error!("a stored idempotent response could not be read");
            StoredResponse {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                headers: vec![],
                body: Bytes::from_static(
                    b"the stored response of this Idempotency-Key is unreadable",
                ),
            }
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().try_into().unwrap_or(u64::MAX)
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

    const WAIT: Duration = Duration::from_secs(60);

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
        let Claim::Run(claimed) = store.claim("c", "k", [1; 32], WAIT).await.unwrap() else {
            panic!("first claim must run")
        };
        claimed.complete(response("first")).await;
        match store.claim("c", "k", [1; 32], WAIT).await.unwrap() {
            Claim::Replay(stored) => assert_eq!(stored.body, "first"),
            other => panic!("expected a replay, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_same_key_for_another_request_is_a_conflict() {
        let store = store();
        let Claim::Run(claimed) = store.claim("c", "k", [1; 32], WAIT).await.unwrap() else {
            panic!()
        };
        assert!(matches!(
            store.claim("c", "k", [2; 32], WAIT).await.unwrap(),
            Claim::Conflict
        ));
        claimed.complete(response("x")).await;
        assert!(matches!(
            store.claim("c", "k", [2; 32], WAIT).await.unwrap(),
            Claim::Conflict
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_during_the_first_waits_for_its_outcome() {
        let store = store();
        let Claim::Run(claimed) = store.claim("c", "k", [1; 32], WAIT).await.unwrap() else {
            panic!()
        };
        let waiter = tokio::spawn({
            let store = store.clone();
            async move { store.claim("c", "k", [1; 32], WAIT).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiter.is_finished());
        claimed.complete(response("done")).await;
        match waiter.await.unwrap() {
            Claim::Replay(stored) => assert_eq!(stored.body, "done"),
            other => panic!("expected a replay, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_released_or_dropped_claim_frees_the_key_for_waiters_and_retries() {
        let store = store();
        let Claim::Run(claimed) = store.claim("c", "k", [1; 32], WAIT).await.unwrap() else {
            panic!()
        };
        let waiter = tokio::spawn({
            let store = store.clone();
            async move { store.claim("c", "k", [1; 32], WAIT).await.unwrap() }
        });
        tokio::task::yield_now().await;
        claimed.release().await;
        let Claim::Run(second) = waiter.await.unwrap() else {
            panic!("the waiter runs once the key is released")
        };
        drop(second);
        assert!(matches!(
            store.claim("c", "k", [1; 32], WAIT).await.unwrap(),
            Claim::Run(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_that_outwaits_the_bound_is_told_the_key_is_in_flight() {
        let store = store();
        let Claim::Run(_claimed) = store.claim("c", "k", [1; 32], WAIT).await.unwrap() else {
            panic!()
        };
        let started = Instant::now();
        let waited = store.claim("c", "k", [1; 32], WAIT).await.unwrap();
        assert!(matches!(waited, Claim::InFlight), "{waited:?}");
        assert_eq!(started.elapsed(), WAIT);
    }

    #[tokio::test]
    async fn keys_are_scoped_by_client() {
        let store = store();
        let Claim::Run(claimed) = store.claim("c", "k", [1; 32], WAIT).await.unwrap() else {
            panic!()
        };
        claimed.complete(response("c's")).await;
        assert!(matches!(
            store.claim("other", "k", [1; 32], WAIT).await.unwrap(),
            Claim::Run(_)
        ));
    }

    #[test]
    fn stored_responses_survive_their_encoding() {
        let stored = StoredResponse {
            status: StatusCode::CREATED,
            headers: vec![(http::header::ETAG, HeaderValue::from_static("\"ck\""))],
            body: Bytes::from_static(b"{\"itemId\":\"AAMk\"}"),
        };
        let decoded = StoredResponse::decode(&stored.encode());
        assert_eq!(decoded.status, stored.status);
        assert_eq!(decoded.headers, stored.headers);
        assert_eq!(decoded.body, stored.body);
        assert_eq!(StoredResponse::decode("junk").status, 500);
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
