//! Time under the test's control: `Simulator::advance` moves the simulator's clock alone (expiries and
//! the dates it writes), and its expiries follow tokio's clock when a test pauses and advances it.

use std::time::Duration;

use exchange_simulator::{Fault, FaultTarget, DEMO};
use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    aadsts, certificate_assertion, certificate_claims, federated_assertion, now, secret_form,
    spawn, spawn_importing, APP_CERT, FEDERATED_ISSUER, FEDERATED_PUB, FEDERATED_SUBJECT, SETTINGS,
};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Asserts that Graph refuses `token` as expired.
async fn refused_as_expired(response: reqwest::Response, case: &str) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["code"], "InvalidAuthenticationToken",
        "{case}"
    );
    assert_eq!(
        body["error"]["message"], "Lifetime validation failed, the token is expired.",
        "{case}"
    );
}

/// How far `date` is ahead of the system clock, in seconds.
fn seconds_ahead(date: chrono::DateTime<chrono::Utc>) -> i64 {
    date.signed_duration_since(chrono::Utc::now()).num_seconds()
}

#[tokio::test]
async fn a_token_is_accepted_until_its_lifetime_has_run_out_on_the_simulators_clock() {
    let t = spawn().await;
    let other = spawn().await;
    let (token, lifetime) = t.token_and_lifetime().await;
    let other_token = other.token().await;

    t.sim.advance(Duration::from_secs(lifetime - 1));
    let response = t.graph_get(&token, SETTINGS).await;
    assert_eq!(response.status(), StatusCode::OK, "a second before expiry");
    t.sim.advance(Duration::from_secs(1));
    refused_as_expired(t.graph_get(&token, SETTINGS).await, "at expiry").await;

    // A token issued now lives its whole lifetime from the simulator's now.
    let fresh = t.token().await;
    assert_eq!(t.graph_get(&fresh, SETTINGS).await.status(), StatusCode::OK);
    // Each simulator has a clock of its own.
    let response = other.graph_get(&other_token, SETTINGS).await;
    assert_eq!(response.status(), StatusCode::OK, "the other simulator");
}

#[tokio::test]
async fn an_import_session_lapses_at_its_expiration_date_time_on_the_simulators_clock() {
    let (t, url, body) = spawn_importing().await;
    t.sim.advance(HOUR - Duration::from_secs(1));
    assert_eq!(t.import(&url, &body).await.0, StatusCode::OK);
    t.sim.advance(Duration::from_secs(1));
    assert_eq!(t.import(&url, &body).await.0, StatusCode::UNAUTHORIZED);
    let counters = t.sim.counters();
    assert_eq!(counters.imports_rejected_unauthorized, 1);
    assert_eq!(counters.items_created, 1);

    // A session created now expires an hour after the simulator's now: two hours after the system's.
    let token = t.token().await;
    let session: Value = t
        .create_import_session(&token, DEMO.mailbox_id)
        .await
        .json()
        .await
        .unwrap();
    let expiry =
        chrono::DateTime::parse_from_rfc3339(session["expirationDateTime"].as_str().unwrap())
            .unwrap()
            .to_utc();
    let ahead = seconds_ahead(expiry);
    assert!((7195..=7200).contains(&ahead), "{ahead} s ahead");
}

#[tokio::test]
async fn client_assertions_are_judged_by_the_simulators_clock() {
    let t = spawn().await;
    t.sim.register_certificate(APP_CERT);
    t.sim
        .register_federated_issuer(FEDERATED_ISSUER, FEDERATED_SUBJECT, FEDERATED_PUB);
    let current = || {
        certificate_assertion(
            APP_CERT,
            Algorithm::PS256,
            &certificate_claims(&t.token_url()),
        )
    };
    // Valid for ten minutes, an hour from now by the system clock.
    let mut later = certificate_claims(&t.token_url());
    let start = now() + 3600;
    later["nbf"] = json!(start);
    later["iat"] = json!(start);
    later["exp"] = json!(start + 600);
    let later = certificate_assertion(APP_CERT, Algorithm::PS256, &later);
    // Valid for an hour from now.
    let federated = federated_assertion(FEDERATED_SUBJECT, json!("api://AzureADTokenExchange"));

    let response = t.assertion_token(&later).await;
    assert_eq!(
        aadsts(response, StatusCode::UNAUTHORIZED, "invalid_client").await,
        700024,
        "not yet valid"
    );
    for (case, assertion) in [("certificate", current()), ("federated", federated.clone())] {
        let response = t.assertion_token(&assertion).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{case} assertion, valid now"
        );
    }

    t.sim.advance(HOUR);
    let response = t.assertion_token(&later).await;
    assert_eq!(response.status(), StatusCode::OK, "valid an hour on");
    for (case, assertion) in [("certificate", current()), ("federated", federated)] {
        let response = t.assertion_token(&assertion).await;
        assert_eq!(
            aadsts(response, StatusCode::UNAUTHORIZED, "invalid_client").await,
            700024,
            "{case} assertion, expired an hour on"
        );
    }
    assert_eq!(t.sim.counters().tokens_issued, 3);
}

#[tokio::test]
async fn the_dates_the_simulator_writes_are_as_far_ahead_as_its_clock() {
    let (t, url, body) = spawn_importing().await;
    t.sim.advance(DAY);
    let day = DAY.as_secs() as i64;

    // Scripted faults fire before the (by now expired) authtoken is looked at.
    t.sim
        .inject(FaultTarget::Import, Fault::ThrottledUntil { secs: 120 }, 1);
    let throttled = t.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = throttled.headers()["retry-after"].to_str().unwrap();
    let until = chrono::DateTime::parse_from_rfc2822(retry_after)
        .unwrap()
        .to_utc();
    let ahead = seconds_ahead(until);
    assert!(
        (day + 115..=day + 121).contains(&ahead),
        "Retry-After {retry_after} is {ahead} s ahead"
    );

    let anonymous = t
        .http
        .get(format!("{}{SETTINGS}", t.sim.graph_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let error: Value = anonymous.json().await.unwrap();
    let date = error["error"]["innerError"]["date"].as_str().unwrap();
    let date = chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%S")
        .unwrap()
        .and_utc();
    let ahead = seconds_ahead(date);
    assert!(
        (day - 5..=day).contains(&ahead),
        "Graph's date is {ahead} s ahead"
    );

    let mut form = secret_form();
    form[3].1 = "not-the-secret";
    let refused = t.request_token(&form).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let error: Value = refused.json().await.unwrap();
    let timestamp = error["timestamp"].as_str().unwrap();
    let timestamp = chrono::NaiveDateTime::parse_from_str(timestamp, "%Y-%m-%d %H:%M:%SZ")
        .unwrap()
        .and_utc();
    let ahead = seconds_ahead(timestamp);
    assert!(
        (day - 5..=day).contains(&ahead),
        "Entra's timestamp is {ahead} s ahead"
    );
}

#[tokio::test]
async fn expiries_follow_tokios_clock_when_a_test_pauses_and_advances_it() {
    let t = spawn().await;
    let (token, lifetime) = t.token_and_lifetime().await;
    // Paused only while no request is in flight: a paused clock also jumps ahead by itself whenever
    // the runtime waits on a socket, which would fire the clients' timeouts.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(lifetime - 1)).await;
    tokio::time::resume();
    assert_eq!(t.graph_get(&token, SETTINGS).await.status(), StatusCode::OK);
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(1)).await;
    tokio::time::resume();
    refused_as_expired(t.graph_get(&token, SETTINGS).await, "at expiry").await;
}
