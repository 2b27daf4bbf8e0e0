//! Drives the Exchange Online simulator over real sockets, as the gateway will.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use exchange_simulator::{
    Behaviour, Counters, Fault, FaultTarget, Simulator, SimulatorConfig, DEMO,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256};

const APP_CERT: &str = include_str!("fixtures/app-cert-and-key.pem");
const OTHER_CERT: &str = include_str!("fixtures/other-cert-and-key.pem");
const FEDERATED_KEY: &str = include_str!("fixtures/federated-issuer-key.pem");
const FEDERATED_PUB: &str = include_str!("fixtures/federated-issuer-pub.pem");
const FEDERATED_ISSUER: &str = "https://oidc.cluster.example.test";
const FEDERATED_SUBJECT: &str = "system:serviceaccount:mail:mailbox-gateway";

/// A running simulator and a client to talk to it.
struct TestSim {
    sim: Simulator,
    http: Client,
}

async fn spawn() -> TestSim {
    spawn_with(SimulatorConfig::default()).await
}

async fn spawn_with(config: SimulatorConfig) -> TestSim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::start(listener, config).await.unwrap();
    TestSim {
        sim,
        http: Client::new(),
    }
}

impl TestSim {
    fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.sim.base_url(),
            DEMO.tenant_id
        )
    }

    async fn request_token(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.token_url())
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// A Graph access token obtained with the demo secret.
    async fn token(&self) -> String {
        let response = self
            .request_token(&[
                ("client_id", DEMO.client_id),
                ("scope", "https://graph.microsoft.com/.default"),
                ("grant_type", "client_credentials"),
                ("client_secret", DEMO.client_secret),
            ])
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn assertion_token(&self, assertion: &str) -> reqwest::Response {
        self.request_token(&[
            ("client_id", DEMO.client_id),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])
        .await
    }

    async fn graph_get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.sim.graph_url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Creates an import session on `mailbox_id` and returns its import URL.
    async fn import_url(&self, token: &str, mailbox_id: &str) -> String {
        let response = self
            .http
            .post(format!(
                "{}/admin/exchange/mailboxes/{}/createImportSession",
                self.sim.graph_url(),
                encode(mailbox_id)
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["importUrl"].as_str().unwrap().to_owned()
    }

    async fn import(&self, import_url: &str, body: &Value) -> (StatusCode, Value) {
        let response = self.http.post(import_url).json(body).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A well-formed item stream: Config, IsInterfaceOk, TellPartnerVersion, then two TransferBuffers.
fn item_stream(subject: &str) -> Vec<u8> {
    let mut data = frame(1, &[0, 0, 0, 0, 1, 0, 0, 0]);
    data.extend(frame(3, &[0; 24]));
    data.extend(frame(4, &[0x14, 0x0F, 0xD6, 0x91, 0x86, 0x17]));
    data.extend(frame(2, &[0x03, 0x00, 0x17, 0x00, 0x01, 0x00, 0x00, 0x00]));
    data.extend(frame(2, subject.as_bytes()));
    data
}

fn frame(opcode: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = opcode.to_le_bytes().to_vec();
    out.extend_from_slice(&(payload.len() as i32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn create_body(folder_id: &str, data: &[u8]) -> Value {
    json!({"FolderId": folder_id, "Mode": "create", "Data": STANDARD.encode(data)})
}

fn pem_block(pem_text: &str, tag: &str) -> pem::Pem {
    pem::parse_many(pem_text)
        .unwrap()
        .into_iter()
        .find(|block| block.tag() == tag)
        .unwrap()
}

fn signing_key(pem_text: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem::encode(&pem_block(pem_text, "PRIVATE KEY")).as_bytes()).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Certificate assertion claims as the documentation prescribes them.
fn certificate_claims(aud: &str) -> Value {
    let now = now();
    json!({
        "aud": aud,
        "iss": DEMO.client_id,
        "sub": DEMO.client_id,
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now,
        "iat": now,
        "exp": now + 600,
    })
}

/// Signs `claims` with the key in `cert_pem`, naming the certificate by `x5t#S256` (PS256) or `x5t`
/// (RS256).
fn certificate_assertion(cert_pem: &str, alg: Algorithm, claims: &Value) -> String {
    let der = pem_block(cert_pem, "CERTIFICATE").into_contents();
    let mut header = Header::new(alg);
    match alg {
        Algorithm::PS256 => header.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&der))),
        _ => header.x5t = Some(URL_SAFE_NO_PAD.encode(Sha1::digest(&der))),
    }
    jsonwebtoken::encode(&header, claims, &signing_key(cert_pem)).unwrap()
}

fn federated_assertion(subject: &str, aud: Value) -> String {
    let now = now();
    let claims = json!({
        "iss": FEDERATED_ISSUER,
        "sub": subject,
        "aud": aud,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(FEDERATED_KEY.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Asserts an Entra error shape and returns its AADSTS code.
async fn aadsts(response: reqwest::Response, status: StatusCode, error: &str) -> u64 {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    let code = body["error_codes"][0].as_u64().unwrap();
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
    code
}

/// Asserts a Graph error shape and returns its code.
async fn graph_error(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    let request_id = response.headers()["request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["innerError"]["request-id"],
        request_id.as_str()
    );
    assert!(body["error"]["message"].is_string());
    body["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_client_secret_buys_a_token_that_graph_accepts_for_the_demo_mailbox() {
    let t = spawn().await;
    let response = t
        .request_token(&[
            ("client_id", DEMO.client_id),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
            ("client_secret", DEMO.client_secret),
        ])
        .await;
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

#[tokio::test]
async fn a_wrong_client_secret_is_refused_with_aadsts7000215() {
    let t = spawn().await;
    let response = t
        .request_token(&[
            ("client_id", DEMO.client_id),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
            ("client_secret", "not-the-secret"),
        ])
        .await;
    assert_eq!(
        aadsts(response, StatusCode::UNAUTHORIZED, "invalid_client").await,
        7000215
    );
    let counters = t.sim.counters();
    assert_eq!(counters.tokens_issued, 0);
    assert_eq!(counters.token_requests_rejected, 1);
}

#[tokio::test]
async fn unknown_tenants_clients_scopes_and_credential_mixes_are_refused_with_their_codes() {
    let t = spawn().await;
    let base = [
        ("client_id", DEMO.client_id),
        ("scope", "https://graph.microsoft.com/.default"),
        ("grant_type", "client_credentials"),
        ("client_secret", DEMO.client_secret),
    ];

    let wrong_tenant = t
        .http
        .post(format!(
            "{}/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token",
            t.sim.base_url()
        ))
        .form(&base)
        .send()
        .await
        .unwrap();
    assert_eq!(
        aadsts(wrong_tenant, StatusCode::BAD_REQUEST, "invalid_request").await,
        90002
    );

    let mut unknown_client = base;
    unknown_client[0].1 = "11111111-1111-1111-1111-111111111111";
    let response = t.request_token(&unknown_client).await;
    assert_eq!(
        aadsts(response, StatusCode::BAD_REQUEST, "unauthorized_client").await,
        700016
    );

    let mut wrong_scope = base;
    wrong_scope[1].1 = "https://graph.microsoft.com/Mail.Read";
    let response = t.request_token(&wrong_scope).await;
    assert_eq!(
        aadsts(response, StatusCode::BAD_REQUEST, "invalid_scope").await,
        1002012
    );

    let neither = &base[..3];
    let response = t.request_token(neither).await;
    aadsts(response, StatusCode::BAD_REQUEST, "invalid_request").await;

    let mut both = base.to_vec();
    both.push((
        "client_assertion_type",
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    ));
    both.push(("client_assertion", "a.b.c"));
    let response = t.request_token(&both).await;
    aadsts(response, StatusCode::BAD_REQUEST, "invalid_request").await;

    let counters = t.sim.counters();
    assert_eq!(counters.token_requests_rejected, 5);
    assert_eq!(counters.tokens_issued, 0);
}

#[tokio::test]
async fn a_ps256_certificate_assertion_naming_x5t_s256_buys_a_token() {
    let t = spawn().await;
    t.sim.register_certificate(APP_CERT);
    let assertion = certificate_assertion(
        APP_CERT,
        Algorithm::PS256,
        &certificate_claims(&t.token_url()),
    );
    let response = t.assertion_token(&assertion).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let settings = t
        .graph_get(token, "/users/adele@contoso.com/settings/exchange")
        .await;
    assert_eq!(settings.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_rs256_certificate_assertion_naming_x5t_buys_a_token() {
    let t = spawn().await;
    t.sim.register_certificate(APP_CERT);
    let assertion = certificate_assertion(
        APP_CERT,
        Algorithm::RS256,
        &certificate_claims(&t.token_url()),
    );
    let response = t.assertion_token(&assertion).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(t.sim.counters().tokens_issued, 1);
}

#[tokio::test]
async fn an_assertion_signed_by_an_unregistered_certificate_is_refused_with_aadsts700027() {
    let t = spawn().await;
    t.sim.register_certificate(APP_CERT);
    for alg in [Algorithm::PS256, Algorithm::RS256] {
        let assertion = certificate_assertion(OTHER_CERT, alg, &certificate_claims(&t.token_url()));
        let response = t.assertion_token(&assertion).await;
        assert_eq!(
            aadsts(response, StatusCode::UNAUTHORIZED, "invalid_client").await,
            700027
        );
    }
}

#[tokio::test]
async fn an_assertion_naming_the_registered_thumbprint_but_signed_by_another_key_is_refused() {
    let t = spawn().await;
    t.sim.register_certificate(APP_CERT);
    let der = pem_block(APP_CERT, "CERTIFICATE").into_contents();
    let mut header = Header::new(Algorithm::PS256);
    header.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&der)));
    let forged = jsonwebtoken::encode(
        &header,
        &certificate_claims(&t.token_url()),
        &signing_key(OTHER_CERT),
    )
    .unwrap();
    let response = t.assertion_token(&forged).await;
    assert_eq!(
        aadsts(response, StatusCode::UNAUTHORIZED, "invalid_client").await,
        700027
    );
}

#[tokio::test]
async fn a_certificate_assertion_for_another_audience_is_refused_with_aadsts700023() {
    let t = spawn().await;
    t.sim.register_certificate(APP_CERT);
    let claims = certificate_claims(&format!(
        "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
        DEMO.tenant_id
    ));
    let assertion = certificate_assertion(APP_CERT, Algorithm::PS256, &claims);
    let response = t.assertion_token(&assertion).await;
    assert_eq!(
        aadsts(response, StatusCode::UNAUTHORIZED, "invalid_client").await,
        700023
    );
}

#[tokio::test]
async fn expired_and_overlong_certificate_assertions_are_refused_with_aadsts700024() {
    let t = spawn().await;
    t.sim.register_certificate(APP_CERT);
    let mut expired = certificate_claims(&t.token_url());
    expired["nbf"] = json!(now() - 900);
    expired["iat"] = json!(now() - 900);
    expired["exp"] = json!(now() - 300);
    let mut overlong = certificate_claims(&t.token_url());
    overlong["exp"] = json!(now() + 3600);
    for claims in [expired, overlong] {
        let assertion = certificate_assertion(APP_CERT, Algorithm::PS256, &claims);
        let response = t.assertion_token(&assertion).await;
        assert_eq!(
            aadsts(response, StatusCode::UNAUTHORIZED, "invalid_client").await,
            700024
        );
    }
}

#[tokio::test]
async fn a_certificate_assertion_whose_issuer_is_not_the_client_is_refused() {
    let t = spawn().await;
    t.sim.register_certificate(APP_CERT);
    let mut claims = certificate_claims(&t.token_url());
    claims["iss"] = json!("someone-else");
    let assertion = certificate_assertion(APP_CERT, Algorithm::RS256, &claims);
    let response = t.assertion_token(&assertion).await;
    assert_eq!(
        aadsts(response, StatusCode::UNAUTHORIZED, "invalid_client").await,
        700021
    );
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
            .assertion_token(&federated_assertion(FEDERATED_SUBJECT, aud))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
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
    for assertion in [wrong_subject, wrong_audience] {
        let response = t.assertion_token(&assertion).await;
        assert_eq!(
            aadsts(response, StatusCode::UNAUTHORIZED, "invalid_client").await,
            70021
        );
    }
}

#[tokio::test]
async fn graph_refuses_missing_unknown_revoked_and_expired_tokens_with_401() {
    let t = spawn().await;
    let path = "/users/adele@contoso.com/settings/exchange";
    let anonymous = t
        .http
        .get(format!("{}{path}", t.sim.graph_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        graph_error(anonymous, StatusCode::UNAUTHORIZED).await,
        "InvalidAuthenticationToken"
    );
    let forged = t.graph_get("made-up-token", path).await;
    assert_eq!(
        graph_error(forged, StatusCode::UNAUTHORIZED).await,
        "InvalidAuthenticationToken"
    );

    let token = t.token().await;
    assert_eq!(t.graph_get(&token, path).await.status(), StatusCode::OK);
    t.sim.revoke_tokens();
    let revoked = t.graph_get(&token, path).await;
    assert_eq!(
        graph_error(revoked, StatusCode::UNAUTHORIZED).await,
        "InvalidAuthenticationToken"
    );

    // A zero lifetime makes the token expire as it is issued, without waiting.
    t.sim.set_token_lifetime(Duration::ZERO);
    let expired = t.token().await;
    let response = t.graph_get(&expired, path).await;
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
            "BadRequest"
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
        assert_eq!(folder["id"], inbox_id.as_str());
        assert_eq!(folder["wellKnownName"], "inbox");
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
    let body = json!({
        "FolderId": drafts,
        "Mode": "update",
        "Data": STANDARD.encode(item_stream("y")),
        "ItemId": created["itemId"],
        "ChangeKey": created["changeKey"],
    });
    let (status, _) = t.import(&url, &body).await;
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
    for bad in [&without_token, &altered, &foreign] {
        let (status, body) = t.import(bad, &body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["Message"].is_string());
        assert!(!body.to_string().contains("authtoken="));
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
async fn a_folder_of_the_auto_expanded_archive_gets_409_naming_the_archive_mailbox() {
    let t = spawn().await;
    let archive = t.sim.add_archive(DEMO.mailbox_id);
    let token = t.token().await;
    let settings = t
        .graph_get(&token, "/users/adele@contoso.com/settings/exchange")
        .await;
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
            "ErrorFolderNotFound: The specified folder could not be found in the store."
        );
    }
}

#[tokio::test]
async fn malformed_import_bodies_are_refused_with_400_naming_the_problem() {
    let t = spawn().await;
    let token = t.token().await;
    let url = t.import_url(&token, DEMO.mailbox_id).await;
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let good = STANDARD.encode(item_stream("x"));
    let mut truncated = item_stream("x");
    truncated.pop();
    let mut empty_buffer = item_stream("x");
    empty_buffer.extend(frame(2, b""));
    let mut unknown_opcode = item_stream("x");
    unknown_opcode.extend(frame(9, b"?"));

    let cases = [
        (
            json!({"FolderId": inbox, "Mode": "create", "Data": "not base64!"}),
            "base64",
        ),
        (
            json!({"FolderId": inbox, "Mode": "create", "Data": STANDARD.encode(&truncated)}),
            "item stream",
        ),
        (
            json!({"FolderId": inbox, "Mode": "create", "Data": STANDARD.encode(&empty_buffer)}),
            "item stream",
        ),
        (
            json!({"FolderId": inbox, "Mode": "create", "Data": STANDARD.encode(&unknown_opcode)}),
            "item stream",
        ),
        (
            json!({"FolderId": inbox, "Mode": "create", "Data": STANDARD.encode(frame(1, &[0; 8]))}),
            "item stream",
        ),
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

// Scripted faults.

const MAILBOX_CONCURRENCY: &str = "Application is over its MailboxConcurrency limit.";

fn status_fault(status: u16, retry_after: Option<u64>, code: Option<&str>) -> Fault {
    Fault::Status {
        status,
        retry_after,
        code: code.map(str::to_owned),
    }
}

/// A simulator with a Graph token and an import URL on the demo mailbox, plus an import body for
/// its inbox.
async fn spawn_importing() -> (TestSim, String, Value) {
    let t = spawn().await;
    let token = t.token().await;
    let url = t.import_url(&token, DEMO.mailbox_id).await;
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    (t, url, create_body(&inbox, &item_stream("x")))
}

#[tokio::test]
async fn an_injected_429_on_import_says_retry_after_and_mailbox_concurrency_and_stores_nothing() {
    let (t, url, body) = spawn_importing().await;
    t.sim
        .inject(FaultTarget::Import, status_fault(429, Some(7), None), 1);

    let response = t.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
    assert!(response.headers().contains_key("request-id"));
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer, json!({ "Message": MAILBOX_CONCURRENCY }));
    assert!(t.sim.items(DEMO.mailbox_id).is_empty());

    let counters = t.sim.counters();
    assert_eq!(counters.import_requests, 1);
    assert_eq!(counters.faults_injected, 1);
    assert_eq!(counters.items_created, 0);
}

#[tokio::test]
async fn an_injected_503_on_import_has_no_retry_after_and_a_code_prefixes_its_message() {
    let (t, url, body) = spawn_importing().await;
    t.sim
        .inject(FaultTarget::Import, status_fault(503, None, None), 1);
    t.sim.inject(
        FaultTarget::Import,
        status_fault(503, Some(30), Some("ErrorServerBusy")),
        1,
    );

    let plain = t.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!plain.headers().contains_key("retry-after"));
    let plain: Value = plain.json().await.unwrap();
    assert!(
        plain["Message"].as_str().unwrap().contains("503"),
        "{plain}"
    );

    let coded = t.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(coded.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(coded.headers()["retry-after"], "30");
    let coded: Value = coded.json().await.unwrap();
    assert!(
        coded["Message"]
            .as_str()
            .unwrap()
            .starts_with("ErrorServerBusy: "),
        "{coded}"
    );
    assert!(t.sim.items(DEMO.mailbox_id).is_empty());
    assert_eq!(t.sim.counters().import_requests, 2);
}

#[tokio::test]
async fn throttled_until_answers_429_with_an_http_date_that_many_seconds_ahead() {
    let (t, url, body) = spawn_importing().await;
    t.sim
        .inject(FaultTarget::Import, Fault::ThrottledUntil { secs: 120 }, 1);

    let response = t.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(retry_after.ends_with(" GMT"), "{retry_after}");
    let until = chrono::DateTime::parse_from_rfc2822(&retry_after).unwrap();
    let ahead = until
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    // The date has whole seconds and the request took some time: allow a few either way.
    assert!(
        (115..=121).contains(&ahead),
        "{retry_after} is {ahead} s ahead"
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["Message"], MAILBOX_CONCURRENCY);
    assert!(t.sim.items(DEMO.mailbox_id).is_empty());
}

#[tokio::test]
async fn a_delayed_import_is_stored_and_answered_200_no_sooner_than_the_delay() {
    let (t, url, body) = spawn_importing().await;
    let delay = Duration::from_millis(300);
    t.sim.inject(FaultTarget::Import, Fault::Delay(delay), 1);

    let started = std::time::Instant::now();
    let (status, answer) = t.import(&url, &body).await;
    // A lower bound only: the answer cannot come before the simulator has waited.
    assert!(started.elapsed() >= delay);
    assert_eq!(status, StatusCode::OK, "{answer}");
    let items = t.sim.items(DEMO.mailbox_id);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].item_id, answer["itemId"].as_str().unwrap());
    let counters = t.sim.counters();
    assert_eq!(counters.items_created, 1);
    assert_eq!(counters.import_requests, 1);
    assert_eq!(counters.faults_injected, 1);
}

#[tokio::test]
async fn a_connection_dropped_after_handling_gives_the_client_an_error_but_keeps_the_item() {
    let (t, url, body) = spawn_importing().await;
    t.sim
        .inject(FaultTarget::Import, Fault::DropAfterHandling, 1);

    // The status line and headers arrive; the body breaks off, as when a proxy drops the connection.
    let response = t.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let outcome = response.bytes().await;
    assert!(
        outcome.is_err(),
        "the client got a complete answer: {outcome:?}"
    );
    assert_eq!(t.sim.items(DEMO.mailbox_id).len(), 1);
    let counters = t.sim.counters();
    assert_eq!(counters.items_created, 1);
    assert_eq!(counters.import_requests, 1);
    assert_eq!(counters.faults_injected, 1);

    // The fault is spent: the next import gets through on a fresh connection.
    assert_eq!(t.import(&url, &body).await.0, StatusCode::OK);
    assert_eq!(t.sim.items(DEMO.mailbox_id).len(), 2);
}

#[tokio::test]
async fn an_updating_import_dropped_after_handling_is_still_applied() {
    let (t, url, body) = spawn_importing().await;
    let (_, created) = t.import(&url, &body).await;
    t.sim
        .inject(FaultTarget::Import, Fault::DropAfterHandling, 1);
    let update = json!({
        "FolderId": body["FolderId"],
        "Mode": "update",
        "Data": STANDARD.encode(item_stream("second")),
        "ItemId": created["itemId"],
        "ChangeKey": created["changeKey"],
    });
    let outcome = t.http.post(&url).json(&update).send().await;
    let outcome = match outcome {
        Ok(response) => response.bytes().await.map(drop),
        Err(error) => Err(error),
    };
    assert!(outcome.is_err());
    let items = t.sim.items(DEMO.mailbox_id);
    assert_eq!(items[0].version, 2);
    assert_eq!(t.sim.counters().items_updated, 1);
}

#[tokio::test]
async fn an_injected_403_on_graph_is_graph_shaped_counted_and_fires_before_the_bearer_check() {
    let t = spawn().await;
    let token = t.token().await;
    let path = "/users/adele@contoso.com/settings/exchange";
    t.sim
        .inject(FaultTarget::Graph, status_fault(403, None, None), 1);
    t.sim.inject(
        FaultTarget::Graph,
        status_fault(429, Some(5), Some("ApplicationThrottled")),
        1,
    );

    let forbidden = t
        .http
        .get(format!("{}{path}", t.sim.graph_url()))
        .bearer_auth(&token)
        .header("client-request-id", "5b3c8a52-0000-4000-8000-000000000002")
        .send()
        .await
        .unwrap();
    assert_eq!(
        forbidden.headers()["client-request-id"],
        "5b3c8a52-0000-4000-8000-000000000002"
    );
    assert_eq!(
        graph_error(forbidden, StatusCode::FORBIDDEN).await,
        "Forbidden"
    );

    // No token at all: the fault still answers, since it comes before the bearer check.
    let throttled = t
        .http
        .get(format!("{}{path}", t.sim.graph_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(throttled.headers()["retry-after"], "5");
    let request_id = throttled.headers()["request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    let throttled: Value = throttled.json().await.unwrap();
    assert_eq!(throttled["error"]["code"], "ApplicationThrottled");
    assert_eq!(throttled["error"]["message"], MAILBOX_CONCURRENCY);
    assert_eq!(
        throttled["error"]["innerError"]["request-id"],
        request_id.as_str()
    );

    assert_eq!(t.graph_get(&token, path).await.status(), StatusCode::OK);
    let counters = t.sim.counters();
    assert_eq!(counters.graph_requests, 3);
    assert_eq!(counters.faults_injected, 2);
}

#[tokio::test]
async fn a_session_created_on_a_dropped_graph_connection_exists_though_the_client_never_saw_it() {
    let t = spawn().await;
    let token = t.token().await;
    t.sim
        .inject(FaultTarget::Graph, Fault::DropAfterHandling, 1);
    let outcome: Result<_, reqwest::Error> = async {
        t.http
            .post(format!(
                "{}/admin/exchange/mailboxes/{}/createImportSession",
                t.sim.graph_url(),
                encode(DEMO.mailbox_id)
            ))
            .bearer_auth(&token)
            .send()
            .await?
            .bytes()
            .await
    }
    .await;
    assert!(outcome.is_err(), "{outcome:?}");
    let counters = t.sim.counters();
    assert_eq!(counters.sessions_created, 1);
    assert_eq!(counters.graph_requests, 1);
}

#[tokio::test]
async fn injected_token_faults_are_aadsts_shaped_and_issue_no_token() {
    let t = spawn().await;
    t.sim
        .inject(FaultTarget::Token, status_fault(500, None, None), 1);
    t.sim.inject(
        FaultTarget::Token,
        status_fault(400, Some(3), Some("invalid_grant")),
        1,
    );
    let form = [
        ("client_id", DEMO.client_id),
        ("scope", "https://graph.microsoft.com/.default"),
        ("grant_type", "client_credentials"),
        ("client_secret", DEMO.client_secret),
    ];

    let outage = t.request_token(&form).await;
    assert_eq!(
        aadsts(
            outage,
            StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable"
        )
        .await,
        90033
    );
    let refused = t.request_token(&form).await;
    assert_eq!(refused.headers()["retry-after"], "3");
    aadsts(refused, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_eq!(t.sim.counters().tokens_issued, 0);

    t.token().await;
    let counters = t.sim.counters();
    assert_eq!(counters.tokens_issued, 1);
    assert_eq!(counters.faults_injected, 2);
}

#[tokio::test]
async fn faults_are_consumed_in_injection_order_and_only_by_their_own_endpoint() {
    let (t, url, body) = spawn_importing().await;
    let token = t.token().await;
    t.sim
        .inject(FaultTarget::Import, status_fault(503, None, None), 2);
    t.sim
        .inject(FaultTarget::Graph, status_fault(403, None, None), 1);
    t.sim
        .inject(FaultTarget::Import, status_fault(429, None, None), 1);

    let settings = t
        .graph_get(&token, "/users/adele@contoso.com/settings/exchange")
        .await;
    assert_eq!(settings.status(), StatusCode::FORBIDDEN);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(t.import(&url, &body).await.0);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::OK,
        ]
    );
    assert_eq!(t.sim.counters().faults_injected, 4);
    assert_eq!(t.sim.items(DEMO.mailbox_id).len(), 1);
}

#[tokio::test]
async fn a_fault_hits_exactly_times_requests_and_zero_times_queues_nothing() {
    let (t, url, body) = spawn_importing().await;
    t.sim
        .inject(FaultTarget::Import, status_fault(429, None, None), 0);
    assert_eq!(t.import(&url, &body).await.0, StatusCode::OK);

    t.sim
        .inject(FaultTarget::Import, status_fault(429, None, None), 3);
    for _ in 0..3 {
        assert_eq!(t.import(&url, &body).await.0, StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(t.import(&url, &body).await.0, StatusCode::OK);
    let counters = t.sim.counters();
    assert_eq!(counters.faults_injected, 3);
    assert_eq!(counters.import_requests, 5);
    assert_eq!(counters.items_created, 2);
}

#[tokio::test]
async fn clear_faults_forgets_every_queued_fault_of_every_endpoint() {
    let (t, url, body) = spawn_importing().await;
    t.sim
        .inject(FaultTarget::Import, status_fault(503, None, None), 5);
    t.sim
        .inject(FaultTarget::Token, status_fault(500, None, None), 5);
    t.sim
        .inject(FaultTarget::Graph, Fault::DropAfterHandling, 5);
    t.sim.clear_faults();

    assert_eq!(t.import(&url, &body).await.0, StatusCode::OK);
    let token = t.token().await;
    let settings = t
        .graph_get(&token, "/users/adele@contoso.com/settings/exchange")
        .await;
    assert_eq!(settings.status(), StatusCode::OK);
    assert_eq!(t.sim.counters().faults_injected, 0);
}

#[tokio::test]
async fn a_wrong_method_on_the_token_endpoint_does_not_consume_its_fault() {
    let t = spawn().await;
    t.sim
        .inject(FaultTarget::Token, status_fault(503, None, None), 1);
    let wrong_method = t.http.get(t.token_url()).send().await.unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(t.sim.counters().faults_injected, 0);
    let form = [
        ("client_id", DEMO.client_id),
        ("scope", "https://graph.microsoft.com/.default"),
        ("grant_type", "client_credentials"),
        ("client_secret", DEMO.client_secret),
    ];
    let response = t.request_token(&form).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
#[should_panic(expected = "400-599")]
async fn injecting_a_success_status_is_refused_as_a_test_bug() {
    let t = spawn().await;
    t.sim
        .inject(FaultTarget::Import, status_fault(200, None, None), 1);
}

// Behaviour: random misbehaviour, the concurrency limit, latency, run-time lifetimes, the admin
// endpoint and the counters a soak test reads.

impl TestSim {
    fn admin_url(&self, resource: &str) -> String {
        format!("{}/_simulator/{resource}", self.sim.base_url())
    }

    /// Sends an import and reads the whole answer; `Err` when the connection broke before the answer
    /// was complete.
    async fn try_import(
        &self,
        import_url: &str,
        body: &Value,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, Value), reqwest::Error> {
        let response = self.http.post(import_url).json(body).send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        Ok((status, headers, serde_json::from_slice(&bytes).unwrap()))
    }

    /// A token and the `expires_in` it came with.
    async fn token_and_lifetime(&self) -> (String, u64) {
        let response = self
            .request_token(&[
                ("client_id", DEMO.client_id),
                ("scope", "https://graph.microsoft.com/.default"),
                ("grant_type", "client_credentials"),
                ("client_secret", DEMO.client_secret),
            ])
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["expires_in"].as_u64().unwrap(),
        )
    }

    fn set(&self, behaviour: Behaviour) {
        self.sim.set_behaviour(behaviour).unwrap();
    }

    /// Waits until `count` requests to `mailbox_id` are in flight at once, as the simulator counts
    /// them; the readiness signal of the concurrency tests.
    async fn until_in_flight(&self, mailbox_id: &str, count: usize) {
        for _ in 0..1000 {
            if self.sim.counters().max_in_flight.get(mailbox_id) >= Some(&count) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("{count} requests to {mailbox_id} never were in flight at once");
    }
}

fn rates(throttle: f64, unavailable: f64, drop: f64) -> Behaviour {
    Behaviour {
        throttle_rate: throttle,
        unavailable_rate: unavailable,
        drop_after_store_rate: drop,
        ..Behaviour::default()
    }
}

#[tokio::test]
async fn a_throttle_rate_of_one_answers_every_import_429_with_retry_after_and_stores_nothing() {
    let (t, url, body) = spawn_importing().await;
    t.set(Behaviour {
        throttle_retry_after_secs: 7,
        ..rates(1.0, 0.0, 0.0)
    });
    for _ in 0..5 {
        let (status, headers, answer) = t.try_import(&url, &body).await.unwrap();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers["retry-after"], "7");
        assert_eq!(answer, json!({ "Message": MAILBOX_CONCURRENCY }));
    }
    assert!(t.sim.items(DEMO.mailbox_id).is_empty());
    let counters = t.sim.counters();
    assert_eq!(counters.throttled, 5);
    assert_eq!(counters.import_requests, 5);
    assert_eq!(counters.items_created, 0);
    assert_eq!(counters.faults_injected, 0);
}

#[tokio::test]
async fn an_unavailable_rate_of_one_answers_every_import_503_with_retry_after_and_stores_nothing() {
    let (t, url, body) = spawn_importing().await;
    t.set(rates(0.0, 1.0, 0.0));
    for _ in 0..5 {
        let (status, headers, answer) = t.try_import(&url, &body).await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers["retry-after"], "1");
        assert!(answer["Message"].is_string(), "{answer}");
    }
    assert!(t.sim.items(DEMO.mailbox_id).is_empty());
    let counters = t.sim.counters();
    assert_eq!(counters.unavailable, 5);
    assert_eq!(counters.throttled, 0);
    assert_eq!(counters.import_requests, 5);
}

#[tokio::test]
async fn a_drop_rate_of_one_stores_every_import_and_breaks_every_answer_without_leaking_slots() {
    let (t, url, body) = spawn_importing().await;
    // With one slot, a slot the broken connections failed to give back would turn the next import
    // into a 429.
    t.set(Behaviour {
        max_concurrent_per_mailbox: Some(1),
        ..rates(0.0, 0.0, 1.0)
    });
    for _ in 0..5 {
        let outcome = t.try_import(&url, &body).await;
        assert!(outcome.is_err(), "the client got an answer: {outcome:?}");
    }
    assert_eq!(t.sim.items(DEMO.mailbox_id).len(), 5);
    let counters = t.sim.counters();
    assert_eq!(counters.dropped_after_store, 5);
    assert_eq!(counters.items_created, 5);
    assert_eq!(counters.throttled, 0);
    assert_eq!(counters.concurrency_violations, 0);
}

#[tokio::test]
async fn rates_of_zero_never_misbehave_and_an_unstored_import_is_not_dropped() {
    let (t, url, body) = spawn_importing().await;
    t.set(Behaviour {
        seed: Some(1),
        ..rates(0.0, 0.0, 0.0)
    });
    for _ in 0..50 {
        assert_eq!(t.import(&url, &body).await.0, StatusCode::OK);
    }
    // A drop only breaks answers that stored something: a refused import is answered in full.
    t.set(rates(0.0, 0.0, 1.0));
    let (status, _, _) = t
        .try_import(&format!("{url}x"), &body)
        .await
        .expect("a 401 is answered, not dropped");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let counters = t.sim.counters();
    assert_eq!(counters.items_created, 50);
    assert_eq!(counters.throttled, 0);
    assert_eq!(counters.unavailable, 0);
    assert_eq!(counters.dropped_after_store, 0);
}

#[tokio::test]
async fn a_seeded_half_throttle_rate_throttles_about_half_and_replays_for_the_same_seed() {
    let (t, url, body) = spawn_importing().await;
    let half = |seed| Behaviour {
        seed: Some(seed),
        ..rates(0.5, 0.0, 0.0)
    };
    async fn run(t: &TestSim, url: &str, body: &Value) -> Vec<bool> {
        let mut throttled = Vec::new();
        for _ in 0..200 {
            let status = t.import(url, body).await.0;
            assert!(
                status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
                "{status}"
            );
            throttled.push(status == StatusCode::TOO_MANY_REQUESTS);
        }
        throttled
    }

    t.set(half(42));
    let first = run(&t, &url, &body).await;
    let count = first.iter().filter(|&&throttled| throttled).count();
    assert!((60..=140).contains(&count), "{count} of 200 throttled");
    assert_eq!(t.sim.counters().throttled, count as u64);

    // Setting the same seed again restarts the sequence.
    t.set(half(42));
    assert_eq!(run(&t, &url, &body).await, first);
    t.set(half(43));
    assert_ne!(run(&t, &url, &body).await, first);
}

#[tokio::test]
async fn scripted_faults_take_precedence_over_the_random_behaviour() {
    let (t, url, body) = spawn_importing().await;
    t.set(rates(1.0, 0.0, 0.0));
    t.sim
        .inject(FaultTarget::Import, status_fault(503, None, None), 1);
    t.sim
        .inject(FaultTarget::Import, Fault::DropAfterHandling, 1);

    let (status, _, _) = t.try_import(&url, &body).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // The scripted drop lets the import through to be stored, despite the throttle rate of 1.0.
    assert!(t.try_import(&url, &body).await.is_err());
    let (status, _, _) = t.try_import(&url, &body).await.unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    assert_eq!(t.sim.items(DEMO.mailbox_id).len(), 1);
    let counters = t.sim.counters();
    assert_eq!(counters.faults_injected, 2);
    assert_eq!(counters.dropped_after_store, 1);
    assert_eq!(counters.throttled, 1);
    assert_eq!(counters.unavailable, 0, "scripted 503s are not random ones");
    assert_eq!(counters.import_requests, 3);
}

#[tokio::test]
async fn six_concurrent_imports_to_one_mailbox_admit_four_and_refuse_two_for_mailbox_concurrency() {
    let (t, url, body) = spawn_importing().await;
    // The latency holds the admitted imports in flight while the others arrive.
    t.set(Behaviour {
        latency_ms: 500,
        ..Behaviour::default()
    });
    let imports = (0..6).map(|_| t.try_import(&url, &body));
    let outcomes = futures_util::future::join_all(imports).await;

    let mut admitted = 0;
    let mut refused = 0;
    for outcome in outcomes {
        let (status, headers, answer) = outcome.unwrap();
        match status {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_eq!(headers["retry-after"], "1");
                assert_eq!(answer, json!({ "Message": MAILBOX_CONCURRENCY }));
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert_eq!((admitted, refused), (4, 2));
    assert_eq!(t.sim.items(DEMO.mailbox_id).len(), 4);
    let counters = t.sim.counters();
    assert_eq!(counters.max_in_flight[DEMO.mailbox_id], 4);
    assert_eq!(counters.concurrency_violations, 2);
    assert_eq!(counters.throttled, 2);
    assert_eq!(counters.import_requests, 6);
}

#[tokio::test]
async fn six_concurrent_imports_spread_over_two_mailboxes_are_all_admitted() {
    let (t, url, body) = spawn_importing().await;
    let bob = t.sim.add_mailbox("bob@contoso.com");
    let token = t.token().await;
    let bob_url = t.import_url(&token, &bob).await;
    let bob_body = create_body(&t.sim.folder_id(&bob, "inbox").unwrap(), &item_stream("b"));
    t.set(Behaviour {
        latency_ms: 500,
        ..Behaviour::default()
    });
    let imports = (0..6).map(|i| {
        if i % 2 == 0 {
            t.try_import(&url, &body)
        } else {
            t.try_import(&bob_url, &bob_body)
        }
    });
    let outcomes = futures_util::future::join_all(imports).await;

    for outcome in outcomes {
        assert_eq!(outcome.unwrap().0, StatusCode::OK);
    }
    let counters = t.sim.counters();
    assert_eq!(counters.max_in_flight[DEMO.mailbox_id], 3);
    assert_eq!(counters.max_in_flight[&bob], 3);
    assert_eq!(counters.concurrency_violations, 0);
    assert_eq!(counters.throttled, 0);
}

#[tokio::test]
async fn graph_mailbox_requests_and_imports_share_one_limit_whatever_the_id_encoding() {
    let (t, url, body) = spawn_importing().await;
    let token = t.token().await;
    let bob = t.sim.add_mailbox("bob@contoso.com");
    t.set(Behaviour {
        latency_ms: 500,
        max_concurrent_per_mailbox: Some(2),
        ..Behaviour::default()
    });
    // Import URLs carry the mailbox id raw; the Graph requests below percent-encode it.
    let imports =
        futures_util::future::join_all([t.try_import(&url, &body), t.try_import(&url, &body)]);
    let others = async {
        t.until_in_flight(DEMO.mailbox_id, 2).await;
        futures_util::future::join3(
            t.graph_get(
                &token,
                &format!(
                    "/admin/exchange/mailboxes/{}/folders",
                    encode(DEMO.mailbox_id)
                ),
            ),
            t.graph_get(
                &token,
                &format!("/admin/exchange/mailboxes/{}/folders", encode(&bob)),
            ),
            // Not a mailbox request: not limited.
            t.graph_get(&token, "/users/adele@contoso.com/settings/exchange"),
        )
        .await
    };
    let (imports, (refused, other_mailbox, directory)) = tokio::join!(imports, others);

    for outcome in imports {
        assert_eq!(outcome.unwrap().0, StatusCode::OK);
    }
    assert_eq!(refused.headers()["retry-after"], "1");
    let request_id = refused.headers()["request-id"].to_str().unwrap().to_owned();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "ApplicationThrottled");
    assert_eq!(refused["error"]["message"], MAILBOX_CONCURRENCY);
    assert_eq!(
        refused["error"]["innerError"]["request-id"],
        request_id.as_str()
    );
    assert_eq!(other_mailbox.status(), StatusCode::OK);
    assert_eq!(directory.status(), StatusCode::OK);
    let counters = t.sim.counters();
    assert_eq!(counters.max_in_flight[DEMO.mailbox_id], 2);
    assert_eq!(counters.concurrency_violations, 1);
    assert_eq!(counters.graph_requests, 4);
}

#[tokio::test]
async fn latency_delays_imports_and_graph_mailbox_requests_by_at_least_its_length() {
    let (t, url, body) = spawn_importing().await;
    let token = t.token().await;
    let latency = Duration::from_millis(300);
    t.set(Behaviour {
        latency_ms: 300,
        ..Behaviour::default()
    });

    let started = std::time::Instant::now();
    assert_eq!(t.import(&url, &body).await.0, StatusCode::OK);
    assert!(started.elapsed() >= latency);
    let started = std::time::Instant::now();
    let folders = t
        .graph_get(
            &token,
            &format!("/admin/exchange/mailboxes/{}/folders", DEMO.mailbox_id),
        )
        .await;
    assert_eq!(folders.status(), StatusCode::OK);
    assert!(started.elapsed() >= latency);
}

#[tokio::test]
async fn identical_data_created_twice_in_one_mailbox_counts_as_a_duplicate_and_is_still_stored() {
    let (t, url, _) = spawn_importing().await;
    let bob = t.sim.add_mailbox("bob@contoso.com");
    let token = t.token().await;
    let bob_url = t.import_url(&token, &bob).await;
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let sent = t.sim.folder_id(DEMO.mailbox_id, "sentitems").unwrap();
    let bob_inbox = t.sim.folder_id(&bob, "inbox").unwrap();
    let update = |created: &Value, folder: &str, data: &[u8]| {
        json!({
            "FolderId": folder,
            "Mode": "update",
            "Data": STANDARD.encode(data),
            "ItemId": created["itemId"],
            "ChangeKey": created["changeKey"],
        })
    };
    let (a, b, c) = (item_stream("a"), item_stream("b"), item_stream("c"));

    let (_, first) = t.import(&url, &create_body(&inbox, &a)).await;
    // Same data, other folder: still a duplicate, since it is the same mailbox.
    assert_eq!(
        t.import(&url, &create_body(&sent, &a)).await.0,
        StatusCode::OK
    );
    assert_eq!(t.sim.counters().duplicate_items, 1);
    // Same data, other mailbox; other data: no duplicate.
    t.import(&bob_url, &create_body(&bob_inbox, &a)).await;
    t.import(&url, &create_body(&inbox, &b)).await;
    assert_eq!(t.sim.counters().duplicate_items, 1);
    // Duplicates are judged against what the mailbox holds now, updates included.
    let (status, _) = t.import(&url, &update(&first, &inbox, &c)).await;
    assert_eq!(status, StatusCode::OK);
    t.import(&url, &create_body(&inbox, &c)).await;
    assert_eq!(t.sim.counters().duplicate_items, 2);

    assert_eq!(t.sim.items(DEMO.mailbox_id).len(), 4);
    let expected = [(DEMO.mailbox_id.to_owned(), 4), (bob.clone(), 1)];
    assert_eq!(
        t.sim.items_per_mailbox(),
        expected.into_iter().collect::<BTreeMap<_, _>>()
    );
    assert_eq!(t.sim.counters().items_created, 5);
}

#[tokio::test]
async fn the_admin_endpoint_reads_and_replaces_the_behaviour_and_refuses_invalid_ones() {
    let t = spawn().await;
    let url = t.admin_url("behaviour");
    let current: Value = t.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(current, serde_json::to_value(Behaviour::default()).unwrap());
    assert_eq!(current["max_concurrent_per_mailbox"], 4);

    // A PUT replaces the whole behaviour: missing fields take their defaults.
    let put = t
        .http
        .put(&url)
        .json(&json!({"throttle_rate": 0.25, "seed": 9, "latency_ms": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let expected = Behaviour {
        throttle_rate: 0.25,
        seed: Some(9),
        latency_ms: 5,
        ..Behaviour::default()
    };
    assert_eq!(put.json::<Behaviour>().await.unwrap(), expected);
    assert_eq!(t.sim.behaviour(), expected);
    let read: Behaviour = t.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(read, expected);

    for (invalid, names) in [
        (
            json!({"throttle_rate": 0.6, "unavailable_rate": 0.6}),
            "at most 1.0",
        ),
        (json!({"throttle_rate": 1.5}), "throttle_rate"),
        (
            json!({"drop_after_store_rate": -0.1}),
            "drop_after_store_rate",
        ),
        (
            json!({"max_concurrent_per_mailbox": 0}),
            "max_concurrent_per_mailbox",
        ),
        (json!({"throtle_rate": 0.1}), "throtle_rate"),
        (json!("slow"), "behaviour"),
    ] {
        let response = t.http.put(&url).json(&invalid).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{invalid}");
        let answer: Value = response.json().await.unwrap();
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(names), "{invalid}: {error}");
    }
    assert_eq!(t.sim.behaviour(), expected, "a refused PUT changes nothing");

    // `null` lifts the limit; leaving the field out keeps the documented 4.
    let unlimited = t
        .http
        .put(&url)
        .json(&json!({"max_concurrent_per_mailbox": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(unlimited.status(), StatusCode::OK);
    assert_eq!(t.sim.behaviour().max_concurrent_per_mailbox, None);
}

#[tokio::test]
async fn invalid_behaviours_are_refused_by_set_behaviour_and_by_start() {
    let t = spawn().await;
    let error = t.sim.set_behaviour(rates(0.5, 0.5, 0.5)).unwrap_err();
    assert!(error.contains("at most 1.0"), "{error}");
    assert_eq!(t.sim.behaviour(), Behaviour::default());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimulatorConfig {
        behaviour: rates(f64::NAN, 0.0, 0.0),
        ..SimulatorConfig::default()
    };
    let error = Simulator::start(listener, config).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("throttle_rate"), "{error}");
}

#[tokio::test]
async fn the_counters_endpoint_serves_the_counters_as_json() {
    let (t, url, body) = spawn_importing().await;
    t.import(&url, &body).await;
    t.import(&url, &body).await;
    let served: Value = t
        .http
        .get(t.admin_url("counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, serde_json::to_value(t.sim.counters()).unwrap());
    assert_eq!(served["items_created"], 2);
    assert_eq!(served["duplicate_items"], 1);
    assert_eq!(served["max_in_flight"][DEMO.mailbox_id], 1);
}

#[tokio::test]
async fn lifetimes_changed_at_run_time_apply_to_tokens_and_sessions_issued_afterwards() {
    let (t, old_url, body) = spawn_importing().await;
    let (old_token, lifetime) = t.token_and_lifetime().await;
    assert_eq!(lifetime, 3599);
    let path = "/users/adele@contoso.com/settings/exchange";

    // A zero lifetime makes what is issued from now on expire at once, without waiting.
    t.set(Behaviour {
        token_lifetime_secs: Some(0),
        session_lifetime_secs: Some(0),
        ..Behaviour::default()
    });
    let (new_token, lifetime) = t.token_and_lifetime().await;
    assert_eq!(lifetime, 0);
    assert_eq!(
        t.graph_get(&new_token, path).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(t.graph_get(&old_token, path).await.status(), StatusCode::OK);
    let new_url = t.import_url(&old_token, DEMO.mailbox_id).await;
    assert_eq!(t.import(&new_url, &body).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(t.import(&old_url, &body).await.0, StatusCode::OK);

    t.set(Behaviour {
        token_lifetime_secs: Some(1234),
        session_lifetime_secs: Some(120),
        ..Behaviour::default()
    });
    assert_eq!(t.token_and_lifetime().await.1, 1234);
    let session = t
        .http
        .post(format!(
            "{}/admin/exchange/mailboxes/{}/createImportSession",
            t.sim.graph_url(),
            encode(DEMO.mailbox_id)
        ))
        .bearer_auth(&old_token)
        .send()
        .await
        .unwrap();
    let session: Value = session.json().await.unwrap();
    let expiry =
        chrono::DateTime::parse_from_rfc3339(session["expirationDateTime"].as_str().unwrap())
            .unwrap();
    let remaining = expiry
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    assert!((110..=120).contains(&remaining), "{remaining} s");

    // The latest setting wins: set_token_lifetime clears the behaviour's override.
    t.sim.set_token_lifetime(Duration::from_secs(60));
    assert_eq!(t.sim.behaviour().token_lifetime_secs, None);
    assert_eq!(t.token_and_lifetime().await.1, 60);
}

#[tokio::test]
async fn sink_mode_checks_and_answers_as_usual_but_keeps_only_digests_and_counts_items_and_bytes() {
    let (t, url, _) = spawn_importing().await;
    let put = t
        .http
        .put(t.admin_url("behaviour"))
        .json(&json!({"sink": true, "max_concurrent_per_mailbox": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    assert!(t.sim.behaviour().sink);
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let (a, b, c) = (item_stream("a"), item_stream("bb"), item_stream("ccc"));

    let (status, first) = t.import(&url, &create_body(&inbox, &a)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, second) = t.import(&url, &create_body(&inbox, &b)).await;
    assert_ne!(first["itemId"], second["itemId"], "fresh ids per item");
    let update = json!({
        "FolderId": inbox,
        "Mode": "update",
        "Data": STANDARD.encode(&c),
        "ItemId": first["itemId"],
        "ChangeKey": first["changeKey"],
    });
    let (status, updated) = t.import(&url, &update).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["itemId"], first["itemId"]);
    assert_ne!(updated["changeKey"], first["changeKey"]);

    let items = t.sim.items(DEMO.mailbox_id);
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|item| item.data.is_empty()));
    let digest = |data: &[u8]| -> [u8; 32] { Sha256::digest(data).into() };
    assert_eq!(items[0].sha256, digest(&c));
    assert_eq!(items[1].sha256, digest(&b));
    let counters = t.sim.counters();
    assert_eq!((counters.items_created, counters.items_updated), (2, 1));
    assert_eq!(counters.sink_items, 3);
    assert_eq!(counters.sink_bytes, (a.len() + b.len() + c.len()) as u64);

    // Off again, items keep their data as before.
    t.set(Behaviour::default());
    t.import(&url, &create_body(&inbox, &a)).await;
    let items = t.sim.items(DEMO.mailbox_id);
    assert_eq!(&items[2].data[..], &a[..]);
    assert_eq!(items[2].sha256, digest(&a));
    assert_eq!(t.sim.counters().sink_items, 3);
}

#[tokio::test]
async fn sink_mode_still_refuses_bad_authtokens_bodies_base64_and_item_streams() {
    let (t, url, body) = spawn_importing().await;
    t.set(Behaviour {
        sink: true,
        ..Behaviour::default()
    });
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let forged = format!("{}forged", url);
    assert_eq!(t.import(&forged, &body).await.0, StatusCode::UNAUTHORIZED);
    let mut truncated = item_stream("x");
    truncated.pop();
    for (bad, names) in [
        (json!({"FolderId": inbox, "Mode": "create"}), "Data"),
        (
            json!({"FolderId": inbox, "Mode": "create", "Data": "AAAA", "Extra": 1}),
            "Extra",
        ),
        (
            json!({"FolderId": inbox, "Mode": "create", "Data": "not base64!"}),
            "base64",
        ),
        (create_body(&inbox, &truncated), "item stream"),
    ] {
        let (status, answer) = t.import(&url, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        let message = answer["Message"].as_str().unwrap();
        assert!(message.contains(names), "{bad}: {message}");
    }
    assert!(t.sim.items(DEMO.mailbox_id).is_empty());
    let counters = t.sim.counters();
    assert_eq!((counters.sink_items, counters.sink_bytes), (0, 0));
    assert_eq!(counters.imports_rejected_unauthorized, 1);
}

#[tokio::test]
async fn the_admin_endpoint_adds_mailboxes_that_graph_and_import_sessions_know() {
    let t = spawn().await;
    let url = t.admin_url("mailboxes");
    let response = t
        .http
        .post(&url)
        .json(&json!({"address": "bench01@contoso.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let added: Value = response.json().await.unwrap();
    assert_eq!(added["address"], "bench01@contoso.com");
    let mailbox_id = added["id"].as_str().unwrap().to_owned();
    assert!(mailbox_id.starts_with("MBX:"), "{mailbox_id}");

    let token = t.token().await;
    let settings: Value = t
        .graph_get(&token, "/users/BENCH01@contoso.com/settings/exchange")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(settings["primaryMailboxId"], mailbox_id.as_str());
    let inbox = t.sim.folder_id(&mailbox_id, "inbox").unwrap();
    let import_url = t.import_url(&token, &mailbox_id).await;
    let (status, _) = t
        .import(&import_url, &create_body(&inbox, &item_stream("x")))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t.sim.items(&mailbox_id).len(), 1);

    for (body, status, names) in [
        (
            json!({"address": "Bench01@Contoso.com"}),
            StatusCode::CONFLICT,
            "already",
        ),
        (
            json!({"address": DEMO.mailbox_address}),
            StatusCode::CONFLICT,
            "already",
        ),
        (
            json!({"address": "no-at-sign"}),
            StatusCode::BAD_REQUEST,
            "address",
        ),
        (json!({"adress": "x@y"}), StatusCode::BAD_REQUEST, "adress"),
        (json!("x@y"), StatusCode::BAD_REQUEST, "new mailbox"),
    ] {
        let response = t.http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), status, "{body}");
        let answer: Value = response.json().await.unwrap();
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(names), "{body}: {error}");
    }
    assert_eq!(t.sim.items_per_mailbox().len(), 2, "nothing else was added");
}
