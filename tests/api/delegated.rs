//! Delegated mode: each caller's own Entra token, exchanged on their behalf, reaches only their own
//! mailbox; no application token is ever requested.

use exchange_simulator::{UserTokenOptions, DEMO};
use mailbox_gateway::config::GraphAccess;

use crate::helpers::{item, json, problem, spawn_app_with, AppOptions, TestApp};

const BOB: &str = "bob@contoso.com";

/// A gateway in delegated mode, and Bob's mailbox id beside Adele's.
async fn delegated_app() -> (TestApp, String) {
    let app = spawn_app_with(AppOptions {
        graph_access: GraphAccess::Delegated,
        ..AppOptions::default()
    })
    .await;
    let bob = app.simulator.add_mailbox(BOB);
    (app, bob)
}

/// The app as `address` signed in, with a fresh user token.
fn signed_in(app: &TestApp, address: &str) -> TestApp {
    app.as_client(
        &app.simulator
            .user_token(address, UserTokenOptions::default()),
    )
}

#[tokio::test]
async fn a_user_imports_into_me_and_their_own_address_with_one_exchange_and_no_app_token() {
    let (app, _) = delegated_app().await;
    let adele = signed_in(&app, DEMO.mailbox_address);
    for mailbox in ["me", DEMO.mailbox_address, DEMO.mailbox_id] {
        let response = adele.create(mailbox, "inbox", item("Mine")).await;
        assert_eq!(response.status(), 201, "{mailbox}");
    }
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 3);
    let counters = app.counters();
    assert_eq!(counters.obo_exchanges, 1, "one exchange for the user");
    assert_eq!(
        counters.tokens_issued, counters.obo_exchanges,
        "no application token was requested"
    );
    // Reading back works the same way.
    let listed = json(
        adele
            .client
            .get(adele.url("/v1/mailboxes/me/folders/inbox/items"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed["value"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn another_users_mailbox_is_refused_before_any_import_call() {
    let (app, bob_id) = delegated_app().await;
    let adele = signed_in(&app, DEMO.mailbox_address);
    // Adele's own mailbox first, so her token and mailbox are known.
    assert_eq!(adele.create("me", "inbox", item("a")).await.status(), 201);
    let sessions = app.counters().sessions_created;
    for mailbox in [BOB, bob_id.as_str()] {
        problem(
            adele.create(mailbox, "inbox", item("not mine")).await,
            403,
            "forbidden",
        )
        .await;
    }
    let counters = app.counters();
    assert_eq!(
        counters.sessions_created, sessions,
        "no import session for another's mailbox"
    );
    assert_eq!(counters.import_requests, 1);
}

#[tokio::test]
async fn two_users_at_once_each_reach_only_their_own_mailbox() {
    let (app, bob_id) = delegated_app().await;
    let (adele, bob) = (signed_in(&app, DEMO.mailbox_address), signed_in(&app, BOB));
    let writes = (0..5).flat_map(|n| {
        [
            (adele.clone_client(), format!("Adele {n}")),
            (bob.clone_client(), format!("Bob {n}")),
        ]
    });
    let results = futures_util::future::join_all(writes.map(|(client, subject)| async move {
        client.create("me", "inbox", item(&subject)).await.status()
    }))
    .await;
    assert!(results.iter().all(|s| *s == 201), "{results:?}");
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 5);
    assert_eq!(app.simulator.items(&bob_id).len(), 5);
    assert_eq!(app.counters().obo_exchanges, 2, "one exchange per user");
}

#[tokio::test]
async fn twenty_concurrent_requests_of_one_user_cause_one_exchange() {
    let (app, _) = delegated_app().await;
    let adele = signed_in(&app, DEMO.mailbox_address);
    let results = futures_util::future::join_all(
        (0..20).map(|n| adele.create("me", "inbox", item(&format!("Burst {n}")))),
    )
    .await;
    assert!(results.iter().all(|r| r.status() == 201));
    assert_eq!(app.counters().obo_exchanges, 1);
}

#[tokio::test]
async fn a_token_for_another_audience_or_an_expired_one_is_401_without_an_exchange() {
    let (app, _) = delegated_app().await;
    for options in [
        UserTokenOptions {
            audience: Some("api://some-other-app".into()),
            ..UserTokenOptions::default()
        },
        UserTokenOptions {
            lifetime_secs: Some(-600),
            ..UserTokenOptions::default()
        },
        UserTokenOptions {
            tenant_id: Some("00000000-0000-0000-0000-000000000000".into()),
            ..UserTokenOptions::default()
        },
    ] {
        let caller = app.as_client(&app.simulator.user_token(DEMO.mailbox_address, options));
        problem(
            caller.create("me", "inbox", item("x")).await,
            401,
            "unauthenticated",
        )
        .await;
    }
    let counters = app.counters();
    assert_eq!(
        counters.obo_exchanges + counters.obo_refused,
        0,
        "no exchange tried"
    );
    assert_eq!(counters.graph_requests, 0);
}

#[tokio::test]
async fn a_refused_exchange_is_403_delegation_refused_with_its_aadsts_code() {
    let (app, _) = delegated_app().await;
    app.simulator.revoke_consent(DEMO.mailbox_address);
    let adele = signed_in(&app, DEMO.mailbox_address);
    let body = problem(
        adele.create("me", "inbox", item("x")).await,
        403,
        "delegation_refused",
    )
    .await;
    assert_eq!(body["aadsts"], "AADSTS65001");
    assert!(body["traceId"].is_string());
    assert!(!body.to_string().contains("eyJ"), "no token in the problem");
    assert_eq!(app.counters().import_requests, 0);
}

#[tokio::test]
async fn rules_narrow_what_a_user_may_do_and_me_matches_their_address() {
    let app = spawn_app_with(AppOptions {
        graph_access: GraphAccess::Delegated,
        access: mailbox_gateway::config::AccessConfig {
            rules: mailbox_gateway::access::parse_rules(&format!(
                r#"[{{"client": "{}", "mailboxes": ["{}"], "operations": ["read"]}}]"#,
                DEMO.mailbox_address, DEMO.mailbox_address
            ))
            .unwrap(),
            ..Default::default()
        },
        ..AppOptions::default()
    })
    .await;
    let adele = signed_in(&app, DEMO.mailbox_address);
    problem(
        adele.create("me", "inbox", item("x")).await,
        403,
        "forbidden",
    )
    .await;
    let listed = adele
        .client
        .get(adele.url("/v1/mailboxes/me/folders/inbox/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
}

#[tokio::test]
async fn me_in_application_mode_says_it_needs_delegated_mode() {
    let app = spawn_app_with(AppOptions::default()).await;
    let body = problem(
        app.create("me", "inbox", item("x")).await,
        404,
        "mailbox_not_found",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("delegated"),
        "{body}"
    );
}

#[tokio::test]
async fn one_idempotency_key_sent_by_two_users_is_two_keys() {
    let (app, bob_id) = delegated_app().await;
    for user in [DEMO.mailbox_address, BOB] {
        let caller = signed_in(&app, user);
        let response = caller
            .client
            .post(caller.url("/v1/mailboxes/me/folders/inbox/items"))
            .header("content-type", "application/octet-stream")
            .header("idempotency-key", "restore-the-same-key")
            .body(item("Same key"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{user}");
        assert!(response.headers().get("idempotent-replayed").is_none());
    }
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 1);
    assert_eq!(app.simulator.items(&bob_id).len(), 1);
}

#[tokio::test]
async fn a_user_token_expired_seconds_ago_is_401_not_a_refused_exchange() {
    let (app, _) = delegated_app().await;
    let caller = app.as_client(&app.simulator.user_token(
        DEMO.mailbox_address,
        UserTokenOptions {
            lifetime_secs: Some(-5),
            ..UserTokenOptions::default()
        },
    ));
    problem(
        caller.create("me", "inbox", item("x")).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(app.counters().obo_refused, 0, "no exchange tried");
}
