//! Keeps each mailbox's upstream traffic inside Outlook's limits: a fair queue with a bounded number of
//! requests in flight, a hold while the mailbox is throttled, and upload pacing.
//!
//! Outlook allows 4 concurrent requests and 150 MB of uploads per 5 minutes per app and mailbox
//! (upstream.md section 5), and one throttled mailbox does not slow the others. So every upstream request
//! about a mailbox first takes one of that mailbox's permits (tokio's semaphore queues waiters first in,
//! first out), and a `429` with `Retry-After` holds the whole mailbox until the time has passed instead of
//! letting each queued request run into the same wall. Other mailboxes have their own gates.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::per_mailbox::PerMailbox;
use super::{CallContext, ErrorKind, GraphError};
use crate::config::Pacing;
use crate::metrics::Metrics;

/// The window over which uploads are paced.
const UPLOAD_WINDOW: Duration = Duration::from_secs(5 * 60);
/// `Retry-After` suggested to a client whose request waited too long for its mailbox's turn.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The gates of all mailboxes.
#[derive(Debug)]
pub struct MailboxPacer {
    settings: Pacing,
    metrics: Arc<Metrics>,
    gates: PerMailbox<Gate>,
}

/// One mailbox's gate. Its std `Mutex`es are held for a read or an update, never across an await.
#[derive(Debug)]
struct Gate {
    permits: Arc<Semaphore>,
    held_until: Mutex<Option<Instant>>,
    /// Recent uploads: when, and how many bytes.
    uploads: Mutex<VecDeque<(Instant, u64)>>,
}

/// The right to send one request to a mailbox; dropping it lets the next one in.
#[derive(Debug)]
pub struct MailboxPermit {
    _permit: OwnedSemaphorePermit,
}

impl MailboxPacer {
    /// Pacing for every mailbox with these settings.
    pub fn new(settings: Pacing, metrics: Arc<Metrics>) -> MailboxPacer {
        MailboxPacer {
            settings,
            metrics,
            gates: PerMailbox::default(),
        }
    }

    /// Waits for the mailbox's turn: for a throttling hold to end, for upload room (when `upload_bytes`
    /// is not zero), and for a free permit. Gives up with `Throttled` when the hold outlasts the request's
    /// budget, and with `MailboxBusy` when upload room or a permit does not come in time.
    pub async fn acquire(
        &self,
        mailbox_id: &str,
        upload_bytes: u64,
        context: &CallContext,
    ) -> Result<MailboxPermit, GraphError> {
        let gate = self.gate(mailbox_id);
        let started = Instant::now();
        let action = || format!("waiting for {mailbox_id}'s turn");
        let throttled = |wait| {
            GraphError::new(
                action(),
                ErrorKind::Throttled {
                    retry_after: Some(wait),
                },
            )
        };
        gate.hold_within(context).map_err(throttled)?;
        if upload_bytes > 0 && self.settings.upload_bytes_per_5_min > 0 {
            self.reserve_upload(&gate, upload_bytes, context)
                .await
                .map_err(|wait| {
                    GraphError::new(action(), ErrorKind::MailboxBusy { retry_after: wait })
                })?;
        }
        let queue_limit = self
            .settings
            .queue_timeout
            .min(context.deadline().saturating_duration_since(Instant::now()));
        let permit = tokio::time::timeout(queue_limit, gate.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                GraphError::new(
                    action(),
                    ErrorKind::MailboxBusy {
                        retry_after: BUSY_RETRY_AFTER,
                    },
                )
            })?
            .expect("mailbox semaphores are never closed");
        // A 429 may have arrived while this request queued; everyone waits it out, holding their turn.
        if let Some(wait) = gate.hold_within(context).map_err(throttled)? {
            tokio::time::sleep(wait).await;
        }
        self.metrics.queue_waited(started.elapsed());
        Ok(MailboxPermit { _permit: permit })
    }

    /// Holds every request to the mailbox for `wait`, because the upstream throttled it.
    pub fn hold(&self, mailbox_id: &str, wait: Duration) {
        let gate = self.gate(mailbox_id);
        let until = Instant::now() + wait;
        let mut held = gate.held_until.lock().expect("gate poisoned");
        if held.is_none_or(|current| current < until) {
            *held = Some(until);
        }
        tracing::info!(mailbox = %mailbox_id, wait_ms = wait.as_millis() as u64, "mailbox throttled; holding its requests");
    }

    /// Waits until `bytes` more fit in the mailbox's upload window, then records them. An item larger than
    /// the whole window goes alone once the window is empty. Returns the wait that did not fit.
    async fn reserve_upload(
        &self,
        gate: &Gate,
        bytes: u64,
        context: &CallContext,
    ) -> Result<(), Duration> {
        loop {
            let wait = {
                let mut uploads = gate.uploads.lock().expect("gate poisoned");
                let now = Instant::now();
                while uploads
                    .front()
                    .is_some_and(|(at, _)| now.duration_since(*at) >= UPLOAD_WINDOW)
                {
                    uploads.pop_front();
                }
                let used: u64 = uploads.iter().map(|(_, b)| b).sum();
                if used == 0 || used + bytes <= self.settings.upload_bytes_per_5_min {
                    uploads.push_back((now, bytes));
                    return Ok(());
                }
                let (oldest, _) = uploads.front().expect("used > 0");
                (*oldest + UPLOAD_WINDOW).duration_since(now)
            };
            if !context.can_wait(wait) {
                return Err(wait);
            }
            tracing::info!(
                wait_ms = wait.as_millis() as u64,
                "pacing uploads to the mailbox"
            );
            tokio::time::sleep(wait).await;
        }
    }

    fn gate(&self, mailbox_id: &str) -> Arc<Gate> {
        let concurrency = self.settings.mailbox_concurrency.max(1);
        self.gates.get(mailbox_id, || Gate {
            permits: Arc::new(Semaphore::new(concurrency)),
            held_until: Mutex::new(None),
            uploads: Mutex::new(VecDeque::new()),
        })
    }
}

