//! Several gateways sharing one Valkey/Redis store and one simulator, as replicas behind a load balancer:
//! the mailbox limit, idempotency keys and their failure modes hold across them.

use std::process::Stdio;
use std::time::{Duration, Instant};

use exchange_simulator::{Behaviour, Fault, FaultTarget, DEMO};
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{
    item, json, problem, spawn_gateway, spawn_replicas, AppOptions, Store, TestApp,
};

/// An upstream that enforces Exchange's 4 requests per mailbox and takes 150 ms per request.
fn exchange_like(simulator: &exchange_simulator::Simulator) {
    simulator
        .set_behaviour(Behaviour {
            latency_ms: 150,
            max_concurrent_per_mailbox: Some(4),
            ..Behaviour::default()
        })
        .unwrap();
}

#[tokio::test]
async fn imports_spread_over_three_replicas_keep_the_mailbox_limit_and_all_succeed() {
    let (replicas, _redis) = spawn_replicas(3, AppOptions::default()).await;
    exchange_like(&replicas[0].simulator);
    let statuses = creates_spread_over(&replicas, "item", 240, 48).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let counters = replicas[0].counters();
    assert_eq!(counters.concurrency_violations, 0, "{counters:?}");
    assert!(counters.max_in_flight[DEMO.mailbox_id] <= 4, "{counters:?}");
    assert_eq!(replicas[0].simulator.items(DEMO.mailbox_id).len(), 240);
}

/// Sends `count` imports, `at_once` at a time, spread over `replicas` in turn; answers their statuses.
async fn creates_spread_over(
    replicas: &[TestApp],
    prefix: &str,
    count: usize,
    at_once: usize,
) -> Vec<u16> {
    futures_util::stream::iter(0..count)
        .map(|i| async move {
            replicas[i % replicas.len()]
                .create(DEMO.mailbox_id, "inbox", item(&format!("{prefix} {i}")))
                .await
                .status()
                .as_u16()
        })
        .buffer_unordered(at_once)
        .collect()
        .await
}

/// Sends `count` imports at once to `app`; answers each one's status and when it came, since `started`.
async fn timed_creates(
    app: &TestApp,
    prefix: &str,
    count: usize,
    started: Instant,
) -> Vec<(u16, Duration)> {
    futures_util::stream::iter(0..count)
        .map(|i| async move {
            let status = app
                .create(DEMO.mailbox_id, "inbox", item(&format!("{prefix} {i}")))
                .await
                .status();
            (status.as_u16(), started.elapsed())
        })
        .buffer_unordered(count)
        .collect()
        .await
}

#[tokio::test]
async fn a_replica_queue_is_not_starved_by_a_busier_one() {
    let (replicas, _redis) = spawn_replicas(2, AppOptions::default()).await;
    exchange_like(&replicas[0].simulator);
    let started = Instant::now();
    let flood = timed_creates(&replicas[0], "a", 40, started);
    let late = async {
        // The flood has taken every permit and queued the rest before these arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        timed_creates(&replicas[1], "b", 4, started).await
    };
    let (mut flood, late) = tokio::join!(flood, late);
    assert!(flood.iter().chain(&late).all(|(s, _)| *s == 201));
    flood.sort_by_key(|(_, at)| *at);
    let last_late = late.iter().map(|(_, at)| *at).max().unwrap();
    // First come, first served across replicas: the late four go ahead of the flood's second half.
    assert!(
        last_late < flood[20].1,
        "the late replica finished at {last_late:?}, the flood's 21st at {:?}",
        flood[20].1
    );
}

#[tokio::test]
async fn a_key_replays_on_another_replica_sequentially_and_concurrently_with_one_import() {
    let (replicas, _redis) = spawn_replicas(3, AppOptions::default()).await;
    let first = replicas[0].create_with_key("k-seq", "seq").await;
    assert_eq!(first.status(), 201);
    let first = json(first).await;
    let again = replicas[1].create_with_key("k-seq", "seq").await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(json(again).await, first);
    assert_eq!(replicas[0].counters().import_requests, 1);

    // Six times over, one key sent to all three replicas at once.
    for round in 0..6 {
        let key = format!("k-race-{round}");
        let answers = futures_util::future::join_all(
            replicas.iter().map(|app| app.create_with_key(&key, &key)),
        )
        .await;
        let mut ids = Vec::new();
        for answer in answers {
            assert_eq!(answer.status(), 201);
            ids.push(json(answer).await["itemId"].clone());
        }
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    }
    assert_eq!(replicas[0].counters().import_requests, 7);
    assert_eq!(replicas[0].simulator.items(DEMO.mailbox_id).len(), 7);
    assert_eq!(replicas[0].counters().duplicate_items, 0);
}

