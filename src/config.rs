//! Loads and validates the gateway's settings from the environment and an optional TOML file.
//!
//! Every setting has one key, used both as an environment variable and as a key in the file given with
//! `--config`; the environment wins. Loading is done once at start-up and fails with a message that
//! names the setting at fault. Tests build these structs directly or pass their own key maps: nothing
//! here reads the process environment except [`Sources::from_process`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

/// Default listen address: loopback only, so an unconfigured gateway is not reachable from outside.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default Graph base URL.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com/v1.0";
/// Default Entra ID authority host.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// Default origins that Graph's `importUrl` may point to.
pub const DEFAULT_IMPORT_HOSTS: &str = "outlook.office365.com";
/// Default interval between checks of the TLS files for changes.
pub const DEFAULT_TLS_RELOAD: Duration = Duration::from_secs(30);
/// Default longest wait for room in the memory budget.
pub const DEFAULT_MEMORY_WAIT: Duration = Duration::from_secs(5);
/// Default memory budget for item bytes in flight.
pub const DEFAULT_MEMORY_BUDGET: u64 = 512 * 1024 * 1024;
/// Default time given to in-flight imports after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default largest item accepted: Exchange Online's own message size limit.
pub const DEFAULT_MAX_ITEM_BYTES: u64 = 150 * 1024 * 1024;

/// Every key the gateway reads, with its meaning; unknown keys in a file are an error.
pub const KEYS: &[(&str, &str)] = &[
    ("AZURE_TENANT_ID", "Entra ID tenant (directory) id"),
    ("AZURE_CLIENT_ID", "application (client) id"),
    ("AZURE_CLIENT_SECRET", "client secret"),
    (
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "PEM file with the certificate and its private key",
    ),
    (
        "AZURE_FEDERATED_TOKEN_FILE",
        "file holding a federated token (workload identity)",
    ),
    ("AZURE_AUTHORITY_HOST", "Entra ID login host"),
    (
        "MAILBOX_GATEWAY_CERTIFICATE_ALGORITHM",
        "PS256 (x5t#S256) or RS256 (x5t)",
    ),
    ("MAILBOX_GATEWAY_LISTEN", "address to listen on"),
    ("MAILBOX_GATEWAY_GRAPH_URL", "Microsoft Graph base URL"),
    (
        "MAILBOX_GATEWAY_IMPORT_HOSTS",
        "origins importUrl may point to",
    ),
    ("MAILBOX_GATEWAY_MAX_ITEM_BYTES", "largest item accepted"),
    (
        "MAILBOX_GATEWAY_MEMORY_BUDGET",
        "item bytes held in memory across all requests",
    ),
    (
        "MAILBOX_GATEWAY_MEMORY_WAIT_SECS",
        "longest wait for room in the memory budget",
    ),
    (
        "MAILBOX_GATEWAY_AUDIT_DIGEST",
        "sha256 (default) or off: the item digest in audit lines",
    ),
    (
        "MAILBOX_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_SECS",
        "upstream connect timeout",
    ),
    (
        "MAILBOX_GATEWAY_UPSTREAM_TIMEOUT_SECS",
        "upstream request timeout",
    ),
    (
        "MAILBOX_GATEWAY_CLIENT_BODY_TIMEOUT_SECS",
        "longest pause in a client's upload",
    ),
    (
        "MAILBOX_GATEWAY_RETRY_ATTEMPTS",
        "upstream attempts per request",
    ),
    (
        "MAILBOX_GATEWAY_RETRY_BUDGET_SECS",
        "time a request may spend retrying",
    ),
    (
        "MAILBOX_GATEWAY_MAILBOX_CONCURRENCY",
        "upstream requests in flight per mailbox",
    ),
    (
        "MAILBOX_GATEWAY_MAILBOX_QUEUE_TIMEOUT_SECS",
        "longest wait for a mailbox's turn",
    ),
    (
        "MAILBOX_GATEWAY_UPLOAD_BYTES_PER_5_MIN",
        "upload pacing per mailbox (0 = off)",
    ),
    (
        "MAILBOX_GATEWAY_IDEMPOTENCY_TTL_SECS",
        "how long idempotency keys are kept",
    ),
    (
        "MAILBOX_GATEWAY_IDEMPOTENCY_CAPACITY",
        "how many idempotency keys are kept",
    ),
    (
        "MAILBOX_GATEWAY_REDIS_URL",
        "redis:// or rediss:// URL of the Valkey/Redis store that replicas share (unset = in memory)",
    ),
    (
        "MAILBOX_GATEWAY_REDIS_PREFIX",
        "prefix of every key in the shared store",
    ),
    (
        "MAILBOX_GATEWAY_DEGRADED_MAILBOX_CONCURRENCY",
        "requests in flight per mailbox and replica while the shared store is unreachable",
    ),
    (
        "MAILBOX_GATEWAY_SHUTDOWN_GRACE_SECS",
        "time to finish in-flight imports on shutdown",
    ),
    (
        "MAILBOX_GATEWAY_MAX_CONNECTIONS",
        "open client connections at most",
    ),
    (
        "MAILBOX_GATEWAY_HEADER_READ_TIMEOUT_SECS",
        "time a client has to send its request headers",
    ),
    (
        "MAILBOX_GATEWAY_WORKER_THREADS",
        "threads serving client connections",
    ),
    (
        "MAILBOX_GATEWAY_TLS_CERT_PATH",
        "PEM certificate chain for HTTPS",
    ),
    ("MAILBOX_GATEWAY_TLS_KEY_PATH", "PEM private key for HTTPS"),
    (
        "MAILBOX_GATEWAY_TLS_RELOAD_SECS",
        "how often the TLS files are checked for changes",
    ),
    (
        "MAILBOX_GATEWAY_AUTH",
        "client authentication: api-key, jwt or none",
    ),
    (
        "MAILBOX_GATEWAY_ALLOW_UNAUTHENTICATED",
        "true to allow none on a non-loopback address",
    ),
    (
        "MAILBOX_GATEWAY_API_KEYS",
        "client API keys as name:sha256hex, comma-separated",
    ),
    (
        "MAILBOX_GATEWAY_ACCESS_RULES",
        "JSON list of what each client may touch",
    ),
    ("MAILBOX_GATEWAY_JWT_ISSUER", "expected iss of client JWTs"),
    (
        "MAILBOX_GATEWAY_JWT_AUDIENCE",
        "expected aud of client JWTs",
    ),
    (
        "MAILBOX_GATEWAY_JWT_JWKS_URL",
        "JWKS URL of the identity provider",
    ),
    (
        "MAILBOX_GATEWAY_JWT_JWKS_FILE",
        "JWKS file of the identity provider",
    ),
    (
        "MAILBOX_GATEWAY_JWT_HS256_SECRET",
        "shared secret for HS256 JWTs",
    ),
    (
        "MAILBOX_GATEWAY_JWT_CLIENT_CLAIM",
        "claim that names the client (default azp)",
    ),
];

