//! HTTP ingest: `POST /v1/records`.
//!
//! Contract (see `docs/operations.md`):
//! - the body is NDJSON, one record per non-blank line, payload = the line;
//! - a request is atomic: its records go to the engine in one
//!   `try_dispatch_many` (or `try_dispatch_once`), which appends them as one
//!   log value, all or none;
//! - `200 {"accepted":N,"first_seq":..,"last_seq":..}` only once durable
//!   under the sync policy;
//! - `400 {"error":..,"line":N}` names the first bad line (1-based) and
//!   nothing is appended; a body without records is a 400 too;
//! - `413` when the body is over `ingest.max_body_bytes`, or a line is over
//!   `max_record_bytes` (then with `"line"`);
//! - `503` with `Retry-After` while a Block sink is full or while shutting
//!   down, answered at once (admission never waits for room), and, under
//!   a burst of more concurrent requests than the engine queues (4096), while
//!   its queue is full;
//! - `401` without the bearer token, when one is configured;
//! - with an `Idempotency-Key` header (1 to 255 visible ASCII characters),
//!   a retry of a request within the idempotency window (default 24 h)
//!   appends nothing and gets the first request's answer, the same seqs,
//!   with `Idempotent-Replayed: true`; the key is durable with the records,
//!   in the same transaction; a key reused for another body is a `409`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use outbox::{DispatchErrorKind, Record};
use serde_json::json;

use super::auth::BearerAuth;
use super::ndjson::{self, LineError};
use super::token::{AckToken, Engine};

/// Seconds a client is told to wait on a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Shared by every request.
pub struct IngestState {
    /// The engine.
    pub outbox: Arc<Engine>,
    /// Required token, if any.
    pub auth: Option<BearerAuth>,
    /// Per-record limit.
    pub max_record: usize,
    /// Set when the daemon begins to stop: every later request gets 503.
    pub stopping: AtomicBool,
    /// Records accepted so far.
    pub accepted: AtomicU64,
}

/// The ingest router.
pub fn router(state: Arc<IngestState>, max_body: usize) -> Router {
    Router::new()
        .route("/v1/records", post(records))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// A JSON error response.
pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": msg.into() }))).into_response()
}

fn unavailable(msg: String) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, msg);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    r
}

/// 401 with the challenge header.
pub fn unauthorized() -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn line_error(e: &LineError) -> Response {
    let status = match e {
        LineError::Invalid { .. } => StatusCode::BAD_REQUEST,
        LineError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
    };
    (
        status,
        axum::Json(json!({ "error": format!("{e}; nothing was appended"), "line": e.line() })),
    )
        .into_response()
}

/// The request's `Idempotency-Key`, if any.
///
/// # Errors
/// The reason, for a 400, when it is empty, too long or not visible ASCII.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, &'static str> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_string()))
        }
        _ => Err("Idempotency-Key must be 1 to 255 visible ASCII characters; nothing was appended"),
    }
}

async fn records(
    State(s): State<Arc<IngestState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(auth) = &s.auth
        && !auth.check(&headers)
    {
        return unauthorized();
    }
    if s.stopping.load(Ordering::Acquire) || s.outbox.is_closing() {
        return unavailable("outbox is shutting down; nothing was appended".into());
    }
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body is over ingest.max_body_bytes; nothing was appended",
            );
        }
        Err(r) => {
            return error(
                r.status(),
                format!("cannot read the body: {}", r.body_text()),
            );
        }
    };
    let lines = match ndjson::parse_body(&body, s.max_record) {
        Ok(l) => l,
        Err(e) => return line_error(&e),
    };
    if lines.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the body holds no records");
    }
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let items: Vec<(Record, Vec<AckToken>)> = lines
        .into_iter()
        .map(|l| (Record::new(l), Vec::new()))
        .collect();
    // Admission never waits: a full Block sink, shutdown or a full queue
    // answers 503 at once; only durability is awaited.
    let dispatched = match &key {
        Some(k) => match s.outbox.try_dispatch_once(&format!("ingest:{k}"), items) {
            Ok(durable) => durable.await,
            Err(e) => Err(e),
        },
        None => match s.outbox.try_dispatch_many(items) {
            Ok(durable) => durable.await.map(|receipts| outbox::Dispatched {
                receipts,
                duplicate: false,
            }),
            Err(e) => Err(e),
        },
    };
    // The items that come back on an error are the request's lines: the
    // client holds them and retries the whole request.
    match dispatched.map_err(outbox::DispatchError::into_kind) {
        Ok(d) => match (d.receipts.first(), d.receipts.last()) {
            (Some(first), Some(last)) => {
                if !d.duplicate {
                    s.accepted
                        .fetch_add(d.receipts.len() as u64, Ordering::Relaxed);
                }
                let mut r = (
                    StatusCode::OK,
                    axum::Json(json!({
                        "accepted": d.receipts.len(),
                        "first_seq": first.seq.0,
                        "last_seq": last.seq.0,
                    })),
                )
                    .into_response();
                if d.duplicate {
                    r.headers_mut()
                        .insert("idempotent-replayed", HeaderValue::from_static("true"));
                }
                r
            }
            _ => error(StatusCode::BAD_REQUEST, "the body holds no records"),
        },
        Err(DispatchErrorKind::KeyReused(why)) => error(
            StatusCode::CONFLICT,
            format!("Idempotency-Key reused for a different body ({why})"),
        ),
        Err(DispatchErrorKind::Rejected(why)) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{why}; nothing was appended"),
        ),
        Err(DispatchErrorKind::ShuttingDown) => {
            unavailable("outbox is shutting down; nothing was appended".into())
        }
        Err(DispatchErrorKind::Full { sink }) => unavailable(format!(
            "sink {sink} is at its lag limit (on_full = block); nothing was appended"
        )),
        Err(DispatchErrorKind::Busy) => unavailable(
            "the engine's queue is full (too many concurrent requests); nothing was appended"
                .into(),
        ),
        Err(e) => {
            tracing::error!(error = %e, "ingest: append failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("append failed: {e}; nothing was acknowledged"),
            )
        }
    }
}
