//! Loads and validates the gateway's settings from the environment and an optional TOML file.
//!
//! Every setting has one key, used both as an environment variable and as a key in the file given with
//! `--config`; the environment wins. Loading is done once at start-up and fails with a message that
//! names the setting at fault. Tests build these structs directly or pass their own key maps: nothing
//! here reads the process environment except [`Sources::from_process`].
//!
//! One concern per file: `tenant` reads the Graph tenant and its credential, `limits` holds the typed
//! limits and their defaults, `logging` where the two log streams go, and this file assembles the whole
//! [`Config`]. The keys ([`keys`]) and the raw sources ([`Sources`]) live in `crate::settings`, a leaf
//! that `access` reads client authentication and rules through too, so `access` does not depend on
//! `config`.

mod limits;
mod logging;
mod tenant;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::access::{AccessConfig, AuthConfig, JwtConfig, JwtKeySource, UserTokenDefaults};
pub use crate::settings::keys::{self, KEYS};
pub(crate) use crate::settings::{parse_or, positive};
pub use crate::settings::{ConfigError, Sources};
pub use limits::{
    ConnectionLimits, IdempotencySettings, Pacing, RetryPolicy, SharedStateConfig, Timeouts,
    TlsSettings, DEFAULT_REDIS_PREFIX, DEFAULT_SHARED_LEASE,
};
pub use logging::{AuditLogTarget, LogFormat, LoggingSettings};
pub use tenant::{CertificateAlgorithm, CredentialConfig, ImportHosts, TenantConfig};

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
/// Default slowest upload accepted after its grace period: a 56k modem is faster.
pub const DEFAULT_MIN_UPLOAD_BYTES_PER_SEC: u64 = 10 * 1024;
/// How long an upload may be slower than the minimum rate before it counts.
pub const UPLOAD_RATE_GRACE: Duration = Duration::from_secs(10);
/// Default largest item accepted: Exchange Online's own message size limit.
pub const DEFAULT_MAX_ITEM_BYTES: u64 = 150 * 1024 * 1024;

/// Whose Graph token the gateway calls Graph with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphAccess {
    /// The app's own token (`MailboxItem.ImportExport.All`): every mailbox of the tenant.
    Application,
    /// Each caller's Entra user token, exchanged on their behalf (`MailboxItem.ImportExport`): only what
    /// that user can reach.
    Delegated,
}

/// The gateway's whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// When tokens and import sessions are due for renewal; tests move it.
    pub clock: crate::clock::Clock,
    /// Whose Graph token the gateway uses: its app's, or each caller's (delegated).
    pub graph_access: GraphAccess,
    /// The Exchange Online tenant the gateway writes into.
    pub tenant: TenantConfig,
    /// Largest raw item accepted, in bytes.
    pub max_item_bytes: u64,
    /// Request body bytes held in memory at once, across all requests.
    pub memory_budget: u64,
    /// Longest wait for room in the memory budget before `503 over_capacity`.
    pub memory_wait: Duration,
    /// Percent of the memory budget one client may hold while it holds anything else.
    pub client_budget_share: u8,
    /// Slowest upload accepted after its first [`UPLOAD_RATE_GRACE`], in bytes per second; 0 is off.
    pub min_upload_bytes_per_sec: u64,
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

