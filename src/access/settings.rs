//! Reads how clients authenticate and the rules of what each may touch, from the gateway's settings.
//!
//! It lives here, beside the code that uses it, and reads the settings through `crate::settings` (the
//! keys and raw sources), which `config` builds on too: `config` depends on `access` for the type, and
//! `access` not on `config` at all.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;
use url::Url;

use crate::settings::{keys, parse_base_url, ConfigError, Sources};

/// Client authentication and the rules of what each client may touch.
#[derive(Clone, Debug, Default)]
pub struct AccessConfig {
    pub auth: AuthConfig,
    pub rules: Vec<super::Rule>,
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
    /// Other audiences accepted (delegated mode accepts the app's client id and `api://<client id>`).
    pub extra_audiences: Vec<String>,
    pub keys: JwtKeySource,
    /// The claim whose value is the client's name.
    pub client_claim: String,
    /// Delegated mode: tokens are users' Entra tokens, whose `tid`, `oid` and `preferred_username` the
    /// gateway reads, and which it exchanges on their behalf.
    pub users: bool,
}

/// What delegated mode takes from the tenant for callers' tokens, where the settings say nothing: Entra's
/// v2.0 issuer and JWKS for the tenant, and the gateway's own app as the audience.
#[derive(Clone, Debug)]
pub struct UserTokenDefaults {
    /// `{authority}/{tenant}/v2.0`.
    pub issuer: String,
    /// `{authority}/{tenant}/discovery/v2.0/keys`.
    pub jwks_url: Url,
    /// `AZURE_CLIENT_ID`; `api://<client id>` is accepted too.
    pub client_id: String,
}

/// Where the keys that sign clients' JWTs come from.
#[derive(Clone, Debug)]
pub enum JwtKeySource {
    JwksUrl(Url),
    JwksFile(PathBuf),
    Hs256(SecretString),
}

