//! Reading items back: one item's raw stream, listing a folder, Graph's exportItems shape, deleting,
//! and a whole folder as a tar stream; and the round trip from one mailbox to another.

use std::collections::BTreeMap;
use std::io::Read;

use base64::Engine;
use exchange_simulator::DEMO;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::helpers::{encode, item, json, problem, spawn_app, spawn_app_with, AppOptions, TestApp};

/// Creates `count` items in the demo inbox through the gateway; returns (itemId, changeKey, bytes).
async fn seed(app: &TestApp, mailbox: &str, count: usize) -> Vec<(String, String, Vec<u8>)> {
    let mut created = Vec::new();
    for n in 0..count {
        let stream = item(&format!("Seeded item {n}"));
        let response = app.create(mailbox, "inbox", stream.clone()).await;
        assert_eq!(response.status(), 201);
        let body = json(response).await;
        created.push((
            body["itemId"].as_str().unwrap().to_owned(),
            body["changeKey"].as_str().unwrap().to_owned(),
            stream,
        ));
    }
    created
}

fn item_url(app: &TestApp, mailbox: &str, item_id: &str) -> String {
    app.url(&format!(
        "/v1/mailboxes/{}/folders/inbox/items/{}",
        encode(mailbox),
        encode(item_id)
    ))
}

#[tokio::test]
async fn an_item_reads_back_as_its_exact_stream_with_its_change_key() {
    let app = spawn_app().await;
    let (item_id, change_key, stream) = seed(&app, DEMO.mailbox_address, 1).await.remove(0);

    let response = app
        .client
        .get(item_url(&app, DEMO.mailbox_address, &item_id))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(
        response.headers()["etag"],
        format!("\"{change_key}\"").as_str()
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), stream.as_slice());

    // The current change key: 304 without the bytes.
    let response = app
        .client
        .get(item_url(&app, DEMO.mailbox_address, &item_id))
        .header("if-none-match", format!("\"{change_key}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    assert_eq!(
        response.headers()["etag"],
        format!("\"{change_key}\"").as_str()
    );

    // After an update the old change key is stale: the new bytes come back.
    let updated = item("Updated subject");
    let answer = app
        .update(
            DEMO.mailbox_address,
            "inbox",
            &item_id,
            &change_key,
            updated.clone(),
        )
        .await;
    assert_eq!(answer.status(), 200);
    let response = app
        .client
        .get(item_url(&app, DEMO.mailbox_address, &item_id))
        .header("if-none-match", format!("\"{change_key}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_ne!(
        response.headers()["etag"],
        format!("\"{change_key}\"").as_str()
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), updated.as_slice());
}

