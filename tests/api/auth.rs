//! Graph app tokens: secret, certificate and federated credentials, caching, refresh and failures.

use std::time::Duration;

use exchange_simulator::{SimulatorConfig, DEMO};
use mailbox_gateway::config::{CertificateAlgorithm, CredentialConfig};
use secrecy::SecretString;

use crate::helpers::{
    federated_token, fixture, item, problem, spawn_app, spawn_app_with, trust_federated_issuer,
    AppOptions,
};

fn certificate(algorithm: CertificateAlgorithm) -> AppOptions {
    AppOptions {
        credential: Some(CredentialConfig::Certificate {
            path: fixture("app-cert-and-key.pem"),
            algorithm,
        }),
        ..AppOptions::default()
    }
}

#[tokio::test]
async fn a_certificate_credential_signs_ps256_assertions_by_default() {
    let app = spawn_app_with(certificate(CertificateAlgorithm::Ps256)).await;
    app.simulator
        .register_certificate(&std::fs::read_to_string(fixture("app-cert-and-key.pem")).unwrap());
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("cert"))
            .await
            .status(),
        201
    );
    assert_eq!(app.counters().tokens_issued, 1);
}

#[tokio::test]
async fn a_certificate_credential_can_sign_rs256_assertions_with_x5t() {
    let app = spawn_app_with(certificate(CertificateAlgorithm::Rs256)).await;
    app.simulator
        .register_certificate(&std::fs::read_to_string(fixture("app-cert-and-key.pem")).unwrap());
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("cert"))
            .await
            .status(),
        201
    );
    assert_eq!(app.counters().tokens_issued, 1);
}

#[tokio::test]
async fn an_unregistered_certificate_is_refused_with_the_aadsts_code() {
    let app = spawn_app_with(certificate(CertificateAlgorithm::Ps256)).await;
    let body = problem(
        app.create(DEMO.mailbox_id, "inbox", item("x")).await,
        502,
        "upstream_auth_failed",
    )
    .await;
    assert!(
        body["aadsts"].as_str().unwrap().starts_with("AADSTS"),
        "{body}"
    );
    assert!(body["traceId"].is_string(), "{body}");
    assert_eq!(app.counters().import_requests, 0);
}

#[tokio::test]
async fn a_wrong_secret_surfaces_aadsts7000215_and_never_the_secret() {
    let secret = "wrong-secret-value-0123456789";
    let app = spawn_app_with(AppOptions {
        credential: Some(CredentialConfig::Secret(SecretString::from(
            secret.to_owned(),
        ))),
        ..AppOptions::default()
    })
    .await;
    let response = app.create(DEMO.mailbox_id, "inbox", item("x")).await;
    let body = problem(response, 502, "upstream_auth_failed").await;
    assert_eq!(body["aadsts"], "AADSTS7000215");
    assert!(!body.to_string().contains(secret));

    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert!(ready.headers().contains_key("retry-after"));
    let body = problem(ready, 503, "not_ready").await;
    assert!(
        body["detail"].as_str().unwrap().contains("AADSTS7000215"),
        "{body}"
    );
    assert!(!body.to_string().contains(secret));
}

#[tokio::test]
async fn a_federated_token_file_is_read_again_for_every_token_request() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "not-a-jwt").unwrap();
    let app = spawn_app_with(AppOptions {
        credential: Some(CredentialConfig::FederatedTokenFile(token_file.clone())),
        ..AppOptions::default()
    })
    .await;
    trust_federated_issuer(&app.simulator);
    let refused = app.client.get(app.url("/readyz")).send().await.unwrap();
    problem(refused, 503, "not_ready").await;

    // The kubelet rotates the file; the gateway picks the new token up without a restart.
    std::fs::write(&token_file, federated_token("rotated")).unwrap();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("federated"))
            .await
            .status(),
        201
    );
    assert_eq!(app.counters().tokens_issued, 1);
}

#[tokio::test]
async fn a_hundred_concurrent_uploads_cause_one_token_request_and_one_session() {
    let app = spawn_app().await;
    let uploads =
        (0..100).map(|i| app.create(DEMO.mailbox_id, "inbox", item(&format!("item {i}"))));
    let responses = futures_util::future::join_all(uploads).await;
    assert!(responses.iter().all(|r| r.status() == 201));
    let counters = app.counters();
    assert_eq!(counters.tokens_issued, 1);
    assert_eq!(counters.sessions_created, 1);
    assert_eq!(counters.items_created, 100);
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 100);
}

#[tokio::test]
async fn a_token_is_refreshed_before_it_expires() {
    let app = spawn_app_with(AppOptions {
        simulator: SimulatorConfig {
            token_lifetime: Duration::from_secs(2),
            ..SimulatorConfig::default()
        },
        ..AppOptions::default()
    })
    .await;
    let bob = app.simulator.add_mailbox("bob@contoso.com");
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("a"))
            .await
            .status(),
        201
    );
    assert_eq!(app.counters().tokens_issued, 1);
    // Refreshed after three quarters of a short token's life, before Graph would refuse it.
    app.advance(Duration::from_millis(1600));
    assert_eq!(app.create(&bob, "inbox", item("b")).await.status(), 201);
    let counters = app.counters();
    assert_eq!(counters.tokens_issued, 2);
    assert_eq!(counters.items_created, 2);
}

#[tokio::test]
async fn a_token_graph_refuses_is_replaced_once() {
    let app = spawn_app().await;
    let bob = app.simulator.add_mailbox("bob@contoso.com");
    assert_eq!(
        app.create(DEMO.mailbox_id, "inbox", item("a"))
            .await
            .status(),
        201
    );
    app.simulator.revoke_tokens();
    assert_eq!(app.create(&bob, "inbox", item("b")).await.status(), 201);
    assert_eq!(app.counters().tokens_issued, 2);
}

#[tokio::test]
async fn readiness_reports_ready_once_a_token_can_be_had() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(app.counters().tokens_issued, 0, "healthz must stay cheap");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
    assert_eq!(app.counters().tokens_issued, 1);
}
