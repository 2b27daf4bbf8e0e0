//! Starts a simulator on 127.0.0.1:0 and talks to it as the gateway will: tokens, Graph calls, import
//! sessions and imports, plus the item streams, assertions and error shapes the tests build and read.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use exchange_simulator::{Behaviour, Fault, Simulator, SimulatorConfig, DEMO};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256};

pub const APP_CERT: &str = include_str!("../fixtures/app-cert-and-key.pem");
pub const OTHER_CERT: &str = include_str!("../fixtures/other-cert-and-key.pem");
const FEDERATED_KEY: &str = include_str!("../fixtures/federated-issuer-key.pem");
pub const FEDERATED_PUB: &str = include_str!("../fixtures/federated-issuer-pub.pem");
pub const FEDERATED_ISSUER: &str = "https://oidc.cluster.example.test";
pub const FEDERATED_SUBJECT: &str = "system:serviceaccount:mail:mailbox-gateway";

/// The documented text of Outlook's 429s.
pub const MAILBOX_CONCURRENCY: &str = "Application is over its MailboxConcurrency limit.";

/// The settings path every Graph test reads.
pub const SETTINGS: &str = "/users/adele@contoso.com/settings/exchange";

/// A running simulator and a client to talk to it.
pub struct TestSim {
    pub sim: Simulator,
    pub http: Client,
}

pub async fn spawn() -> TestSim {
    spawn_with(SimulatorConfig::default()).await
}

pub async fn spawn_with(config: SimulatorConfig) -> TestSim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::start(listener, config).await.unwrap();
    TestSim {
        sim,
        http: Client::new(),
    }
}

/// A simulator with a Graph token and an import URL on the demo mailbox, plus an import body for
/// its inbox.
pub async fn spawn_importing() -> (TestSim, String, Value) {
    let t = spawn().await;
    let token = t.token().await;
    let url = t.import_url(&token, DEMO.mailbox_id).await;
    let inbox = t.sim.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    (t, url, create_body(&inbox, &item_stream("x")))
}

/// The form of a token request with the demo secret.
pub fn secret_form() -> Vec<(&'static str, &'static str)> {
    vec![
        ("client_id", DEMO.client_id),
        ("scope", "https://graph.microsoft.com/.default"),
        ("grant_type", "client_credentials"),
        ("client_secret", DEMO.client_secret),
    ]
}

