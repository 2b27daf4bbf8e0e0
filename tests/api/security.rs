//! Only trusted clients, only their mailboxes: authentication, authorisation, slow clients and TLS.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exchange_simulator::DEMO;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mailbox_gateway::access::parse_rules;
use mailbox_gateway::config::{
    AccessConfig, AuthConfig, ConnectionLimits, JwtConfig, JwtKeySource, TlsSettings,
};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{client, fixture, item, problem, spawn_app_with, AppOptions, TestApp};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "api://mailbox-gateway";

fn rules() -> Vec<mailbox_gateway::access::Rule> {
    parse_rules(&format!(
        r#"[
            {{"client": "appliance", "mailboxes": ["*@contoso.com"], "operations": ["create", "update"]}},
            {{"client": "ops", "mailboxes": ["{}"], "operations": ["list-folders"]}}
        ]"#,
        DEMO.mailbox_id
    ))
    .unwrap()
}

fn api_keys() -> AccessConfig {
    let digest = |key: &str| -> [u8; 32] { Sha256::digest(key.as_bytes()).into() };
    AccessConfig {
        auth: AuthConfig::ApiKeys(vec![
            ("appliance".into(), digest("appliance-key-0123456789")),
            ("ops".into(), digest("ops-key-0123456789")),
        ]),
        rules: rules(),
    }
}

async fn api_key_app(key: Option<&str>) -> TestApp {
    spawn_app_with(AppOptions {
        access: api_keys(),
        bearer: key.map(str::to_owned),
        ..AppOptions::default()
    })
    .await
}

fn jwt_access(keys: JwtKeySource) -> AccessConfig {
    AccessConfig {
        auth: AuthConfig::Jwt(JwtConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            extra_audiences: Vec::new(),
            keys,
            client_claim: "azp".into(),
            users: false,
        }),
        rules: rules(),
    }
}

fn token(
    algorithm: Algorithm,
    kid: Option<&str>,
    key: &EncodingKey,
    change: impl FnOnce(&mut serde_json::Value),
) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "azp": "appliance", "iat": now, "nbf": now, "exp": now + 600,
    });
    change(&mut claims);
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// A token with the standard claims under an arbitrary `header`, signed RS256 with `key`.
fn signed_with_header(header: serde_json::Value, key: &EncodingKey) -> String {
    use base64::Engine;
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "azp": "appliance", "iat": now, "nbf": now, "exp": now + 600,
    });
    let encode = |value: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    };
    let message = format!("{}.{}", encode(&header), encode(&claims));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, Algorithm::RS256).unwrap();
    format!("{message}.{signature}")
}

