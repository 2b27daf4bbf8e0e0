//! Graph's `exportItems`: exact bytes back, per-item errors inside the 200, the 20-id limit, the
//! archive redirect, sink mode, and the mailbox limits, bearer check and faults every mailbox request
//! goes through.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use exchange_simulator::{Behaviour, FaultTarget, DEMO};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    create_body, graph_error, item_stream, item_stream_of_class, items_path, mailbox_path, spawn,
    spawn_importing, status_fault, update_body, MAILBOX_CONCURRENCY,
};

/// The `value` of a 200 exportItems answer.
async fn exported(response: reqwest::Response) -> Vec<Value> {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["value"].as_array().unwrap().clone()
}

fn decoded(entry: &Value) -> Vec<u8> {
    STANDARD.decode(entry["data"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn export_answers_the_exact_bytes_imported_in_the_order_asked_with_per_item_errors() {
    let (t, url, _) = spawn_importing().await;
    let token = t.token().await;
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let (first, second) = (item_stream("first"), item_stream("second"));
    let (status, a) = t.import(&url, &create_body(&inbox, &first)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, b) = t
        .import(&url, &create_body(&inbox, &item_stream("b")))
        .await;
    // An update replaces the data and the change key; export gives the current ones.
    let (status, b) = t.import(&url, &update_body(&b, &inbox, &second)).await;
    assert_eq!(status, StatusCode::OK);
    let (a_id, b_id) = (a["itemId"].as_str().unwrap(), b["itemId"].as_str().unwrap());
    // A well-formed id of no item, and one that is no Exchange id at all.
    let unknown = STANDARD.encode(b"no such item here");

    let answer = t
        .export(
            &token,
            DEMO.mailbox_id,
            &[b_id, &unknown, a_id, "not base64!"],
        )
        .await;
    let value = exported(answer).await;
    assert_eq!(value.len(), 4);
    assert_eq!(value[0]["itemId"], b_id);
    assert_eq!(value[0]["changeKey"], b["changeKey"]);
    assert_eq!(decoded(&value[0]), second);
    assert_eq!(
        value[1],
        json!({"itemId": unknown, "error": {
            "code": "ErrorItemNotFound",
            "message": "The specified object was not found in the store.",
        }})
    );
    assert_eq!(value[2]["itemId"], a_id);
    assert_eq!(value[2]["changeKey"], a["changeKey"]);
    assert_eq!(decoded(&value[2]), first);
    assert_eq!(value[3]["error"]["code"], "ErrorInvalidIdMalformed");
    assert!(value[3].get("data").is_none());

    let counters = t.sim.counters();
    assert_eq!(counters.export_requests, 1);
    assert_eq!(counters.max_export_batch, 4);
    assert_eq!(counters.items_exported, 2);
    assert_eq!(counters.export_item_errors, 2);
}

#[tokio::test]
async fn twenty_ids_are_accepted_and_a_repeated_id_is_answered_each_time() {
    let t = spawn().await;
    let token = t.token().await;
    let data = item_stream_of_class("IPM.Appointment", "seeded");
    let item = t.sim.put_item(DEMO.mailbox_id, "inbox", data.clone());
    let ids: Vec<&str> = std::iter::repeat_n(item.item_id.as_str(), 20).collect();
    let value = exported(t.export(&token, DEMO.mailbox_id, &ids).await).await;
    assert_eq!(value.len(), 20);
    for entry in &value {
        assert_eq!(decoded(entry), data);
        assert_eq!(entry["changeKey"], item.change_key.as_str());
    }
    assert_eq!(t.sim.counters().items_exported, 20);
}

#[tokio::test]
async fn export_bodies_naming_no_ids_too_many_or_malformed_are_refused_with_400() {
    let t = spawn().await;
    let token = t.token().await;
    let twenty_one: Vec<String> = (0..21).map(|i| STANDARD.encode([i as u8; 16])).collect();
    let cases = [
        ("no ids", json!({ "itemIds": [] }).to_string()),
        ("21 ids", json!({ "itemIds": twenty_one }).to_string()),
        ("no itemIds", "{}".to_owned()),
        ("null itemIds", json!({ "itemIds": null }).to_string()),
        ("not JSON", "itemIds=a".to_owned()),
        ("empty", String::new()),
        ("ids not strings", json!({ "itemIds": [1, 2] }).to_string()),
        ("ids not a list", json!({ "itemIds": "abc=" }).to_string()),
        ("wrong case", json!({ "ItemIds": ["abc="] }).to_string()),
        (
            "unknown parameter",
            json!({ "itemIds": ["abc="], "format": "eml" }).to_string(),
        ),
    ];
    let path = format!("{}/exportItems", mailbox_path(DEMO.mailbox_id));
    for (case, body) in cases {
        let response = t.graph_post(&token, &path, "application/json", body).await;
        assert_eq!(
            graph_error(response, StatusCode::BAD_REQUEST).await,
            "ErrorInvalidRequest",
            "{case}"
        );
    }
    let not_json = t
        .graph_post(
            &token,
            &path,
            "text/plain",
            json!({ "itemIds": ["abc="] }).to_string(),
        )
        .await;
    assert_eq!(
        graph_error(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await,
        "UnsupportedMediaType"
    );
    let unknown_mailbox = t.export(&token, "MBX:nobody@nowhere", &["abc="]).await;
    assert_eq!(
        graph_error(unknown_mailbox, StatusCode::NOT_FOUND).await,
        "ErrorInvalidMailbox"
    );
    let counters = t.sim.counters();
    assert_eq!(counters.export_requests, 12);
    assert_eq!(counters.max_export_batch, 21);
    assert_eq!(
        (counters.items_exported, counters.export_item_errors),
        (0, 0)
    );
}

#[tokio::test]
async fn an_item_of_the_auto_expanded_archive_answers_the_archives_export_url() {
    let t = spawn().await;
    let token = t.token().await;
    let archive = t.sim.add_archive(DEMO.mailbox_id);
    let data = item_stream("archived");
    let item = t.sim.put_item(&archive, "inbox", data.clone());

    let value = exported(t.export(&token, DEMO.mailbox_id, &[&item.item_id]).await).await;
    let archive_url = format!(
        "{}/admin/exchange/mailboxes/{archive}/exportItems",
        t.sim.graph_url()
    );
    assert_eq!(
        value,
        [json!({"itemId": item.item_id, "error": {
            "code": "ErrorArchiveFolderMovedPermanently",
            "message": archive_url,
        }})]
    );

    // The URL in the message is where the item is exported from.
    let retried = t
        .http
        .post(&archive_url)
        .bearer_auth(&token)
        .json(&json!({ "itemIds": [item.item_id] }))
        .send()
        .await
        .unwrap();
    let value = exported(retried).await;
    assert_eq!(decoded(&value[0]), data);
}

#[tokio::test]
async fn an_item_imported_in_sink_mode_is_exported_as_an_error_not_as_wrong_bytes() {
    let (t, url, body) = spawn_importing().await;
    let token = t.token().await;
    t.set(Behaviour {
        sink: true,
        ..Behaviour::default()
    });
    let (status, created) = t.import(&url, &body).await;
    assert_eq!(status, StatusCode::OK);
    t.set(Behaviour::default());

    let id = created["itemId"].as_str().unwrap();
    let value = exported(t.export(&token, DEMO.mailbox_id, &[id]).await).await;
    assert_eq!(value[0]["itemId"], id);
    assert_eq!(value[0]["error"]["code"], "ErrorItemCorrupt");
    assert!(value[0].get("data").is_none());
    // Its metadata is still listed, with the size it had.
    let listed: Value = t
        .graph_get(&token, &items_path(DEMO.mailbox_id, "inbox", Some(id)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["size"], item_stream("x").len());
}

// The concurrency test runs on real time: the latency holds the admitted requests in flight while
// the others arrive (see tests/simulator/behaviour.rs).

#[tokio::test]
async fn export_and_item_requests_count_against_the_mailbox_concurrency_limit() {
    let t = spawn().await;
    let token = t.token().await;
    let item = t.sim.put_item(DEMO.mailbox_id, "inbox", item_stream("x"));
    let id = item.item_id.as_str();
    let ids = [id];
    t.set(Behaviour {
        latency_ms: 500,
        max_concurrent_per_mailbox: Some(2),
        ..Behaviour::default()
    });
    let exports = futures_util::future::join(
        t.export(&token, DEMO.mailbox_id, &ids),
        t.export(&token, DEMO.mailbox_id, &ids),
    );
    let others = async {
        t.until_in_flight(DEMO.mailbox_id, 2).await;
        futures_util::future::join4(
            t.export(&token, DEMO.mailbox_id, &[id]),
            t.graph_get(&token, &items_path(DEMO.mailbox_id, "inbox", None)),
            t.graph_get(&token, &items_path(DEMO.mailbox_id, "inbox", Some(id))),
            t.graph_delete(
                &token,
                &format!(
                    "{}?disposalType=hardDelete",
                    items_path(DEMO.mailbox_id, "inbox", Some(id))
                ),
            ),
        )
        .await
    };
    let ((first, second), (export, list, get, delete)) = tokio::join!(exports, others);

    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::OK);
    for refused in [export, list, get, delete] {
        assert_eq!(refused.headers()["retry-after"], "1");
        let status = refused.status();
        let body: Value = refused.json().await.unwrap();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(body["error"]["code"], "ApplicationThrottled");
        assert_eq!(body["error"]["message"], MAILBOX_CONCURRENCY);
    }
    assert!(t.sim.item(DEMO.mailbox_id, id).is_some());
    let counters = t.sim.counters();
    assert_eq!(counters.max_in_flight[DEMO.mailbox_id], 2);
    assert_eq!(counters.concurrency_violations, 4);
    assert_eq!(counters.throttled, 4);
    assert_eq!(counters.export_requests, 3);
    assert_eq!(counters.items_exported, 2);
    assert_eq!(
        (
            counters.item_list_requests,
            counters.item_get_requests,
            counters.item_delete_requests,
            counters.items_deleted,
        ),
        (1, 1, 1, 0)
    );
    assert_eq!(counters.graph_requests, 6);
}

#[tokio::test]
async fn every_export_and_item_route_needs_a_valid_bearer_token() {
    let t = spawn().await;
    let item = t.sim.put_item(DEMO.mailbox_id, "inbox", item_stream("x"));
    let item_path = items_path(DEMO.mailbox_id, "inbox", Some(&item.item_id));
    let graph = t.sim.graph_url();
    let requests = [
        t.http
            .post(format!(
                "{graph}{}/exportItems",
                mailbox_path(DEMO.mailbox_id)
            ))
            .json(&json!({ "itemIds": [item.item_id] })),
        t.http.get(format!(
            "{graph}{}",
            items_path(DEMO.mailbox_id, "inbox", None)
        )),
        t.http.get(format!("{graph}{item_path}")),
        t.http
            .delete(format!("{graph}{item_path}?disposalType=hardDelete")),
    ];
    for request in requests {
        for token in [None, Some("made-up-token")] {
            let request = request.try_clone().unwrap();
            let request = match token {
                Some(token) => request.bearer_auth(token),
                None => request,
            };
            let response = request.send().await.unwrap();
            assert_eq!(
                graph_error(response, StatusCode::UNAUTHORIZED).await,
                "InvalidAuthenticationToken"
            );
        }
    }
    assert!(t.sim.item(DEMO.mailbox_id, &item.item_id).is_some());
    let counters = t.sim.counters();
    assert_eq!(counters.graph_requests, 8);
    assert_eq!(
        (
            counters.export_requests,
            counters.item_list_requests,
            counters.item_get_requests,
            counters.item_delete_requests,
        ),
        (2, 2, 2, 2)
    );
    assert_eq!((counters.items_exported, counters.items_deleted), (0, 0));
}

#[tokio::test]
async fn injected_graph_faults_and_latency_apply_to_export_as_to_every_mailbox_request() {
    let t = spawn().await;
    let token = t.token().await;
    let item = t.sim.put_item(DEMO.mailbox_id, "inbox", item_stream("x"));
    t.sim.inject(
        FaultTarget::Graph,
        status_fault(503, Some(3), Some("ServiceUnavailable")),
        1,
    );
    let refused = t.export(&token, DEMO.mailbox_id, &[&item.item_id]).await;
    assert_eq!(refused.headers()["retry-after"], "3");
    assert_eq!(
        graph_error(refused, StatusCode::SERVICE_UNAVAILABLE).await,
        "ServiceUnavailable"
    );

    t.set(Behaviour {
        latency_ms: 300,
        ..Behaviour::default()
    });
    let started = std::time::Instant::now();
    let value = exported(t.export(&token, DEMO.mailbox_id, &[&item.item_id]).await).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(decoded(&value[0]), item.data.to_vec());

    let counters = t.sim.counters();
    assert_eq!(counters.faults_injected, 1);
    assert_eq!(counters.export_requests, 2);
    assert_eq!(counters.graph_requests, 2);
    assert_eq!(counters.items_exported, 1);
}

#[tokio::test]
async fn the_admin_counters_show_the_export_and_item_counters() {
    let t = spawn().await;
    let token = t.token().await;
    let item = t.sim.put_item(DEMO.mailbox_id, "inbox", item_stream("x"));
    exported(t.export(&token, DEMO.mailbox_id, &[&item.item_id]).await).await;
    let counters: Value = t
        .http
        .get(t.admin_url("counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["export_requests"], 1);
    assert_eq!(counters["items_exported"], 1);
    assert_eq!(counters["max_export_batch"], 1);
    for name in [
        "export_item_errors",
        "item_list_requests",
        "item_get_requests",
        "item_delete_requests",
        "items_deleted",
        "items_hard_deleted",
        "hard_deletes_refused_on_hold",
    ] {
        assert_eq!(counters[name], 0, "{name}");
    }
}
