//! The typed limits and knobs of the gateway, with their defaults.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::settings::{keys, positive, ConfigError, Sources};

/// Limits on client connections, against slow or greedy clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections at most; beyond it the gateway stops accepting until one closes.
    pub max_connections: usize,
    /// Time a client has to send its request headers (and to finish a TLS handshake).
    pub header_read_timeout: Duration,
    /// A connection with no request in progress for this long is closed (HTTP/2 with GOAWAY), from
    /// accept as well as between keep-alive requests.
    pub idle_timeout: Duration,
    /// A connection whose client accepts none of its answer's bytes for this long is closed, freeing its
    /// place under the cap and the bytes the answer held (nginx's `send_timeout`).
    pub send_timeout: Duration,
    /// Threads serving connections, each with a single-threaded runtime of its own; by default one per
    /// CPU the process may use.
    pub worker_threads: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(20),
            send_timeout: Duration::from_secs(60),
            worker_threads: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// The certificate and key the gateway serves HTTPS with; both files are re-read when they change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// How often the files are checked for changes.
    pub reload_every: Duration,
}

/// Bounds on retrying one client request: attempts across all its upstream calls, and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Upstream attempts per client request, first tries included.
    pub max_attempts: u32,
    /// Time after which no new attempt starts and no wait is begun.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            budget: Duration::from_secs(60),
        }
    }
}

/// Per-mailbox limits, after Outlook's documented ones (docs/upstream.md section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// Upstream requests in flight per mailbox, across all clients.
    pub mailbox_concurrency: usize,
    /// Longest wait in a mailbox's queue before `503 mailbox_busy`.
    pub queue_timeout: Duration,
    /// Upload bytes per mailbox per 5 minutes; 0 turns upload pacing off.
    pub upload_bytes_per_5_min: u64,
    /// With a shared store: how long a mailbox permit outlives its replica's last renewal.
    pub permit_lease: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            mailbox_concurrency: 4,
            queue_timeout: Duration::from_secs(30),
            upload_bytes_per_5_min: 150_000_000,
            permit_lease: DEFAULT_SHARED_LEASE,
        }
    }
}

/// How idempotency keys are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotencySettings {
    /// How long a key and its response are kept.
    pub ttl: Duration,
    /// How many keys are kept at most (in memory); the least recently used go first.
    pub capacity: u64,
    /// With a shared store: how long a claim outlives its replica's last renewal (renewed every third
    /// of it) before the key reads `outcome_unknown`.
    pub lease: Duration,
}

/// The default lease of a shared idempotency claim and of a shared mailbox permit.
pub const DEFAULT_SHARED_LEASE: Duration = Duration::from_secs(15);

impl Default for IdempotencySettings {
    fn default() -> Self {
        IdempotencySettings {
            ttl: Duration::from_secs(24 * 60 * 60),
            capacity: 100_000,
            lease: DEFAULT_SHARED_LEASE,
        }
    }
}

/// The Valkey/Redis store that replicas share idempotency keys, mailbox permits, throttling holds and
/// upload windows through.
#[derive(Clone, Debug)]
pub struct SharedStateConfig {
    /// `redis://` or `rediss://`, possibly with a user and password: a secret.
    pub url: SecretString,
    /// Prefix of every key.
    pub prefix: String,
    /// Requests in flight per mailbox on this replica while the store is unreachable.
    pub degraded_mailbox_concurrency: usize,
}

/// The default prefix of shared-store keys.
pub const DEFAULT_REDIS_PREFIX: &str = "mailbox-gateway:";

impl SharedStateConfig {
    /// The store at `url` with the default prefix and degraded concurrency.
    pub fn new(url: &str) -> SharedStateConfig {
        SharedStateConfig {
            url: SecretString::from(url.to_owned()),
            prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            degraded_mailbox_concurrency: 1,
        }
    }

    pub(crate) fn load(sources: &Sources) -> Result<Option<SharedStateConfig>, ConfigError> {
        let Some(url) = sources.get(keys::REDIS_URL) else {
            return Ok(None);
        };
        let url = url.trim();
        // The URL may hold a password: the problem names the scheme only.
        let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
        if !scheme_ok || redis::Client::open(url).is_err() {
            return Err(ConfigError::Invalid {
                key: keys::REDIS_URL,
                problem:
                    "must be a redis:// or rediss:// URL, like redis://:PASSWORD@valkey:6379/0"
                        .into(),
            });
        }
        let prefix = sources
            .get(keys::REDIS_PREFIX)
            .unwrap_or(DEFAULT_REDIS_PREFIX)
            .to_owned();
        if prefix.contains(['{', '}']) || prefix.chars().any(char::is_whitespace) {
            return Err(ConfigError::Invalid {
                key: keys::REDIS_PREFIX,
                problem: "must not contain braces (they would change Redis Cluster's hash tags) or spaces"
                    .into(),
            });
        }
        Ok(Some(SharedStateConfig {
            url: SecretString::from(url.to_owned()),
            prefix,
            degraded_mailbox_concurrency: positive(sources, keys::DEGRADED_MAILBOX_CONCURRENCY, 1)?
                .try_into()
                .unwrap_or(usize::MAX),
        }))
    }
}

/// Upstream and client timeouts.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Time to establish an upstream connection.
    pub connect: Duration,
    /// Time for one Graph call attempt, and the base of an import attempt's time (which grows with item
    /// size).
    pub request: Duration,
    /// Longest pause between two pieces of a client's upload before it is cut off with 408.
    pub client_body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(30),
            client_body: Duration::from_secs(30),
        }
    }
}
