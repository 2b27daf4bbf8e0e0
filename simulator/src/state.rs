//! Holds everything the simulated tenant knows: its app, users, mailboxes, folders, items, issued
//! tokens and import sessions, and the counters tests read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use jsonwebtoken::DecodingKey;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::behaviour::Traffic;
use super::clock::Clock;
use super::faults::FaultQueue;
use super::issuer::SigningKeys;
use super::stream;
use super::{Counters, SimulatorConfig, StoredItem, DEMO};

/// The object id of the demo user (the `id` in `settings/exchange`); not part of [`DEMO`] because
/// clients never need it.
const DEMO_USER_ID: &str = "3f6a1c2e-8b4d-4e7a-9c1f-5d2b8e0a7c34";

/// The standard folders every mailbox starts with: (well-known name, display name). The first one is
/// the root of the visible tree and the parent of all others.
const STANDARD_FOLDERS: [(&str, &str); 17] = [
    ("msgfolderroot", "Top of Information Store"),
    ("inbox", "Inbox"),
    ("sentitems", "Sent Items"),
    ("drafts", "Drafts"),
    ("deleteditems", "Deleted Items"),
    ("archive", "Archive"),
    ("junkemail", "Junk Email"),
    ("outbox", "Outbox"),
    ("conversationhistory", "Conversation History"),
    ("recoverableitemsdeletions", "Deletions"),
    ("scheduled", "Scheduled"),
    ("searchfolders", "Finder"),
    ("clutter", "Clutter"),
    ("conflicts", "Conflicts"),
    ("localfailures", "Local Failures"),
    ("serverfailures", "Server Failures"),
    ("syncissues", "Sync Issues"),
];

/// Shared state behind every handler and every [`super::Simulator`] handle.
///
/// The lock is a std `Mutex` because no code path awaits while holding it: handlers lock, read or
/// mutate, and unlock before building their response.
pub(crate) struct Shared {
    /// `http://127.0.0.1:PORT`, the one origin that plays all three Microsoft hosts.
    pub base_url: String,
    /// Every reading of the time, so that tests can move it (see module `clock`).
    pub clock: Clock,
    inner: Mutex<Inner>,
}

impl Shared {
    pub fn new(base_url: String, config: SimulatorConfig) -> Arc<Shared> {
        let traffic = Traffic::new(config.behaviour.seed);
        let mut inner = Inner {
            config,
            tenant_id: DEMO.tenant_id.to_owned(),
            app: App {
                client_id: DEMO.client_id.to_owned(),
                client_secret: DEMO.client_secret.to_owned(),
                certificates: Vec::new(),
                federated: Vec::new(),
                admin_consent: true,
                consent: HashMap::new(),
            },
            signing_keys: SigningKeys::built_in(),
            users: Vec::new(),
            mailboxes: Vec::new(),
            tokens: HashMap::new(),
            sessions: HashMap::new(),
            issued_credentials: Vec::new(),
            counters: Counters::default(),
            faults: FaultQueue::default(),
            traffic,
        };
        inner.create_user(
            DEMO_USER_ID.to_owned(),
            DEMO.mailbox_address,
            DEMO.mailbox_id.to_owned(),
        );
        Arc::new(Shared {
            base_url,
            clock: Clock::default(),
            inner: Mutex::new(inner),
        })
    }

    /// Locks the state. Never hold the guard across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind, still usable by a test harness.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url)
    }
}

/// The mutable part of the simulated tenant.
pub(crate) struct Inner {
    /// The configuration, kept current at run time: `config.behaviour` is the behaviour in force.
    pub config: SimulatorConfig,
    pub tenant_id: String,
    /// The one registered application (the demo app).
    pub app: App,
    /// The keys user access tokens are signed with (module `issuer`).
    pub signing_keys: SigningKeys,
    pub users: Vec<User>,
    /// Primary and archive mailboxes, in creation order.
    pub mailboxes: Vec<Mailbox>,
    /// Graph access token → its expiry and whom it acts for.
    pub tokens: HashMap<String, IssuedToken>,
    /// Import session authtoken → session.
    pub sessions: HashMap<String, Session>,
    /// Every access token and authtoken ever issued, so leak tests can search logs and bodies for them.
    pub issued_credentials: Vec<String>,
    pub counters: Counters,
    /// Faults scripted by tests, played by [`super::faults::intercept`].
    pub faults: FaultQueue,
    /// Random source and in-flight requests of the behaviour, played by [`super::behaviour::govern`].
    pub traffic: Traffic,
}

