//! The memory budget: item bytes held across all requests stay within it.

use std::time::Duration;

use exchange_simulator::{Fault, FaultTarget, DEMO};
use futures_util::StreamExt;
use mailbox_gateway::config::ConnectionLimits;
use mailbox_gateway::fts::synthetic_item;

use tokio::io::AsyncWriteExt;

use crate::helpers::{
    chunked, encode, json, noisy_and_quiet_clients, problem, raw_chunked_upload, skip,
    spawn_app_with, until, AppOptions, TestApp, NOISY_KEY, QUIET_KEY,
};

const MIB: usize = 1024 * 1024;

fn small_budget() -> AppOptions {
    AppOptions {
        max_item_bytes: 4 * MIB as u64,
        memory_budget: MIB as u64,
        memory_wait: Duration::from_secs(1),
        ..AppOptions::default()
    }
}

#[tokio::test]
async fn a_request_that_does_not_fit_waits_briefly_then_gets_503_over_capacity() {
    let app = spawn_app_with(small_budget()).await;
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", synthetic_item("warm", 1024))
            .await
            .status(),
        201
    );
    app.simulator
        .inject(FaultTarget::Import, Fault::Delay(Duration::from_secs(3)), 1);
    let holding = app.create(DEMO.mailbox_id, "inbox", synthetic_item("big", 700 * 1024));
    let refused = async {
        // The first import holds its bytes from before it reaches the simulator until it is answered.
        until("the first import reached the simulator", || async {
            app.counters().faults_injected == 1
        })
        .await;
        let refused = app
            .create(
                DEMO.mailbox_id,
                "inbox",
                synthetic_item("second", 500 * 1024),
            )
            .await;
        // Refused: the simulator need not keep the first import waiting any longer.
        skip(Duration::from_secs(3)).await;
        refused
    };
    let (holding, refused) = tokio::join!(holding, refused);
    assert_eq!(holding.status(), 201);
    assert_eq!(refused.headers()["retry-after"], "2");
    problem(refused, 503, "over_capacity").await;
    // Once the first import has been answered, its bytes are free again.
    let ready: serde_json::Value =
        json(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(ready["memoryBudget"]["totalBytes"], MIB);
    assert_eq!(ready["memoryBudget"]["availableBytes"], MIB);
    assert_eq!(
        app.create(
            DEMO.mailbox_id,
            "inbox",
            synthetic_item("second", 500 * 1024)
        )
        .await
        .status(),
        201
    );
}

#[tokio::test]
async fn an_item_larger_than_the_whole_budget_is_413_declared_or_chunked() {
    let app = spawn_app_with(small_budget()).await;
    let big = synthetic_item("big", 2 * MIB);
    let body = problem(
        app.create(DEMO.mailbox_id, "inbox", big.clone()).await,
        413,
        "item_too_large",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("MAILBOX_GATEWAY_MEMORY_BUDGET"),
        "{body}"
    );

    // Chunked, so only counting while reading finds it too large. The answer comes before the body is
    // all sent; a client reading while it writes sees it.
    let path = format!(
        "/v1/mailboxes/{}/folders/inbox/items",
        encode(DEMO.mailbox_id)
    );
    let upload = raw_chunked_upload(&app, &path, &big, 64 * 1024).await;
    assert_eq!(upload.status, 413, "{}", upload.body);
    assert_eq!(upload.body["code"], "item_too_large");
    // The gateway drains the rest before closing, so a client that reads only after writing (reqwest)
    // sees the answer too, instead of a broken pipe.
    assert!(upload.wrote_everything);
    let response = app
        .client
        .post(app.inbox_items_url(DEMO.mailbox_id))
        .header("content-type", "application/octet-stream")
        .body(chunked(&big, 64 * 1024))
        .send()
        .await
        .unwrap();
    problem(response, 413, "item_too_large").await;
    assert_eq!(app.counters().graph_requests, 0);
}