#[tokio::test]
async fn a_missing_item_is_404_and_bad_input_costs_no_graph_call() {
    let app = spawn_app().await;
    seed(&app, DEMO.mailbox_id, 1).await;
    let response = app
        .client
        .get(item_url(&app, DEMO.mailbox_id, "AAAAAAAAAAAAAAAAAAAAAA=="))
        .send()
        .await
        .unwrap();
    problem(response, 404, "item_not_found").await;

    let before = app.counters().graph_requests;
    let inbox = format!(
        "/v1/mailboxes/{}/folders/inbox/items",
        encode(DEMO.mailbox_id)
    );
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            app.client.get(app.url(&format!("{inbox}?pageSize=5000"))),
            400,
            "invalid_query",
        ),
        (
            app.client
                .get(app.url(&format!("{inbox}?createdAfter=yesterday"))),
            400,
            "invalid_query",
        ),
        (
            app.client.get(app.url(&format!("{inbox}?top=5"))),
            400,
            "invalid_query",
        ),
        (
            app.client
                .get(app.url(&format!("{inbox}?pageToken=forged"))),
            400,
            "invalid_page_token",
        ),
        (
            app.client.get(app.url(&format!("{inbox}/bad%20id"))),
            400,
            "invalid_item_id",
        ),
        (
            app.client
                .get(app.url(&format!("{inbox}/AAAA")))
                .header("if-none-match", "not quoted"),
            400,
            "invalid_if_none_match",
        ),
        (
            app.client
                .delete(app.url(&format!("{inbox}/AAAA?disposal=shred"))),
            400,
            "invalid_query",
        ),
        (
            app.client
                .delete(app.url(&format!("{inbox}/AAAA")))
                .header("if-match", "stale"),
            400,
            "invalid_if_match",
        ),
        (
            app.client
                .post(app.url(&format!(
                    "/v1/mailboxes/{}/exportItems",
                    encode(DEMO.mailbox_id)
                )))
                .json(&serde_json::json!({ "itemIds": vec!["AAAA"; 21] })),
            400,
            "invalid_body",
        ),
        (
            app.client
                .post(app.url(&format!(
                    "/v1/mailboxes/{}/exportItems",
                    encode(DEMO.mailbox_id)
                )))
                .json(&serde_json::json!({ "itemIds": [] })),
            400,
            "invalid_body",
        ),
        (
            app.client
                .post(app.url(&format!(
                    "/v1/mailboxes/{}/exportItems",
                    encode(DEMO.mailbox_id)
                )))
                .json(&serde_json::json!({ "ids": ["AAAA"] })),
            400,
            "invalid_body",
        ),
    ];
    for (request, status, code) in cases {
        problem(request.send().await.unwrap(), status, code).await;
    }
    assert_eq!(
        app.counters().graph_requests,
        before,
        "no Graph call for bad input"
    );
}

#[tokio::test]
async fn forty_concurrent_reads_of_one_mailbox_share_at_most_eight_export_calls() {
    let app = spawn_app().await;
    let created = seed(&app, DEMO.mailbox_id, 40).await;
    let before = app.counters().export_requests;
    let reads = created.iter().map(|(item_id, change_key, stream)| {
        let request = app.client.get(item_url(&app, DEMO.mailbox_id, item_id));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(
                response.headers()["etag"],
                format!("\"{change_key}\"").as_str()
            );
            assert_eq!(response.bytes().await.unwrap().as_ref(), stream.as_slice());
        }
    });
    futures_util::future::join_all(reads).await;
    let calls = app.counters().export_requests - before;
    println!("40 concurrent reads took {calls} exportItems calls");
    assert!((2..=8).contains(&calls), "{calls} exportItems calls");
    assert!(app
        .metrics()
        .await
        .contains("mailbox_gateway_export_batch_ids_count"));
}