/// An app registration and the credentials it accepts.
pub(crate) struct App {
    pub client_id: String,
    pub client_secret: String,
    pub certificates: Vec<Certificate>,
    pub federated: Vec<FederatedIssuer>,
    /// Whether an administrator consented to the app's delegated permissions for every user.
    pub admin_consent: bool,
    /// User object id → that user's own consent, which overrides `admin_consent` either way.
    pub consent: HashMap<String, bool>,
}

impl App {
    /// Whether the app may act on behalf of the user `user_id` (the on-behalf-of grant).
    pub fn has_consent(&self, user_id: &str) -> bool {
        self.consent
            .get(user_id)
            .copied()
            .unwrap_or(self.admin_consent)
    }
}

/// A certificate credential, indexed by both thumbprints a client may name in its assertion header.
pub(crate) struct Certificate {
    pub sha1: [u8; 20],
    pub sha256: [u8; 32],
    /// PKCS#1 `RSAPublicKey` DER, straight from the certificate's SubjectPublicKeyInfo.
    pub public_key_der: Vec<u8>,
}

/// A federated identity credential: tokens from `issuer` about `subject`, signed by `key`.
pub(crate) struct FederatedIssuer {
    pub issuer: String,
    pub subject: String,
    pub key: DecodingKey,
}

/// A directory user with an Exchange mailbox.
pub(crate) struct User {
    pub id: String,
    pub address: String,
    pub primary_mailbox_id: String,
    pub archive_mailbox_id: Option<String>,
}

pub(crate) struct Mailbox {
    pub id: String,
    /// For an archive mailbox, the primary mailbox it belongs to.
    pub archive_of: Option<String>,
    /// Folders in creation order; the listing pages through them in this order.
    pub folders: Vec<Folder>,
    /// Items in creation order, which is also the order of their `created_at` (the clock only goes
    /// forward) and of their `seq`.
    pub items: Vec<StoredItem>,
    /// SHA-256 of each stored item's data → how many items hold that data now, to spot duplicates.
    digests: HashMap<[u8; 32], usize>,
    /// The `seq` of the next item created.
    next_seq: u64,
}

pub(crate) struct Folder {
    pub id: String,
    pub display_name: String,
    pub parent_folder_id: String,
    pub well_known_name: Option<&'static str>,
    pub class: &'static str,
}

/// An import session: its authtoken is the key of [`Inner::sessions`].
pub(crate) struct Session {
    pub mailbox_id: String,
    pub expires: Instant,
    /// Whom the token that created it acted for: a session created with a delegated token reaches
    /// only that user's mailboxes.
    pub principal: Principal,
}

/// A Graph access token we issued.
pub(crate) struct IssuedToken {
    pub expires: Instant,
    pub principal: Principal,
}

/// Whom a Graph access token acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Principal {
    /// The app itself (client credentials): application permissions, every mailbox.
    App,
    /// A user, through the on-behalf-of grant: delegated permissions, that user's own mailbox and
    /// archive only.
    User { user_id: String },
}

impl Inner {
    pub fn create_user(&mut self, id: String, address: &str, mailbox_id: String) {
        assert!(
            self.user(address).is_none(),
            "the simulator already has a user {address}"
        );
        self.mailboxes
            .push(Mailbox::with_standard_folders(mailbox_id.clone(), None));
        self.users.push(User {
            id,
            address: address.to_owned(),
            primary_mailbox_id: mailbox_id,
            archive_mailbox_id: None,
        });
    }

    /// Creates a user `address` with a fresh mailbox holding the standard folders and returns the
    /// mailbox id, or says why not: the address is taken (case-insensitive, as Entra treats UPNs).
    pub fn add_user(&mut self, address: &str) -> Result<String, String> {
        if self.user(address).is_some() {
            return Err(format!("the simulator already has a user {address}"));
        }
        let mailbox_id = new_mailbox_id(&self.tenant_id);
        self.create_user(new_user_id(), address, mailbox_id.clone());
        Ok(mailbox_id)
    }

