//! Plays Entra ID, Microsoft Graph and Exchange Online's import endpoint on one loopback origin, so the
//! gateway can be tested end to end without a tenant.
//!
//! The simulator is a second, independent reading of `docs/upstream.md`: it imports nothing from the
//! crate's `graph`, `auth` or `fts` modules, and where the documentation is silent it is at least as
//! strict as the real service. One origin (`http://127.0.0.1:PORT`) serves:
//!
//! - `POST /{tenant}/oauth2/v2.0/token` (login.microsoftonline.com, module `login`): client
//!   credentials, and the on-behalf-of grant (module `obo`) that exchanges a user's token for a
//!   delegated Graph token,
//! - `GET /{tenant}/discovery/v2.0/keys` and `/{tenant}/v2.0/.well-known/openid-configuration`
//!   (module `issuer`): the keys that sign users' access tokens ([`Simulator::user_token`]),
//! - `/v1.0/...` (graph.microsoft.com, module `graph`): users' settings (`/me` too, for delegated
//!   tokens), folders, createImportSession,
//!   a folder's items (list, get, soft and hard delete; module `items`) and `exportItems` (module
//!   `export`), with the listings' query options in module `query`,
//! - `POST /api/gv1.0/Mailboxes('{id}')/importItem?authtoken=...` (outlook.office365.com, module
//!   `import`).
//!
//! Tests drive it over real sockets, inspect its state through [`Simulator`]'s methods, and script
//! faults (throttling, outages, slow or dropped answers) with [`Simulator::inject`] (module `faults`).
//! Beyond scripts, a [`Behaviour`] (module `behaviour`) makes it misbehave at random, enforces the
//! per-mailbox concurrency limit and adds latency; it is set at start-up, changed with
//! [`Simulator::set_behaviour`] or over HTTP on the same origin (no auth, it is a simulator):
//!
//! - `GET` / `PUT /_simulator/behaviour` (the [`Behaviour`] as JSON; a PUT replaces it, 400
//!   `{"error": ...}` on an invalid one),
//! - `GET /_simulator/counters` (the [`Counters`] as JSON),
//! - `POST /_simulator/mailboxes` with `{"address": ...}` (adds a user and its mailbox like
//!   [`Simulator::add_mailbox`]; `201` with `{"id", "address"}`, `409` if the address is taken; module
//!   `admin`),
//! - `POST /_simulator/user-tokens` with `{"address", "audience"?, "lifetimeSecs"?}` (a user access
//!   token like [`Simulator::user_token`]'s, as `{"access_token"}`).
//!
//! A delegated Graph token (from the on-behalf-of grant) reaches only its user's own mailbox and
//! archive (module `access`): anything else is `403 ErrorAccessDenied`. Consent is granted by the
//! administrator at start; [`Simulator::revoke_consent`] withdraws a user's.
//!
//! For benchmarks, `Behaviour::sink` turns importItem into a sink: it checks everything as usual but
//! keeps only a digest of each item (exportItems then answers such an item with an error).
//!
//! Tests seed items without importing them ([`Simulator::put_item`]), put them under hold
//! ([`Simulator::place_hold`]), and read them back ([`Simulator::items`], [`Simulator::item`]).
//!
//! Time is under the test's control (module `clock`): expiries run on tokio's clock, so pausing and
//! advancing it (`tokio::time::pause`, `tokio::time::advance`) moves the simulator with a client in
//! the same runtime, and [`Simulator::advance`] moves the simulator's clock alone (expiries and the
//! dates it writes), for tokens and sessions that expire without a test waiting for them.

mod access;
mod admin;
mod behaviour;
mod clock;
mod export;
mod faults;
mod graph;
mod import;
mod issuer;
mod items;
mod login;
mod obo;
mod query;
mod state;
mod stream;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;

use behaviour::Gate;
use faults::FaultPoint;
use state::{Content, Shared};

pub use behaviour::Behaviour;
pub use faults::{Fault, FaultTarget};
pub use issuer::UserTokenOptions;

