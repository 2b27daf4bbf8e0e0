//! Owns the admin endpoints that change the simulated tenant at run time, so that a simulator
//! running as its own process (`mailbox-gateway simulator`) can hold more than the demo mailbox and
//! sign users in, for load tests, vendors' integration tests and trying the gateway with curl.
//!
//! - `POST /_simulator/mailboxes` with `{"address": "user@domain"}` creates a user with a mailbox
//!   holding the standard folders and answers `201` with `{"id", "address"}`; an address already
//!   taken gets `409`.
//! - `POST /_simulator/user-tokens` with `{"address", "audience"?, "lifetimeSecs"?}` mints a user
//!   access token for the demo app (module `issuer`, like
//!   [`Simulator::user_token`](super::Simulator::user_token)) and answers `200` with
//!   `{"access_token"}`; an unknown user gets `404`.
//!
//! A body that is not such an object or an address that is not one gets `400`; every refusal is
//! `{"error": ...}` like the behaviour endpoint's. No auth: it is a test tool.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::issuer::{self, UserTokenOptions};
use super::state::Shared;

/// The longest address accepted (RFC 5321's limit on a forward path).
const MAX_ADDRESS_LEN: usize = 254;

/// The body of `POST /_simulator/mailboxes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMailbox {
    address: String,
}

/// `POST /_simulator/mailboxes`: adds a user and its mailbox, as the module doc describes.
pub(crate) async fn add_mailbox(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request = match serde_json::from_slice::<NewMailbox>(&body) {
        Ok(request) => request,
        Err(error) => {
            return admin_error(
                StatusCode::BAD_REQUEST,
                format!("not a new mailbox ({{\"address\": ...}}): {error}"),
            )
        }
    };
    if let Err(problem) = check_address(&request.address) {
        return admin_error(StatusCode::BAD_REQUEST, problem);
    }
    let added = shared.lock().add_user(&request.address);
    match added {
        Ok(mailbox_id) => (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/json")],
            json!({ "id": mailbox_id, "address": request.address }).to_string(),
        )
            .into_response(),
        Err(error) => admin_error(StatusCode::CONFLICT, error),
    }
}

/// The body of `POST /_simulator/user-tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewUserToken {
    address: String,
    audience: Option<String>,
    /// Seconds until the token expires; zero or less mints an expired one.
    lifetime_secs: Option<i64>,
}

/// `POST /_simulator/user-tokens`: mints a user access token, as the module doc describes.
pub(crate) async fn user_token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request = match serde_json::from_slice::<NewUserToken>(&body) {
        Ok(request) => request,
        Err(error) => {
            return admin_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "not a user token request ({{\"address\": ..., \"audience\"?: ..., \"lifetimeSecs\"?: ...}}): {error}"
                ),
            )
        }
    };
    let options = UserTokenOptions {
        audience: request.audience,
        lifetime_secs: request.lifetime_secs,
        ..UserTokenOptions::default()
    };
    let now = shared.clock.wall();
    let minted = issuer::mint(
        &mut shared.lock(),
        &shared.base_url,
        now,
        &request.address,
        &options,
    );
    match minted {
        Ok(token) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            json!({ "access_token": token }).to_string(),
        )
            .into_response(),
        Err(error) => admin_error(StatusCode::NOT_FOUND, error),
    }
}

/// An address is `local@domain`: one `@`, neither side empty, at most 254 visible ASCII characters.
/// Stricter than Entra on purpose (no quoted local parts), so that ids in URLs stay simple.
fn check_address(address: &str) -> Result<(), String> {
    let shaped = address.len() <= MAX_ADDRESS_LEN
        && address.bytes().all(|b| b.is_ascii_graphic())
        && matches!(address.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if shaped {
        Ok(())
    } else {
        Err(format!(
            "address must be local@domain, at most {MAX_ADDRESS_LEN} visible ASCII characters, got {address:?}"
        ))
    }
}

fn admin_error(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "error": message }).to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_one_at_sign_with_both_sides_and_no_spaces() {
        assert_eq!(check_address("bench01@contoso.com"), Ok(()));
        for bad in [
            "",
            "contoso.com",
            "@contoso.com",
            "bench01@",
            "a@b@c",
            "bench 01@contoso.com",
            "bénch@contoso.com",
        ] {
            assert!(check_address(bad).is_err(), "{bad:?}");
        }
        assert!(check_address(&format!("{}@x", "a".repeat(MAX_ADDRESS_LEN))).is_err());
    }
}
