//! Accepts connections and serves the router on them: HTTP/1.1 with keep-alive and HTTP/2 (h2c, or ALPN
//! over TLS), a cap on open connections, a deadline for request headers, and graceful shutdown.
//!
//! `axum::serve` has no knobs for slow clients, so this is the small accept loop it would be, on
//! hyper-util's connection builder. A slowloris client that trickles its headers is cut off after the
//! header deadline, and no more than `max_connections` connections are open at once: the loop stops
//! accepting while the cap is reached, leaving newcomers in the kernel's backlog.
//!
//! Connections are served by [`Workers`]: threads that each run a single-threaded tokio runtime, dealt
//! accepted connections in turn. A request then lives on one thread from its first byte to its answer,
//! with its upstream connection on the same thread (see `GraphClient`'s per-thread pools): no task is
//! woken across threads on the hot path, which the 4 KiB benchmark profile showed as futex and
//! scheduler work.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::ConnectionLimits;

/// Threads running a single-threaded tokio runtime each, for connections and everything their requests
/// spawn. They stop when this is dropped: what is still running on them is cancelled, so stop them only
/// after the graceful shutdown has waited for what it waits for.
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `count` worker threads (at least one).
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let (mut handles, mut stop) = (Vec::new(), Vec::new());
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stop.push(stop_tx);
            std::thread::Builder::new()
                .name(format!("gateway-worker-{index}"))
                .spawn(move || {
                    // Until the sender is sent on or dropped; the runtime's tasks run meanwhile.
                    runtime.block_on(stop_rx).ok();
                })?;
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            _stop: stop,
        })
    }

    /// The next worker's runtime, in turn.
    fn next(&self) -> &Handle {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[index]
    }
}

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting, lets open requests
/// finish for at most `grace`, and returns. Connections are served on `workers`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    workers: &Workers,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the connection semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically out of file descriptors: back off a little instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        stream.set_nodelay(true).ok();
        // Moved to the worker's runtime: registered with its reactor there.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%peer, %error, "cannot hand the connection to a worker");
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        let handshake_deadline = limits.header_read_timeout;
        workers.next().spawn(async move {
            let _permit = permit;
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%peer, %error, "cannot serve the connection");
                    return;
                }
            };
            let served = match tls {
                None => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(connection).await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(handshake_deadline, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake too slow");
                                return;
                            }
                        };
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(connection).await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over with connections still open; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn workers_take_connections_in_turn_on_threads_of_their_own() {
        let workers = Workers::start(2).unwrap();
        let mut threads = Vec::new();
        for _ in 0..4 {
            let name = workers
                .next()
                .spawn(async { std::thread::current().name().map(str::to_owned) })
                .await
                .unwrap();
            threads.push(name.unwrap());
        }
        assert_eq!(
            threads,
            [
                "gateway-worker-0",
                "gateway-worker-1",
                "gateway-worker-0",
                "gateway-worker-1"
            ]
        );
        assert_ne!(
            std::thread::current().name(),
            Some("gateway-worker-0"),
            "the caller's runtime is not a worker"
        );
    }
}
