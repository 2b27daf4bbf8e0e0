//! The behaviour (`Simulator::set_behaviour`): random throttling, outages and dropped answers, the
//! per-mailbox concurrency limit, latency, duplicates, lifetimes set at run time and sink mode.

use std::collections::BTreeMap;
use std::time::Duration;

use exchange_simulator::{Behaviour, Fault, FaultTarget, DEMO};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{
    create_body, encode, item_stream, rates, spawn_importing, status_fault, update_body, TestSim,
    MAILBOX_CONCURRENCY, SETTINGS,
};

#[tokio::test]
async fn a_throttle_or_unavailable_rate_of_one_refuses_every_import_with_retry_after_and_stores_nothing(
) {
    struct Case {
        case: &'static str,
        behaviour: Behaviour,
        status: StatusCode,
        retry_after: &'static str,
        /// The whole answer's `Message`, where it is documented.
        message: Option<&'static str>,
        /// `Counters::throttled` and `Counters::unavailable` after five imports.
        throttled: u64,
        unavailable: u64,
    }
    let cases = [
        Case {
            case: "throttle_rate 1.0",
            behaviour: Behaviour {
                throttle_retry_after_secs: 7,
                ..rates(1.0, 0.0, 0.0)
            },
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: "7",
            message: Some(MAILBOX_CONCURRENCY),
            throttled: 5,
            unavailable: 0,
        },
        Case {
            case: "unavailable_rate 1.0",
            behaviour: rates(0.0, 1.0, 0.0),
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: "1",
            message: None,
            throttled: 0,
            unavailable: 5,
        },
    ];
    for case in cases {
        let (t, url, body) = spawn_importing().await;
        t.set(case.behaviour);
        for _ in 0..5 {
            let (status, headers, answer) = t.try_import(&url, &body).await.unwrap();
            assert_eq!(status, case.status, "{}", case.case);
            assert_eq!(headers["retry-after"], case.retry_after, "{}", case.case);
            assert!(answer["Message"].is_string(), "{}: {answer}", case.case);
            if let Some(message) = case.message {
                assert_eq!(answer, json!({ "Message": message }), "{}", case.case);
            }
        }
        assert!(t.sim.items(DEMO.mailbox_id).is_empty(), "{}", case.case);
        let counters = t.sim.counters();
        assert_eq!(
            (
                counters.throttled,
                counters.unavailable,
                counters.import_requests,
                counters.items_created,
                counters.faults_injected,
            ),
            (case.throttled, case.unavailable, 5, 0, 0),
            "{}: (throttled, unavailable, import_requests, items_created, faults_injected)",
            case.case
        );
    }
}

#[tokio::test]
async fn a_drop_rate_of_one_stores_every_import_and_breaks_every_answer_without_leaking_slots() {
    let (t, url, body) = spawn_importing().await;
    // With one slot, a slot the broken connections failed to give back would turn the next import
    // into a 429.
    t.set(Behaviour {
        max_concurrent_per_mailbox: Some(1),
        ..rates(0.0, 0.0, 1.0)
    });
    for _ in 0..5 {
        let outcome = t.try_import(&url, &body).await;
        assert!(outcome.is_err(), "the client got an answer: {outcome:?}");
    }
    assert_eq!(t.sim.items(DEMO.mailbox_id).len(), 5);
    let counters = t.sim.counters();
    assert_eq!(counters.dropped_after_store, 5);
    assert_eq!(counters.items_created, 5);
    assert_eq!(counters.throttled, 0);
    assert_eq!(counters.concurrency_violations, 0);
}

#[tokio::test]
async fn rates_of_zero_never_misbehave_and_an_unstored_import_is_not_dropped() {
    let (t, url, body) = spawn_importing().await;
    t.set(Behaviour {
        seed: Some(1),
        ..rates(0.0, 0.0, 0.0)
    });
    for _ in 0..50 {
        assert_eq!(t.import(&url, &body).await.0, StatusCode::OK);
    }
    // A drop only breaks answers that stored something: a refused import is answered in full.
    t.set(rates(0.0, 0.0, 1.0));
    let (status, _, _) = t
        .try_import(&format!("{url}x"), &body)
        .await
        .expect("a 401 is answered, not dropped");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let counters = t.sim.counters();
    assert_eq!(counters.items_created, 50);
    assert_eq!(counters.throttled, 0);
    assert_eq!(counters.unavailable, 0);
    assert_eq!(counters.dropped_after_store, 0);
}

