//! Serves the Microsoft Graph endpoints the gateway uses (`/v1.0/...`), with Graph's bearer check,
//! request-id headers and error shape.
//!
//! The bearer check tells app tokens from delegated ones (module `access` says what each reaches):
//! it puts the token's [`Principal`] in the request's extensions for the handlers.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::query::{self, ListOptions};
use super::state::{Folder, Inner, Mailbox, Principal, Shared, TokenProblem, User};
use super::{access, export, items, RequestId};

/// The content type Graph puts on its JSON answers; clients must not insist on a bare
/// `application/json`.
const GRAPH_JSON: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// What Graph percent-encodes in a path segment of its next links: `MBX:..@..` becomes `MBX%3A..%40..`.
pub(crate) const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The `/v1.0` routes, behind the bearer-token check.
pub(crate) fn router(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    let mailboxes = Router::new()
        .route(
            "/admin/exchange/mailboxes/{mailbox}/createImportSession",
            post(create_import_session),
        )
        .route(
            "/admin/exchange/mailboxes/{mailbox}/folders",
            get(list_folders),
        )
        .route(
            "/admin/exchange/mailboxes/{mailbox}/folders/{folder}",
            get(get_folder),
        )
        .route(
            "/admin/exchange/mailboxes/{mailbox}/folders/{folder}/childFolders",
            get(list_child_folders),
        )
        .route(
            "/admin/exchange/mailboxes/{mailbox}/folders/{folder}/items",
            get(items::list_items),
        )
        .route(
            "/admin/exchange/mailboxes/{mailbox}/folders/{folder}/items/{item}",
            get(items::get_item).delete(items::delete_item),
        )
        .route(
            "/admin/exchange/mailboxes/{mailbox}/exportItems",
            post(export::export_items),
        )
        // Inside the bearer check, which names the principal; a route layer, so that it sees the
        // mailbox id and leaves wrong methods to the 405 fallback.
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            access::mailbox_scope,
        ));
    Router::new()
        .route("/users/{user}/settings/exchange", get(exchange_settings))
        .route("/me/settings/exchange", get(my_exchange_settings))
        .merge(mailboxes)
        .fallback(unknown_resource)
        .method_not_allowed_fallback(method_not_allowed)
        // Wraps the fallbacks too: every /v1.0 request must carry a valid token.
        .layer(middleware::from_fn_with_state(shared, authenticate))
}

/// The ids and the date a Graph error repeats in its `innerError`.
#[derive(Clone, Debug)]
pub(crate) struct GraphContext {
    request_id: String,
    client_request_id: Option<String>,
    /// When the request arrived, by the simulator's clock.
    date: DateTime<Utc>,
}

impl GraphContext {
    pub(crate) fn new(
        request_id: &RequestId,
        headers: &HeaderMap,
        date: DateTime<Utc>,
    ) -> GraphContext {
        GraphContext {
            request_id: request_id.0.clone(),
            client_request_id: headers
                .get("client-request-id")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            date,
        }
    }

    pub(crate) fn error(
        &self,
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> GraphError {
        GraphError {
            status,
            code: code.into(),
            message: message.into(),
            context: self.clone(),
        }
    }
}

/// A Graph-shaped error: `{"error": {"code", "message", "innerError": {...}}}`.
#[derive(Debug)]
pub(crate) struct GraphError {
    status: StatusCode,
    /// Mostly a literal; scripted faults may name any code.
    code: Cow<'static, str>,
    message: String,
    context: GraphContext,
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        // Graph fills client-request-id with its own request-id when the client sent none.
        let client_request_id = self
            .context
            .client_request_id
            .unwrap_or_else(|| self.context.request_id.clone());
        let body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": self.context.date.format("%Y-%m-%dT%H:%M:%S").to_string(),
                    "request-id": self.context.request_id,
                    "client-request-id": client_request_id,
                }
            }
        });
        graph_json(self.status, &body)
    }
}

