//! Idempotency keys: replays, conflicts, waiting for the first, and clients that hang up. Every test runs
//! twice, with the keys in memory and in a Valkey/Redis server of its own.

use std::time::Duration;

use exchange_simulator::{Fault, FaultTarget, DEMO};

use crate::helpers::{
    item, json, noisy_and_quiet_clients, problem, spawn_app_with, AppOptions, Store, TestApp,
    NOISY_KEY, QUIET_KEY,
};

async fn spawn_app_on(store: Store) -> TestApp {
    spawn_app_with(AppOptions {
        store,
        ..AppOptions::default()
    })
    .await
}

async fn a_retry_with_the_same_key_gets_the_stored_response_and_no_second_copy(store: Store) {
    let app = spawn_app_on(store).await;
    let first = app.create_with_key("\"restore-42\"", "x").await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_location = first.headers()["location"].clone();
    let first = json(first).await;

    let again = app.create_with_key("\"restore-42\"", "x").await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], first_location);
    assert_eq!(json(again).await, first);
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 1);
    assert_eq!(app.counters().import_requests, 1);
}

async fn the_same_key_for_a_different_request_is_422_idempotency_key_reused(store: Store) {
    let app = spawn_app_on(store).await;
    assert_eq!(app.create_with_key("k-1", "one").await.status(), 201);
    problem(
        app.create_with_key("k-1", "two").await,
        422,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 1);
}

async fn a_retry_while_the_first_still_runs_waits_for_its_outcome(store: Store) {
    let app = spawn_app_on(store).await;
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("warm"))
            .await
            .status(),
        201
    );
    app.simulator
        .inject(FaultTarget::Import, Fault::Delay(Duration::from_secs(1)), 1);
    let first = app.create_with_key("k-wait", "x");
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.create_with_key("k-wait", "x").await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status(), 201);
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(json(first).await, json(second).await);
    assert_eq!(
        app.counters().import_requests,
        2,
        "the warm-up and one import"
    );
}

async fn a_client_that_hangs_up_does_not_cancel_the_import_and_its_retry_gets_the_answer(
    store: Store,
) {
    let app = spawn_app_on(store).await;
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("warm"))
            .await
            .status(),
        201
    );
    app.simulator
        .inject(FaultTarget::Import, Fault::Delay(Duration::from_secs(1)), 1);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(app.inbox_items_url(DEMO.mailbox_id))
        .header("content-type", "application/octet-stream")
        .header("idempotency-key", "k-hangup")
        .body(item("hang up"))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");

    let retry = app.create_with_key("k-hangup", "hang up").await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retried = json(retry).await;
    let stored = app.simulator.items(DEMO.mailbox_id);
    assert_eq!(stored.len(), 2, "the warm-up and exactly one copy");
    assert!(stored.iter().any(|i| i.item_id == retried["itemId"]));
}

async fn an_unknown_outcome_is_kept_under_the_key_so_a_retry_never_duplicates(store: Store) {
    let app = spawn_app_on(store).await;
    app.simulator
        .inject(FaultTarget::Import, Fault::DropAfterHandling, 1);
    let first = problem(
        app.create_with_key("k-unknown", "x").await,
        502,
        "outcome_unknown",
    )
    .await;
    let again = app.create_with_key("k-unknown", "x").await;
    assert_eq!(again.status(), 502);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    // The stored answer, as it was: its requestId names the request that ran.
    assert_eq!(json(again).await, first);
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 1);
    assert_eq!(app.counters().import_requests, 1);
}

async fn an_answer_that_did_nothing_frees_the_key_for_a_retry(store: Store) {
    let app = spawn_app_on(store).await;
    app.simulator.inject(
        FaultTarget::Import,
        Fault::Status {
            status: 429,
            retry_after: Some(600),
            code: None,
        },
        1,
    );
    problem(
        app.create_with_key("k-throttled", "x").await,
        503,
        "upstream_throttled",
    )
    .await;
    let retry = app.create_with_key("k-throttled", "x").await;
    // The mailbox is held for 600 s after that 429, beyond the retry budget: still refused, not replayed.
    assert!(retry.headers().get("idempotent-replayed").is_none());
    problem(retry, 503, "upstream_throttled").await;
    assert!(app.simulator.items(DEMO.mailbox_id).is_empty());
}