/// The gateway's whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// The Exchange Online tenant the gateway writes into.
    pub tenant: TenantConfig,
    /// Largest raw item accepted, in bytes.
    pub max_item_bytes: u64,
    /// Request body bytes held in memory at once, across all requests.
    pub memory_budget: u64,
    /// Longest wait for room in the memory budget before `503 over_capacity`.
    pub memory_wait: Duration,
    /// Whether audit lines carry the item's SHA-256.
    pub audit_digest: bool,
    /// Upstream and client timeouts.
    pub timeouts: Timeouts,
    /// How much retrying one client request may do.
    pub retry: RetryPolicy,
    /// Per-mailbox limits on upstream traffic.
    pub pacing: Pacing,
    /// How idempotency keys are kept.
    pub idempotency: IdempotencySettings,
    /// Where several replicas keep what they share; `None`: in this process's memory.
    pub shared_state: Option<SharedStateConfig>,
    /// Time given to in-flight imports after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Limits on client connections.
    pub connections: ConnectionLimits,
    /// HTTPS, when the gateway terminates TLS itself.
    pub tls: Option<TlsSettings>,
    /// Who may call, and what each client may touch.
    pub access: AccessConfig,
}

/// Client authentication and the rules of what each client may touch.
#[derive(Clone, Debug, Default)]
pub struct AccessConfig {
    pub auth: AuthConfig,
    pub rules: Vec<crate::access::Rule>,
}

/// How clients authenticate.
#[derive(Clone, Debug, Default)]
pub enum AuthConfig {
    /// Nobody authenticates; everyone may do everything (loopback, the simulator, or an override).
    #[default]
    None,
    /// `Authorization: Bearer <key>` or `X-Api-Key`, matched against (client name, SHA-256 of the key).
    ApiKeys(Vec<(String, [u8; 32])>),
    /// A bearer JWT from the organisation's identity provider.
    Jwt(JwtConfig),
}

/// What a client's JWT must be.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    pub keys: JwtKeySource,
    /// The claim whose value is the client's name.
    pub client_claim: String,
}

/// Where the keys that sign clients' JWTs come from.
#[derive(Clone, Debug)]
pub enum JwtKeySource {
    JwksUrl(Url),
    JwksFile(PathBuf),
    Hs256(SecretString),
}

/// Limits on client connections, against slow or greedy clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections at most; beyond it the gateway stops accepting until one closes.
    pub max_connections: usize,
    /// Time a client has to send its request headers (and to finish a TLS handshake).
    pub header_read_timeout: Duration,
    /// Threads serving connections, each with a single-threaded runtime of its own; by default one per
    /// CPU the process may use.
    pub worker_threads: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
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