    /// Finds a user by object id or by address (case-insensitive, as Entra treats UPNs).
    pub fn user(&self, id_or_upn: &str) -> Option<&User> {
        self.users.iter().find(|u| {
            u.id.eq_ignore_ascii_case(id_or_upn) || u.address.eq_ignore_ascii_case(id_or_upn)
        })
    }

    pub fn mailbox(&self, mailbox_id: &str) -> Option<&Mailbox> {
        self.mailboxes.iter().find(|m| m.id == mailbox_id)
    }

    pub fn mailbox_mut(&mut self, mailbox_id: &str) -> Option<&mut Mailbox> {
        self.mailboxes.iter_mut().find(|m| m.id == mailbox_id)
    }

    /// Creates an archive for a primary mailbox, or returns the one it already has.
    pub fn add_archive(&mut self, mailbox_id: &str) -> String {
        let tenant_id = self.tenant_id.clone();
        let user = self
            .users
            .iter_mut()
            .find(|u| u.primary_mailbox_id == mailbox_id)
            .unwrap_or_else(|| panic!("the simulator has no primary mailbox {mailbox_id}"));
        if let Some(existing) = &user.archive_mailbox_id {
            return existing.clone();
        }
        let archive_id = new_mailbox_id(&tenant_id);
        user.archive_mailbox_id = Some(archive_id.clone());
        self.mailboxes.push(Mailbox::with_standard_folders(
            archive_id.clone(),
            Some(mailbox_id.to_owned()),
        ));
        archive_id
    }

    /// The lifetime of access tokens issued now: the behaviour's override, else the configured one.
    pub fn token_lifetime(&self) -> Duration {
        self.config
            .behaviour
            .token_lifetime_secs
            .map_or(self.config.token_lifetime, Duration::from_secs)
    }

    /// The lifetime of import sessions created now: the behaviour's override, else the configured one.
    pub fn session_lifetime(&self) -> Duration {
        self.config
            .behaviour
            .session_lifetime_secs
            .map_or(self.config.session_lifetime, Duration::from_secs)
    }

    /// Issues an app (client credentials) Graph access token that expires after the current token
    /// lifetime, counted from `now`.
    pub fn issue_token(&mut self, now: Instant) -> String {
        let lifetime = self.token_lifetime();
        self.issue_token_for(Principal::App, now, lifetime)
    }

    /// Issues a Graph access token acting for `principal`, which expires `lifetime` after `now`.
    pub fn issue_token_for(
        &mut self,
        principal: Principal,
        now: Instant,
        lifetime: Duration,
    ) -> String {
        let token = random_token();
        let expires = now + lifetime;
        self.tokens
            .insert(token.clone(), IssuedToken { expires, principal });
        self.issued_credentials.push(token.clone());
        self.counters.tokens_issued += 1;
        token
    }

    /// Whom `token` acts for, if it was issued by us and is unrevoked and unexpired at `now`; expired
    /// tokens are forgotten.
    pub fn token_principal(
        &mut self,
        token: &str,
        now: Instant,
    ) -> Result<Principal, TokenProblem> {
        match self.tokens.get(token) {
            None => Err(TokenProblem::Unknown),
            Some(issued) if now >= issued.expires => {
                self.tokens.remove(token);
                Err(TokenProblem::Expired)
            }
            Some(issued) => Ok(issued.principal.clone()),
        }
    }

    /// Whether `principal` may reach `mailbox_id`: the app every mailbox, a user only their own
    /// primary mailbox and its archive.
    pub fn may_reach(&self, principal: &Principal, mailbox_id: &str) -> bool {
        match principal {
            Principal::App => true,
            Principal::User { user_id } => self.user(user_id).is_some_and(|user| {
                user.primary_mailbox_id == mailbox_id
                    || user.archive_mailbox_id.as_deref() == Some(mailbox_id)
            }),
        }
    }

    /// Opens an import session on `mailbox_id` for `principal` that expires after the current
    /// session lifetime, counted from `now`; returns its authtoken and lifetime.
    pub fn create_session(
        &mut self,
        mailbox_id: &str,
        principal: Principal,
        now: Instant,
    ) -> (String, Duration) {
        let authtoken = random_token();
        let lifetime = self.session_lifetime();
        self.sessions.insert(
            authtoken.clone(),
            Session {
                mailbox_id: mailbox_id.to_owned(),
                expires: now + lifetime,
                principal,
            },
        );
        self.issued_credentials.push(authtoken.clone());
        self.counters.sessions_created += 1;
        (authtoken, lifetime)
    }