#[tokio::test]
async fn a_seeded_half_throttle_rate_throttles_about_half_and_replays_for_the_same_seed() {
    let (t, url, body) = spawn_importing().await;
    let half = |seed| Behaviour {
        seed: Some(seed),
        ..rates(0.5, 0.0, 0.0)
    };
    async fn run(t: &TestSim, url: &str, body: &Value) -> Vec<bool> {
        let mut throttled = Vec::new();
        for _ in 0..200 {
            let status = t.import(url, body).await.0;
            assert!(
                status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
                "{status}"
            );
            throttled.push(status == StatusCode::TOO_MANY_REQUESTS);
        }
        throttled
    }

    t.set(half(42));
    let first = run(&t, &url, &body).await;
    let count = first.iter().filter(|&&throttled| throttled).count();
    assert!((60..=140).contains(&count), "{count} of 200 throttled");
    assert_eq!(t.sim.counters().throttled, count as u64);

    // Setting the same seed again restarts the sequence.
    t.set(half(42));
    assert_eq!(run(&t, &url, &body).await, first);
    t.set(half(43));
    assert_ne!(run(&t, &url, &body).await, first);
}

#[tokio::test]
async fn scripted_faults_take_precedence_over_the_random_behaviour() {
    let (t, url, body) = spawn_importing().await;
    t.set(rates(1.0, 0.0, 0.0));
    t.sim
        .inject(FaultTarget::Import, status_fault(503, None, None), 1);
    t.sim
        .inject(FaultTarget::Import, Fault::DropAfterHandling, 1);

    let (status, _, _) = t.try_import(&url, &body).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // The scripted drop lets the import through to be stored, despite the throttle rate of 1.0.
    assert!(t.try_import(&url, &body).await.is_err());
    let (status, _, _) = t.try_import(&url, &body).await.unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    assert_eq!(t.sim.items(DEMO.mailbox_id).len(), 1);
    let counters = t.sim.counters();
    assert_eq!(counters.faults_injected, 2);
    assert_eq!(counters.dropped_after_store, 1);
    assert_eq!(counters.throttled, 1);
    assert_eq!(counters.unavailable, 0, "scripted 503s are not random ones");
    assert_eq!(counters.import_requests, 3);
}

// The concurrency and latency tests below run on real time: a latency is a wait, the behaviour under
// test, and a paused tokio clock advances by itself whenever the runtime waits on a socket, which would
// end the latency before the other requests arrive.

