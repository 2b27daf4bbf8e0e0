//! Hands log lines from request threads to a writer thread of their own, which writes them in batches.
//!
//! Why not `tracing_appender::non_blocking`: the benchmark profile showed every audit line (one per
//! imported item, about 10,000 a second) costing the request thread a futex wake of the writer thread,
//! and the writer thread a `write` syscall and `sched_yield` spinning, per line. Here a request thread
//! puts its line in a bounded queue with no syscall and no wake-up: nothing ever sleeps on the receiving
//! side of the queue, so std's `try_send` finds no receiver to wake. The writer thread wakes on its own
//! every flush interval (20 ms by default), takes every queued line into a 64 KiB `BufWriter` and flushes
//! it: a few dozen `write` calls a second instead of one per line.
//!
//! Not lossy: when the queue is full (the target cannot keep up), the request thread wakes the writer and
//! waits for room, exactly as the non-lossy `tracing_appender` writer did. The queue's capacity bounds the
//! memory held and how far the writer may fall behind.

use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Lines the queue holds before senders wait: about 1.6 s of audit lines at 10,000 a second.
pub const DEFAULT_CAPACITY: usize = 16_384;

/// How long the writer thread sleeps between batches, so a line reaches its target at most about this
/// much later.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// The writer thread's buffer: a batch goes to the target in writes of up to this size.
const BUFFER_SIZE: usize = 64 * 1024;

/// Starts a writer thread named `thread_name` writing to `target`, with the default capacity and flush
/// interval. Keep the guard until the last line has been handed over: dropping it writes and flushes
/// every line handed over before.
pub fn spawn(target: Box<dyn Write + Send>, thread_name: &str) -> (BatchWriter, BatchGuard) {
    Builder::new(thread_name).spawn(target)
}

/// Starts a writer thread with a chosen capacity and flush interval (tests use small ones).
pub struct Builder {
    thread_name: String,
    capacity: usize,
    flush_interval: Duration,
}

impl Builder {
    pub fn new(thread_name: &str) -> Self {
        Builder {
            thread_name: thread_name.to_owned(),
            capacity: DEFAULT_CAPACITY,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
        }
    }

    /// Lines the queue holds before senders wait (at least one).
    pub fn capacity(mut self, lines: usize) -> Self {
        self.capacity = lines.max(1);
        self
    }

    /// How long the writer thread sleeps between batches.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Starts the writer thread.
    ///
    /// # Panics
    ///
    /// When the operating system refuses to start a thread, as `std::thread::spawn` does.
    pub fn spawn(self, target: Box<dyn Write + Send>) -> (BatchWriter, BatchGuard) {
        let (sender, receiver) = mpsc::sync_channel(self.capacity);
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            receiver,
            target: BufWriter::with_capacity(BUFFER_SIZE, target),
            stop: Arc::clone(&stop),
            flush_interval: self.flush_interval,
            thread_name: self.thread_name.clone(),
            reported_error: false,
        };
        let handle = thread::Builder::new()
            .name(self.thread_name)
            .spawn(move || worker.run())
            .expect("the operating system starts a log writer thread");
        let writer = BatchWriter {
            sender,
            thread: handle.thread().clone(),
        };
        let guard = BatchGuard {
            stop,
            thread: Some(handle),
        };
        (writer, guard)
    }
}

/// Hands lines to the writer thread; give it to `tracing_subscriber::fmt::Layer::with_writer`.
///
/// The fmt layer formats each event into one buffer and writes it with one `write_all` on a fresh
/// writer, so each `write` call is handed over as one line, never split or interleaved with another.
#[derive(Clone)]
pub struct BatchWriter {
    sender: SyncSender<Vec<u8>>,
    /// Woken only when the queue is full, so that it makes room sooner than its next flush interval.
    thread: Thread,
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineSender<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineSender { writer: self }
    }
}

/// Hands each `write` over to the writer thread as one line. It borrows its `BatchWriter`, so making one
/// per event touches no shared counter.
pub struct LineSender<'a> {
    writer: &'a BatchWriter,
}

impl Write for LineSender<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let sent = match self.writer.sender.try_send(buf.to_vec()) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(line)) => {
                // The writer is behind: wake it rather than wait for its next flush interval, then wait
                // for room. Waiting, not dropping the line, is what keeps the audit log complete.
                self.writer.thread.unpark();
                self.writer.sender.send(line).map_err(drop)
            }
            Err(TrySendError::Disconnected(_)) => Err(()),
        };
        sent.map(|()| buf.len()).map_err(|()| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the log writer thread has stopped (its guard was dropped)",
            )
        })
    }

    /// Nothing to do: the writer thread flushes after every batch.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Stops the writer thread when dropped, after it has written and flushed every line handed over before
/// the drop. Lines handed over after the drop may be lost (and their `write` fails): drop it at process
/// exit, once nothing logs any more.
pub struct BatchGuard {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // The writer thread never panics on its own; if its target did, there is nothing left to do.
            thread.join().ok();
        }
    }
}

/// The writer thread's state.
struct Worker {
    receiver: Receiver<Vec<u8>>,
    target: BufWriter<Box<dyn Write + Send>>,
    stop: Arc<AtomicBool>,
    flush_interval: Duration,
    thread_name: String,
    /// A failing target fails for every line; one message says so.
    reported_error: bool,
}