#[tokio::test]
async fn a_client_that_goes_on_sending_after_a_refusal_is_cut_off_and_frees_its_connection() {
    let app = spawn_app_with(AppOptions {
        connections: ConnectionLimits {
            max_connections: 1,
            ..ConnectionLimits::default()
        },
        ..small_budget()
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let path = format!(
        "/v1/mailboxes/{}/folders/inbox/items",
        encode(DEMO.mailbox_id)
    );
    stream
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
                 Transfer-Encoding: chunked\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // An endless body: the gateway refuses it at the budget and drains only a bounded amount after.
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
    let started = std::time::Instant::now();
    let mut sent = 0usize;
    let cut_off = loop {
        if let Err(error) = stream.write_all(chunk.as_bytes()).await {
            break error;
        }
        sent += chunk.len();
        assert!(
            sent < 1024 * MIB,
            "a GiB went in without the gateway closing"
        );
    };
    eprintln!(
        "cut off after {} MiB in {:?}: {cut_off}",
        sent / MIB,
        started.elapsed()
    );
    // The one connection slot is free again.
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn many_concurrent_uploads_under_a_small_budget_all_succeed_when_clients_retry() {
    let app = spawn_app_with(AppOptions {
        max_item_bytes: 4 * MIB as u64,
        memory_budget: 2 * MIB as u64,
        memory_wait: Duration::from_secs(1),
        ..AppOptions::default()
    })
    .await;
    let outcomes: Vec<(usize, u32)> = futures_util::stream::iter(0..16)
        .map(|i| {
            let app = &app;
            async move {
                let mut refused = 0;
                loop {
                    let response = app
                        .create(
                            DEMO.mailbox_id,
                            "inbox",
                            synthetic_item(&format!("item {i}"), 512 * 1024),
                        )
                        .await;
                    match response.status().as_u16() {
                        201 => return (i, refused),
                        503 => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        other => panic!("unexpected {other}"),
                    }
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(outcomes.len(), 16);
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 16);
}

#[tokio::test]
async fn the_json_routes_copy_of_escaped_data_is_counted_in_the_budget() {
    let app = spawn_app_with(small_budget()).await;
    let item = synthetic_item("escaped", 300 * 1024);
    let data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &item);
    let send = |data: String| {
        let body = format!(r#"{{"FolderId":"inbox","Mode":"create","Data":"{data}"}}"#);
        app.client
            .post(app.url(&format!(
                "/v1/mailboxes/{}/importItem",
                encode(DEMO.mailbox_id)
            )))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Plain: the body (400 KiB) and the decoded item (300 KiB) fit in the 1 MiB budget.
    assert_eq!(send(data.clone()).await.unwrap().status(), 200);
    // With every '/' escaped, the parser copies Data: body, copy and item no longer fit, and the gateway
    // says so instead of holding more than its budget.
    let escaped = data.replace('/', "\\/");
    let body = problem(send(escaped).await.unwrap(), 413, "item_too_large").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("MAILBOX_GATEWAY_MEMORY_BUDGET"),
        "{body}"
    );
    let ready: serde_json::Value =
        json(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(
        ready["memoryBudget"]["availableBytes"], MIB,
        "everything given back"
    );
}

/// Sends the headers of an upload announcing `length` bytes, then one byte a second, and returns the
/// status the gateway answers with and when.
async fn trickle(app: &TestApp, key: &str, length: usize) -> (u16, std::time::Duration) {
    use tokio::io::AsyncReadExt;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let path = format!(
        "/v1/mailboxes/{}/folders/inbox/items",
        encode(DEMO.mailbox_id)
    );
    stream
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let write = async move {
        for _ in 0..length {
            if writer.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    };
    let read = async {
        let mut head = [0; 12];
        reader.read_exact(&mut head).await.unwrap();
        let status = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
        (status, started.elapsed())
    };
    tokio::select! {
        answer = read => answer,
        () = write => panic!("the whole body went in without an answer"),
    }
}

#[tokio::test]
async fn a_client_trickling_uploads_neither_starves_others_nor_holds_on_for_ever() {
    let app = spawn_app_with(AppOptions {
        access: noisy_and_quiet_clients(),
        max_item_bytes: 4 * MIB as u64,
        memory_budget: 4 * MIB as u64,
        memory_wait: Duration::from_secs(1),
        ..AppOptions::default()
    })
    .await;
    // Four uploads announcing 12 MiB in all, one byte a second: before, the first reserved 3 MiB of the
    // 4 MiB budget up front and the others waited for the rest, so every other client was refused.
    let trickling =
        futures_util::future::join_all((0..4).map(|_| trickle(&app, NOISY_KEY, 3 * MIB)));
    let quiet = async {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        app.as_client(QUIET_KEY)
            .create(
                DEMO.mailbox_id,
                "inbox",
                synthetic_item("quiet", 600 * 1024),
            )
            .await
            .status()
    };
    let (trickled, quiet) = tokio::join!(trickling, quiet);
    assert_eq!(quiet, 201, "another client's import goes on");
    for (status, after) in trickled {
        assert_eq!(status, 408, "a trickling upload is cut off");
        assert!(after < std::time::Duration::from_secs(75), "{after:?}");
    }
}
