//! Caps the item bytes held in memory across all requests, so no load can run the gateway out of memory.
//!
//! Each byte of a request body the gateway buffers is a permit of one semaphore sized to
//! `MAILBOX_GATEWAY_MEMORY_BUDGET`. A request that announces its size takes all its permits before
//! reading; a chunked upload takes them as its chunks arrive. Permits are held until the import has been
//! answered. When the budget is full, a request waits briefly, then is told to come back later.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shared budget. A cheap `Clone` handle.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total: usize,
    /// How long a request waits for room before it is refused.
    wait: Duration,
}

/// Bytes of the budget held by one request; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

/// Why bytes could not be reserved.
#[derive(Debug, PartialEq, Eq)]
pub enum BudgetError {
    /// The request alone is larger than the whole budget: it can never fit.
    LargerThanBudget { total: usize },
    /// The budget stayed full for the whole wait.
    Full,
}

impl MemoryBudget {
    /// A budget of `total` bytes; a request waits at most `wait` for room.
    pub fn new(total: usize, wait: Duration) -> MemoryBudget {
        MemoryBudget {
            permits: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            total,
            wait,
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
        Reservation { permit: None }
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
        let permit =
            tokio::time::timeout(self.wait, self.permits.clone().acquire_many_owned(wanted))
                .await
                .map_err(|_| BudgetError::Full)?
                .expect("the budget semaphore is never closed");
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
        if let Some(permit) = &mut self.permit {
            if permit.num_permits() > keep {
                drop(permit.split(permit.num_permits() - keep));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

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