/// Middleware: counts every request under `/v1.0` on its way in, whatever then answers it, in
/// `graph_requests` and, for the item routes, in their own counters.
pub(crate) async fn count(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    {
        let mut inner = shared.lock();
        let counters = &mut inner.counters;
        counters.graph_requests += 1;
        match Call::of(request.method(), request.uri().path()) {
            Some(Call::Export) => counters.export_requests += 1,
            Some(Call::ListItems) => counters.item_list_requests += 1,
            Some(Call::GetItem) => counters.item_get_requests += 1,
            Some(Call::DeleteItem) => counters.item_delete_requests += 1,
            None => {}
        }
    }
    next.run(request).await
}

/// The mailbox calls with counters of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Export,
    ListItems,
    GetItem,
    DeleteItem,
}

impl Call {
    /// Which of them a request is, by method and path (with or without the `/v1.0` prefix, which
    /// the nested router strips).
    fn of(method: &Method, path: &str) -> Option<Call> {
        let path = path.strip_prefix("/v1.0").unwrap_or(path);
        let rest = path.strip_prefix("/admin/exchange/mailboxes/")?;
        let segments: Vec<&str> = rest.split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::POST, [_, "exportItems"]) => Some(Call::Export),
            (&Method::GET, [_, "folders", _, "items"]) => Some(Call::ListItems),
            (&Method::GET, [_, "folders", _, "items", _]) => Some(Call::GetItem),
            (&Method::DELETE, [_, "folders", _, "items", _]) => Some(Call::DeleteItem),
            _ => None,
        }
    }
}

