//! Keeps each mailbox's upstream traffic inside Outlook's limits: a fair queue with a bounded number of
//! requests in flight, a hold while the mailbox is throttled, and upload pacing.
//!
//! Outlook allows 4 concurrent requests and 150 MB of uploads per 5 minutes per app and mailbox, and one
//! throttled mailbox does not slow the others. So every upstream request about a mailbox first takes one
//! of that mailbox's permits (tokio's semaphore queues waiters first in, first out), and a `429` with
//! `Retry-After` holds the whole mailbox until the time has passed instead of letting each queued request
//! run into the same wall. Other mailboxes have their own gates.
//!
//! With a shared store, the limit, the hold and the upload window are the mailbox's across all replicas.
//! A request first takes its replica's local permit (at most the limit queue there, first in, first out),
//! then a permit in the store with one script call: the script reaps permits whose leases ran out (a dead
//! replica's, within the lease), gives the waiter a ticket in the mailbox's queue on its first call and
//! keeps it on later ones, and grants a permit to the waiters whose tickets are among the free permits.
//! So across replicas, requests are served in the order they reached the front of their replica's queue,
//! and no replica starves another. A waiter polls (and is woken when its own replica frees a permit);
//! a permit's lease is renewed while it is held. A permit let go of is given back inside the mailbox's
//! next call from this replica, so a busy mailbox costs one round trip per request, or on its own within
//! a few milliseconds when no call comes (well inside a waiter's poll of 20-40 ms). While the store is
//! unreachable, each replica falls back to a local limit of its own
//! (`MAILBOX_GATEWAY_DEGRADED_MAILBOX_CONCURRENCY`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};
use std::time::Duration;

use rand::Rng;
use redis::Script;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::per_mailbox::PerMailbox;
use super::{CallContext, ErrorKind, GraphError};
use crate::config::Pacing;
use crate::metrics::Metrics;
use crate::store::{SharedStore, NOW};

/// The window over which uploads are paced.
const UPLOAD_WINDOW: Duration = Duration::from_secs(5 * 60);
/// `Retry-After` suggested to a client whose request waited too long for its mailbox's turn.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long a waiter keeps its ticket in a shared queue without polling.
const WAITER_LEASE: Duration = Duration::from_secs(3);
/// The shortest pause between two polls of a shared queue; a random as much again is added.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// How long a permit given back on this replica may wait to ride along with the mailbox's next
/// `ACQUIRE` before it is sent on its own: well inside a waiter's poll (20-40 ms).
const GIVE_BACK_WITHIN: Duration = Duration::from_millis(5);

/// The gates of all mailboxes.
#[derive(Debug)]
pub struct MailboxPacer {
    settings: Pacing,
    metrics: Arc<Metrics>,
    gates: PerMailbox<Gate>,
    shared: Option<SharedPacing>,
}

/// The shared store, and the local limits used while it is unreachable.
#[derive(Debug)]
struct SharedPacing {
    store: Arc<SharedStore>,
    degraded_concurrency: usize,
    degraded: PerMailbox<Arc<Semaphore>>,
    held: Arc<HeldPermits>,
}

/// The shared permits this replica holds (id → its mailbox's holders key), renewed together by one task
/// every third of the lease instead of by a task per permit: most permits are given back long before.
/// A std `Mutex`: held for an insert, a remove or a copy, never across an await.
type HeldPermits = Mutex<HashMap<String, String>>;

/// One mailbox's gate on this replica. Its std `Mutex`es are held for a read or an update, never across
/// an await.
#[derive(Debug)]
struct Gate {
    permits: Arc<Semaphore>,
    held_until: Mutex<Option<Instant>>,
    /// Recent uploads: when, and how many bytes (without a shared store).
    uploads: Mutex<VecDeque<(Instant, u64)>>,
    /// Woken when this replica gives a shared permit back, so its waiters poll at once.
    freed: Notify,
    /// Shared permits given back here that the store has not heard of yet: the mailbox's next `ACQUIRE`
    /// from this replica carries them, or a flush sends them within [`GIVE_BACK_WITHIN`].
    given_back: Mutex<Vec<String>>,
    /// A flush of `given_back` is scheduled.
    flush_scheduled: AtomicBool,
    /// The mailbox's keys in the shared store, named once (each name hashes the mailbox id).
    keys: OnceLock<MailboxKeys>,
}

