//! Scripted faults (`Simulator::inject`): statuses, throttling until a date, delays and dropped
//! connections on each endpoint, consumed in order.

use std::time::Duration;

use exchange_simulator::{Fault, FaultTarget, DEMO};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    aadsts, encode, graph_error, item_stream, secret_form, spawn, spawn_importing, status_fault,
    update_body, MAILBOX_CONCURRENCY, SETTINGS,
};

#[tokio::test]
async fn an_injected_429_on_import_says_retry_after_and_mailbox_concurrency_and_stores_nothing() {
    let (t, url, body) = spawn_importing().await;
    t.sim
        .inject(FaultTarget::Import, status_fault(429, Some(7), None), 1);

    let response = t.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
    assert!(response.headers().contains_key("request-id"));
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer, json!({ "Message": MAILBOX_CONCURRENCY }));
    assert!(t.sim.items(DEMO.mailbox_id).is_empty());

    let counters = t.sim.counters();
    assert_eq!(counters.import_requests, 1);
    assert_eq!(counters.faults_injected, 1);
    assert_eq!(counters.items_created, 0);
}

#[tokio::test]
async fn an_injected_503_on_import_has_no_retry_after_and_a_code_prefixes_its_message() {
    let (t, url, body) = spawn_importing().await;
    t.sim
        .inject(FaultTarget::Import, status_fault(503, None, None), 1);
    t.sim.inject(
        FaultTarget::Import,
        status_fault(503, Some(30), Some("ErrorServerBusy")),
        1,
    );

    let plain = t.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!plain.headers().contains_key("retry-after"));
    let plain: Value = plain.json().await.unwrap();
    assert!(
        plain["Message"].as_str().unwrap().contains("503"),
        "{plain}"
    );

    let coded = t.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(coded.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(coded.headers()["retry-after"], "30");
    let coded: Value = coded.json().await.unwrap();
    assert!(
        coded["Message"]
            .as_str()
            .unwrap()
            .starts_with("ErrorServerBusy: "),
        "{coded}"
    );
    assert!(t.sim.items(DEMO.mailbox_id).is_empty());
    assert_eq!(t.sim.counters().import_requests, 2);
}

#[tokio::test]
async fn throttled_until_answers_429_with_an_http_date_that_many_seconds_ahead() {
    let (t, url, body) = spawn_importing().await;
    t.sim
        .inject(FaultTarget::Import, Fault::ThrottledUntil { secs: 120 }, 1);

    let response = t.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(retry_after.ends_with(" GMT"), "{retry_after}");
    let until = chrono::DateTime::parse_from_rfc2822(&retry_after).unwrap();
    let ahead = until
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    // The date has whole seconds and the request took some time: allow a few either way.
    assert!(
        (115..=121).contains(&ahead),
        "{retry_after} is {ahead} s ahead"
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["Message"], MAILBOX_CONCURRENCY);
    assert!(t.sim.items(DEMO.mailbox_id).is_empty());
}

#[tokio::test]
async fn a_delayed_import_is_stored_and_answered_200_no_sooner_than_the_delay() {
    let (t, url, body) = spawn_importing().await;
    let delay = Duration::from_millis(300);
    t.sim.inject(FaultTarget::Import, Fault::Delay(delay), 1);

    // Real time: the delay is the behaviour under test, and under a paused clock any timer could
    // satisfy the lower bound.
    let started = std::time::Instant::now();
    let (status, answer) = t.import(&url, &body).await;
    // A lower bound only: the answer cannot come before the simulator has waited.
    assert!(started.elapsed() >= delay);
    assert_eq!(status, StatusCode::OK, "{answer}");
    let items = t.sim.items(DEMO.mailbox_id);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].item_id, answer["itemId"].as_str().unwrap());
    let counters = t.sim.counters();
    assert_eq!(counters.items_created, 1);
    assert_eq!(counters.import_requests, 1);
    assert_eq!(counters.faults_injected, 1);
}

