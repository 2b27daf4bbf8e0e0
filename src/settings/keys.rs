//! Every setting's key, one constant each, and the registry of them all with their meanings.
//!
//! A key is both an environment variable and a key in the `--config` file. The registry is what a file
//! is checked against (an unknown key is an error) and what the configuration reference documents.

/// Entra ID tenant (directory) id.
pub const AZURE_TENANT_ID: &str = "AZURE_TENANT_ID";
/// Application (client) id.
pub const AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
/// Client secret.
pub const AZURE_CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
/// PEM file with the certificate and its private key.
pub const AZURE_CLIENT_CERTIFICATE_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
/// File holding a federated token (workload identity).
pub const AZURE_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
/// Entra ID login host.
pub const AZURE_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
/// PS256 (x5t#S256) or RS256 (x5t).
pub const CERTIFICATE_ALGORITHM: &str = "MAILBOX_GATEWAY_CERTIFICATE_ALGORITHM";
/// Address to listen on.
pub const LISTEN: &str = "MAILBOX_GATEWAY_LISTEN";
/// Microsoft Graph base URL.
pub const GRAPH_URL: &str = "MAILBOX_GATEWAY_GRAPH_URL";
/// How the gateway reaches Graph: application (its own app token) or delegated (each caller's).
pub const GRAPH_ACCESS: &str = "MAILBOX_GATEWAY_GRAPH_ACCESS";
/// Origins importUrl may point to.
pub const IMPORT_HOSTS: &str = "MAILBOX_GATEWAY_IMPORT_HOSTS";
/// Largest item accepted.
pub const MAX_ITEM_BYTES: &str = "MAILBOX_GATEWAY_MAX_ITEM_BYTES";
/// Item bytes held in memory across all requests.
pub const MEMORY_BUDGET: &str = "MAILBOX_GATEWAY_MEMORY_BUDGET";
/// Longest wait for room in the memory budget.
pub const MEMORY_WAIT_SECS: &str = "MAILBOX_GATEWAY_MEMORY_WAIT_SECS";
/// Sha256 (default) or off: the item digest in audit lines.
pub const AUDIT_DIGEST: &str = "MAILBOX_GATEWAY_AUDIT_DIGEST";
/// Where audit events go: stdout, stderr, off or a file to append to.
pub const AUDIT_LOG: &str = "MAILBOX_GATEWAY_AUDIT_LOG";
/// Upstream connect timeout.
pub const UPSTREAM_CONNECT_TIMEOUT_SECS: &str = "MAILBOX_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_SECS";
/// Upstream request timeout.
pub const UPSTREAM_TIMEOUT_SECS: &str = "MAILBOX_GATEWAY_UPSTREAM_TIMEOUT_SECS";
/// Longest pause in a client's upload.
pub const CLIENT_BODY_TIMEOUT_SECS: &str = "MAILBOX_GATEWAY_CLIENT_BODY_TIMEOUT_SECS";
/// Upstream attempts per request.
pub const RETRY_ATTEMPTS: &str = "MAILBOX_GATEWAY_RETRY_ATTEMPTS";
/// Time a request may spend retrying.
pub const RETRY_BUDGET_SECS: &str = "MAILBOX_GATEWAY_RETRY_BUDGET_SECS";
/// Upstream requests in flight per mailbox.
pub const MAILBOX_CONCURRENCY: &str = "MAILBOX_GATEWAY_MAILBOX_CONCURRENCY";
/// Longest wait for a mailbox's turn.
pub const MAILBOX_QUEUE_TIMEOUT_SECS: &str = "MAILBOX_GATEWAY_MAILBOX_QUEUE_TIMEOUT_SECS";
/// Upload pacing per mailbox (0 = off).
pub const UPLOAD_BYTES_PER_5_MIN: &str = "MAILBOX_GATEWAY_UPLOAD_BYTES_PER_5_MIN";
/// How long idempotency keys are kept.
pub const IDEMPOTENCY_TTL_SECS: &str = "MAILBOX_GATEWAY_IDEMPOTENCY_TTL_SECS";
/// How many idempotency keys are kept.
pub const IDEMPOTENCY_CAPACITY: &str = "MAILBOX_GATEWAY_IDEMPOTENCY_CAPACITY";
/// Redis:// or rediss:// URL of the Valkey/Redis store that replicas share (unset = in memory).
pub const REDIS_URL: &str = "MAILBOX_GATEWAY_REDIS_URL";
/// Prefix of every key in the shared store.
pub const REDIS_PREFIX: &str = "MAILBOX_GATEWAY_REDIS_PREFIX";
/// Requests in flight per mailbox and replica while the shared store is unreachable.
pub const DEGRADED_MAILBOX_CONCURRENCY: &str = "MAILBOX_GATEWAY_DEGRADED_MAILBOX_CONCURRENCY";
/// Time to finish in-flight imports on shutdown.
pub const SHUTDOWN_GRACE_SECS: &str = "MAILBOX_GATEWAY_SHUTDOWN_GRACE_SECS";
/// Open client connections at most.
pub const MAX_CONNECTIONS: &str = "MAILBOX_GATEWAY_MAX_CONNECTIONS";
/// Time a client has to send its request headers.
pub const HEADER_READ_TIMEOUT_SECS: &str = "MAILBOX_GATEWAY_HEADER_READ_TIMEOUT_SECS";
/// Percent of the memory budget one client may hold while it holds anything else.
pub const CLIENT_BUDGET_SHARE: &str = "MAILBOX_GATEWAY_CLIENT_BUDGET_SHARE";
/// Slowest upload accepted after the first 10 seconds, in bytes per second.
pub const MIN_UPLOAD_BYTES_PER_SEC: &str = "MAILBOX_GATEWAY_MIN_UPLOAD_BYTES_PER_SEC";
/// Time a connection may stay open with no request in progress.
pub const IDLE_TIMEOUT_SECS: &str = "MAILBOX_GATEWAY_IDLE_TIMEOUT_SECS";
/// Time a client may accept none of its answer's bytes before its connection is closed.
pub const SEND_TIMEOUT_SECS: &str = "MAILBOX_GATEWAY_SEND_TIMEOUT_SECS";
/// Threads serving client connections.
pub const WORKER_THREADS: &str = "MAILBOX_GATEWAY_WORKER_THREADS";
/// PEM certificate chain for HTTPS.
pub const TLS_CERT_PATH: &str = "MAILBOX_GATEWAY_TLS_CERT_PATH";
/// PEM private key for HTTPS.
pub const TLS_KEY_PATH: &str = "MAILBOX_GATEWAY_TLS_KEY_PATH";
/// How often the TLS files are checked for changes.
pub const TLS_RELOAD_SECS: &str = "MAILBOX_GATEWAY_TLS_RELOAD_SECS";
/// Client authentication: api-key, jwt or none.
pub const AUTH: &str = "MAILBOX_GATEWAY_AUTH";
/// True to allow none on a non-loopback address.
pub const ALLOW_UNAUTHENTICATED: &str = "MAILBOX_GATEWAY_ALLOW_UNAUTHENTICATED";
/// Client API keys as name:sha256hex, comma-separated.
pub const API_KEYS: &str = "MAILBOX_GATEWAY_API_KEYS";
/// JSON list of what each client may touch.
pub const ACCESS_RULES: &str = "MAILBOX_GATEWAY_ACCESS_RULES";
/// Expected iss of client JWTs.
pub const JWT_ISSUER: &str = "MAILBOX_GATEWAY_JWT_ISSUER";
/// Expected aud of client JWTs.
pub const JWT_AUDIENCE: &str = "MAILBOX_GATEWAY_JWT_AUDIENCE";
/// JWKS URL of the identity provider.
pub const JWT_JWKS_URL: &str = "MAILBOX_GATEWAY_JWT_JWKS_URL";
/// JWKS file of the identity provider.
pub const JWT_JWKS_FILE: &str = "MAILBOX_GATEWAY_JWT_JWKS_FILE";
/// Shared secret for HS256 JWTs.
pub const JWT_HS256_SECRET: &str = "MAILBOX_GATEWAY_JWT_HS256_SECRET";
/// Claim that names the client (default azp).
pub const JWT_CLIENT_CLAIM: &str = "MAILBOX_GATEWAY_JWT_CLIENT_CLAIM";
/// Log format: text (the default) or json.
pub const LOG_FORMAT: &str = "MAILBOX_GATEWAY_LOG_FORMAT";

