//! Surviving Exchange Online's bad days: retries, per-mailbox pacing, slow clients and shutdown.

use std::time::{Duration, Instant};

use exchange_simulator::{Fault, FaultTarget, DEMO};
use mailbox_gateway::config::{Pacing, Timeouts};

use crate::helpers::{item, json, problem, skip, spawn_app, spawn_app_with, until, AppOptions};

fn status(status: u16, retry_after: Option<u64>) -> Fault {
    Fault::Status {
        status,
        retry_after,
        code: None,
    }
}

#[tokio::test]
async fn a_429_with_retry_after_in_seconds_is_waited_out_and_the_item_imported_once() {
    let app = spawn_app().await;
    app.simulator
        .inject(FaultTarget::Import, status(429, Some(1)), 1);
    let started = Instant::now();
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("x"))
            .await
            .status(),
        201
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    assert_eq!(app.counters().import_requests, 2);
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 1);
}

#[tokio::test]
async fn a_429_with_retry_after_as_an_http_date_is_waited_out() {
    let app = spawn_app().await;
    app.simulator
        .inject(FaultTarget::Import, Fault::ThrottledUntil { secs: 2 }, 1);
    let started = Instant::now();
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("x"))
            .await
            .status(),
        201
    );
    // HTTP dates have whole seconds, so the wait is at least one second.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 1);
}

#[tokio::test]
async fn a_503_without_retry_after_is_retried_with_backoff() {
    let app = spawn_app().await;
    app.simulator
        .inject(FaultTarget::Import, status(503, None), 2);
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("x"))
            .await
            .status(),
        201
    );
    assert_eq!(app.counters().import_requests, 3);
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 1);
}

#[tokio::test]
async fn retries_stop_when_the_attempts_are_spent() {
    let app = spawn_app().await;
    app.simulator
        .inject(FaultTarget::Import, status(503, Some(0)), 10);
    let response = app.create(DEMO.mailbox_id, "inbox", item("x")).await;
    assert!(response.headers().contains_key("retry-after"));
    problem(response, 503, "upstream_throttled").await;
    // Five attempts of the import itself.
    assert_eq!(app.counters().import_requests, 5);
    assert!(app.simulator.items(DEMO.mailbox_id).is_empty());
}

#[tokio::test]
async fn a_throttled_mailbox_holds_its_other_requests_while_other_mailboxes_carry_on() {
    let app = spawn_app().await;
    let bob = app.simulator.add_mailbox("bob@contoso.com");
    // Warm up both mailboxes so only imports remain.
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("warm"))
            .await
            .status(),
        201
    );
    assert_eq!(app.create(&bob, "inbox", item("warm")).await.status(), 201);
    app.simulator
        .inject(FaultTarget::Import, status(429, Some(2)), 1);
    let throttled = app.create(DEMO.mailbox_id, "inbox", item("first"));
    // Both start once the gateway has the 429: it counts the answer as it arrives, holds the mailbox
    // as soon as it has read the body, and a request needs far longer to reach the mailbox's queue.
    let throttling_seen = || {
        until("the gateway got its 429", || async {
            app.metrics().await.contains(
                r#"mailbox_gateway_upstream_requests_total{endpoint="import",status="429"} 1"#,
            )
        })
    };
    let held = async {
        throttling_seen().await;
        let started = Instant::now();
        let response = app.create(DEMO.mailbox_id, "inbox", item("second")).await;
        (response.status(), started.elapsed())
    };
    let other = async {
        throttling_seen().await;
        let started = Instant::now();
        let response = app.create(&bob, "inbox", item("other")).await;
        (response.status(), started.elapsed())
    };
    let (throttled, (held_status, held_for), (other_status, other_took)) =
        tokio::join!(throttled, held, other);
    assert_eq!(throttled.status(), 201);
    assert_eq!(held_status, 201);
    assert_eq!(other_status, 201);
    assert!(
        held_for >= Duration::from_millis(1500),
        "held only {held_for:?}"
    );
    assert!(
        other_took < held_for,
        "bob's mailbox was not held ({other_took:?})"
    );
    // The held request never ran into the wall: one 429 in all.
    assert_eq!(app.counters().faults_injected, 1);
    assert_eq!(app.counters().import_requests, 2 + 3 + 1);
}

