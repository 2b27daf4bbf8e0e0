//! What operators see: metrics, and Graph's request id handed back to the client.

use exchange_simulator::{Fault, FaultTarget, DEMO};

use crate::helpers::{item, problem, spawn_app};

#[tokio::test]
async fn metrics_count_imports_requests_and_upstream_calls_without_ids_in_labels() {
    let app = spawn_app().await;
    assert_eq!(
        app.create(DEMO.mailbox_address, "inbox", item("counted"))
            .await
            .status(),
        201
    );
    app.simulator.inject(
        FaultTarget::Import,
        Fault::Status {
            status: 429,
            retry_after: Some(0),
            code: None,
        },
        1,
    );
    assert_eq!(
        app.create(DEMO.mailbox_address, "inbox", item("retried"))
            .await
            .status(),
        201
    );
    problem(
        app.create(DEMO.mailbox_address, "inbox", Vec::new()).await,
        422,
        "invalid_item_stream",
    )
    .await;

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = response.text().await.unwrap();
    for expected in [
        "mailbox_gateway_items_imported_total{mode=\"create\",outcome=\"ok\"} 2",
        "mailbox_gateway_upstream_requests_total{endpoint=\"import\",status=\"200\"} 2",
        "mailbox_gateway_upstream_requests_total{endpoint=\"import\",status=\"429\"} 1",
        "mailbox_gateway_upstream_requests_total{endpoint=\"token\",status=\"200\"} 1",
        "mailbox_gateway_upstream_retries_total{reason=\"throttled\"} 1",
        "mailbox_gateway_token_requests_total{result=\"ok\"} 1",
        "mailbox_gateway_import_sessions_created_total 1",
        "route=\"/v1/mailboxes/{mailbox}/folders/{folder}/items\"",
        "status=\"422\"",
        "mailbox_gateway_mailbox_queue_wait_seconds_count",
        "mailbox_gateway_item_bytes_in_flight 0",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    for forbidden in [DEMO.mailbox_address, DEMO.mailbox_id, "contoso"] {
        assert!(!text.contains(forbidden), "{forbidden} leaked into a label");
    }
}

#[tokio::test]
async fn graphs_request_id_is_returned_as_x_graph_request_id() {
    let app = spawn_app().await;
    let created = app.create(DEMO.mailbox_id, "inbox", item("x")).await;
    assert_eq!(created.status(), 201);
    let id = created.headers()["x-graph-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");

    app.simulator.inject(
        FaultTarget::Graph,
        Fault::Status {
            status: 403,
            retry_after: None,
            code: None,
        },
        1,
    );
    let bob = app.simulator.add_mailbox("bob@contoso.com");
    let refused = app.create(&bob, "inbox", item("x")).await;
    let header = refused.headers()["x-graph-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = problem(refused, 502, "upstream_forbidden").await;
    assert_eq!(body["graphRequestId"], header.as_str());
}

#[tokio::test]
async fn made_up_methods_and_paths_add_no_metric_series() {
    let app = crate::helpers::spawn_app().await;
    let metrics_size = || async {
        let text = app.metrics().await;
        (
            text.len(),
            text.lines()
                .filter(|l| l.starts_with("mailbox_gateway_http_request_duration_seconds_count"))
                .count(),
        )
    };
    let hostile = |i: usize| {
        let method = reqwest::Method::from_bytes(format!("M{i}X").as_bytes()).unwrap();
        app.client
            .request(method, app.url(&format!("/made/up/{i}")))
            .send()
    };
    for i in 0..20 {
        hostile(i).await.unwrap();
    }
    // The first scrape adds its own series (GET /metrics); measure from the second.
    metrics_size().await;
    let before = metrics_size().await;
    futures_util::future::join_all((20..2020).map(hostile)).await;
    let after = metrics_size().await;
    assert_eq!(
        after.1, before.1,
        "series after 2,000 made-up methods and paths"
    );
    // The counts in the lines grow by a few digits at most; no line is added.
    assert!(after.0 <= before.0 + 64, "{before:?} → {after:?}");
}
