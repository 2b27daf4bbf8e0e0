//! Builds the gateway's shared state from its configuration and serves the API until shutdown.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::auth::CredentialError;
use crate::config::Config;
use crate::graph::GraphClient;

/// What every request handler shares: a cheap `Clone` of `Arc`s.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The tenant's Graph client, with its token, sessions and resolved ids.
    pub graph: Arc<GraphClient>,
    /// Largest raw item accepted, in bytes.
    pub max_item_bytes: u64,
}

impl AppState {
    /// Builds the state; fails if the configured credential cannot be loaded.
    pub fn new(config: &Config) -> Result<AppState, CredentialError> {
        Ok(AppState {
            graph: Arc::new(GraphClient::new(&config.tenant, config.timeouts)?),
            max_item_bytes: config.max_item_bytes,
        })
    }
}

/// Serves the API on `listener` until `shutdown` completes, then finishes in-flight requests and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = AppState::new(&config)?;
    let router = crate::api::router(state);
    tracing::info!(address = %listener.local_addr()?, "mailbox-gateway listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