/// Per-mailbox limits, after Outlook's documented ones (upstream.md section 5).
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

    fn load(sources: &Sources) -> Result<Option<SharedStateConfig>, ConfigError> {
        let Some(url) = sources.get("MAILBOX_GATEWAY_REDIS_URL") else {
            return Ok(None);
        };
        let url = url.trim();
        // The URL may hold a password: the problem names the scheme only.
        let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
        if !scheme_ok || redis::Client::open(url).is_err() {
            return Err(ConfigError::Invalid {
                key: "MAILBOX_GATEWAY_REDIS_URL",
                problem:
                    "must be a redis:// or rediss:// URL, like redis://:PASSWORD@valkey:6379/0"
                        .into(),
            });
        }
        let prefix = sources
            .get("MAILBOX_GATEWAY_REDIS_PREFIX")
            .unwrap_or(DEFAULT_REDIS_PREFIX)
            .to_owned();
        if prefix.contains(['{', '}']) || prefix.chars().any(char::is_whitespace) {
            return Err(ConfigError::Invalid {
                key: "MAILBOX_GATEWAY_REDIS_PREFIX",
                problem: "must not contain braces (they would change Redis Cluster's hash tags) or spaces"
                    .into(),
            });
        }
        Ok(Some(SharedStateConfig {
            url: SecretString::from(url.to_owned()),
            prefix,
            degraded_mailbox_concurrency: positive(
                sources,
                "MAILBOX_GATEWAY_DEGRADED_MAILBOX_CONCURRENCY",
                1,
            )?
            .try_into()
            .unwrap_or(usize::MAX),
        }))
    }
}

/// Everything specific to one tenant: who we are there and where its endpoints live.
///
/// Kept in one value, not in globals, so that several tenants can later sit behind one gateway.
#[derive(Clone, Debug)]
pub struct TenantConfig {
    /// Entra ID tenant id.
    pub tenant_id: String,
    /// Application (client) id.
    pub client_id: String,
    /// How the application proves who it is.
    pub credential: CredentialConfig,
    /// Entra ID authority host, e.g. `https://login.microsoftonline.com`.
    pub authority_host: Url,
    /// Graph base URL, e.g. `https://graph.microsoft.com/v1.0`.
    pub graph_url: Url,
    /// Origins that an `importUrl` may point to.
    pub import_hosts: ImportHosts,
}

/// The application credential, as configured.
#[derive(Clone, Debug)]
pub enum CredentialConfig {
    /// `AZURE_CLIENT_SECRET`.
    Secret(SecretString),
    /// `AZURE_CLIENT_CERTIFICATE_PATH`, signed with the given algorithm.
    Certificate {
        path: PathBuf,
        algorithm: CertificateAlgorithm,
    },
    /// `AZURE_FEDERATED_TOKEN_FILE`, re-read on every token request.
    FederatedTokenFile(PathBuf),
}

/// How a certificate assertion is signed and which thumbprint names the certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateAlgorithm {
    /// `PS256` with `x5t#S256` (the current Entra documentation).
    Ps256,
    /// `RS256` with `x5t` (older documentation and many SDKs).
    Rs256,
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

/// The origins (scheme, host, port) that an `importUrl` may point to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportHosts(Vec<url::Origin>);

impl ImportHosts {
    /// Parses a comma-separated list. A bare host means `https://host:443`; an entry with a scheme, like
    /// `http://127.0.0.1:9000`, allows exactly that origin.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut origins = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let with_scheme = if entry.contains("://") {
                entry.to_owned()
            } else {
                format!("https://{entry}")
            };
            let url =
                Url::parse(&with_scheme).map_err(|e| format!("`{entry}` is not a host: {e}"))?;
            if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
                return Err(format!("`{entry}` is not an http(s) origin"));
            }
            if url.path() != "/" || url.query().is_some() {
                return Err(format!("`{entry}` must be an origin, without a path"));
            }
            origins.push(url.origin());
        }
        if origins.is_empty() {
            return Err("the list is empty".into());
        }
        Ok(ImportHosts(origins))
    }

    /// Whether `url`'s origin is one of the allowed ones.
    pub fn allows(&self, url: &Url) -> bool {
        let origin = url.origin();
        self.0.contains(&origin)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting has a value that cannot be used.
    #[error("invalid setting {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
    /// No way to authenticate to Graph was configured.
    #[error(
        "no Graph credential configured: set AZURE_TENANT_ID, AZURE_CLIENT_ID and one of \
         AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH or AZURE_FEDERATED_TOKEN_FILE \
         (in the environment or the --config file), or run `serve --simulate` to use the built-in simulator"
    )]
    NoCredential,
    /// Listening beyond loopback with nobody having to authenticate.
    #[error(
        "refusing to listen on {listen} without client authentication: set MAILBOX_GATEWAY_AUTH=api-key \
         (with MAILBOX_GATEWAY_API_KEYS) or MAILBOX_GATEWAY_AUTH=jwt (with MAILBOX_GATEWAY_JWT_*), and \
         MAILBOX_GATEWAY_ACCESS_RULES; or listen on 127.0.0.1; or, if something in front of the gateway \
         authenticates clients, set MAILBOX_GATEWAY_ALLOW_UNAUTHENTICATED=true"
    )]
    Insecure { listen: SocketAddr },
    /// The configuration file could not be read or parsed.
    #[error("configuration file {path}: {problem}")]
    File { path: PathBuf, problem: String },
}

