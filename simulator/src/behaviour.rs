//! Owns how the simulator behaves on its own, beyond the faults tests script: random throttling,
//! outages and answers dropped after storing, added latency, Exchange Online's per-mailbox concurrency
//! limit, run-time token and session lifetimes, and the `/_simulator/...` admin endpoint that changes
//! them.
//!
//! A [`Behaviour`] is given at start-up (`SimulatorConfig::behaviour`) and replaced at run time with
//! [`Simulator::set_behaviour`](super::Simulator::set_behaviour) or `PUT /_simulator/behaviour`.
//!
//! The [`govern`] middleware sits in front of importItem and of every Graph request under
//! `/v1.0/admin/exchange/mailboxes/{id}/...`, inside the scripted-fault middleware and outside the
//! authentication checks (the documentation does not say whether refused credentials count against the
//! limit; counting them is the stricter reading). For each request it:
//!
//! 1. admits it under the mailbox's concurrency limit, or refuses it with 429 and the documented
//!    "Application is over its MailboxConcurrency limit." (`Retry-After: 1`, nothing stored);
//! 2. for importItem only, unless a scripted fault already took the request, draws once to choose
//!    throttle (429), unavailable (503), drop after storing, or normal;
//! 3. waits `latency_ms` (admitted requests hold their slot while waiting, refused ones don't);
//! 4. answers as drawn.
//!
//! An admitted request holds its slot until its answer is ready (a scripted `Delay`, which waits after
//! that, does not hold it); the slot is released by a guard's `Drop`, so requests whose connection
//! breaks or whose client gives up release it too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use percent_encoding::percent_decode_str;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::faults::{self, FaultTarget, ScriptedFault};
use super::state::{Inner, Shared};
use super::Counters;

/// How the simulator misbehaves at random and which of Exchange Online's limits it enforces.
///
/// The default is well-behaved except for the concurrency limit, which is enforced like the real
/// service's (docs/upstream.md section 5: 4 concurrent requests per app and mailbox). As JSON, missing
/// fields take their defaults, unknown fields are refused, and `null` means `None` (so
/// `"max_concurrent_per_mailbox": null` lifts the limit, while leaving the field out keeps 4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Share (0.0..=1.0) of importItem requests answered 429 with `Retry-After` and the
    /// MailboxConcurrency message, without storing anything.
    pub throttle_rate: f64,
    /// The `Retry-After` (seconds) of the 429s and 503s chosen by the rates.
    pub throttle_retry_after_secs: u64,
    /// Share of importItem requests answered 503 with `Retry-After`, without storing anything.
    pub unavailable_rate: f64,
    /// Share of importItem requests that are handled (a valid import is stored) and whose connection
    /// is then broken before the answer is complete. Only successful answers are broken: a request
    /// the endpoint refuses (401, 400, ...) is answered normally, since nothing was stored.
    pub drop_after_store_rate: f64,
    /// Added before answering every importItem and every Graph mailbox request.
    pub latency_ms: u64,
    /// Requests in flight at once per mailbox (importItem and Graph mailbox requests together);
    /// `None` is unlimited. Must be at least 1.
    pub max_concurrent_per_mailbox: Option<usize>,
    /// When set, the lifetime of access tokens issued from now on, overriding
    /// `SimulatorConfig::token_lifetime`.
    pub token_lifetime_secs: Option<u64>,
    /// When set, the lifetime of import sessions created from now on, overriding
    /// `SimulatorConfig::session_lifetime`.
    pub session_lifetime_secs: Option<u64>,
    /// Seed of the random choices, for reproducible runs; `None` seeds from the OS. Every
    /// `set_behaviour` restarts the sequence, so setting the same seed again replays it.
    pub seed: Option<u64>,
    /// Sink mode, for benchmarks: importItem still checks the authtoken, the JSON field by field,
    /// the base64 and the item stream's frames, and answers with fresh ids as usual, but keeps only
    /// the SHA-256 of each item's data (stored items have empty `data`) and counts it in
    /// `Counters::sink_items` and `sink_bytes`. Its memory then grows by a few hundred bytes per item
    /// (ids and digest), not by the item.
    pub sink: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            throttle_rate: 0.0,
            throttle_retry_after_secs: 1,
            unavailable_rate: 0.0,
            drop_after_store_rate: 0.0,
            latency_ms: 0,
            max_concurrent_per_mailbox: Some(DOCUMENTED_CONCURRENCY_LIMIT),
            token_lifetime_secs: None,
            session_lifetime_secs: None,
            seed: None,
            sink: false,
        }
    }
}

