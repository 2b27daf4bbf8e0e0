//! Caps the item bytes held in memory across all requests, so no load can run the gateway out of memory.
//!
//! Each byte of a request body the gateway buffers is a permit of one semaphore sized to
//! `MAILBOX_GATEWAY_MEMORY_BUDGET`. A small request that announces its size takes all its permits before
//! reading; a large one, like a chunked upload, takes them as its bytes arrive, so a client that
//! announces much and sends little holds little. Permits are held until the import has been answered.
//! When the budget is full, a request waits briefly, then is told to come back later.
//!
//! No client may hold more than its share of the budget (`MAILBOX_GATEWAY_CLIENT_BUDGET_SHARE`) while
//! it holds anything else: one client's uploads cannot starve the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shared budget. A cheap `Clone` handle.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total: usize,
    /// How long a request waits for room before it is refused.
    wait: Duration,
    /// The most one client may hold while it holds anything else.
    client_share: usize,
    /// Bytes held per client. A std `Mutex`: held for a check and an update, never across an await.
    per_client: Arc<ClientCounts>,
}

/// Bytes held per client.
type ClientCounts = Mutex<HashMap<Arc<str>, usize>>;

/// Bytes of the budget held by one request; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    /// Whose bytes they are, and the budget's per-client counts to give them back to.
    client: Option<(Arc<str>, Arc<ClientCounts>)>,
}

/// Why bytes could not be reserved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BudgetError {
    /// The request alone is larger than the whole budget: it can never fit.
    LargerThanBudget { total: usize },
    /// The budget stayed full for the whole wait.
    Full,
    /// The client already holds its share of the budget.
    ClientShare { share: usize },
}

impl MemoryBudget {
    /// A budget of `total` bytes; a request waits at most `wait` for room.
    pub fn new(total: usize, wait: Duration) -> MemoryBudget {
        MemoryBudget::with_client_share(total, wait, 100)
    }

