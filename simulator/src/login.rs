//! Plays Entra ID's token endpoint for the client credentials flow and the on-behalf-of grant (module
//! `obo` checks the user's token): the app authenticates with a secret, a certificate assertion or a
//! federated (workload identity) assertion, and every refusal is an AADSTS-shaped error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{json, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::state::{App, Certificate, Inner, Principal, Shared};
use super::{issuer, obo};

/// The only scope the simulated tenant grants.
pub(crate) const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The `grant_type` of the on-behalf-of grant (RFC 7523's JWT bearer grant).
const ON_BEHALF_OF_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The audience Entra requires of federated (workload identity) tokens.
const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Clock skew tolerated on `nbf`, as Entra allows for client clocks running ahead.
pub(crate) const CLOCK_SKEW_SECS: i64 = 5 * 60;
/// Longest lifetime Entra accepts for a certificate assertion.
const MAX_ASSERTION_LIFETIME_SECS: i64 = 10 * 60;

/// Thumbprints arrive as base64url; accept them with or without padding.
const THUMBPRINT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The audience a certificate assertion must name is this endpoint as the client reached it.
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(|host| format!("http://{host}"))
        .unwrap_or_else(|| shared.base_url.clone());
    let endpoint = format!("{host}/{tenant}/oauth2/v2.0/token");
    let (now, wall) = (shared.clock.now(), shared.clock.wall());
    // Signature checks are CPU work only: nothing awaits while the lock is held.
    let mut inner = shared.lock();
    let issuer = issuer::issuer_url(&shared.base_url, &inner.tenant_id);
    let outcome = check_request(
        &inner,
        &issuer,
        &tenant,
        &endpoint,
        &headers,
        &body,
        wall.timestamp(),
    );
    let response = match outcome {
        Ok(Grant::App) => {
            let access_token = inner.issue_token(now);
            let lifetime = inner.token_lifetime().as_secs();
            token_response(json!({
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": access_token,
            }))
        }
        Ok(Grant::OnBehalfOf {
            user_id,
            assertion_remaining_secs,
        }) => {
            // Entra does not let a delegated token outlive the user's token it was exchanged for.
            let lifetime = inner
                .token_lifetime()
                .min(Duration::from_secs(assertion_remaining_secs));
            let access_token = inner.issue_token_for(Principal::User { user_id }, now, lifetime);
            inner.counters.obo_exchanges += 1;
            let lifetime = lifetime.as_secs();
            token_response(json!({
                "token_type": "Bearer",
                "scope": obo::DELEGATED_SCOPES,
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": access_token,
            }))
        }
        Err(error) => {
            inner.counters.token_requests_rejected += 1;
            if asks_on_behalf_of(&headers, &body) {
                inner.counters.obo_refused += 1;
            }
            error.into_response_for(&headers, wall)
        }
    };
    drop(inner);
    response
}

/// What a valid token request is granted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Grant {
    /// Client credentials: an app token.
    App,
    /// On-behalf-of: a delegated token for the user `user_id`, whose token (the assertion) expires
    /// in `assertion_remaining_secs`.
    OnBehalfOf {
        user_id: String,
        assertion_remaining_secs: u64,
    },
}

/// Entra's `200` with a token, never to be cached by anything in between.
fn token_response(body: Value) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store, no-cache"),
            (header::PRAGMA, "no-cache"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Whether a request, valid or not, asks for the on-behalf-of grant (for the `obo_refused` counter).
fn asks_on_behalf_of(headers: &HeaderMap, body: &[u8]) -> bool {
    parse_form(headers, body)
        .is_ok_and(|form| form.get("grant_type").map(String::as_str) == Some(ON_BEHALF_OF_GRANT))
}

/// An Entra error: `error` is the OAuth error code, `code` the AADSTS number.
#[derive(Debug)]
pub(crate) struct LoginError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
    /// Entra's finer classification of some errors (`consent_required`), for clients such as MSAL.
    suberror: Option<&'static str>,
}