/// Outlook's documented limit of concurrent requests per app and mailbox (docs/upstream.md section 5).
const DOCUMENTED_CONCURRENCY_LIMIT: usize = 4;

/// The `Retry-After` of an over-concurrency 429: a slot frees up as soon as any request finishes.
const CONCURRENCY_RETRY_AFTER_SECS: u64 = 1;

/// Rates are decimal fractions: 0.1 + 0.2 + 0.7 adds up to a hair over 1.0 in binary.
const RATE_SUM_TOLERANCE: f64 = 1e-9;

/// Lifetimes beyond a century would overflow the clocks that expiries are computed on.
const MAX_LIFETIME_SECS: u64 = 100 * 365 * 24 * 60 * 60;

impl Behaviour {
    /// Checks that every rate is within 0.0..=1.0 and that they add up to at most 1.0, that a
    /// concurrency limit is at least 1 and that lifetimes are within a century; the error names the
    /// setting.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("throttle_rate", self.throttle_rate),
            ("unavailable_rate", self.unavailable_rate),
            ("drop_after_store_rate", self.drop_after_store_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0.0 and 1.0, got {rate}"));
            }
        }
        let sum: f64 = rates.iter().map(|(_, rate)| rate).sum();
        if sum > 1.0 + RATE_SUM_TOLERANCE {
            return Err(format!(
                "throttle_rate + unavailable_rate + drop_after_store_rate must be at most 1.0, got {sum}"
            ));
        }
        if self.max_concurrent_per_mailbox == Some(0) {
            return Err(
                "max_concurrent_per_mailbox must be at least 1 (null means unlimited)".to_owned(),
            );
        }
        for (name, lifetime) in [
            ("token_lifetime_secs", self.token_lifetime_secs),
            ("session_lifetime_secs", self.session_lifetime_secs),
        ] {
            if lifetime.is_some_and(|secs| secs > MAX_LIFETIME_SECS) {
                return Err(format!(
                    "{name} must be at most {MAX_LIFETIME_SECS} seconds (a century)"
                ));
            }
        }
        Ok(())
    }

    fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }
}

/// The run-time side of the current [`Behaviour`] (which itself lives in `Inner::config`): the random
/// source and the requests in flight per mailbox.
pub(crate) struct Traffic {
    rng: StdRng,
    /// Mailbox id → admitted requests not yet answered; mailboxes with none are absent.
    in_flight: HashMap<String, usize>,
}

impl Traffic {
    pub fn new(seed: Option<u64>) -> Traffic {
        Traffic {
            rng: new_rng(seed),
            in_flight: HashMap::new(),
        }
    }

    /// Admits a request to `mailbox_id` unless `limit` requests to it are already in flight, and
    /// records the admission (or the violation) in `counters`.
    fn admit(&mut self, mailbox_id: &str, limit: Option<usize>, counters: &mut Counters) -> bool {
        let in_flight = self.in_flight.get(mailbox_id).copied().unwrap_or(0);
        if limit.is_some_and(|limit| in_flight >= limit) {
            counters.concurrency_violations += 1;
            return false;
        }
        let in_flight = in_flight + 1;
        self.in_flight.insert(mailbox_id.to_owned(), in_flight);
        let max = counters
            .max_in_flight
            .entry(mailbox_id.to_owned())
            .or_default();
        *max = (*max).max(in_flight);
        true
    }

    fn release(&mut self, mailbox_id: &str) {
        if let Some(in_flight) = self.in_flight.get_mut(mailbox_id) {
            *in_flight -= 1;
            if *in_flight == 0 {
                self.in_flight.remove(mailbox_id);
            }
        }
    }

    /// The one draw of an importItem request.
    fn draw(&mut self, behaviour: &Behaviour) -> Draw {
        let roll: f64 = self.rng.gen();
        let throttle = behaviour.throttle_rate;
        let unavailable = throttle + behaviour.unavailable_rate;
        let drop = unavailable + behaviour.drop_after_store_rate;
        // `roll` is in [0, 1), so a rate of 1.0 always wins and a rate of 0.0 never does.
        if roll < throttle {
            Draw::Throttle
        } else if roll < unavailable {
            Draw::Unavailable
        } else if roll < drop {
            Draw::DropAfterStore
        } else {
            Draw::Normal
        }
    }
}

