//! Connects to the Valkey/Redis store that several replicas share, runs its scripts, and knows whether it
//! answers.
//!
//! Every multi-step change to shared state is one Lua script that reads the server's clock (`TIME`), so
//! no replica ever sees a half-done change and the replicas' own clocks never matter. Keys start with the
//! configured prefix and carry one hash tag (`{...}`) per mailbox or per client, so all the keys one
//! script touches live in one Redis Cluster slot; every key has a TTL, so nothing grows forever.
//!
//! The connection is redis-rs's `ConnectionManager`: a multiplexed connection that reconnects by itself,
//! one per thread that uses the store (like `GraphClient`'s upstream pools), so that a worker's script
//! calls do not hop to another thread. Each is made lazily, so a replica starts (degraded) while the store
//! is down, and a probe pings the store every second so that `/readyz` and
//! `mailbox_gateway_shared_state_up` follow it without traffic. A change of state is logged once, not
//! once per request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, RedisError, ScriptInvocation};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use thread_local::ThreadLocal;

use crate::config::SharedStateConfig;
use crate::metrics::Metrics;

/// Longest wait for a connection to the store.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the store's answer to one command. Scripts are short; a slower answer means trouble.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the probe pings the store.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The Lua that every script starts with: the server's clock in milliseconds as `now`.
pub(crate) const NOW: &str = "local clock = redis.call('TIME')\n\
     local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)\n";

/// The store was unreachable, or did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("the shared store (Valkey/Redis) did not answer")]
pub struct StoreUnavailable(#[source] pub RedisError);

/// The shared store of one replica: a cheap handle to share as `Arc`.
pub struct SharedStore {
    client: redis::Client,
    settings: ConnectionManagerConfig,
    /// One connection per thread, made on the thread's first call (its driver runs on that runtime).
    connections: ThreadLocal<ConnectionManager>,
    prefix: String,
    up: AtomicBool,
    metrics: Arc<Metrics>,
    /// This replica's name in the store (a random UUID): in permit and claim owners, for debugging.
    replica: String,
    /// A counter that makes holder names unique within the replica.
    names: AtomicU64,
}

// By hand: the connection manager's own `Debug` would show its connection info, password included.
impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("prefix", &self.prefix)
            .field("up", &self.is_up())
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl SharedStore {
    /// Prepares the connection (made on first use) and starts the probe on the current runtime; fails
    /// only if the URL cannot be used at all.
    pub fn connect(
        config: &SharedStateConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<SharedStore>, StoreUnavailable> {
        let client = redis::Client::open(config.url.expose_secret()).map_err(StoreUnavailable)?;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2));
        metrics.shared_state_up(false);
        let store = Arc::new(SharedStore {
            client,
            settings,
            connections: ThreadLocal::new(),
            prefix: config.prefix.clone(),
            up: AtomicBool::new(false),
            metrics,
            replica: uuid::Uuid::new_v4().simple().to_string(),
            names: AtomicU64::new(0),
        });
        tokio::spawn(probe(Arc::downgrade(&store)));
        Ok(store)
    }

    /// `{prefix}{kind}:{tag}:{name}`, where the tag is a digest of `owner` (a mailbox id or a client name),
    /// so every key of one owner lands in one cluster slot whatever characters the owner has.
    pub fn key(&self, kind: &str, owner: &str, name: &str) -> String {
        format!("{}{kind}:{{{}}}:{name}", self.prefix, tag(owner))
    }

    /// A fresh name for something this replica holds (a permit, a claim).
    pub fn holder_name(&self) -> String {
        let n = self.names.fetch_add(1, Ordering::Relaxed);
        format!("{}/{n}", self.replica)
    }

    /// Runs one command (atomic by itself) and reads its answer.
    pub async fn command<T: FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, StoreUnavailable> {
        let mut connection = self.connection()?;
        let answer = command.query_async(&mut connection).await;
        self.note(answer.as_ref().err());
        answer.map_err(StoreUnavailable)
    }

    /// Runs a script and reads its answer.
    pub async fn run<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreUnavailable> {
        let mut connection = self.connection()?;
        let answer = invocation.invoke_async(&mut connection).await;
        self.note(answer.as_ref().err());
        answer.map_err(StoreUnavailable)
    }

    /// Whether the store answered last time it was asked.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    async fn ping(&self) {
        let answer: Result<String, RedisError> = match self.connection() {
            Ok(mut connection) => redis::cmd("PING").query_async(&mut connection).await,
            Err(StoreUnavailable(error)) => Err(error),
        };
        self.note(answer.as_ref().err());
    }

    /// This thread's connection (a cheap clone of a handle).
    fn connection(&self) -> Result<ConnectionManager, StoreUnavailable> {
        self.connections
            .get_or_try(|| {
                self.client
                    .get_connection_manager_lazy(self.settings.clone())
            })
            .cloned()
            .map_err(StoreUnavailable)
    }

    /// Records whether the store answered; logs and counts a change.
    fn note(&self, error: Option<&RedisError>) {
        // A script's own error is an answer: the store is up.
        let up = error.is_none_or(|e| !unreachable(e));
        if self.up.swap(up, Ordering::Relaxed) == up {
            return;
        }
        self.metrics.shared_state_up(up);
        match error {
            None => tracing::info!("the shared store answers again; shared state is in force"),
            Some(error) if up => {
                tracing::error!(%error, "the shared store answered with an error");
            }
            Some(error) => tracing::warn!(
                %error,
                "the shared store is unreachable: requests with an Idempotency-Key are refused, and \
                 mailboxes run under MAILBOX_GATEWAY_DEGRADED_MAILBOX_CONCURRENCY until it is back"
            ),
        }
    }
}

/// Whether an error means the store could not be reached (rather than that it answered with an error).
fn unreachable(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
}

/// Pings the store until it is dropped.
async fn probe(store: Weak<SharedStore>) {
    loop {
        let Some(live) = store.upgrade() else { return };
        live.ping().await;
        drop(live);
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// The hash tag of an owner: 16 hex digits of its SHA-256.
fn tag(owner: &str) -> String {
    hex::encode(&Sha256::digest(owner.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_prefix_and_one_hash_tag_per_owner() {
        let config = SharedStateConfig::new("redis://:secret@127.0.0.1:1/0");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = runtime
            .block_on(async { SharedStore::connect(&config, Arc::new(Metrics::new())) })
            .unwrap();
        let key = store.key("mbx", "MBX:a{b}@c", "permits");
        assert!(key.starts_with("mailbox-gateway:mbx:{"), "{key}");
        assert!(key.ends_with("}:permits"), "{key}");
        assert_eq!(key.matches('{').count(), 1, "{key}");
        assert_eq!(
            store.key("mbx", "MBX:a{b}@c", "hold").split('}').next(),
            key.split('}').next()
        );
        let debug = format!("{store:?}");
        assert!(!debug.contains("secret"), "{debug}");
    }
}