/// Every key the gateway reads, with its meaning; unknown keys in a file are an error.
pub const KEYS: &[(&str, &str)] = &[
    (AZURE_TENANT_ID, "Entra ID tenant (directory) id"),
    (AZURE_CLIENT_ID, "application (client) id"),
    (AZURE_CLIENT_SECRET, "client secret"),
    (AZURE_CLIENT_CERTIFICATE_PATH, "PEM file with the certificate and its private key"),
    (AZURE_FEDERATED_TOKEN_FILE, "file holding a federated token (workload identity)"),
    (AZURE_AUTHORITY_HOST, "Entra ID login host"),
    (CERTIFICATE_ALGORITHM, "PS256 (x5t#S256) or RS256 (x5t)"),
    (LISTEN, "address to listen on"),
    (GRAPH_URL, "Microsoft Graph base URL"),
    (
        GRAPH_ACCESS,
        "application (the app's own token) or delegated (each caller's, on their behalf)",
    ),
    (IMPORT_HOSTS, "origins importUrl may point to"),
    (MAX_ITEM_BYTES, "largest item accepted"),
    (MEMORY_BUDGET, "item bytes held in memory across all requests"),
    (MEMORY_WAIT_SECS, "longest wait for room in the memory budget"),
    (AUDIT_DIGEST, "sha256 (default) or off: the item digest in audit lines"),
    (AUDIT_LOG, "where audit events go: stdout, stderr, off or a file to append to"),
    (UPSTREAM_CONNECT_TIMEOUT_SECS, "upstream connect timeout"),
    (UPSTREAM_TIMEOUT_SECS, "upstream request timeout"),
    (CLIENT_BODY_TIMEOUT_SECS, "longest pause in a client's upload"),
    (RETRY_ATTEMPTS, "upstream attempts per request"),
    (RETRY_BUDGET_SECS, "time a request may spend retrying"),
    (MAILBOX_CONCURRENCY, "upstream requests in flight per mailbox"),
    (MAILBOX_QUEUE_TIMEOUT_SECS, "longest wait for a mailbox's turn"),
    (UPLOAD_BYTES_PER_5_MIN, "upload pacing per mailbox (0 = off)"),
    (IDEMPOTENCY_TTL_SECS, "how long idempotency keys are kept"),
    (
        IDEMPOTENCY_CAPACITY,
        "how many live idempotency keys each client may hold",
    ),
    (REDIS_URL, "redis:// or rediss:// URL of the Valkey/Redis store that replicas share (unset = in memory)"),
    (REDIS_PREFIX, "prefix of every key in the shared store"),
    (DEGRADED_MAILBOX_CONCURRENCY, "requests in flight per mailbox and replica while the shared store is unreachable"),
    (SHUTDOWN_GRACE_SECS, "time to finish in-flight imports on shutdown"),
    (MAX_CONNECTIONS, "open client connections at most"),
    (HEADER_READ_TIMEOUT_SECS, "time a client has to send its request headers"),
    (
        CLIENT_BUDGET_SHARE,
        "percent of the memory budget one client may hold",
    ),
    (
        MIN_UPLOAD_BYTES_PER_SEC,
        "slowest upload accepted after its first 10 seconds (0 = off)",
    ),
    (
        IDLE_TIMEOUT_SECS,
        "time a connection may stay open with no request in progress",
    ),
    (
        SEND_TIMEOUT_SECS,
        "time a client may accept none of its answer's bytes before its connection is closed",
    ),
    (WORKER_THREADS, "threads serving client connections"),
    (TLS_CERT_PATH, "PEM certificate chain for HTTPS"),
    (TLS_KEY_PATH, "PEM private key for HTTPS"),
    (TLS_RELOAD_SECS, "how often the TLS files are checked for changes"),
    (AUTH, "client authentication: api-key, jwt or none"),
    (ALLOW_UNAUTHENTICATED, "true to allow none on a non-loopback address"),
    (API_KEYS, "client API keys as name:sha256hex, comma-separated"),
    (ACCESS_RULES, "JSON list of what each client may touch"),
    (JWT_ISSUER, "expected iss of client JWTs"),
    (JWT_AUDIENCE, "expected aud of client JWTs"),
    (JWT_JWKS_URL, "JWKS URL of the identity provider"),
    (JWT_JWKS_FILE, "JWKS file of the identity provider"),
    (JWT_HS256_SECRET, "shared secret for HS256 JWTs"),
    (JWT_CLIENT_CLAIM, "claim that names the client (default azp)"),
    (LOG_FORMAT, "log format: text (the default) or json"),
];
