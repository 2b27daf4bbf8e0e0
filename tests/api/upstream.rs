//! How upstream failures reach the client: throttling, permissions, failures, timeouts, lost answers.

use std::time::Duration;

use exchange_simulator::{Fault, FaultTarget, DEMO};
use mailbox_gateway::config::{RetryPolicy, Timeouts};

use crate::helpers::{item, problem, spawn_app, spawn_app_with, AppOptions};

fn status(status: u16, retry_after: Option<u64>) -> Fault {
    Fault::Status {
        status,
        retry_after,
        code: None,
    }
}

fn short_timeouts() -> AppOptions {
    AppOptions {
        timeouts: Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_millis(500),
            ..Timeouts::default()
        },
        ..AppOptions::default()
    }
}

#[tokio::test]
async fn throttling_beyond_what_can_be_waited_is_503_with_retry_after() {
    let app = spawn_app().await;
    app.simulator
        .inject(FaultTarget::Import, status(429, Some(600)), 1);
    let response = app.create(DEMO.mailbox_id, "inbox", item("x")).await;
    assert_eq!(response.headers()["retry-after"], "600");
    let body = problem(response, 503, "upstream_throttled").await;
    assert!(
        body["detail"].as_str().unwrap().contains("throttling"),
        "{body}"
    );
    assert!(app.simulator.items(DEMO.mailbox_id).is_empty());
}

#[tokio::test]
async fn a_missing_graph_permission_is_502_upstream_forbidden_with_graphs_ids() {
    let app = spawn_app().await;
    app.simulator.inject(
        FaultTarget::Graph,
        Fault::Status {
            status: 403,
            retry_after: None,
            code: Some("ErrorAccessDenied".into()),
        },
        1,
    );
    let body = problem(
        app.create(DEMO.mailbox_id, "inbox", item("x")).await,
        502,
        "upstream_forbidden",
    )
    .await;
    assert_eq!(body["graphErrorCode"], "ErrorAccessDenied");
    assert!(body["graphRequestId"].is_string(), "{body}");
}

#[tokio::test]
async fn a_failing_graph_is_502_upstream_error() {
    let app = spawn_app().await;
    app.simulator
        .inject(FaultTarget::Graph, status(500, None), 1);
    problem(
        app.create(DEMO.mailbox_id, "inbox", item("x")).await,
        502,
        "upstream_error",
    )
    .await;
    assert_eq!(app.counters().import_requests, 0);
}

#[tokio::test]
async fn a_token_endpoint_failure_is_502_upstream_auth_failed() {
    let app = spawn_app().await;
    app.simulator
        .inject(FaultTarget::Token, status(500, None), 1);
    problem(
        app.create(DEMO.mailbox_id, "inbox", item("x")).await,
        502,
        "upstream_auth_failed",
    )
    .await;
}

#[tokio::test]
async fn a_slow_graph_call_is_tried_again_then_answered_504_upstream_timeout() {
    let app = spawn_app_with(AppOptions {
        retry: RetryPolicy {
            max_attempts: 2,
            budget: Duration::from_secs(10),
        },
        ..short_timeouts()
    })
    .await;
    app.simulator
        .inject(FaultTarget::Graph, Fault::Delay(Duration::from_secs(2)), 2);
    let body = problem(
        app.create(DEMO.mailbox_address, "inbox", item("x")).await,
        504,
        "upstream_timeout",
    )
    .await;
    assert!(
        !body["detail"].as_str().unwrap().contains("may or may not"),
        "{body}"
    );
    assert_eq!(app.counters().graph_requests, 2, "one try and one retry");
    assert_eq!(app.counters().import_requests, 0);
}

#[tokio::test]
async fn a_slow_graph_call_that_answers_in_time_on_retry_succeeds() {
    let app = spawn_app_with(short_timeouts()).await;
    app.simulator
        .inject(FaultTarget::Graph, Fault::Delay(Duration::from_secs(2)), 1);
    assert_eq!(
        app.create(DEMO.mailbox_address, "inbox", item("x"))
            .await
            .status(),
        201
    );
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 1);
}

#[tokio::test]
async fn an_import_answered_too_late_is_504_outcome_unknown_though_it_was_stored() {
    let app = spawn_app_with(short_timeouts()).await;
    app.simulator
        .inject(FaultTarget::Import, Fault::Delay(Duration::from_secs(2)), 1);
    let body = problem(
        app.create(DEMO.mailbox_id, "inbox", item("x")).await,
        504,
        "outcome_unknown",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("may or may not"),
        "{body}"
    );
    assert_eq!(
        app.simulator.items(DEMO.mailbox_id).len(),
        1,
        "the item was stored"
    );
    assert_eq!(
        app.counters().import_requests,
        1,
        "an unknown outcome is never retried blindly"
    );
}

#[tokio::test]
async fn an_import_whose_connection_breaks_after_storing_is_502_outcome_unknown() {
    let app = spawn_app().await;
    app.simulator
        .inject(FaultTarget::Import, Fault::DropAfterHandling, 1);
    let body = problem(
        app.create(DEMO.mailbox_id, "inbox", item("x")).await,
        502,
        "outcome_unknown",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("may or may not"),
        "{body}"
    );
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 1);
    assert_eq!(app.counters().import_requests, 1);
}

#[tokio::test]
async fn an_import_that_fails_inside_exchange_is_outcome_unknown_not_a_plain_failure() {
    let app = spawn_app().await;
    app.simulator
        .inject(FaultTarget::Import, status(500, None), 1);
    problem(
        app.create(DEMO.mailbox_id, "inbox", item("x")).await,
        502,
        "outcome_unknown",
    )
    .await;
    assert_eq!(app.counters().import_requests, 1);
}