    /// The mailbox a session unexpired at `now` and unrevoked belongs to, and whom it acts for;
    /// expired sessions are forgotten.
    pub fn session(&mut self, authtoken: &str, now: Instant) -> Option<(String, Principal)> {
        let session = self.sessions.get(authtoken)?;
        if now >= session.expires {
            self.sessions.remove(authtoken);
            return None;
        }
        Some((session.mailbox_id.clone(), session.principal.clone()))
    }
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    /// Never issued, or revoked.
    Unknown,
    Expired,
}

impl Mailbox {
    fn with_standard_folders(id: String, archive_of: Option<String>) -> Mailbox {
        // The store root, parent of `msgfolderroot`, is not listed, as in Exchange.
        let store_root_id = new_folder_id();
        let root_id = new_folder_id();
        let folders = STANDARD_FOLDERS
            .iter()
            .enumerate()
            .map(|(index, (well_known, display))| Folder {
                id: if index == 0 {
                    root_id.clone()
                } else {
                    new_folder_id()
                },
                display_name: (*display).to_owned(),
                parent_folder_id: if index == 0 {
                    store_root_id.clone()
                } else {
                    root_id.clone()
                },
                well_known_name: Some(well_known),
                class: "IPF.Note",
            })
            .collect();
        Mailbox {
            id,
            archive_of,
            folders,
            items: Vec::new(),
            digests: HashMap::new(),
            next_seq: 1,
        }
    }

    pub fn root_id(&self) -> &str {
        &self.folders[0].id
    }

    /// Finds a folder by id (ids are case-sensitive base64).
    pub fn folder_by_id(&self, id: &str) -> Option<&Folder> {
        self.folders.iter().find(|f| f.id == id)
    }

    /// Finds a folder by well-known name (case-insensitive, as Graph treats them).
    pub fn well_known_folder(&self, name: &str) -> Option<&Folder> {
        self.folders.iter().find(|f| {
            f.well_known_name
                .is_some_and(|known| known.eq_ignore_ascii_case(name))
        })
    }

    pub fn add_user_folders(&mut self, count: usize) {
        let root_id = self.root_id().to_owned();
        let first = self
            .folders
            .iter()
            .filter(|f| f.well_known_name.is_none())
            .count()
            + 1;
        for number in first..first + count {
            self.folders.push(Folder {
                id: new_folder_id(),
                display_name: format!("Folder {number:03}"),
                parent_folder_id: root_id.clone(),
                well_known_name: None,
                class: "IPF.Note",
            });
        }
    }

    pub fn child_count(&self, folder_id: &str) -> usize {
        self.folders
            .iter()
            .filter(|f| f.parent_folder_id == folder_id)
            .count()
    }

    pub fn item_count(&self, folder_id: &str) -> usize {
        self.items
            .iter()
            .filter(|i| i.folder_id == folder_id)
            .count()
    }

    /// Stores a new item with `content` in `folder_id`, created and last modified `at`; also says
    /// whether the mailbox already held an item with the same data.
    pub fn create_item(
        &mut self,
        folder_id: &str,
        content: Content,
        at: DateTime<Utc>,
    ) -> (&StoredItem, bool) {
        let at = in_ticks(at);
        let holders = self.digests.entry(content.sha256).or_default();
        let duplicate = *holders > 0;
        *holders += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.items.push(StoredItem {
            item_id: new_item_id(),
            change_key: new_change_key(),
            folder_id: folder_id.to_owned(),
            data: content.data,
            sha256: content.sha256,
            size: content.size,
            message_class: content.message_class,
            version: 1,
            created_at: at,
            last_modified_at: at,
            on_hold: false,
            seq,
        });
        (self.items.last().expect("just pushed"), duplicate)
    }

    /// Replaces the content of the item at `index` (an update is a full replace) with a new change
    /// key, modified `at`.
    pub fn replace_item(
        &mut self,
        index: usize,
        content: Content,
        at: DateTime<Utc>,
    ) -> &StoredItem {
        let old = self.items[index].sha256;
        self.forget_digest(old);
        *self.digests.entry(content.sha256).or_default() += 1;
        let item = &mut self.items[index];
        item.data = content.data;
        item.sha256 = content.sha256;
        item.size = content.size;
        item.message_class = content.message_class;
        item.touch(at);
        item
    }

