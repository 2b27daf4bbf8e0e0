//! Creating and updating items, by raw stream and by Graph's JSON shape.

use base64::Engine;
use exchange_simulator::DEMO;

use crate::helpers::{encode, item, json, problem, spawn_app};

#[tokio::test]
async fn create_returns_201_with_ids_etag_and_location_and_stores_the_exact_stream() {
    let app = spawn_app().await;
    let stream = item("Quarterly report");
    let response = app
        .create(DEMO.mailbox_address, "inbox", stream.clone())
        .await;
    assert_eq!(response.status(), 201);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body = json(response).await;
    let (item_id, change_key) = (
        body["itemId"].as_str().unwrap(),
        body["changeKey"].as_str().unwrap(),
    );
    assert_eq!(etag, format!("\"{change_key}\""));
    assert_eq!(
        location,
        format!(
            "/v1/mailboxes/{}/folders/inbox/items/{}",
            DEMO.mailbox_address,
            encode(item_id)
        )
    );

    let stored = app.simulator.items(DEMO.mailbox_id);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].item_id, item_id);
    assert_eq!(stored[0].change_key, change_key);
    assert_eq!(stored[0].data.as_ref(), stream.as_slice());
    let inbox = app.simulator.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    assert_eq!(stored[0].folder_id, inbox);
}

#[tokio::test]
async fn update_with_if_match_replaces_the_item_and_returns_a_new_change_key() {
    let app = spawn_app().await;
    let created = json(app.create(DEMO.mailbox_address, "drafts", item("v1")).await).await;
    let (item_id, first_key) = (
        created["itemId"].as_str().unwrap(),
        created["changeKey"].as_str().unwrap(),
    );

    let response = app
        .update(
            DEMO.mailbox_address,
            "drafts",
            item_id,
            first_key,
            item("v2"),
        )
        .await;
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let updated = json(response).await;
    assert_eq!(updated["itemId"], item_id);
    let second_key = updated["changeKey"].as_str().unwrap();
    assert_ne!(second_key, first_key);
    assert_eq!(etag, format!("\"{second_key}\""));

    let stored = app.simulator.items(DEMO.mailbox_id);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].data.as_ref(), item("v2").as_slice());
    assert_eq!(stored[0].version, 2);
}

#[tokio::test]
async fn update_with_a_stale_change_key_is_rejected_with_412() {
    let app = spawn_app().await;
    let created = json(app.create(DEMO.mailbox_id, "inbox", item("v1")).await).await;
    let (item_id, stale) = (
        created["itemId"].as_str().unwrap(),
        created["changeKey"].as_str().unwrap(),
    );
    let first = app
        .update(DEMO.mailbox_id, "inbox", item_id, stale, item("v2"))
        .await;
    assert_eq!(first.status(), 200);

    let again = app
        .update(DEMO.mailbox_id, "inbox", item_id, stale, item("v3"))
        .await;
    problem(again, 412, "change_key_mismatch").await;
    assert_eq!(
        app.simulator.items(DEMO.mailbox_id)[0].data.as_ref(),
        item("v2").as_slice()
    );
}

#[tokio::test]
async fn update_of_an_unknown_item_is_404_item_not_found() {
    let app = spawn_app().await;
    let response = app
        .update(
            DEMO.mailbox_id,
            "inbox",
            "AAMkAGI2TG93AAA=",
            "CQAAABYAAAA=",
            item("x"),
        )
        .await;
    problem(response, 404, "item_not_found").await;
}

#[tokio::test]
async fn the_graph_shaped_json_endpoint_creates_and_updates() {
    let app = spawn_app().await;
    let inbox = app.simulator.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let b64 = |data: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(data);
    let url = app.url(&format!("/v1/mailboxes/{}/importItem", DEMO.mailbox_id));

    let response = app
        .client
        .post(&url)
        .json(
            &serde_json::json!({"FolderId": inbox, "Mode": "create", "Data": b64(item("json v1"))}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let created = json(response).await;

    let response = app
        .client
        .post(&url)
        .json(&serde_json::json!({
            "FolderId": inbox, "Mode": "update", "Data": b64(item("json v2")),
            "ItemId": created["itemId"], "ChangeKey": created["changeKey"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let updated = json(response).await;
    assert_eq!(updated["itemId"], created["itemId"]);
    assert_ne!(updated["changeKey"], created["changeKey"]);
    let stored = app.simulator.items(DEMO.mailbox_id);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].data.as_ref(), item("json v2").as_slice());
}

#[tokio::test]
async fn the_json_endpoint_refuses_malformed_requests_without_calling_graph() {
    let app = spawn_app().await;
    let url = app.url(&format!("/v1/mailboxes/{}/importItem", DEMO.mailbox_id));
    let good = base64::engine::general_purpose::STANDARD.encode(item("x"));
    let cases = [
        (
            serde_json::json!({"FolderId": "inbox", "Mode": "create", "Data": good, "Extra": 1}),
            400,
            "invalid_body",
        ),
        (
            serde_json::json!({"FolderId": "inbox", "Mode": "create"}),
            400,
            "invalid_body",
        ),
        (
            serde_json::json!({"FolderId": "inbox", "Mode": 7, "Data": good}),
            400,
            "invalid_body",
        ),
        (
            serde_json::json!({"FolderId": "inbox", "Mode": "merge", "Data": good}),
            400,
            "invalid_body",
        ),
        (
            serde_json::json!({"FolderId": "inbox", "Mode": "create", "Data": good, "ItemId": "AAA="}),
            400,
            "invalid_body",
        ),
        (
            serde_json::json!({"FolderId": "inbox", "Mode": "update", "Data": good, "ItemId": "AAA="}),
            400,
            "invalid_body",
        ),
        (
            serde_json::json!({"FolderId": "inbox", "Mode": "create", "Data": "not base64!"}),
            400,
            "invalid_base64",
        ),
        (
            serde_json::json!({"FolderId": "../x", "Mode": "create", "Data": good}),
            400,
            "invalid_folder",
        ),
        (
            serde_json::json!({"FolderId": "inbox", "Mode": "create", "Data": "AQAAAA=="}),
            422,
            "invalid_item_stream",
        ),
    ];
    for (body, status, code) in cases {
        let response = app.client.post(&url).json(&body).send().await.unwrap();
        problem(response, status, code).await;
    }
    let not_json = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    problem(not_json, 400, "invalid_body").await;
    assert_eq!(app.counters().graph_requests, 0);
    assert_eq!(app.counters().import_requests, 0);
}

#[tokio::test]
async fn a_multi_megabyte_item_arrives_intact() {
    let app = crate::helpers::spawn_app_with(crate::helpers::AppOptions {
        max_item_bytes: 8 * 1024 * 1024,
        ..Default::default()
    })
    .await;
    let stream = mailbox_gateway::fts::synthetic_item("big", 5 * 1024 * 1024 + 7);
    let response = app.create(DEMO.mailbox_id, "inbox", stream.clone()).await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        app.simulator.items(DEMO.mailbox_id)[0].data.as_ref(),
        stream.as_slice()
    );
}

#[tokio::test]
async fn the_gateway_finishes_and_returns_when_shut_down() {
    let app = spawn_app().await;
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("before"))
            .await
            .status(),
        201
    );
    let address = app.address.clone();
    app.stop().await.unwrap();
    let after = reqwest::Client::new()
        .get(format!("{address}/healthz"))
        .send()
        .await;
    assert!(after.is_err(), "the listener is closed after shutdown");
}
