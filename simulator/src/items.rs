//! Serves a folder's items: the listing `GET .../folders/{folderId}/items` (paged, with `$top`,
//! `$select` and a date `$filter`), one item's metadata `GET .../items/{itemId}`, and
//! `DELETE .../items/{itemId}?disposalType=softDelete|hardDelete`.
//!
//! Items are listed oldest first, in creation order. Their skiptokens name the last item served
//! rather than an offset, so that a client deleting the items of a page before it asks for the next
//! one (export, then delete) misses nothing; items created meanwhile show up on a later page.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Extension;
use percent_encoding::utf8_percent_encode;
use serde_json::{json, Map, Value};

use super::graph::{
    find_folder, graph_json, seven_digit_timestamp, unknown_mailbox, GraphContext, GraphError,
    GraphResult, PATH_SEGMENT,
};
use super::query::{self, Comparison, ListOptions};
use super::state::Shared;
use super::StoredItem;

/// The well-known folder a soft delete moves items to.
const DELETIONS: &str = "recoverableitemsdeletions";

/// `GET /admin/exchange/mailboxes/{mailboxId}/folders/{folderIdOrWellKnownName}/items`.
pub(crate) async fn list_items(
    State(shared): State<Arc<Shared>>,
    Extension(context): Extension<GraphContext>,
    Path((mailbox_id, folder)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> GraphResult {
    let options = ListOptions::parse(&context, query.as_deref().unwrap_or(""), &query::ITEMS)?;
    let graph_url = shared.graph_url();
    let inner = shared.lock();
    let mailbox = inner
        .mailbox(&mailbox_id)
        .ok_or_else(|| unknown_mailbox(&context, &mailbox_id))?;
    let folder = find_folder(&context, mailbox, &folder)?;
    let page_size = options.top.unwrap_or(inner.config.item_page_size);
    // Creation order is oldest first: the clock the dates come from only goes forward.
    let mut matching = mailbox.items.iter().filter(|item| {
        item.folder_id == folder.id
            && item.seq > options.skip
            && options.filter.iter().all(|c| holds(c, item))
    });
    let page: Vec<&StoredItem> = matching.by_ref().take(page_size).collect();
    let more = matching.next().is_some();
    let value: Vec<Value> = page
        .iter()
        .map(|item| options.select(item_json(item)))
        .collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        format!(
            "{graph_url}/$metadata#admin/exchange/mailboxes('{mailbox_id}')/folders('{}')/items",
            folder.id
        )
        .into(),
    );
    body.insert("value".into(), value.into());
    if let (true, Some(last)) = (more, page.last()) {
        let next = format!(
            "{graph_url}/admin/exchange/mailboxes/{}/folders/{}/items?{}",
            utf8_percent_encode(&mailbox_id, PATH_SEGMENT),
            utf8_percent_encode(&folder.id, PATH_SEGMENT),
            options.next_query(&query::ITEMS, page_size, last.seq),
        );
        body.insert("@odata.nextLink".into(), next.into());
    }
    Ok(graph_json(StatusCode::OK, &Value::Object(body)))
}

/// `GET /admin/exchange/mailboxes/{mailboxId}/folders/{folderIdOrWellKnownName}/items/{itemId}`.
pub(crate) async fn get_item(
    State(shared): State<Arc<Shared>>,
    Extension(context): Extension<GraphContext>,
    Path((mailbox_id, folder, item_id)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> GraphResult {
    let options =
        ListOptions::parse_entity(&context, query.as_deref().unwrap_or(""), &query::ITEMS)?;
    let graph_url = shared.graph_url();
    let inner = shared.lock();
    let mailbox = inner
        .mailbox(&mailbox_id)
        .ok_or_else(|| unknown_mailbox(&context, &mailbox_id))?;
    let folder = find_folder(&context, mailbox, &folder)?;
    let item = mailbox
        .items
        .iter()
        .find(|item| item.item_id == item_id && item.folder_id == folder.id)
        .ok_or_else(|| item_not_found(&context))?;
    let mut body = options.select(item_json(item));
    body.as_object_mut()
        .expect("item_json builds an object")
        .insert(
            "@odata.context".into(),
            format!(
                "{graph_url}/$metadata#admin/exchange/mailboxes('{mailbox_id}')/folders('{}')/items/$entity",
                folder.id
            )
            .into(),
        );
    Ok(graph_json(StatusCode::OK, &body))
}

/// How a `DELETE` disposes of an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disposal {
    /// Moved to `recoverableitemsdeletions`, keeping its id.
    Soft,
    /// Removed for good, unless it is under hold.
    Hard,
}

/// `DELETE /admin/exchange/mailboxes/{mailboxId}/folders/{folderIdOrWellKnownName}/items/{itemId}?disposalType=...`.
///
/// A soft delete of an item already in `recoverableitemsdeletions` leaves it there (and still
/// answers `204`).
pub(crate) async fn delete_item(
    State(shared): State<Arc<Shared>>,
    Extension(context): Extension<GraphContext>,
    Path((mailbox_id, folder, item_id)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> GraphResult {
    let disposal = disposal(&context, query.as_deref().unwrap_or(""))?;
    let at = shared.clock.wall();
    let mut inner = shared.lock();
    let inner = &mut *inner;
    // Found among the mailboxes field by field, so that the counters stay reachable beside it.
    let mailbox = inner
        .mailboxes
        .iter_mut()
        .find(|mailbox| mailbox.id == mailbox_id)
        .ok_or_else(|| unknown_mailbox(&context, &mailbox_id))?;
    let folder_id = find_folder(&context, mailbox, &folder)?.id.clone();
    let index = mailbox
        .items
        .iter()
        .position(|item| item.item_id == item_id && item.folder_id == folder_id)
        .ok_or_else(|| item_not_found(&context))?;
    match disposal {
        Disposal::Soft => {
            let deletions = mailbox
                .well_known_folder(DELETIONS)
                .expect("every mailbox has the standard folders")
                .id
                .clone();
            if folder_id != deletions {
                mailbox.move_item(index, &deletions, at);
            }
        }
        Disposal::Hard => {
            if mailbox.items[index].on_hold {
                inner.counters.hard_deletes_refused_on_hold += 1;
                return Err(context.error(
                    StatusCode::FORBIDDEN,
                    "ErrorAccessDenied",
                    "The item is under a hold and cannot be permanently deleted.",
                ));
            }
            mailbox.remove_item(index);
            inner.counters.items_hard_deleted += 1;
        }
    }
    inner.counters.items_deleted += 1;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The required `disposalType` parameter: exactly one, `softDelete` or `hardDelete` (case-sensitive,
/// as Graph spells them).
fn disposal(context: &GraphContext, query: &str) -> Result<Disposal, GraphError> {
    let bad =
        |message: String| context.error(StatusCode::BAD_REQUEST, "ErrorInvalidRequest", message);
    let mut values = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| name == "disposalType")
        .map(|(_, value)| value);
    match (values.next(), values.next()) {
        (None, _) => Err(bad(
            "The disposalType parameter is required: softDelete or hardDelete.".to_owned(),
        )),
        (Some(_), Some(_)) => Err(bad(
            "The disposalType parameter was given more than once.".to_owned()
        )),
        (Some(value), None) => match value.as_ref() {
            "softDelete" => Ok(Disposal::Soft),
            "hardDelete" => Ok(Disposal::Hard),
            other => Err(bad(format!(
                "The disposalType '{other}' is not valid; expected softDelete or hardDelete."
            ))),
        },
    }
}

/// Whether `item` satisfies one comparison of a `$filter`.
fn holds(comparison: &Comparison, item: &StoredItem) -> bool {
    let date = match comparison.property {
        "createdDateTime" => item.created_at,
        "lastModifiedDateTime" => item.last_modified_at,
        other => unreachable!("query::ITEMS lets no other property into a filter: {other}"),
    };
    comparison.holds(date)
}

/// A `mailboxItem` as Graph lists it.
fn item_json(item: &StoredItem) -> Value {
    json!({
        "@odata.etag": format!("W/\"{}\"", item.change_key),
        "id": item.item_id,
        "changeKey": item.change_key,
        "type": item.message_class,
        "size": item.size,
        "createdDateTime": seven_digit_timestamp(item.created_at),
        "lastModifiedDateTime": seven_digit_timestamp(item.last_modified_at),
        // Categories are not simulated.
        "categories": [],
    })
}

/// Graph's 404 for an item that is not in the folder named.
fn item_not_found(context: &GraphContext) -> GraphError {
    context.error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}