    /// Moves the item at `index` to `folder_id`, keeping its id: a change, so it gets a new change
    /// key and is modified `at`.
    pub fn move_item(&mut self, index: usize, folder_id: &str, at: DateTime<Utc>) {
        let item = &mut self.items[index];
        item.folder_id = folder_id.to_owned();
        item.touch(at);
    }

    /// Removes the item at `index` for good, and its data from the duplicate bookkeeping.
    pub fn remove_item(&mut self, index: usize) -> StoredItem {
        let item = self.items.remove(index);
        self.forget_digest(item.sha256);
        item
    }

    /// The position of an item in [`Mailbox::items`].
    pub fn item_index(&self, item_id: &str) -> Option<usize> {
        self.items.iter().position(|item| item.item_id == item_id)
    }

    fn forget_digest(&mut self, sha256: [u8; 32]) {
        if let Some(holders) = self.digests.get_mut(&sha256) {
            *holders -= 1;
            if *holders == 0 {
                self.digests.remove(&sha256);
            }
        }
    }
}

impl StoredItem {
    /// Records a change: a new change key, one more version, modified `at`.
    fn touch(&mut self, at: DateTime<Utc>) {
        self.change_key = new_change_key();
        self.version += 1;
        self.last_modified_at = in_ticks(at);
    }
}

/// What an item holds, read from its decoded stream before the state lock is taken.
pub(crate) struct Content {
    /// The stream, or nothing in sink mode.
    pub data: Bytes,
    pub sha256: [u8; 32],
    /// The stream's length in bytes (kept in sink mode too).
    pub size: u64,
    /// PidTagMessageClass, or `IPM.Note` when the stream does not say.
    pub message_class: String,
}

impl Content {
    /// Reads `data`'s digest, size and message class; keeps the data itself unless `sink`.
    pub fn read(data: Bytes, sink: bool) -> Content {
        let sha256 = digest(&data);
        let size = data.len() as u64;
        let message_class =
            stream::message_class(&data).unwrap_or_else(|| DEFAULT_MESSAGE_CLASS.to_owned());
        Content {
            // In sink mode the data is let go here, outside the lock; only what was read is kept.
            data: if sink { Bytes::new() } else { data },
            sha256,
            size,
            message_class,
        }
    }
}

/// The message class of an item whose stream names none: Exchange's class of a plain message.
const DEFAULT_MESSAGE_CLASS: &str = "IPM.Note";

/// A time as the simulator stores it: whole 100-nanosecond ticks, the precision of the seven-digit
/// timestamps it writes, so that a date read from an answer compares equal to the stored one.
fn in_ticks(at: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = at.timestamp_subsec_nanos();
    at - chrono::Duration::nanoseconds(i64::from(nanos % 100))
}

/// The SHA-256 of an item's data, by which duplicates are recognised.
pub(crate) fn digest(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A mailbox id in the documented shape `MBX:{mailbox guid}@{tenant guid}`.
pub(crate) fn new_mailbox_id(tenant_id: &str) -> String {
    format!("MBX:{}@{tenant_id}", uuid::Uuid::new_v4())
}

/// The user object id for a new user.
pub(crate) fn new_user_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An opaque, unguessable bearer credential (access tokens and authtokens).
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A folder id shaped like Exchange's short ids: standard base64 (with `+`, `/`, `=`) of 16-28 random
/// bytes, 24-40 characters. Every id contains `/` or `+` so that a client which forgets to
/// percent-encode ids in URL paths fails every time rather than now and then.
pub(crate) fn new_folder_id() -> String {
    loop {
        let id = random_base64(16..=28);
        if id.contains(['/', '+']) {
            return id;
        }
    }
}

/// An item id in the same short-id shape as folder ids, with `/` or `+` for the same reason: item
/// ids go into URL paths too (`.../items/{itemId}`).
pub(crate) fn new_item_id() -> String {
    new_folder_id()
}

/// A change key shaped like the documented `kNnynYavKEihA0la3Yt5UQABUftGQg==` (22 bytes).
pub(crate) fn new_change_key() -> String {
    random_base64(22..=22)
}

fn random_base64(lengths: std::ops::RangeInclusive<usize>) -> String {
    let mut rng = rand::thread_rng();
    let mut bytes = vec![0u8; rng.gen_range(lengths)];
    rng.fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}
