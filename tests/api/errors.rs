//! Every bad input gets a specific problem, and local checks cost no Graph call.

use exchange_simulator::DEMO;

use crate::helpers::{chunked, item, problem, spawn_app, spawn_app_with, AppOptions};

#[tokio::test]
async fn malformed_ids_are_rejected_with_400_before_any_graph_call() {
    let app = spawn_app().await;
    for (mailbox, folder, code) in [
        ("not-an-address", "inbox", "invalid_mailbox"),
        ("MBX:zz@yy", "inbox", "invalid_mailbox"),
        ("a\"b@contoso.com", "inbox", "invalid_mailbox"),
        ("adele@contoso.com/../x", "inbox", "invalid_mailbox"),
        (DEMO.mailbox_address, "in box", "invalid_folder"),
        (DEMO.mailbox_address, "a..b", "invalid_folder"),
        (DEMO.mailbox_address, "inbox\u{7}", "invalid_folder"),
        (DEMO.mailbox_address, &"A".repeat(600), "invalid_folder"),
    ] {
        problem(app.create(mailbox, folder, item("x")).await, 400, code).await;
    }
    let bad_item = app
        .update(DEMO.mailbox_address, "inbox", "a b", "CQAAAA==", item("x"))
        .await;
    problem(bad_item, 400, "invalid_item_id").await;
    assert_eq!(app.counters().graph_requests, 0);
    assert_eq!(app.counters().tokens_issued, 0);
}

#[tokio::test]
async fn update_without_if_match_is_rejected_with_428() {
    let app = spawn_app().await;
    let response = app
        .client
        .put(app.url(&format!(
            "/v1/mailboxes/{}/folders/inbox/items/AAMkAGI2TG93AAA%3D",
            DEMO.mailbox_address
        )))
        .header("content-type", "application/octet-stream")
        .body(item("x"))
        .send()
        .await
        .unwrap();
    problem(response, 428, "if_match_required").await;
    for bad in ["*", "W/\"CQAAAA==\"", "CQAAAA==", "\"a b\""] {
        let response = app
            .client
            .put(app.url(&format!(
                "/v1/mailboxes/{}/folders/inbox/items/AAMkAGI2TG93AAA%3D",
                DEMO.mailbox_address
            )))
            .header("content-type", "application/octet-stream")
            .header("if-match", bad)
            .body(item("x"))
            .send()
            .await
            .unwrap();
        problem(response, 400, "invalid_if_match").await;
    }
    assert_eq!(app.counters().graph_requests, 0);
}

#[tokio::test]
async fn a_wrong_content_type_is_rejected_with_415() {
    let app = spawn_app().await;
    for content_type in [None, Some("application/json"), Some("text/plain")] {
        let mut request = app
            .client
            .post(app.inbox_items_url(DEMO.mailbox_address))
            .body(item("x"));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        problem(request.send().await.unwrap(), 415, "unsupported_media_type").await;
    }
    let json_route = app
        .client
        .post(app.url(&format!(
            "/v1/mailboxes/{}/importItem",
            DEMO.mailbox_address
        )))
        .header("content-type", "application/octet-stream")
        .body("{}")
        .send()
        .await
        .unwrap();
    problem(json_route, 415, "unsupported_media_type").await;
    assert_eq!(app.counters().graph_requests, 0);
}

#[tokio::test]
async fn an_item_over_the_limit_is_rejected_with_413_declared_or_streamed() {
    let app = spawn_app_with(AppOptions {
        max_item_bytes: 4096,
        ..AppOptions::default()
    })
    .await;
    let big = mailbox_gateway::fts::synthetic_item("big", 10_000);
    let body = problem(
        app.create(DEMO.mailbox_address, "inbox", big.clone()).await,
        413,
        "item_too_large",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("4096"));

    // Chunked, so no Content-Length announces the size: the limit is enforced while reading.
    let response = app
        .client
        .post(app.inbox_items_url(DEMO.mailbox_address))
        .header("content-type", "application/octet-stream")
        .body(chunked(&big, 1000))
        .send()
        .await
        .unwrap();
    problem(response, 413, "item_too_large").await;
    assert_eq!(app.counters().graph_requests, 0);
}