/// The right to send one request to a mailbox; dropping it lets the next one in.
#[derive(Debug)]
pub struct MailboxPermit {
    // Fields drop in order: the shared permit is given back before the local one lets a waiter in, so
    // that the waiter's `ACQUIRE` carries it.
    _extra: Option<Extra>,
    _local: OwnedSemaphorePermit,
}

/// What a permit holds besides its local place.
#[derive(Debug)]
#[allow(dead_code)] // Held for what their `Drop` does.
enum Extra {
    Shared(SharedPermit),
    /// Taken while the store was unreachable.
    Degraded(OwnedSemaphorePermit),
}

/// A permit in the shared store; renewed while held, given back when dropped.
#[derive(Debug)]
struct SharedPermit {
    store: Arc<SharedStore>,
    gate: Arc<Gate>,
    id: String,
    held: Arc<HeldPermits>,
}

/// The keys of one mailbox's shared state.
#[derive(Debug)]
struct MailboxKeys {
    holders: String,
    queue: String,
    waiters: String,
    tickets: String,
    hold: String,
    uploads: String,
    uploaded: String,
}

impl MailboxKeys {
    fn new(store: &SharedStore, mailbox_id: &str) -> MailboxKeys {
        let key = |name| store.key("mailbox", mailbox_id, name);
        MailboxKeys {
            holders: key("holders"),
            queue: key("queue"),
            waiters: key("waiters"),
            tickets: key("tickets"),
            hold: key("hold"),
            uploads: key("uploads"),
            uploaded: key("uploaded"),
        }
    }
}

/// Takes a mailbox's turn: first gives back the permits this replica let go of since its last call,
/// then honours a hold, reaps lapsed permits when the mailbox looks full, and grants a permit at once
/// when nobody is queued and one is free. Otherwise it reaps lapsed waiters, gives the caller a ticket in
/// the mailbox's queue (kept on later calls) and grants when the caller's ticket is among the free
/// permits. Before granting, it checks the upload window. KEYS: holders, queue, waiters, tickets, hold,
/// uploads, uploaded. ARGV: id, limit, lease ms, waiter lease ms, upload bytes, upload limit (0 = off),
/// window ms, then the permits given back. Answers `{state, milliseconds}`.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}{}",
        r#"
if #ARGV > 7 then redis.call('ZREM', KEYS[1], unpack(ARGV, 8)) end
local held = tonumber(redis.call('GET', KEYS[5]) or '0')
if held > now then return {'held', held - now} end
local limit = tonumber(ARGV[2])
local idle = tonumber(ARGV[3]) + 60000
local queued = false
-- Lapsed permits matter only when the mailbox looks full.
local holding = redis.call('ZCARD', KEYS[1])
if holding >= limit then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  holding = redis.call('ZCARD', KEYS[1])
end
if holding >= limit or redis.call('ZCARD', KEYS[2]) > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  if #gone > 0 then
    redis.call('ZREM', KEYS[2], unpack(gone))
    redis.call('ZREM', KEYS[3], unpack(gone))
  end
  if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
    redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[1])
  end
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[1])
  for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], idle) end
  local free = limit - redis.call('ZCARD', KEYS[1])
  if redis.call('ZRANK', KEYS[2], ARGV[1]) >= free then return {'queued', 0} end
  queued = true
end
local bytes = tonumber(ARGV[5])
if bytes > 0 and tonumber(ARGV[6]) > 0 then
  local window = tonumber(ARGV[7])
  local used = tonumber(redis.call('GET', KEYS[7]) or '0')
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now - window)) do
    used = used - tonumber(string.match(member, ':(%d+)$'))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - window)
  if used < 0 or redis.call('ZCARD', KEYS[6]) == 0 then used = 0 end
  if used > 0 and used + bytes > tonumber(ARGV[6]) then
    redis.call('SET', KEYS[7], used, 'PX', window)
    if queued then
      redis.call('ZREM', KEYS[2], ARGV[1])
      redis.call('ZREM', KEYS[3], ARGV[1])
    end
    local oldest = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
    return {'upload', tonumber(oldest[2]) + window - now}
  end
  redis.call('ZADD', KEYS[6], now, ARGV[1] .. ':' .. bytes)
  redis.call('SET', KEYS[7], used + bytes, 'PX', window)
  redis.call('PEXPIRE', KEYS[6], window)
