//! The audit events, on the `audit` target, which the binary writes apart from the debug log (one JSON
//! object per line, `crate::audit_log`): one per import, one per denial by the rules, one per request
//! refused without credentials, and one per other refusal of a client's request (a bad header, body or
//! size, a timeout, no memory), so that every request a client sent to a guarded route leaves a line.
//! Status and code come from the answer itself ([`ApiError::status`], [`ApiError::code`], or the
//! response's [`ProblemCode`]), so the audit line and the client's answer cannot disagree. Each line
//! carries the client's request id and the gateway's own.

use axum::http::{Method, StatusCode};

use super::items::ImportCommand;
use super::ApiError;
use crate::access::{Client, Operation};
use crate::graph::{Disposal, ImportedItem};
use crate::ids::{FolderRef, MailboxRef};

/// One audit event per import, on the `audit` target, which the binary writes apart from the debug log
/// (one JSON object per line). It names the client, the mailbox and folder, the mode, the item's size
/// and SHA-256 (unless `MAILBOX_GATEWAY_AUDIT_DIGEST=off`), the outcome, and the ids to find the request
/// again here and at Microsoft.
pub(super) fn import(
    command: &ImportCommand,
    digest: Option<&[u8; 32]>,
    outcome: &Result<(String, ImportedItem), ApiError>,
    status: StatusCode,
) {
    let (mailbox_id, item_id, code, graph_request_id) = match outcome {
        Ok((mailbox_id, item)) => (
            Some(mailbox_id.as_str()),
            Some(item.item_id.as_str()),
            None,
            None,
        ),
        Err(error) => (None, None, Some(error.code()), error.graph_request_id()),
    };
    tracing::info!(
        target: "audit",
        client = %command.client.name,
        user_oid = command.client.user.as_ref().map(|u| u.oid.as_str()),
        mailbox = %command.mailbox,
        mailbox_id,
        folder = %command.folder,
        mode = command.mode_name(),
        size = command.data.len(),
        message_class = command.facts.message_class.as_deref(),
        attachments = command.facts.attachments,
        sha256 = digest.map(|d| tracing::field::display(Hex(d))),
        status = status.as_u16(),
        code,
        item_id,
        request_id = %super::request_id::current_request_id(),
        gateway_request_id = %super::request_id::gateway_request_id(),
        client_request_id = %super::request_id::graph_client_request_id(),
        graph_request_id = graph_request_id.as_deref(),
        "import"
    );
}

/// What an audit line of a read says: which client read what, how much, and how it ended.
pub(super) struct ReadEvent<'a> {
    pub client: &'a Client,
    /// `get`, `list`, `export` (a folder as tar) or `export_items`.
    pub operation: &'static str,
    pub mailbox: &'a MailboxRef,
    pub folder: Option<&'a FolderRef>,
    /// The ids asked for by id (none for a listing or a folder export).
    pub item_ids: &'a [String],
    /// Items passed to the client.
    pub items: usize,
    /// Their bytes.
    pub bytes: usize,
    pub status: StatusCode,
    pub code: Option<&'static str>,
}

/// One audit event per read: a single item, a page of a listing, a folder export, or exportItems.
pub(super) fn read(event: &ReadEvent<'_>) {
    let item_ids = (!event.item_ids.is_empty()).then(|| event.item_ids.join(","));
    tracing::info!(
        target: "audit",
        client = %event.client.name,
        user_oid = event.client.user.as_ref().map(|u| u.oid.as_str()),
        operation = event.operation,
        mailbox = %event.mailbox,
        folder = event.folder.map(tracing::field::display),
        item_ids = item_ids.as_deref(),
        items = event.items,
        bytes = event.bytes,
        status = event.status.as_u16(),
        code = event.code,
        request_id = %super::request_id::current_request_id(),
        gateway_request_id = %super::request_id::gateway_request_id(),
        client_request_id = %super::request_id::graph_client_request_id(),
        "read"
    );
}

/// One audit event per delete.
pub(super) fn delete(
    client: &Client,
    mailbox: &MailboxRef,
    folder: &FolderRef,
    item_id: &str,
    disposal: Disposal,
    status: StatusCode,
    code: Option<&'static str>,
) {
    tracing::info!(
        target: "audit",
        client = %client.name,
        user_oid = client.user.as_ref().map(|u| u.oid.as_str()),
        mailbox = %mailbox,
        folder = %folder,
        item_id,
        disposal = disposal.as_str(),
        status = status.as_u16(),
        code,
        request_id = %super::request_id::current_request_id(),
        gateway_request_id = %super::request_id::gateway_request_id(),
        client_request_id = %super::request_id::graph_client_request_id(),
        "delete"
    );
}

/// Lower-case hex, written straight into the log line.
struct Hex<'a>(&'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// One audit event per refusal by the client's rules.
pub(super) fn denied(
    client: &Client,
    mailbox: &MailboxRef,
    operation: Operation,
    error: &ApiError,
) {
    tracing::warn!(
        target: "audit",
        client = %client.name,
        user_oid = client.user.as_ref().map(|u| u.oid.as_str()),
        mailbox = %mailbox,
        operation = %operation,
        status = error.status().as_u16(),
        code = error.code(),
        request_id = %super::request_id::current_request_id(),
        gateway_request_id = %super::request_id::gateway_request_id(),
        "denied"
    );
}

/// One audit event per request refused because the client did not authenticate.
pub(super) fn unauthenticated(method: &Method, path: &str) {
    tracing::warn!(
        target: "audit",
        client = "-",
        method = %method,
        path,
        status = ApiError::Unauthenticated.status().as_u16(),
        code = ApiError::Unauthenticated.code(),
        request_id = %super::request_id::current_request_id(),
        gateway_request_id = %super::request_id::gateway_request_id(),
        "unauthenticated"
    );
}

/// One audit event per other refusal of an authenticated client's request.
pub(super) fn refused(client: &str, method: &Method, route: &str, status: StatusCode, code: &str) {
    tracing::info!(
        target: "audit",
        client,
        method = %method,
        route,
        status = status.as_u16(),
        code,
        request_id = %super::request_id::current_request_id(),
        gateway_request_id = %super::request_id::gateway_request_id(),
        "refused"
    );
}

/// Marks a response whose request has its audit line already (an import or a denial).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Audited;

/// The problem code of an error response, for the audit line of a refusal.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProblemCode(pub &'static str);
