//! Decides who may call the gateway, and which mailboxes and operations each client may touch.
//!
//! The gateway holds an app credential that can write into every mailbox of the tenant, so it lets in
//! only the clients it knows (API keys configured by their SHA-256 digest, or JWTs from the
//! organisation's identity provider), and only for the mailboxes and operations their rules allow.
//! Everything is denied unless a rule allows it. With authentication off (`none`, loopback or an explicit
//! override only) every caller is the anonymous client and may do everything.

mod jwt;
mod rules;
mod settings;

use std::sync::Arc;

use http::HeaderMap;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use jwt::{JwtError, JwtVerifier, Verified, MIN_REFRESH};
pub use rules::{parse_rules, MailboxPattern, Operation, Rule};
pub use settings::{AccessConfig, AuthConfig, JwtConfig, JwtKeySource, UserTokenDefaults};

use crate::ids::MailboxRef;

/// The `X-Api-Key` header, accepted as an alternative to `Authorization: Bearer` in api-key mode.
pub const X_API_KEY: &str = "x-api-key";
/// The client name used when authentication is off.
pub const ANONYMOUS: &str = "anonymous";

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// The configured name (api-key mode) or the configured claim's value (jwt mode).
    pub name: String,
    /// In delegated mode, the signed-in user the request acts for.
    pub user: Option<Arc<User>>,
}

impl Client {
    /// Whose `Idempotency-Key`s these are: the client's name, or in delegated mode the user
    /// (`tid/oid`), so two users never share keys whatever claim names them.
    pub fn key_scope(&self) -> std::borrow::Cow<'_, str> {
        match &self.user {
            Some(user) => format!("user:{}/{}", user.tenant_id, user.oid).into(),
            None => self.name.as_str().into(),
        }
    }

    /// A client known by name alone (api-key mode, or authentication off).
    pub fn named(name: impl Into<String>) -> Client {
        Client {
            name: name.into(),
            user: None,
        }
    }
}

/// A signed-in user, in delegated mode: who they are, and the token they sent, which the gateway
/// exchanges for a Graph token acting for them. The token never shows in `Debug` output.
#[derive(Debug)]
pub struct User {
    /// The user's tenant (`tid`).
    pub tenant_id: String,
    /// The user's object id (`oid`): what their delegated Graph token is cached by.
    pub oid: String,
    /// `preferred_username`, usually their address.
    pub username: Option<String>,
    /// The access token the caller sent (the on-behalf-of assertion).
    pub token: SecretString,
    /// When that token expires (`exp`, seconds since the epoch).
    pub expires_at: u64,
}

impl PartialEq for User {
    fn eq(&self, other: &User) -> bool {
        self.tenant_id == other.tenant_id && self.oid == other.oid
    }
}

impl Eq for User {}

/// Why a caller was not let in. The reason is logged, never told to the caller beyond "not
/// authenticated".
#[derive(Debug, thiserror::Error)]
pub enum Unauthenticated {
    #[error("no credential was sent")]
    Missing,
    #[error("the API key matches no configured client")]
    UnknownKey,
    #[error("more than one credential header was sent; which one counts would be a guess")]
    Ambiguous,
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

/// Authentication and authorisation, built once from the configuration.
#[derive(Debug)]
pub struct Access {
    mode: Mode,
    rules: Vec<Rule>,
}

#[derive(Debug)]
enum Mode {
    Open,
    ApiKeys(Vec<(String, [u8; 32])>),
    Jwt(Box<JwtVerifier>),
}

impl Access {
    /// Builds the checks; a JWKS file is read now.
    pub fn new(config: &AccessConfig) -> Result<Access, JwtError> {
        let mode = match &config.auth {
            AuthConfig::None => Mode::Open,
            AuthConfig::ApiKeys(keys) => Mode::ApiKeys(keys.clone()),
            AuthConfig::Jwt(jwt) => Mode::Jwt(Box::new(JwtVerifier::new(jwt)?)),
        };
        Ok(Access {
            mode,
            rules: config.rules.clone(),
        })
    }

    /// Whether callers must authenticate.
    pub fn is_open(&self) -> bool {
        matches!(self.mode, Mode::Open)
    }