impl LoginError {
    pub(crate) fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        description: impl Into<String>,
    ) -> LoginError {
        LoginError {
            status,
            error,
            code,
            description: description.into(),
            suberror: None,
        }
    }

    /// A refused grant, such as a user assertion the on-behalf-of grant does not accept: always
    /// `400`, whatever the reason.
    pub(crate) fn invalid_grant(code: u32, description: impl Into<String>) -> LoginError {
        LoginError::new(StatusCode::BAD_REQUEST, "invalid_grant", code, description)
    }

    pub(crate) fn with_suberror(mut self, suberror: &'static str) -> LoginError {
        self.suberror = Some(suberror);
        self
    }

    /// The AADSTS number, for unit tests.
    #[cfg(test)]
    pub(crate) fn code(&self) -> u32 {
        self.code
    }

    fn invalid_request(code: u32, description: impl Into<String>) -> LoginError {
        LoginError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            code,
            description,
        )
    }

    fn invalid_client(code: u32, description: impl Into<String>) -> LoginError {
        LoginError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            code,
            description,
        )
    }

    /// A malformed assertion or a missing claim (AADSTS50027, "invalid or malformed").
    fn malformed(detail: impl AsRef<str>) -> LoginError {
        LoginError::invalid_client(
            50027,
            format!("JWT token is invalid or malformed. {}", detail.as_ref()),
        )
    }

    fn expired(detail: impl AsRef<str>) -> LoginError {
        LoginError::invalid_client(
            700024,
            format!(
                "Client assertion is not within its valid time range. {}",
                detail.as_ref()
            ),
        )
    }

    fn into_response_for(self, request_headers: &HeaderMap, now: DateTime<Utc>) -> Response {
        entra_error(
            self.status,
            self.error,
            self.code,
            &self.description,
            self.suberror,
            request_headers,
            now,
        )
    }
}

/// Entra's error answer: `error` is the OAuth error code, `code` the AADSTS number, `now` the time it
/// carries. Also used for scripted faults, which may name any OAuth error.
pub(crate) fn error_response(
    status: StatusCode,
    error: &str,
    code: u32,
    description: &str,
    request_headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Response {
    entra_error(status, error, code, description, None, request_headers, now)
}

/// [`error_response`], with a `suberror` field when given.
fn entra_error(
    status: StatusCode,
    error: &str,
    code: u32,
    description: &str,
    suberror: Option<&str>,
    request_headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Response {
    let trace_id = uuid::Uuid::new_v4().to_string();
    // Entra reuses the caller's client-request-id as the correlation id.
    let correlation_id = request_headers
        .get("client-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let timestamp = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
    let mut body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {description} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
    });
    if let Some(suberror) = suberror {
        body["suberror"] = suberror.into();
    }
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// Validates a token request in the order Entra does: tenant, form, grant, client, scope, the app's
/// credential, then for the on-behalf-of grant the user's token (module `obo`). `issuer` is the
/// simulator's own (`Shared::issuer`); `now` (Unix seconds) is the time assertions must be valid at.
fn check_request(
    inner: &Inner,
    issuer: &str,
    tenant: &str,
    endpoint: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Grant, LoginError> {
    if !tenant.eq_ignore_ascii_case(&inner.tenant_id) {
        return Err(LoginError::invalid_request(
            90002,
            format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        ));
    }
    let app = &inner.app;
    let form = parse_form(headers, body)?;
    let required = |name: &str| required(&form, name);
    let grant_type = required("grant_type")?;
    let on_behalf_of = match grant_type {
        "client_credentials" => false,
        ON_BEHALF_OF_GRANT => true,
        _ => {
            return Err(LoginError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{grant_type}'."),
            ))
        }
    };
    let client_id = required("client_id")?;
    if client_id != app.client_id {
        return Err(LoginError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        ));
    }
    let user_assertion = if on_behalf_of {
        let token_use = required("requested_token_use")?;
        if token_use != "on_behalf_of" {
            return Err(LoginError::invalid_request(
                9002313,
                format!("Invalid request. The requested_token_use '{token_use}' is not supported; the JWT bearer grant takes 'on_behalf_of'."),
            ));
        }
        Some(required("assertion")?)
    } else {
        None
    };
    let scope = required("scope")?;
    if on_behalf_of {
        obo::check_scope(scope)?;
    } else if scope != GRAPH_SCOPE {
        return Err(LoginError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        ));
    }
    check_client_credential(app, &form, endpoint, now)?;
    match user_assertion {
        None => Ok(Grant::App),
        Some(assertion) => obo::check_user_assertion(inner, issuer, assertion, now),
    }
}

