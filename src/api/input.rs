//! Reads and checks what a client sends besides ids: content type, body (with size and pace limits),
//! `If-Match` and `Idempotency-Key`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use super::ApiError;
use tokio::time::Instant;

use crate::app::AppState;
use crate::budget::{BudgetError, MemoryBudget, Reservation};
use crate::config::UPLOAD_RATE_GRACE;
use crate::ids::check_exchange_id;

/// The request header carrying an idempotency key (IETF httpapi draft).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Refuses a request whose `Content-Type` is not `expected` (parameters such as `charset` are ignored).
pub fn require_content_type(headers: &HeaderMap, expected: &'static str) -> Result<(), ApiError> {
    let received = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = received.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType {
            expected,
            received: received.to_owned(),
        })
    }
}

/// Announced bodies up to this size are reserved whole before reading; larger ones as they arrive, so a
/// client that announces much and sends little holds little.
const RESERVE_UPFRONT_BYTES: u64 = 1024 * 1024;

/// How much a body may be, and how long it may pause.
pub struct BodyLimits<'a> {
    /// Largest body accepted.
    pub limit: u64,
    /// The item size limit to name when the body is too large.
    pub item_limit: u64,
    /// Longest pause between two pieces of the body.
    pub idle: Duration,
    /// The memory budget the body's bytes are reserved from.
    pub budget: &'a MemoryBudget,
    /// Whose bytes they are, for the client's share of the budget.
    pub client: &'a str,
    /// Slowest upload accepted once [`UPLOAD_RATE_GRACE`] has passed, in bytes per second; 0 is off.
    pub min_rate: u64,
}

impl<'a> BodyLimits<'a> {
    /// The gateway's limits for a body of at most `limit` bytes from `client`.
    pub fn new(state: &'a AppState, client: &'a str, limit: u64) -> BodyLimits<'a> {
        BodyLimits {
            limit,
            item_limit: state.max_item_bytes,
            idle: state.client_body_timeout,
            budget: &state.budget,
            client,
            min_rate: state.min_upload_bytes_per_sec,
        }
    }
}

/// Reads at most `limit` bytes, reserving them from the memory budget first (all at once when the size is
/// announced, else as they arrive). A declared or actual larger body is refused as over `item_limit`
/// without being buffered, and an upload that pauses longer than `idle` is cut off.
pub async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limits: BodyLimits<'_>,
) -> Result<(Bytes, Reservation), ApiError> {
    let BodyLimits {
        limit,
        item_limit,
        idle,
        budget,
        client,
        min_rate,
    } = limits;
    let too_large = || ApiError::ItemTooLarge { limit: item_limit };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // Larger than the whole budget: it could never fit, so it is refused before a byte is read.
    if declared.is_some_and(|len| len > budget.total() as u64) {
        return Err(ApiError::LargerThanMemoryBudget {
            total: budget.total(),
        });
    }
    let mut reservation = budget.empty_for(client);
    let upfront = declared.filter(|len| *len <= RESERVE_UPFRONT_BYTES);
    if let Some(declared) = upfront {
        reserve(budget, &mut reservation, declared as usize).await?;
    }
    // One buffer of the announced size, so a large item is not copied as it grows. Its pages are not
    // touched (and so not resident) until the bytes arrive, which is when they are reserved.
    let mut buffer = BytesMut::with_capacity(declared.map_or(0, |len| len as usize));
    let started = Instant::now();
    loop {
        // The next piece must come within the pause limit, and soon enough to keep the upload above
        // the minimum rate once its grace period is over.
        let mut wait = idle;
        let mut rate_bound = false;
        if min_rate > 0 {
            let needed = (buffer.len() as u64 + 1).div_ceil(min_rate);
            let due = started + UPLOAD_RATE_GRACE.max(Duration::from_secs(needed));
            let left = due.saturating_duration_since(Instant::now());
            if left < wait {
                (wait, rate_bound) = (left, true);
            }
        }
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) if rate_bound => {
                return Err(ApiError::UploadTooSlow {
                    min_rate,
                    received: buffer.len(),
                    after: started.elapsed(),
                })
            }
            Err(_) => return Err(ApiError::RequestTimeout { idle }),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ApiError::UnreadableBody(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limit {
                return Err(too_large());
            }
            if upfront.is_none() {
                reserve(budget, &mut reservation, data.len()).await?;
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok((buffer.freeze(), reservation))
}

/// Reserves `bytes` more of the memory budget: 413 when they can never fit, 503 when no room came in time.
pub async fn reserve(
    budget: &MemoryBudget,
    reservation: &mut Reservation,
    bytes: usize,
) -> Result<(), ApiError> {
    budget
        .grow(reservation, bytes)
        .await
        .map_err(|error| match error {
            BudgetError::LargerThanBudget { total } => ApiError::LargerThanMemoryBudget { total },
            BudgetError::Full => ApiError::OverCapacity,
            BudgetError::ClientShare { share } => ApiError::ClientOverCapacity { share },
        })
}

/// The change key in `If-Match: "<changeKey>"`: one strong entity tag.
pub fn if_match_change_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers
        .get(header::IF_MATCH)
        .ok_or(ApiError::IfMatchRequired)?
        .to_str()
        .map_err(|_| ApiError::InvalidIfMatch)?
        .trim();
    let change_key = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .ok_or(ApiError::InvalidIfMatch)?;
    check_exchange_id(change_key, "change key").map_err(|_| ApiError::InvalidIfMatch)?;
    Ok(change_key.to_owned())
}

/// The `Idempotency-Key`, if the client sent one.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(crate::idempotency::parse_key)
        .map(|key| Some(key.to_owned()))
        .ok_or(ApiError::InvalidIdempotencyKey)
}