/// Raw key/value settings, merged from a file and the environment (the environment wins).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    values: BTreeMap<String, String>,
}

impl Sources {
    /// Settings from the given key/value pairs (tests use this instead of the process environment).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Sources {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Settings from an optional TOML file, overridden by the process environment.
    pub fn from_process(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut sources = match file {
            Some(path) => Sources::from_toml_file(path)?,
            None => Sources::default(),
        };
        for (key, _) in KEYS {
            if let Ok(value) = std::env::var(key) {
                sources.values.insert((*key).to_owned(), value);
            }
        }
        Ok(sources)
    }

    /// Settings from a TOML file of `KEY = value` lines, with the same keys as the environment.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let file_error = |problem: String| ConfigError::File {
            path: path.to_owned(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_error(e.to_string()))?;
        let mut values = BTreeMap::new();
        for (key, value) in table {
            if !KEYS.iter().any(|(known, _)| *known == key) {
                return Err(file_error(format!("unknown key {key}")));
            }
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                other => {
                    return Err(file_error(format!(
                        "{key} must be a string or an integer, not {}",
                        other.type_str()
                    )))
                }
            };
            values.insert(key, value);
        }
        Ok(Sources { values })
    }

    /// Overrides one setting (for command-line flags).
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.values.insert(key.to_owned(), value.into());
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

impl Config {
    /// Validates `sources` into a configuration. With `tenant` given (the simulator's demo tenant), the
    /// Graph credential settings are not read.
    pub fn load(sources: &Sources, tenant: Option<TenantConfig>) -> Result<Config, ConfigError> {
        let listen = parse_or(sources, "MAILBOX_GATEWAY_LISTEN", DEFAULT_LISTEN, |v| {
            v.parse::<SocketAddr>().map_err(|e| e.to_string())
        })?;
        let max_item_bytes = positive(
            sources,
            "MAILBOX_GATEWAY_MAX_ITEM_BYTES",
            DEFAULT_MAX_ITEM_BYTES,
        )?;
        let secs = |key, default: Duration| {
            positive(sources, key, default.as_secs()).map(Duration::from_secs)
        };
        let timeouts = Timeouts {
            connect: secs(
                "MAILBOX_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_SECS",
                Timeouts::default().connect,
            )?,
            request: secs(
                "MAILBOX_GATEWAY_UPSTREAM_TIMEOUT_SECS",
                Timeouts::default().request,
            )?,
            client_body: secs(
                "MAILBOX_GATEWAY_CLIENT_BODY_TIMEOUT_SECS",
                Timeouts::default().client_body,
            )?,
        };
        let retry = RetryPolicy {
            max_attempts: positive(
                sources,
                "MAILBOX_GATEWAY_RETRY_ATTEMPTS",
                RetryPolicy::default().max_attempts.into(),
            )?
            .try_into()
            .map_err(|_| ConfigError::Invalid {
                key: "MAILBOX_GATEWAY_RETRY_ATTEMPTS",
                problem: "too large".into(),
            })?,
            budget: secs(
                "MAILBOX_GATEWAY_RETRY_BUDGET_SECS",
                RetryPolicy::default().budget,
            )?,
        };
        let pacing = Pacing {
            mailbox_concurrency: positive(
                sources,
                "MAILBOX_GATEWAY_MAILBOX_CONCURRENCY",
                Pacing::default().mailbox_concurrency as u64,
            )?
            .try_into()
            .unwrap_or(usize::MAX),
            queue_timeout: secs(
                "MAILBOX_GATEWAY_MAILBOX_QUEUE_TIMEOUT_SECS",
                Pacing::default().queue_timeout,
            )?,
            upload_bytes_per_5_min: match sources.get("MAILBOX_GATEWAY_UPLOAD_BYTES_PER_5_MIN") {
                Some("0") => 0,
                _ => positive(
                    sources,
                    "MAILBOX_GATEWAY_UPLOAD_BYTES_PER_5_MIN",
                    Pacing::default().upload_bytes_per_5_min,
                )?,
            },
            ..Pacing::default()
        };
        let idempotency = IdempotencySettings {
            ttl: secs(
                "MAILBOX_GATEWAY_IDEMPOTENCY_TTL_SECS",
                IdempotencySettings::default().ttl,
            )?,
            capacity: positive(
                sources,
                "MAILBOX_GATEWAY_IDEMPOTENCY_CAPACITY",
                IdempotencySettings::default().capacity,
            )?,
            ..IdempotencySettings::default()
        };
        let connections = ConnectionLimits {
            max_connections: positive(
                sources,
                "MAILBOX_GATEWAY_MAX_CONNECTIONS",
                ConnectionLimits::default().max_connections as u64,
            )?
            .try_into()
            .unwrap_or(usize::MAX),
            header_read_timeout: secs(
                "MAILBOX_GATEWAY_HEADER_READ_TIMEOUT_SECS",
                ConnectionLimits::default().header_read_timeout,
            )?,
            worker_threads: positive(
                sources,
                "MAILBOX_GATEWAY_WORKER_THREADS",
                ConnectionLimits::default().worker_threads as u64,
            )?
            .try_into()
            .unwrap_or(usize::MAX),
        };
        let tls = match (
            sources.get("MAILBOX_GATEWAY_TLS_CERT_PATH"),
            sources.get("MAILBOX_GATEWAY_TLS_KEY_PATH"),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsSettings {
                cert_path: PathBuf::from(cert),
                key_path: PathBuf::from(key),
                reload_every: secs("MAILBOX_GATEWAY_TLS_RELOAD_SECS", DEFAULT_TLS_RELOAD)?,
            }),
            (cert, _) => {
                return Err(ConfigError::Invalid {
                    key: if cert.is_none() {
                        "MAILBOX_GATEWAY_TLS_CERT_PATH"
                    } else {
                        "MAILBOX_GATEWAY_TLS_KEY_PATH"
                    },
                    problem: "HTTPS needs both MAILBOX_GATEWAY_TLS_CERT_PATH and MAILBOX_GATEWAY_TLS_KEY_PATH".into(),
                })
            }
        };
        let simulate = tenant.is_some();
        let access = AccessConfig::load(sources, listen, simulate)?;
        let tenant = match tenant {
            Some(tenant) => tenant,
            None => TenantConfig::load(sources)?,
        };
        let memory_budget = positive(
            sources,
            "MAILBOX_GATEWAY_MEMORY_BUDGET",
            DEFAULT_MEMORY_BUDGET,
        )?;
        Ok(Config {
            memory_budget,
            memory_wait: secs("MAILBOX_GATEWAY_MEMORY_WAIT_SECS", DEFAULT_MEMORY_WAIT)?,
            audit_digest: parse_or(
                sources,
                "MAILBOX_GATEWAY_AUDIT_DIGEST",
                "sha256",
                |v| match v {
                    "sha256" => Ok(true),
                    "off" => Ok(false),
                    _ => Err("must be sha256 or off".into()),
                },
            )?,
            access,
            connections,
            tls,
            listen,
            max_item_bytes,
            timeouts,
            retry,
            pacing,
            idempotency,
            shared_state: SharedStateConfig::load(sources)?,
            shutdown_grace: secs(
                "MAILBOX_GATEWAY_SHUTDOWN_GRACE_SECS",
                DEFAULT_SHUTDOWN_GRACE,
            )?,
            ..Config::new(tenant)
        })
    }

    /// The defaults for everything but the tenant (tests start from this).
    pub fn new(tenant: TenantConfig) -> Config {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
            tenant,
            max_item_bytes: DEFAULT_MAX_ITEM_BYTES,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            memory_wait: DEFAULT_MEMORY_WAIT,
            audit_digest: true,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            pacing: Pacing::default(),
            idempotency: IdempotencySettings::default(),
            shared_state: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            connections: ConnectionLimits::default(),
            tls: None,
            access: AccessConfig::default(),
        }
    }
}

