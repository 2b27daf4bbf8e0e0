//! Caches the Graph app token (client credentials flow) and refreshes it before it expires.
//!
//! One token is shared by every request of a tenant. It is refreshed single-flight ahead of its expiry, so
//! a hundred concurrent uploads cause one token request, and a 401 from Graph can drop exactly the token
//! that failed. Token values, the client secret, the private key and assertions are never logged or put
//! in errors: they live in `SecretString`s or types whose `Debug` hides them.

mod assertion;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

pub use assertion::{CertificateCredential, CredentialError};

use crate::clock::Clock;
use crate::config::{CredentialConfig, TenantConfig};
use crate::metrics::Metrics;
use crate::refresh::RefreshSlot;

/// The scope of an app-only Graph token.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Refresh a token this long before it expires (at most; a short-lived token is refreshed after three
/// quarters of its life instead).
const REFRESH_SKEW: Duration = Duration::from_secs(5 * 60);
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The on-behalf-of grant type.
const OBO_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How the application proves its identity, ready to use.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A client secret.
    Secret(SecretString),
    /// A certificate assertion, signed afresh for each token request.
    Certificate(CertificateCredential),
    /// A federated token file (Kubernetes workload identity), re-read for each token request because the
    /// kubelet rotates it.
    FederatedTokenFile(PathBuf),
}

impl Credential {
    /// Loads the configured credential. A certificate file is read and parsed now, and a federated token
    /// file must exist now, so start-up fails on a bad one.
    pub fn load(config: &CredentialConfig) -> Result<Credential, CredentialError> {
        Ok(match config {
            CredentialConfig::Secret(secret) => Credential::Secret(secret.clone()),
            CredentialConfig::Certificate { path, algorithm } => {
                Credential::Certificate(CertificateCredential::load(path, *algorithm)?)
            }
            CredentialConfig::FederatedTokenFile(path) => {
                Credential::FederatedTokenFile(path.clone())
            }
        })
    }
}

/// An app token and when to stop using it.
#[derive(Clone)]
pub struct AccessToken {
    value: SecretString,
    refresh_at: Instant,
}

impl AccessToken {
    /// The bearer value, for an `Authorization` header.
    pub fn bearer(&self) -> &str {
        self.value.expose_secret()
    }

    /// Whether the token is good for a while yet at `now` (not within its refresh margin).
    pub fn is_fresh_at(&self, now: Instant) -> bool {
        now < self.refresh_at
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"[REDACTED]")
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

/// Why no token could be had. Carries Entra's error code, AADSTS number and trace id for support cases,
/// never the credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint refused the request.
    #[error("the token endpoint refused the credential ({status} {error}{})", aadsts.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    Rejected {
        status: u16,
        error: String,
        aadsts: Option<String>,
        trace_id: Option<String>,
        correlation_id: Option<String>,
    },
    /// The token endpoint could not be reached or did not answer in time.
    #[error("the token endpoint could not be reached: {0}")]
    Unreachable(#[source] std::sync::Arc<reqwest::Error>),
    /// The token endpoint answered something that is not a token.
    #[error("the token endpoint answered {0} without a usable token")]
    InvalidResponse(u16),
    /// The federated token file could not be read.
    #[error("cannot read the federated token file {path}: {problem}")]
    FederatedTokenFile { path: String, problem: String },
    /// The certificate assertion could not be signed.
    #[error("cannot sign the client assertion: {0}")]
    Signing(String),
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize, Default)]
struct TokenErrorResponse {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u64>,
    trace_id: Option<String>,
    correlation_id: Option<String>,
}

