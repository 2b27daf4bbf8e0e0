//! The gateway's clock for deciding when tokens and import sessions are due for renewal: tokio's
//! `Instant` plus an offset that only tests move.
//!
//! The gateway serves on worker threads with runtimes of their own (`server::Workers`), whose clocks a
//! test cannot pause, so tests that need the renewal point to pass advance this clock instead, together
//! with the simulator's (`Simulator::advance`), and no test waits in real time for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// A cheap `Clone` handle; every clone reads the same offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_nanos: Arc<AtomicU64>,
}

impl Clock {
    /// Now, as the gateway reckons it.
    pub fn now(&self) -> Instant {
        Instant::now() + Duration::from_nanos(self.offset_nanos.load(Ordering::Relaxed))
    }

    /// Moves this clock forward (tests only: in production nothing calls it).
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_offset() {
        let clock = Clock::default();
        let other = clock.clone();
        let before = clock.now();
        other.advance(Duration::from_secs(60));
        assert!(clock.now() >= before + Duration::from_secs(60));
    }
}