impl AccessConfig {
    /// Reads client authentication and rules. Secure by default: without authentication the gateway
    /// listens on loopback only, unless `--simulate` (whose tenant holds nothing real) or an explicit
    /// `MAILBOX_GATEWAY_ALLOW_UNAUTHENTICATED=true`.
    fn load(
        sources: &Sources,
        listen: SocketAddr,
        simulate: bool,
    ) -> Result<AccessConfig, ConfigError> {
        let invalid = |key: &'static str, problem: String| ConfigError::Invalid { key, problem };
        let auth = match sources.get("MAILBOX_GATEWAY_AUTH").map(str::trim) {
            None | Some("none") => {
                let allowed = listen.ip().is_loopback()
                    || simulate
                    || sources.get("MAILBOX_GATEWAY_ALLOW_UNAUTHENTICATED") == Some("true");
                if !allowed {
                    return Err(ConfigError::Insecure { listen });
                }
                AuthConfig::None
            }
            Some("api-key") => {
                let keys = sources.get("MAILBOX_GATEWAY_API_KEYS").ok_or_else(|| {
                    invalid(
                        "MAILBOX_GATEWAY_API_KEYS",
                        "api-key mode needs at least one name:sha256hex".into(),
                    )
                })?;
                AuthConfig::ApiKeys(
                    keys.split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(parse_api_key)
                        .collect::<Result<_, _>>()
                        .map_err(|problem| invalid("MAILBOX_GATEWAY_API_KEYS", problem))?,
                )
            }
            Some("jwt") => {
                let required = |key: &'static str| {
                    sources
                        .get(key)
                        .map(str::to_owned)
                        .ok_or_else(|| invalid(key, "jwt mode needs it".into()))
                };
                let keys = match (
                    sources.get("MAILBOX_GATEWAY_JWT_JWKS_URL"),
                    sources.get("MAILBOX_GATEWAY_JWT_JWKS_FILE"),
                    sources.get("MAILBOX_GATEWAY_JWT_HS256_SECRET"),
                ) {
                    (Some(url), None, None) => JwtKeySource::JwksUrl(
                        parse_base_url(url)
                            .map_err(|p| invalid("MAILBOX_GATEWAY_JWT_JWKS_URL", p))?,
                    ),
                    (None, Some(path), None) => JwtKeySource::JwksFile(PathBuf::from(path)),
                    (None, None, Some(secret)) if secret.len() >= 32 => {
                        JwtKeySource::Hs256(SecretString::from(secret.to_owned()))
                    }
                    (None, None, Some(_)) => {
                        return Err(invalid(
                            "MAILBOX_GATEWAY_JWT_HS256_SECRET",
                            "must be at least 32 characters".into(),
                        ))
                    }
                    _ => {
                        return Err(invalid(
                            "MAILBOX_GATEWAY_JWT_JWKS_URL",
                            "jwt mode needs exactly one of MAILBOX_GATEWAY_JWT_JWKS_URL, \
                             MAILBOX_GATEWAY_JWT_JWKS_FILE and MAILBOX_GATEWAY_JWT_HS256_SECRET"
                                .into(),
                        ))
                    }
                };
                AuthConfig::Jwt(JwtConfig {
                    issuer: required("MAILBOX_GATEWAY_JWT_ISSUER")?,
                    audience: required("MAILBOX_GATEWAY_JWT_AUDIENCE")?,
                    keys,
                    client_claim: sources
                        .get("MAILBOX_GATEWAY_JWT_CLIENT_CLAIM")
                        .unwrap_or("azp")
                        .to_owned(),
                })
            }
            Some(other) => {
                return Err(invalid(
                    "MAILBOX_GATEWAY_AUTH",
                    format!("`{other}` is not api-key, jwt or none"),
                ))
            }
        };
        let rules = match sources.get("MAILBOX_GATEWAY_ACCESS_RULES") {
            None => Vec::new(),
            Some(json) => crate::access::parse_rules(json)
                .map_err(|problem| invalid("MAILBOX_GATEWAY_ACCESS_RULES", problem))?,
        };
        if !matches!(auth, AuthConfig::None) && rules.is_empty() {
            tracing::warn!("client authentication is on but MAILBOX_GATEWAY_ACCESS_RULES is empty: every request will be denied");
        }
        Ok(AccessConfig { auth, rules })
    }
}