/// A form parameter the request must carry.
fn required<'a>(form: &'a HashMap<String, String>, name: &str) -> Result<&'a str, LoginError> {
    form.get(name).map(String::as_str).ok_or_else(|| {
        LoginError::invalid_request(
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    })
}

/// The app's own credential, the same for both grants: a secret, or a certificate or federated
/// assertion.
fn check_client_credential(
    app: &App,
    form: &HashMap<String, String>,
    endpoint: &str,
    now: i64,
) -> Result<(), LoginError> {
    match (form.get("client_secret"), form.get("client_assertion")) {
        (Some(secret), None) => {
            if secret == &app.client_secret {
                Ok(())
            } else {
                Err(LoginError::invalid_client(
                    7000215,
                    format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.", app.client_id),
                ))
            }
        }
        (None, Some(assertion)) => {
            let assertion_type = required(form, "client_assertion_type")?;
            if assertion_type != JWT_BEARER {
                return Err(LoginError::invalid_request(
                    50027,
                    format!("Invalid client_assertion_type '{assertion_type}'; expected '{JWT_BEARER}'."),
                ));
            }
            check_assertion(app, endpoint, assertion, now)
        }
        (Some(_), Some(_)) => Err(LoginError::invalid_request(
            90014,
            "Only one client credential may be presented: 'client_secret' or 'client_assertion', not both.",
        )),
        (None, None) => Err(LoginError::invalid_request(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )),
    }
}

/// Decodes the form body; a body that is not form-encoded has no parameters, as Entra sees it.
fn parse_form(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, LoginError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let mut form = HashMap::new();
    if !is_form {
        return Ok(form);
    }
    for (name, value) in url::form_urlencoded::parse(body) {
        if form.insert(name.to_string(), value.into_owned()).is_some() {
            return Err(LoginError::invalid_request(
                90014,
                format!("The request body must not contain the parameter '{name}' more than once."),
            ));
        }
    }
    Ok(form)
}

/// A certificate assertion names its certificate by thumbprint; anything else is a federated token.
fn check_assertion(app: &App, endpoint: &str, assertion: &str, now: i64) -> Result<(), LoginError> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|error| {
        LoginError::malformed(format!("The client assertion cannot be decoded: {error}."))
    })?;
    if header.x5t.is_some() || header.x5t_s256.is_some() {
        check_certificate_assertion(app, endpoint, &header, assertion, now)
    } else {
        check_federated_assertion(app, &header, assertion, now)
    }
}

fn check_certificate_assertion(
    app: &App,
    endpoint: &str,
    header: &Header,
    assertion: &str,
    now: i64,
) -> Result<(), LoginError> {
    if !matches!(header.alg, Algorithm::PS256 | Algorithm::RS256) {
        return Err(LoginError::invalid_client(
            700027,
            format!("Client assertion failed signature validation. Unsupported algorithm {:?}; use PS256 or RS256.", header.alg),
        ));
    }
    let certificate = find_certificate(app, header)?;
    let claims = verify_signature(
        assertion,
        &DecodingKey::from_rsa_der(&certificate.public_key_der),
        header.alg,
        700027,
    )?;
    let aud = string_claim(&claims, "aud")?;
    if aud != endpoint {
        return Err(LoginError::invalid_client(
            700023,
            format!("Client assertion audience claim does not match Realm issuer. Expected '{endpoint}', got '{aud}'."),
        ));
    }
    let iss = string_claim(&claims, "iss")?;
    let sub = string_claim(&claims, "sub")?;
    if iss != app.client_id || sub != app.client_id {
        return Err(LoginError::invalid_client(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter. The 'iss' and 'sub' claims must both be the client id.",
        ));
    }
    if string_claim(&claims, "jti")?.is_empty() {
        return Err(LoginError::malformed("The 'jti' claim is empty."));
    }
    let exp = time_claim(&claims, "exp")?
        .ok_or_else(|| LoginError::malformed("The 'exp' claim is missing."))?;
    let nbf = time_claim(&claims, "nbf")?
        .ok_or_else(|| LoginError::malformed("The 'nbf' claim is missing."))?;
    let iat = time_claim(&claims, "iat")?;
    check_validity(now, exp, Some(nbf))?;
    for (name, start) in [("nbf", Some(nbf)), ("iat", iat)] {
        if let Some(start) = start {
            if exp - start > MAX_ASSERTION_LIFETIME_SECS {
                return Err(LoginError::expired(format!(
                    "The assertion is valid for {} seconds after '{name}'; at most {MAX_ASSERTION_LIFETIME_SECS} are allowed.",
                    exp - start
                )));
            }
        }
    }
    Ok(())
}