#[tokio::test]
async fn a_restarted_replica_still_replays_a_key() {
    let (mut replicas, redis) = spawn_replicas(1, AppOptions::default()).await;
    let replica = replicas.pop().unwrap();
    let first = json(replica.create_with_key("k-restart", "x").await).await;
    let simulator = replica.simulator.clone();
    replica.stop().await.unwrap();
    let restarted = spawn_gateway(&AppOptions::default(), simulator, Some(&redis.url())).await;
    let again = restarted.create_with_key("k-restart", "x").await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(json(again).await, first);
    assert_eq!(restarted.counters().import_requests, 1);
}

#[tokio::test]
async fn a_killed_replica_frees_its_permits_and_its_key_reads_outcome_unknown_after_the_lease() {
    let (mut replicas, redis) = spawn_replicas(1, AppOptions::default()).await;
    let survivor = replicas.pop().unwrap();
    let simulator = survivor.simulator.clone();
    // The doomed replica is the real binary, so that it can die as a process does: SIGKILL, no clean-up.
    let mut doomed = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailbox-gateway"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("RUST_LOG", "info")
        .env("AZURE_TENANT_ID", DEMO.tenant_id)
        .env("AZURE_CLIENT_ID", DEMO.client_id)
        .env("AZURE_CLIENT_SECRET", DEMO.client_secret)
        .env("AZURE_AUTHORITY_HOST", simulator.base_url())
        .env("MAILBOX_GATEWAY_GRAPH_URL", simulator.graph_url())
        .env("MAILBOX_GATEWAY_IMPORT_HOSTS", simulator.base_url())
        .env("MAILBOX_GATEWAY_REDIS_URL", redis.url())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(doomed.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the replica starts");
        let line = without_colours(&line);
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let doomed_app = TestApp::at(&format!("http://{address}"), simulator.clone());
    // Warm the doomed replica's caches, then make its next four imports hang upstream.
    assert_eq!(
        doomed_app
            .create(DEMO.mailbox_id, "inbox", item("warm"))
            .await
            .status(),
        201
    );
    simulator.inject(
        FaultTarget::Import,
        Fault::Delay(Duration::from_secs(120)),
        4,
    );
    let mut hanging = Vec::new();
    for i in 0..3 {
        let app = doomed_app.clone_client();
        hanging.push(tokio::spawn(async move {
            app.create(DEMO.mailbox_id, "inbox", item(&format!("hang {i}")))
                .await
        }));
    }
    let keyed = doomed_app.clone_client();
    hanging.push(tokio::spawn(async move {
        keyed.create_with_key("k-doomed", "doomed").await
    }));
    // Wait until all four hold a permit and are at the upstream.
    while simulator.counters().import_requests < 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill().await.unwrap();
    for request in hanging {
        let _ = request.await;
    }

    // The survivor gets the mailbox's permits back once their leases lapse, within its queue wait.
    let after = survivor
        .create(DEMO.mailbox_id, "inbox", item("after"))
        .await;
    assert_eq!(after.status(), 201);
    // The key the dead replica held is never run again: it reads outcome_unknown.
    let retry = survivor.create_with_key("k-doomed", "doomed").await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    problem(retry, 502, "outcome_unknown").await;
    assert_eq!(
        simulator.counters().import_requests,
        6,
        "warm-up, four hung, one after"
    );
}

#[tokio::test]
async fn when_the_store_dies_keyed_requests_get_503_unkeyed_ones_go_on_and_it_recovers() {
    let (mut replicas, mut redis) = spawn_replicas(1, AppOptions::default()).await;
    let app = replicas.pop().unwrap();
    assert_eq!(app.create_with_key("k-before", "x").await.status(), 201);
    redis.kill();

    let refused = app.create_with_key("k-during", "x").await;
    assert_eq!(refused.headers()["retry-after"], "5");
    problem(refused, 503, "shared_state_unavailable").await;
    let imports = app.counters().import_requests;
    assert_eq!(imports, 1, "a refused keyed request costs no import");
    for i in 0..3 {
        let unkeyed = app
            .create(DEMO.mailbox_id, "inbox", item(&format!("degraded {i}")))
            .await;
        assert_eq!(
            unkeyed.status(),
            201,
            "unkeyed imports go on while the store is down"
        );
    }
    let ready: serde_json::Value =
        json(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(
        ready["sharedState"],
        serde_json::json!({"store": "redis", "up": false})
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("mailbox_gateway_shared_state_up 0"),
        "{metrics}"
    );

    redis.restart().await;
    let restarted = Instant::now();
    let recovered = loop {
        let answer = app.create_with_key("k-after", "x").await;
        if answer.status() == 201 {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "keyed imports still fail 10 s after the store came back: {}",
            answer.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("keyed imports worked again {recovered:?} after the store restarted");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("mailbox_gateway_shared_state_up 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_mailbox_limit_holds_on_either_store() {
    for store in [Store::Memory, Store::Redis] {
        let app = crate::helpers::spawn_app_with(AppOptions {
            store,
            ..AppOptions::default()
        })
        .await;
        exchange_like(&app.simulator);
        let statuses = creates_spread_over(std::slice::from_ref(&app), "item", 24, 24).await;
        assert!(
            statuses.iter().all(|s| *s == 201),
            "{store:?}: {statuses:?}"
        );
        let counters = app.counters();
        assert_eq!(counters.concurrency_violations, 0, "{store:?}");
        assert_eq!(counters.max_in_flight[DEMO.mailbox_id], 4, "{store:?}");
    }
}

/// How many mailbox permits the store counts as held, over every mailbox.
async fn permits_held_in_the_store(redis: &crate::helpers::RedisServer) -> i64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::Script::new(
        "local n = 0
         for _, key in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('ZCARD', key) end
         return n",
    )
    .arg("mailbox-gateway:mailbox:*:holders")
    .invoke_async(&mut connection)
    .await
    .unwrap()
}

#[tokio::test]
async fn permits_given_back_reach_the_store_with_the_next_turn_or_on_their_own() {
    let (replicas, redis) = spawn_replicas(2, AppOptions::default()).await;
    exchange_like(&replicas[0].simulator);
    // One after another (each give-back rides with the next request's turn), then a burst over both
    // replicas, then nothing: the last give-backs go on their own.
    for i in 0..5 {
        let created = replicas[0]
            .create(DEMO.mailbox_id, "inbox", item(&format!("one by one {i}")))
            .await;
        assert_eq!(created.status(), 201);
    }
    let statuses = creates_spread_over(&replicas, "burst", 12, 12).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    assert_eq!(replicas[0].counters().concurrency_violations, 0);
    // Not one permit is left for its lease (15 s) to free: all were given back.
    let mut held = permits_held_in_the_store(&redis).await;
    for _ in 0..50 {
        if held == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        held = permits_held_in_the_store(&redis).await;
    }
    assert_eq!(
        held, 0,
        "permits still held in the store after every answer"
    );
}

#[tokio::test]
async fn a_throttle_seen_by_one_replica_holds_the_mailbox_on_every_replica() {
    let (replicas, _redis) = spawn_replicas(2, AppOptions::default()).await;
    for replica in &replicas {
        assert_eq!(
            replica
                .create(DEMO.mailbox_id, "inbox", item("warm"))
                .await
                .status(),
            201
        );
    }
    replicas[0].simulator.inject(
        FaultTarget::Import,
        Fault::Status {
            status: 429,
            retry_after: Some(600),
            code: None,
        },
        1,
    );
    problem(
        replicas[0]
            .create(DEMO.mailbox_id, "inbox", item("throttled"))
            .await,
        503,
        "upstream_throttled",
    )
    .await;
    // The other replica honours the hold without asking Graph.
    let imports = replicas[0].counters().import_requests;
    let refused = replicas[1]
        .create(DEMO.mailbox_id, "inbox", item("other"))
        .await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 590, "{retry_after}");
    problem(refused, 503, "upstream_throttled").await;
    assert_eq!(replicas[1].counters().import_requests, imports);
}

/// A log line without ANSI colour sequences.
fn without_colours(line: &str) -> String {
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

#[tokio::test]
async fn the_upload_window_is_the_mailboxs_across_replicas() {
    use mailbox_gateway::config::{Pacing, RetryPolicy};
    use mailbox_gateway::fts::synthetic_item;
    let options = AppOptions {
        pacing: Pacing {
            upload_bytes_per_5_min: 12 * 1024,
            ..Pacing::default()
        },
        retry: RetryPolicy {
            max_attempts: 5,
            budget: Duration::from_secs(2),
        },
        ..AppOptions::default()
    };
    let (replicas, _redis) = spawn_replicas(2, options).await;
    // 8 KiB through the first replica takes two thirds of the mailbox's 5-minute window...
    let first = replicas[0]
        .create(DEMO.mailbox_id, "inbox", synthetic_item("one", 8 * 1024))
        .await;
    assert_eq!(first.status(), 201);
    // ...so 8 KiB more through the second does not fit before its budget runs out: the window is the
    // mailbox's, not each replica's.
    let second = replicas[1]
        .create(DEMO.mailbox_id, "inbox", synthetic_item("two", 8 * 1024))
        .await;
    let retry_after: u64 = second.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry_after > 200,
        "until the first upload leaves the window: {retry_after}"
    );
    problem(second, 503, "mailbox_busy").await;
    assert_eq!(replicas[0].counters().import_requests, 1);
}