fn new_rng(seed: Option<u64>) -> StdRng {
    match seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_entropy(),
    }
}

/// Validates `behaviour` and makes it current, restarting the random sequence from its seed.
pub(crate) fn set(inner: &mut Inner, behaviour: Behaviour) -> Result<(), String> {
    behaviour.validate()?;
    inner.traffic.rng = new_rng(behaviour.seed);
    inner.config.behaviour = behaviour;
    Ok(())
}

/// What the draw chose for one importItem request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Draw {
    Normal,
    Throttle,
    Unavailable,
    DropAfterStore,
}

/// A slot of a mailbox's concurrency limit, given back when dropped: when the answer is ready, or
/// when hyper drops the request because its connection broke or its client went away.
struct Slot {
    shared: Arc<Shared>,
    mailbox_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Never dropped while the lock is held: slots are created and dropped outside it.
        self.shared.lock().traffic.release(&self.mailbox_id);
    }
}

/// The state of the middleware in front of one endpoint (importItem or Graph).
#[derive(Clone)]
pub(crate) struct Gate {
    shared: Arc<Shared>,
    target: FaultTarget,
}

impl Gate {
    pub fn new(shared: &Arc<Shared>, target: FaultTarget) -> Gate {
        Gate {
            shared: shared.clone(),
            target,
        }
    }
}

/// Whether a request got a slot of its mailbox's concurrency limit.
enum Admission {
    /// Not a request to a mailbox the tenant has: nothing to limit.
    Unlimited,
    /// Counted in flight for this mailbox id until its [`Slot`] is dropped.
    Admitted(String),
    /// The limit was already reached.
    Refused,
}

/// What [`govern`] decided under the lock, to be carried out after it.
enum Verdict {
    /// Answer with this status (429 or 503) and `Retry-After`, without handling the request.
    Refuse {
        status: StatusCode,
        retry_after: u64,
        code: Option<&'static str>,
        message: Option<&'static str>,
    },
    /// Let the endpoint handle the request.
    Handle,
    /// Let the endpoint handle it, then break the connection if it stored something.
    HandleThenDrop,
}