/// Tunables of a simulator instance.
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    /// Lifetime of Graph access tokens (Entra's usual `expires_in` is 3599 s).
    pub token_lifetime: Duration,
    /// Lifetime of import sessions (undocumented upstream; an hour is a plausible guess).
    pub session_lifetime: Duration,
    /// Folders per page when the client sends no `$top`; must be 1..=999.
    pub folder_page_size: usize,
    /// A folder's items per page when the client sends no `$top`; must be 1..=1000.
    pub item_page_size: usize,
    /// Random misbehaviour and enforced limits; changeable at run time with
    /// [`Simulator::set_behaviour`]. Its lifetimes, when set, override the two above.
    pub behaviour: Behaviour,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            token_lifetime: Duration::from_secs(3599),
            session_lifetime: Duration::from_secs(3600),
            folder_page_size: 10,
            item_page_size: 10,
            behaviour: Behaviour::default(),
        }
    }
}

/// The tenant, app and mailbox every simulator starts with.
#[derive(Clone, Copy, Debug)]
pub struct DemoTenant {
    pub tenant_id: &'static str,
    pub client_id: &'static str,
    pub client_secret: &'static str,
    pub mailbox_address: &'static str,
    pub mailbox_id: &'static str,
}

/// Fixed identifiers so that a demo configuration can be written once; the secret is deliberately
/// obviously fake.
pub const DEMO: DemoTenant = DemoTenant {
    tenant_id: "a7809c93-5d4e-4b1f-9c62-3e8d0f1b2a47",
    client_id: "0f3c6e2d-7b1a-4c59-8e2f-6a4d9b1c3e75",
    client_secret: "simulator-demo-secret-NOT-A-REAL-CREDENTIAL",
    mailbox_address: "adele@contoso.com",
    mailbox_id: "MBX:e0643f21-9a3b-4c5d-8e7f-0a1b2c3d4e5f@a7809c93-5d4e-4b1f-9c62-3e8d0f1b2a47",
};

