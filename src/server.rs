//! Accepts connections and serves the router on them: HTTP/1.1 with keep-alive and HTTP/2 (h2c, or ALPN
//! over TLS), a cap on open connections, a deadline for request headers, and graceful shutdown.
//!
//! `axum::serve` has no knobs for slow clients, so this is the small accept loop it would be, on
//! hyper-util's connection builder. A slowloris client that trickles its headers is cut off after the
//! header deadline, and no more than `max_connections` connections are open at once: the loop stops
//! accepting while the cap is reached, leaving newcomers in the kernel's backlog. So that idle
//! connections cannot hold the cap either, a connection with no request in progress for the idle timeout
//! is closed gracefully (GOAWAY on HTTP/2), from accept on (before its first byte, and while hyper is
//! still telling HTTP/1 from HTTP/2) as well as between keep-alive requests; HTTP/2 peers are also pinged.
//! The shutdown closes every connection the same way. A request is in progress until the last byte of its
//! answer has been handed to the socket, and a connection whose socket still takes bytes is not idle, so
//! a long download (a folder export that waits on Graph, a large item to a slow reader) is never closed
//! as idle. A client that stops reading its answer cannot hold a connection either: one whose socket has
//! taken none of the answer's bytes for the send timeout is dropped (as nginx's `send_timeout`), and with
//! it the answer and the item bytes it held.
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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

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
    // Cancelled when the shutdown begins: every connection then closes gracefully (GOAWAY on HTTP/2).
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    // Pings find peers that vanished without closing; the idle timeout below closes the ones that stay.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_PING_EVERY))
        .keep_alive_timeout(H2_PING_EVERY);
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
        // Counts the connection's requests in progress, so that it can be closed once idle. A request is in
        // progress until its answer's body has been sent, not only until its handler returns: a long
        // download (a folder export) is not idle.
        let activity = Arc::new(Activity::new());
        let service = {
            let (router, activity) = (router.clone(), activity.clone());
            hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let busy = activity.begin();
                let response = router.clone().oneshot(request);
                async move {
                    let response = response.await?;
                    Ok::<_, std::convert::Infallible>(response.map(|body| BusyBody {
                        body,
                        busy: Some(busy),
                    }))
                }
            })
        };
        let (builder, stop, tls) = (builder.clone(), stop.clone(), tls.clone());
        let (handshake_deadline, idle_timeout, send_timeout) = (
            limits.header_read_timeout,
            limits.idle_timeout,
            limits.send_timeout,
        );
        let connection_task = connections.track_future(async move {
            let _permit = permit;
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%peer, %error, "cannot serve the connection");
                    return;
                }
            };
            // The socket comes back here when hyper (or TLS) drops it, to be drained before it closes.
            let (stream, closed) = Lingering::new(stream, activity.clone());
            // Serves the connection until it ends, closing it gracefully when the gateway shuts down or when
            // it has had no request in progress for the idle timeout (from accept on).
            macro_rules! serve_until_idle_or_stopped {
                ($io:expr) => {{
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new($io), service);
                    tokio::pin!(connection);
                    let mut closing = false;
                    // An idle connection closes gracefully, but HTTP/2's graceful close waits for the
                    // peer's PING answer: a peer that never answers is dropped after IDLE_CLOSE_GRACE.
                    let mut idle_close_by = None;
                    loop {
                        tokio::select! {
                            served = connection.as_mut() => break served,
                            () = stop.cancelled(), if !closing => {
                                connection.as_mut().graceful_shutdown();
                                closing = true;
                            }
                            () = activity.idle_for(idle_timeout), if !closing => {
                                tracing::debug!(%peer, "closing an idle connection");
                                connection.as_mut().graceful_shutdown();
                                closing = true;
                                idle_close_by = Some(Instant::now() + IDLE_CLOSE_GRACE);
                            }
                            () = sleep_until_or_never(idle_close_by) => break Ok(()),
                            () = activity.send_stalled_for(send_timeout) => {
                                tracing::info!(%peer, "closing a connection whose client stopped reading its answer");
                                break Ok(());
                            }
                        }
                    }
                }};
            }
            let served = match tls {
                None => serve_until_idle_or_stopped!(stream),
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
                    serve_until_idle_or_stopped!(stream)
                }
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            if let Ok(stream) = closed.await {
                linger(stream).await;
            }
        });
        workers.next().spawn(connection_task);
    }
    drop(listener);
    stop.cancel();
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over with connections still open; closing them");
    }
}