#[tokio::test]
async fn a_malformed_item_stream_is_rejected_with_422_and_its_offset() {
    let app = spawn_app().await;
    let mut truncated = item("x");
    let cut = truncated.len() - 3;
    truncated.truncate(cut);
    let body = problem(
        app.create(DEMO.mailbox_address, "inbox", truncated).await,
        422,
        "invalid_item_stream",
    )
    .await;
    assert_eq!(body["offset"], 62);
    assert!(
        body["detail"].as_str().unwrap().contains("at byte 62"),
        "{body}"
    );

    let empty = problem(
        app.create(DEMO.mailbox_address, "inbox", Vec::new()).await,
        422,
        "invalid_item_stream",
    )
    .await;
    assert_eq!(empty["offset"], 0);
    assert_eq!(app.counters().graph_requests, 0);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_problems_too() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/v2/nothing")).send().await.unwrap();
    problem(response, 404, "route_not_found").await;
    let response = app.client.delete(app.url("/healthz")).send().await.unwrap();
    problem(response, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn unknown_mailboxes_and_folders_are_404() {
    let app = spawn_app().await;
    problem(
        app.create("nobody@contoso.com", "inbox", item("x")).await,
        404,
        "mailbox_not_found",
    )
    .await;
    let unknown_id =
        "MBX:00000000-0000-0000-0000-000000000000@00000000-0000-0000-0000-000000000000";
    problem(
        app.create(unknown_id, "inbox", item("x")).await,
        404,
        "mailbox_not_found",
    )
    .await;
    problem(
        app.create(DEMO.mailbox_address, "AAMkAGI2TG93AAA=", item("x"))
            .await,
        404,
        "folder_not_found",
    )
    .await;
    let list = app
        .client
        .get(app.url("/v1/mailboxes/nobody@contoso.com/folders"))
        .send()
        .await
        .unwrap();
    problem(list, 404, "mailbox_not_found").await;
}

#[tokio::test]
async fn the_request_id_is_taken_from_the_client_when_sane_and_echoed() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "restore-job-42.item-7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "restore-job-42.item-7");

    let response = app
        .client
        .get(app.url("/nowhere"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let body = problem(response, 404, "route_not_found").await;
    assert_eq!(body["requestId"], id.as_str());
}

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_is_400_invalid_path() {
    let app = spawn_app().await;
    let listing = app
        .client
        .get(app.url("/v1/mailboxes/%FF/folders"))
        .send()
        .await
        .unwrap();
    problem(listing, 400, "invalid_path").await;
    let create = app
        .client
        .post(app.url("/v1/mailboxes/adele@contoso.com/folders/%C0%AF/items"))
        .header("content-type", "application/octet-stream")
        .body(item("x"))
        .send()
        .await
        .unwrap();
    problem(create, 400, "invalid_path").await;
    assert_eq!(app.counters().graph_requests, 0);
}

/// Mistakes a newcomer makes, each answered with what to do about it, and none costing a Graph call.
#[tokio::test]
async fn common_mistakes_get_problems_that_say_what_to_do() {
    let app = spawn_app().await;
    let detail = |body: serde_json::Value| body["detail"].as_str().unwrap().to_owned();

    // No Content-Type at all.
    let response = app
        .client
        .post(app.inbox_items_url(DEMO.mailbox_address))
        .body(item("x"))
        .send()
        .await
        .unwrap();
    let body = problem(response, 415, "unsupported_media_type").await;
    assert_eq!(
        detail(body),
        "this endpoint takes application/octet-stream, and the request had no Content-Type"
    );

    // An item id with an unencoded '/': more segments than any route.
    let response = app
        .client
        .put(app.url(&format!(
            "/v1/mailboxes/{}/folders/inbox/items/AAMkAD/x+y=",
            DEMO.mailbox_address
        )))
        .header("content-type", "application/octet-stream")
        .body(item("x"))
        .send()
        .await
        .unwrap();
    let body = problem(response, 404, "route_not_found").await;
    assert!(detail(body).contains("percent-encode each id"));

    // A folder named by its display name.
    let response = app
        .create(DEMO.mailbox_address, "My Projects", item("x"))
        .await;
    let body = problem(response, 400, "invalid_folder").await;
    assert!(detail(body).contains("display name"));

    // Base64 text sent to the raw route.
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, item("x"));
    let response = app
        .create(DEMO.mailbox_address, "inbox", encoded.into_bytes())
        .await;
    let body = problem(response, 422, "invalid_item_stream").await;
    assert!(detail(body).contains("base64 text"));

    // Line-wrapped base64 on the JSON route.
    let wrapped = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, item("x"))
        .as_bytes()
        .chunks(76)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let response = app
        .client
        .post(app.url(&format!(
            "/v1/mailboxes/{}/importItem",
            DEMO.mailbox_address
        )))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"FolderId": "inbox", "Mode": "create", "Data": wrapped}).to_string(),
        )
        .send()
        .await
        .unwrap();
    let body = problem(response, 400, "invalid_base64").await;
    assert!(detail(body).contains("base64 -w0"));

    assert_eq!(app.counters().graph_requests, 0);
}

#[tokio::test]
async fn an_answer_given_before_the_body_was_read_says_connection_close() {
    let app = spawn_app_with(AppOptions {
        max_item_bytes: 1024,
        ..AppOptions::default()
    })
    .await;
    // Refused on its Content-Length, before a byte of the body is read: the client must not reuse the
    // connection, which closes after this answer.
    let refused = app
        .create(DEMO.mailbox_id, "inbox", vec![0; 64 * 1024])
        .await;
    assert_eq!(refused.status(), 413);
    assert_eq!(refused.headers()["connection"], "close");
    // Read to its end: the connection stays open for the next request.
    let created = app
        .create(DEMO.mailbox_id, "inbox", item("kept alive"))
        .await;
    assert_eq!(created.status(), 201);
    assert!(created.headers().get("connection").is_none());
}
