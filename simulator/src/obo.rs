//! Plays Entra ID's side of the OAuth 2.0 on-behalf-of grant: checks the user's access token a
//! middle-tier app (the gateway) presents as `assertion`, and the user's consent, before the token
//! endpoint (module `login`) issues a delegated Graph token for that user.
//!
//! The app authenticates exactly as for client credentials (module `login`); then the assertion
//! must be an RS256 token signed by one of the simulator's published keys (module `issuer`), issued
//! by the simulator's tenant, for the authenticating app (`aud` = its client id or `api://` client
//! id), within its validity window, about a user of the tenant who (or whose administrator) has
//! consented to the app. Every refusal is `400 invalid_grant`:
//!
//! | AADSTS | why |
//! |---|---|
//! | 50027 | not a JWT, or a required claim (`iss`, `tid`, `aud`, `exp`, `oid`, `scp`) missing or mistyped |
//! | 50013 | not RS256, no or unknown `kid`, a bad signature, another issuer or tenant |
//! | 500131 | `aud` is not the authenticating app |
//! | 500133 | expired, or `nbf` more than five minutes ahead |
//! | 50034 | `oid` names no user of the tenant |
//! | 65001 | no consent (with `"suberror": "consent_required"`) |

use axum::http::StatusCode;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use super::login::{audiences, Grant, LoginError, CLOCK_SKEW_SECS, GRAPH_SCOPE};
use super::state::Inner;

/// The delegated Graph permissions the demo app holds, as the token endpoint's `scope` lists them:
/// enough to discover the user's mailbox and import into and export from it, no more.
pub(crate) const DELEGATED_SCOPES: &str = "https://graph.microsoft.com/MailboxFolder.Read https://graph.microsoft.com/MailboxItem.ImportExport https://graph.microsoft.com/MailboxItem.Read https://graph.microsoft.com/User.Read";

/// The app's display name, which AADSTS65001 quotes.
const APP_NAME: &str = "mailbox-gateway (simulator demo)";

/// OpenID Connect scopes MSAL adds to every request; Entra takes them beside a resource's scope.
const OIDC_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];

/// The on-behalf-of `scope`: Graph's `.default`, optionally with OpenID Connect's scopes (which the
/// simulator ignores: it issues neither refresh nor ID tokens). Individual Graph permissions
/// (`https://graph.microsoft.com/MailboxItem.ImportExport`) are refused: the simulator grants only
/// what the app was consented to, as `.default` asks.
pub(crate) fn check_scope(scope: &str) -> Result<(), LoginError> {
    let mut resource_scopes = scope
        .split(' ')
        .filter(|s| !s.is_empty() && !OIDC_SCOPES.contains(s));
    match (resource_scopes.next(), resource_scopes.next()) {
        (Some(GRAPH_SCOPE), None) => Ok(()),
        _ => Err(LoginError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            format!("The provided value for the input parameter 'scope' is not valid. The scope '{scope}' is not valid: the on-behalf-of grant takes '{GRAPH_SCOPE}' (optionally with openid, profile, offline_access)."),
        )),
    }
}

/// Checks the user's token presented as `assertion` at `now` (Unix seconds, the simulator's wall
/// clock) for the simulator's `issuer`, in the order Entra does: the token, the signature, issuer
/// and tenant, audience, validity window, user, consent.
pub(crate) fn check_user_assertion(
    inner: &Inner,
    issuer: &str,
    assertion: &str,
    now: i64,
) -> Result<Grant, LoginError> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|error| malformed(format!("The assertion cannot be decoded: {error}.")))?;
    if header.alg != Algorithm::RS256 {
        return Err(bad_signature(format!(
            "Unsupported algorithm {:?}; Entra signs access tokens with RS256.",
            header.alg
        )));
    }
    let kid = header.kid.unwrap_or_default();
    let key = inner.signing_keys.decoding_key(&kid).ok_or_else(|| {
        bad_signature(format!(
            "[Reason - The key was not found., Key ID: '{kid}']"
        ))
    })?;
    let claims = verify(assertion, key)?;

    let iss = string_claim(&claims, "iss")?;
    if iss != issuer {
        return Err(LoginError::invalid_grant(
            50013,
            format!(
                "Assertion is invalid: the issuer '{iss}' is not this tenant's issuer '{issuer}'."
            ),
        ));
    }
    let tid = string_claim(&claims, "tid")?;
    if !tid.eq_ignore_ascii_case(&inner.tenant_id) {
        return Err(LoginError::invalid_grant(
            50013,
            format!(
                "Assertion is invalid: it was issued for tenant '{tid}', not '{}'.",
                inner.tenant_id
            ),
        ));
    }

    let client_id = &inner.app.client_id;
    let app_id_uri = format!("api://{client_id}");
    let aud = audiences(&claims);
    if aud.is_empty() {
        return Err(malformed("The 'aud' claim is missing or not a string."));
    }
    if !aud
        .iter()
        .any(|aud| *aud == client_id || *aud == app_id_uri)
    {
        return Err(LoginError::invalid_grant(
            500131,
            format!("Assertion audience does not match the Client app presenting the assertion. The audience in the assertion was '{}' and the expected audience is '{client_id}' or one of the Application Id URIs of this application.", aud.join(",")),
        ));
    }

    let exp =
        time_claim(&claims, "exp")?.ok_or_else(|| malformed("The 'exp' claim is missing."))?;
    let nbf = time_claim(&claims, "nbf")?;
    check_time_range(now, exp, nbf)?;

    let oid = string_claim(&claims, "oid")?;
    if string_claim(&claims, "scp")?.trim().is_empty() {
        return Err(malformed(
            "The 'scp' claim is empty: only a user's delegated token can be exchanged on behalf of the user.",
        ));
    }
    let user = inner
        .users
        .iter()
        .find(|user| user.id.eq_ignore_ascii_case(oid))
        .ok_or_else(|| {
            LoginError::invalid_grant(
                50034,
                format!("The user account {oid} does not exist in the '{}' directory. To sign into this application, the account must be added to the directory.", inner.tenant_id),
            )
        })?;
    if !inner.app.has_consent(&user.id) {
        return Err(LoginError::invalid_grant(
            65001,
            format!("The user or administrator has not consented to use the application with ID '{client_id}' named '{APP_NAME}'. Send an interactive authorization request for this user and resource."),
        )
        .with_suberror("consent_required"));
    }
    Ok(Grant::OnBehalfOf {
        user_id: user.id.clone(),
        // Positive: check_time_range refused an assertion expiring at or before `now`.
        assertion_remaining_secs: u64::try_from(exp - now).unwrap_or(0),
    })
}