end
if queued then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], idle)
return {'granted', 0}
"#
    ))
});

// A permit is given back inside the mailbox's next `ACQUIRE` from the same replica, or with a plain
// `ZREM holders id...` (one command, atomic without a script) when none comes within GIVE_BACK_WITHIN.

/// Leaves the queue without a permit. KEYS: queue, waiters. ARGV: id.
static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new("redis.call('ZREM', KEYS[1], ARGV[1])\nreturn redis.call('ZREM', KEYS[2], ARGV[1])")
});

/// Extends a held permit's lease; 0 if it had lapsed. KEYS: holders. ARGV: id, lease ms.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}{}",
        r#"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
"#
    ))
});

/// Holds a mailbox until now + ARGV[1] ms, unless it is already held longer. KEYS: hold.
static HOLD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}{}",
        r#"
local until_ms = now + tonumber(ARGV[1])
if until_ms > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], until_ms, 'PXAT', until_ms)
end
return 1
"#
    ))
});

impl MailboxPacer {
    /// Pacing for every mailbox with these settings, on this replica alone.
    pub fn new(settings: Pacing, metrics: Arc<Metrics>) -> MailboxPacer {
        MailboxPacer {
            settings,
            metrics,
            gates: PerMailbox::default(),
            shared: None,
        }
    }

