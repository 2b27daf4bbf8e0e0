//! Plays Entra ID as the issuer of users' access tokens for the demo app: signs them (RS256) with
//! the simulator's own keys, as Entra does when a user signs in to a client app that calls the
//! gateway, and publishes those keys and the OpenID metadata that names them.
//!
//! - `GET /{tenant}/discovery/v2.0/keys`: the JWKS, Entra-shaped (`kty`, `use`, `kid`, `x5t`, `n`,
//!   `e`, `x5c`, `issuer`); `common` and `organizations` serve it too, another tenant is
//!   `400 invalid_tenant` (AADSTS90002).
//! - `GET /{tenant}/v2.0/.well-known/openid-configuration`: `issuer`, `jwks_uri`, `token_endpoint`
//!   and the rest of the discovery document, for the simulator's tenant only.
//!
//! Tokens come from [`Simulator::user_token`](super::Simulator::user_token) or
//! `POST /_simulator/user-tokens` (module `admin`), both through [`mint`]; the on-behalf-of grant
//! (module `obo`) verifies them against the published keys. The keys are built in (`keys/` beside
//! `src/`), public by design like the demo secret; [`SigningKeys::rotate`] moves to the other one.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{json, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_parser::public_key::PublicKey;

use super::login;
use super::state::{random_token, Inner, Shared};

/// The built-in signing keys, each a self-signed certificate and its private key.
const KEY_FILES: [&str; 2] = [
    include_str!("../keys/entra-signing-1.pem"),
    include_str!("../keys/entra-signing-2.pem"),
];

/// The lifetime of a user token when the caller names none. Entra gives user access tokens 60 to 90
/// minutes; an hour is the round number inside that.
pub(crate) const DEFAULT_LIFETIME_SECS: i64 = 3600;
/// The delegated scope a client app asks of the gateway's app registration ("Expose an API").
const GATEWAY_SCOPE: &str = "access_as_user";
/// The client app the user signed in to (`azp`), say a single-page app: an app of the simulated
/// tenant, but not the gateway's.
pub(crate) const CLIENT_APP_ID: &str = "5c8e2f1a-3d4b-4e6f-9a7c-2b1d0e3f4a5c";

/// What [`Simulator::user_token`](super::Simulator::user_token) may change in the token it mints;
/// each `None` takes the value a real sign-in would give. Tests build the odd tokens Entra never
/// issues to see them refused.
#[derive(Clone, Debug, Default)]
pub struct UserTokenOptions {
    /// `aud`. By default the demo app's client id, as in a v2.0 token; `api://{client id}` (the
    /// app's Application ID URI) is as good. Anything else is refused by the on-behalf-of grant
    /// (AADSTS500131).
    pub audience: Option<String>,
    /// Seconds from now, by the simulator's clock, until `exp`: by default 3600. Zero or less mints
    /// a token that has already expired (`iat` and `nbf` then lie an hour before `exp`).
    pub lifetime_secs: Option<i64>,
    /// Seconds from now until `nbf`: by default `nbf` = `iat` = now. More than five minutes ahead
    /// makes a token that is not valid yet.
    pub not_before_secs: Option<i64>,
    /// The tenant: `tid`, and the tenant in `iss` unless `issuer` is given. By default the
    /// simulator's ([`DEMO`](super::DEMO)`.tenant_id`).
    pub tenant_id: Option<String>,
    /// `iss` as a whole. By default `{base_url}/{tenant}/v2.0`.
    pub issuer: Option<String>,
    /// `oid`. By default the user's object id; another one makes a token about a user the tenant
    /// does not have (`preferred_username` stays the address given).
    pub object_id: Option<String>,
}

/// `{authority}/{tenant}/v2.0`: the `iss` of v2.0 tokens, as Entra writes it.
pub(crate) fn issuer_url(base_url: &str, tenant_id: &str) -> String {
    format!("{base_url}/{tenant_id}/v2.0")
}