/// Obtains and caches the app token of one tenant.
#[derive(Debug)]
pub struct TokenProvider {
    http: reqwest::Client,
    token_url: Url,
    client_id: String,
    credential: Credential,
    current: RefreshSlot<AccessToken>,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl TokenProvider {
    /// A provider for `tenant`, using `http` for the token endpoint.
    pub fn new(
        http: reqwest::Client,
        tenant: &TenantConfig,
        credential: Credential,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> TokenProvider {
        let mut token_url = tenant.authority_host.clone();
        token_url
            .path_segments_mut()
            .expect("authority host is an http(s) URL")
            .pop_if_empty()
            .extend([tenant.tenant_id.as_str(), "oauth2", "v2.0", "token"]);
        TokenProvider {
            http,
            token_url,
            client_id: tenant.client_id.clone(),
            credential,
            current: RefreshSlot::new(),
            metrics,
            clock,
        }
    }

    /// A token that is valid for a while yet, from the cache or freshly requested.
    pub async fn token(&self) -> Result<AccessToken, AuthError> {
        self.current
            .get_or_refresh(
                |token| token.is_fresh_at(self.clock.now()),
                || async {
                    let token = self.request_token().await;
                    self.metrics
                        .token_request(if token.is_ok() { "ok" } else { "error" });
                    token
                },
            )
            .await
    }

    /// Drops `token` because Graph refused it (401), unless it has been replaced already.
    pub fn invalidate(&self, token: &AccessToken) {
        self.current
            .invalidate_if(|current| current.bearer() == token.bearer());
    }

    async fn request_token(&self) -> Result<AccessToken, AuthError> {
        let form = vec![("grant_type", "client_credentials".to_owned())];
        self.token_request(form, "app token", None).await
    }

    /// Exchanges a user's access token (`assertion`, valid until `assertion_expires`, seconds since the
    /// epoch) for a Graph token acting for them: the OAuth 2.0 on-behalf-of grant, the app
    /// authenticating itself as it does for its own token. The token is never used beyond the
    /// assertion's own expiry.
    pub async fn on_behalf_of(
        &self,
        assertion: &SecretString,
        assertion_expires: u64,
    ) -> Result<AccessToken, AuthError> {
        let form = vec![
            ("grant_type", OBO_GRANT.to_owned()),
            ("requested_token_use", "on_behalf_of".to_owned()),
            ("assertion", assertion.expose_secret().to_owned()),
        ];
        let token = self
            .token_request(form, "delegated token", Some(assertion_expires))
            .await;
        self.metrics
            .token_request(if token.is_ok() { "obo_ok" } else { "obo_error" });
        token
    }

    /// One request to the token endpoint: `grant` plus the scope and the app's own authentication.
    async fn token_request(
        &self,
        grant: Vec<(&'static str, String)>,
        what: &str,
        not_after: Option<u64>,
    ) -> Result<AccessToken, AuthError> {
        let mut form: Vec<(&str, String)> = vec![
            ("client_id", self.client_id.clone()),
            ("scope", GRAPH_SCOPE.to_owned()),
        ];
        form.extend(grant);
        match &self.credential {
            Credential::Secret(secret) => {
                form.push(("client_secret", secret.expose_secret().to_owned()));
            }
            Credential::Certificate(certificate) => {
                let assertion = certificate
                    .assertion(self.token_url.as_str(), &self.client_id)
                    .map_err(|e| AuthError::Signing(e.to_string()))?;
                form.push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
                form.push(("client_assertion", assertion));
            }
            Credential::FederatedTokenFile(path) => {
                let token = tokio::fs::read_to_string(path).await.map_err(|e| {
                    AuthError::FederatedTokenFile {
                        path: path.display().to_string(),
                        problem: e.to_string(),
                    }
                })?;
                form.push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
                form.push(("client_assertion", token.trim().to_owned()));
            }
        }
        let started = self.clock.now();
        let response = self
            .http
            .post(self.token_url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                self.metrics.upstream("token", None);
                AuthError::Unreachable(std::sync::Arc::new(e.without_url()))
            })?;
        let status = response.status();
        self.metrics.upstream("token", Some(status.as_u16()));
        let body = response
            .bytes()
            .await
            .map_err(|e| AuthError::Unreachable(std::sync::Arc::new(e.without_url())))?;
        if !status.is_success() {
            let error: TokenErrorResponse = serde_json::from_slice(&body).unwrap_or_default();
            let aadsts = error
                .error_codes
                .first()
                .map(|code| format!("AADSTS{code}"))
                .or_else(|| aadsts_code(&error.error_description));
            let error = AuthError::Rejected {
                status: status.as_u16(),
                error: if error.error.is_empty() {
                    "unknown".into()
                } else {
                    error.error
                },
                aadsts,
                trace_id: error.trace_id,
                correlation_id: error.correlation_id,
            };
            tracing::warn!(%error, "{what} request failed");
            return Err(error);
        }
        let token: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| AuthError::InvalidResponse(status.as_u16()))?;
        let lifetime = Duration::from_secs(token.expires_in);
        let skew = REFRESH_SKEW.min(lifetime / 4);
        let mut refresh_at = started + lifetime - skew;
        // Never beyond the token it was exchanged for.
        if let Some(not_after) = not_after {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            refresh_at =
                refresh_at.min(started + Duration::from_secs(not_after.saturating_sub(now)));
        }
        tracing::info!(expires_in = token.expires_in, "obtained a Graph {what}");
        Ok(AccessToken {
            value: SecretString::from(token.access_token),
            refresh_at,
        })
    }
}

/// The `AADSTSnnnn` code at the start of an Entra error description, if any.
fn aadsts_code(description: &str) -> Option<String> {
    let rest = description.strip_prefix("AADSTS")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (!digits.is_empty()).then(|| format!("AADSTS{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aadsts_codes_are_read_from_descriptions() {
        assert_eq!(
            aadsts_code("AADSTS7000215: Invalid client secret provided.").as_deref(),
            Some("AADSTS7000215")
        );
        assert_eq!(aadsts_code("something else"), None);
    }

    #[test]
    fn tokens_never_show_in_debug_output() {
        let token = AccessToken {
            value: SecretString::from("eyJ-very-secret".to_owned()),
            refresh_at: Instant::now(),
        };
        assert!(!format!("{token:?}").contains("eyJ"));
    }
}