/// Checks the request's bearer token, puts whom it acts for ([`Principal`]) in the request's
/// extensions, and echoes `client-request-id`.
async fn authenticate(
    State(shared): State<Arc<Shared>>,
    Extension(request_id): Extension<RequestId>,
    mut request: Request,
    next: Next,
) -> Response {
    let context = GraphContext::new(&request_id, request.headers(), shared.clock.wall());
    let echo = request.headers().get("client-request-id").cloned();
    let now = shared.clock.now();
    let verdict = {
        let mut inner = shared.lock();
        let verdict = check_bearer(&mut inner, request.headers(), now);
        if let Ok(Principal::User { .. }) = verdict {
            inner.counters.delegated_requests += 1;
        }
        verdict
    };
    let mut response = match verdict {
        Ok(principal) => {
            request.extensions_mut().insert(context);
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(message) => {
            let mut response = context
                .error(
                    StatusCode::UNAUTHORIZED,
                    "InvalidAuthenticationToken",
                    message,
                )
                .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    };
    if let Some(value) = echo {
        response.headers_mut().insert("client-request-id", value);
    }
    response
}

/// Accepts `Authorization: Bearer <token>` naming a token we issued that is neither expired at `now`
/// nor revoked, and says whom it acts for; otherwise returns Graph's message for the failure.
fn check_bearer(
    inner: &mut Inner,
    headers: &HeaderMap,
    now: Instant,
) -> Result<Principal, &'static str> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or("Access token is empty.")?;
    match inner.token_principal(token, now) {
        Ok(principal) => Ok(principal),
        Err(TokenProblem::Expired) => Err("Lifetime validation failed, the token is expired."),
        Err(TokenProblem::Unknown) => Err("Access token validation failure."),
    }
}

pub(crate) type GraphResult = Result<Response, GraphError>;

/// `GET /users/{idOrUpn}/settings/exchange`. A delegated token reads only its own user's settings
/// (`403 ErrorAccessDenied` for anyone else, known or not).
async fn exchange_settings(
    State(shared): State<Arc<Shared>>,
    Extension(context): Extension<GraphContext>,
    Extension(principal): Extension<Principal>,
    Path(user): Path<String>,
) -> GraphResult {
    let graph_url = shared.graph_url();
    let mut inner = shared.lock();
    if let Principal::User { user_id } = &principal {
        let own = inner.user(&user).is_some_and(|found| &found.id == user_id);
        if !own {
            inner.counters.delegated_access_denied += 1;
            return Err(access::access_denied(&context));
        }
    }
    let user = inner.user(&user).ok_or_else(|| {
        context.error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!(
                "Resource '{user}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    })?;
    Ok(graph_json(StatusCode::OK, &settings_json(&graph_url, user)))
}

/// `GET /me/settings/exchange`: the signed-in user's settings, for delegated tokens only.
async fn my_exchange_settings(
    State(shared): State<Arc<Shared>>,
    Extension(context): Extension<GraphContext>,
    Extension(principal): Extension<Principal>,
) -> GraphResult {
    let Principal::User { user_id } = principal else {
        // Graph's answer to an app-only token on /me.
        return Err(context.error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        ));
    };
    let graph_url = shared.graph_url();
    let inner = shared.lock();
    // The user may be gone since the token was issued; Graph then knows no such resource.
    let user = inner.user(&user_id).ok_or_else(|| {
        context.error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!(
                "Resource '{user_id}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    })?;
    Ok(graph_json(StatusCode::OK, &settings_json(&graph_url, user)))
}

/// A user's `settings/exchange` entity.
fn settings_json(graph_url: &str, user: &User) -> Value {
    json!({
        "@odata.context": format!("{graph_url}/$metadata#users('{}')/settings/exchange/$entity", user.id),
        "id": user.id,
        "primaryMailboxId": user.primary_mailbox_id,
        "inPlaceArchiveMailboxId": user.archive_mailbox_id,
    })
}

/// `POST /admin/exchange/mailboxes/{mailboxId}/createImportSession`.
async fn create_import_session(
    State(shared): State<Arc<Shared>>,
    Extension(context): Extension<GraphContext>,
    Extension(principal): Extension<Principal>,
    Path(mailbox_id): Path<String>,
    body: Bytes,
) -> GraphResult {
    check_no_parameters(&context, &body, "createImportSession")?;
    let (now, wall) = (shared.clock.now(), shared.clock.wall());
    let mut inner = shared.lock();
    if inner.mailbox(&mailbox_id).is_none() {
        return Err(unknown_mailbox(&context, &mailbox_id));
    }
    let (authtoken, lifetime) = inner.create_session(&mailbox_id, principal, now);
    drop(inner);
    let expires = wall + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX);
    let body = json!({
        "@odata.context": format!("{}/$metadata#microsoft.graph.mailboxItemImportSession", shared.graph_url()),
        // The mailbox id goes into the URL raw, as in the documentation's example.
        "importUrl": format!(
            "{}/api/gv1.0/Mailboxes('{mailbox_id}')/importItem?authtoken={authtoken}",
            shared.base_url
        ),
        "expirationDateTime": seven_digit_timestamp(expires),
    });
    Ok(graph_json(StatusCode::CREATED, &body))
}

/// The action takes no parameters: like OData, accept an empty body or `{}`, reject anything else.
fn check_no_parameters(
    context: &GraphContext,
    body: &[u8],
    action: &str,
) -> Result<(), GraphError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => match fields.keys().next() {
            None => Ok(()),
            Some(name) => Err(context.error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!(
                    "The parameter '{name}' in the request payload is not a valid parameter for the operation '{action}'."
                ),
            )),
        },
        _ => Err(context.error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The request payload is not valid JSON.",
        )),
    }
}

/// `GET /admin/exchange/mailboxes/{mailboxId}/folders`, paged with `$top` and `$skiptoken`.
async fn list_folders(
    State(shared): State<Arc<Shared>>,
    Extension(context): Extension<GraphContext>,
    Path(mailbox_id): Path<String>,
    RawQuery(query): RawQuery,
) -> GraphResult {
    folder_page(&shared, &context, &mailbox_id, None, query.as_deref())
}

/// `GET /admin/exchange/mailboxes/{mailboxId}/folders/{folderIdOrWellKnownName}/childFolders`, paged
/// like the folder listing.
async fn list_child_folders(
    State(shared): State<Arc<Shared>>,
    Extension(context): Extension<GraphContext>,
    Path((mailbox_id, parent)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> GraphResult {
    folder_page(
        &shared,
        &context,
        &mailbox_id,
        Some(&parent),
        query.as_deref(),
    )
}

/// One page of a mailbox's folders, or of one folder's children when `parent` is given.
fn folder_page(
    shared: &Shared,
    context: &GraphContext,
    mailbox_id: &str,
    parent: Option<&str>,
    query: Option<&str>,
) -> GraphResult {
    let options = ListOptions::parse(context, query.unwrap_or(""), &query::FOLDERS)?;
    let graph_url = shared.graph_url();
    let inner = shared.lock();
    let mailbox = inner
        .mailbox(mailbox_id)
        .ok_or_else(|| unknown_mailbox(context, mailbox_id))?;
    let (folders, path): (Vec<&Folder>, String) = match parent {
        None => (mailbox.folders.iter().collect(), "folders".to_owned()),
        Some(parent) => {
            let parent = find_folder(context, mailbox, parent)?;
            let children = mailbox
                .folders
                .iter()
                .filter(|f| f.parent_folder_id == parent.id)
                .collect();
            let path = format!(
                "folders/{}/childFolders",
                utf8_percent_encode(&parent.id, PATH_SEGMENT)
            );
            (children, path)
        }
    };
    let page_size = options.top.unwrap_or(inner.config.folder_page_size);
    let total = folders.len();
    let skip = usize::try_from(options.skip)
        .ok()
        .filter(|skip| *skip <= total)
        .ok_or_else(|| query::bad_skiptoken(context))?;
    let end = (skip + page_size).min(total);
    let value: Vec<Value> = folders[skip..end]
        .iter()
        .map(|folder| options.select(folder_json(&graph_url, mailbox, folder)))
        .collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        format!("{graph_url}/$metadata#admin/exchange/mailboxes('{mailbox_id}')/folders").into(),
    );
    body.insert("value".into(), value.into());
    if end < total {
        // Graph's next links repeat the query and percent-encode the mailbox id.
        let next = format!(
            "{graph_url}/admin/exchange/mailboxes/{}/{path}?{}",
            utf8_percent_encode(mailbox_id, PATH_SEGMENT),
            options.next_query(&query::FOLDERS, page_size, end as u64),
        );
        body.insert("@odata.nextLink".into(), next.into());
    }
    Ok(graph_json(StatusCode::OK, &Value::Object(body)))
}

/// A folder by id or case-insensitive well-known name, or Graph's 404.
pub(crate) fn find_folder<'a>(
    context: &GraphContext,
    mailbox: &'a Mailbox,
    id_or_name: &str,
) -> Result<&'a Folder, GraphError> {
    mailbox
        .folder_by_id(id_or_name)
        .or_else(|| mailbox.well_known_folder(id_or_name))
        .ok_or_else(|| {
            context.error(
                StatusCode::NOT_FOUND,
                "ErrorItemNotFound",
                "The specified object was not found in the store.",
            )
        })
}