async fn a_malformed_key_is_400(store: Store) {
    let app = spawn_app_on(store).await;
    problem(
        app.create_with_key("has space", "x").await,
        400,
        "invalid_idempotency_key",
    )
    .await;
    assert_eq!(app.counters().graph_requests, 0);
}

async fn a_retry_that_outwaits_a_long_first_request_gets_409_in_flight_then_the_answer(
    store: Store,
) {
    let app = spawn_app_with(AppOptions {
        store,
        retry: mailbox_gateway::config::RetryPolicy {
            max_attempts: 5,
            budget: Duration::from_secs(1),
        },
        ..AppOptions::default()
    })
    .await;
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("warm"))
            .await
            .status(),
        201
    );
    app.simulator
        .inject(FaultTarget::Import, Fault::Delay(Duration::from_secs(3)), 1);
    let first = app.create_with_key("k-long", "x");
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.create_with_key("k-long", "x").await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(second.headers()["retry-after"], "1");
    problem(second, 409, "idempotency_key_in_flight").await;
    assert_eq!(first.status(), 201);
    let first = json(first).await;
    let third = app.create_with_key("k-long", "x").await;
    assert_eq!(third.headers()["idempotent-replayed"], "true");
    assert_eq!(json(third).await, first);
    assert_eq!(
        app.counters().import_requests,
        2,
        "the warm-up and one import"
    );
}

async fn one_client_cannot_push_out_another_clients_keys(store: Store) {
    let app = spawn_app_with(AppOptions {
        store,
        access: noisy_and_quiet_clients(),
        idempotency: mailbox_gateway::config::IdempotencySettings {
            capacity: 3,
            ..Default::default()
        },
        ..AppOptions::default()
    })
    .await;
    let (noisy, quiet) = (app.as_client(NOISY_KEY), app.as_client(QUIET_KEY));
    let first = quiet.create_with_key("quiet-1", "quiet").await;
    assert_eq!(first.status(), 201);
    let first = json(first).await;
    for i in 0..3 {
        let key = format!("noisy-{i}");
        assert_eq!(noisy.create_with_key(&key, &key).await.status(), 201);
    }
    // The noisy client's fourth live key is refused rather than any key dropped early.
    let refused = noisy.create_with_key("noisy-3", "noisy-3").await;
    assert_eq!(refused.headers()["retry-after"], "60");
    problem(refused, 429, "idempotency_keys_exhausted").await;
    // Its own keys still replay, and so does the quiet client's.
    let again = noisy.create_with_key("noisy-0", "noisy-0").await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again = quiet.create_with_key("quiet-1", "quiet").await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(json(again).await, first);
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 4);
}

/// Runs each named test once per store.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Store::Memory).await
            })*
        }
        mod in_redis {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Store::Redis).await
            })*
        }
    };
}

on_both_stores!(
    a_retry_with_the_same_key_gets_the_stored_response_and_no_second_copy,
    the_same_key_for_a_different_request_is_422_idempotency_key_reused,
    a_retry_while_the_first_still_runs_waits_for_its_outcome,
    a_client_that_hangs_up_does_not_cancel_the_import_and_its_retry_gets_the_answer,
    an_unknown_outcome_is_kept_under_the_key_so_a_retry_never_duplicates,
    an_answer_that_did_nothing_frees_the_key_for_a_retry,
    a_malformed_key_is_400,
    a_retry_that_outwaits_a_long_first_request_gets_409_in_flight_then_the_answer,
    one_client_cannot_push_out_another_clients_keys,
);