    /// Pacing shared with every replica through `store`; `degraded_concurrency` per mailbox while it is
    /// unreachable.
    pub fn shared(
        settings: Pacing,
        metrics: Arc<Metrics>,
        store: Arc<SharedStore>,
        degraded_concurrency: usize,
    ) -> MailboxPacer {
        let held = Arc::new(HeldPermits::default());
        tokio::spawn(renew_held(
            store.clone(),
            Arc::downgrade(&held),
            settings.permit_lease,
        ));
        MailboxPacer {
            shared: Some(SharedPacing {
                store,
                degraded_concurrency: degraded_concurrency.max(1),
                degraded: PerMailbox::default(),
                held,
            }),
            ..MailboxPacer::new(settings, metrics)
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
        let busy = |wait| GraphError::new(action(), ErrorKind::MailboxBusy { retry_after: wait });
        gate.hold_within(context).map_err(throttled)?;
        let local_uploads = self.shared.is_none() && self.settings.upload_bytes_per_5_min > 0;
        if upload_bytes > 0 && local_uploads {
            self.reserve_upload(&gate, upload_bytes, context)
                .await
                .map_err(busy)?;
        }
        let give_up = Instant::now()
            + self
                .settings
                .queue_timeout
                .min(context.deadline().saturating_duration_since(Instant::now()));
        let local = tokio::time::timeout_at(give_up, gate.permits.clone().acquire_owned())
            .await
            .map_err(|_| busy(BUSY_RETRY_AFTER))?
            .expect("mailbox semaphores are never closed");
        let extra = match &self.shared {
            None => None,
            Some(shared) => Some(
                self.acquire_shared(shared, &gate, mailbox_id, upload_bytes, give_up, context)
                    .await?,
            ),
        };
        // A 429 may have arrived while this request queued; everyone waits it out, holding their turn.
        if let Some(wait) = gate.hold_within(context).map_err(throttled)? {
            tokio::time::sleep(wait).await;
        }
        self.metrics.queue_waited(started.elapsed());
        Ok(MailboxPermit {
            _local: local,
            _extra: extra,
        })
    }

    /// Takes a permit in the shared store, or a degraded local one while the store is unreachable.
    async fn acquire_shared(
        &self,
        shared: &SharedPacing,
        gate: &Arc<Gate>,
        mailbox_id: &str,
        upload_bytes: u64,
        give_up: Instant,
        context: &CallContext,
    ) -> Result<Extra, GraphError> {
        let action = || format!("waiting for {mailbox_id}'s turn");
        let store = &shared.store;
        let keys = gate
            .keys
            .get_or_init(|| MailboxKeys::new(store, mailbox_id));
        let id = store.holder_name();
        let mut queued = Queued {
            store,
            keys,
            id: &id,
            left: false,
        };
        loop {
            let freed = gate.freed.notified();
            let given_back = gate.take_given_back();
            let answer: Result<(String, u64), _> = store
                .run(
                    ACQUIRE
                        .key(&keys.holders)
                        .key(&keys.queue)
                        .key(&keys.waiters)
                        .key(&keys.tickets)
                        .key(&keys.hold)
                        .key(&keys.uploads)
                        .key(&keys.uploaded)
                        .arg(&id)
                        .arg(self.settings.mailbox_concurrency.max(1))
                        .arg(millis(self.settings.permit_lease))
                        .arg(millis(WAITER_LEASE))
                        .arg(upload_bytes)
                        .arg(self.settings.upload_bytes_per_5_min)
                        .arg(millis(UPLOAD_WINDOW))
                        .arg(&given_back),
                )
                .await;
            let (state, millis) = match answer {
                Ok(answer) => answer,
                Err(_) => {
                    // Kept for the next call; if the store stays away, their leases run out instead.
                    gate.given_back
                        .lock()
                        .expect("gate poisoned")
                        .extend(given_back);
                    queued.left = true;
                    return self
                        .acquire_degraded(shared, mailbox_id, give_up, action)
                        .await;
                }
            };
            let wait = Duration::from_millis(millis);
            match state.as_str() {
                "granted" => {
                    queued.left = true;
                    shared
                        .held
                        .lock()
                        .expect("held permits poisoned")
                        .insert(id.clone(), keys.holders.clone());
                    return Ok(Extra::Shared(SharedPermit {
                        store: store.clone(),
                        gate: gate.clone(),
                        id: id.clone(),
                        held: shared.held.clone(),
                    }));
                }
                "held" if !context.can_wait(wait) => {
                    return Err(GraphError::new(
                        action(),
                        ErrorKind::Throttled {
                            retry_after: Some(wait),
                        },
                    ))
                }
                "held" => tokio::time::sleep(wait).await,
                "upload" if !context.can_wait(wait) => {
                    return Err(GraphError::new(
                        action(),
                        ErrorKind::MailboxBusy { retry_after: wait },
                    ))
                }
                "upload" => {
                    tracing::info!(
                        wait_ms = wait.as_millis() as u64,
                        "pacing uploads to the mailbox"
                    );
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    if Instant::now() >= give_up {
                        return Err(GraphError::new(
                            action(),
                            ErrorKind::MailboxBusy {
                                retry_after: BUSY_RETRY_AFTER,
                            },
                        ));
                    }
                    let jitter = rand::thread_rng().gen_range(Duration::ZERO..=POLL_EVERY);
                    let poll = (Instant::now() + POLL_EVERY + jitter).min(give_up);
                    tokio::select! {
                        () = freed => {}
                        () = tokio::time::sleep_until(poll) => {}
                    }
                }
            }
        }
    }

    /// The local limit that stands in for the shared one while the store is unreachable.
    async fn acquire_degraded(
        &self,
        shared: &SharedPacing,
        mailbox_id: &str,
        give_up: Instant,
        action: impl Fn() -> String,
    ) -> Result<Extra, GraphError> {
        let semaphore = shared.degraded.get(mailbox_id, || {
            Arc::new(Semaphore::new(shared.degraded_concurrency))
        });
        let permit = tokio::time::timeout_at(give_up, (*semaphore).clone().acquire_owned())
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
        Ok(Extra::Degraded(permit))
    }

    /// Gives back at once the shared permits still waiting to ride along with a mailbox's next turn: for
    /// a replica about to stop, so that other replicas need not wait for the permits' leases.
    pub async fn give_back_now(&self) {
        if let Some(shared) = &self.shared {
            for gate in self.gates.all() {
                gate.send_given_back(&shared.store).await;
            }
        }
    }

    /// Holds every request to the mailbox for `wait`, because the upstream throttled it; with a shared
    /// store, on every replica (a later hold only ever moves the end later). The shared hold is written
    /// before this returns, so that no replica sends to the mailbox after the client heard of the hold.
    pub async fn hold(&self, mailbox_id: &str, wait: Duration) {
        let gate = self.gate(mailbox_id);
        let until = Instant::now() + wait;
        {
            let mut held = gate.held_until.lock().expect("gate poisoned");
            if held.is_none_or(|current| current < until) {
                *held = Some(until);
            }
        }
        if let Some(shared) = &self.shared {
            let key = &gate
                .keys
                .get_or_init(|| MailboxKeys::new(&shared.store, mailbox_id))
                .hold;
            // Unreachable: this replica holds the mailbox alone, as in degraded mode it paces alone.
            let _ = shared
                .store
                .run::<i64>(HOLD.key(key).arg(millis(wait)))
                .await;
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
            freed: Notify::new(),
            given_back: Mutex::new(Vec::new()),
            flush_scheduled: AtomicBool::new(false),
            keys: OnceLock::new(),
        })
    }
}

