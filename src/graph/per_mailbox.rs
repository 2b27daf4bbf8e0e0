//! Holds one shared value per mailbox (its session slot, its pacing gate), created on first use.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Values by mailbox id.
///
/// A std `RwLock` guards the map: it is held only to find or insert an entry, never across an await, so
/// mailboxes do not contend on it for more than a lookup. Entries are never removed: there is one per
/// mailbox the gateway has written to, which the tenant bounds.
#[derive(Debug)]
pub struct PerMailbox<T> {
    values: RwLock<HashMap<String, Arc<T>>>,
}

impl<T> Default for PerMailbox<T> {
    fn default() -> Self {
        PerMailbox {
            values: RwLock::new(HashMap::new()),
        }
    }
}

impl<T> PerMailbox<T> {
    /// The mailbox's value, made by `create` the first time.
    pub fn get(&self, mailbox_id: &str, create: impl FnOnce() -> T) -> Arc<T> {
        if let Some(value) = self
            .values
            .read()
            .expect("per-mailbox map poisoned")
            .get(mailbox_id)
        {
            return value.clone();
        }
        self.values
            .write()
            .expect("per-mailbox map poisoned")
            .entry(mailbox_id.to_owned())
            .or_insert_with(|| Arc::new(create()))
            .clone()
    }

    /// Every mailbox's value, as they are now.
    pub fn all(&self) -> Vec<Arc<T>> {
        let values = self.values.read().expect("per-mailbox map poisoned");
        values.values().cloned().collect()
    }
}