#[tokio::test]
async fn six_concurrent_imports_to_one_mailbox_admit_four_and_refuse_two_for_mailbox_concurrency() {
    let (t, url, body) = spawn_importing().await;
    // The latency holds the admitted imports in flight while the others arrive.
    t.set(Behaviour {
        latency_ms: 500,
        ..Behaviour::default()
    });
    let imports = (0..6).map(|_| t.try_import(&url, &body));
    let outcomes = futures_util::future::join_all(imports).await;

    let mut admitted = 0;
    let mut refused = 0;
    for outcome in outcomes {
        let (status, headers, answer) = outcome.unwrap();
        match status {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_eq!(headers["retry-after"], "1");
                assert_eq!(answer, json!({ "Message": MAILBOX_CONCURRENCY }));
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert_eq!((admitted, refused), (4, 2));
    assert_eq!(t.sim.items(DEMO.mailbox_id).len(), 4);
    let counters = t.sim.counters();
    assert_eq!(counters.max_in_flight[DEMO.mailbox_id], 4);
    assert_eq!(counters.concurrency_violations, 2);
    assert_eq!(counters.throttled, 2);
    assert_eq!(counters.import_requests, 6);
}

#[tokio::test]
async fn six_concurrent_imports_spread_over_two_mailboxes_are_all_admitted() {
    let (t, url, body) = spawn_importing().await;
    let bob = t.sim.add_mailbox("bob@contoso.com");
    let token = t.token().await;
    let bob_url = t.import_url(&token, &bob).await;
    let bob_body = create_body(&t.sim.folder_id(&bob, "inbox").unwrap(), &item_stream("b"));
    t.set(Behaviour {
        latency_ms: 500,
        ..Behaviour::default()
    });
    let imports = (0..6).map(|i| {
        if i % 2 == 0 {
            t.try_import(&url, &body)
        } else {
            t.try_import(&bob_url, &bob_body)
        }
    });
    let outcomes = futures_util::future::join_all(imports).await;

    for outcome in outcomes {
        assert_eq!(outcome.unwrap().0, StatusCode::OK);
    }
    let counters = t.sim.counters();
    assert_eq!(counters.max_in_flight[DEMO.mailbox_id], 3);
    assert_eq!(counters.max_in_flight[&bob], 3);
    assert_eq!(counters.concurrency_violations, 0);
    assert_eq!(counters.throttled, 0);
}

#[tokio::test]
async fn graph_mailbox_requests_and_imports_share_one_limit_whatever_the_id_encoding() {
    let (t, url, body) = spawn_importing().await;
    let token = t.token().await;
    let bob = t.sim.add_mailbox("bob@contoso.com");
    t.set(Behaviour {
        latency_ms: 500,
        max_concurrent_per_mailbox: Some(2),
        ..Behaviour::default()
    });
    // Import URLs carry the mailbox id raw; the Graph requests below percent-encode it.
    let imports =
        futures_util::future::join_all([t.try_import(&url, &body), t.try_import(&url, &body)]);
    let others = async {
        t.until_in_flight(DEMO.mailbox_id, 2).await;
        futures_util::future::join3(
            t.graph_get(
                &token,
                &format!(
                    "/admin/exchange/mailboxes/{}/folders",
                    encode(DEMO.mailbox_id)
                ),
            ),
            t.graph_get(
                &token,
                &format!("/admin/exchange/mailboxes/{}/folders", encode(&bob)),
            ),
            // Not a mailbox request: not limited.
            t.graph_get(&token, SETTINGS),
        )
        .await
    };
    let (imports, (refused, other_mailbox, directory)) = tokio::join!(imports, others);

    for outcome in imports {
        assert_eq!(outcome.unwrap().0, StatusCode::OK);
    }
    assert_eq!(refused.headers()["retry-after"], "1");
    let request_id = refused.headers()["request-id"].to_str().unwrap().to_owned();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "ApplicationThrottled");
    assert_eq!(refused["error"]["message"], MAILBOX_CONCURRENCY);
    assert_eq!(
        refused["error"]["innerError"]["request-id"],
        request_id.as_str()
    );
    assert_eq!(other_mailbox.status(), StatusCode::OK);
    assert_eq!(directory.status(), StatusCode::OK);
    let counters = t.sim.counters();
    assert_eq!(counters.max_in_flight[DEMO.mailbox_id], 2);
    assert_eq!(counters.concurrency_violations, 1);
    assert_eq!(counters.graph_requests, 4);
}

#[tokio::test]
async fn latency_delays_imports_and_graph_mailbox_requests_by_at_least_its_length() {
    let (t, url, body) = spawn_importing().await;
    let token = t.token().await;
    let latency = Duration::from_millis(300);
    t.set(Behaviour {
        latency_ms: 300,
        ..Behaviour::default()
    });

    let started = std::time::Instant::now();
    assert_eq!(t.import(&url, &body).await.0, StatusCode::OK);
    assert!(started.elapsed() >= latency);
    let started = std::time::Instant::now();
    let folders = t
        .graph_get(
            &token,
            &format!("/admin/exchange/mailboxes/{}/folders", DEMO.mailbox_id),
        )
        .await;
    assert_eq!(folders.status(), StatusCode::OK);
    assert!(started.elapsed() >= latency);
}

#[tokio::test]
async fn identical_data_created_twice_in_one_mailbox_counts_as_a_duplicate_and_is_still_stored() {
    let (t, url, _) = spawn_importing().await;
    let bob = t.sim.add_mailbox("bob@contoso.com");
    let token = t.token().await;
    let bob_url = t.import_url(&token, &bob).await;
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let sent = t.sim.folder_id(DEMO.mailbox_id, "sentitems").unwrap();
    let bob_inbox = t.sim.folder_id(&bob, "inbox").unwrap();
    let (a, b, c) = (item_stream("a"), item_stream("b"), item_stream("c"));

    let (_, first) = t.import(&url, &create_body(&inbox, &a)).await;
    // Same data, other folder: still a duplicate, since it is the same mailbox.
    assert_eq!(
        t.import(&url, &create_body(&sent, &a)).await.0,
        StatusCode::OK
    );
    assert_eq!(t.sim.counters().duplicate_items, 1);
    // Same data, other mailbox; other data: no duplicate.
    t.import(&bob_url, &create_body(&bob_inbox, &a)).await;
    t.import(&url, &create_body(&inbox, &b)).await;
    assert_eq!(t.sim.counters().duplicate_items, 1);
    // Duplicates are judged against what the mailbox holds now, updates included.
    let (status, _) = t.import(&url, &update_body(&first, &inbox, &c)).await;
    assert_eq!(status, StatusCode::OK);
    t.import(&url, &create_body(&inbox, &c)).await;
    assert_eq!(t.sim.counters().duplicate_items, 2);

    assert_eq!(t.sim.items(DEMO.mailbox_id).len(), 4);
    let expected = [(DEMO.mailbox_id.to_owned(), 4), (bob.clone(), 1)];
    assert_eq!(
        t.sim.items_per_mailbox(),
        expected.into_iter().collect::<BTreeMap<_, _>>()
    );
    assert_eq!(t.sim.counters().items_created, 5);
}

#[tokio::test]
async fn lifetimes_changed_at_run_time_apply_to_tokens_and_sessions_issued_afterwards() {
    let (t, old_url, body) = spawn_importing().await;
    let (old_token, lifetime) = t.token_and_lifetime().await;
    assert_eq!(lifetime, 3599);
    let path = SETTINGS;

    // A zero lifetime makes what is issued from now on expire at once, without waiting.
    t.set(Behaviour {
        token_lifetime_secs: Some(0),
        session_lifetime_secs: Some(0),
        ..Behaviour::default()
    });
    let (new_token, lifetime) = t.token_and_lifetime().await;
    assert_eq!(lifetime, 0);
    assert_eq!(
        t.graph_get(&new_token, path).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(t.graph_get(&old_token, path).await.status(), StatusCode::OK);
    let new_url = t.import_url(&old_token, DEMO.mailbox_id).await;
    assert_eq!(t.import(&new_url, &body).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(t.import(&old_url, &body).await.0, StatusCode::OK);

    t.set(Behaviour {
        token_lifetime_secs: Some(1234),
        session_lifetime_secs: Some(120),
        ..Behaviour::default()
    });
    assert_eq!(t.token_and_lifetime().await.1, 1234);
    let session = t.create_import_session(&old_token, DEMO.mailbox_id).await;
    let session: Value = session.json().await.unwrap();
    let expiry =
        chrono::DateTime::parse_from_rfc3339(session["expirationDateTime"].as_str().unwrap())
            .unwrap();
    let remaining = expiry
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    assert!((110..=120).contains(&remaining), "{remaining} s");

    // The latest setting wins: set_token_lifetime clears the behaviour's override.
    t.sim.set_token_lifetime(Duration::from_secs(60));
    assert_eq!(t.sim.behaviour().token_lifetime_secs, None);
    assert_eq!(t.token_and_lifetime().await.1, 60);
}

#[tokio::test]
async fn sink_mode_checks_and_answers_as_usual_but_keeps_only_digests_and_counts_items_and_bytes() {
    let (t, url, _) = spawn_importing().await;
    let put = t
        .http
        .put(t.admin_url("behaviour"))
        .json(&json!({"sink": true, "max_concurrent_per_mailbox": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    assert!(t.sim.behaviour().sink);
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let (a, b, c) = (item_stream("a"), item_stream("bb"), item_stream("ccc"));

    let (status, first) = t.import(&url, &create_body(&inbox, &a)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, second) = t.import(&url, &create_body(&inbox, &b)).await;
    assert_ne!(first["itemId"], second["itemId"], "fresh ids per item");
    let (status, updated) = t.import(&url, &update_body(&first, &inbox, &c)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["itemId"], first["itemId"]);
    assert_ne!(updated["changeKey"], first["changeKey"]);

    let items = t.sim.items(DEMO.mailbox_id);
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|item| item.data.is_empty()));
    let digest = |data: &[u8]| -> [u8; 32] { Sha256::digest(data).into() };
    assert_eq!(items[0].sha256, digest(&c));
    assert_eq!(items[1].sha256, digest(&b));
    let counters = t.sim.counters();
    assert_eq!((counters.items_created, counters.items_updated), (2, 1));
    assert_eq!(counters.sink_items, 3);
    assert_eq!(counters.sink_bytes, (a.len() + b.len() + c.len()) as u64);

    // Off again, items keep their data as before.
    t.set(Behaviour::default());
    t.import(&url, &create_body(&inbox, &a)).await;
    let items = t.sim.items(DEMO.mailbox_id);
    assert_eq!(&items[2].data[..], &a[..]);
    assert_eq!(items[2].sha256, digest(&a));
    assert_eq!(t.sim.counters().sink_items, 3);
}

#[tokio::test]
async fn sink_mode_still_refuses_bad_authtokens_bodies_base64_and_item_streams() {
    let (t, url, body) = spawn_importing().await;
    t.set(Behaviour {
        sink: true,
        ..Behaviour::default()
    });
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let forged = format!("{}forged", url);
    assert_eq!(t.import(&forged, &body).await.0, StatusCode::UNAUTHORIZED);
    let mut truncated = item_stream("x");
    truncated.pop();
    for (bad, names) in [
        (json!({"FolderId": inbox, "Mode": "create"}), "Data"),
        (
            json!({"FolderId": inbox, "Mode": "create", "Data": "AAAA", "Extra": 1}),
            "Extra",
        ),
        (
            json!({"FolderId": inbox, "Mode": "create", "Data": "not base64!"}),
            "base64",
        ),
        (create_body(&inbox, &truncated), "item stream"),
    ] {
        let (status, answer) = t.import(&url, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        let message = answer["Message"].as_str().unwrap();
        assert!(message.contains(names), "{bad}: {message}");
    }
    assert!(t.sim.items(DEMO.mailbox_id).is_empty());
    let counters = t.sim.counters();
    assert_eq!((counters.sink_items, counters.sink_bytes), (0, 0));
    assert_eq!(counters.imports_rejected_unauthorized, 1);
}