impl Gate {
    /// What is left of a throttling hold, if it fits in the request's budget; else the whole wait, for
    /// the client to hear when to come back.
    fn hold_within(&self, context: &CallContext) -> Result<Option<Duration>, Duration> {
        let held = *self.held_until.lock().expect("gate poisoned");
        let wait = held
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|wait| !wait.is_zero());
        match wait {
            Some(wait) if !context.can_wait(wait) => Err(wait),
            wait => Ok(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::config::RetryPolicy;

    fn pacer(concurrency: usize, upload: u64) -> Arc<MailboxPacer> {
        Arc::new(MailboxPacer::new(
            Pacing {
                mailbox_concurrency: concurrency,
                queue_timeout: Duration::from_secs(5),
                upload_bytes_per_5_min: upload,
            },
            Arc::new(Metrics::new()),
        ))
    }

    fn context() -> CallContext {
        CallContext::new("r", RetryPolicy::default())
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_the_limit_run_at_once_per_mailbox_while_others_carry_on() {
        let pacer = pacer(2, 0);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (pacer, running, peak) = (pacer.clone(), running.clone(), peak.clone());
                tokio::spawn(async move {
                    let _permit = pacer.acquire("MBX:a@b", 0, &context()).await.unwrap();
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        // Another mailbox is not queued behind the first.
        let started = Instant::now();
        let _other = pacer.acquire("MBX:c@d", 0, &context()).await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_waits_too_long_for_its_turn_is_told_the_mailbox_is_busy() {
        let pacer = pacer(1, 0);
        let _held = pacer.acquire("MBX:a@b", 0, &context()).await.unwrap();
        let started = Instant::now();
        let error = pacer.acquire("MBX:a@b", 0, &context()).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(
            matches!(error.kind, ErrorKind::MailboxBusy { .. }),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_mailbox_holds_its_requests_until_the_time_has_passed() {
        let pacer = pacer(4, 0);
        pacer.hold("MBX:a@b", Duration::from_secs(3));
        let started = Instant::now();
        let _permit = pacer.acquire("MBX:a@b", 0, &context()).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        let _other = pacer.acquire("MBX:c@d", 0, &context()).await.unwrap();
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(3),
            "other mailboxes are not held"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_longer_than_the_budget_is_refused_at_once() {
        let pacer = pacer(4, 0);
        pacer.hold("MBX:a@b", Duration::from_secs(600));
        let error = pacer.acquire("MBX:a@b", 0, &context()).await.unwrap_err();
        assert!(
            error.retry_after().unwrap() > Duration::from_secs(590),
            "{error:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn uploads_beyond_the_window_wait_for_room() {
        let pacer = pacer(4, 1000);
        let long = CallContext::new(
            "r",
            RetryPolicy {
                max_attempts: 5,
                budget: Duration::from_secs(3600),
            },
        );
        drop(pacer.acquire("MBX:a@b", 600, &long).await.unwrap());
        let started = Instant::now();
        drop(pacer.acquire("MBX:a@b", 600, &long).await.unwrap());
        assert_eq!(started.elapsed(), UPLOAD_WINDOW);
        // Within a short budget, the same wait is refused instead.
        let error = pacer.acquire("MBX:a@b", 600, &context()).await.unwrap_err();
        assert!(matches!(error.kind, ErrorKind::MailboxBusy { .. }));
    }
}
