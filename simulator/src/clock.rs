//! Owns the simulator's sense of "now", so tests can move it forward with
//! [`Simulator::advance`](super::Simulator::advance) instead of waiting.
//!
//! The simulator reads time in two ways, and both go through [`Clock`]:
//!
//! - **Expiries** (access tokens, import sessions) are [`tokio::time::Instant`]s, so a test that pauses
//!   and advances tokio's clock (`tokio::time::pause`, `tokio::time::advance`) moves them together
//!   with the timers of a client running in the same runtime.
//! - **Dates on the wire** (the `exp` and `nbf` of client assertions, `expirationDateTime`,
//!   `Retry-After` dates, the timestamps in error bodies) are wall-clock time, read from the system
//!   clock as Entra and Graph do; tokio's paused clock does not move them.
//!
//! One offset, which only grows, is added to both readings: after `advance(d)` the simulator behaves as
//! a service whose clock runs `d` ahead of its clients'. That moves the simulator alone, so it also
//! works when the client runs in another process or another runtime. Waits are not readings:
//! `Behaviour::latency_ms` and `Fault::Delay` sleep on tokio's timer, which the offset leaves alone.
//!
//! Nothing else in the crate may read a clock; `clippy.toml` bans the direct calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// "Now" for one simulator instance: tokio's clock and the system clock, plus an offset.
///
/// The offset is an atomic rather than state behind the simulator's lock, so handlers read the time
/// without taking that lock.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    /// How far this simulator's clock runs ahead of tokio's and the system's, in nanoseconds.
    offset_nanos: AtomicU64,
}

impl Clock {
    /// Now, for expiries.
    #[allow(clippy::disallowed_methods)] // The one place that reads tokio's clock.
    pub fn now(&self) -> Instant {
        Instant::now() + self.offset()
    }

    /// Now, for dates that go on the wire or are compared with dates that came from it.
    #[allow(clippy::disallowed_methods)] // The one place that reads the system clock.
    pub fn wall(&self) -> DateTime<Utc> {
        // The offset is below 2^64 ns (585 years), which a `TimeDelta` always holds.
        Utc::now() + chrono::Duration::from_std(self.offset()).expect("an offset fits a TimeDelta")
    }

    /// Moves both readings forward by `by` (saturating at 2^64 ns, about 585 years).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // `fetch_update` with a closure that always returns Some cannot fail.
        let _ = self
            .offset_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |offset| {
                Some(offset.saturating_add(by))
            });
    }

    /// How far the clock has been advanced in all.
    pub fn offset(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn both_readings_move_by_the_offset_and_instants_follow_tokios_clock() {
        let clock = Clock::default();
        let (instant, wall) = (clock.now(), clock.wall());
        clock.advance(Duration::from_secs(3600));
        assert_eq!(clock.now() - instant, Duration::from_secs(3600));
        let moved = (clock.wall() - wall).num_seconds();
        assert!((3600..=3601).contains(&moved), "{moved} s");

        // A paused tokio clock that advances moves expiries, not dates.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(clock.now() - instant, Duration::from_secs(3660));
        assert_eq!(clock.offset(), Duration::from_secs(3600));
    }

    #[test]
    fn the_offset_saturates_instead_of_wrapping() {
        let clock = Clock::default();
        clock.advance(Duration::MAX);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.offset(), Duration::from_nanos(u64::MAX));
    }
}