/// `GET /admin/exchange/mailboxes/{mailboxId}/folders/{folderIdOrWellKnownName}`.
async fn get_folder(
    State(shared): State<Arc<Shared>>,
    Extension(context): Extension<GraphContext>,
    Path((mailbox_id, folder)): Path<(String, String)>,
) -> GraphResult {
    let graph_url = shared.graph_url();
    let inner = shared.lock();
    let mailbox = inner
        .mailbox(&mailbox_id)
        .ok_or_else(|| unknown_mailbox(&context, &mailbox_id))?;
    let found = find_folder(&context, mailbox, &folder)?;
    let mut body = folder_json(&graph_url, mailbox, found);
    body.as_object_mut()
        .expect("folder_json builds an object")
        .insert(
            "@odata.context".into(),
            format!(
                "{graph_url}/$metadata#admin/exchange/mailboxes('{mailbox_id}')/folders/$entity"
            )
            .into(),
        );
    Ok(graph_json(StatusCode::OK, &body))
}

fn folder_json(graph_url: &str, mailbox: &Mailbox, folder: &Folder) -> Value {
    json!({
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_folder_id,
        "parentMailboxUrl": format!("{graph_url}/admin/exchange/mailboxes/{}", mailbox.id),
        "childFolderCount": mailbox.child_count(&folder.id),
        "totalItemCount": mailbox.item_count(&folder.id),
        "type": folder.class,
        "wellKnownName": folder.well_known_name,
    })
}