/// How long an idle connection being closed gracefully may take before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// How often an HTTP/2 connection is pinged, and how long the answer may take.
const H2_PING_EVERY: Duration = Duration::from_secs(20);

/// A connection's requests in progress, when it last had one, and since when its writes have waited.
struct Activity {
    in_flight: AtomicUsize,
    /// When the last request ended or the socket last took bytes (or the connection was accepted), in
    /// milliseconds since `origin`.
    last_ms: AtomicU64,
    /// Since when the socket has refused the bytes written to it (its send buffer full because the
    /// client does not read), in milliseconds since `origin`; [`NOT_WAITING`] while writes go through.
    write_waiting_since_ms: AtomicU64,
    origin: Instant,
}

/// [`Activity::write_waiting_since_ms`] while nothing waits to be written.
const NOT_WAITING: u64 = u64::MAX;

/// A request in progress; ends it when dropped.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            write_waiting_since_ms: AtomicU64::new(NOT_WAITING),
            origin: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(NOT_WAITING - 1)
    }

    /// Notes how a write to the socket went: it waits (from the first refusal on), or it went through
    /// (which is activity: the connection is not idle).
    fn note_write(&self, written: &Poll<io::Result<usize>>) {
        match written {
            Poll::Pending => {
                let _ = self.write_waiting_since_ms.compare_exchange(
                    NOT_WAITING,
                    self.now_ms(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            Poll::Ready(written) => {
                if matches!(written, Ok(n) if *n > 0) {
                    self.last_ms.store(self.now_ms(), Ordering::Release);
                }
                self.write_waiting_since_ms
                    .store(NOT_WAITING, Ordering::Release);
            }
        }
    }

    /// Completes once a write has waited for `timeout` without the socket taking a byte.
    async fn send_stalled_for(&self, timeout: Duration) {
        loop {
            let since = self.write_waiting_since_ms.load(Ordering::Acquire);
            if since == NOT_WAITING {
                // Looked at again a quarter of the timeout later: a stall is seen within 1.25 times it.
                tokio::time::sleep(timeout / 4).await;
                continue;
            }
            let stalled_at = self.origin + Duration::from_millis(since) + timeout;
            if Instant::now() >= stalled_at {
                return;
            }
            tokio::time::sleep_until(stalled_at).await;
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Completes once the connection has had no request in progress, and written nothing, for `timeout`.
    /// An answer whose last bytes hyper still holds for a slow reader is not idle while they move (and
    /// when they stop moving, [`Activity::send_stalled_for`] is what ends the connection).
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let now = Instant::now();
            let writing = self.write_waiting_since_ms.load(Ordering::Acquire) != NOT_WAITING;
            if writing || self.in_flight.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(timeout).await;
                continue;
            }
            let last = self.origin + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
            if now >= last + timeout {
                return;
            }
            tokio::time::sleep_until(last + timeout).await;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body that keeps its request in progress until the last byte is out (or the body is
/// dropped, when the connection ends first).
struct BusyBody {
    body: axum::body::Body,
    busy: Option<Busy>,
}

impl http_body::Body for BusyBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) {
            self.busy = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection's socket that is handed back when dropped, so that it can be drained before it closes;
/// it tells the connection's [`Activity`] how its writes go.
struct Lingering {
    stream: Option<TcpStream>,
    closed: Option<oneshot::Sender<TcpStream>>,
    activity: Arc<Activity>,
}

impl Lingering {
    fn new(
        stream: TcpStream,
        activity: Arc<Activity>,
    ) -> (Lingering, oneshot::Receiver<TcpStream>) {
        let (sender, receiver) = oneshot::channel();
        let lingering = Lingering {
            stream: Some(stream),
            closed: Some(sender),
            activity,
        };
        (lingering, receiver)
    }

    fn stream(self: Pin<&mut Self>) -> Pin<&mut TcpStream> {
        self.parts().0
    }

    /// The socket and the activity it reports writes to.
    fn parts(self: Pin<&mut Self>) -> (Pin<&mut TcpStream>, &Activity) {
        let this = self.get_mut();
        let stream = this
            .stream
            .as_mut()
            .expect("the socket is taken only on drop");
        (Pin::new(stream), &this.activity)
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
        let (stream, activity) = self.parts();
        let written = stream.poll_write(cx, buf);
        activity.note_write(&written);
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let (stream, activity) = self.parts();
        let written = stream.poll_write_vectored(cx, bufs);
        activity.note_write(&written);
        written
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