impl Worker {
    fn run(mut self) {
        loop {
            // Read before draining, so every line handed over before the guard asked to stop is drained
            // below and written before the thread exits.
            let stopping = self.stop.load(Ordering::Acquire);
            // Only `try_recv`: a receiver sleeping in `recv` would make every `try_send` wake it with a
            // syscall, which is the per-line cost this module exists to avoid.
            let mut wrote = false;
            let disconnected = loop {
                match self.receiver.try_recv() {
                    Ok(line) => {
                        let written = self.target.write_all(&line);
                        self.report(written);
                        wrote = true;
                    }
                    Err(TryRecvError::Empty) => break false,
                    Err(TryRecvError::Disconnected) => break true,
                }
            };
            if wrote {
                let flushed = self.target.flush();
                self.report(flushed);
            }
            if stopping || disconnected {
                return;
            }
            thread::park_timeout(self.flush_interval);
        }
    }

    /// Reports the first write error to stderr and carries on: a log target that fails (a full disk, a
    /// closed pipe) must not take the gateway down, and may recover.
    fn report(&mut self, result: io::Result<()>) {
        if let Err(error) = result {
            if !self.reported_error {
                self.reported_error = true;
                eprintln!(
                    "error: the {} thread cannot write its log lines: {error} (further errors are not reported)",
                    self.thread_name
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Condvar, Mutex};
    use std::time::Instant;

    use super::*;

    /// A target whose bytes the test can read, and which waits while its gate is closed.
    #[derive(Clone, Default)]
    struct Target {
        bytes: Arc<Mutex<Vec<u8>>>,
        gate: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Target {
        fn contents(&self) -> String {
            String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
        }

        fn close_gate(&self) {
            *self.gate.0.lock().unwrap() = true;
        }

        fn open_gate(&self) {
            *self.gate.0.lock().unwrap() = false;
            self.gate.1.notify_all();
        }
    }

    impl Write for Target {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (closed, opened) = &*self.gate;
            drop(opened.wait_while(closed.lock().unwrap(), |closed| *closed));
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Writes `line` as the fmt layer does: one `write_all` on a fresh writer.
    fn log(writer: &BatchWriter, line: &str) {
        writer.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn every_line_from_several_threads_arrives_whole_and_in_order_once_the_guard_is_dropped() {
        const THREADS: usize = 8;
        const LINES: usize = 2_000;
        let target = Target::default();
        let (writer, guard) = Builder::new("test-log")
            .capacity(64)
            .spawn(Box::new(target.clone()));
        let senders: Vec<_> = (0..THREADS)
            .map(|t| {
                let writer = writer.clone();
                thread::spawn(move || {
                    for i in 0..LINES {
                        log(&writer, &format!("{{\"thread\":{t},\"line\":{i}}}\n"));
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.join().unwrap();
        }
        drop(guard);

        let contents = target.contents();
        let mut next = [0; THREADS];
        for line in contents.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let t = value["thread"].as_u64().unwrap() as usize;
            assert_eq!(value["line"], next[t], "thread {t}'s lines out of order");
            next[t] += 1;
        }
        assert_eq!(next, [LINES; THREADS]);
        drop(writer);
    }

    #[test]
    fn senders_wait_for_room_instead_of_dropping_lines_when_the_target_is_slow() {
        const LINES: usize = 20;
        let target = Target::default();
        target.close_gate();
        let (writer, guard) = Builder::new("test-log")
            .capacity(2)
            .spawn(Box::new(target.clone()));
        // Lines longer than the writer's buffer go straight to the target, so the first one holds the
        // writer thread at the closed gate while two more fill the queue.
        let line = |i: usize| format!("{i} {}\n", "x".repeat(BUFFER_SIZE));
        let handed_over = Arc::new(AtomicUsize::new(0));
        let sender = thread::spawn({
            let (writer, handed_over) = (writer.clone(), Arc::clone(&handed_over));
            move || {
                for i in 0..LINES {
                    log(&writer, &line(i));
                    handed_over.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        // Waiting can only be seen as progress that does not happen; a drop would let the sender finish.
        thread::sleep(Duration::from_millis(100));
        assert!(handed_over.load(Ordering::SeqCst) <= 3);
        assert!(!sender.is_finished());

        target.open_gate();
        sender.join().unwrap();
        drop(guard);
        let expected: String = (0..LINES).map(line).collect();
        assert!(target.contents() == expected, "lines lost or reordered");
    }

    #[test]
    fn lines_reach_the_target_within_a_flush_interval_while_the_guard_is_held() {
        let target = Target::default();
        let (writer, _guard) = Builder::new("test-log")
            .flush_interval(Duration::from_millis(10))
            .spawn(Box::new(target.clone()));
        log(&writer, "{\"first\":true}\n");
        let deadline = Instant::now() + Duration::from_secs(2);
        while target.contents().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(target.contents(), "{\"first\":true}\n");
    }

    #[test]
    fn a_line_handed_over_after_the_guard_is_dropped_fails_instead_of_waiting_forever() {
        let target = Target::default();
        let (writer, guard) = Builder::new("test-log").spawn(Box::new(target.clone()));
        drop(guard);
        let error = writer.make_writer().write_all(b"late\n").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }
}