#[tokio::test]
async fn a_connection_dropped_after_handling_gives_the_client_an_error_but_keeps_the_item() {
    let (t, url, body) = spawn_importing().await;
    t.sim
        .inject(FaultTarget::Import, Fault::DropAfterHandling, 1);

    // The status line and headers arrive; the body breaks off, as when a proxy drops the connection.
    let response = t.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let outcome = response.bytes().await;
    assert!(
        outcome.is_err(),
        "the client got a complete answer: {outcome:?}"
    );
    assert_eq!(t.sim.items(DEMO.mailbox_id).len(), 1);
    let counters = t.sim.counters();
    assert_eq!(counters.items_created, 1);
    assert_eq!(counters.import_requests, 1);
    assert_eq!(counters.faults_injected, 1);

    // The fault is spent: the next import gets through on a fresh connection.
    assert_eq!(t.import(&url, &body).await.0, StatusCode::OK);
    assert_eq!(t.sim.items(DEMO.mailbox_id).len(), 2);
}

#[tokio::test]
async fn an_updating_import_dropped_after_handling_is_still_applied() {
    let (t, url, body) = spawn_importing().await;
    let (_, created) = t.import(&url, &body).await;
    t.sim
        .inject(FaultTarget::Import, Fault::DropAfterHandling, 1);
    let folder = body["FolderId"].as_str().unwrap();
    let update = update_body(&created, folder, &item_stream("second"));
    let outcome = t.http.post(&url).json(&update).send().await;
    let outcome = match outcome {
        Ok(response) => response.bytes().await.map(drop),
        Err(error) => Err(error),
    };
    assert!(outcome.is_err());
    let items = t.sim.items(DEMO.mailbox_id);
    assert_eq!(items[0].version, 2);
    assert_eq!(t.sim.counters().items_updated, 1);
}