/// Mints a user access token for `address` (a known user, by UPN or object id) as Entra would
/// sign it at `now`, with `options` applied; says why not if the user is unknown. Counted in
/// `user_tokens_issued` and kept among the issued credentials.
pub(crate) fn mint(
    inner: &mut Inner,
    base_url: &str,
    now: DateTime<Utc>,
    address: &str,
    options: &UserTokenOptions,
) -> Result<String, String> {
    let user = inner
        .user(address)
        .ok_or_else(|| format!("the simulator has no user {address}"))?;
    let tenant_id = options.tenant_id.as_deref().unwrap_or(&inner.tenant_id);
    let issuer = options
        .issuer
        .clone()
        .unwrap_or_else(|| issuer_url(base_url, tenant_id));
    let object_id = options.object_id.as_deref().unwrap_or(&user.id);
    let now = now.timestamp();
    let lifetime = options.lifetime_secs.unwrap_or(DEFAULT_LIFETIME_SECS);
    let exp = now.saturating_add(lifetime);
    let iat = if lifetime > 0 {
        now
    } else {
        exp.saturating_sub(DEFAULT_LIFETIME_SECS)
    };
    let nbf = options.not_before_secs.map_or(iat, |ahead| now + ahead);
    let claims = json!({
        "aud": options.audience.as_deref().unwrap_or(&inner.app.client_id),
        "iss": issuer,
        "iat": iat,
        "nbf": nbf,
        "exp": exp,
        "azp": CLIENT_APP_ID,
        // Public client (0): the app the user signed in to has no credential of its own.
        "azpacr": "0",
        "oid": object_id,
        "preferred_username": user.address,
        "scp": GATEWAY_SCOPE,
        "sub": pairwise_subject(object_id, &inner.app.client_id),
        "tid": tenant_id,
        "uti": random_token(),
        "ver": "2.0",
    });
    let token = inner.signing_keys.sign(&claims);
    inner.issued_credentials.push(token.clone());
    inner.counters.user_tokens_issued += 1;
    Ok(token)
}

/// Entra's `sub` is pairwise: the same user has another `sub` in every app. Any stable, opaque
/// function of user and app does.
fn pairwise_subject(object_id: &str, client_id: &str) -> String {
    let digest = Sha256::digest(format!("{object_id}/{client_id}"));
    URL_SAFE_NO_PAD.encode(&digest[..24])
}

/// The keys user tokens are signed with: one signs, the published ones verify.
pub(crate) struct SigningKeys {
    keys: Vec<SigningKey>,
    /// The key that signs new tokens.
    current: usize,
    /// How many keys the JWKS lists (the first `published`): one until the first rotation, then
    /// both, as Entra lists the old and the new key during a rollover.
    published: usize,
}

struct SigningKey {
    /// `kid` and `x5t`: the base64url SHA-1 thumbprint of the certificate, as Entra names its keys.
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The JWK without `issuer`, which depends on the tenant asked for.
    jwk: Value,
}

impl SigningKeys {
    /// The keys built into the crate, the first one signing.
    pub fn built_in() -> SigningKeys {
        SigningKeys {
            keys: KEY_FILES.iter().map(|pem| SigningKey::load(pem)).collect(),
            current: 0,
            published: 1,
        }
    }

    /// Signs with the other key from now on and publishes both.
    pub fn rotate(&mut self) {
        self.current = (self.current + 1) % self.keys.len();
        self.published = self.keys.len();
    }

    /// An RS256 JWT of `claims`, with the signing key's `kid` in its header.
    pub fn sign(&self, claims: &Value) -> String {
        let key = &self.keys[self.current];
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .expect("a built-in RSA key signs any JSON object")
    }

    /// The published key named `kid`, to verify a token with.
    pub fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys[..self.published]
            .iter()
            .find(|key| key.kid == kid)
            .map(|key| &key.decoding)
    }

    /// The JWKS, each key naming `issuer`.
    fn jwks(&self, issuer: &str) -> Value {
        let keys: Vec<Value> = self.keys[..self.published]
            .iter()
            .map(|key| {
                let mut jwk = key.jwk.clone();
                jwk["issuer"] = issuer.into();
                jwk
            })
            .collect();
        json!({ "keys": keys })
    }
}