/// What the simulator has seen and done, for tests to assert on (also `GET /_simulator/counters`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Counters {
    pub tokens_issued: u64,
    pub token_requests_rejected: u64,
    pub sessions_created: u64,
    pub import_requests: u64,
    pub imports_rejected_unauthorized: u64,
    pub items_created: u64,
    pub items_updated: u64,
    /// Every request under `/v1.0`, authenticated or not.
    pub graph_requests: u64,
    /// Requests that consumed a scripted [`Fault`], whatever its kind; they are also counted as
    /// `graph_requests` or `import_requests`.
    pub faults_injected: u64,
    /// Every 429 answered on purpose: chosen by `Behaviour::throttle_rate`, scripted (any endpoint,
    /// `Status` 429 or `ThrottledUntil`), or over the concurrency limit.
    pub throttled: u64,
    /// importItem 503s chosen by `Behaviour::unavailable_rate` (scripted 503s are not counted here).
    pub unavailable: u64,
    /// importItem requests that were stored or applied (a 2xx answer) and whose connection was then
    /// broken, by `Behaviour::drop_after_store_rate` or by a scripted `DropAfterHandling`.
    pub dropped_after_store: u64,
    /// Creates whose decoded data has the same SHA-256 as an item its mailbox held at that moment;
    /// they are stored all the same.
    pub duplicate_items: u64,
    /// Per mailbox id, the most requests ever in flight at once among those admitted (importItem and
    /// Graph mailbox requests together).
    pub max_in_flight: BTreeMap<String, usize>,
    /// Requests that arrived while their mailbox's concurrency limit was already reached (and were
    /// refused with 429): how often a client exceeded the limit.
    pub concurrency_violations: u64,
    /// Items created or updated while `Behaviour::sink` was on (their data was checked, then dropped).
    pub sink_items: u64,
    /// Decoded bytes of those items.
    pub sink_bytes: u64,
    /// `POST .../exportItems` requests, whatever the answer (faulted, throttled, refused or not),
    /// as `import_requests` counts importItem's; each is also a `graph_requests`.
    pub export_requests: u64,
    /// The most item ids one exportItems request asked for (within the limit of 20 or not).
    pub max_export_batch: usize,
    /// Items exportItems answered with their data.
    pub items_exported: u64,
    /// Items exportItems answered with an error of their own inside its 200 (not found, in the
    /// archive, a malformed id, or data dropped in sink mode).
    pub export_item_errors: u64,
    /// `GET .../folders/{folderId}/items` requests (each page is one), whatever the answer.
    pub item_list_requests: u64,
    /// `GET .../folders/{folderId}/items/{itemId}` requests, whatever the answer.
    pub item_get_requests: u64,
    /// `DELETE .../folders/{folderId}/items/{itemId}` requests, whatever the answer.
    pub item_delete_requests: u64,
    /// Items deleted (a `204`), soft or hard.
    pub items_deleted: u64,
    /// Of those, the items removed for good (`disposalType=hardDelete`).
    pub items_hard_deleted: u64,
    /// Hard deletes refused with `403` because the item is under hold ([`Simulator::place_hold`]).
    pub hard_deletes_refused_on_hold: u64,
    /// User access tokens minted ([`Simulator::user_token`], `POST /_simulator/user-tokens`).
    pub user_tokens_issued: u64,
    /// Delegated Graph tokens issued by the on-behalf-of grant (each also a `tokens_issued`).
    pub obo_exchanges: u64,
    /// On-behalf-of requests refused, for whatever reason (each also a `token_requests_rejected`).
    pub obo_refused: u64,
    /// Graph requests whose bearer was a valid delegated token (each also a `graph_requests`).
    pub delegated_requests: u64,
    /// `403 ErrorAccessDenied` answers to a delegated token that asked for another user's mailbox
    /// or settings.
    pub delegated_access_denied: u64,
}

/// An item as the simulated mailbox stores it.
#[derive(Clone, Debug)]
pub struct StoredItem {
    pub item_id: String,
    pub change_key: String,
    pub folder_id: String,
    /// The decoded item stream, exactly as imported (and exported); empty when it was imported in
    /// sink mode (`Behaviour::sink`).
    pub data: Bytes,
    /// SHA-256 of the decoded item stream (kept in sink mode too).
    pub sha256: [u8; 32],
    /// Length in bytes of the decoded item stream (kept in sink mode too): the `size` Graph lists.
    pub size: u64,
    /// PidTagMessageClass as read from the stream, `IPM.Note` when it names none: the `type` Graph
    /// lists.
    pub message_class: String,
    /// 1 when created, +1 per change: an update, or a soft delete moving it.
    pub version: u32,
    /// When it was created, by the simulator's clock, in whole 100 ns (Graph's precision).
    pub created_at: DateTime<Utc>,
    /// When it last changed (created, updated or soft-deleted), likewise.
    pub last_modified_at: DateTime<Utc>,
    /// Under a hold ([`Simulator::place_hold`]): a hard delete is refused with `403`.
    pub on_hold: bool,
    /// Its place in its mailbox's creation order, by which listings page.
    pub(crate) seq: u64,
}

/// A handle on a running simulator; cheap to clone.
///
/// The server task runs until the runtime shuts down: dropping every handle does not stop it, so a
/// test may keep only the URLs.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("base_url", &self.shared.base_url)
            .finish_non_exhaustive()
    }
}

/// Upper bound on a request body; items can be up to 150 MB, which base64 grows by a third.
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

