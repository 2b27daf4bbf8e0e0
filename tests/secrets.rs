//! No secret leaves: the full flow at the most verbose log level, with every log line, response and
//! `Debug` print captured and searched for each credential.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::io::Write;
use std::sync::{Arc, Mutex};

use exchange_simulator::{Fault, FaultTarget, UserTokenOptions, DEMO};
use helpers::{federated_token, fixture, item, spawn_app_with, trust_federated_issuer, AppOptions};
use mailbox_gateway::access::parse_rules;
use mailbox_gateway::config::{
    AccessConfig, AuthConfig, CertificateAlgorithm, CredentialConfig, GraphAccess,
};
use sha2::{Digest, Sha256};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A response's headers and body, as the client saw them.
async fn read(response: reqwest::Response) -> String {
    let headers = format!("{:?}", response.headers());
    format!("{headers}\n{}\n", response.text().await.unwrap())
}

/// Runs creates, an update, a folder listing, readiness and a few failures; returns what the client saw.
async fn exercise(app: &helpers::TestApp) -> String {
    let created = app
        .create(DEMO.mailbox_address, "inbox", item("leak test"))
        .await;
    let mut seen = format!("{:?}\n", created.headers());
    let created: serde_json::Value = created.json().await.unwrap();
    seen.push_str(&created.to_string());
    let updated = app
        .update(
            DEMO.mailbox_address,
            "inbox",
            created["itemId"].as_str().unwrap(),
            created["changeKey"].as_str().unwrap(),
            item("leak test v2"),
        )
        .await;
    seen.push_str(&read(updated).await);
    // The read half: the item, a listing, Graph's exportItems shape, the folder as tar, and a delete.
    let item_path = format!(
        "/v1/mailboxes/{}/folders/inbox/items/{}",
        DEMO.mailbox_address,
        helpers::encode(created["itemId"].as_str().unwrap())
    );
    for path in [
        item_path.clone(),
        format!("/v1/mailboxes/{}/folders/inbox/items", DEMO.mailbox_address),
        format!(
            "/v1/mailboxes/{}/folders/inbox/export",
            DEMO.mailbox_address
        ),
    ] {
        let response = app.client.get(app.url(&path)).send().await.unwrap();
        assert!(response.status().is_success(), "{path}");
        seen.push_str(&format!("{:?}\n", response.headers()));
        seen.push_str(&String::from_utf8_lossy(&response.bytes().await.unwrap()));
    }
    let exported = app
        .client
        .post(app.url(&format!(
            "/v1/mailboxes/{}/exportItems",
            DEMO.mailbox_address
        )))
        .json(&serde_json::json!({ "itemIds": [created["itemId"]] }))
        .send()
        .await
        .unwrap();
    seen.push_str(&read(exported).await);
    let deleted = app.client.delete(app.url(&item_path)).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    app.simulator.revoke_sessions();
    app.simulator
        .inject(FaultTarget::Import, Fault::DropAfterHandling, 1);
    app.simulator.inject(
        FaultTarget::Graph,
        Fault::Status {
            status: 403,
            retry_after: None,
            code: None,
        },
        1,
    );
    for path in [
        format!("/v1/mailboxes/{}/folders", DEMO.mailbox_address),
        "/readyz".to_owned(),
    ] {
        seen.push_str(&read(app.client.get(app.url(&path)).send().await.unwrap()).await);
    }
    for _ in 0..2 {
        seen.push_str(&read(app.create(DEMO.mailbox_id, "drafts", item("more")).await).await);
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn no_credential_appears_in_logs_responses_or_debug_output_at_trace_level() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let federated = federated_token("leak-test");
    std::fs::write(&token_file, &federated).unwrap();
    let key_pem = std::fs::read_to_string(fixture("app-cert-and-key.pem")).unwrap();

    let mut seen = String::new();
    let mut credentials = vec![DEMO.client_secret.to_owned(), federated.clone()];
    // The client's API key is a secret too: the last run has clients authenticate with it.
    let client_key = "client-api-key-that-must-never-be-logged";
    credentials.push(client_key.to_owned());
    let keyed = AccessConfig {
        auth: AuthConfig::ApiKeys(vec![(
            "appliance".into(),
            Sha256::digest(client_key.as_bytes()).into(),
        )]),
        rules: parse_rules(
            r#"[{"client":"appliance","mailboxes":["*"],"operations":["create","update","list-folders","read","delete"]}]"#,
        )
        .unwrap(),
    };
    let application = GraphAccess::Application;
    let runs = [
        (None, AccessConfig::default(), None, application),
        (
            Some(CredentialConfig::Certificate {
                path: fixture("app-cert-and-key.pem"),
                algorithm: CertificateAlgorithm::Ps256,
            }),
            AccessConfig::default(),
            None,
            application,
        ),
        (
            Some(CredentialConfig::FederatedTokenFile(token_file.clone())),
            AccessConfig::default(),
            None,
            application,
        ),
        (None, keyed, Some(client_key.to_owned()), application),
        // Delegated mode: the user's token, its exchange and the delegated Graph token are secrets too.
        (None, AccessConfig::default(), None, GraphAccess::Delegated),
    ];
    for (credential, access, bearer, graph_access) in runs {
        seen.push_str(&format!("{credential:?} {access:?} {graph_access:?}\n"));
        let app = spawn_app_with(AppOptions {
            credential,
            access,
            bearer,
            graph_access,
            ..AppOptions::default()
        })
        .await;
        app.simulator.register_certificate(&key_pem);
        trust_federated_issuer(&app.simulator);
        let caller = match graph_access {
            GraphAccess::Application => app.clone_client(),
            GraphAccess::Delegated => app.as_client(
                &app.simulator
                    .user_token(DEMO.mailbox_address, UserTokenOptions::default()),
            ),
        };
        seen.push_str(&exercise(&caller).await);
        assert!(app.counters().items_created >= 2, "the flow ran");
        credentials.extend(app.simulator.issued_credentials());
    }

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("imported an item"),
        "trace logging was captured"
    );
    let audit = logs
        .lines()
        .find(|l| l.contains("audit") && l.contains("client=appliance"))
        .expect("an audit event for the authenticated client");
    for field in [
        "mailbox=",
        "folder=",
        "mode=",
        "size=",
        "message_class=\"IPM.Note\"",
        "attachments=0",
        "sha256=",
        "status=",
        "item_id=",
        "request_id=",
    ] {
        assert!(audit.contains(field), "{field} missing from {audit}");
    }
    for (event, fields) in [
        (
            "read",
            &["operation=", "mailbox=", "items=", "bytes=", "status="][..],
        ),
        (
            "delete",
            &["mailbox=", "folder=", "item_id=", "disposal=", "status="][..],
        ),
    ] {
        let line = logs
            .lines()
            .find(|l| {
                l.contains("audit")
                    && l.contains("client=appliance")
                    && l.contains(&format!(" {event} "))
            })
            .unwrap_or_else(|| panic!("an audit {event} event for the authenticated client"));
        for field in fields {
            assert!(line.contains(field), "{field} missing from {line}");
        }
    }
    let everything = format!("{logs}\n{seen}");
    assert!(
        credentials.len() >= 8,
        "tokens and sessions were issued: {}",
        credentials.len()
    );
    for credential in &credentials {
        assert!(
            !everything.contains(credential.as_str()),
            "a credential leaked: {credential:.12}..."
        );
    }
    // The private key, the signed assertions (JWTs start with eyJ), and authtoken query strings.
    let key_line = key_pem
        .lines()
        .skip_while(|l| !l.contains("PRIVATE KEY"))
        .nth(3)
        .unwrap();
    assert!(!everything.contains(key_line), "the private key leaked");
    assert!(
        !contains_jwt(&everything),
        "a JWT (assertion or federated token) leaked"
    );
    assert!(!everything.contains("authtoken="), "an importUrl leaked");
}

/// Whether `text` holds something shaped like a JWT: a base64url JSON header (`eyJ...`), a dot, and a
/// base64url JSON payload (`eyJ...`). A bare `eyJ` also turns up by chance in random base64 ids (about one
/// run in twenty), which is no leak.
fn contains_jwt(text: &str) -> bool {
    text.match_indices("eyJ").any(|(start, _)| {
        let rest = &text[start..];
        let header_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(rest.len());
        rest[header_end..].starts_with(".eyJ")
    })
}

#[test]
fn a_jwt_is_told_from_a_random_id_that_happens_to_hold_eyj() {
    assert!(contains_jwt(
        "token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig"
    ));
    assert!(!contains_jwt("itemId AAMkeyJ0b2+/= changeKey eyJx. done"));
}
