//! Decides what a Graph access token may reach: an app token (client credentials) every mailbox, a
//! delegated token (on-behalf-of) only its user's own primary mailbox and archive.
//!
//! The delegated permission `MailboxItem.ImportExport` "reaches only the signed-in user's own
//! mailbox" (docs/upstream.md section 2). Graph does not document the answer for another's
//! mailbox; Exchange's `403 ErrorAccessDenied` is the likely one, and it is given before the
//! mailbox is looked up, so a delegated token cannot tell an unknown mailbox from another user's.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::graph::{GraphContext, GraphError};
use super::state::{Principal, Shared};

/// Exchange's message for a request its credentials do not allow.
pub(crate) const ACCESS_DENIED: &str = "Access is denied. Check credentials and try again.";

/// Middleware on every `/admin/exchange/mailboxes/{mailbox}/...` route, inside the bearer check:
/// refuses a delegated token on a mailbox that is not its user's.
pub(crate) async fn mailbox_scope(
    State(shared): State<Arc<Shared>>,
    Extension(context): Extension<GraphContext>,
    Extension(principal): Extension<Principal>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
    next: Next,
) -> Response {
    let mailbox_id = params
        .get("mailbox")
        .expect("the layer sits on mailbox routes only");
    // App tokens reach every mailbox; only delegated ones need the state.
    if matches!(principal, Principal::User { .. }) {
        let mut inner = shared.lock();
        if !inner.may_reach(&principal, mailbox_id) {
            inner.counters.delegated_access_denied += 1;
            drop(inner);
            return access_denied(&context).into_response();
        }
    }
    next.run(request).await
}

/// Graph's 403 for a delegated token that asks for another user's data.
pub(crate) fn access_denied(context: &GraphContext) -> GraphError {
    context.error(StatusCode::FORBIDDEN, "ErrorAccessDenied", ACCESS_DENIED)
}
