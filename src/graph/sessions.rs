//! Keeps one import session per mailbox, renews it before it expires, and creates it once however many
//! requests race for it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use url::Url;

use super::per_mailbox::PerMailbox;
use crate::clock::Clock;
use crate::refresh::RefreshSlot;

/// Renew a session this long before its `expirationDateTime` (at most; a short-lived session is renewed
/// after three quarters of its life instead), so an item is never sent on a session about to lapse.
pub const SESSION_RENEW_MARGIN: Duration = Duration::from_secs(60);

/// An import session: a pre-authenticated `importUrl` and when to stop using it.
#[derive(Clone)]
pub struct ImportSession {
    /// The importUrl, parsed once; its `authtoken` query parameter is a bearer credential, so this type's
    /// `Debug` never prints it and nothing else exposes it but [`ImportSession::url`].
    url: Arc<Url>,
    renew_at: Instant,
}

impl ImportSession {
    /// A session whose `importUrl` expires `lifetime` after `now`.
    pub fn new(import_url: &Url, lifetime: Duration, now: Instant) -> ImportSession {
        ImportSession {
            url: Arc::new(import_url.clone()),
            renew_at: now + lifetime - SESSION_RENEW_MARGIN.min(lifetime / 4),
        }
    }

    /// The importUrl, to post to. Never log it.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Whether the session is still good to send an item on at `now` (not within its renewal margin).
    pub fn is_fresh_at(&self, now: Instant) -> bool {
        now < self.renew_at
    }

    fn same_as(&self, other: &ImportSession) -> bool {
        Arc::ptr_eq(&self.url, &other.url)
    }
}

impl std::fmt::Debug for ImportSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportSession")
            .field("url", &"[REDACTED]")
            .field("renew_at", &self.renew_at)
            .finish()
    }
}

/// The import sessions of all mailboxes; each mailbox's slot refreshes single-flight.
#[derive(Debug, Default)]
pub struct SessionCache {
    slots: PerMailbox<RefreshSlot<ImportSession>>,
    /// What "before it expires" is measured by.
    clock: Clock,
}

impl SessionCache {
    /// No sessions yet; their renewal measured by `clock`.
    pub fn new(clock: Clock) -> SessionCache {
        SessionCache {
            slots: PerMailbox::default(),
            clock,
        }
    }

    /// The mailbox's current session, or a new one from `create` (called once however many race).
    pub async fn get<E, Fut>(
        &self,
        mailbox_id: &str,
        create: impl FnOnce() -> Fut,
    ) -> Result<ImportSession, E>
    where
        Fut: std::future::Future<Output = Result<ImportSession, E>>,
    {
        self.slot(mailbox_id)
            .get_or_refresh(|session| session.is_fresh_at(self.clock.now()), create)
            .await
    }

    /// Drops `session` because the importUrl refused it, unless it has been replaced already.
    pub fn invalidate(&self, mailbox_id: &str, session: &ImportSession) {
        self.slot(mailbox_id)
            .invalidate_if(|current| current.same_as(session));
    }

    fn slot(&self, mailbox_id: &str) -> Arc<RefreshSlot<ImportSession>> {
        self.slots.get(mailbox_id, RefreshSlot::new)
    }
}