impl TestSim {
    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.sim.base_url(),
            DEMO.tenant_id
        )
    }

    pub async fn request_token(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.token_url())
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// A Graph access token obtained with the demo secret.
    pub async fn token(&self) -> String {
        self.token_and_lifetime().await.0
    }

    /// A token obtained with the demo secret and the `expires_in` it came with.
    pub async fn token_and_lifetime(&self) -> (String, u64) {
        let response = self.request_token(&secret_form()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["expires_in"].as_u64().unwrap(),
        )
    }

    pub async fn assertion_token(&self, assertion: &str) -> reqwest::Response {
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

    pub async fn graph_get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.sim.graph_url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `POST {graph}{path}` with `body` as `content_type`, the answer unread.
    pub async fn graph_post(
        &self,
        token: &str,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.sim.graph_url()))
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn graph_delete(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .delete(format!("{}{path}", self.sim.graph_url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `POST .../exportItems` on `mailbox_id` for `item_ids`, the answer unread.
    pub async fn export(
        &self,
        token: &str,
        mailbox_id: &str,
        item_ids: &[&str],
    ) -> reqwest::Response {
        let body = json!({ "itemIds": item_ids }).to_string();
        self.graph_post(
            token,
            &format!("{}/exportItems", mailbox_path(mailbox_id)),
            "application/json",
            body,
        )
        .await
    }

    /// `POST .../createImportSession` on `mailbox_id`, the answer unread.
    pub async fn create_import_session(&self, token: &str, mailbox_id: &str) -> reqwest::Response {
        self.http
            .post(format!(
                "{}/admin/exchange/mailboxes/{}/createImportSession",
                self.sim.graph_url(),
                encode(mailbox_id)
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Creates an import session on `mailbox_id` and returns its import URL.
    pub async fn import_url(&self, token: &str, mailbox_id: &str) -> String {
        let response = self.create_import_session(token, mailbox_id).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["importUrl"].as_str().unwrap().to_owned()
    }

    pub async fn import(&self, import_url: &str, body: &Value) -> (StatusCode, Value) {
        let response = self.http.post(import_url).json(body).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Sends an import and reads the whole answer; `Err` when the connection broke before the answer
    /// was complete.
    pub async fn try_import(
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

    pub fn admin_url(&self, resource: &str) -> String {
        format!("{}/_simulator/{resource}", self.sim.base_url())
    }

    pub fn set(&self, behaviour: Behaviour) {
        self.sim.set_behaviour(behaviour).unwrap();
    }

    /// Waits until `count` requests to `mailbox_id` are in flight at once, as the simulator counts
    /// them; the readiness signal of the concurrency tests.
    pub async fn until_in_flight(&self, mailbox_id: &str, count: usize) {
        for _ in 0..1000 {
            if self.sim.counters().max_in_flight.get(mailbox_id) >= Some(&count) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("{count} requests to {mailbox_id} never were in flight at once");
    }
}

pub fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `/admin/exchange/mailboxes/{mailboxId}`, the id percent-encoded.
pub fn mailbox_path(mailbox_id: &str) -> String {
    format!("/admin/exchange/mailboxes/{}", encode(mailbox_id))
}

/// `.../folders/{folder}/items[/{itemId}]`, every segment percent-encoded.
pub fn items_path(mailbox_id: &str, folder: &str, item_id: Option<&str>) -> String {
    let path = format!(
        "{}/folders/{}/items",
        mailbox_path(mailbox_id),
        encode(folder)
    );
    match item_id {
        Some(item_id) => format!("{path}/{}", encode(item_id)),
        None => path,
    }
}

/// A well-formed item stream: Config, IsInterfaceOk, TellPartnerVersion, then two TransferBuffers.
pub fn item_stream(subject: &str) -> Vec<u8> {
    let mut data = frame(1, &[0, 0, 0, 0, 1, 0, 0, 0]);
    data.extend(frame(3, &[0; 24]));
    data.extend(frame(4, &[0x14, 0x0F, 0xD6, 0x91, 0x86, 0x17]));
    data.extend(frame(2, &[0x03, 0x00, 0x17, 0x00, 0x01, 0x00, 0x00, 0x00]));
    data.extend(frame(2, subject.as_bytes()));
    data
}

/// A well-formed item stream whose properties are Importance and PidTagMessageClass `class`
/// (Unicode), then `subject`'s bytes in a TransferBuffer of their own.
pub fn item_stream_of_class(class: &str, subject: &str) -> Vec<u8> {
    let mut class_value: Vec<u8> = class.encode_utf16().flat_map(u16::to_le_bytes).collect();
    class_value.extend([0, 0]);
    let mut properties = vec![0x03, 0x00, 0x17, 0x00, 0x01, 0x00, 0x00, 0x00];
    properties.extend(0x001A_001Fu32.to_le_bytes());
    properties.extend((class_value.len() as u32).to_le_bytes());
    properties.extend(class_value);
    let mut data = frame(1, &[0, 0, 0, 0, 1, 0, 0, 0]);
    data.extend(frame(3, &[0; 24]));
    data.extend(frame(4, &[0x14, 0x0F, 0xD6, 0x91, 0x86, 0x17]));
    data.extend(frame(2, &properties));
    data.extend(frame(2, subject.as_bytes()));
    data
}

/// One frame of an item stream: `[u32 LE opcode][i32 LE length][payload]`.
pub fn frame(opcode: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = opcode.to_le_bytes().to_vec();
    out.extend_from_slice(&(payload.len() as i32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn create_body(folder_id: &str, data: &[u8]) -> Value {
    json!({"FolderId": folder_id, "Mode": "create", "Data": STANDARD.encode(data)})
}

/// An import body that replaces `created`'s item (the answer of an earlier import) with `data`.
pub fn update_body(created: &Value, folder_id: &str, data: &[u8]) -> Value {
    json!({
        "FolderId": folder_id,
        "Mode": "update",
        "Data": STANDARD.encode(data),
        "ItemId": created["itemId"],
        "ChangeKey": created["changeKey"],
    })
}

pub fn status_fault(status: u16, retry_after: Option<u64>, code: Option<&str>) -> Fault {
    Fault::Status {
        status,
        retry_after,
        code: code.map(str::to_owned),
    }
}

pub fn rates(throttle: f64, unavailable: f64, drop: f64) -> Behaviour {
    Behaviour {
        throttle_rate: throttle,
        unavailable_rate: unavailable,
        drop_after_store_rate: drop,
        ..Behaviour::default()
    }
}

pub fn pem_block(pem_text: &str, tag: &str) -> pem::Pem {
    pem::parse_many(pem_text)
        .unwrap()
        .into_iter()
        .find(|block| block.tag() == tag)
        .unwrap()
}

pub fn signing_key(pem_text: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem::encode(&pem_block(pem_text, "PRIVATE KEY")).as_bytes()).unwrap()
}

/// Unix seconds by the system clock, which client assertions are written with.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Certificate assertion claims as the documentation prescribes them.
pub fn certificate_claims(aud: &str) -> Value {
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
pub fn certificate_assertion(cert_pem: &str, alg: Algorithm, claims: &Value) -> String {
    let der = pem_block(cert_pem, "CERTIFICATE").into_contents();
    let mut header = Header::new(alg);
    match alg {
        Algorithm::PS256 => header.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&der))),
        _ => header.x5t = Some(URL_SAFE_NO_PAD.encode(Sha1::digest(&der))),
    }
    jsonwebtoken::encode(&header, claims, &signing_key(cert_pem)).unwrap()
}

/// A federated (workload identity) token about `subject` for `aud`, valid for an hour from now.
pub fn federated_assertion(subject: &str, aud: Value) -> String {
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
pub async fn aadsts(response: reqwest::Response, status: StatusCode, error: &str) -> u64 {
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
pub async fn graph_error(response: reqwest::Response, status: StatusCode) -> String {
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
