//! Starts the simulator and the gateway as real HTTP servers on 127.0.0.1:0 and talks to them.

use std::path::PathBuf;

use exchange_simulator::{Counters, Simulator, SimulatorConfig, DEMO};
use mailbox_gateway::config::{
    AccessConfig, AuthConfig, Config, ConnectionLimits, CredentialConfig, GraphAccess,
    IdempotencySettings, ImportHosts, JwtConfig, JwtKeySource, Pacing, RetryPolicy,
    SharedStateConfig, TenantConfig, Timeouts, TlsSettings,
};
use mailbox_gateway::fts::ItemBuilder;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The test keys' folder.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// How to start a test app; `Default` is the demo tenant with its client secret.
pub struct AppOptions {
    pub simulator: SimulatorConfig,
    pub credential: Option<CredentialConfig>,
    pub max_item_bytes: u64,
    /// `None`: the simulator's own origin.
    pub import_hosts: Option<String>,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    pub pacing: Pacing,
    pub shutdown_grace: std::time::Duration,
    pub access: AccessConfig,
    /// Sent as `Authorization: Bearer ...` by `TestApp::client`.
    pub bearer: Option<String>,
    pub connections: ConnectionLimits,
    /// HTTPS; `TestApp::client` then trusts `root_certificate`.
    pub tls: Option<TlsSettings>,
    pub root_certificate: Option<PathBuf>,
    pub memory_budget: u64,
    pub memory_wait: std::time::Duration,
    /// `None`: the simulator's Graph.
    pub graph_url: Option<String>,
    pub idempotency: IdempotencySettings,
    /// Where state is kept: in memory, or in a Valkey/Redis server the test starts.
    pub store: Store,
    /// Whose Graph token the gateway uses; delegated mode takes the simulator's user tokens (the access
    /// settings are then made for them: see `delegated_access`).
    pub graph_access: GraphAccess,
}

/// Where a test app keeps its idempotency keys and mailbox limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Memory,
    /// A `redis-server` (or `valkey-server`) of the test's own, on a free loopback port.
    Redis,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            simulator: SimulatorConfig::default(),
            credential: None,
            max_item_bytes: 1024 * 1024,
            import_hosts: None,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            pacing: Pacing::default(),
            shutdown_grace: std::time::Duration::from_secs(10),
            access: AccessConfig::default(),
            bearer: None,
            connections: ConnectionLimits::default(),
            tls: None,
            root_certificate: None,
            memory_budget: 64 * 1024 * 1024,
            memory_wait: std::time::Duration::from_secs(5),
            graph_url: None,
            idempotency: IdempotencySettings::default(),
            store: Store::Memory,
            graph_access: GraphAccess::Application,
        }
    }
}

/// A running simulator and gateway.
pub struct TestApp {
    /// `http://127.0.0.1:PORT` of the gateway.
    pub address: String,
    pub client: reqwest::Client,
    pub simulator: Simulator,
    /// The store server, when the app keeps its state in one.
    pub redis: Option<RedisServer>,
    /// The gateway's clock for token and session renewal (see `advance`).
    pub clock: mailbox_gateway::clock::Clock,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), mailbox_gateway::app::StartError>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

/// Starts the simulator, then the gateway pointed at it. `prepare` runs on the simulator before the
/// gateway starts (to register certificates and the like).
pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let simulator = Simulator::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        options.simulator.clone(),
    )
    .await
    .unwrap();
    let redis = match options.store {
        Store::Memory => None,
        Store::Redis => Some(RedisServer::start().await),
    };
    let url = redis.as_ref().map(RedisServer::url);
    let mut app = spawn_gateway(&options, simulator, url.as_deref()).await;
    app.redis = redis;
    app
}

/// Starts one simulator, one store and `count` gateways that share them, as replicas behind a load
/// balancer would.
pub async fn spawn_replicas(count: usize, options: AppOptions) -> (Vec<TestApp>, RedisServer) {
    let redis = RedisServer::start().await;
    let simulator = Simulator::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        options.simulator.clone(),
    )
    .await
    .unwrap();
    let mut replicas = Vec::new();
    for _ in 0..count {
        replicas.push(spawn_gateway(&options, simulator.clone(), Some(&redis.url())).await);
    }
    (replicas, redis)
}

