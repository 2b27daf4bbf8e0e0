//! Accepts connections and serves the router on them: HTTP/1.1 with keep-alive and HTTP/2 (h2c, or ALPN
//! over TLS), a cap on open connections, a deadline for request headers, and graceful shutdown.
//!
//! `axum::serve` has no knobs for slow clients, so this is the small accept loop it would be, on
//! hyper-util's connection builder. A slowloris client that trickles its headers is cut off after the
//! header deadline, and no more than `max_connections` connections are open at once: the loop stops
//! accepting while the cap is reached, leaving newcomers in the kernel's backlog.
//!
//! When the gateway refuses a request before reading all of its body (413, 408, 503), hyper closes the
//! connection with the rest unread. A socket closed with unread data makes the kernel send a reset, which
//! can throw the answer away in the client's receive buffer before the client has read it: the client
//! sees a broken pipe instead of the problem. So every connection ends with a *lingering close*, as
//! nginx's `lingering_close`: its writing side is shut, and what the client still sends is read and
//! discarded for at most [`LINGER_TIME`] and [`LINGER_BYTES`], or until it pauses for [`LINGER_PAUSE`].
//! The connection keeps its place under the cap meanwhile, and the linger is shorter than the header
//! deadline, so it gives a client no longer hold on a connection than sending headers slowly does.
//!
//! Connections are served by [`Workers`]: threads that each run a single-threaded tokio runtime, dealt
//! accepted connections in turn. A request then lives on one thread from its first byte to its answer,
//! with its upstream connection on the same thread (see `GraphClient`'s per-thread pools): no task is
//! woken across threads on the hot path, which the 4 KiB benchmark profile showed as futex and
//! scheduler work.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::ConnectionLimits;

/// The longest a closing connection is drained.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// The longest pause in the client's sending after which a draining connection is closed.
pub const LINGER_PAUSE: Duration = Duration::from_secs(1);
/// The most bytes read and discarded from a closing connection.
pub const LINGER_BYTES: usize = 16 * 1024 * 1024;

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
            // The socket comes back here when hyper (or TLS) drops it, to be drained before it closes.
            let (stream, closed) = Lingering::new(stream);
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
            if let Ok(stream) = closed.await {
                linger(stream).await;
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

/// A connection's socket that is handed back when dropped, so that it can be drained before it closes.
struct Lingering {
    stream: Option<TcpStream>,
    closed: Option<oneshot::Sender<TcpStream>>,
}

impl Lingering {
    fn new(stream: TcpStream) -> (Lingering, oneshot::Receiver<TcpStream>) {
        let (sender, receiver) = oneshot::channel();
        let lingering = Lingering {
            stream: Some(stream),
            closed: Some(sender),
        };
        (lingering, receiver)
    }

    fn stream(self: Pin<&mut Self>) -> Pin<&mut TcpStream> {
        Pin::new(
            self.get_mut()
                .stream
                .as_mut()
                .expect("the socket is taken only on drop"),
        )
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        if let (Some(stream), Some(closed)) = (self.stream.take(), self.closed.take()) {
            // The receiver is gone only if the connection's task is; then the socket just closes.
            let _ = closed.send(stream);
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}

/// Shuts the writing side (the answer is out) and reads what the client still sends until it stops, closes,
/// pauses for [`LINGER_PAUSE`], or [`LINGER_TIME`] or [`LINGER_BYTES`] run out; then the socket closes. A
/// client that hung up first ends this at its first read.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buffer = vec![0; 64 * 1024];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match tokio::time::timeout(LINGER_PAUSE, stream.read(&mut buffer)).await {
                Ok(Ok(read)) if read > 0 => drained += read,
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
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