impl Simulator {
    /// Serves the simulator on `listener` (already bound, so it is ready when this returns).
    pub async fn start(
        listener: TcpListener,
        config: SimulatorConfig,
    ) -> std::io::Result<Simulator> {
        if let Err(error) = config.behaviour.validate() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("SimulatorConfig::behaviour: {error}"),
            ));
        }
        if !(1..=query::FOLDERS.max_top).contains(&config.folder_page_size) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "SimulatorConfig::folder_page_size must be between 1 and {}, got {}",
                    query::FOLDERS.max_top,
                    config.folder_page_size
                ),
            ));
        }
        if !(1..=query::ITEMS.max_top).contains(&config.item_page_size) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "SimulatorConfig::item_page_size must be between 1 and {}, got {}",
                    query::ITEMS.max_top,
                    config.item_page_size
                ),
            ));
        }
        let addr = listener.local_addr()?;
        // A listener on 0.0.0.0 or :: is reachable on loopback; URLs must name a concrete address.
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let base_url = format!("http://{}", SocketAddr::new(ip, addr.port()));
        let shared = Shared::new(base_url, config);
        let app = router(shared.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "simulator server stopped");
            }
        });
        Ok(Simulator { shared })
    }

    /// `http://127.0.0.1:PORT`: the login authority and the origin of import URLs.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// `base_url` + `/v1.0`.
    pub fn graph_url(&self) -> String {
        self.shared.graph_url()
    }

    /// Creates a user `address` with a mailbox holding the standard folders; returns the mailbox id.
    ///
    /// Panics if the address is taken (a test bug).
    pub fn add_mailbox(&self, address: &str) -> String {
        self.shared
            .lock()
            .add_user(address)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Creates the auto-expanded archive of a primary mailbox (with the standard folders) and returns
    /// its id; returns the existing archive's id if there is one. Panics on an unknown mailbox.
    pub fn add_archive(&self, mailbox_id: &str) -> String {
        self.shared.lock().add_archive(mailbox_id)
    }

    /// The id of a mailbox's well-known folder (name case-insensitive).
    pub fn folder_id(&self, mailbox_id: &str, well_known_name: &str) -> Option<String> {
        let inner = self.shared.lock();
        let mailbox = inner.mailbox(mailbox_id)?;
        Some(mailbox.well_known_folder(well_known_name)?.id.clone())
    }

    /// Adds `count` user folders (no well-known name) under the root, so that paging can be tested.
    /// Panics on an unknown mailbox.
    pub fn add_folders(&self, mailbox_id: &str, count: usize) {
        let mut inner = self.shared.lock();
        inner
            .mailbox_mut(mailbox_id)
            .unwrap_or_else(|| panic!("the simulator has no mailbox {mailbox_id}"))
            .add_user_folders(count);
    }

    /// Registers a certificate credential for the demo app. The PEM may also hold the private key;
    /// only the CERTIFICATE block is read. Panics if there is no parsable RSA certificate.
    pub fn register_certificate(&self, cert_pem: &str) {
        let certificate = login::parse_certificate(cert_pem)
            .unwrap_or_else(|error| panic!("cannot register certificate: {error}"));
        self.shared.lock().app.certificates.push(certificate);
    }

    /// Trusts RS256 JWTs from `issuer` about `subject`, signed by the key in `public_key_pem`, as
    /// federated credentials of the demo app. Panics if the key is not an RSA public key.
    pub fn register_federated_issuer(&self, issuer: &str, subject: &str, public_key_pem: &str) {
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_key_pem.as_bytes())
            .unwrap_or_else(|error| panic!("cannot register federated issuer key: {error}"));
        self.shared
            .lock()
            .app
            .federated
            .push(state::FederatedIssuer {
                issuer: issuer.to_owned(),
                subject: subject.to_owned(),
                key,
            });
    }

    /// Lifetime of access tokens issued from now on. The latest setting wins: this clears
    /// `Behaviour::token_lifetime_secs`.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        let mut inner = self.shared.lock();
        inner.config.token_lifetime = lifetime;
        inner.config.behaviour.token_lifetime_secs = None;
    }

    /// Lifetime of import sessions created from now on. The latest setting wins: this clears
    /// `Behaviour::session_lifetime_secs`.
    pub fn set_session_lifetime(&self, lifetime: Duration) {
        let mut inner = self.shared.lock();
        inner.config.session_lifetime = lifetime;
        inner.config.behaviour.session_lifetime_secs = None;
    }

    /// The behaviour in force.
    pub fn behaviour(&self) -> Behaviour {
        self.shared.lock().config.behaviour.clone()
    }

    /// Replaces the behaviour, from the next request on, and restarts the random sequence from its
    /// seed. An invalid behaviour is refused (with a message naming the setting) and the current one
    /// stays. Requests already in flight keep their slots, whatever the new limit.
    pub fn set_behaviour(&self, behaviour: Behaviour) -> Result<(), String> {
        behaviour::set(&mut self.shared.lock(), behaviour)
    }

    /// Moves the simulator's clock forward by `by`, as if that much time had passed for it alone:
    /// tokens and import sessions expire as their lifetimes run out, client assertions are checked
    /// against the later time, and the dates the simulator writes (`expirationDateTime`,
    /// `Retry-After` dates, error timestamps) are that far ahead. Advances add up; the clock never
    /// goes back.
    ///
    /// It does not shorten waits already under way or to come (`Behaviour::latency_ms`,
    /// `Fault::Delay`), which sleep on tokio's timer, nor move a client's clock. To move a client in
    /// the same runtime as well, pause and advance tokio's clock instead, which the simulator's
    /// expiries follow too.
    pub fn advance(&self, by: Duration) {
        self.shared.clock.advance(by);
    }

    /// Invalidates every import session issued so far (importItem then answers 401).
    pub fn revoke_sessions(&self) {
        self.shared.lock().sessions.clear();
    }

    /// Invalidates every Graph access token issued so far, app and delegated (Graph then answers
    /// 401).
    pub fn revoke_tokens(&self) {
        self.shared.lock().tokens.clear();
    }

    /// A user access token for the demo app, as Entra signs it when `address` (a UPN or object id)
    /// signs in to a client app that calls the gateway: RS256 with the simulator's key (`kid` in the
    /// header), verifiable with the JWKS at [`Simulator::jwks_url`], and accepted by the token
    /// endpoint's on-behalf-of grant. Its claims are `iss` ([`Simulator::issuer`]), `aud` (the demo
    /// app's client id), `tid`, `oid`, `sub`, `preferred_username`, `scp` (`access_as_user`),
    /// `azp`, `azpacr`, `iat`, `nbf`, `exp` (an hour from now, by the simulator's clock), `uti` and
    /// `ver` (`2.0`); `options` changes some of them.
    ///
    /// Panics on an unknown user (a test bug: use `options.object_id` for a token about a user the
    /// tenant lacks).
    pub fn user_token(&self, address: &str, options: UserTokenOptions) -> String {
        let now = self.shared.clock.wall();
        issuer::mint(
            &mut self.shared.lock(),
            &self.shared.base_url,
            now,
            address,
            &options,
        )
        .unwrap_or_else(|error| panic!("{error}"))
    }

    /// `{base_url}/{tenant}/v2.0`: the `iss` of the user tokens the simulator signs, which the
    /// on-behalf-of grant requires.
    pub fn issuer(&self) -> String {
        issuer::issuer_url(&self.shared.base_url, &self.shared.lock().tenant_id)
    }

    /// `{base_url}/{tenant}/discovery/v2.0/keys`: the JWKS that verifies the user tokens.
    pub fn jwks_url(&self) -> String {
        let tenant_id = self.shared.lock().tenant_id.clone();
        format!("{}/{tenant_id}/discovery/v2.0/keys", self.shared.base_url)
    }

    /// Signs user tokens with the simulator's other built-in key from now on, and publishes both
    /// keys, as Entra does during a key rollover: tokens signed before stay valid, and a client
    /// that cached the JWKS meets a `kid` it does not know yet.
    pub fn rotate_signing_key(&self) {
        self.shared.lock().signing_keys.rotate();
    }

    /// Withdraws the consent of the user `address` (a UPN or object id) to the demo app, whatever
    /// the administrator granted: the on-behalf-of grant then refuses their tokens with
    /// AADSTS65001. Delegated tokens already issued stay valid. Panics on an unknown user.
    pub fn revoke_consent(&self, address: &str) {
        self.set_user_consent(address, false);
    }

    /// Gives the user `address` their own consent to the demo app, whatever the administrator
    /// granted. Panics on an unknown user.
    pub fn grant_consent(&self, address: &str) {
        self.set_user_consent(address, true);
    }

    /// Grants or withdraws the administrator's consent for every user of the tenant (granted when
    /// the simulator starts); a user's own consent or refusal ([`Simulator::grant_consent`],
    /// [`Simulator::revoke_consent`]) still overrides it.
    pub fn set_admin_consent(&self, granted: bool) {
        self.shared.lock().app.admin_consent = granted;
    }

    fn set_user_consent(&self, address: &str, granted: bool) {
        let mut inner = self.shared.lock();
        let user_id = inner
            .user(address)
            .unwrap_or_else(|| panic!("the simulator has no user {address}"))
            .id
            .clone();
        inner.app.consent.insert(user_id, granted);
    }

    /// Queues `fault` for the next `times` requests to `target` (FIFO across calls; each request
    /// consumes one). [`FaultTarget`] says where on each endpoint a fault fires.
    ///
    /// Panics on a fault no service could produce: a `Status` outside 400-599, or a `ThrottledUntil`
    /// more than a century ahead.
    pub fn inject(&self, target: FaultTarget, fault: Fault, times: usize) {
        fault.check();
        self.shared.lock().faults.push(target, fault, times);
    }

    /// Forgets every queued fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Every access token and import-session authtoken issued so far, for tests that search logs and
    /// responses for leaked credentials.
    pub fn issued_credentials(&self) -> Vec<String> {
        self.shared.lock().issued_credentials.clone()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.lock().counters.clone()
    }

    /// Every mailbox id (archives included) with the number of items it holds, empty ones too.
    pub fn items_per_mailbox(&self) -> BTreeMap<String, usize> {
        self.shared
            .lock()
            .mailboxes
            .iter()
            .map(|mailbox| (mailbox.id.clone(), mailbox.items.len()))
            .collect()
    }

    /// The items stored in a mailbox, in creation order. Panics on an unknown mailbox.
    pub fn items(&self, mailbox_id: &str) -> Vec<StoredItem> {
        let inner = self.shared.lock();
        inner
            .mailbox(mailbox_id)
            .unwrap_or_else(|| panic!("the simulator has no mailbox {mailbox_id}"))
            .items
            .clone()
    }

    /// One item of a mailbox, wherever it is filed; `None` if the mailbox holds no such item (or
    /// does not exist).
    pub fn item(&self, mailbox_id: &str, item_id: &str) -> Option<StoredItem> {
        let inner = self.shared.lock();
        let mailbox = inner.mailbox(mailbox_id)?;
        Some(mailbox.items[mailbox.item_index(item_id)?].clone())
    }

    /// Stores an item directly, as if imported into `folder` (an id or a well-known name) now, by
    /// the simulator's clock, and returns it: for tests that need items to list, export or delete
    /// without importing them. The data is kept even in sink mode. It is not counted as an import
    /// (`items_created`, `duplicate_items`), but later imports of the same data count as duplicates.
    ///
    /// Panics on an unknown mailbox or folder, or on data that is not a well-formed item stream
    /// (importItem would refuse it).
    pub fn put_item(&self, mailbox_id: &str, folder: &str, data: impl Into<Bytes>) -> StoredItem {
        let data = data.into();
        if let Err(error) = stream::validate(&data) {
            panic!("put_item needs a well-formed item stream: {error}");
        }
        let content = Content::read(data, false);
        let at = self.shared.clock.wall();
        let mut inner = self.shared.lock();
        let mailbox = inner
            .mailbox_mut(mailbox_id)
            .unwrap_or_else(|| panic!("the simulator has no mailbox {mailbox_id}"));
        let folder_id = mailbox
            .folder_by_id(folder)
            .or_else(|| mailbox.well_known_folder(folder))
            .unwrap_or_else(|| panic!("mailbox {mailbox_id} has no folder {folder}"))
            .id
            .clone();
        mailbox.create_item(&folder_id, content, at).0.clone()
    }

    /// Puts an item under hold (litigation or retention), so that `DELETE` with
    /// `disposalType=hardDelete` answers `403`; a soft delete still moves it to
    /// `recoverableitemsdeletions`, where it stays held. Panics on an unknown mailbox or item.
    pub fn place_hold(&self, mailbox_id: &str, item_id: &str) {
        let mut inner = self.shared.lock();
        let mailbox = inner
            .mailbox_mut(mailbox_id)
            .unwrap_or_else(|| panic!("the simulator has no mailbox {mailbox_id}"));
        let index = mailbox
            .item_index(item_id)
            .unwrap_or_else(|| panic!("mailbox {mailbox_id} has no item {item_id}"));
        mailbox.items[index].on_hold = true;
    }
}