/// Looks the certificate up by `x5t#S256` and/or `x5t`; when both are sent they must agree.
fn find_certificate<'a>(app: &'a App, header: &Header) -> Result<&'a Certificate, LoginError> {
    let not_found = |thumbprint: &str| {
        LoginError::invalid_client(
            700027,
            format!("Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}']"),
        )
    };
    let mut found: Option<&Certificate> = None;
    if let Some(thumbprint) = &header.x5t_s256 {
        let digest = THUMBPRINT
            .decode(thumbprint)
            .map_err(|_| not_found(thumbprint))?;
        found = Some(
            app.certificates
                .iter()
                .find(|c| c.sha256[..] == digest[..])
                .ok_or_else(|| not_found(thumbprint))?,
        );
    }
    if let Some(thumbprint) = &header.x5t {
        let digest = THUMBPRINT
            .decode(thumbprint)
            .map_err(|_| not_found(thumbprint))?;
        let by_sha1 = app
            .certificates
            .iter()
            .find(|c| c.sha1[..] == digest[..])
            .ok_or_else(|| not_found(thumbprint))?;
        if found.is_some_and(|by_sha256| !std::ptr::eq(by_sha256, by_sha1)) {
            return Err(not_found(thumbprint));
        }
        found = Some(by_sha1);
    }
    found.ok_or_else(|| not_found(""))
}

fn check_federated_assertion(
    app: &App,
    header: &Header,
    assertion: &str,
    now: i64,
) -> Result<(), LoginError> {
    // The issuer and subject pick the trusted key, so they are read before the signature is checked.
    let unverified = peek_claims(assertion)?;
    let iss = string_claim(&unverified, "iss")?;
    let sub = string_claim(&unverified, "sub")?;
    let aud = audiences(&unverified);
    let no_match = || {
        LoginError::invalid_client(
            70021,
            format!("No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{}'.", aud.join(",")),
        )
    };
    let record = app
        .federated
        .iter()
        .find(|f| f.issuer == iss && f.subject == sub)
        .ok_or_else(no_match)?;
    if header.alg != Algorithm::RS256 {
        return Err(LoginError::invalid_client(
            50013,
            format!("Assertion failed signature validation. Unsupported algorithm {:?}; the issuer signs with RS256.", header.alg),
        ));
    }
    let claims = verify_signature(assertion, &record.key, Algorithm::RS256, 50013)?;
    if !audiences(&claims).contains(&TOKEN_EXCHANGE_AUDIENCE) {
        return Err(no_match());
    }
    let exp = time_claim(&claims, "exp")?
        .ok_or_else(|| LoginError::malformed("The 'exp' claim is missing."))?;
    let nbf = time_claim(&claims, "nbf")?;
    check_validity(now, exp, nbf)
}

/// Verifies the signature only; claims are checked one by one afterwards so each failure gets its own
/// AADSTS code.
fn verify_signature(
    assertion: &str,
    key: &DecodingKey,
    alg: Algorithm,
    signature_code: u32,
) -> Result<Value, LoginError> {
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    match jsonwebtoken::decode::<Value>(assertion, key, &validation) {
        Ok(data) if data.claims.is_object() => Ok(data.claims),
        Ok(_) => Err(LoginError::malformed("The claims are not a JSON object.")),
        Err(error) => match error.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidRsaKey(_) => Err(LoginError::invalid_client(
                signature_code,
                "Client assertion failed signature validation.",
            )),
            _ => Err(LoginError::malformed(format!(
                "The client assertion cannot be decoded: {error}."
            ))),
        },
    }
}