/// Verifies the signature only; the claims are checked one by one afterwards, each with its code.
fn verify(assertion: &str, key: &jsonwebtoken::DecodingKey) -> Result<Value, LoginError> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    match jsonwebtoken::decode::<Value>(assertion, key, &validation) {
        Ok(data) if data.claims.is_object() => Ok(data.claims),
        Ok(_) => Err(malformed("The claims are not a JSON object.")),
        Err(error) => match error.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => Err(bad_signature(
                "[Reason - The provided signature value did not match the expected signature value.]",
            )),
            _ => Err(malformed(format!("The assertion cannot be decoded: {error}."))),
        },
    }
}

/// AADSTS500133, for an assertion outside its validity window at `now`.
fn check_time_range(now: i64, exp: i64, nbf: Option<i64>) -> Result<(), LoginError> {
    let show = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| t.to_string())
    };
    let out_of_range = |detail: String| {
        LoginError::invalid_grant(
            500133,
            format!("Assertion is not within its valid time range. Ensure that the access token is not expired before using it for user assertion, or request a new token. Current time: {}, {detail}.", show(now)),
        )
    };
    if exp <= now {
        return Err(out_of_range(format!(
            "expiry time of assertion {}",
            show(exp)
        )));
    }
    match nbf {
        Some(nbf) if nbf > now + CLOCK_SKEW_SECS => {
            Err(out_of_range(format!("assertion valid from {}", show(nbf))))
        }
        _ => Ok(()),
    }
}

/// AADSTS50027, for a token that is not a well-formed user token.
fn malformed(detail: impl AsRef<str>) -> LoginError {
    LoginError::invalid_grant(
        50027,
        format!("JWT token is invalid or malformed. {}", detail.as_ref()),
    )
}

/// AADSTS50013, for a signature the simulator's keys do not verify.
fn bad_signature(detail: impl AsRef<str>) -> LoginError {
    LoginError::invalid_grant(
        50013,
        format!("Assertion failed signature validation. {}", detail.as_ref()),
    )
}

fn string_claim<'a>(claims: &'a Value, name: &str) -> Result<&'a str, LoginError> {
    claims[name]
        .as_str()
        .ok_or_else(|| malformed(format!("The '{name}' claim is missing or not a string.")))
}

/// A NumericDate claim, if present; present but not a number is malformed.
fn time_claim(claims: &Value, name: &str) -> Result<Option<i64>, LoginError> {
    match &claims[name] {
        Value::Null => Ok(None),
        value => value
            .as_i64()
            .or_else(|| value.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| malformed(format!("The '{name}' claim is not a number."))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_is_graphs_default_with_at_most_openid_connects_scopes_beside_it() {
        assert!(check_scope(GRAPH_SCOPE).is_ok());
        assert!(check_scope(&format!("openid {GRAPH_SCOPE} offline_access profile")).is_ok());
        for bad in [
            "",
            "openid",
            "https://graph.microsoft.com/MailboxItem.ImportExport",
            &format!("{GRAPH_SCOPE} https://graph.microsoft.com/User.Read"),
            "api://0f3c6e2d-7b1a-4c59-8e2f-6a4d9b1c3e75/.default",
        ] {
            assert_eq!(check_scope(bad).unwrap_err().code(), 70011, "{bad:?}");
        }
    }

    #[test]
    fn assertions_are_refused_from_their_expiry_and_five_minutes_before_their_start() {
        let now = 1_000_000;
        assert!(check_time_range(now, now + 1, Some(now)).is_ok());
        assert_eq!(check_time_range(now, now, None).unwrap_err().code(), 500133);
        assert!(check_time_range(now, now + 600, Some(now + CLOCK_SKEW_SECS)).is_ok());
        assert!(check_time_range(now, now + 600, Some(now + CLOCK_SKEW_SECS + 1)).is_err());
    }
}
