//! Owns the admin endpoint that adds mailboxes to the simulated tenant at run time, so that a
//! simulator running as its own process (`mailbox-gateway simulator`) can hold more than the demo
//! mailbox, for load tests and vendors' integration tests.
//!
//! `POST /_simulator/mailboxes` with `{"address": "user@domain"}` creates a user with a mailbox
//! holding the standard folders and answers `201` with `{"id", "address"}`; an address already taken
//! gets `409`, a body that is not such an object or an address that is not one gets `400`, both as
//! `{"error": ...}` like the behaviour endpoint. No auth: it is a test tool.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

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