impl Config {
    /// Validates `sources` into a configuration. With `tenant` given (the simulator's demo tenant), the
    /// Graph credential settings are not read.
    pub fn load(sources: &Sources, tenant: Option<TenantConfig>) -> Result<Config, ConfigError> {
        let listen = parse_or(sources, keys::LISTEN, DEFAULT_LISTEN, |v| {
            v.parse::<SocketAddr>().map_err(|e| e.to_string())
        })?;
        let max_item_bytes = positive(sources, keys::MAX_ITEM_BYTES, DEFAULT_MAX_ITEM_BYTES)?;
        let secs = |key, default: Duration| {
            positive(sources, key, default.as_secs()).map(Duration::from_secs)
        };
        let timeouts = Timeouts {
            connect: secs(
                keys::UPSTREAM_CONNECT_TIMEOUT_SECS,
                Timeouts::default().connect,
            )?,
            request: secs(keys::UPSTREAM_TIMEOUT_SECS, Timeouts::default().request)?,
            client_body: secs(
                keys::CLIENT_BODY_TIMEOUT_SECS,
                Timeouts::default().client_body,
            )?,
        };
        let retry = RetryPolicy {
            max_attempts: positive(
                sources,
                keys::RETRY_ATTEMPTS,
                RetryPolicy::default().max_attempts.into(),
            )?
            .try_into()
            .map_err(|_| ConfigError::Invalid {
                key: keys::RETRY_ATTEMPTS,
                problem: "too large".into(),
            })?,
            budget: secs(keys::RETRY_BUDGET_SECS, RetryPolicy::default().budget)?,
        };
        let pacing = Pacing {
            mailbox_concurrency: positive(
                sources,
                keys::MAILBOX_CONCURRENCY,
                Pacing::default().mailbox_concurrency as u64,
            )?
            .try_into()
            .unwrap_or(usize::MAX),
            queue_timeout: secs(
                keys::MAILBOX_QUEUE_TIMEOUT_SECS,
                Pacing::default().queue_timeout,
            )?,
            upload_bytes_per_5_min: match sources.get(keys::UPLOAD_BYTES_PER_5_MIN) {
                Some("0") => 0,
                _ => positive(
                    sources,
                    keys::UPLOAD_BYTES_PER_5_MIN,
                    Pacing::default().upload_bytes_per_5_min,
                )?,
            },
            ..Pacing::default()
        };
        let idempotency = IdempotencySettings {
            ttl: secs(
                keys::IDEMPOTENCY_TTL_SECS,
                IdempotencySettings::default().ttl,
            )?,
            capacity: positive(
                sources,
                keys::IDEMPOTENCY_CAPACITY,
                IdempotencySettings::default().capacity,
            )?,
            ..IdempotencySettings::default()
        };
        let connections = ConnectionLimits {
            max_connections: positive(
                sources,
                keys::MAX_CONNECTIONS,
                ConnectionLimits::default().max_connections as u64,
            )?
            .try_into()
            .unwrap_or(usize::MAX),
            header_read_timeout: secs(
                keys::HEADER_READ_TIMEOUT_SECS,
                ConnectionLimits::default().header_read_timeout,
            )?,
            idle_timeout: secs(
                keys::IDLE_TIMEOUT_SECS,
                ConnectionLimits::default().idle_timeout,
            )?,
            send_timeout: secs(
                keys::SEND_TIMEOUT_SECS,
                ConnectionLimits::default().send_timeout,
            )?,
            worker_threads: positive(
                sources,
                keys::WORKER_THREADS,
                ConnectionLimits::default().worker_threads as u64,
            )?
            .try_into()
            .unwrap_or(usize::MAX),
        };
        let tls = match (
            sources.get(keys::TLS_CERT_PATH),
            sources.get(keys::TLS_KEY_PATH),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsSettings {
                cert_path: PathBuf::from(cert),
                key_path: PathBuf::from(key),
                reload_every: secs(keys::TLS_RELOAD_SECS, DEFAULT_TLS_RELOAD)?,
            }),
            (cert, _) => {
                return Err(ConfigError::Invalid {
                    key: if cert.is_none() {
                        keys::TLS_CERT_PATH
                    } else {
                        keys::TLS_KEY_PATH
                    },
                    problem: "HTTPS needs both MAILBOX_GATEWAY_TLS_CERT_PATH and MAILBOX_GATEWAY_TLS_KEY_PATH".into(),
                })
            }
        };
        let simulate = tenant.is_some();
        let tenant = match tenant {
            Some(tenant) => tenant,
            None => TenantConfig::load(sources)?,
        };
        let graph_access = parse_or(sources, keys::GRAPH_ACCESS, "application", |v| match v {
            "application" => Ok(GraphAccess::Application),
            "delegated" => Ok(GraphAccess::Delegated),
            _ => Err("must be application or delegated".to_owned()),
        })?;
        if graph_access == GraphAccess::Delegated
            && uuid::Uuid::parse_str(&tenant.tenant_id).is_err()
        {
            // The issuer callers' tokens carry names the tenant by its id; a domain would match none.
            return Err(ConfigError::Invalid {
                key: keys::AZURE_TENANT_ID,
                problem:
                    "delegated mode needs the tenant's id (a GUID), which users' tokens carry in \
                          their issuer, not a domain name"
                        .into(),
            });
        }
        let users = (graph_access == GraphAccess::Delegated).then(|| tenant.user_token_defaults());
        let access = AccessConfig::load(sources, listen, simulate, users.as_ref())?;
        let memory_budget = positive(sources, keys::MEMORY_BUDGET, DEFAULT_MEMORY_BUDGET)?;
        Ok(Config {
            memory_budget,
            memory_wait: secs(keys::MEMORY_WAIT_SECS, DEFAULT_MEMORY_WAIT)?,
            client_budget_share: parse_or(sources, keys::CLIENT_BUDGET_SHARE, "50", |v| {
                v.parse::<u8>()
                    .ok()
                    .filter(|share| (1..=100).contains(share))
                    .ok_or_else(|| "must be a whole percentage from 1 to 100".to_owned())
            })?,
            min_upload_bytes_per_sec: match sources.get(keys::MIN_UPLOAD_BYTES_PER_SEC) {
                Some("0") => 0,
                _ => positive(
                    sources,
                    keys::MIN_UPLOAD_BYTES_PER_SEC,
                    DEFAULT_MIN_UPLOAD_BYTES_PER_SEC,
                )?,
            },
            audit_digest: parse_or(sources, keys::AUDIT_DIGEST, "sha256", |v| match v {
                "sha256" => Ok(true),
                "off" => Ok(false),
                _ => Err("must be sha256 or off".into()),
            })?,
            access,
            graph_access,
            connections,
            tls,
            listen,
            max_item_bytes,
            timeouts,
            retry,
            pacing,
            idempotency,
            shared_state: SharedStateConfig::load(sources)?,
            shutdown_grace: secs(keys::SHUTDOWN_GRACE_SECS, DEFAULT_SHUTDOWN_GRACE)?,
            ..Config::new(tenant)
        })
    }

    /// The defaults for everything but the tenant (tests start from this).
    pub fn new(tenant: TenantConfig) -> Config {
        Config {
            clock: crate::clock::Clock::default(),
            graph_access: GraphAccess::Application,
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
            tenant,
            max_item_bytes: DEFAULT_MAX_ITEM_BYTES,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            memory_wait: DEFAULT_MEMORY_WAIT,
            client_budget_share: 50,
            min_upload_bytes_per_sec: DEFAULT_MIN_UPLOAD_BYTES_PER_SEC,
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use secrecy::ExposeSecret;
    use url::Url;

    use super::*;

    fn secret_sources() -> Vec<(&'static str, &'static str)> {
        vec![
            (
                keys::AZURE_TENANT_ID,
                "7e1d1b2c-0000-4000-8000-000000000001",
            ),
            (
                keys::AZURE_CLIENT_ID,
                "11111111-2222-3333-4444-555555555555",
            ),
            (keys::AZURE_CLIENT_SECRET, "s3cret-value"),
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
            err.contains(keys::AZURE_CLIENT_SECRET) && err.contains("--simulate"),
            "{err}"
        );
    }

    #[test]
    fn two_credentials_are_refused() {
        let mut pairs = secret_sources();
        pairs.push((keys::AZURE_FEDERATED_TOKEN_FILE, "/var/run/token"));
        let err = Config::load(&Sources::from_pairs(pairs), None).unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
    }

    #[test]
    fn invalid_settings_are_named() {
        for (key, value) in [
            (keys::LISTEN, "nowhere"),
            (keys::MAX_ITEM_BYTES, "lots"),
            (keys::MAX_ITEM_BYTES, "0"),
            (keys::GRAPH_URL, "ftp://graph"),
            (keys::GRAPH_URL, "http://graph.example/v1.0"),
            (keys::AZURE_AUTHORITY_HOST, "http://login.example"),
            (keys::CLIENT_BUDGET_SHARE, "0"),
            (keys::IMPORT_HOSTS, "https://host/with/path"),
            (keys::IMPORT_HOSTS, " , "),
            (keys::UPSTREAM_TIMEOUT_SECS, "-1"),
            (keys::WORKER_THREADS, "0"),
            (keys::CERTIFICATE_ALGORITHM, "HS256"),
            (keys::AZURE_TENANT_ID, "../evil"),
        ] {
            let mut pairs = secret_sources();
            if key == keys::CERTIFICATE_ALGORITHM {
                pairs.retain(|(k, _)| *k != keys::AZURE_CLIENT_SECRET);
                pairs.push((keys::AZURE_CLIENT_CERTIFICATE_PATH, "/etc/cert.pem"));
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
        let err = with(&[(keys::LISTEN, "0.0.0.0:8080")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refusing to listen on 0.0.0.0:8080") && err.contains(keys::AUTH),
            "{err}"
        );
        assert!(with(&[(keys::LISTEN, "0.0.0.0:8080"), (keys::AUTH, "none")]).is_err());
        assert!(with(&[
            (keys::LISTEN, "0.0.0.0:8080"),
            (keys::ALLOW_UNAUTHENTICATED, "true"),
        ])
        .is_ok());
        assert!(with(&[(keys::LISTEN, "[::1]:8080")]).is_ok());
        let keyed = with(&[
            (keys::LISTEN, "0.0.0.0:8080"),
            (keys::AUTH, "api-key"),
            (
                keys::API_KEYS,
                "appliance:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            ),
            (
                keys::ACCESS_RULES,
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
            (vec![(keys::AUTH, "magic")], keys::AUTH),
            (vec![(keys::AUTH, "api-key")], keys::API_KEYS),
            (
                vec![(keys::AUTH, "api-key"), (keys::API_KEYS, "a:1234")],
                keys::API_KEYS,
            ),
            (
                vec![
                    (keys::AUTH, "api-key"),
                    (
                        keys::API_KEYS,
                        "bad name:0000000000000000000000000000000000000000000000000000000000000000",
                    ),
                ],
                keys::API_KEYS,
            ),
            (
                vec![(keys::AUTH, "jwt"), (keys::JWT_ISSUER, "i")],
                keys::JWT_JWKS_URL,
            ),
            (
                vec![
                    (keys::AUTH, "jwt"),
                    (keys::JWT_ISSUER, "i"),
                    (keys::JWT_AUDIENCE, "a"),
                    (keys::JWT_JWKS_URL, "http://idp.example/keys"),
                ],
                keys::JWT_JWKS_URL,
            ),
            (
                vec![(keys::AUTH, "jwt"), (keys::JWT_HS256_SECRET, "short")],
                keys::JWT_HS256_SECRET,
            ),
            (vec![(keys::ACCESS_RULES, "[{}]")], keys::ACCESS_RULES),
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
        sources.set(keys::LISTEN, "127.0.0.1:7777");
        let config = Config::load(&sources, None).unwrap();
        assert_eq!(config.max_item_bytes, 1024);
        assert_eq!(config.listen.port(), 7777);

        let mut bad = tempfile::NamedTempFile::new().unwrap();
        writeln!(bad, "MAILBOX_GATEWAY_LISTN = \"x\"").unwrap();
        let err = Sources::from_toml_file(bad.path()).unwrap_err().to_string();
        assert!(err.contains("unknown key MAILBOX_GATEWAY_LISTN"), "{err}");
    }

    #[test]
    fn delegated_mode_derives_user_token_checks_from_the_tenant_and_refuses_what_cannot_work() {
        let with = |extra: Vec<(&'static str, &'static str)>| {
            let mut pairs = secret_sources();
            pairs.push((keys::GRAPH_ACCESS, "delegated"));
            pairs.extend(extra);
            Config::load(&Sources::from_pairs(pairs), None)
        };
        let config = with(vec![(keys::AUTH, "jwt")]).unwrap();
        assert_eq!(config.graph_access, GraphAccess::Delegated);
        let AuthConfig::Jwt(jwt) = &config.access.auth else {
            panic!("jwt mode")
        };
        let tenant = "7e1d1b2c-0000-4000-8000-000000000001";
        assert_eq!(
            jwt.issuer,
            format!("https://login.microsoftonline.com/{tenant}/v2.0")
        );
        assert!(matches!(&jwt.keys, JwtKeySource::JwksUrl(url)
            if url.as_str() == format!("https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys")));
        assert_eq!(jwt.audience, "11111111-2222-3333-4444-555555555555");
        assert_eq!(
            jwt.extra_audiences,
            ["api://11111111-2222-3333-4444-555555555555"]
        );
        assert_eq!(jwt.client_claim, "preferred_username");
        assert!(jwt.users);

        for (extra, named) in [
            (vec![], keys::AUTH),
            (vec![(keys::AUTH, "api-key")], keys::AUTH),
            (
                vec![
                    (keys::AUTH, "jwt"),
                    (keys::JWT_HS256_SECRET, "0123456789abcdef0123456789abcdef"),
                ],
                keys::JWT_HS256_SECRET,
            ),
            (vec![(keys::GRAPH_ACCESS, "both")], keys::GRAPH_ACCESS),
        ] {
            let error = with(extra).unwrap_err().to_string();
            assert!(error.contains(named), "{error}");
        }
    }
}
