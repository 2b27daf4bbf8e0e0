//! Exchange Online's importItem: creates and updates, the pre-authenticated import URL, folders of the
//! session's mailbox and its archive, and the body's fields.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use exchange_simulator::DEMO;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{create_body, item_stream, spawn, update_body, SETTINGS};

#[tokio::test]
async fn an_item_is_created_then_replaced_and_its_change_key_guards_updates() {
    let t = spawn().await;
    let token = t.token().await;
    let url = t.import_url(&token, DEMO.mailbox_id).await;
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();

    let (status, created) = t
        .import(&url, &create_body(&inbox, &item_stream("first")))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let item_id = created["itemId"].as_str().unwrap().to_owned();
    let first_key = created["changeKey"].as_str().unwrap().to_owned();
    let items = t.sim.items(DEMO.mailbox_id);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].item_id, item_id);
    assert_eq!(items[0].folder_id, inbox);
    assert_eq!(items[0].version, 1);
    assert_eq!(&items[0].data[..], &item_stream("first")[..]);

    let update = |change_key: &str, item_id: &str| {
        json!({
            "FolderId": inbox,
            "Mode": "update",
            "Data": STANDARD.encode(item_stream("second")),
            "ItemId": item_id,
            "ChangeKey": change_key,
        })
    };
    let (status, updated) = t.import(&url, &update(&first_key, &item_id)).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["itemId"], item_id.as_str());
    assert_ne!(updated["changeKey"], first_key.as_str());
    let items = t.sim.items(DEMO.mailbox_id);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].version, 2);
    assert_eq!(&items[0].data[..], &item_stream("second")[..]);
    assert_eq!(items[0].change_key, updated["changeKey"].as_str().unwrap());

    let (status, stale) = t.import(&url, &update(&first_key, &item_id)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(stale["Message"]
        .as_str()
        .unwrap()
        .starts_with("ErrorIrresolvableConflict:"));

    let (status, missing) = t
        .import(&url, &update(&first_key, "AAAAAAAAAAAAAAAAAAAAAA=="))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(missing["Message"]
        .as_str()
        .unwrap()
        .starts_with("ErrorItemNotFound:"));

    let folder = t
        .graph_get(
            &token,
            &format!(
                "/admin/exchange/mailboxes/{}/folders/inbox",
                DEMO.mailbox_id
            ),
        )
        .await;
    let folder: Value = folder.json().await.unwrap();
    assert_eq!(folder["totalItemCount"], 1);

    let counters = t.sim.counters();
    assert_eq!(counters.import_requests, 4);
    assert_eq!(counters.items_created, 1);
    assert_eq!(counters.items_updated, 1);
}

#[tokio::test]
async fn an_update_naming_the_item_in_another_folder_is_not_found() {
    let t = spawn().await;
    let token = t.token().await;
    let url = t.import_url(&token, DEMO.mailbox_id).await;
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let drafts = t.sim.folder_id(DEMO.mailbox_id, "drafts").unwrap();
    let (_, created) = t
        .import(&url, &create_body(&inbox, &item_stream("x")))
        .await;
    let (status, _) = t
        .import(&url, &update_body(&created, &drafts, &item_stream("y")))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(t.sim.items(DEMO.mailbox_id)[0].version, 1);
}

#[tokio::test]
async fn import_urls_refuse_missing_altered_foreign_revoked_and_expired_authtokens() {
    let t = spawn().await;
    let other = t.sim.add_mailbox("megan@contoso.com");
    let token = t.token().await;
    let url = t.import_url(&token, DEMO.mailbox_id).await;
    let other_url = t.import_url(&token, &other).await;
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let body = create_body(&inbox, &item_stream("x"));

    let without_token = url.split('?').next().unwrap().to_owned();
    let altered = format!("{url}x");
    // A session of another mailbox, presented on this mailbox's URL.
    let foreign = format!("{without_token}?{}", other_url.split('?').nth(1).unwrap());
    for (case, bad) in [
        ("no authtoken", &without_token),
        ("an altered authtoken", &altered),
        ("another mailbox's authtoken", &foreign),
    ] {
        let (status, body) = t.import(bad, &body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}");
        assert!(body["Message"].is_string(), "{case}");
        assert!(!body.to_string().contains("authtoken="), "{case}");
    }
    assert_eq!(t.import(&url, &body).await.0, StatusCode::OK);

    t.sim.revoke_sessions();
    assert_eq!(t.import(&url, &body).await.0, StatusCode::UNAUTHORIZED);

    t.sim.set_session_lifetime(Duration::ZERO);
    let expired = t.import_url(&token, DEMO.mailbox_id).await;
    assert_eq!(t.import(&expired, &body).await.0, StatusCode::UNAUTHORIZED);

    let counters = t.sim.counters();
    assert_eq!(counters.import_requests, 6);
    assert_eq!(counters.imports_rejected_unauthorized, 5);
    assert_eq!(counters.items_created, 1);
}

