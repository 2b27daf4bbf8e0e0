//! Import sessions: reuse, renewal, refusal, the importUrl origin check and the archive redirect.

use std::time::Duration;

use exchange_simulator::{SimulatorConfig, DEMO};

use crate::helpers::{item, json, problem, spawn_app, spawn_app_with, AppOptions};

#[tokio::test]
async fn one_session_serves_every_folder_of_a_mailbox() {
    let app = spawn_app().await;
    for folder in ["inbox", "sentitems", "drafts", "deleteditems"] {
        assert_eq!(
            app.create(DEMO.mailbox_address, folder, item(folder))
                .await
                .status(),
            201
        );
    }
    let counters = app.counters();
    assert_eq!(counters.sessions_created, 1);
    // One address look-up, four folder look-ups, one session; nothing repeated.
    assert_eq!(counters.graph_requests, 6);
    assert_eq!(
        app.create(DEMO.mailbox_address, "inbox", item("again"))
            .await
            .status(),
        201
    );
    assert_eq!(
        app.counters().graph_requests,
        6,
        "resolved ids and the session are cached"
    );
}

#[tokio::test]
async fn a_session_is_renewed_before_it_expires() {
    let app = spawn_app_with(AppOptions {
        simulator: SimulatorConfig {
            session_lifetime: Duration::from_secs(2),
            ..SimulatorConfig::default()
        },
        ..AppOptions::default()
    })
    .await;
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("a"))
            .await
            .status(),
        201
    );
    // Past the renewal point (three quarters of a short session's life), not yet past its expiry.
    app.advance(Duration::from_millis(1600));
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("b"))
            .await
            .status(),
        201
    );
    let counters = app.counters();
    assert_eq!(counters.sessions_created, 2);
    assert_eq!(
        counters.imports_rejected_unauthorized, 0,
        "renewed before the old one lapsed"
    );
}

#[tokio::test]
async fn a_refused_session_is_replaced_and_the_item_imported_once() {
    let app = spawn_app().await;
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("a"))
            .await
            .status(),
        201
    );
    app.simulator.revoke_sessions();
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("b"))
            .await
            .status(),
        201
    );
    let counters = app.counters();
    assert_eq!(counters.sessions_created, 2);
    assert_eq!(counters.imports_rejected_unauthorized, 1);
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 2);
}

#[tokio::test]
async fn an_import_url_on_an_origin_not_allowed_is_never_used() {
    let app = spawn_app_with(AppOptions {
        import_hosts: Some("outlook.office365.com".into()),
        ..AppOptions::default()
    })
    .await;
    let response = app.create(DEMO.mailbox_id, "inbox", item("a")).await;
    let body = problem(response, 502, "import_host_not_allowed").await;
    assert!(!body.to_string().contains("authtoken"), "{body}");
    assert_eq!(app.counters().sessions_created, 1);
    assert_eq!(app.counters().import_requests, 0);
}

#[tokio::test]
async fn a_folder_in_the_archive_mailbox_is_imported_through_the_archive_session() {
    let app = spawn_app().await;
    let archive = app.simulator.add_archive(DEMO.mailbox_id);
    let archive_inbox = app.simulator.folder_id(&archive, "inbox").unwrap();
    let response = app
        .create(DEMO.mailbox_id, &archive_inbox, item("archived"))
        .await;
    assert_eq!(response.status(), 201);
    let created = json(response).await;
    let stored = app.simulator.items(&archive);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].item_id, created["itemId"]);
    assert!(app.simulator.items(DEMO.mailbox_id).is_empty());
    assert_eq!(app.counters().sessions_created, 2);
}
