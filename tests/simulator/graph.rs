//! Microsoft Graph's endpoints: the bearer check, user settings, folders and their paging,
//! createImportSession, and Graph-shaped errors.

use std::time::Duration;

use exchange_simulator::{Counters, SimulatorConfig, DEMO};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{encode, graph_error, spawn, spawn_with, SETTINGS};

#[tokio::test]
async fn graph_refuses_missing_unknown_revoked_and_expired_tokens_with_401() {
    let t = spawn().await;
    let anonymous = t
        .http
        .get(format!("{}{SETTINGS}", t.sim.graph_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        graph_error(anonymous, StatusCode::UNAUTHORIZED).await,
        "InvalidAuthenticationToken"
    );
    let forged = t.graph_get("made-up-token", SETTINGS).await;
    assert_eq!(
        graph_error(forged, StatusCode::UNAUTHORIZED).await,
        "InvalidAuthenticationToken"
    );

    let token = t.token().await;
    assert_eq!(t.graph_get(&token, SETTINGS).await.status(), StatusCode::OK);
    t.sim.revoke_tokens();
    let revoked = t.graph_get(&token, SETTINGS).await;
    assert_eq!(
        graph_error(revoked, StatusCode::UNAUTHORIZED).await,
        "InvalidAuthenticationToken"
    );

    // A zero lifetime makes the token expire as it is issued, without waiting.
    t.sim.set_token_lifetime(Duration::ZERO);
    let expired = t.token().await;
    let response = t.graph_get(&expired, SETTINGS).await;
    assert_eq!(
        graph_error(response, StatusCode::UNAUTHORIZED).await,
        "InvalidAuthenticationToken"
    );
    assert_eq!(t.sim.counters().graph_requests, 5);
}

#[tokio::test]
async fn settings_of_an_unknown_user_are_404_request_resource_not_found() {
    let t = spawn().await;
    let token = t.token().await;
    let response = t
        .graph_get(&token, "/users/nobody@contoso.com/settings/exchange")
        .await;
    assert_eq!(
        graph_error(response, StatusCode::NOT_FOUND).await,
        "Request_ResourceNotFound"
    );
}

#[tokio::test]
async fn following_next_links_visits_every_folder_once_in_pages_of_the_configured_size() {
    let t = spawn().await;
    t.sim.add_folders(DEMO.mailbox_id, 25);
    let token = t.token().await;
    let mut url = format!(
        "{}/admin/exchange/mailboxes/{}/folders",
        t.sim.graph_url(),
        encode(DEMO.mailbox_id)
    );
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut user_folders = 0;
    loop {
        let response = t.http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let page: Value = response.json().await.unwrap();
        pages += 1;
        let value = page["value"].as_array().unwrap();
        assert!(value.len() <= 10);
        for folder in value {
            ids.push(folder["id"].as_str().unwrap().to_owned());
            if folder["wellKnownName"].is_null() {
                user_folders += 1;
            }
            assert_eq!(folder["type"], "IPF.Note");
            assert_eq!(folder["totalItemCount"], 0);
        }
        match page["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&t.sim.graph_url()), "{next}");
                url = next.to_owned();
            }
            None => break,
        }
    }
    // 17 standard folders plus 25 user folders, 10 per page.
    assert_eq!(ids.len(), 42);
    assert_eq!(pages, 5);
    assert_eq!(user_folders, 25);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 42);
    assert!(ids.contains(&t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap()));

    let one_page = t
        .graph_get(
            &token,
            &format!(
                "/admin/exchange/mailboxes/{}/folders?$top=999",
                DEMO.mailbox_id
            ),
        )
        .await;
    let page: Value = one_page.json().await.unwrap();
    assert_eq!(page["value"].as_array().unwrap().len(), 42);
    assert!(page.get("@odata.nextLink").is_none());
}