    /// Who is calling, from `Authorization: Bearer ...` (or `X-Api-Key` in api-key mode).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Client, Unauthenticated> {
        // Two Authorization headers, or two API keys, are refused rather than one of them chosen.
        let credentials = headers.get_all(http::header::AUTHORIZATION).iter().count()
            + headers.get_all(X_API_KEY).iter().count();
        if credentials > 1 && !matches!(self.mode, Mode::Open) {
            return Err(Unauthenticated::Ambiguous);
        }
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        match &self.mode {
            Mode::Open => Ok(Client::named(ANONYMOUS)),
            Mode::ApiKeys(keys) => {
                let presented = bearer
                    .or_else(|| headers.get(X_API_KEY).and_then(|v| v.to_str().ok()))
                    .ok_or(Unauthenticated::Missing)?;
                let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
                // Every configured digest is compared, in constant time, whatever matches first.
                let mut found: Option<&str> = None;
                for (name, expected) in keys {
                    if bool::from(digest.ct_eq(expected)) {
                        found = Some(name);
                    }
                }
                found.map(Client::named).ok_or(Unauthenticated::UnknownKey)
            }
            Mode::Jwt(verifier) => {
                let token = bearer.ok_or(Unauthenticated::Missing)?;
                let verified = verifier.verify(token).await?;
                Ok(Client {
                    name: verified.name,
                    user: verified.user.map(Arc::new),
                })
            }
        }
    }

    /// Whether `client` may do `operation` on `mailbox`.
    ///
    /// A signed-in user (delegated mode) without rules may do everything: Exchange itself lets their
    /// token reach only their own mailbox. Rules, when given, narrow that; `me` is matched as the user's
    /// address.
    pub fn allows(&self, client: &Client, mailbox: &MailboxRef, operation: Operation) -> bool {
        if self.is_open() {
            return true;
        }
        match (&client.user, mailbox) {
            (Some(_), _) if self.rules.is_empty() => true,
            (Some(user), MailboxRef::Me) => user.username.as_deref().is_some_and(|address| {
                MailboxRef::parse(address)
                    .is_ok_and(|own| rules::allows(&self.rules, &client.name, &own, operation))
            }),
            _ => rules::allows(&self.rules, &client.name, mailbox, operation),
        }
    }
}

/// Whether a client name is safe to put into log and audit lines as it is: 1 to 128 characters, letters,
/// digits and `. _ @ : / -` (enough for names, app ids, GUIDs and URIs), so no name can carry a line
/// break, a quote or a control character into the logs.
pub(crate) fn is_safe_client_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@:/-".contains(&b))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn api_key_access() -> Access {
        let digest = |key: &str| -> [u8; 32] { Sha256::digest(key.as_bytes()).into() };
        Access::new(&AccessConfig {
            auth: AuthConfig::ApiKeys(vec![
                ("appliance".into(), digest("key-one")),
                ("ops".into(), digest("key-two")),
            ]),
            rules: parse_rules(
                r#"[{"client": "ops", "mailboxes": ["*"], "operations": ["list-folders"]}]"#,
            )
            .unwrap(),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn api_keys_are_taken_from_bearer_or_x_api_key_and_matched_by_digest() {
        let access = api_key_access();
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer key-two"));
        assert_eq!(access.authenticate(&headers).await.unwrap().name, "ops");
        let mut headers = HeaderMap::new();
        headers.insert(X_API_KEY, HeaderValue::from_static("key-one"));
        assert_eq!(
            access.authenticate(&headers).await.unwrap().name,
            "appliance"
        );
        headers.insert(X_API_KEY, HeaderValue::from_static("key-three"));
        assert!(matches!(
            access.authenticate(&headers).await,
            Err(Unauthenticated::UnknownKey)
        ));
        assert!(matches!(
            access.authenticate(&HeaderMap::new()).await,
            Err(Unauthenticated::Missing)
        ));
    }

    #[tokio::test]
    async fn clients_get_only_what_their_rules_allow() {
        let access = api_key_access();
        let mailbox = MailboxRef::parse("adele@contoso.com").unwrap();
        let ops = Client::named("ops");
        let appliance = Client::named("appliance");
        assert!(access.allows(&ops, &mailbox, Operation::ListFolders));
        assert!(!access.allows(&ops, &mailbox, Operation::Create));
        assert!(
            !access.allows(&appliance, &mailbox, Operation::Create),
            "no rule, no access"
        );
    }
}