/// The fresh GUID of one request, echoed as the `request-id` header (and inside Graph errors).
#[derive(Clone, Debug)]
pub(crate) struct RequestId(pub String);

/// Assembles every route of the three simulated hosts.
fn router(shared: Arc<Shared>) -> Router {
    // Scripted faults sit in front of each endpoint, so that they fire before it looks at the request.
    let fault_layer = |target| {
        middleware::from_fn_with_state(FaultPoint::new(&shared, target), faults::intercept)
    };
    // The behaviour sits inside the faults, so that scripted faults take precedence over it.
    let behaviour_layer =
        |target| middleware::from_fn_with_state(Gate::new(&shared, target), behaviour::govern);
    Router::new()
        .route(
            "/{tenant}/oauth2/v2.0/token",
            // A route layer, so that a wrong method does not consume a fault.
            post(login::token).route_layer(fault_layer(FaultTarget::Token)),
        )
        // Entra's published keys and metadata; no faults: clients fetch them rarely and cache them.
        .route("/{tenant}/discovery/v2.0/keys", get(issuer::jwks))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(issuer::openid_configuration),
        )
        .route(
            "/api/gv1.0/{segment}/importItem",
            // Item streams may be far larger than axum's 2 MB default body limit.
            post(import::import_item)
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .route_layer(behaviour_layer(FaultTarget::Import))
                .route_layer(fault_layer(FaultTarget::Import)),
        )
        .nest(
            "/v1.0",
            // Outside the bearer check and around the fallbacks: every request is counted, on its
            // way in and once, whatever answers it (a fault, the behaviour, the bearer check or a
            // handler).
            graph::router(shared.clone())
                .layer(behaviour_layer(FaultTarget::Graph))
                .layer(fault_layer(FaultTarget::Graph))
                .layer(middleware::from_fn_with_state(shared.clone(), graph::count)),
        )
        // The simulator's own admin surface; no auth, it is a test tool.
        .route(
            "/_simulator/behaviour",
            get(behaviour::get_behaviour).put(behaviour::put_behaviour),
        )
        .route("/_simulator/counters", get(behaviour::get_counters))
        .route("/_simulator/mailboxes", post(admin::add_mailbox))
        .route("/_simulator/user-tokens", post(admin::user_token))
        .fallback(graph::unknown_resource)
        .method_not_allowed_fallback(graph::method_not_allowed)
        // Outermost, so that every response, errors and fallbacks included, carries a request-id.
        .layer(middleware::from_fn(assign_request_id))
        .with_state(shared)
}

/// Gives each request a fresh `request-id`, visible to handlers and set on the response.
async fn assign_request_id(mut request: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        "request-id",
        HeaderValue::from_str(&id).expect("a GUID is a valid header value"),
    );
    response
}
