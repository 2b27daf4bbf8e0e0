//! A folder's items on Graph: the listing and its paging, `$top`, `$select` and date `$filter`s, one
//! item's metadata, and soft and hard deletes with their holds.

use std::time::Duration;

use exchange_simulator::{SimulatorConfig, DEMO};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    create_body, graph_error, item_stream, item_stream_of_class, items_path, spawn,
    spawn_importing, spawn_with, update_body, TestSim,
};

/// Follows next links from `path` to the end; returns every entry and the number of pages.
async fn list_all(t: &TestSim, token: &str, path: &str) -> (Vec<Value>, usize) {
    let mut url = format!("{}{path}", t.sim.graph_url());
    let mut entries = Vec::new();
    let mut pages = 0;
    loop {
        let response = t.http.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let page: Value = response.json().await.unwrap();
        pages += 1;
        entries.extend(page["value"].as_array().unwrap().iter().cloned());
        match page["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&t.sim.graph_url()), "{next}");
                url = next.to_owned();
            }
            None => return (entries, pages),
        }
    }
}

fn ids(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|entry| entry["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `path` with `query`'s value percent-encoded.
fn with_query(path: &str, name: &str, value: &str) -> String {
    let value: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    format!("{path}?{name}={value}")
}

#[tokio::test]
async fn next_links_visit_every_item_once_oldest_first_in_pages_of_top_or_ten() {
    let t = spawn().await;
    let token = t.token().await;
    let mut seeded = Vec::new();
    for n in 0..25 {
        seeded.push(
            t.sim
                .put_item(DEMO.mailbox_id, "inbox", item_stream(&format!("item {n}"))),
        );
        t.sim.advance(Duration::from_secs(1));
    }
    // An item elsewhere is not listed.
    t.sim
        .put_item(DEMO.mailbox_id, "sentitems", item_stream("sent"));
    let expected: Vec<String> = seeded.iter().map(|item| item.item_id.clone()).collect();
    let path = items_path(DEMO.mailbox_id, "inbox", None);

    let cases = [
        (path.clone(), 3),
        (format!("{path}?$top=7"), 4),
        (format!("{path}?$top=25"), 1),
    ];
    for (first, pages) in cases {
        let (entries, visited) = list_all(&t, &token, &first).await;
        assert_eq!(ids(&entries), expected, "{first}");
        assert_eq!(visited, pages, "{first}");
    }
    let (entries, _) = list_all(&t, &token, &format!("{path}?$top=1000")).await;
    assert_eq!(entries.len(), 25);
}

#[tokio::test]
async fn deleting_a_pages_items_before_following_its_next_link_skips_nothing() {
    let t = spawn().await;
    let token = t.token().await;
    let seeded: Vec<String> = (0..5)
        .map(|n| {
            t.sim
                .put_item(DEMO.mailbox_id, "inbox", item_stream(&n.to_string()))
                .item_id
        })
        .collect();
    let mut url = format!(
        "{}{}?$top=2",
        t.sim.graph_url(),
        items_path(DEMO.mailbox_id, "inbox", None)
    );
    let mut visited = Vec::new();
    loop {
        let page: Value = t
            .http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // Export, then delete: what a move out of the mailbox does.
        for id in ids(page["value"].as_array().unwrap()) {
            let path = format!(
                "{}?disposalType=hardDelete",
                items_path(DEMO.mailbox_id, "inbox", Some(&id))
            );
            assert_eq!(
                t.graph_delete(&token, &path).await.status(),
                StatusCode::NO_CONTENT
            );
            visited.push(id);
        }
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(visited, seeded);
    assert!(t.sim.items(DEMO.mailbox_id).is_empty());
}

#[tokio::test]
async fn an_entry_has_graphs_fields_with_the_message_class_size_and_seven_digit_dates() {
    let t = spawn().await;
    let token = t.token().await;
    let data = item_stream_of_class("IPM.Appointment", "meeting");
    let item = t.sim.put_item(DEMO.mailbox_id, "inbox", data.clone());
    let plain = t.sim.put_item(DEMO.mailbox_id, "inbox", item_stream("x"));
    let (entries, _) = list_all(&t, &token, &items_path(DEMO.mailbox_id, "inbox", None)).await;
    let created = entries[0]["createdDateTime"].as_str().unwrap().to_owned();
    assert_eq!(
        entries[0],
        json!({
            "@odata.etag": format!("W/\"{}\"", item.change_key),
            "id": item.item_id,
            "changeKey": item.change_key,
            "type": "IPM.Appointment",
            "size": data.len(),
            "createdDateTime": created,
            "lastModifiedDateTime": created,
            "categories": [],
        })
    );
    assert_eq!(created.rsplit('.').next().unwrap().len(), 8, "{created}");
    let parsed = chrono::DateTime::parse_from_rfc3339(&created).unwrap();
    assert_eq!(parsed, item.created_at);
    // A stream that names no class is a plain message.
    assert_eq!(entries[1]["id"], plain.item_id.as_str());
    assert_eq!(entries[1]["type"], "IPM.Note");

    let path = format!(
        "{}?$select=size,type",
        items_path(DEMO.mailbox_id, "inbox", None)
    );
    let (selected, _) = list_all(&t, &token, &path).await;
    let keys: Vec<&String> = selected[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["@odata.etag", "id", "size", "type"]);
}

#[tokio::test]
async fn a_created_date_time_filter_keeps_the_items_from_that_date_on_across_pages() {
    let t = spawn().await;
    for n in 0..3 {
        t.sim
            .put_item(DEMO.mailbox_id, "inbox", item_stream(&format!("old {n}")));
    }
    t.sim.advance(Duration::from_secs(3600));
    // Taken after the hour, which outlives a token.
    let token = t.token().await;
    let newer: Vec<String> = (0..3)
        .map(|n| {
            t.sim
                .put_item(DEMO.mailbox_id, "inbox", item_stream(&format!("new {n}")))
                .item_id
        })
        .collect();
    let (all, _) = list_all(&t, &token, &items_path(DEMO.mailbox_id, "inbox", None)).await;
    let boundary = all[3]["createdDateTime"].as_str().unwrap().to_owned();
    let path = items_path(DEMO.mailbox_id, "inbox", None);

    let cases = [
        (format!("createdDateTime ge {boundary}"), newer.clone()),
        (
            format!("createdDateTime gt {boundary}"),
            newer[1..].to_vec(),
        ),
        (format!("createdDateTime lt {boundary}"), ids(&all[..3])),
        (
            format!("createdDateTime ge {boundary} and createdDateTime le {boundary}"),
            newer[..1].to_vec(),
        ),
        ("createdDateTime ge 2999-01-01T00:00:00Z".to_owned(), vec![]),
    ];
    for (filter, expected) in cases {
        // A page of one, so that the filter must survive in the next links.
        let first = format!("{}&$top=1", with_query(&path, "$filter", &filter));
        let (entries, _) = list_all(&t, &token, &first).await;
        assert_eq!(ids(&entries), expected, "{filter}");
    }
}

#[tokio::test]
async fn an_update_keeps_the_created_date_and_moves_the_last_modified_one() {
    let (t, url, body) = spawn_importing().await;
    let token = t.token().await;
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let (_, created) = t.import(&url, &body).await;
    t.sim.advance(Duration::from_secs(60));
    let (status, updated) = t
        .import(
            &url,
            &update_body(&created, &inbox, &item_stream("longer data")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let id = updated["itemId"].as_str().unwrap();
    let item = t.sim.item(DEMO.mailbox_id, id).unwrap();
    assert_eq!(item.version, 2);
    assert_eq!((item.last_modified_at - item.created_at).num_seconds(), 60);
    let path = with_query(
        &items_path(DEMO.mailbox_id, "inbox", None),
        "$filter",
        &format!(
            "lastModifiedDateTime gt {}",
            (item.created_at + chrono::Duration::seconds(1)).to_rfc3339()
        ),
    );
    let (entries, _) = list_all(&t, &token, &path).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["changeKey"], updated["changeKey"]);
    assert_eq!(entries[0]["size"], item_stream("longer data").len());
}

#[tokio::test]
async fn listing_queries_the_simulator_does_not_understand_are_refused_with_400() {
    let t = spawn().await;
    let token = t.token().await;
    let path = items_path(DEMO.mailbox_id, "inbox", None);
    let folders_token = "Zm9sZGVyczoxMA"; // base64url of "folders:10": another listing's token
    let cases = [
        ("$top", "0", "BadRequest"),
        ("$top", "1001", "BadRequest"),
        ("$select", "subject", "BadRequest"),
        ("$orderby", "createdDateTime desc", "BadRequest"),
        ("$skiptoken", folders_token, "BadRequest"),
        ("$filter", "subject eq 'x'", "ErrorInvalidUrlQueryFilter"),
        (
            "$filter",
            "createdDateTime eq 2026-01-01T00:00:00Z",
            "ErrorInvalidUrlQueryFilter",
        ),
        (
            "$filter",
            "createdDateTime ge 2026-01-01",
            "ErrorInvalidUrlQueryFilter",
        ),
        ("$filter", "size gt 100", "ErrorInvalidUrlQueryFilter"),
    ];
    for (name, value, code) in cases {
        let response = t.graph_get(&token, &with_query(&path, name, value)).await;
        assert_eq!(
            graph_error(response, StatusCode::BAD_REQUEST).await,
            code,
            "{name}={value}"
        );
    }
}

#[tokio::test]
async fn items_are_listed_by_folder_id_or_well_known_name_and_unknown_ones_are_404() {
    let t = spawn().await;
    let token = t.token().await;
    let item = t.sim.put_item(DEMO.mailbox_id, "inbox", item_stream("x"));
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    for folder in [inbox.as_str(), "Inbox", "INBOX"] {
        let (entries, _) = list_all(&t, &token, &items_path(DEMO.mailbox_id, folder, None)).await;
        assert_eq!(ids(&entries), [item.item_id.as_str()], "{folder}");
    }
    let cases = [
        (
            items_path(DEMO.mailbox_id, "nosuchfolder", None),
            "ErrorItemNotFound",
        ),
        (
            items_path("MBX:nobody@nowhere", "inbox", None),
            "ErrorInvalidMailbox",
        ),
    ];
    for (path, code) in cases {
        let response = t.graph_get(&token, &path).await;
        assert_eq!(
            graph_error(response, StatusCode::NOT_FOUND).await,
            code,
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_page_size_outside_one_to_a_thousand_is_refused_at_start_and_another_is_the_default() {
    for size in [0, 1001] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = SimulatorConfig {
            item_page_size: size,
            ..SimulatorConfig::default()
        };
        let error = exchange_simulator::Simulator::start(listener, config)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{size}");
        assert!(error.to_string().contains("item_page_size"), "{error}");
    }
    let t = spawn_with(SimulatorConfig {
        item_page_size: 2,
        ..SimulatorConfig::default()
    })
    .await;
    let token = t.token().await;
    for n in 0..5 {
        t.sim
            .put_item(DEMO.mailbox_id, "inbox", item_stream(&n.to_string()));
    }
    let (entries, pages) = list_all(&t, &token, &items_path(DEMO.mailbox_id, "inbox", None)).await;
    assert_eq!((entries.len(), pages), (5, 3));
}

#[tokio::test]
async fn one_items_metadata_is_read_in_its_own_folder_only() {
    let t = spawn().await;
    let token = t.token().await;
    let item = t.sim.put_item(DEMO.mailbox_id, "inbox", item_stream("x"));
    let response = t
        .graph_get(
            &token,
            &items_path(DEMO.mailbox_id, "inbox", Some(&item.item_id)),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let entry: Value = response.json().await.unwrap();
    assert_eq!(entry["id"], item.item_id.as_str());
    assert_eq!(entry["changeKey"], item.change_key.as_str());
    assert_eq!(entry["size"], item.size);
    assert_eq!(entry["type"], "IPM.Note");
    assert!(entry["@odata.context"].is_string());

    let selected: Value = t
        .graph_get(
            &token,
            &format!(
                "{}?$select=changeKey",
                items_path(DEMO.mailbox_id, "inbox", Some(&item.item_id))
            ),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(selected.get("size").is_none());
    assert_eq!(selected["changeKey"], item.change_key.as_str());

    let cases = [
        (
            items_path(DEMO.mailbox_id, "sentitems", Some(&item.item_id)),
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
        ),
        (
            items_path(DEMO.mailbox_id, "inbox", Some("AAAAAAAAAAAAAAAAAAAAAA==")),
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
        ),
        (
            format!(
                "{}?$top=1",
                items_path(DEMO.mailbox_id, "inbox", Some(&item.item_id))
            ),
            StatusCode::BAD_REQUEST,
            "BadRequest",
        ),
    ];
    for (path, status, code) in cases {
        let response = t.graph_get(&token, &path).await;
        assert_eq!(graph_error(response, status).await, code, "{path}");
    }
    assert_eq!(t.sim.counters().item_get_requests, 5);
}

#[tokio::test]
async fn a_soft_delete_moves_the_item_to_recoverable_items_keeping_its_id() {
    let t = spawn().await;
    let token = t.token().await;
    let item = t.sim.put_item(DEMO.mailbox_id, "inbox", item_stream("x"));
    t.sim.advance(Duration::from_secs(5));
    let path = items_path(DEMO.mailbox_id, "inbox", Some(&item.item_id));
    let response = t
        .graph_delete(&token, &format!("{path}?disposalType=softDelete"))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.bytes().await.unwrap().is_empty());

    let deletions = t
        .sim
        .folder_id(DEMO.mailbox_id, "recoverableitemsdeletions")
        .unwrap();
    let moved = t.sim.item(DEMO.mailbox_id, &item.item_id).unwrap();
    assert_eq!(moved.folder_id, deletions);
    assert_ne!(moved.change_key, item.change_key);
    assert_eq!(moved.created_at, item.created_at);
    assert_eq!((moved.last_modified_at - item.created_at).num_seconds(), 5);
    let (inbox, _) = list_all(&t, &token, &items_path(DEMO.mailbox_id, "inbox", None)).await;
    assert!(inbox.is_empty());
    let (recoverable, _) = list_all(
        &t,
        &token,
        &items_path(DEMO.mailbox_id, "recoverableitemsdeletions", None),
    )
    .await;
    assert_eq!(ids(&recoverable), [item.item_id.as_str()]);
    // Gone from the inbox, so a second delete there finds nothing; it is still there to export.
    let again = t
        .graph_delete(&token, &format!("{path}?disposalType=softDelete"))
        .await;
    assert_eq!(
        graph_error(again, StatusCode::NOT_FOUND).await,
        "ErrorItemNotFound"
    );
    let exported: Value = t
        .export(&token, DEMO.mailbox_id, &[&item.item_id])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(exported["value"][0]["changeKey"], moved.change_key.as_str());

    let counters = t.sim.counters();
    assert_eq!(
        (counters.items_deleted, counters.items_hard_deleted),
        (1, 0)
    );
    assert_eq!(counters.item_delete_requests, 2);
}

#[tokio::test]
async fn a_hard_delete_removes_the_item_and_its_data_no_longer_counts_as_a_duplicate() {
    let (t, url, body) = spawn_importing().await;
    let token = t.token().await;
    let (_, created) = t.import(&url, &body).await;
    let id = created["itemId"].as_str().unwrap();
    let response = t
        .graph_delete(
            &token,
            &format!(
                "{}?disposalType=hardDelete",
                items_path(DEMO.mailbox_id, "inbox", Some(id))
            ),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(t.sim.item(DEMO.mailbox_id, id).is_none());
    let exported: Value = t
        .export(&token, DEMO.mailbox_id, &[id])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(exported["value"][0]["error"]["code"], "ErrorItemNotFound");

    // The same data again is no duplicate: the mailbox no longer holds it.
    assert_eq!(t.import(&url, &body).await.0, StatusCode::OK);
    let counters = t.sim.counters();
    assert_eq!(counters.duplicate_items, 0);
    assert_eq!(
        (counters.items_deleted, counters.items_hard_deleted),
        (1, 1)
    );

    // A soft-deleted item is still held by the mailbox: its data does count.
    let (_, second) = t
        .import(
            &url,
            &create_body(
                &t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap(),
                &item_stream("y"),
            ),
        )
        .await;
    let soft = t
        .graph_delete(
            &token,
            &format!(
                "{}?disposalType=softDelete",
                items_path(
                    DEMO.mailbox_id,
                    "inbox",
                    Some(second["itemId"].as_str().unwrap())
                )
            ),
        )
        .await;
    assert_eq!(soft.status(), StatusCode::NO_CONTENT);
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    assert_eq!(
        t.import(&url, &create_body(&inbox, &item_stream("y")))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(t.sim.counters().duplicate_items, 1);
}

#[tokio::test]
async fn a_delete_without_one_valid_disposal_type_is_refused_with_400_and_deletes_nothing() {
    let t = spawn().await;
    let token = t.token().await;
    let item = t.sim.put_item(DEMO.mailbox_id, "inbox", item_stream("x"));
    let path = items_path(DEMO.mailbox_id, "inbox", Some(&item.item_id));
    for query in [
        "",
        "?disposalType=",
        "?disposalType=SoftDelete",
        "?disposalType=moveToDeletedItems",
        "?disposaltype=hardDelete",
        "?disposalType=softDelete&disposalType=hardDelete",
    ] {
        let response = t.graph_delete(&token, &format!("{path}{query}")).await;
        assert_eq!(
            graph_error(response, StatusCode::BAD_REQUEST).await,
            "ErrorInvalidRequest",
            "{query:?}"
        );
    }
    let unchanged = t.sim.item(DEMO.mailbox_id, &item.item_id).unwrap();
    assert_eq!(unchanged.change_key, item.change_key);
    assert_eq!(t.sim.counters().items_deleted, 0);
}

#[tokio::test]
async fn deleting_an_item_that_is_not_in_the_folder_is_404() {
    let t = spawn().await;
    let token = t.token().await;
    let item = t.sim.put_item(DEMO.mailbox_id, "inbox", item_stream("x"));
    for (folder, item_id) in [
        ("sentitems", item.item_id.as_str()),
        ("inbox", "AAAAAAAAAAAAAAAAAAAAAA=="),
        ("nosuchfolder", item.item_id.as_str()),
    ] {
        for disposal in ["softDelete", "hardDelete"] {
            let response = t
                .graph_delete(
                    &token,
                    &format!(
                        "{}?disposalType={disposal}",
                        items_path(DEMO.mailbox_id, folder, Some(item_id))
                    ),
                )
                .await;
            assert_eq!(
                graph_error(response, StatusCode::NOT_FOUND).await,
                "ErrorItemNotFound",
                "{folder} {disposal}"
            );
        }
    }
    assert!(t.sim.item(DEMO.mailbox_id, &item.item_id).is_some());
}

#[tokio::test]
async fn an_item_under_hold_is_not_hard_deleted_but_can_be_soft_deleted() {
    let t = spawn().await;
    let token = t.token().await;
    let item = t.sim.put_item(DEMO.mailbox_id, "inbox", item_stream("x"));
    t.sim.place_hold(DEMO.mailbox_id, &item.item_id);
    let delete = |folder: &'static str, disposal: &'static str| {
        let path = format!(
            "{}?disposalType={disposal}",
            items_path(DEMO.mailbox_id, folder, Some(&item.item_id))
        );
        let t = &t;
        let token = token.clone();
        async move { t.graph_delete(&token, &path).await }
    };

    let refused = delete("inbox", "hardDelete").await;
    assert_eq!(
        graph_error(refused, StatusCode::FORBIDDEN).await,
        "ErrorAccessDenied"
    );
    assert_eq!(
        delete("inbox", "softDelete").await.status(),
        StatusCode::NO_CONTENT
    );
    // Still held in recoverable items.
    let refused = delete("recoverableitemsdeletions", "hardDelete").await;
    assert_eq!(
        graph_error(refused, StatusCode::FORBIDDEN).await,
        "ErrorAccessDenied"
    );
    let held = t.sim.item(DEMO.mailbox_id, &item.item_id).unwrap();
    assert!(held.on_hold);
    let counters = t.sim.counters();
    assert_eq!(counters.hard_deletes_refused_on_hold, 2);
    assert_eq!(
        (counters.items_deleted, counters.items_hard_deleted),
        (1, 0)
    );
}
