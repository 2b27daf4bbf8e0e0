//! Decides whether and when a failed upstream call is tried again, within one client request's budget.
//!
//! A client request gets a [`CallContext`] with a time budget that all of its upstream calls share; each
//! call is tried at most `max_attempts` times. Retryable failures (throttling, and requests that provably never reached the upstream)
//! wait for the upstream's `Retry-After` or an exponential backoff with full jitter, then go again. When
//! the wait asked for does not fit in what is left of the budget, the request gives up at once and the
//! client is told when to come back, instead of the connection being held.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::{ErrorKind, GraphError};
use crate::access::User;
use crate::config::RetryPolicy;

/// First backoff step; attempt n waits a random time up to `BACKOFF_BASE * 2^n`.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest backoff step without a `Retry-After`.
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// What one client request carries into every upstream call it causes.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// Sent to Graph as `client-request-id` (a GUID).
    pub request_id: String,
    budget: Budget,
    /// In delegated mode, the user the calls act for: their Graph token is used, not the app's.
    pub(crate) user: Option<Arc<User>>,
}

/// Attempts per call and time left for one client request.
#[derive(Clone, Debug)]
struct Budget {
    deadline: Instant,
    max_attempts: u32,
}

impl CallContext {
    /// A context whose budget starts now.
    pub fn new(request_id: impl Into<String>, policy: RetryPolicy) -> CallContext {
        CallContext {
            request_id: request_id.into(),
            budget: Budget {
                deadline: Instant::now() + policy.budget,
                max_attempts: policy.max_attempts.max(1),
            },
            user: None,
        }
    }

    /// The same context, acting for `user` (delegated mode) when there is one.
    pub fn acting_for(mut self, user: Option<Arc<User>>) -> CallContext {
        self.user = user;
        self
    }

    /// The key of this caller's import session for a mailbox: the mailbox itself for the app, the user
    /// and the mailbox in delegated mode (a session is as privileged as the token that made it).
    pub(crate) fn session_key(&self, mailbox_id: &str) -> String {
        match &self.user {
            None => mailbox_id.to_owned(),
            Some(user) => format!("{}/{}|{mailbox_id}", user.tenant_id, user.oid),
        }
    }

    /// When the budget ends: no new attempt starts and no wait is begun after it.
    pub fn deadline(&self) -> Instant {
        self.budget.deadline
    }

    /// Waits before retrying `error`, the outcome of a call's `attempts`-th try, if it is retryable and
    /// the budget allows; otherwise returns the error to give up with. Throttling whose wait does not fit
    /// in the budget comes back with the wait, so the client is told when to retry.
    pub(crate) async fn before_retry(
        &self,
        error: GraphError,
        attempts: u32,
    ) -> Result<(), GraphError> {
        if !error.retryable() {
            return Err(error);
        }
        let wait = error.retry_after().unwrap_or_else(|| backoff(attempts));
        let fits = Instant::now() + wait <= self.budget.deadline;
        if attempts >= self.budget.max_attempts || !fits {
            tracing::info!(
                attempts,
                wait_ms = wait.as_millis() as u64,
                "retry budget spent; giving up"
            );
            return Err(with_wait(error, wait));
        }
        tracing::info!(attempts, wait_ms = wait.as_millis() as u64, reason = %error.kind, "retrying upstream call");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Whether waiting `wait` from now stays inside the budget.
    pub(crate) fn can_wait(&self, wait: Duration) -> bool {
        Instant::now() + wait <= self.budget.deadline
    }
}

/// Full jitter: a random wait between zero and the exponential step for this attempt.
fn backoff(attempt: u32) -> Duration {
    let step = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(BACKOFF_CAP);
    rand::thread_rng().gen_range(Duration::ZERO..=step)
}

/// Throttling that is given up on carries the wait the client should observe.
fn with_wait(mut error: GraphError, wait: Duration) -> GraphError {
    if let ErrorKind::Throttled { retry_after } = &mut error.kind {
        *retry_after = Some(retry_after.unwrap_or(wait).max(wait));
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttled(secs: u64) -> GraphError {
        GraphError::new(
            "importing",
            ErrorKind::Throttled {
                retry_after: Some(Duration::from_secs(secs)),
            },
        )
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..40 {
            let wait = backoff(attempt);
            assert!(wait <= BACKOFF_CAP);
            assert!(wait <= BACKOFF_BASE * 2u32.pow(attempt.min(6)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_waited_for_when_it_fits() {
        let context = CallContext::new("r", RetryPolicy::default());
        let started = Instant::now();
        context.before_retry(throttled(7), 1).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_beyond_the_budget_gives_up_at_once_with_the_wait() {
        let context = CallContext::new("r", RetryPolicy::default());
        let started = Instant::now();
        let error = context.before_retry(throttled(120), 1).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(120)));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded() {
        let policy = RetryPolicy {
            max_attempts: 2,
            budget: Duration::from_secs(60),
        };
        let context = CallContext::new("r", policy);
        context.before_retry(throttled(1), 1).await.unwrap();
        let error = context.before_retry(throttled(1), 2).await.unwrap_err();
        assert!(matches!(error.kind, ErrorKind::Throttled { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_that_may_have_reached_the_upstream_are_not_retried() {
        let context = CallContext::new("r", RetryPolicy::default());
        let unknown = GraphError::new("importing", ErrorKind::OutcomeUnknown { timed_out: true });
        assert!(context.before_retry(unknown, 1).await.is_err());
        let unsent = GraphError::new(
            "importing",
            ErrorKind::Unreachable {
                sent: false,
                reason: "connection refused".into(),
            },
        );
        context.before_retry(unsent, 1).await.unwrap();
    }
}