#[tokio::test]
async fn an_injected_403_on_graph_is_graph_shaped_counted_and_fires_before_the_bearer_check() {
    let t = spawn().await;
    let token = t.token().await;
    t.sim
        .inject(FaultTarget::Graph, status_fault(403, None, None), 1);
    t.sim.inject(
        FaultTarget::Graph,
        status_fault(429, Some(5), Some("ApplicationThrottled")),
        1,
    );

    let forbidden = t
        .http
        .get(format!("{}{SETTINGS}", t.sim.graph_url()))
        .bearer_auth(&token)
        .header("client-request-id", "5b3c8a52-0000-4000-8000-000000000002")
        .send()
        .await
        .unwrap();
    assert_eq!(
        forbidden.headers()["client-request-id"],
        "5b3c8a52-0000-4000-8000-000000000002"
    );
    assert_eq!(
        graph_error(forbidden, StatusCode::FORBIDDEN).await,
        "Forbidden"
    );

    // No token at all: the fault still answers, since it comes before the bearer check.
    let throttled = t
        .http
        .get(format!("{}{SETTINGS}", t.sim.graph_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(throttled.headers()["retry-after"], "5");
    let request_id = throttled.headers()["request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    let throttled: Value = throttled.json().await.unwrap();
    assert_eq!(throttled["error"]["code"], "ApplicationThrottled");
    assert_eq!(throttled["error"]["message"], MAILBOX_CONCURRENCY);
    assert_eq!(
        throttled["error"]["innerError"]["request-id"],
        request_id.as_str()
    );

    assert_eq!(t.graph_get(&token, SETTINGS).await.status(), StatusCode::OK);
    let counters = t.sim.counters();
    assert_eq!(counters.graph_requests, 3);
    assert_eq!(counters.faults_injected, 2);
}

#[tokio::test]
async fn a_session_created_on_a_dropped_graph_connection_exists_though_the_client_never_saw_it() {
    let t = spawn().await;
    let token = t.token().await;
    t.sim
        .inject(FaultTarget::Graph, Fault::DropAfterHandling, 1);
    let outcome: Result<_, reqwest::Error> = async {
        t.http
            .post(format!(
                "{}/admin/exchange/mailboxes/{}/createImportSession",
                t.sim.graph_url(),
                encode(DEMO.mailbox_id)
            ))
            .bearer_auth(&token)
            .send()
            .await?
            .bytes()
            .await
    }
    .await;
    assert!(outcome.is_err(), "{outcome:?}");
    let counters = t.sim.counters();
    assert_eq!(counters.sessions_created, 1);
    assert_eq!(counters.graph_requests, 1);
}

#[tokio::test]
async fn injected_token_faults_are_aadsts_shaped_and_issue_no_token() {
    let t = spawn().await;
    t.sim
        .inject(FaultTarget::Token, status_fault(500, None, None), 1);
    t.sim.inject(
        FaultTarget::Token,
        status_fault(400, Some(3), Some("invalid_grant")),
        1,
    );
    let form = secret_form();

    let outage = t.request_token(&form).await;
    assert_eq!(
        aadsts(
            outage,
            StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable"
        )
        .await,
        90033
    );
    let refused = t.request_token(&form).await;
    assert_eq!(refused.headers()["retry-after"], "3");
    aadsts(refused, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_eq!(t.sim.counters().tokens_issued, 0);

    t.token().await;
    let counters = t.sim.counters();
    assert_eq!(counters.tokens_issued, 1);
    assert_eq!(counters.faults_injected, 2);
}

#[tokio::test]
async fn faults_are_consumed_in_injection_order_and_only_by_their_own_endpoint() {
    let (t, url, body) = spawn_importing().await;
    let token = t.token().await;
    t.sim
        .inject(FaultTarget::Import, status_fault(503, None, None), 2);
    t.sim
        .inject(FaultTarget::Graph, status_fault(403, None, None), 1);
    t.sim
        .inject(FaultTarget::Import, status_fault(429, None, None), 1);

    let settings = t.graph_get(&token, SETTINGS).await;
    assert_eq!(settings.status(), StatusCode::FORBIDDEN);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(t.import(&url, &body).await.0);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::OK,
        ]
    );
    assert_eq!(t.sim.counters().faults_injected, 4);
    assert_eq!(t.sim.items(DEMO.mailbox_id).len(), 1);
}

#[tokio::test]
async fn a_fault_hits_exactly_times_requests_and_zero_times_queues_nothing() {
    let (t, url, body) = spawn_importing().await;
    t.sim
        .inject(FaultTarget::Import, status_fault(429, None, None), 0);
    assert_eq!(t.import(&url, &body).await.0, StatusCode::OK);

    t.sim
        .inject(FaultTarget::Import, status_fault(429, None, None), 3);
    for _ in 0..3 {
        assert_eq!(t.import(&url, &body).await.0, StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(t.import(&url, &body).await.0, StatusCode::OK);
    let counters = t.sim.counters();
    assert_eq!(counters.faults_injected, 3);
    assert_eq!(counters.import_requests, 5);
    assert_eq!(counters.items_created, 2);
}

#[tokio::test]
async fn clear_faults_forgets_every_queued_fault_of_every_endpoint() {
    let (t, url, body) = spawn_importing().await;
    t.sim
        .inject(FaultTarget::Import, status_fault(503, None, None), 5);
    t.sim
        .inject(FaultTarget::Token, status_fault(500, None, None), 5);
    t.sim
        .inject(FaultTarget::Graph, Fault::DropAfterHandling, 5);
    t.sim.clear_faults();

    assert_eq!(t.import(&url, &body).await.0, StatusCode::OK);
    let token = t.token().await;
    let settings = t.graph_get(&token, SETTINGS).await;
    assert_eq!(settings.status(), StatusCode::OK);
    assert_eq!(t.sim.counters().faults_injected, 0);
}

#[tokio::test]
async fn a_wrong_method_on_the_token_endpoint_does_not_consume_its_fault() {
    let t = spawn().await;
    t.sim
        .inject(FaultTarget::Token, status_fault(503, None, None), 1);
    let wrong_method = t.http.get(t.token_url()).send().await.unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(t.sim.counters().faults_injected, 0);
    let response = t.request_token(&secret_form()).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
#[should_panic(expected = "400-599")]
async fn injecting_a_success_status_is_refused_as_a_test_bug() {
    let t = spawn().await;
    t.sim
        .inject(FaultTarget::Import, status_fault(200, None, None), 1);
}