/// `name:sha256hex`.
fn parse_api_key(entry: &str) -> Result<(String, [u8; 32]), String> {
    let (name, hex) = entry
        .split_once(':')
        .ok_or_else(|| format!("`{entry}` is not name:sha256hex"))?;
    let digest = (0..32)
        .map(|i| {
            hex.get(i * 2..i * 2 + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .filter(|_| hex.len() == 64)
        .ok_or_else(|| format!("the digest of `{name}` is not 64 hex digits (a SHA-256)"))?;
    Ok((name.trim().to_owned(), digest.try_into().expect("32 bytes")))
}

impl TenantConfig {
    /// Reads the tenant, its credential and its endpoints from `sources`.
    pub fn load(sources: &Sources) -> Result<TenantConfig, ConfigError> {
        let secret = sources.get("AZURE_CLIENT_SECRET");
        let certificate = sources.get("AZURE_CLIENT_CERTIFICATE_PATH");
        let federated = sources.get("AZURE_FEDERATED_TOKEN_FILE");
        let tenant_id = sources.get("AZURE_TENANT_ID");
        let client_id = sources.get("AZURE_CLIENT_ID");
        let credentials = [secret.is_some(), certificate.is_some(), federated.is_some()];
        let (Some(tenant_id), Some(client_id)) = (tenant_id, client_id) else {
            return Err(ConfigError::NoCredential);
        };
        let credential = match (secret, certificate, federated) {
            (None, None, None) => return Err(ConfigError::NoCredential),
            _ if credentials.iter().filter(|set| **set).count() > 1 => {
                return Err(ConfigError::Invalid {
                    key: "AZURE_CLIENT_SECRET",
                    problem:
                        "set exactly one of AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH \
                              and AZURE_FEDERATED_TOKEN_FILE"
                            .into(),
                })
            }
            (Some(secret), _, _) => CredentialConfig::Secret(SecretString::from(secret.to_owned())),
            (_, Some(path), _) => CredentialConfig::Certificate {
                path: PathBuf::from(path),
                algorithm: parse_or(
                    sources,
                    "MAILBOX_GATEWAY_CERTIFICATE_ALGORITHM",
                    "PS256",
                    |v| match v.to_ascii_uppercase().as_str() {
                        "PS256" => Ok(CertificateAlgorithm::Ps256),
                        "RS256" => Ok(CertificateAlgorithm::Rs256),
                        _ => Err("must be PS256 or RS256".into()),
                    },
                )?,
            },
            (_, _, Some(path)) => CredentialConfig::FederatedTokenFile(PathBuf::from(path)),
        };
        if !is_directory_id(tenant_id) {
            return Err(ConfigError::Invalid {
                key: "AZURE_TENANT_ID",
                problem: "must be a tenant GUID or domain name (letters, digits, '-', '.')".into(),
            });
        }
        Ok(TenantConfig {
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            credential,
            authority_host: parse_or(
                sources,
                "AZURE_AUTHORITY_HOST",
                DEFAULT_AUTHORITY_HOST,
                parse_base_url,
            )?,
            graph_url: parse_or(
                sources,
                "MAILBOX_GATEWAY_GRAPH_URL",
                DEFAULT_GRAPH_URL,
                parse_base_url,
            )?,
            import_hosts: parse_or(
                sources,
                "MAILBOX_GATEWAY_IMPORT_HOSTS",
                DEFAULT_IMPORT_HOSTS,
                ImportHosts::parse,
            )?,
        })
    }
}

/// Tenant ids go into the token URL's path, so only plain GUID or domain characters are allowed.
fn is_directory_id(id: &str) -> bool {
    id.len() <= 253
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn parse_base_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value.trim_end_matches('/')).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "https" | "http") || url.query().is_some() {
        return Err("must be an http(s) URL without a query".into());
    }
    Ok(url)
}

fn parse_or<T>(
    sources: &Sources,
    key: &'static str,
    default: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let value = sources.get(key).unwrap_or(default);
    parse(value.trim()).map_err(|problem| ConfigError::Invalid { key, problem })
}

/// A whole number of at least 1 (bytes, seconds).
fn positive(sources: &Sources, key: &'static str, default: u64) -> Result<u64, ConfigError> {
    match sources.get(key) {
        None => Ok(default),
        Some(value) => match value.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ConfigError::Invalid {
                key,
                problem: format!("`{value}` is not a whole number of at least 1"),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use secrecy::ExposeSecret;

    use super::*;

    fn secret_sources() -> Vec<(&'static str, &'static str)> {
        vec![
            ("AZURE_TENANT_ID", "7e1d1b2c-0000-4000-8000-000000000001"),
            ("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555"),
            ("AZURE_CLIENT_SECRET", "s3cret-value"),
        ]
    }

    #[test]
    fn defaults_apply_when_only_a_credential_is_set() {
        let config = Config::load(&Sources::from_pairs(secret_sources()), None).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.max_item_bytes, DEFAULT_MAX_ITEM_BYTES);
        assert_eq!(config.tenant.graph_url.as_str(), DEFAULT_GRAPH_URL);
        assert!(config
            .tenant
            .import_hosts
            .allows(&Url::parse("https://outlook.office365.com/api/gv1.0/x").unwrap()));
        assert!(!config
            .tenant
            .import_hosts
            .allows(&Url::parse("http://outlook.office365.com/api").unwrap()));
        match &config.tenant.credential {
            CredentialConfig::Secret(s) => assert_eq!(s.expose_secret(), "s3cret-value"),
            other => panic!("unexpected credential {other:?}"),
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let config = Config::load(&Sources::from_pairs(secret_sources()), None).unwrap();
        assert!(!format!("{config:?}").contains("s3cret-value"));
    }

    #[test]
    fn no_credential_names_the_variables_and_simulate() {
        let err = Config::load(&Sources::default(), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("AZURE_CLIENT_SECRET") && err.contains("--simulate"),
            "{err}"
        );
    }

    #[test]
    fn two_credentials_are_refused() {
        let mut pairs = secret_sources();
        pairs.push(("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"));
        let err = Config::load(&Sources::from_pairs(pairs), None).unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
    }

    #[test]
    fn invalid_settings_are_named() {
        for (key, value) in [
            ("MAILBOX_GATEWAY_LISTEN", "nowhere"),
            ("MAILBOX_GATEWAY_MAX_ITEM_BYTES", "lots"),
            ("MAILBOX_GATEWAY_MAX_ITEM_BYTES", "0"),
            ("MAILBOX_GATEWAY_GRAPH_URL", "ftp://graph"),
            ("MAILBOX_GATEWAY_IMPORT_HOSTS", "https://host/with/path"),
            ("MAILBOX_GATEWAY_IMPORT_HOSTS", " , "),
            ("MAILBOX_GATEWAY_UPSTREAM_TIMEOUT_SECS", "-1"),
            ("MAILBOX_GATEWAY_WORKER_THREADS", "0"),
            ("MAILBOX_GATEWAY_CERTIFICATE_ALGORITHM", "HS256"),
            ("AZURE_TENANT_ID", "../evil"),
        ] {
            let mut pairs = secret_sources();
            if key == "MAILBOX_GATEWAY_CERTIFICATE_ALGORITHM" {
                pairs.retain(|(k, _)| *k != "AZURE_CLIENT_SECRET");
                pairs.push(("AZURE_CLIENT_CERTIFICATE_PATH", "/etc/cert.pem"));
            }
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key, value));
            let err = Config::load(&Sources::from_pairs(pairs), None).unwrap_err();
            assert!(err.to_string().contains(key), "{key}={value}: {err}");
        }
    }

    #[test]
    fn without_authentication_only_loopback_or_an_explicit_override_may_listen() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = secret_sources();
            pairs.extend_from_slice(extra);
            Config::load(&Sources::from_pairs(pairs), None)
        };
        let err = with(&[("MAILBOX_GATEWAY_LISTEN", "0.0.0.0:8080")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refusing to listen on 0.0.0.0:8080")
                && err.contains("MAILBOX_GATEWAY_AUTH"),
            "{err}"
        );
        assert!(with(&[
            ("MAILBOX_GATEWAY_LISTEN", "0.0.0.0:8080"),
            ("MAILBOX_GATEWAY_AUTH", "none")
        ])
        .is_err());
        assert!(with(&[
            ("MAILBOX_GATEWAY_LISTEN", "0.0.0.0:8080"),
            ("MAILBOX_GATEWAY_ALLOW_UNAUTHENTICATED", "true"),
        ])
        .is_ok());
        assert!(with(&[("MAILBOX_GATEWAY_LISTEN", "[::1]:8080")]).is_ok());
        let keyed = with(&[
            ("MAILBOX_GATEWAY_LISTEN", "0.0.0.0:8080"),
            ("MAILBOX_GATEWAY_AUTH", "api-key"),
            (
                "MAILBOX_GATEWAY_API_KEYS",
                "appliance:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            ),
            (
                "MAILBOX_GATEWAY_ACCESS_RULES",
                r#"[{"client":"appliance","mailboxes":["*"],"operations":["create"]}]"#,
            ),
        ])
        .unwrap();
        assert!(matches!(keyed.access.auth, AuthConfig::ApiKeys(ref keys) if keys.len() == 1));
        assert_eq!(keyed.access.rules.len(), 1);
    }

    #[test]
    fn bad_access_settings_are_named() {
        for (extra, key) in [
            (
                vec![("MAILBOX_GATEWAY_AUTH", "magic")],
                "MAILBOX_GATEWAY_AUTH",
            ),
            (
                vec![("MAILBOX_GATEWAY_AUTH", "api-key")],
                "MAILBOX_GATEWAY_API_KEYS",
            ),
            (
                vec![
                    ("MAILBOX_GATEWAY_AUTH", "api-key"),
                    ("MAILBOX_GATEWAY_API_KEYS", "a:1234"),
                ],
                "MAILBOX_GATEWAY_API_KEYS",
            ),
            (
                vec![
                    ("MAILBOX_GATEWAY_AUTH", "jwt"),
                    ("MAILBOX_GATEWAY_JWT_ISSUER", "i"),
                ],
                "MAILBOX_GATEWAY_JWT_JWKS_URL",
            ),
            (
                vec![
                    ("MAILBOX_GATEWAY_AUTH", "jwt"),
                    ("MAILBOX_GATEWAY_JWT_HS256_SECRET", "short"),
                ],
                "MAILBOX_GATEWAY_JWT_HS256_SECRET",
            ),
            (
                vec![("MAILBOX_GATEWAY_ACCESS_RULES", "[{}]")],
                "MAILBOX_GATEWAY_ACCESS_RULES",
            ),
        ] {
            let mut pairs = secret_sources();
            pairs.extend(extra);
            let err = Config::load(&Sources::from_pairs(pairs), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn an_import_host_with_a_scheme_allows_exactly_that_origin() {
        let hosts = ImportHosts::parse("http://127.0.0.1:9000, outlook.office365.com").unwrap();
        assert!(hosts.allows(&Url::parse("http://127.0.0.1:9000/api?authtoken=x").unwrap()));
        assert!(!hosts.allows(&Url::parse("http://127.0.0.1:9001/api").unwrap()));
        assert!(!hosts.allows(&Url::parse("https://127.0.0.1:9000/api").unwrap()));
        assert!(hosts.allows(&Url::parse("https://outlook.office365.com:443/x").unwrap()));
        assert!(!hosts.allows(&Url::parse("https://outlook.office365.com.evil.example/x").unwrap()));
    }

    #[test]
    fn the_environment_wins_over_the_file_and_unknown_file_keys_are_refused() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "MAILBOX_GATEWAY_MAX_ITEM_BYTES = 1024\nMAILBOX_GATEWAY_LISTEN = \"127.0.0.1:9999\""
        )
        .unwrap();
        let mut sources = Sources::from_toml_file(file.path()).unwrap();
        for (k, v) in secret_sources() {
            sources.set(k, v);
        }
        sources.set("MAILBOX_GATEWAY_LISTEN", "127.0.0.1:7777");
        let config = Config::load(&sources, None).unwrap();
        assert_eq!(config.max_item_bytes, 1024);
        assert_eq!(config.listen.port(), 7777);

        let mut bad = tempfile::NamedTempFile::new().unwrap();
        writeln!(bad, "MAILBOX_GATEWAY_LISTN = \"x\"").unwrap();
        let err = Sources::from_toml_file(bad.path()).unwrap_err().to_string();
        assert!(err.contains("unknown key MAILBOX_GATEWAY_LISTN"), "{err}");
    }
}
