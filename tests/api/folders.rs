//! Listing a mailbox's folders across pages.

use exchange_simulator::DEMO;

use crate::helpers::{json, spawn_app};

#[tokio::test]
async fn folder_listing_follows_every_page() {
    let app = spawn_app().await;
    app.simulator.add_folders(DEMO.mailbox_id, 25);
    let response = app
        .client
        .get(app.url(&format!("/v1/mailboxes/{}/folders", DEMO.mailbox_address)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["mailboxId"], DEMO.mailbox_id);
    let folders = body["value"].as_array().unwrap();
    assert_eq!(folders.len(), 17 + 25);
    let inbox = folders
        .iter()
        .find(|f| f["wellKnownName"] == "inbox")
        .unwrap();
    assert_eq!(
        inbox["id"],
        app.simulator
            .folder_id(DEMO.mailbox_id, "inbox")
            .unwrap()
            .as_str()
    );
    for field in [
        "displayName",
        "parentFolderId",
        "type",
        "totalItemCount",
        "childFolderCount",
    ] {
        assert!(inbox.get(field).is_some(), "{field} missing from {inbox}");
    }
    let user_folders = folders
        .iter()
        .filter(|f| f["wellKnownName"].is_null())
        .count();
    assert_eq!(user_folders, 25);
    // Pages of 10: one address look-up and five pages.
    assert_eq!(app.counters().graph_requests, 1 + 5);
}
