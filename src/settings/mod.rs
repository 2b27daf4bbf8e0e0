//! The settings as keys and raw values: every key the gateway reads (`keys`), the file and environment
//! they come from merged (`sources`), the parsers every setting shares, and the error that names the
//! setting at fault.
//!
//! A leaf: it depends on nothing of the gateway, so `config` (which assembles the typed configuration)
//! and `access` (which reads client authentication and rules next to the code that uses them) both build
//! on it without depending on each other's files, and neither on the other for parsing.

pub mod keys;
mod sources;

use std::net::SocketAddr;
use std::path::PathBuf;

use url::Url;

pub use sources::Sources;
pub(crate) use sources::{parse_or, positive};

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

/// Whether a URL's host is this machine.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

pub(crate) fn parse_base_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value.trim_end_matches('/')).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "https" | "http") || url.query().is_some() {
        return Err("must be an http(s) URL without a query".into());
    }
    // Tokens and keys travel over these: plain HTTP only to this machine (the simulator, a local proxy).
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(
            "must be https unless the host is loopback (127.0.0.1, ::1 or localhost)".into(),
        );
    }
    Ok(url)
}
