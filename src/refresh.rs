//! Holds one cached value (a token, an import session) and refreshes it single-flight.
//!
//! Readers load the current value through an `ArcSwap`, without a lock, so a tenant's token, which every
//! request of every mailbox reads, is not a point all requests contend on. Refreshing takes a tokio
//! `Mutex` that is held across the upstream call, so that a hundred requests arriving with no usable value
//! cause one refresh while the other ninety-nine wait for its result instead of each asking the upstream.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// A slot for one value that goes stale, with single-flight refresh.
#[derive(Debug)]
pub struct RefreshSlot<T> {
    current: ArcSwapOption<T>,
    refreshing: tokio::sync::Mutex<()>,
}

impl<T> Default for RefreshSlot<T> {
    fn default() -> Self {
        RefreshSlot {
            current: ArcSwapOption::empty(),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }
}

impl<T: Clone> RefreshSlot<T> {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the current value if `usable` accepts it, else runs `refresh` (once, however many callers
    /// race) and stores its result.
    ///
    /// A failed refresh stores nothing; the next waiter tries again. A caller cancelled while refreshing
    /// releases the refresh lock, and the next waiter takes over.
    pub async fn get_or_refresh<E, Fut>(
        &self,
        usable: impl Fn(&T) -> bool,
        refresh: impl FnOnce() -> Fut,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(value) = self.usable(&usable) {
            return Ok(value);
        }
        let _refreshing = self.refreshing.lock().await;
        // Whoever held the lock before us may have refreshed already.
        if let Some(value) = self.usable(&usable) {
            return Ok(value);
        }
        let value = refresh().await?;
        self.current.store(Some(Arc::new(value.clone())));
        Ok(value)
    }

    /// Drops the current value if `is_stale` says so, typically because the upstream refused it.
    /// Comparing first keeps a value that another caller has already refreshed.
    pub fn invalidate_if(&self, is_stale: impl Fn(&T) -> bool) {
        self.current.rcu(|current| match current {
            Some(value) if is_stale(value) => None,
            other => other.clone(),
        });
    }

    fn usable(&self, usable: &impl Fn(&T) -> bool) -> Option<T> {
        let current = self.current.load();
        current.as_deref().filter(|value| usable(value)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn racing_callers_cause_one_refresh() {
        let slot = Arc::new(RefreshSlot::<u32>::new());
        let refreshes = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..100)
            .map(|_| {
                let (slot, refreshes) = (slot.clone(), refreshes.clone());
                tokio::spawn(async move {
                    slot.get_or_refresh(
                        |_| true,
                        || async {
                            refreshes.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, ()>(7)
                        },
                    )
                    .await
                })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), Ok(7));
        }
        assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn stale_values_are_refreshed_and_invalidation_compares_first() {
        let slot = RefreshSlot::<u32>::new();
        let one: Result<u32, ()> = slot.get_or_refresh(|_| true, || async { Ok(1) }).await;
        assert_eq!(one, Ok(1));
        let two: Result<u32, ()> = slot.get_or_refresh(|v| *v > 1, || async { Ok(2) }).await;
        assert_eq!(two, Ok(2));
        slot.invalidate_if(|v| *v == 1);
        let still: Result<u32, ()> = slot.get_or_refresh(|_| true, || async { Ok(3) }).await;
        assert_eq!(still, Ok(2));
        slot.invalidate_if(|v| *v == 2);
        let failed: Result<u32, &str> = slot
            .get_or_refresh(|_| true, || async { Err("down") })
            .await;
        assert_eq!(failed, Err("down"));
        let after: Result<u32, ()> = slot.get_or_refresh(|_| true, || async { Ok(4) }).await;
        assert_eq!(after, Ok(4));
    }
}