#[tokio::test]
async fn a_fresh_simulator_counts_nothing_and_pages_folders_by_its_configured_size() {
    let t = spawn_with(SimulatorConfig {
        folder_page_size: 3,
        ..SimulatorConfig::default()
    })
    .await;
    assert_eq!(t.sim.counters(), Counters::default());
    let token = t.token().await;
    let page = t
        .graph_get(
            &token,
            &format!("/admin/exchange/mailboxes/{}/folders", DEMO.mailbox_id),
        )
        .await;
    let page: Value = page.json().await.unwrap();
    assert_eq!(page["value"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn child_folders_of_the_root_page_through_the_user_folders_too() {
    let t = spawn().await;
    t.sim.add_folders(DEMO.mailbox_id, 5);
    let token = t.token().await;
    let mut url = format!(
        "{}/admin/exchange/mailboxes/{}/folders/msgfolderroot/childFolders?$top=7",
        t.sim.graph_url(),
        encode(DEMO.mailbox_id)
    );
    let mut names = Vec::new();
    loop {
        let page: Value = t
            .http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for folder in page["value"].as_array().unwrap() {
            names.push(folder["displayName"].as_str().unwrap().to_owned());
        }
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    // 16 standard children of the root plus the 5 user folders; the root itself is not its child.
    assert_eq!(names.len(), 21);
    assert!(!names.contains(&"Top of Information Store".to_owned()));
    assert!(names.contains(&"Folder 005".to_owned()));

    let inbox_children = t
        .graph_get(
            &token,
            &format!(
                "/admin/exchange/mailboxes/{}/folders/inbox/childFolders",
                DEMO.mailbox_id
            ),
        )
        .await;
    let inbox_children: Value = inbox_children.json().await.unwrap();
    assert_eq!(inbox_children["value"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn the_root_folder_counts_its_children_and_parents_the_standard_folders() {
    let t = spawn().await;
    let token = t.token().await;
    let root = t
        .graph_get(
            &token,
            &format!(
                "/admin/exchange/mailboxes/{}/folders/msgfolderroot",
                encode(DEMO.mailbox_id)
            ),
        )
        .await;
    let root: Value = root.json().await.unwrap();
    assert_eq!(root["childFolderCount"], 16);
    let inbox = t
        .graph_get(
            &token,
            &format!(
                "/admin/exchange/mailboxes/{}/folders/inbox",
                DEMO.mailbox_id
            ),
        )
        .await;
    let inbox: Value = inbox.json().await.unwrap();
    assert_eq!(inbox["parentFolderId"], root["id"]);
    assert_eq!(inbox["displayName"], "Inbox");
}

#[tokio::test]
async fn an_out_of_range_or_non_numeric_top_is_refused_with_bad_request() {
    let t = spawn().await;
    let token = t.token().await;
    for top in ["0", "1000", "ten", "-1"] {
        let response = t
            .graph_get(
                &token,
                &format!(
                    "/admin/exchange/mailboxes/{}/folders?$top={top}",
                    DEMO.mailbox_id
                ),
            )
            .await;
        assert_eq!(
            graph_error(response, StatusCode::BAD_REQUEST).await,
            "BadRequest",
            "$top={top}"
        );
    }
}

#[tokio::test]
async fn a_folder_is_found_by_encoded_id_and_by_case_insensitive_well_known_name() {
    let t = spawn().await;
    let token = t.token().await;
    let inbox_id = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let mailbox = encode(DEMO.mailbox_id);
    for segment in [encode(&inbox_id), "Inbox".to_owned(), "INBOX".to_owned()] {
        let response = t
            .graph_get(
                &token,
                &format!("/admin/exchange/mailboxes/{mailbox}/folders/{segment}"),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{segment}");
        let folder: Value = response.json().await.unwrap();
        assert_eq!(folder["id"], inbox_id.as_str(), "{segment}");
        assert_eq!(folder["wellKnownName"], "inbox", "{segment}");
    }
    let unknown = t
        .graph_get(
            &token,
            &format!("/admin/exchange/mailboxes/{mailbox}/folders/nosuchfolder"),
        )
        .await;
    assert_eq!(
        graph_error(unknown, StatusCode::NOT_FOUND).await,
        "ErrorItemNotFound"
    );
    let unknown_mailbox = t
        .graph_get(
            &token,
            "/admin/exchange/mailboxes/MBX:nobody@nowhere/folders/inbox",
        )
        .await;
    assert_eq!(
        graph_error(unknown_mailbox, StatusCode::NOT_FOUND).await,
        "ErrorInvalidMailbox"
    );
}

#[tokio::test]
async fn create_import_session_returns_a_pre_authenticated_url_and_a_seven_digit_expiry() {
    let t = spawn().await;
    let token = t.token().await;
    let response = t
        .http
        .post(format!(
            "{}/admin/exchange/mailboxes/{}/createImportSession",
            t.sim.graph_url(),
            DEMO.mailbox_id
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let import_url = body["importUrl"].as_str().unwrap();
    let prefix = format!(
        "{}/api/gv1.0/Mailboxes('{}')/importItem?authtoken=",
        t.sim.base_url(),
        DEMO.mailbox_id
    );
    assert!(import_url.starts_with(&prefix), "{import_url}");
    assert!(import_url.len() > prefix.len());
    let expiry = body["expirationDateTime"].as_str().unwrap();
    let fraction = expiry.rsplit('.').next().unwrap();
    assert_eq!(fraction.len(), 8, "{expiry}");
    let expiry = chrono::DateTime::parse_from_rfc3339(expiry).unwrap();
    let remaining = expiry.signed_duration_since(chrono::Utc::now());
    assert!(
        remaining > chrono::Duration::minutes(59) && remaining <= chrono::Duration::minutes(60)
    );

    let unknown = t
        .http
        .post(format!(
            "{}/admin/exchange/mailboxes/MBX:nobody@nowhere/createImportSession",
            t.sim.graph_url()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        graph_error(unknown, StatusCode::NOT_FOUND).await,
        "ErrorInvalidMailbox"
    );
    assert_eq!(t.sim.counters().sessions_created, 1);
}

#[tokio::test]
async fn unknown_paths_get_a_graph_shaped_404() {
    let t = spawn().await;
    let token = t.token().await;
    let response = t.graph_get(&token, "/me/messages").await;
    assert_eq!(
        graph_error(response, StatusCode::NOT_FOUND).await,
        "ResourceNotFound"
    );
    let outside = t
        .http
        .get(format!("{}/nothing/here", t.sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        graph_error(outside, StatusCode::NOT_FOUND).await,
        "ResourceNotFound"
    );
}