impl SigningKey {
    /// Reads a built-in key file: a CERTIFICATE and a PRIVATE KEY block. Panics on a bad one, which
    /// is a bug in the crate, not in a test.
    fn load(pem_text: &str) -> SigningKey {
        let blocks = pem::parse_many(pem_text).expect("a built-in key file is PEM");
        let block = |tag: &str| {
            blocks
                .iter()
                .find(|block| block.tag() == tag)
                .unwrap_or_else(|| panic!("a built-in key file holds a {tag} block"))
        };
        let der = block("CERTIFICATE").contents();
        let (_, certificate) =
            x509_parser::parse_x509_certificate(der).expect("a built-in certificate parses");
        let Ok(PublicKey::RSA(rsa)) = certificate.public_key().parsed() else {
            panic!("a built-in certificate holds an RSA key");
        };
        let n = URL_SAFE_NO_PAD.encode(without_leading_zeros(rsa.modulus));
        let e = URL_SAFE_NO_PAD.encode(without_leading_zeros(rsa.exponent));
        let kid = URL_SAFE_NO_PAD.encode(Sha1::digest(der));
        let encoding = EncodingKey::from_rsa_pem(pem::encode(block("PRIVATE KEY")).as_bytes())
            .expect("a built-in private key is RSA");
        let decoding =
            DecodingKey::from_rsa_components(&n, &e).expect("a built-in public key is RSA");
        let jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "kid": kid,
            "x5t": kid,
            "n": n,
            "e": e,
            "x5c": [STANDARD.encode(der)],
        });
        SigningKey {
            kid,
            encoding,
            decoding,
            jwk,
        }
    }
}

/// DER integers carry a leading zero when their top bit is set; JWK's base64url integers do not.
fn without_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// `GET /{tenant}/discovery/v2.0/keys`.
pub(crate) async fn jwks(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let inner = shared.lock();
    let issuer = if tenant.eq_ignore_ascii_case(&inner.tenant_id) {
        issuer_url(&shared.base_url, &inner.tenant_id)
    } else if ["common", "organizations"]
        .iter()
        .any(|alias| tenant.eq_ignore_ascii_case(alias))
    {
        // Multi-tenant endpoints name no tenant; Entra writes a placeholder.
        issuer_url(&shared.base_url, "{tenantid}")
    } else {
        drop(inner);
        return unknown_tenant(&shared, &tenant, &headers);
    };
    let body = inner.signing_keys.jwks(&issuer);
    drop(inner);
    json_response(&body)
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
pub(crate) async fn openid_configuration(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let tenant_id = shared.lock().tenant_id.clone();
    if !tenant.eq_ignore_ascii_case(&tenant_id) {
        return unknown_tenant(&shared, &tenant, &headers);
    }
    let base = &shared.base_url;
    let body = json!({
        "issuer": issuer_url(base, &tenant_id),
        "jwks_uri": format!("{base}/{tenant_id}/discovery/v2.0/keys"),
        "token_endpoint": format!("{base}/{tenant_id}/oauth2/v2.0/token"),
        // Required by OpenID Connect Discovery; the simulator signs nobody in interactively, so it
        // does not serve this one.
        "authorization_endpoint": format!("{base}/{tenant_id}/oauth2/v2.0/authorize"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "nbf", "oid", "tid", "preferred_username", "ver",
        ],
        "tenant_region_scope": "WW",
    });
    json_response(&body)
}

fn json_response(body: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// Entra's answer for metadata of a tenant it does not know.
fn unknown_tenant(shared: &Shared, tenant: &str, headers: &HeaderMap) -> Response {
    login::error_response(
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        90002,
        &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        headers,
        shared.clock.wall(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_verifies_with_the_published_key_its_kid_names() {
        let mut keys = SigningKeys::built_in();
        let token = keys.sign(&json!({"sub": "x"}));
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let key = keys.decoding_key(&kid).unwrap();
        assert!(jsonwebtoken::decode::<Value>(&token, key, &validation).is_ok());

        // Before a rotation only the first key is published; after it, both, and the second signs.
        assert_eq!(keys.jwks("i")["keys"].as_array().unwrap().len(), 1);
        keys.rotate();
        let rotated = keys.sign(&json!({"sub": "x"}));
        let new_kid = jsonwebtoken::decode_header(&rotated).unwrap().kid.unwrap();
        assert_ne!(new_kid, kid);
        assert_eq!(keys.jwks("i")["keys"].as_array().unwrap().len(), 2);
        assert!(keys.decoding_key(&kid).is_some());
    }

    #[test]
    fn jwk_integers_drop_der_sign_bytes() {
        assert_eq!(without_leading_zeros(&[0, 0xC1, 0]), &[0xC1, 0]);
        assert_eq!(without_leading_zeros(&[1, 0, 1]), &[1, 0, 1]);
    }
}
