//! Verifies clients' bearer JWTs: signature (RS256, PS256, ES256 from a JWKS; or HS256 from a shared
//! secret), issuer, audience, expiry and not-before, and reads the client's name from a claim.
//!
//! JWKS keys are cached by `kid`. A token with an unknown `kid` re-reads the JWKS (file or URL), at most
//! once per [`MIN_REFRESH`] whether or not a read has succeeded yet, so an identity provider's key
//! rotation is picked up without a restart and a flood of made-up `kid`s cannot turn into a flood of
//! fetches. Concurrent look-ups share one read (they wait for it, at most [`READ_WAIT`], and then look
//! in the cache again).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use url::Url;

use super::{JwtConfig, JwtKeySource};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;
/// Least time between two re-reads of the JWKS.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);
/// Longest wait for another look-up's JWKS read before a token with an unknown `kid` is refused.
pub const READ_WAIT: Duration = Duration::from_secs(11);

/// Why a JWT was not accepted. Logged, never sent to the client.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(Algorithm),
    #[error("no key with kid {0:?}")]
    UnknownKey(String),
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the {0} claim is missing or not a string")]
    NoClientClaim(String),
    #[error("the {0} claim is not a client name (1 to 128 of letters, digits and . _ @ : / -)")]
    UnsafeClientName(String),
    #[error("the JWKS could not be read ({what}): {source}")]
    Jwks {
        /// Which JWKS, or which key of it.
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Verifies bearer JWTs against one issuer and audience.
/// A token that passed every check: the client's name and, in delegated mode, the user.
#[derive(Debug)]
pub struct Verified {
    pub name: String,
    pub user: Option<super::User>,
}

pub struct JwtVerifier {
    issuer: String,
    audiences: Vec<String>,
    users: bool,
    client_claim: String,
    keys: Keys,
}

enum Keys {
    Shared(DecodingKey),
    Jwks {
        source: JwksSource,
        /// kid → key and the algorithms it may verify. std lock: held for a lookup or a swap only.
        cache: RwLock<HashMap<String, (DecodingKey, Vec<Algorithm>)>>,
        /// When the JWKS was last re-read for an unknown kid (`None` until it was first read at all);
        /// the lock also serialises reads.
        last_read: tokio::sync::Mutex<ReadState>,
    },
}

#[derive(Debug)]
enum JwksSource {
    File(PathBuf),
    Url(Url, reqwest::Client),
}

/// Whether the JWKS was read yet, and when it was last re-read for an unknown kid.
#[derive(Debug, Default)]
struct ReadState {
    loaded: bool,
    /// Before the JWKS first loaded: when a read was last tried.
    last_attempt: Option<Instant>,
    /// After: when it was last re-read for an unknown `kid`.
    last_refresh: Option<Instant>,
}

impl std::fmt::Debug for JwtVerifier {
    /// Names the issuer and audience; keys (an HS256 secret among them) are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("client_claim", &self.client_claim)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for `config`; a JWKS file is read now, a JWKS URL on first use.
    pub fn new(config: &JwtConfig) -> Result<JwtVerifier, JwtError> {
        let mut keys = match &config.keys {
            JwtKeySource::Hs256(secret) => {
                Keys::Shared(DecodingKey::from_secret(secret.expose_secret().as_bytes()))
            }
            JwtKeySource::JwksFile(path) => Keys::Jwks {
                source: JwksSource::File(path.clone()),
                cache: RwLock::new(HashMap::new()),
                last_read: tokio::sync::Mutex::new(ReadState::default()),
            },
            JwtKeySource::JwksUrl(url) => Keys::Jwks {
                source: JwksSource::Url(
                    url.clone(),
                    reqwest::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .redirect(reqwest::redirect::Policy::none())
                        .build()
                        .map_err(|e| jwks_error("its HTTP client", e))?,
                ),
                cache: RwLock::new(HashMap::new()),
                last_read: tokio::sync::Mutex::new(ReadState::default()),
            },
        };
        if let Keys::Jwks {
            source: JwksSource::File(path),
            cache,
            last_read,
        } = &mut keys
        {
            let text =
                std::fs::read_to_string(&*path).map_err(|e| jwks_error(path.display(), e))?;
            *cache.get_mut().expect("jwks cache poisoned") = parse_jwks(&text)?;
            last_read.get_mut().loaded = true;
        }
        Ok(JwtVerifier {
            issuer: config.issuer.clone(),
            audiences: std::iter::once(&config.audience)
                .chain(&config.extra_audiences)
                .cloned()
                .collect(),
            users: config.users,
            client_claim: config.client_claim.clone(),
            keys,
        })
    }

    /// The client name carried by a valid `token`.
    pub async fn verify(&self, token: &str) -> Result<Verified, JwtError> {
        check_header_extensions(token)?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
        // An access token (`at+jwt`) or a plain JWT; anything else (a logout token, a JWE) is not one.
        if let Some(typ) = &header.typ {
            let typ = typ.to_ascii_lowercase();
            if !matches!(typ.as_str(), "jwt" | "at+jwt" | "application/at+jwt") {
                return Err(JwtError::Malformed(format!(
                    "typ {typ:?} is not a JWT access token"
                )));
            }
        }
        let key = match &self.keys {
            Keys::Shared(key) if header.alg == Algorithm::HS256 => key.clone(),
            Keys::Shared(_) => return Err(JwtError::Algorithm(header.alg)),
            Keys::Jwks { .. }
                if !matches!(
                    header.alg,
                    Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256
                ) =>
            {
                return Err(JwtError::Algorithm(header.alg))
            }
            Keys::Jwks { .. } => {
                let kid = header
                    .kid
                    .clone()
                    .ok_or_else(|| JwtError::Malformed("no kid".into()))?;
                let (key, algorithms) = self.jwks_key(&kid).await?;
                if !algorithms.contains(&header.alg) {
                    return Err(JwtError::Algorithm(header.alg));
                }
                key
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY_SECS;
        if self.users {
            // A user's token is exchanged with Entra, which refuses an expired one: no leeway on `exp`
            // (it still applies to `nbf`), so the caller hears 401 and refreshes instead of a 403.
            validation.reject_tokens_expiring_in_less_than = LEEWAY_SECS;
        }
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(|e| JwtError::Invalid(e.to_string()))?
        .claims;
        let text = |claim: &str| {
            claims
                .get(claim)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let user = match self.users {
            false => None,
            true => {
                let required = |claim: &str| {
                    text(claim)
                        .map(str::to_owned)
                        .ok_or_else(|| JwtError::NoClientClaim(claim.to_owned()))
                };
                Some(super::User {
                    tenant_id: required("tid")?,
                    oid: required("oid")?,
                    username: text("preferred_username").map(str::to_owned),
                    token: SecretString::from(token.to_owned()),
                    expires_at: claims.get("exp").and_then(|v| v.as_u64()).unwrap_or(0),
                })
            }
        };
        // A user without the configured claim is named by their object id.
        let name = match (text(&self.client_claim), &user) {
            (Some(name), _) => name,
            (None, Some(user)) => user.oid.as_str(),
            (None, None) => return Err(JwtError::NoClientClaim(self.client_claim.clone())),
        };
        // The name goes into log and audit lines: nothing that could forge or split one.
        if !super::is_safe_client_name(name) {
            return Err(JwtError::UnsafeClientName(self.client_claim.clone()));
        }
        Ok(Verified {
            name: name.to_owned(),
            user,
        })
    }

    /// The key for `kid`, re-reading the JWKS once if it is unknown (rate-limited).
    async fn jwks_key(&self, kid: &str) -> Result<(DecodingKey, Vec<Algorithm>), JwtError> {
        let Keys::Jwks {
            source,
            cache,
            last_read,
        } = &self.keys
        else {
            unreachable!("only called for JWKS keys")
        };
        if let Some(found) = cache.read().expect("jwks cache poisoned").get(kid) {
            return Ok(found.clone());
        }
        let Ok(mut last) = tokio::time::timeout(READ_WAIT, last_read.lock()).await else {
            // Another look-up's read is taking too long: refuse rather than queue behind it.
            return Err(JwtError::UnknownKey(kid.to_owned()));
        };
        // Another request may have re-read it while this one waited.
        if let Some(found) = cache.read().expect("jwks cache poisoned").get(kid) {
            return Ok(found.clone());
        }
        // Every read is rate-limited: tries before the JWKS ever loaded (a flood of made-up kids while the
        // identity provider is down or slow) as well as re-reads for unknown kids once it has.
        let state = &mut *last;
        let previous = if state.loaded {
            &mut state.last_refresh
        } else {
            &mut state.last_attempt
        };
        if previous.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
            return Err(JwtError::UnknownKey(kid.to_owned()));
        }
        *previous = Some(Instant::now());
        let text = match source {
            JwksSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| jwks_error(path.display(), e))?,
            JwksSource::Url(url, http) => http
                .get(url.clone())
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| jwks_error("the JWKS URL", e.without_url()))?
                .text()
                .await
                .map_err(|e| jwks_error("the JWKS URL", e.without_url()))?,
        };
        let keys = parse_jwks(&text)?;
        last.loaded = true;
        tracing::info!(keys = keys.len(), "read the JWKS");
        let found = keys.get(kid).cloned();
        *cache.write().expect("jwks cache poisoned") = keys;
        found.ok_or_else(|| JwtError::UnknownKey(kid.to_owned()))
    }
}

/// Refuses a token whose header names critical extensions (`crit`): the gateway understands none, and
/// RFC 7515 section 4.1.11 says a token with one it does not understand must be refused.
fn check_header_extensions(token: &str) -> Result<(), JwtError> {
    use base64::Engine;
    let header = token.split('.').next().unwrap_or_default();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|e| JwtError::Malformed(e.to_string()))?;
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|e| JwtError::Malformed(e.to_string()))?;
    if fields.contains_key("crit") {
        return Err(JwtError::Malformed(
            "the header names critical extensions (crit), which the gateway does not understand"
                .into(),
        ));
    }
    Ok(())
}

/// A JWKS failure, keeping its cause as the source.
fn jwks_error(
    what: impl std::fmt::Display,
    source: impl std::error::Error + Send + Sync + 'static,
) -> JwtError {
    JwtError::Jwks {
        what: what.to_string(),
        source: Box::new(source),
    }
}

/// The signing keys of a JWKS, by kid, with the algorithms each may verify. Keys without a kid, or of a
/// type other than RSA or P-256 EC, are skipped.
fn parse_jwks(text: &str) -> Result<HashMap<String, (DecodingKey, Vec<Algorithm>)>, JwtError> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| jwks_error("its JSON", e))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let algorithms = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::PS256],
            AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256],
            _ => continue,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| jwks_error(format!("key {kid}"), e))?;
        keys.insert(kid, (key, algorithms));
    }
    Ok(keys)
}