/// Starts a gateway pointed at `simulator`, keeping its state in the store at `redis_url` if given.
pub async fn spawn_gateway(
    options: &AppOptions,
    simulator: Simulator,
    redis_url: Option<&str>,
) -> TestApp {
    let base = simulator.base_url();
    let clock = mailbox_gateway::clock::Clock::default();
    let tenant = TenantConfig {
        tenant_id: DEMO.tenant_id.to_owned(),
        client_id: DEMO.client_id.to_owned(),
        credential: options.credential.clone().unwrap_or_else(|| {
            CredentialConfig::Secret(SecretString::from(DEMO.client_secret.to_owned()))
        }),
        authority_host: base.parse().unwrap(),
        graph_url: options
            .graph_url
            .clone()
            .unwrap_or_else(|| simulator.graph_url())
            .parse()
            .unwrap(),
        import_hosts: ImportHosts::parse(options.import_hosts.as_deref().unwrap_or(&base)).unwrap(),
    };
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_item_bytes: options.max_item_bytes,
        timeouts: options.timeouts,
        retry: options.retry,
        pacing: options.pacing,
        shutdown_grace: options.shutdown_grace,
        access: match options.graph_access {
            GraphAccess::Application => options.access.clone(),
            GraphAccess::Delegated => delegated_access(&simulator, &options.access),
        },
        graph_access: options.graph_access,
        connections: options.connections,
        tls: options.tls.clone(),
        memory_budget: options.memory_budget,
        memory_wait: options.memory_wait,
        idempotency: options.idempotency,
        shared_state: redis_url.map(SharedStateConfig::new),
        clock: clock.clone(),
        ..Config::new(tenant)
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let address = format!("{scheme}://{}", listener.local_addr().unwrap());
    let (shutdown, signal) = oneshot::channel();
    let server = tokio::spawn(mailbox_gateway::app::run(listener, config, async {
        signal.await.ok();
    }));
    TestApp {
        address,
        client: client(
            options.bearer.as_deref(),
            options.root_certificate.as_deref(),
        ),
        simulator,
        redis: None,
        clock,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

/// Delegated mode's client authentication, as start-up derives it from the tenant: the simulator's
/// users' tokens for the demo app, and `rules` (often none).
pub fn delegated_access(simulator: &Simulator, rules: &AccessConfig) -> AccessConfig {
    AccessConfig {
        auth: AuthConfig::Jwt(JwtConfig {
            issuer: simulator.issuer(),
            audience: DEMO.client_id.to_owned(),
            extra_audiences: vec![format!("api://{}", DEMO.client_id)],
            keys: JwtKeySource::JwksUrl(simulator.jwks_url().parse().unwrap()),
            client_claim: "preferred_username".into(),
            users: true,
        }),
        rules: rules.rules.clone(),
    }
}

/// A client that sends `bearer` and trusts `root` (and only the built-in roots besides).
pub fn client(bearer: Option<&str>, root: Option<&std::path::Path>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder();
    if let Some(bearer) = bearer {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {bearer}").parse().unwrap(),
        );
        builder = builder.default_headers(headers);
    }
    if let Some(root) = root {
        let pem = std::fs::read(root).unwrap();
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

impl TestApp {
    /// A handle on a gateway already running at `address` (another process, whose clock `advance`
    /// cannot move), served by `simulator`.
    pub fn at(address: &str, simulator: Simulator) -> TestApp {
        TestApp {
            address: address.to_owned(),
            client: client(None, None),
            simulator,
            redis: None,
            clock: mailbox_gateway::clock::Clock::default(),
            shutdown: None,
            server: None,
        }
    }

    /// A handle on the same gateway that authenticates with the API key `key`.
    pub fn as_client(&self, key: &str) -> TestApp {
        let mut handle = self.clone_client();
        handle.client = client(Some(key), None);
        handle
    }

    /// Another handle on the same gateway, for a task of its own.
    pub fn clone_client(&self) -> TestApp {
        TestApp {
            address: self.address.clone(),
            client: self.client.clone(),
            simulator: self.simulator.clone(),
            redis: None,
            clock: self.clock.clone(),
            shutdown: None,
            server: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// The URL of a mailbox's inbox items route, for requests the helpers below do not make.
    pub fn inbox_items_url(&self, mailbox: &str) -> String {
        self.url(&format!(
            "/v1/mailboxes/{}/folders/inbox/items",
            encode(mailbox)
        ))
    }

    /// Moves time forward for token and session lifetimes, in the simulator and the gateway together,
    /// without waiting.
    pub fn advance(&self, by: std::time::Duration) {
        self.simulator.advance(by);
        self.clock.advance(by);
    }

    pub fn counters(&self) -> Counters {
        self.simulator.counters()
    }

    /// POSTs a raw item (ids percent-encoded here) to `/v1/mailboxes/{mailbox}/folders/{folder}/items`.
    pub async fn create(&self, mailbox: &str, folder: &str, item: Vec<u8>) -> reqwest::Response {
        self.client
            .post(self.url(&format!(
                "/v1/mailboxes/{}/folders/{}/items",
                encode(mailbox),
                encode(folder)
            )))
            .header("content-type", "application/octet-stream")
            .body(item)
            .send()
            .await
            .unwrap()
    }

    /// POSTs a small item with `subject` to the demo mailbox's inbox under an `Idempotency-Key`.
    pub async fn create_with_key(&self, key: &str, subject: &str) -> reqwest::Response {
        self.client
            .post(self.inbox_items_url(DEMO.mailbox_id))
            .header("content-type", "application/octet-stream")
            .header("idempotency-key", key)
            .body(item(subject))
            .send()
            .await
            .unwrap()
    }

    /// PUTs a raw item over `item_id` with `If-Match: "<change_key>"`.
    pub async fn update(
        &self,
        mailbox: &str,
        folder: &str,
        item_id: &str,
        change_key: &str,
        item: Vec<u8>,
    ) -> reqwest::Response {
        self.client
            .put(self.url(&format!(
                "/v1/mailboxes/{}/folders/{}/items/{}",
                encode(mailbox),
                encode(folder),
                encode(item_id)
            )))
            .header("content-type", "application/octet-stream")
            .header("if-match", format!("\"{change_key}\""))
            .body(item)
            .send()
            .await
            .unwrap()
    }

    /// The gateway's metrics, as a scrape of `/metrics` reads them.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Stops the gateway and waits for it to finish.
    pub async fn stop(mut self) -> Result<(), mailbox_gateway::app::StartError> {
        self.shutdown.take().unwrap().send(()).ok();
        self.server.take().unwrap().await.unwrap()
    }
}

/// Lets `by` pass at once on the test's runtime, instead of sleeping through it (mini-redis pauses and
/// advances its clock the same way): the simulator runs there, so its expiries and waits (a
/// `Fault::Delay` under way, `Behaviour::latency_ms`) are over at once. The gateway is not moved: it
/// serves requests on worker threads with runtimes of their own (`server::Workers`), whose clocks a
/// test cannot pause, so its expiries, retries and timeouts keep real time.
///
/// The clock is paused only for the jump, because a paused clock also jumps ahead by itself whenever
/// the runtime waits on a socket, which would end delays and fire timeouts early.
pub async fn skip(by: std::time::Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// Waits until `ready` answers true, asking every few milliseconds, and fails naming `what` after ten
/// seconds: the readiness signal of tests that must act while a request is in a known state.
pub async fn until<F, Fut>(what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ready().await {
        assert!(std::time::Instant::now() < deadline, "never {what}");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Percent-encodes an id for a URL path segment (item ids hold '/', '+', '=').
pub fn encode(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A small well-formed item with a recognisable subject.
pub fn item(subject: &str) -> Vec<u8> {
    ItemBuilder::new(subject)
        .body("Restored by a test.")
        .build()
}

/// Reads a JSON body.
pub async fn json(response: reqwest::Response) -> serde_json::Value {
    response.json().await.unwrap()
}

/// Asserts that `response` is a problem with this status and code, and returns its body.
pub async fn problem(response: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of {:?}",
        response.url().path()
    );
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = json(response).await;
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["requestId"], request_id.as_str());
    assert_eq!(body["type"], format!("urn:mailbox-gateway:problem:{code}"));
    assert!(!body["title"].as_str().unwrap().is_empty());
    assert!(!body["detail"].as_str().unwrap().is_empty());
    body
}

/// `bytes` as a chunked body (no Content-Length announces its size), `chunk` bytes at a time.
pub fn chunked(bytes: &[u8], chunk: usize) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(chunk).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

/// The issuer and subject of the test's federated (workload identity) tokens.
const FEDERATED_ISSUER: &str = "https://oidc.test.cluster";
const FEDERATED_SUBJECT: &str = "system:serviceaccount:restore:gateway";

/// A federated token as a Kubernetes projected service-account token would be, signed by the test
/// issuer's key.
pub fn federated_token(jti: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": FEDERATED_ISSUER, "sub": FEDERATED_SUBJECT,
        "aud": "api://AzureADTokenExchange", "iat": now, "nbf": now, "exp": now + 3600, "jti": jti,
    });
    let pem = std::fs::read(fixture("federated-issuer-key.pem")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// Makes the simulator trust the test issuer's federated tokens for the demo app.
pub fn trust_federated_issuer(simulator: &Simulator) {
    let public_key = std::fs::read_to_string(fixture("federated-issuer-pub.pem")).unwrap();
    simulator.register_federated_issuer(FEDERATED_ISSUER, FEDERATED_SUBJECT, &public_key);
}

/// What a client that writes and reads at once sees of a chunked upload: the answer's status and
/// problem body, and whether every chunk could be written.
pub struct RawUpload {
    pub status: u16,
    pub body: serde_json::Value,
    pub wrote_everything: bool,
}

/// POSTs `body` in chunks of `chunk` bytes on a plain connection, reading the answer while writing, as
/// curl does. reqwest reads the answer only once the body is out, so whether it sees an early refusal or a
/// broken pipe depends on the server; this sees what the server sent.
pub async fn raw_chunked_upload(app: &TestApp, path: &str, body: &[u8], chunk: usize) -> RawUpload {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let address = app.address.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/octet-stream\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    let write = async {
        writer.write_all(head.as_bytes()).await?;
        for piece in body.chunks(chunk) {
            writer
                .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .await?;
            writer.write_all(piece).await?;
            writer.write_all(b"\r\n").await?;
        }
        writer.write_all(b"0\r\n\r\n").await
    };
    let read = async {
        let mut received = Vec::new();
        let mut buffer = [0; 8192];
        loop {
            let read = reader.read(&mut buffer).await.unwrap();
            received.extend_from_slice(&buffer[..read]);
            if let Some(answer) = parse_answer(&received) {
                return answer;
            }
            assert!(read > 0, "the connection closed before a whole answer");
        }
    };
    let (written, (status, body)) = tokio::join!(write, read);
    RawUpload {
        status,
        body,
        wrote_everything: written.is_ok(),
    }
}

/// An HTTP/1.1 answer with a `Content-Length`, once `received` holds all of it.
fn parse_answer(received: &[u8]) -> Option<(u16, serde_json::Value)> {
    let text = std::str::from_utf8(received).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("the answer has a Content-Length");
    (body.len() >= length).then(|| (status, serde_json::from_str(&body[..length]).unwrap()))
}

/// A `redis-server` (or `valkey-server`) of a test's own on a free loopback port, without persistence;
/// killed when dropped. A test that needs one fails, loudly, where neither is installed.
pub struct RedisServer {
    port: u16,
    process: Option<std::process::Child>,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`.
    pub async fn start() -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let mut server = RedisServer {
            port,
            process: None,
            _dir: dir,
        };
        server.restart().await;
        server
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().ok();
            process.wait().ok();
        }
    }

    /// Starts the server again on the same port (empty: it keeps nothing on disk).
    pub async fn restart(&mut self) {
        self.kill();
        let binary = ["valkey-server", "redis-server"]
            .into_iter()
            .find(|name| {
                std::process::Command::new(name)
                    .arg("--version")
                    .output()
                    .is_ok()
            })
            .expect(
                "neither valkey-server nor redis-server is installed: `apt-get install redis-server` \
                 (.ci/run does this)",
            );
        let process = std::process::Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(self._dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the store server starts");
        self.process = Some(process);
        let started = std::time::Instant::now();
        loop {
            if self.answers_ping().await {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{binary} did not answer on port {} within 10 s",
                self.port
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn answers_ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut answer = [0; 7];
        stream.write_all(b"PING\r\n").await.is_ok()
            && stream.read_exact(&mut answer).await.is_ok()
            && &answer == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The API key of the `noisy` client of [`noisy_and_quiet_clients`].
pub const NOISY_KEY: &str = "noisy-key-0123456789";
/// The API key of the `quiet` client of [`noisy_and_quiet_clients`].
pub const QUIET_KEY: &str = "quiet-key-0123456789";

/// Two API-key clients, `noisy` and `quiet`, each allowed to create items in the demo mailbox: for the
/// tests that show one client cannot harm another.
pub fn noisy_and_quiet_clients() -> AccessConfig {
    use sha2::{Digest, Sha256};
    let digest = |key: &str| -> [u8; 32] { Sha256::digest(key.as_bytes()).into() };
    AccessConfig {
        auth: mailbox_gateway::access::AuthConfig::ApiKeys(vec![
            ("noisy".into(), digest(NOISY_KEY)),
            ("quiet".into(), digest(QUIET_KEY)),
        ]),
        rules: mailbox_gateway::access::parse_rules(&format!(
            r#"[{{"client": "noisy", "mailboxes": ["{0}"], "operations": ["create"]}},
                {{"client": "quiet", "mailboxes": ["{0}"], "operations": ["create"]}}]"#,
            DEMO.mailbox_id
        ))
        .unwrap(),
    }
}
