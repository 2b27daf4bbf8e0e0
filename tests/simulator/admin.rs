//! The simulator's own admin surface on its origin (`/_simulator/...`): the behaviour, the counters
//! and new mailboxes; and the checks on a behaviour set from Rust.

use exchange_simulator::{Behaviour, Simulator, SimulatorConfig, DEMO};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{create_body, item_stream, rates, spawn, spawn_importing};

#[tokio::test]
async fn the_admin_endpoint_reads_and_replaces_the_behaviour_and_refuses_invalid_ones() {
    let t = spawn().await;
    let url = t.admin_url("behaviour");
    let current: Value = t.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(current, serde_json::to_value(Behaviour::default()).unwrap());
    assert_eq!(current["max_concurrent_per_mailbox"], 4);

    // A PUT replaces the whole behaviour: missing fields take their defaults.
    let put = t
        .http
        .put(&url)
        .json(&json!({"throttle_rate": 0.25, "seed": 9, "latency_ms": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let expected = Behaviour {
        throttle_rate: 0.25,
        seed: Some(9),
        latency_ms: 5,
        ..Behaviour::default()
    };
    assert_eq!(put.json::<Behaviour>().await.unwrap(), expected);
    assert_eq!(t.sim.behaviour(), expected);
    let read: Behaviour = t.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(read, expected);

    for (invalid, names) in [
        (
            json!({"throttle_rate": 0.6, "unavailable_rate": 0.6}),
            "at most 1.0",
        ),
        (json!({"throttle_rate": 1.5}), "throttle_rate"),
        (
            json!({"drop_after_store_rate": -0.1}),
            "drop_after_store_rate",
        ),
        (
            json!({"max_concurrent_per_mailbox": 0}),
            "max_concurrent_per_mailbox",
        ),
        (json!({"throtle_rate": 0.1}), "throtle_rate"),
        (json!("slow"), "behaviour"),
    ] {
        let response = t.http.put(&url).json(&invalid).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{invalid}");
        let answer: Value = response.json().await.unwrap();
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(names), "{invalid}: {error}");
    }
    assert_eq!(t.sim.behaviour(), expected, "a refused PUT changes nothing");

    // `null` lifts the limit; leaving the field out keeps the documented 4.
    let unlimited = t
        .http
        .put(&url)
        .json(&json!({"max_concurrent_per_mailbox": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(unlimited.status(), StatusCode::OK);
    assert_eq!(t.sim.behaviour().max_concurrent_per_mailbox, None);
}

#[tokio::test]
async fn invalid_behaviours_are_refused_by_set_behaviour_and_by_start() {
    let t = spawn().await;
    let error = t.sim.set_behaviour(rates(0.5, 0.5, 0.5)).unwrap_err();
    assert!(error.contains("at most 1.0"), "{error}");
    assert_eq!(t.sim.behaviour(), Behaviour::default());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimulatorConfig {
        behaviour: rates(f64::NAN, 0.0, 0.0),
        ..SimulatorConfig::default()
    };
    let error = Simulator::start(listener, config).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("throttle_rate"), "{error}");
}

#[tokio::test]
async fn the_counters_endpoint_serves_the_counters_as_json() {
    let (t, url, body) = spawn_importing().await;
    t.import(&url, &body).await;
    t.import(&url, &body).await;
    let served: Value = t
        .http
        .get(t.admin_url("counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, serde_json::to_value(t.sim.counters()).unwrap());
    assert_eq!(served["items_created"], 2);
    assert_eq!(served["duplicate_items"], 1);
    assert_eq!(served["max_in_flight"][DEMO.mailbox_id], 1);
}

#[tokio::test]
async fn the_admin_endpoint_adds_mailboxes_that_graph_and_import_sessions_know() {
    let t = spawn().await;
    let url = t.admin_url("mailboxes");
    let response = t
        .http
        .post(&url)
        .json(&json!({"address": "bench01@contoso.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let added: Value = response.json().await.unwrap();
    assert_eq!(added["address"], "bench01@contoso.com");
    let mailbox_id = added["id"].as_str().unwrap().to_owned();
    assert!(mailbox_id.starts_with("MBX:"), "{mailbox_id}");

    let token = t.token().await;
    let settings: Value = t
        .graph_get(&token, "/users/BENCH01@contoso.com/settings/exchange")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(settings["primaryMailboxId"], mailbox_id.as_str());
    let inbox = t.sim.folder_id(&mailbox_id, "inbox").unwrap();
    let import_url = t.import_url(&token, &mailbox_id).await;
    let (status, _) = t
        .import(&import_url, &create_body(&inbox, &item_stream("x")))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t.sim.items(&mailbox_id).len(), 1);

    for (body, status, names) in [
        (
            json!({"address": "Bench01@Contoso.com"}),
            StatusCode::CONFLICT,
            "already",
        ),
        (
            json!({"address": DEMO.mailbox_address}),
            StatusCode::CONFLICT,
            "already",
        ),
        (
            json!({"address": "no-at-sign"}),
            StatusCode::BAD_REQUEST,
            "address",
        ),
        (json!({"adress": "x@y"}), StatusCode::BAD_REQUEST, "adress"),
        (json!("x@y"), StatusCode::BAD_REQUEST, "new mailbox"),
    ] {
        let response = t.http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), status, "{body}");
        let answer: Value = response.json().await.unwrap();
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(names), "{body}: {error}");
    }
    assert_eq!(t.sim.items_per_mailbox().len(), 2, "nothing else was added");
}
