//! Builds the gateway's shared state from its configuration, serves the API, and shuts down gracefully.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::budget::MemoryBudget;
use crate::config::{Config, RetryPolicy};
use crate::graph::{GraphClient, MailboxPacer};
use crate::idempotency::IdempotencyStore;
use crate::metrics::Metrics;
use crate::store::SharedStore;

/// Why the gateway could not start. Each cause keeps its source, for the binary to print as a chain.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("loading the Graph credential")]
    Credential(#[from] crate::auth::CredentialError),
    #[error("loading the clients' JWKS")]
    Access(#[from] crate::access::JwtError),
    #[error("loading the TLS certificate and key")]
    Tls(#[from] crate::tls::TlsError),
    #[error("connecting to the shared store (MAILBOX_GATEWAY_REDIS_URL)")]
    Store(#[from] crate::store::StoreUnavailable),
    #[error("starting the server")]
    Io(#[from] std::io::Error),
}

/// What every request handler shares: one `Arc`, so the clones axum makes per request and per layer
/// cost one reference count each.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The gateway's state behind [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// The tenant's Graph client, with its token, sessions, resolved ids and mailbox pacing.
    pub graph: Arc<GraphClient>,
    /// Who may call, and what each client may touch.
    pub access: Arc<Access>,
    /// What the gateway counts, for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Largest raw item accepted, in bytes.
    pub max_item_bytes: u64,
    /// Item bytes held in memory across all requests.
    pub budget: MemoryBudget,
    /// Whether audit lines carry the item's SHA-256.
    pub audit_digest: bool,
    /// Longest pause in a client's upload.
    pub client_body_timeout: Duration,
    /// Slowest upload accepted after its grace period, in bytes per second; 0 is off.
    pub min_upload_bytes_per_sec: u64,
    /// The retry budget each client request gets.
    pub retry: RetryPolicy,
    /// Outcomes of requests sent with an `Idempotency-Key`.
    pub idempotency: IdempotencyStore,
    /// The store shared with other replicas, when one is configured.
    pub store: Option<Arc<SharedStore>>,
    /// Imports run as tasks of their own (so a client hanging up does not cancel them); shutdown waits
    /// for them.
    pub tasks: TaskTracker,
    shutting_down: AtomicBool,
}

impl AppState {
    /// Builds the state; fails if the configured credential or the clients' JWKS file cannot be loaded.
    pub fn new(config: &Config) -> Result<AppState, StartError> {
        let access = Access::new(&config.access)?;
        let metrics = Arc::new(Metrics::new());
        // Without a shared store, this replica keeps its state alone; with one, every replica shares it.
        let store = config
            .shared_state
            .as_ref()
            .map(|shared| SharedStore::connect(shared, metrics.clone()))
            .transpose()?;
        let (pacer, idempotency) = match (&store, &config.shared_state) {
            (Some(store), Some(shared)) => (
                MailboxPacer::shared(
                    config.pacing,
                    metrics.clone(),
                    store.clone(),
                    shared.degraded_mailbox_concurrency,
                ),
                IdempotencyStore::shared(config.idempotency, store.clone()),
            ),
            _ => (
                MailboxPacer::new(config.pacing, metrics.clone()),
                IdempotencyStore::new(config.idempotency),
            ),
        };
        if access.is_open() && !config.listen.ip().is_loopback() {
            tracing::warn!(listen = %config.listen, "CLIENT AUTHENTICATION IS OFF on a non-loopback address: anyone who can reach it can write into every mailbox");
        }
        Ok(AppState(Arc::new(Shared {
            access: Arc::new(access),
            graph: Arc::new(GraphClient::new(
                &config.tenant,
                config.graph_access,
                config.timeouts,
                pacer,
                metrics.clone(),
                config.clock.clone(),
            )?),
            metrics,
            max_item_bytes: config.max_item_bytes,
            audit_digest: config.audit_digest,
            budget: MemoryBudget::with_client_share(
                usize::try_from(config.memory_budget).unwrap_or(usize::MAX),
                config.memory_wait,
                config.client_budget_share,
            ),
            min_upload_bytes_per_sec: config.min_upload_bytes_per_sec,
            client_body_timeout: config.timeouts.client_body,
            retry: config.retry,
            idempotency,
            store,
            tasks: TaskTracker::new(),
            shutting_down: AtomicBool::new(false),
        })))
    }

    /// Whether a shutdown has begun (readiness then reports not ready).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

/// Serves the API on `listener` until `shutdown` completes, then shuts down gracefully: readiness turns
/// false, no new connection is accepted, and in-flight requests and imports get `config.shutdown_grace`
/// to finish before this returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let state = AppState::new(&config)?;
    let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
    let router = crate::api::router(state.clone());
    let workers = crate::server::Workers::start(config.connections.worker_threads)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        address = %listener.local_addr()?,
        scheme,
        tenant = %config.tenant.tenant_id,
        auth = config.access.mode(),
        graph_access = ?config.graph_access,
        clients = config.access.named_clients(),
        rules = config.access.rules.len(),
        shared_state = if config.shared_state.is_some() { "redis" } else { "memory" },
        "mailbox-gateway listening"
    );
    let shutdown_began = Arc::new(std::sync::OnceLock::new());
    let signal = {
        let (state, shutdown_began) = (state.clone(), shutdown_began.clone());
        async move {
            shutdown.await;
            shutdown_began.set(tokio::time::Instant::now()).ok();
            state.shutting_down.store(true, Ordering::Relaxed);
            tracing::info!(
                grace_secs = config.shutdown_grace.as_secs(),
                "shutting down: finishing in-flight requests"
            );
        }
    };
    crate::server::serve(
        listener,
        router,
        &workers,
        config.connections,
        tls,
        signal,
        config.shutdown_grace,
    )
    .await;
    // Imports whose clients hung up may still be running; they get what is left of the grace period.
    state.tasks.close();
    let spent = shutdown_began
        .get()
        .map_or(Duration::ZERO, |began: &tokio::time::Instant| {
            began.elapsed()
        });
    let left = config.shutdown_grace.saturating_sub(spent);
    if tokio::time::timeout(left, state.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            imports = state.tasks.len(),
            "grace period over with imports still running"
        );
    }
    // Stops the worker threads, cancelling whatever the grace period left running on them; the permits
    // their requests gave back go to the shared store first.
    state.graph.give_back_permits().await;
    drop(workers);
    Ok(())
}