/// Reads the claims of a JWT without verifying it.
fn peek_claims(assertion: &str) -> Result<Value, LoginError> {
    let payload = assertion
        .split('.')
        .nth(1)
        .ok_or_else(|| LoginError::malformed("The client assertion is not a JWT."))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| LoginError::malformed("The JWT payload is not base64url."))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(claims @ Value::Object(_)) => Ok(claims),
        _ => Err(LoginError::malformed(
            "The JWT payload is not a JSON object.",
        )),
    }
}

fn string_claim<'a>(claims: &'a Value, name: &str) -> Result<&'a str, LoginError> {
    claims[name].as_str().ok_or_else(|| {
        LoginError::malformed(format!("The '{name}' claim is missing or not a string."))
    })
}

/// A NumericDate claim, if present; present but not a number is malformed.
fn time_claim(claims: &Value, name: &str) -> Result<Option<i64>, LoginError> {
    match &claims[name] {
        Value::Null => Ok(None),
        value => value
            .as_i64()
            .or_else(|| value.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| LoginError::malformed(format!("The '{name}' claim is not a number."))),
    }
}

/// `aud` may be a string or (in Kubernetes service account tokens) an array of strings.
pub(crate) fn audiences(claims: &Value) -> Vec<&str> {
    match &claims["aud"] {
        Value::String(aud) => vec![aud.as_str()],
        Value::Array(auds) => auds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// JWT times are wall-clock Unix seconds, so `now` is the simulator's wall clock (`Clock::wall`), not
/// tokio's.
fn check_validity(now: i64, exp: i64, nbf: Option<i64>) -> Result<(), LoginError> {
    let show = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| t.to_string())
    };
    if exp <= now {
        return Err(LoginError::expired(format!(
            "Current time: {}, expiry time of assertion {}.",
            show(now),
            show(exp)
        )));
    }
    if let Some(nbf) = nbf {
        if nbf > now + CLOCK_SKEW_SECS {
            return Err(LoginError::expired(format!(
                "Current time: {}, assertion valid from {}.",
                show(now),
                show(nbf)
            )));
        }
        if exp <= nbf {
            return Err(LoginError::expired(
                "The assertion expires before it becomes valid.",
            ));
        }
    }
    Ok(())
}

/// Reads the CERTIFICATE block of a PEM (which may also hold a key) into a registered credential.
pub(crate) fn parse_certificate(pem_text: &str) -> Result<Certificate, String> {
    let blocks = pem::parse_many(pem_text).map_err(|error| format!("invalid PEM: {error}"))?;
    let der = blocks
        .iter()
        .find(|block| block.tag() == "CERTIFICATE")
        .ok_or("the PEM holds no CERTIFICATE block")?
        .contents();
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|error| format!("invalid X.509 certificate: {error}"))?;
    let key_info = certificate.public_key();
    if key_info.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return Err("the certificate's key is not an RSA key".to_owned());
    }
    // For RSA keys the SubjectPublicKeyInfo's bit string is the PKCS#1 RSAPublicKey.
    let public_key_der = key_info.subject_public_key.data.to_vec();
    Ok(Certificate {
        sha1: Sha1::digest(der).into(),
        sha256: Sha256::digest(der).into(),
        public_key_der,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assertions_outside_their_validity_window_are_refused() {
        let now = 1_000_000;
        assert!(check_validity(now, now + 60, Some(now)).is_ok());
        assert!(check_validity(now, now, Some(now - 60)).is_err());
        assert!(check_validity(now, now + 600, Some(now + CLOCK_SKEW_SECS)).is_ok());
        assert!(check_validity(now, now + 600, Some(now + CLOCK_SKEW_SECS + 1)).is_err());
    }

    #[test]
    fn kubernetes_array_audiences_are_understood() {
        let claims = json!({"aud": ["api://AzureADTokenExchange", "other"]});
        assert_eq!(audiences(&claims), ["api://AzureADTokenExchange", "other"]);
        assert!(audiences(&json!({})).is_empty());
    }
}