#[tokio::test]
async fn a_request_that_cannot_get_its_mailboxs_turn_in_time_gets_503_mailbox_busy() {
    let app = spawn_app_with(AppOptions {
        pacing: Pacing {
            mailbox_concurrency: 1,
            queue_timeout: Duration::from_millis(500),
            ..Pacing::default()
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
        .inject(FaultTarget::Import, Fault::Delay(Duration::from_secs(2)), 1);
    let slow = app.create(DEMO.mailbox_id, "inbox", item("slow"));
    let queued = async {
        // The slow import holds the mailbox's one turn from before it reaches the simulator.
        until("the slow import reached the simulator", || async {
            app.counters().faults_injected == 1
        })
        .await;
        let queued = app.create(DEMO.mailbox_id, "inbox", item("queued")).await;
        // Refused: the simulator need not keep the slow import waiting any longer.
        skip(Duration::from_secs(2)).await;
        queued
    };
    let (slow, queued) = tokio::join!(slow, queued);
    assert_eq!(slow.status(), 201);
    assert!(queued.headers().contains_key("retry-after"));
    problem(queued, 503, "mailbox_busy").await;
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 2);
}

#[tokio::test]
async fn an_upload_that_stalls_is_cut_off_with_408() {
    let app = spawn_app_with(AppOptions {
        timeouts: Timeouts {
            client_body: Duration::from_millis(300),
            ..Timeouts::default()
        },
        ..AppOptions::default()
    })
    .await;
    let stream = item("slow");
    let (first, rest) = stream.split_at(10);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    let chunks = futures_util::stream::unfold(0, move |step| {
        let (first, rest) = (first.clone(), rest.clone());
        async move {
            match step {
                0 => Some((Ok::<_, std::io::Error>(first), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Some((Ok(rest), 2))
                }
                _ => None,
            }
        }
    });
    let response = app
        .client
        .post(app.inbox_items_url(DEMO.mailbox_address))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    problem(response, 408, "request_timeout").await;
    assert_eq!(app.counters().graph_requests, 0);
}

#[tokio::test]
async fn shutdown_lets_in_flight_imports_finish_and_answers_them() {
    let app = spawn_app().await;
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("warm"))
            .await
            .status(),
        201
    );
    app.simulator
        .inject(FaultTarget::Import, Fault::Delay(Duration::from_secs(1)), 1);
    let in_flight = {
        let (client, url) = (app.client.clone(), app.inbox_items_url(DEMO.mailbox_id));
        tokio::spawn(async move {
            client
                .post(url)
                .header("content-type", "application/octet-stream")
                .body(item("in flight"))
                .send()
                .await
        })
    };
    // Stored: the simulator now waits out the delay before it answers.
    until("the simulator stored the import", || async {
        app.simulator.items(DEMO.mailbox_id).len() == 2
    })
    .await;
    let simulator = app.simulator.clone();
    let address = app.address.clone();
    let draining = async {
        // Once the gateway refuses connections it is draining, and the import is what it waits for:
        // the simulator need not keep it waiting any longer.
        until("the gateway stopped accepting", || async {
            let host = address.trim_start_matches("http://");
            tokio::net::TcpStream::connect(host).await.is_err()
        })
        .await;
        skip(Duration::from_secs(1)).await;
    };
    let (stopped, ()) = tokio::join!(app.stop(), draining);
    stopped.unwrap();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 201);
    let created = json(response).await;
    let stored = simulator.items(DEMO.mailbox_id);
    assert!(stored.iter().any(|i| i.item_id == created["itemId"]));
    assert!(
        reqwest::get(format!("{address}/healthz")).await.is_err(),
        "no longer accepting"
    );
}