#[tokio::test]
async fn a_folder_lists_page_by_page_and_filters_by_creation_time() {
    let app = spawn_app().await;
    let first = seed(&app, DEMO.mailbox_address, 3).await;
    app.simulator.advance(std::time::Duration::from_secs(3600));
    let cutoff = chrono::Utc::now() + chrono::Duration::minutes(30);
    let later = seed(&app, DEMO.mailbox_address, 2).await;

    let mut url = app.url(&format!(
        "/v1/mailboxes/{}/folders/inbox/items?pageSize=2",
        DEMO.mailbox_address
    ));
    let mut listed = Vec::new();
    let mut pages = 0;
    loop {
        let page = json(app.client.get(&url).send().await.unwrap()).await;
        pages += 1;
        let value = page["value"].as_array().unwrap_or_else(|| panic!("{page}"));
        assert!(value.len() <= 2);
        for entry in value {
            for field in [
                "itemId",
                "changeKey",
                "type",
                "size",
                "createdDateTime",
                "lastModifiedDateTime",
            ] {
                assert!(!entry[field].is_null(), "{field} in {entry}");
            }
            listed.push(entry["itemId"].as_str().unwrap().to_owned());
        }
        match page["nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with("/v1/mailboxes/"), "{next}");
                url = app.url(next);
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let all: Vec<String> = first
        .iter()
        .chain(&later)
        .map(|(id, ..)| id.clone())
        .collect();
    assert_eq!(listed, all);

    let after = json(
        app.client
            .get(app.url(&format!(
                "/v1/mailboxes/{}/folders/inbox/items?createdAfter={}",
                DEMO.mailbox_address,
                cutoff.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let recent: Vec<&str> = after["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["itemId"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = later.iter().map(|(id, ..)| id.as_str()).collect();
    assert_eq!(recent, expected);
    assert!(after.get("nextLink").is_none());

    let response = app
        .client
        .get(app.url(&format!(
            "/v1/mailboxes/{}/folders/{}/items",
            DEMO.mailbox_id,
            encode("AAMkAGZmZmZmZmZmZmZmZmZm")
        )))
        .send()
        .await
        .unwrap();
    problem(response, 404, "folder_not_found").await;
}

#[tokio::test]
async fn delete_is_soft_by_default_hard_on_request_and_checks_if_match() {
    let app = spawn_app().await;
    let created = seed(&app, DEMO.mailbox_id, 3).await;
    let deletions = app
        .simulator
        .folder_id(DEMO.mailbox_id, "recoverableitemsdeletions")
        .unwrap();

    // A stale If-Match: 412, and the item stays.
    let (stale_id, change_key, _) = &created[0];
    let response = app
        .client
        .delete(item_url(&app, DEMO.mailbox_id, stale_id))
        .header("if-match", "\"c3RhbGVjaGFuZ2VrZXlzdGFsZWNoYW5nZQ==\"")
        .send()
        .await
        .unwrap();
    problem(response, 412, "change_key_mismatch").await;
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 3);

    // Soft, with the current change key: moved to Recoverable Items.
    let response = app
        .client
        .delete(item_url(&app, DEMO.mailbox_id, stale_id))
        .header("if-match", format!("\"{change_key}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let stored = app.simulator.items(DEMO.mailbox_id);
    let moved = stored.iter().find(|i| &i.item_id == stale_id).unwrap();
    assert_eq!(moved.folder_id, deletions);

    // Hard: gone.
    let (hard_id, ..) = &created[1];
    let response = app
        .client
        .delete(format!(
            "{}?disposal=hard",
            item_url(&app, DEMO.mailbox_id, hard_id)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(app
        .simulator
        .items(DEMO.mailbox_id)
        .iter()
        .all(|i| &i.item_id != hard_id));
    let response = app
        .client
        .delete(item_url(&app, DEMO.mailbox_id, hard_id))
        .send()
        .await
        .unwrap();
    problem(response, 404, "item_not_found").await;

    // An item under hold: Exchange keeps it.
    let (held_id, ..) = &created[2];
    app.simulator.place_hold(DEMO.mailbox_id, held_id);
    let response = app
        .client
        .delete(format!(
            "{}?disposal=hard",
            item_url(&app, DEMO.mailbox_id, held_id)
        ))
        .send()
        .await
        .unwrap();
    problem(response, 409, "delete_refused").await;
}

#[tokio::test]
async fn export_items_answers_in_graphs_shape_with_per_item_errors() {
    let app = spawn_app().await;
    let created = seed(&app, DEMO.mailbox_id, 2).await;
    let missing = "AAAAAAAAAAAAAAAAAAAAAA==";
    let ids = vec![created[0].0.as_str(), missing, created[1].0.as_str()];
    let response = app
        .client
        .post(app.url(&format!(
            "/v1/mailboxes/{}/exportItems",
            encode(DEMO.mailbox_id)
        )))
        .json(&serde_json::json!({ "itemIds": ids }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    let value = body["value"].as_array().unwrap();
    assert_eq!(value.len(), 3);
    for (entry, (item_id, change_key, stream)) in [&value[0], &value[2]].into_iter().zip(&created) {
        assert_eq!(entry["itemId"], item_id.as_str());
        assert_eq!(entry["changeKey"], change_key.as_str());
        let data = base64::engine::general_purpose::STANDARD
            .decode(entry["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(&data, stream);
    }
    assert_eq!(value[1]["itemId"], missing);
    assert!(value[1]["error"]["code"]
        .as_str()
        .unwrap()
        .contains("NotFound"));
    assert!(value[1].get("data").is_none());
}

/// Reads a tar archive into its entries' names and bytes.
fn entries(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut reader = tar::Archive::new(archive);
    reader
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

async fn export_folder(app: &TestApp, mailbox: &str) -> Vec<u8> {
    let response = app
        .client
        .get(app.url(&format!(
            "/v1/mailboxes/{}/folders/inbox/export",
            encode(mailbox)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-tar");
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn a_folder_exports_as_a_tar_with_an_index_and_round_trips_to_another_mailbox() {
    let app = spawn_app().await;
    let created = seed(&app, DEMO.mailbox_id, 23).await;

    let archive = export_folder(&app, DEMO.mailbox_id).await;
    let files = entries(&archive);
    assert_eq!(files.len(), 24, "23 items and the index");
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let listed = index["items"].as_array().unwrap();
    assert_eq!(listed.len(), 23);
    for ((item_id, change_key, stream), entry) in created.iter().zip(listed) {
        assert_eq!(entry["itemId"], item_id.as_str());
        assert_eq!(entry["changeKey"], change_key.as_str());
        assert_eq!(entry["size"], stream.len());
        assert_eq!(entry["sha256"], hex::encode(Sha256::digest(stream)));
        let file = entry["file"].as_str().unwrap();
        assert!(file.ends_with(".fts") && !file.contains('/'));
        assert_eq!(&files[file], stream);
    }
    assert!(
        app.counters().export_requests >= 2,
        "23 items need two exportItems calls"
    );

    // Into another mailbox, and out again: the same bytes.
    let other = "restore-target@contoso.com";
    app.simulator.add_mailbox(other);
    for entry in listed {
        let data = files[entry["file"].as_str().unwrap()].clone();
        assert_eq!(app.create(other, "inbox", data).await.status(), 201);
    }
    let again = entries(&export_folder(&app, other).await);
    let index: serde_json::Value = serde_json::from_slice(&again["index.json"]).unwrap();
    let copies: Vec<&Vec<u8>> = index["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &again[e["file"].as_str().unwrap()])
        .collect();
    let originals: Vec<&Vec<u8>> = created.iter().map(|(_, _, stream)| stream).collect();
    assert_eq!(copies, originals);
}

#[tokio::test]
async fn a_folder_export_that_fails_midway_ends_with_an_error_entry_not_a_short_tar() {
    let app = spawn_app_with(AppOptions::default()).await;
    seed(&app, DEMO.mailbox_id, 3).await;
    // An item the simulator can no longer export (its bytes were dropped in sink mode).
    let mut behaviour = app.simulator.behaviour();
    behaviour.sink = true;
    app.simulator.set_behaviour(behaviour).unwrap();
    seed(&app, DEMO.mailbox_id, 1).await;

    let response = app
        .client
        .get(app.url(&format!(
            "/v1/mailboxes/{}/folders/inbox/export",
            encode(DEMO.mailbox_id)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let (mut received, mut cut) = (Vec::new(), false);
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => received.extend_from_slice(&chunk),
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "the response is cut off, not ended normally");
    // The entries before the cut read back: three items, then the error, and no index.
    let mut names = Vec::new();
    let mut reader = tar::Archive::new(received.as_slice());
    for entry in reader.entries().unwrap() {
        let Ok(mut entry) = entry else { break };
        let name = entry.path().unwrap().display().to_string();
        if name == "error.json" {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            let error: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(error["itemsWritten"], 3);
            assert!(error["itemId"].is_string());
            assert!(!error["code"].as_str().unwrap().is_empty());
        }
        names.push(name);
    }
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(names[3], "error.json");
    assert!(!names.contains(&"index.json".to_owned()));
}

#[tokio::test]
async fn reading_and_deleting_are_operations_of_their_own_denied_by_default() {
    use mailbox_gateway::access::parse_rules;
    use mailbox_gateway::config::{AccessConfig, AuthConfig};
    let digest = |key: &str| -> [u8; 32] { Sha256::digest(key.as_bytes()).into() };
    let access = AccessConfig {
        auth: AuthConfig::ApiKeys(vec![
            ("writer".into(), digest("writer-key-0123456789")),
            ("reader".into(), digest("reader-key-0123456789")),
            ("cleaner".into(), digest("cleaner-key-0123456789")),
        ]),
        rules: parse_rules(
            r#"[{"client": "writer", "mailboxes": ["*"], "operations": ["create", "update", "list-folders"]},
                {"client": "reader", "mailboxes": ["*"], "operations": ["read"]},
                {"client": "cleaner", "mailboxes": ["*"], "operations": ["delete"]}]"#,
        )
        .unwrap(),
    };
    let app = spawn_app_with(AppOptions {
        access,
        bearer: Some("writer-key-0123456789".into()),
        ..AppOptions::default()
    })
    .await;
    let (item_id, ..) = seed(&app, DEMO.mailbox_id, 1).await.remove(0);
    let item = item_url(&app, DEMO.mailbox_id, &item_id);
    let reads = |client: &TestApp| {
        vec![
            client.client.get(&item),
            client.client.get(app.inbox_items_url(DEMO.mailbox_id)),
            client.client.get(app.url(&format!(
                "/v1/mailboxes/{}/folders/inbox/export",
                encode(DEMO.mailbox_id)
            ))),
            client
                .client
                .post(app.url(&format!(
                    "/v1/mailboxes/{}/exportItems",
                    encode(DEMO.mailbox_id)
                )))
                .json(&serde_json::json!({ "itemIds": [item_id] })),
        ]
    };
    let before = app.counters().graph_requests;
    let (reader, cleaner) = (
        app.as_client("reader-key-0123456789"),
        app.as_client("cleaner-key-0123456789"),
    );
    for denied in [&app, &cleaner] {
        for request in reads(denied) {
            problem(request.send().await.unwrap(), 403, "forbidden").await;
        }
    }
    for denied in [&app, &reader] {
        problem(
            denied.client.delete(&item).send().await.unwrap(),
            403,
            "forbidden",
        )
        .await;
    }
    assert_eq!(
        app.counters().graph_requests,
        before,
        "denials cost no Graph call"
    );
    for request in reads(&reader) {
        assert!(request.send().await.unwrap().status().is_success());
    }
    assert_eq!(
        cleaner.client.delete(&item).send().await.unwrap().status(),
        204
    );
}

#[tokio::test]
async fn an_item_in_the_auto_expanded_archive_is_read_from_the_archive() {
    let app = spawn_app().await;
    let archive = app.simulator.add_archive(DEMO.mailbox_id);
    let stream = item("Archived long ago");
    let archived = app.simulator.put_item(&archive, "inbox", stream.clone());
    let response = app
        .client
        .get(item_url(&app, DEMO.mailbox_id, &archived.item_id))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["etag"],
        format!("\"{}\"", archived.change_key).as_str()
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), stream.as_slice());
    assert_eq!(
        app.counters().export_requests,
        2,
        "asked once, then of the archive"
    );
}

#[tokio::test]
async fn a_folder_export_slow_to_produce_is_not_closed_as_idle() {
    let app = spawn_app_with(AppOptions {
        connections: mailbox_gateway::config::ConnectionLimits {
            idle_timeout: std::time::Duration::from_secs(1),
            ..mailbox_gateway::config::ConnectionLimits::default()
        },
        ..AppOptions::default()
    })
    .await;
    // 21 items: two exportItems calls after the answer has begun.
    let seeded = seed(&app, DEMO.mailbox_address, 21).await;
    // Each Graph call now takes 3.5 s: the tar's body is written over about 7 s, with long pauses, far
    // past the idle timeout and the 5 s an idle connection is given to close.
    app.simulator
        .set_behaviour(exchange_simulator::Behaviour {
            latency_ms: 3500,
            ..exchange_simulator::Behaviour::default()
        })
        .unwrap();
    let archive = export_folder(&app, DEMO.mailbox_address).await;
    let entries = entries(&archive);
    assert!(entries.contains_key("index.json"), "{:?}", entries.keys());
    assert_eq!(entries.len(), seeded.len() + 1, "{:?}", entries.keys());
}