#[tokio::test]
async fn an_import_url_with_a_mangled_mailbox_segment_is_unauthorized() {
    let t = spawn().await;
    let token = t.token().await;
    let url = t.import_url(&token, DEMO.mailbox_id).await;
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let mangled = url.replace("Mailboxes('", "Mailbox('");
    let (status, _) = t
        .import(&mangled, &create_body(&inbox, &item_stream("x")))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let counters = t.sim.counters();
    assert_eq!(counters.import_requests, 1);
    assert_eq!(counters.imports_rejected_unauthorized, 1);
}

#[tokio::test]
async fn a_folder_of_the_auto_expanded_archive_gets_409_naming_the_archive_mailbox() {
    let t = spawn().await;
    let archive = t.sim.add_archive(DEMO.mailbox_id);
    let token = t.token().await;
    let settings = t.graph_get(&token, SETTINGS).await;
    let settings: Value = settings.json().await.unwrap();
    assert_eq!(settings["inPlaceArchiveMailboxId"], archive.as_str());

    let url = t.import_url(&token, DEMO.mailbox_id).await;
    let archive_inbox = t.sim.folder_id(&archive, "inbox").unwrap();
    let (status, body) = t
        .import(&url, &create_body(&archive_inbox, &item_stream("x")))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["Message"],
        format!("Invalid import session. The target session is expected in mailbox {archive}")
    );

    let archive_url = t.import_url(&token, &archive).await;
    let (status, _) = t
        .import(
            &archive_url,
            &create_body(&archive_inbox, &item_stream("x")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t.sim.items(&archive).len(), 1);
    assert!(t.sim.items(DEMO.mailbox_id).is_empty());
}

#[tokio::test]
async fn unknown_folders_and_well_known_names_are_404_folder_not_found_at_import() {
    let t = spawn().await;
    let other = t.sim.add_mailbox("megan@contoso.com");
    let token = t.token().await;
    let url = t.import_url(&token, DEMO.mailbox_id).await;
    let foreign_inbox = t.sim.folder_id(&other, "inbox").unwrap();
    for folder in ["inbox", "AAMkAGI2TG93AAA=", foreign_inbox.as_str()] {
        let (status, body) = t
            .import(&url, &create_body(folder, &item_stream("x")))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{folder}");
        assert_eq!(
            body["Message"],
            "ErrorFolderNotFound: The specified folder could not be found in the store.",
            "{folder}"
        );
    }
}

#[tokio::test]
async fn import_bodies_with_missing_unknown_or_conflicting_fields_are_refused_with_400_naming_them()
{
    let t = spawn().await;
    let token = t.token().await;
    let url = t.import_url(&token, DEMO.mailbox_id).await;
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let good = STANDARD.encode(item_stream("x"));

    let cases = [
        (
            json!({"FolderId": inbox, "Mode": "create", "Data": good, "Subject": "x"}),
            "Subject",
        ),
        (json!({"Mode": "create", "Data": good}), "FolderId"),
        (json!({"FolderId": inbox, "Data": good}), "Mode"),
        (json!({"FolderId": inbox, "Mode": "create"}), "Data"),
        (
            json!({"FolderId": inbox, "Mode": "replace", "Data": good}),
            "Mode",
        ),
        (
            json!({"FolderId": inbox, "Mode": "create", "Data": good, "ItemId": "AAA="}),
            "ItemId",
        ),
        (
            json!({"FolderId": inbox, "Mode": "update", "Data": good, "ItemId": "AAA="}),
            "ChangeKey",
        ),
        (json!(["not", "an", "object"]), "request body"),
    ];
    for (body, named) in cases {
        let (status, answer) = t.import(&url, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let message = answer["Message"].as_str().unwrap();
        assert!(message.contains(named), "{message} should name {named}");
    }
    assert!(t.sim.items(DEMO.mailbox_id).is_empty());
}

#[tokio::test]
async fn import_insists_on_json_and_refuses_an_authorization_header() {
    let t = spawn().await;
    let token = t.token().await;
    let url = t.import_url(&token, DEMO.mailbox_id).await;
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let body = create_body(&inbox, &item_stream("x"));

    let as_text = t
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(as_text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let with_bearer = t
        .http
        .post(&url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(with_bearer.status(), StatusCode::BAD_REQUEST);
    assert!(with_bearer.headers().contains_key("request-id"));
    assert!(t.sim.items(DEMO.mailbox_id).is_empty());
}
