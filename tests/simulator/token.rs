//! Entra ID's token endpoint: client secrets, certificate assertions and federated assertions, and the
//! AADSTS errors for everything it refuses.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use exchange_simulator::DEMO;
use jsonwebtoken::{Algorithm, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{
    aadsts, certificate_assertion, certificate_claims, federated_assertion, now, pem_block,
    secret_form, signing_key, spawn, APP_CERT, FEDERATED_ISSUER, FEDERATED_PUB, FEDERATED_SUBJECT,
    OTHER_CERT, SETTINGS,
};

#[tokio::test]
async fn a_client_secret_buys_a_token_that_graph_accepts_for_the_demo_mailbox() {
    let t = spawn().await;
    let response = t.request_token(&secret_form()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    let token = body["access_token"].as_str().unwrap();

    let response = t
        .http
        .get(format!(
            "{}/users/ADELE@contoso.com/settings/exchange",
            t.sim.graph_url()
        ))
        .bearer_auth(token)
        .header("client-request-id", "5b3c8a52-0000-4000-8000-000000000001")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["client-request-id"],
        "5b3c8a52-0000-4000-8000-000000000001"
    );
    assert!(uuid::Uuid::parse_str(response.headers()["request-id"].to_str().unwrap()).is_ok());
    let settings: Value = response.json().await.unwrap();
    assert_eq!(settings["primaryMailboxId"], DEMO.mailbox_id);
    assert!(settings["inPlaceArchiveMailboxId"].is_null());
    assert!(settings["id"].is_string());
    assert_eq!(t.sim.counters().tokens_issued, 1);
    assert_eq!(t.sim.counters().graph_requests, 1);
}

/// A token request Entra refuses: what is sent, and the status, OAuth error and AADSTS code it gets.
struct Refusal {
    case: &'static str,
    tenant: &'static str,
    form: Vec<(&'static str, &'static str)>,
    status: StatusCode,
    error: &'static str,
    code: u64,
}

#[tokio::test]
async fn wrong_secrets_tenants_clients_scopes_and_credential_mixes_are_refused_with_their_codes() {
    let t = spawn().await;
    let with = |name: &'static str, value: &'static str| {
        let mut form = secret_form();
        form.iter_mut().find(|(key, _)| *key == name).unwrap().1 = value;
        form
    };
    let mut both = secret_form();
    both.push((
        "client_assertion_type",
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    ));
    both.push(("client_assertion", "a.b.c"));
    let cases = [
        Refusal {
            case: "a wrong client secret",
            tenant: DEMO.tenant_id,
            form: with("client_secret", "not-the-secret"),
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            code: 7000215,
        },
        Refusal {
            case: "an unknown tenant",
            tenant: "00000000-0000-0000-0000-000000000000",
            form: secret_form(),
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            code: 90002,
        },
        Refusal {
            case: "an unknown client",
            tenant: DEMO.tenant_id,
            form: with("client_id", "11111111-1111-1111-1111-111111111111"),
            status: StatusCode::BAD_REQUEST,
            error: "unauthorized_client",
            code: 700016,
        },
        Refusal {
            case: "a scope other than Graph's .default",
            tenant: DEMO.tenant_id,
            form: with("scope", "https://graph.microsoft.com/Mail.Read"),
            status: StatusCode::BAD_REQUEST,
            error: "invalid_scope",
            code: 1002012,
        },
        Refusal {
            case: "neither a secret nor an assertion",
            tenant: DEMO.tenant_id,
            form: secret_form()[..3].to_vec(),
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            code: 7000218,
        },
        Refusal {
            case: "both a secret and an assertion",
            tenant: DEMO.tenant_id,
            form: both,
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            code: 90014,
        },
    ];
    for (refused, case) in cases.iter().enumerate() {
        let response = t
            .http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                t.sim.base_url(),
                case.tenant
            ))
            .form(&case.form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), case.status, "status for {}", case.case);
        assert_eq!(
            aadsts(response, case.status, case.error).await,
            case.code,
            "AADSTS code for {}",
            case.case
        );
        let counters = t.sim.counters();
        assert_eq!(
            counters.token_requests_rejected,
            refused as u64 + 1,
            "{} is counted as rejected",
            case.case
        );
        assert_eq!(counters.tokens_issued, 0, "{} issued a token", case.case);
    }
}