impl AccessConfig {
    /// The authentication mode's name, as configured (`none`, `api-key`, `jwt`).
    pub fn mode(&self) -> &'static str {
        match self.auth {
            AuthConfig::None => "none",
            AuthConfig::ApiKeys(_) => "api-key",
            AuthConfig::Jwt(_) => "jwt",
        }
    }

    /// How many clients are configured by name: the API keys (JWT clients are whoever the issuer vouches
    /// for, so 0 there).
    pub fn named_clients(&self) -> usize {
        match &self.auth {
            AuthConfig::ApiKeys(keys) => keys.len(),
            _ => 0,
        }
    }

    /// Reads client authentication and rules. Secure by default: without authentication the gateway
    /// listens on loopback only, unless `--simulate` (whose tenant holds nothing real) or an explicit
    /// `MAILBOX_GATEWAY_ALLOW_UNAUTHENTICATED=true`.
    ///
    /// In delegated mode (`users` given) callers must send their Entra user tokens: `jwt` is required,
    /// and the issuer, JWKS and audience default to the tenant's.
    pub(crate) fn load(
        sources: &Sources,
        listen: SocketAddr,
        simulate: bool,
        users: Option<&UserTokenDefaults>,
    ) -> Result<AccessConfig, ConfigError> {
        let invalid = |key: &'static str, problem: String| ConfigError::Invalid { key, problem };
        let auth_mode = sources.get(keys::AUTH).map(str::trim);
        if let Some(users) = users {
            // A delegated token is cached by user and reused without asking Entra again, so only tokens
            // Entra issued for this app in this tenant may name a user: no other issuer, keys or audience.
            let api_uri = format!("api://{}", users.client_id);
            let own = [
                (keys::JWT_ISSUER, vec![users.issuer.clone()]),
                (keys::JWT_JWKS_URL, vec![users.jwks_url.to_string()]),
                (keys::JWT_JWKS_FILE, vec![]),
                (keys::JWT_AUDIENCE, vec![users.client_id.clone(), api_uri]),
            ];
            for (key, allowed) in own {
                if let Some(value) = sources.get(key) {
                    if !allowed
                        .iter()
                        .any(|a| a.trim_end_matches('/') == value.trim().trim_end_matches('/'))
                    {
                        return Err(invalid(
                            key,
                            "delegated mode takes only the tenant's own Entra ID issuer, keys and the \
                             gateway's app as audience; leave it unset to use them"
                                .into(),
                        ));
                    }
                }
            }
        }
        if users.is_some() && auth_mode != Some("jwt") {
            return Err(invalid(
                keys::AUTH,
                "MAILBOX_GATEWAY_GRAPH_ACCESS=delegated needs MAILBOX_GATEWAY_AUTH=jwt: callers send \
                 their own Entra user tokens, which the gateway exchanges on their behalf"
                    .into(),
            ));
        }
        let auth = match auth_mode {
            None | Some("none") => {
                let allowed = listen.ip().is_loopback()
                    || simulate
                    || sources.get(keys::ALLOW_UNAUTHENTICATED) == Some("true");
                if !allowed {
                    return Err(ConfigError::Insecure { listen });
                }
                AuthConfig::None
            }
            Some("api-key") => {
                let keys = sources.get(keys::API_KEYS).ok_or_else(|| {
                    invalid(
                        keys::API_KEYS,
                        "api-key mode needs at least one name:sha256hex".into(),
                    )
                })?;
                AuthConfig::ApiKeys(
                    keys.split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(parse_api_key)
                        .collect::<Result<_, _>>()
                        .map_err(|problem| invalid(keys::API_KEYS, problem))?,
                )
            }
            Some("jwt") => {
                let required = |key: &'static str, default: Option<&str>| {
                    sources
                        .get(key)
                        .or(default)
                        .map(str::to_owned)
                        .ok_or_else(|| invalid(key, "jwt mode needs it".into()))
                };
                let keys = match (
                    sources.get(keys::JWT_JWKS_URL),
                    sources.get(keys::JWT_JWKS_FILE),
                    sources.get(keys::JWT_HS256_SECRET),
                ) {
                    (Some(url), None, None) => JwtKeySource::JwksUrl(
                        parse_base_url(url).map_err(|p| invalid(keys::JWT_JWKS_URL, p))?,
                    ),
                    (None, Some(path), None) => JwtKeySource::JwksFile(PathBuf::from(path)),
                    (None, None, Some(secret)) if secret.len() >= 32 => {
                        JwtKeySource::Hs256(SecretString::from(secret.to_owned()))
                    }
                    (None, None, Some(_)) => {
                        return Err(invalid(
                            keys::JWT_HS256_SECRET,
                            "must be at least 32 characters".into(),
                        ))
                    }
                    (None, None, None) if users.is_some() => {
                        JwtKeySource::JwksUrl(users.expect("checked").jwks_url.clone())
                    }
                    _ => {
                        return Err(invalid(
                            keys::JWT_JWKS_URL,
                            "jwt mode needs exactly one of MAILBOX_GATEWAY_JWT_JWKS_URL, \
                             MAILBOX_GATEWAY_JWT_JWKS_FILE and MAILBOX_GATEWAY_JWT_HS256_SECRET"
                                .into(),
                        ))
                    }
                };
                if users.is_some() && matches!(keys, JwtKeySource::Hs256(_)) {
                    return Err(invalid(
                        keys::JWT_HS256_SECRET,
                        "delegated mode takes Entra user tokens, which are signed with the keys of \
                         Entra's JWKS, not a shared secret"
                            .into(),
                    ));
                }
                let audience = required(keys::JWT_AUDIENCE, users.map(|u| u.client_id.as_str()))?;
                // Entra writes the app's client id or its Application ID URI into `aud`.
                let extra_audiences = match users {
                    Some(users) if sources.get(keys::JWT_AUDIENCE).is_none() => {
                        vec![format!("api://{}", users.client_id)]
                    }
                    _ => Vec::new(),
                };
                AuthConfig::Jwt(JwtConfig {
                    issuer: required(keys::JWT_ISSUER, users.map(|u| u.issuer.as_str()))?,
                    audience,
                    extra_audiences,
                    keys,
                    client_claim: sources
                        .get(keys::JWT_CLIENT_CLAIM)
                        .unwrap_or(if users.is_some() {
                            "preferred_username"
                        } else {
                            "azp"
                        })
                        .to_owned(),
                    users: users.is_some(),
                })
            }
            Some(other) => {
                return Err(invalid(
                    keys::AUTH,
                    format!("`{other}` is not api-key, jwt or none"),
                ))
            }
        };
        let rules = match sources.get(keys::ACCESS_RULES) {
            None => Vec::new(),
            Some(json) => {
                super::parse_rules(json).map_err(|problem| invalid(keys::ACCESS_RULES, problem))?
            }
        };
        if !matches!(auth, AuthConfig::None) && rules.is_empty() && users.is_none() {
            tracing::warn!("client authentication is on but MAILBOX_GATEWAY_ACCESS_RULES is empty: every request will be denied");
        }
        Ok(AccessConfig { auth, rules })
    }
}

/// `name:sha256hex`.
fn parse_api_key(entry: &str) -> Result<(String, [u8; 32]), String> {
    let (name, digest_hex) = entry
        .split_once(':')
        .ok_or_else(|| format!("`{entry}` is not name:sha256hex"))?;
    let mut digest = [0; 32];
    hex::decode_to_slice(digest_hex.trim(), &mut digest)
        .map_err(|_| format!("the digest of `{name}` is not 64 hex digits (a SHA-256)"))?;
    let name = name.trim();
    if !super::is_safe_client_name(name) {
        return Err(format!(
            "client name `{}` must be 1 to 128 of letters, digits and . _ @ : / -",
            name.escape_debug()
        ));
    }
    Ok((name.to_owned(), digest))
}