fn rsa_key(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

async fn create_as(app: &TestApp, bearer: &str, mailbox: &str) -> reqwest::Response {
    client(Some(bearer), None)
        .post(app.inbox_items_url(mailbox))
        .header("content-type", "application/octet-stream")
        .body(item("secure"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_request_without_a_credential_is_401_with_www_authenticate_and_costs_nothing() {
    let app = api_key_app(None).await;
    let response = app.create(DEMO.mailbox_address, "inbox", item("x")).await;
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"mailbox-gateway\""
    );
    let body = problem(response, 401, "unauthenticated").await;
    assert!(
        !body["detail"].as_str().unwrap().contains("key"),
        "says no more than needed: {body}"
    );
    assert_eq!(app.counters().graph_requests, 0);
    assert_eq!(app.counters().tokens_issued, 0);
    // Health checks and the spec stay open.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_wrong_api_key_is_401_and_a_right_one_works_as_bearer_or_x_api_key() {
    let app = api_key_app(Some("not-a-configured-key")).await;
    problem(
        app.create(DEMO.mailbox_address, "inbox", item("x")).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(
        create_as(&app, "appliance-key-0123456789", DEMO.mailbox_address)
            .await
            .status(),
        201
    );
    let with_header = reqwest::Client::new()
        .post(app.inbox_items_url(DEMO.mailbox_address))
        .header("content-type", "application/octet-stream")
        .header("x-api-key", "appliance-key-0123456789")
        .body(item("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(with_header.status(), 201);
}

#[tokio::test]
async fn a_forbidden_mailbox_is_403_by_address_and_by_id_before_any_graph_call() {
    let app = api_key_app(Some("appliance-key-0123456789")).await;
    problem(
        app.create("someone@fabrikam.com", "inbox", item("x")).await,
        403,
        "forbidden",
    )
    .await;
    // The appliance may write to *@contoso.com, which includes adele, but not when she is named by id.
    problem(
        app.create(DEMO.mailbox_id, "inbox", item("x")).await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(app.counters().graph_requests, 0);
    assert_eq!(
        app.create(DEMO.mailbox_address, "inbox", item("x"))
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn a_forbidden_operation_is_403() {
    let app = api_key_app(Some("ops-key-0123456789")).await;
    let folders = app
        .client
        .get(app.url(&format!("/v1/mailboxes/{}/folders", DEMO.mailbox_id)))
        .send()
        .await
        .unwrap();
    assert_eq!(folders.status(), 200);
    problem(
        app.create(DEMO.mailbox_id, "inbox", item("x")).await,
        403,
        "forbidden",
    )
    .await;
    let appliance_lists = client(Some("appliance-key-0123456789"), None)
        .get(app.url(&format!("/v1/mailboxes/{}/folders", DEMO.mailbox_address)))
        .send()
        .await
        .unwrap();
    problem(appliance_lists, 403, "forbidden").await;
    assert_eq!(app.counters().import_requests, 0);
}

#[tokio::test]
async fn jwts_signed_with_rs256_ps256_and_es256_from_a_jwks_file_are_accepted() {
    let app = spawn_app_with(AppOptions {
        access: jwt_access(JwtKeySource::JwksFile(fixture("client-jwks.json"))),
        ..AppOptions::default()
    })
    .await;
    let rsa = rsa_key("client-rsa-key-1.pem");
    let ec =
        EncodingKey::from_ec_pem(&std::fs::read(fixture("client-ec-key.pem")).unwrap()).unwrap();
    for bearer in [
        token(Algorithm::RS256, Some("rsa-1"), &rsa, |_| {}),
        token(Algorithm::PS256, Some("rsa-1"), &rsa, |_| {}),
        token(Algorithm::ES256, Some("ec-1"), &ec, |_| {}),
    ] {
        assert_eq!(
            create_as(&app, &bearer, DEMO.mailbox_address)
                .await
                .status(),
            201
        );
    }
}

#[tokio::test]
async fn expired_wrong_audience_wrong_issuer_and_forged_jwts_are_401() {
    let app = spawn_app_with(AppOptions {
        access: jwt_access(JwtKeySource::JwksFile(fixture("client-jwks.json"))),
        ..AppOptions::default()
    })
    .await;
    let rsa = rsa_key("client-rsa-key-1.pem");
    let now = chrono::Utc::now().timestamp();
    for bad in [
        token(Algorithm::RS256, Some("rsa-1"), &rsa, |c| {
            c["exp"] = (now - 3600).into()
        }),
        token(Algorithm::RS256, Some("rsa-1"), &rsa, |c| {
            c["nbf"] = (now + 3600).into()
        }),
        token(Algorithm::RS256, Some("rsa-1"), &rsa, |c| {
            c["aud"] = "api://someone-else".into()
        }),
        token(Algorithm::RS256, Some("rsa-1"), &rsa, |c| {
            c["iss"] = "https://evil.test".into()
        }),
        token(Algorithm::RS256, Some("rsa-1"), &rsa, |c| {
            c.as_object_mut().unwrap().remove("azp");
        }),
        // A header naming a critical extension the gateway does not understand (RFC 7515 4.1.11).
        signed_with_header(
            serde_json::json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp-ext"], "exp-ext": 1}),
            &rsa,
        ),
        // Not an access token.
        signed_with_header(
            serde_json::json!({"alg": "RS256", "kid": "rsa-1", "typ": "logout+jwt"}),
            &rsa,
        ),
        // A client name that would forge a log line (issue 14, item 7).
        token(Algorithm::RS256, Some("rsa-1"), &rsa, |c| {
            c["azp"] = "appliance\nFAKE audit line".into()
        }),
        // Signed by a key the JWKS does not hold, under a kid it does.
        token(
            Algorithm::RS256,
            Some("rsa-1"),
            &rsa_key("client-rsa-key-2.pem"),
            |_| {},
        ),
        // HS256 "signed" with the public JWKS as secret: algorithm confusion is refused.
        token(
            Algorithm::HS256,
            Some("rsa-1"),
            &EncodingKey::from_secret(b"x"),
            |_| {},
        ),
    ] {
        problem(
            create_as(&app, &bad, DEMO.mailbox_address).await,
            401,
            "unauthenticated",
        )
        .await;
    }
    assert_eq!(app.counters().graph_requests, 0);
}

#[tokio::test]
async fn an_unknown_kid_re_reads_the_jwks_url_so_rotated_keys_are_accepted() {
    let jwks = Arc::new(Mutex::new(
        std::fs::read_to_string(fixture("client-jwks.json")).unwrap(),
    ));
    let served = jwks.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/keys", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let router = axum::Router::new().route(
            "/keys",
            axum::routing::get(move || {
                let body = served.lock().unwrap().clone();
                async move { body }
            }),
        );
        axum::serve(listener, router).await.unwrap();
    });
    let app = spawn_app_with(AppOptions {
        access: jwt_access(JwtKeySource::JwksUrl(jwks_url.parse().unwrap())),
        ..AppOptions::default()
    })
    .await;
    let rsa1 = token(
        Algorithm::RS256,
        Some("rsa-1"),
        &rsa_key("client-rsa-key-1.pem"),
        |_| {},
    );
    assert_eq!(
        create_as(&app, &rsa1, DEMO.mailbox_address).await.status(),
        201
    );
    // The identity provider rotates in a new key; the gateway has never seen its kid.
    *jwks.lock().unwrap() = std::fs::read_to_string(fixture("client-jwks-rotated.json")).unwrap();
    let rsa2 = token(
        Algorithm::RS256,
        Some("rsa-2"),
        &rsa_key("client-rsa-key-2.pem"),
        |_| {},
    );
    assert_eq!(
        create_as(&app, &rsa2, DEMO.mailbox_address).await.status(),
        201
    );
    let unknown = token(
        Algorithm::RS256,
        Some("rsa-9"),
        &rsa_key("client-rsa-key-2.pem"),
        |_| {},
    );
    problem(
        create_as(&app, &unknown, DEMO.mailbox_address).await,
        401,
        "unauthenticated",
    )
    .await;
}

#[tokio::test]
async fn hs256_jwts_are_checked_against_the_shared_secret() {
    let secret = "a-shared-secret-of-at-least-32-characters";
    let app = spawn_app_with(AppOptions {
        access: jwt_access(JwtKeySource::Hs256(SecretString::from(secret.to_owned()))),
        ..AppOptions::default()
    })
    .await;
    let good = token(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(secret.as_bytes()),
        |_| {},
    );
    assert_eq!(
        create_as(&app, &good, DEMO.mailbox_address).await.status(),
        201
    );
    let bad = token(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        |_| {},
    );
    problem(
        create_as(&app, &bad, DEMO.mailbox_address).await,
        401,
        "unauthenticated",
    )
    .await;
}

#[tokio::test]
async fn headers_sent_too_slowly_get_the_connection_closed() {
    let app = spawn_app_with(AppOptions {
        connections: ConnectionLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_millis(500),
            ..ConnectionLimits::default()
        },
        ..AppOptions::default()
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    // Two slowloris connections take every slot, trickling a request line and never finishing headers.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    // A real client waits for a slot, which the header deadline frees.
    let started = Instant::now();
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "it had to wait: {:?}",
        started.elapsed()
    );
    for mut stream in slow {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the server closed the slow connection");
    }
}

#[tokio::test]
async fn a_body_far_over_the_limit_is_refused_without_being_buffered() {
    let app = spawn_app_with(AppOptions {
        max_item_bytes: 64 * 1024,
        ..AppOptions::default()
    })
    .await;
    // 10 GB, produced lazily: the gateway must answer long before it could have read it.
    let chunk = bytes::Bytes::from(vec![0u8; 1024 * 1024]);
    let endless = futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()))
        .take(10 * 1024);
    let response = app
        .client
        .post(app.inbox_items_url(DEMO.mailbox_address))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(endless))
        .send()
        .await;
    match response {
        Ok(response) => {
            problem(response, 413, "item_too_large").await;
        }
        // The gateway may close the connection while the client is still sending; either way it stopped.
        Err(error) => assert!(error.is_request() || error.is_body(), "{error}"),
    }
    assert_eq!(app.counters().graph_requests, 0);
}

#[tokio::test]
async fn percent_tricks_in_ids_are_refused_before_any_graph_call() {
    let app = spawn_app_with(AppOptions::default()).await;
    for path in [
        "/v1/mailboxes/adele%40contoso.com%2F..%2Fadmin/folders/inbox/items",
        "/v1/mailboxes/adele@contoso.com/folders/%252F/items",
        "/v1/mailboxes/adele@contoso.com%00/folders/inbox/items",
        "/v1/mailboxes/adele@contoso.com/folders/in%0Abox/items",
        "/v1/mailboxes/%22adele%22@contoso.com/folders/inbox/items",
        "/v1/mailboxes/adele@contoso.com/folders/%C0%AE%C0%AE/items",
    ] {
        let response = app
            .client
            .post(app.url(path))
            .header("content-type", "application/octet-stream")
            .body(item("x"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
    }
    assert_eq!(app.counters().graph_requests, 0);
}

#[tokio::test]
async fn https_serves_h2_and_http1_and_picks_up_a_new_certificate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(fixture("tls-a-cert.pem"), &cert).unwrap();
    std::fs::copy(fixture("tls-a-key.pem"), &key).unwrap();
    let app = spawn_app_with(AppOptions {
        tls: Some(TlsSettings {
            cert_path: cert.clone(),
            key_path: key.clone(),
            reload_every: Duration::from_millis(100),
        }),
        root_certificate: Some(fixture("tls-a-ca.pem")),
        ..AppOptions::default()
    })
    .await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.version(),
        reqwest::Version::HTTP_2,
        "ALPN offers h2"
    );
    assert_eq!(
        app.create(DEMO.mailbox_address, "inbox", item("tls"))
            .await
            .status(),
        201
    );

    let trusts_b = client(None, Some(&fixture("tls-b-ca.pem")));
    assert!(
        trusts_b.get(app.url("/healthz")).send().await.is_err(),
        "still serving certificate A"
    );
    std::fs::copy(fixture("tls-b-key.pem"), &key).unwrap();
    std::fs::copy(fixture("tls-b-cert.pem"), &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A fresh client each time, so no pooled connection from before the swap is reused.
        let attempt = client(None, Some(&fixture("tls-b-ca.pem")))
            .get(app.url("/healthz"))
            .send()
            .await;
        if let Ok(response) = attempt {
            assert_eq!(response.status(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "certificate B was never picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn cleartext_http2_is_served_too() {
    let app = spawn_app_with(AppOptions::default()).await;
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2c.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
}

/// A stand-in for Graph that redirects every request, to the same origin or elsewhere.
async fn redirecting_graph(to_other_origin: bool) -> (String, Arc<Mutex<Vec<String>>>) {
    use axum::http::{HeaderMap, StatusCode, Uri};
    let elsewhere_saw = Arc::new(Mutex::new(Vec::new()));
    let seen = elsewhere_saw.clone();
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_url = format!("http://{}", elsewhere.local_addr().unwrap());
    tokio::spawn(async move {
        let router = axum::Router::new().fallback(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let authorization = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned());
                seen.lock().unwrap().push(authorization.unwrap_or_default());
                (StatusCode::OK, r#"{"value":[]}"#)
            }
        });
        axum::serve(elsewhere, router).await.unwrap();
    });
    let graph = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let graph_url = format!("http://{}/v1.0", graph.local_addr().unwrap());
    tokio::spawn(async move {
        let router = axum::Router::new()
            .route(
                "/moved/folders",
                axum::routing::get(|| async { (StatusCode::OK, r#"{"value":[{"id":"AQ=="}]}"#) }),
            )
            .fallback(move |uri: Uri| {
                let target = if to_other_origin {
                    format!("{elsewhere_url}{}", uri.path())
                } else {
                    "/moved/folders".to_owned()
                };
                async move { (StatusCode::PERMANENT_REDIRECT, [("location", target)]) }
            });
        axum::serve(graph, router).await.unwrap();
    });
    (graph_url, elsewhere_saw)
}

#[tokio::test]
async fn graph_redirects_are_followed_within_graphs_origin_only() {
    let (graph_url, elsewhere_saw) = redirecting_graph(true).await;
    let app = spawn_app_with(AppOptions {
        graph_url: Some(graph_url),
        ..AppOptions::default()
    })
    .await;
    let folders = app
        .client
        .get(app.url(&format!("/v1/mailboxes/{}/folders", DEMO.mailbox_id)))
        .send()
        .await
        .unwrap();
    problem(folders, 502, "upstream_error").await;
    assert!(
        elsewhere_saw.lock().unwrap().is_empty(),
        "the bearer token never went to another origin"
    );

    let (graph_url, _) = redirecting_graph(false).await;
    let app = spawn_app_with(AppOptions {
        graph_url: Some(graph_url),
        ..AppOptions::default()
    })
    .await;
    let folders = app
        .client
        .get(app.url(&format!("/v1/mailboxes/{}/folders", DEMO.mailbox_id)))
        .send()
        .await
        .unwrap();
    assert_eq!(folders.status(), 200, "a same-origin redirect is followed");
    assert_eq!(
        folders.json::<serde_json::Value>().await.unwrap()["value"][0]["id"],
        "AQ=="
    );
}

fn idle_app_options(max_connections: usize) -> AppOptions {
    AppOptions {
        connections: ConnectionLimits {
            max_connections,
            idle_timeout: Duration::from_secs(1),
            ..ConnectionLimits::default()
        },
        ..AppOptions::default()
    }
}

#[tokio::test]
async fn idle_connections_that_send_nothing_are_closed_and_free_the_connection_cap() {
    let app = spawn_app_with(idle_app_options(5)).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    // More silent connections than the cap: five take every slot, three wait in the backlog.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        app.client.get(app.url("/healthz")).send(),
    )
    .await
    .expect("a new client is served once the idle connections are closed")
    .unwrap();
    assert_eq!(response.status(), 200);
    eprintln!("served after {:?}", started.elapsed());
    // The gateway closed the silent ones itself.
    for mut stream in silent.drain(..5) {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the gateway closed the idle connection");
    }
}

/// A gateway with one connection slot, header, idle and send timeouts of a second, and a 24 MiB item in the
/// demo mailbox (far more than loopback's socket buffers hold, so its answer waits on its reader);
/// answers the gateway and a raw connection that has asked for the item and read nothing yet.
async fn a_big_item_asked_for_on_the_only_connection() -> (TestApp, tokio::net::TcpStream, usize) {
    let app = spawn_app_with(AppOptions {
        connections: ConnectionLimits {
            max_connections: 1,
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
            ..ConnectionLimits::default()
        },
        max_item_bytes: 64 << 20,
        memory_budget: 512 << 20,
        ..AppOptions::default()
    })
    .await;
    let size = 24 << 20;
    let big = mailbox_gateway::fts::ItemBuilder::new("big")
        .total_size(size)
        .build();
    let created = app.create(DEMO.mailbox_address, "inbox", big).await;
    assert_eq!(created.status(), 201);
    let item_id = created.json::<serde_json::Value>().await.unwrap()["itemId"]
        .as_str()
        .unwrap()
        .to_owned();
    // The pooled connection that imported it is closed once idle, which frees the slot for this one.
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /v1/mailboxes/{}/folders/inbox/items/{} HTTP/1.1\r\nHost: x\r\n\r\n",
                crate::helpers::encode(DEMO.mailbox_address),
                crate::helpers::encode(&item_id)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    (app, stream, size)
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answer_is_cut_off_and_frees_its_connection() {
    let (app, mut stalled, size) = a_big_item_asked_for_on_the_only_connection().await;
    // The client never reads. Another client is served once the gateway has cut it off.
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        client(None, None).get(app.url("/healthz")).send(),
    )
    .await
    .expect("a new client is served once the stalled connection is cut off")
    .unwrap();
    assert_eq!(response.status(), 200);
    eprintln!("served after {:?}", started.elapsed());
    // The stalled client got the start of its answer and then the end of the connection, not the item.
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut received)).await;
    let text = String::from_utf8_lossy(&received[..received.len().min(64)]).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(received.len() < size, "the whole answer arrived");
}

#[tokio::test]
async fn a_slow_but_steady_reader_gets_its_whole_answer_however_long_it_takes() {
    let (_app, mut slow, size) = a_big_item_asked_for_on_the_only_connection().await;
    // 128 KiB every 50 ms: about 10 s for the item, longer than the idle timeout and the 5 s an idle
    // connection is given to close, and ten times the send timeout.
    let started = Instant::now();
    let mut received = Vec::new();
    let mut chunk = vec![0; 128 << 10];
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let read = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut chunk))
            .await
            .expect("the gateway keeps sending")
            .unwrap();
        received.extend_from_slice(&chunk[..read]);
        let header_end = received.windows(4).position(|w| w == b"\r\n\r\n");
        if read == 0 || header_end.is_some_and(|end| received.len() - end - 4 >= size) {
            break;
        }
    }
    eprintln!("read {} bytes in {:?}", received.len(), started.elapsed());
    let header_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(received.starts_with(b"HTTP/1.1 200"));
    assert_eq!(
        received.len() - header_end - 4,
        size,
        "the whole item arrived"
    );
}

#[tokio::test]
async fn an_idle_http2_connection_gets_a_goaway_and_is_closed() {
    let app = spawn_app_with(idle_app_options(10)).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    // The client preface and an empty SETTINGS frame, then nothing.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
        .await
        .expect("the gateway closes the idle HTTP/2 connection")
        .ok();
    // Walk the frames the gateway sent: a GOAWAY (type 7) must be among them.
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 9 <= received.len() {
        let length = u32::from_be_bytes([0, received[at], received[at + 1], received[at + 2]]);
        frames.push(received[at + 3]);
        at += 9 + length as usize;
    }
    assert!(frames.contains(&7), "frame types received: {frames:?}");
}

#[tokio::test]
async fn a_keep_alive_connection_is_closed_once_idle_between_requests() {
    let app = spawn_app_with(idle_app_options(10)).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
        .await
        .expect("the gateway closes the keep-alive connection once it is idle")
        .unwrap();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn a_flood_of_made_up_kids_causes_at_most_a_few_jwks_reads_and_is_refused() {
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = reads.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/keys", listener.local_addr().unwrap());
    let jwks = std::fs::read_to_string(fixture("client-jwks.json")).unwrap();
    tokio::spawn(async move {
        let router = axum::Router::new().route(
            "/keys",
            axum::routing::get(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = jwks.clone();
                // A slow identity provider: look-ups pile up behind the read.
                async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    body
                }
            }),
        );
        axum::serve(listener, router).await.unwrap();
    });
    let app = spawn_app_with(AppOptions {
        access: jwt_access(JwtKeySource::JwksUrl(jwks_url.parse().unwrap())),
        ..AppOptions::default()
    })
    .await;
    let key = rsa_key("client-rsa-key-1.pem");
    let made_up: Vec<String> = (0..60)
        .map(|i| {
            token(
                Algorithm::RS256,
                Some(&format!("made-up-{i}")),
                &key,
                |_| {},
            )
        })
        .collect();
    let answers = futures_util::future::join_all(
        made_up
            .iter()
            .map(|bad| create_as(&app, bad, DEMO.mailbox_address)),
    )
    .await;
    assert!(answers.iter().all(|a| a.status() == 401));
    let fetched = reads.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=3).contains(&fetched),
        "{fetched} JWKS reads for 60 made-up kids"
    );
    // A real client's kid was loaded by that read: it is not held up.
    let good = token(Algorithm::RS256, Some("rsa-1"), &key, |_| {});
    assert_eq!(
        create_as(&app, &good, DEMO.mailbox_address).await.status(),
        201
    );
    assert!(app.counters().graph_requests > 0);
}

#[tokio::test]
async fn two_credential_headers_are_refused_rather_than_one_chosen() {
    let app = api_key_app(None).await;
    let response = app
        .client
        .post(app.inbox_items_url(DEMO.mailbox_address))
        .header("content-type", "application/octet-stream")
        .header("authorization", "Bearer appliance-key-0123456789")
        .header("x-api-key", "ops-key-0123456789")
        .body(item("two"))
        .send()
        .await
        .unwrap();
    problem(response, 401, "unauthenticated").await;
    assert_eq!(app.counters().graph_requests, 0);
}