/// A waiter's place in a shared queue; leaves it when the wait ends without a permit, so the waiters
/// behind do not wait for its ticket to lapse.
struct Queued<'a> {
    store: &'a Arc<SharedStore>,
    keys: &'a MailboxKeys,
    id: &'a str,
    left: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.left {
            return;
        }
        let (store, queue, waiters, id) = (
            self.store.clone(),
            self.keys.queue.clone(),
            self.keys.waiters.clone(),
            self.id.to_owned(),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = store
                    .run::<i64>(LEAVE.key(&queue).key(&waiters).arg(&id))
                    .await;
            });
        }
    }
}

impl Drop for SharedPermit {
    /// Gives the permit back: at once on this replica (its waiters are woken, and the first one's
    /// `ACQUIRE` carries it to the store), and in the store within [`GIVE_BACK_WITHIN`] in any case.
    fn drop(&mut self) {
        self.held
            .lock()
            .expect("held permits poisoned")
            .remove(&self.id);
        let gate = &self.gate;
        gate.given_back
            .lock()
            .expect("gate poisoned")
            .push(std::mem::take(&mut self.id));
        gate.freed.notify_waiters();
        if gate.flush_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(flush_given_back(self.store.clone(), gate.clone()));
            }
            // No runtime (the process is ending): the permit's lease runs out instead.
            Err(_) => gate.flush_scheduled.store(false, Ordering::Release),
        }
    }
}

/// Sends the permits given back on this replica that no `ACQUIRE` carried within [`GIVE_BACK_WITHIN`].
async fn flush_given_back(store: Arc<SharedStore>, gate: Arc<Gate>) {
    tokio::time::sleep(GIVE_BACK_WITHIN).await;
    // Cleared before taking the list: a permit given back from here on schedules a flush of its own.
    gate.flush_scheduled.store(false, Ordering::Release);
    gate.send_given_back(&store).await;
}

/// Renews the leases of the permits this replica holds, every third of the lease, until the pacer is
/// dropped.
async fn renew_held(store: Arc<SharedStore>, held: Weak<HeldPermits>, lease: Duration) {
    loop {
        tokio::time::sleep(lease / 3).await;
        let Some(held) = held.upgrade() else { return };
        let permits: Vec<(String, String)> = held
            .lock()
            .expect("held permits poisoned")
            .iter()
            .map(|(id, holders)| (id.clone(), holders.clone()))
            .collect();
        for (id, holders) in permits {
            let renewed = store
                .run::<i64>(RENEW.key(&holders).arg(&id).arg(millis(lease)))
                .await;
            // Not renewed because it was given back meanwhile is no news.
            let still_held = || {
                held.lock()
                    .expect("held permits poisoned")
                    .contains_key(&id)
            };
            if matches!(renewed, Ok(0)) && still_held() {
                tracing::warn!("a mailbox permit lapsed while held; the mailbox may briefly see one request more than its limit");
            }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().try_into().unwrap_or(u64::MAX)
}

impl Gate {
    /// The permits given back here that the store has not heard of yet; whoever takes them tells it.
    fn take_given_back(&self) -> Vec<String> {
        std::mem::take(&mut *self.given_back.lock().expect("gate poisoned"))
    }

    /// Tells the store of the permits given back here that it has not heard of yet, in one `ZREM`.
    async fn send_given_back(&self, store: &SharedStore) {
        let ids = self.take_given_back();
        let Some(keys) = self.keys.get().filter(|_| !ids.is_empty()) else {
            return;
        };
        // If this fails, the permits' leases run out instead.
        let _ = store
            .command::<i64>(redis::cmd("ZREM").arg(&keys.holders).arg(&ids))
            .await;
    }

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
                ..Pacing::default()
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
        pacer.hold("MBX:a@b", Duration::from_secs(3)).await;
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
        pacer.hold("MBX:a@b", Duration::from_secs(600)).await;
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