    /// A budget of `total` bytes of which one client may hold `share_percent`% while it holds anything
    /// else.
    pub fn with_client_share(total: usize, wait: Duration, share_percent: u8) -> MemoryBudget {
        MemoryBudget {
            permits: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            total,
            wait,
            client_share: total / 100 * usize::from(share_percent.min(100)),
            per_client: Arc::default(),
        }
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// An empty reservation, to grow as a body arrives.
    pub fn empty(&self) -> Reservation {
        Reservation {
            permit: None,
            client: None,
        }
    }

    /// An empty reservation counted against `client`'s share.
    pub fn empty_for(&self, client: &str) -> Reservation {
        Reservation {
            permit: None,
            client: Some((Arc::from(client), self.per_client.clone())),
        }
    }

    /// Adds `bytes` to `reservation`, waiting a little for room.
    pub async fn grow(
        &self,
        reservation: &mut Reservation,
        bytes: usize,
    ) -> Result<(), BudgetError> {
        if bytes == 0 {
            return Ok(());
        }
        let held = reservation.bytes();
        if held + bytes > self.total {
            return Err(BudgetError::LargerThanBudget { total: self.total });
        }
        let wanted = u32::try_from(bytes)
            .map_err(|_| BudgetError::LargerThanBudget { total: self.total })?;
        // Counted against the client's share first (atomically), given back if no room comes.
        if let Some((client, counts)) = &reservation.client {
            let mut counts = counts.lock().expect("budget counts poisoned");
            let holding = counts.entry(client.clone()).or_insert(0);
            // Beyond the share only while this request is the client's only one.
            let elsewhere = *holding - held.min(*holding);
            if elsewhere > 0 && *holding + bytes > self.client_share {
                return Err(BudgetError::ClientShare {
                    share: self.client_share,
                });
            }
            *holding += bytes;
        }
        let permit =
            match tokio::time::timeout(self.wait, self.permits.clone().acquire_many_owned(wanted))
                .await
            {
                Ok(permit) => permit.expect("the budget semaphore is never closed"),
                Err(_) => {
                    reservation.count_down(bytes);
                    return Err(BudgetError::Full);
                }
            };
        match &mut reservation.permit {
            Some(current) => current.merge(permit),
            None => reservation.permit = Some(permit),
        }
        Ok(())
    }
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Gives back all but `keep` bytes (after a body shrank, such as base64 decoded into its item).
    pub fn shrink_to(&mut self, keep: usize) {
        let mut given_back = 0;
        if let Some(permit) = &mut self.permit {
            if permit.num_permits() > keep {
                given_back = permit.num_permits() - keep;
                drop(permit.split(given_back));
            }
        }
        self.count_down(given_back);
    }

    /// Adds what `other` holds to this reservation; both must be counted as the same client's.
    pub fn merge(&mut self, mut other: Reservation) {
        debug_assert_eq!(
            self.client.as_ref().map(|(name, _)| name),
            other.client.as_ref().map(|(name, _)| name)
        );
        match (&mut self.permit, other.permit.take()) {
            (Some(current), Some(more)) => current.merge(more),
            (None, more) => self.permit = more,
            (Some(_), None) => {}
        }
    }

    /// Takes `bytes` off the client's count.
    fn count_down(&self, bytes: usize) {
        if let Some((client, counts)) = &self.client {
            let mut counts = counts.lock().expect("budget counts poisoned");
            if let Some(holding) = counts.get_mut(client) {
                *holding = holding.saturating_sub(bytes);
                if *holding == 0 {
                    counts.remove(client);
                }
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.count_down(self.bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_client_holds_at_most_its_share_while_it_holds_anything_else() {
        let budget = MemoryBudget::with_client_share(1000, Duration::ZERO, 50);
        let mut first = budget.empty_for("noisy");
        budget.grow(&mut first, 400).await.unwrap();
        let mut second = budget.empty_for("noisy");
        assert_eq!(
            budget.grow(&mut second, 200).await,
            Err(BudgetError::ClientShare { share: 500 })
        );
        // Another client is not held back by it.
        let mut other = budget.empty_for("quiet");
        budget.grow(&mut other, 400).await.unwrap();
        // Alone, a request may use more than the share; the counts follow shrinks and drops.
        drop(first);
        budget.grow(&mut second, 600).await.unwrap();
        second.shrink_to(100);
        let mut third = budget.empty_for("noisy");
        budget.grow(&mut third, 300).await.unwrap();
        drop((second, third, other));
        assert_eq!(budget.available(), 1000);
        assert!(budget.per_client.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_wait_briefly_for_room_then_give_up() {
        let budget = MemoryBudget::new(100, WAIT);
        let mut first = budget.empty();
        budget.grow(&mut first, 60).await.unwrap();
        budget.grow(&mut first, 30).await.unwrap();
        assert_eq!((first.bytes(), budget.available()), (90, 10));

        let mut second = budget.empty();
        let started = tokio::time::Instant::now();
        assert_eq!(budget.grow(&mut second, 20).await, Err(BudgetError::Full));
        assert_eq!(started.elapsed(), WAIT);

        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move {
                let mut third = budget.empty();
                budget.grow(&mut third, 20).await.map(|()| third.bytes())
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        first.shrink_to(50);
        assert_eq!(waiter.await.unwrap(), Ok(20));
        drop(first);
        assert_eq!(budget.available(), 100);
    }

    #[tokio::test]
    async fn a_request_larger_than_the_whole_budget_is_refused_at_once() {
        let budget = MemoryBudget::new(100, WAIT);
        let mut reservation = budget.empty();
        assert_eq!(
            budget.grow(&mut reservation, 101).await,
            Err(BudgetError::LargerThanBudget { total: 100 })
        );
        budget.grow(&mut reservation, 80).await.unwrap();
        assert_eq!(
            budget.grow(&mut reservation, 30).await,
            Err(BudgetError::LargerThanBudget { total: 100 })
        );
    }
}