/// Graph's answer for a mailbox id it does not know. The real code is undocumented; Exchange's
/// `ErrorInvalidMailbox` family is the closest documented vocabulary, and 404 says "not there"
/// without suggesting the request itself was malformed.
pub(crate) fn unknown_mailbox(context: &GraphContext, mailbox_id: &str) -> GraphError {
    context.error(
        StatusCode::NOT_FOUND,
        "ErrorInvalidMailbox",
        format!("The mailbox '{mailbox_id}' was not found."),
    )
}

/// Fallback for any path no route matches (inside `/v1.0` and on the rest of the origin).
pub(crate) async fn unknown_resource(
    State(shared): State<Arc<Shared>>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    uri: Uri,
) -> GraphError {
    GraphContext::new(&request_id, &headers, shared.clock.wall()).error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "No resource was found matching the request URI '{}'.",
            uri.path()
        ),
    )
}

/// Fallback for a known path with the wrong method.
pub(crate) async fn method_not_allowed(
    State(shared): State<Arc<Shared>>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    method: Method,
) -> GraphError {
    GraphContext::new(&request_id, &headers, shared.clock.wall()).error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        format!("Specified HTTP method '{method}' is not allowed for the request target."),
    )
}

pub(crate) fn graph_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(GRAPH_JSON))],
        body.to_string(),
    )
        .into_response()
}

/// RFC 3339 in UTC with seven fractional digits, as Graph writes `expirationDateTime`.
pub(crate) fn seven_digit_timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    // Leap-second nanoseconds run past 999,999,999; clamp rather than print eight digits.
    let ticks = (at.timestamp_subsec_nanos() / 100).min(9_999_999);
    format!("{}.{ticks:07}Z", at.format("%Y-%m-%dT%H:%M:%S"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_have_seven_fractional_digits() {
        let at = chrono::Utc
            .with_ymd_and_hms(2024, 10, 17, 19, 0, 48)
            .unwrap()
            + chrono::Duration::nanoseconds(105_290_600);
        assert_eq!(seven_digit_timestamp(at), "2024-10-17T19:00:48.1052906Z");
    }

    #[test]
    fn the_item_calls_are_told_apart_by_method_and_path() {
        let mailbox = "/admin/exchange/mailboxes/MBX%3Ae0643f21%40a7809c93";
        let cases = [
            (
                Method::POST,
                format!("/v1.0{mailbox}/exportItems"),
                Some(Call::Export),
            ),
            (Method::GET, format!("{mailbox}/exportItems"), None),
            (
                Method::GET,
                format!("{mailbox}/folders/inbox/items"),
                Some(Call::ListItems),
            ),
            (
                Method::GET,
                format!("{mailbox}/folders/inbox/items/A%2Fb"),
                Some(Call::GetItem),
            ),
            (
                Method::DELETE,
                format!("{mailbox}/folders/inbox/items/A%2Fb"),
                Some(Call::DeleteItem),
            ),
            (Method::GET, format!("{mailbox}/folders/inbox"), None),
            (
                Method::GET,
                "/users/adele@contoso.com/settings/exchange".to_owned(),
                None,
            ),
        ];
        for (method, path, call) in cases {
            assert_eq!(Call::of(&method, &path), call, "{method} {path}");
        }
    }
}