/// Middleware: concurrency limit, random choice and latency, as the module doc describes.
pub(crate) async fn govern(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let mailbox_id = mailbox_in_path(gate.target, request.uri().path());
    if gate.target == FaultTarget::Graph && mailbox_id.is_none() {
        // Only mailbox requests are governed; `users/.../settings/exchange` is a directory call.
        return next.run(request).await;
    }
    let scripted = request.extensions().get::<ScriptedFault>().is_some();
    let (verdict, latency, admission) = {
        let mut inner = gate.shared.lock();
        let inner = &mut *inner;
        let behaviour = &inner.config.behaviour;
        let latency = behaviour.latency();
        // Only mailboxes the tenant has are limited, so that garbage ids leave no trace in the counters.
        let admission = match mailbox_id.filter(|id| inner.mailbox(id).is_some()) {
            None => Admission::Unlimited,
            Some(id) => {
                let limit = behaviour.max_concurrent_per_mailbox;
                if inner.traffic.admit(&id, limit, &mut inner.counters) {
                    Admission::Admitted(id)
                } else {
                    Admission::Refused
                }
            }
        };
        let verdict = match &admission {
            Admission::Refused => {
                inner.counters.throttled += 1;
                gate.target.count_unhandled_request(&mut inner.counters);
                Verdict::Refuse {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    retry_after: CONCURRENCY_RETRY_AFTER_SECS,
                    // Graph names Outlook's throttling this way; importItem's errors carry no code.
                    code: (gate.target == FaultTarget::Graph).then_some("ApplicationThrottled"),
                    message: None,
                }
            }
            _ if gate.target != FaultTarget::Import || scripted => Verdict::Handle,
            _ => {
                let retry_after = behaviour.throttle_retry_after_secs;
                match inner.traffic.draw(behaviour) {
                    Draw::Normal => Verdict::Handle,
                    Draw::DropAfterStore => Verdict::HandleThenDrop,
                    Draw::Throttle => {
                        inner.counters.throttled += 1;
                        inner.counters.import_requests += 1;
                        Verdict::Refuse {
                            status: StatusCode::TOO_MANY_REQUESTS,
                            retry_after,
                            code: None,
                            message: None,
                        }
                    }
                    Draw::Unavailable => {
                        inner.counters.unavailable += 1;
                        inner.counters.import_requests += 1;
                        Verdict::Refuse {
                            status: StatusCode::SERVICE_UNAVAILABLE,
                            retry_after,
                            code: None,
                            message: Some("The service is temporarily unavailable (the simulator's unavailable_rate chose this request)."),
                        }
                    }
                }
            }
        };
        (verdict, latency, admission)
    };
    // Created after the lock is released, so that dropping it can never deadlock on the lock.
    let _slot = match admission {
        Admission::Admitted(mailbox_id) => Some(Slot {
            shared: gate.shared.clone(),
            mailbox_id,
        }),
        Admission::Unlimited | Admission::Refused => None,
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match verdict {
        Verdict::Refuse {
            status,
            retry_after,
            code,
            message,
        } => {
            faults::refuse(
                gate.target,
                status,
                code,
                Some(HeaderValue::from(retry_after)),
                message,
                request,
                gate.shared.clock.wall(),
            )
            .await
        }
        Verdict::Handle => next.run(request).await,
        Verdict::HandleThenDrop => {
            let response = next.run(request).await;
            if response.status().is_success() {
                gate.shared.lock().counters.dropped_after_store += 1;
                faults::break_body(response).await
            } else {
                response
            }
        }
    }
}

/// The mailbox id a governed request names, percent-decoded (Graph shows ids both raw and encoded):
/// `/api/gv1.0/Mailboxes('{id}')/importItem` or `[/v1.0]/admin/exchange/mailboxes/{id}[/...]`.
fn mailbox_in_path(target: FaultTarget, path: &str) -> Option<String> {
    let segment = match target {
        FaultTarget::Import => path.strip_prefix("/api/gv1.0/")?.split('/').next()?,
        // Inside the nested Graph router the `/v1.0` prefix is already stripped.
        FaultTarget::Graph => path
            .strip_prefix("/v1.0")
            .unwrap_or(path)
            .strip_prefix("/admin/exchange/mailboxes/")?
            .split('/')
            .next()?,
        FaultTarget::Token => return None,
    };
    let decoded = percent_decode_str(segment).decode_utf8().ok()?;
    let id = match target {
        FaultTarget::Import => decoded.strip_prefix("Mailboxes('")?.strip_suffix("')")?,
        _ => &decoded,
    };
    (!id.is_empty()).then(|| id.to_owned())
}

/// `GET /_simulator/behaviour`: the current behaviour.
pub(crate) async fn get_behaviour(State(shared): State<Arc<Shared>>) -> Json<Behaviour> {
    Json(shared.lock().config.behaviour.clone())
}

/// `PUT /_simulator/behaviour`: replaces the behaviour (missing fields take their defaults) and
/// answers the new one, or 400 `{"error": ...}` leaving the current one in place.
pub(crate) async fn put_behaviour(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let behaviour = match serde_json::from_slice::<Behaviour>(&body) {
        Ok(behaviour) => behaviour,
        Err(error) => return admin_error(format!("not a behaviour: {error}")),
    };
    match set(&mut shared.lock(), behaviour.clone()) {
        Ok(()) => Json(behaviour).into_response(),
        Err(error) => admin_error(error),
    }
}

/// `GET /_simulator/counters`: a snapshot of the counters.
pub(crate) async fn get_counters(State(shared): State<Arc<Shared>>) -> Json<Counters> {
    Json(shared.lock().counters.clone())
}

fn admin_error(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "error": message }).to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::super::SimulatorConfig;
    use super::*;

    const MBX: &str = "MBX:e0643f21@a7809c93";

    #[test]
    fn the_default_is_valid_and_enforces_the_documented_limit_only() {
        let behaviour = Behaviour::default();
        assert_eq!(behaviour.validate(), Ok(()));
        assert_eq!(behaviour.max_concurrent_per_mailbox, Some(4));
        assert_eq!(
            behaviour.throttle_rate + behaviour.unavailable_rate + behaviour.drop_after_store_rate,
            0.0
        );
    }

    #[test]
    fn rates_outside_zero_to_one_or_adding_up_past_one_are_invalid() {
        let with = |throttle, unavailable, drop| Behaviour {
            throttle_rate: throttle,
            unavailable_rate: unavailable,
            drop_after_store_rate: drop,
            ..Behaviour::default()
        };
        assert!(with(1.5, 0.0, 0.0)
            .validate()
            .unwrap_err()
            .contains("throttle_rate"));
        assert!(with(0.0, -0.1, 0.0)
            .validate()
            .unwrap_err()
            .contains("unavailable_rate"));
        assert!(with(0.0, 0.0, f64::NAN)
            .validate()
            .unwrap_err()
            .contains("drop_after_store_rate"));
        assert!(with(0.5, 0.3, 0.3).validate().unwrap_err().contains("1.0"));
        assert_eq!(with(0.1, 0.2, 0.7).validate(), Ok(()));
        let no_slots = Behaviour {
            max_concurrent_per_mailbox: Some(0),
            ..Behaviour::default()
        };
        assert!(no_slots.validate().is_err());
    }

    #[test]
    fn draws_follow_the_rates_in_order() {
        let mut traffic = Traffic::new(Some(7));
        let always = |throttle, unavailable, drop| Behaviour {
            throttle_rate: throttle,
            unavailable_rate: unavailable,
            drop_after_store_rate: drop,
            ..Behaviour::default()
        };
        for _ in 0..100 {
            assert_eq!(traffic.draw(&always(1.0, 0.0, 0.0)), Draw::Throttle);
            assert_eq!(traffic.draw(&always(0.0, 1.0, 0.0)), Draw::Unavailable);
            assert_eq!(traffic.draw(&always(0.0, 0.0, 1.0)), Draw::DropAfterStore);
            assert_eq!(traffic.draw(&always(0.0, 0.0, 0.0)), Draw::Normal);
        }
    }

    #[test]
    fn admission_stops_at_the_limit_and_a_release_frees_a_slot() {
        let mut traffic = Traffic::new(None);
        let mut counters = Counters::default();
        for _ in 0..4 {
            assert!(traffic.admit(MBX, Some(4), &mut counters));
        }
        assert!(!traffic.admit(MBX, Some(4), &mut counters));
        assert!(traffic.admit("MBX:other@a7809c93", Some(4), &mut counters));
        traffic.release(MBX);
        assert!(traffic.admit(MBX, Some(4), &mut counters));
        assert_eq!(counters.max_in_flight[MBX], 4);
        assert_eq!(counters.concurrency_violations, 1);
        for _ in 0..4 {
            traffic.release(MBX);
        }
        assert!(!traffic.in_flight.contains_key(MBX));
        assert!(traffic.admit(MBX, None, &mut counters));
    }

    #[tokio::test]
    async fn a_slot_held_by_a_cancelled_request_is_given_back() {
        let shared = Shared::new("http://127.0.0.1:9".to_owned(), SimulatorConfig::default());
        {
            let mut inner = shared.lock();
            let inner = &mut *inner;
            assert!(inner.traffic.admit(MBX, Some(1), &mut inner.counters));
        }
        let slot = Slot {
            shared: shared.clone(),
            mailbox_id: MBX.to_owned(),
        };
        // A request whose client went away: hyper drops its future, and the slot with it.
        let request = tokio::spawn(async move {
            let _slot = slot;
            std::future::pending::<()>().await;
        });
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        let mut inner = shared.lock();
        let inner = &mut *inner;
        assert!(inner.traffic.in_flight.is_empty());
        assert!(inner.traffic.admit(MBX, Some(1), &mut inner.counters));
    }

    #[test]
    fn mailbox_ids_are_read_raw_or_percent_encoded_from_both_endpoints() {
        let graph = |path: &str| mailbox_in_path(FaultTarget::Graph, path);
        let import = |path: &str| mailbox_in_path(FaultTarget::Import, path);
        assert_eq!(
            graph("/admin/exchange/mailboxes/MBX%3Ae0643f21%40a7809c93/folders").as_deref(),
            Some(MBX)
        );
        assert_eq!(
            graph("/v1.0/admin/exchange/mailboxes/MBX:e0643f21@a7809c93/createImportSession")
                .as_deref(),
            Some(MBX)
        );
        assert_eq!(
            import("/api/gv1.0/Mailboxes('MBX:e0643f21@a7809c93')/importItem").as_deref(),
            Some(MBX)
        );
        assert_eq!(
            import("/api/gv1.0/Mailboxes(%27MBX%3Ae0643f21%40a7809c93%27)/importItem").as_deref(),
            Some(MBX)
        );
        assert_eq!(graph("/users/adele@contoso.com/settings/exchange"), None);
        assert_eq!(import("/api/gv1.0/Users('x')/importItem"), None);
        assert_eq!(
            mailbox_in_path(FaultTarget::Token, "/t/oauth2/v2.0/token"),
            None
        );
    }
}