#[tokio::test]
async fn a_certificate_assertion_buys_a_token_that_graph_accepts_by_either_thumbprint() {
    // PS256 names the certificate by x5t#S256, RS256 by x5t.
    for (case, alg) in [
        ("PS256 with x5t#S256", Algorithm::PS256),
        ("RS256 with x5t", Algorithm::RS256),
    ] {
        let t = spawn().await;
        t.sim.register_certificate(APP_CERT);
        let assertion = certificate_assertion(APP_CERT, alg, &certificate_claims(&t.token_url()));
        let response = t.assertion_token(&assertion).await;
        assert_eq!(response.status(), StatusCode::OK, "{case}");
        let body: Value = response.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap();
        let settings = t.graph_get(token, SETTINGS).await;
        assert_eq!(settings.status(), StatusCode::OK, "{case}");
        assert_eq!(t.sim.counters().tokens_issued, 1, "{case}");
    }
}

#[tokio::test]
async fn certificate_assertions_entra_would_not_accept_are_refused_with_their_aadsts_codes() {
    let t = spawn().await;
    t.sim.register_certificate(APP_CERT);
    let claims = || certificate_claims(&t.token_url());
    let with = |name: &str, value: Value| {
        let mut claims = claims();
        claims[name] = value;
        claims
    };

    let der = pem_block(APP_CERT, "CERTIFICATE").into_contents();
    let mut registered_thumbprint = Header::new(Algorithm::PS256);
    registered_thumbprint.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&der)));
    let forged =
        jsonwebtoken::encode(&registered_thumbprint, &claims(), &signing_key(OTHER_CERT)).unwrap();

    let mut expired = claims();
    expired["nbf"] = json!(now() - 900);
    expired["iat"] = json!(now() - 900);
    expired["exp"] = json!(now() - 300);

    let cases = [
        (
            "signed by an unregistered certificate (PS256)",
            certificate_assertion(OTHER_CERT, Algorithm::PS256, &claims()),
            700027,
        ),
        (
            "signed by an unregistered certificate (RS256)",
            certificate_assertion(OTHER_CERT, Algorithm::RS256, &claims()),
            700027,
        ),
        (
            "naming the registered thumbprint but signed by another key",
            forged,
            700027,
        ),
        (
            "for another audience (the real login host)",
            certificate_assertion(
                APP_CERT,
                Algorithm::PS256,
                &with(
                    "aud",
                    json!(format!(
                        "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
                        DEMO.tenant_id
                    )),
                ),
            ),
            700023,
        ),
        (
            "expired",
            certificate_assertion(APP_CERT, Algorithm::PS256, &expired),
            700024,
        ),
        (
            "valid for longer than ten minutes",
            certificate_assertion(
                APP_CERT,
                Algorithm::PS256,
                &with("exp", json!(now() + 3600)),
            ),
            700024,
        ),
        (
            "whose issuer is not the client",
            certificate_assertion(
                APP_CERT,
                Algorithm::RS256,
                &with("iss", json!("someone-else")),
            ),
            700021,
        ),
    ];
    for (case, assertion, code) in &cases {
        let response = t.assertion_token(assertion).await;
        assert_eq!(
            aadsts(response, StatusCode::UNAUTHORIZED, "invalid_client").await,
            *code,
            "an assertion {case}"
        );
    }
    let counters = t.sim.counters();
    assert_eq!(counters.tokens_issued, 0);
    assert_eq!(counters.token_requests_rejected, cases.len() as u64);
}

#[tokio::test]
async fn a_federated_assertion_from_the_registered_issuer_buys_a_token() {
    let t = spawn().await;
    t.sim
        .register_federated_issuer(FEDERATED_ISSUER, FEDERATED_SUBJECT, FEDERATED_PUB);
    // Kubernetes projects service account tokens with an array audience.
    for aud in [
        json!(["api://AzureADTokenExchange"]),
        json!("api://AzureADTokenExchange"),
    ] {
        let response = t
            .assertion_token(&federated_assertion(FEDERATED_SUBJECT, aud.clone()))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "audience {aud}");
    }
    assert_eq!(t.sim.counters().tokens_issued, 2);
}

#[tokio::test]
async fn a_federated_assertion_for_another_subject_or_audience_is_refused_with_aadsts70021() {
    let t = spawn().await;
    t.sim
        .register_federated_issuer(FEDERATED_ISSUER, FEDERATED_SUBJECT, FEDERATED_PUB);
    let wrong_subject = federated_assertion(
        "system:serviceaccount:mail:intruder",
        json!("api://AzureADTokenExchange"),
    );
    let wrong_audience = federated_assertion(FEDERATED_SUBJECT, json!("api://SomethingElse"));
    for (case, assertion) in [
        ("another subject", wrong_subject),
        ("another audience", wrong_audience),
    ] {
        let response = t.assertion_token(&assertion).await;
        assert_eq!(
            aadsts(response, StatusCode::UNAUTHORIZED, "invalid_client").await,
            70021,
            "{case}"
        );
    }
}
