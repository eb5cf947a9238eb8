//! The admin endpoint:
//! - `GET /healthz`: 200 `{"status":"ok"}`; 503 while shutting down, once a
//!   sink stopped on data it cannot read (`corrupt`), the store failed, or
//!   the write path has been stuck in one write or flush for 30 s
//!   (`stalled`, [`outbox::Outbox::stalled`]); no token needed;
//! - `GET /metrics`: Prometheus text;
//! - `GET /v1/status`: the `outbox status --json` view;
//! - `GET /v1/dump?tree=&sink=&from=&limit=`: the `outbox dump --format
//!   json` view, without log records (the engine cannot read them for us);
//! - `GET /v1/dlq?sink=NAME&seqs=1,2&since=&until=&error_match=&limit=`:
//!   `{"sink":NAME,"entries":[..]}`, the entries `outbox dlq list` shows;
//! - `GET /v1/dlq/{sink}/{seq}`: one entry with its attempt history (404
//!   when there is none);
//! - `POST /v1/dlq/redrive`, `POST /v1/dlq/purge` with
//!   `{"sink":NAME,"seqs":[N..]|null}` and the same filter in the query
//!   (`since`, `until`, `error_match`, `limit`, and `dry_run=true` to
//!   change nothing): answer `{"sink","selected":[seqs],"moved":N}` /
//!   `{..,"purged":N}`, with `"dry_run":true` and a count of 0 in a dry run;
//! - `POST /v1/sinks/forget` with `{"sink":NAME}`: forgets an orphan (409 if
//!   the sink is configured, 404 if it is not an orphan); answers
//!   `{"forgotten":NAME,"offset":N}`;
//! - `POST /v1/sinks/pause`, `POST /v1/sinks/resume` with `{"sink":NAME}`:
//!   pauses or resumes a configured sink, durably (404 for an unknown
//!   sink); answer `{"sink","paused":bool,"paused_at_ms":N|null,
//!   "changed":bool}` (`changed` is false when it already was so).
//!
//! Every route but `/healthz` requires the bearer token when one is set.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use outbox::{ConfigError, DispatchErrorKind, Error, Seq, SinkName};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::BearerAuth;
use super::dlq::{Filter, FilterQuery, entry_json};
use super::ingest::{error, unauthorized};
use super::prometheus::PromHook;
use super::token::Engine;
use super::view::{self, DumpQuery};

/// Shared by every admin request.
pub struct AdminState {
    /// The engine.
    pub outbox: Arc<Engine>,
    /// The recorder's handle.
    pub metrics: PrometheusHandle,
    /// The engine's metrics hook, for the gauges set at scrape time.
    pub hook: Arc<PromHook>,
    /// Required token, if any.
    pub auth: Option<BearerAuth>,
}

/// The admin router.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/dump", get(dump))
        .route("/v1/dlq", get(dlq_list))
        .route("/v1/dlq/{sink}/{seq}", get(dlq_show))
        .route("/v1/dlq/redrive", post(redrive))
        .route("/v1/dlq/purge", post(purge))
        .route("/v1/sinks/forget", post(forget))
        .route("/v1/sinks/pause", post(pause))
        .route("/v1/sinks/resume", post(resume))
        .with_state(state)
}

fn allowed(s: &AdminState, headers: &HeaderMap) -> bool {
    s.auth.as_ref().is_none_or(|a| a.check(headers))
}

fn engine_error(e: Error) -> Response {
    let status = match &e {
        Error::Config(ConfigError::UnknownSink(_)) => StatusCode::NOT_FOUND,
        Error::Config(_) => StatusCode::BAD_REQUEST,
        Error::Dispatch(DispatchErrorKind::Rejected(_)) => StatusCode::CONFLICT,
        Error::Dispatch(DispatchErrorKind::ShuttingDown) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

async fn healthz(State(s): State<Arc<AdminState>>) -> Response {
    let unavailable = |body| (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    if s.outbox.is_closing() {
        return unavailable(json!({"status": "shutting down"}));
    }
    if !s.outbox.is_healthy() {
        let corrupt: Vec<_> = s
            .outbox
            .status()
            .map(|st| {
                st.sinks
                    .into_iter()
                    .filter(|k| k.state == "corrupt")
                    .map(|k| json!({"sink": k.name, "error": k.error}))
                    .collect()
            })
            .unwrap_or_default();
        let stalled = s.outbox.stalled(Engine::STALL_AFTER);
        return unavailable(json!({"status": "failing", "corrupt": corrupt, "stalled": stalled}));
    }
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn metrics(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if !allowed(&s, &headers) {
        return unauthorized();
    }
    s.hook.scrape(&s.outbox);
    let mut r = s.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn status(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if !allowed(&s, &headers) {
        return unauthorized();
    }
    match super::status::online(&s.outbox) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => engine_error(e),
    }
}

async fn dump(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    q: Result<Query<DumpQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !allowed(&s, &headers) {
        return unauthorized();
    }
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad query: expected tree=log|offsets|dlq|meta|all, sink=NAME, from=SEQ, limit=N",
        );
    };
    match view::online(&s.outbox, &q) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => engine_error(e),
    }
}

/// Body of the DLQ routes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqRequest {
    /// The sink.
    pub sink: String,
    /// The seqs, or null for all.
    pub seqs: Option<Vec<u64>>,
}

/// Most entries in one page of `GET /v1/dlq`.
pub const DLQ_PAGE_ENTRIES: usize = 1000;
/// Record bytes after which a page of `GET /v1/dlq` ends (a page holds at
/// least one entry).
pub const DLQ_PAGE_BYTES: usize = 16 << 20;

/// Query string of the DLQ routes. `GET /v1/dlq` takes all of it; the
/// POST routes take the filter and `dry_run` (their body names the sink
/// and the seqs). The fields are spelled out rather than flattened from
/// [`FilterQuery`]: `serde_urlencoded` cannot read a number inside a
/// flattened struct.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqQuery {
    /// The sink (`GET /v1/dlq` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
    /// Comma-separated seqs (`GET /v1/dlq` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seqs: Option<String>,
    /// As `--since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// As `--until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// As `--error-match`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_match: Option<String>,
    /// As `--limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The seq a page of `GET /v1/dlq` starts at: the `next` of the page
    /// before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Report what would change and change nothing (POST routes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

impl DlqQuery {
    fn filter_query(&self) -> FilterQuery {
        FilterQuery {
            since: self.since.clone(),
            until: self.until.clone(),
            error_match: self.error_match.clone(),
            limit: self.limit,
        }
    }

    /// The filter, with `seqs` on top of the query's own.
    fn filter(&self, seqs: Option<&[u64]>) -> outbox::Result<Filter> {
        Filter::new(&self.filter_query(), seqs, super::clock::now_ms())
    }

    fn seq_list(&self) -> outbox::Result<Option<Vec<u64>>> {
        self.seqs
            .as_deref()
            .map(|s| {
                s.split(',')
                    .map(|n| {
                        n.trim().parse::<u64>().map_err(|_| {
                            Error::config(
                                "seqs",
                                format!("`{n}` is not a seq; expected seqs=1,2,3"),
                            )
                        })
                    })
                    .collect()
            })
            .transpose()
    }
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn bad_query(e: axum::extract::rejection::QueryRejection) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        format!(
            "bad query ({}): expected sink=NAME, seqs=1,2, since=TIME, until=TIME, error_match=REGEX, limit=N, dry_run=true",
            e.body_text()
        ),
    )
}

fn sink_name(name: &str) -> outbox::Result<SinkName> {
    SinkName::new(name.to_string()).map_err(|e| Error::config("sink", e.to_string()))
}

async fn dlq_list(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    q: QueryResult<DlqQuery>,
) -> Response {
    if !allowed(&s, &headers) {
        return unauthorized();
    }
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let Some(name) = q.sink.as_deref() else {
        return error(StatusCode::BAD_REQUEST, "sink=NAME is required");
    };
    let sink = match sink_name(name) {
        Ok(n) => n,
        Err(e) => return engine_error(e),
    };
    let filter = match q.seq_list().and_then(|seqs| q.filter(seqs.as_deref())) {
        Ok(f) => f,
        Err(e) => return engine_error(e),
    };
    // One page: bounded in entries and in record bytes, however large the
    // DLQ; the client asks again from `next` until it is null.
    let from = Seq(q.from.unwrap_or(0));
    let page = tokio::task::block_in_place(|| {
        s.outbox.dlq_page(
            &sink,
            from,
            |e| filter.matches(e),
            filter.limit().min(DLQ_PAGE_ENTRIES),
            DLQ_PAGE_BYTES,
        )
    });
    match page {
        Ok(page) => {
            // A page cut by `limit` itself is the last one the client wants.
            let next = page
                .next
                .filter(|_| page.entries.len() < filter.limit())
                .map(|n| n.0);
            let entries: Vec<_> = page.entries.iter().map(view::dlq_json).collect();
            axum::Json(json!({"sink": sink.as_str(), "entries": entries, "next": next}))
                .into_response()
        }
        Err(e) => engine_error(e),
    }
}

async fn dlq_show(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    path: Result<Path<(String, u64)>, axum::extract::rejection::PathRejection>,
) -> Response {
    if !allowed(&s, &headers) {
        return unauthorized();
    }
    let Ok(Path((name, seq))) = path else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected /v1/dlq/{sink}/{seq} with a numeric seq",
        );
    };
    let sink = match sink_name(&name) {
        Ok(n) => n,
        Err(e) => return engine_error(e),
    };
    match s.outbox.dlq_get(&sink, Seq(seq)) {
        Ok(found) => match found {
            Some(e) => axum::Json(entry_json(&e)).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                format!("sink {sink} has no DLQ entry at seq {seq}"),
            ),
        },
        Err(e) => engine_error(e),
    }
}

/// What a DLQ route does.
#[derive(Clone, Copy)]
enum DlqOp {
    Redrive,
    Purge,
}

async fn redrive(
    state: State<Arc<AdminState>>,
    headers: HeaderMap,
    q: QueryResult<DlqQuery>,
    body: Result<axum::Json<DlqRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    dlq_op(state, headers, q, body, DlqOp::Redrive).await
}

async fn purge(
    state: State<Arc<AdminState>>,
    headers: HeaderMap,
    q: QueryResult<DlqQuery>,
    body: Result<axum::Json<DlqRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    dlq_op(state, headers, q, body, DlqOp::Purge).await
}

async fn dlq_op(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    q: QueryResult<DlqQuery>,
    body: Result<axum::Json<DlqRequest>, axum::extract::rejection::JsonRejection>,
    op: DlqOp,
) -> Response {
    if !allowed(&s, &headers) {
        return unauthorized();
    }
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    if q.sink.is_some() || q.seqs.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "the sink and the seqs go in the body: {\"sink\":NAME,\"seqs\":[..]|null}",
        );
    }
    let axum::Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let sink = match sink_name(&req.sink) {
        Ok(n) => n,
        Err(e) => return engine_error(e),
    };
    let filter = match q.filter(req.seqs.as_deref()) {
        Ok(f) => f,
        Err(e) => return engine_error(e),
    };
    let field = match op {
        DlqOp::Redrive => "moved",
        DlqOp::Purge => "purged",
    };
    if matches!(op, DlqOp::Redrive) {
        // A dry run must refuse an unknown sink as the real one would.
        match s.outbox.status() {
            Ok(st) if st.sinks.iter().any(|x| x.name == sink.as_str()) => {}
            Ok(_) => return engine_error(ConfigError::UnknownSink(sink.to_string()).into()),
            Err(e) => return engine_error(e),
        }
    }
    let selected = match tokio::task::block_in_place(|| {
        s.outbox
            .dlq_select(&sink, |e| filter.matches(e), filter.limit())
    }) {
        Ok(seqs) => seqs,
        Err(e) => return engine_error(e),
    };
    let seqs_json: Vec<u64> = selected.iter().map(|s| s.0).collect();
    if q.dry_run {
        return axum::Json(json!({
            "sink": sink.as_str(), "dry_run": true, "selected": seqs_json, field: 0
        }))
        .into_response();
    }
    // Everything: let the engine take the whole prefix in one pass rather
    // than look up each listed seq.
    let arg = (!filter.is_everything()).then_some(selected);
    if arg.as_ref().is_some_and(Vec::is_empty) {
        return axum::Json(json!({"sink": sink.as_str(), "selected": seqs_json, field: 0}))
            .into_response();
    }
    let result = match op {
        DlqOp::Redrive => s.outbox.dlq_redrive(&sink, arg).await,
        DlqOp::Purge => s.outbox.dlq_purge(&sink, arg).await,
    };
    match result {
        Ok(n) => {
            tracing::info!(sink = %sink, n, "DLQ {field}");
            axum::Json(json!({ field: n, "sink": sink.as_str(), "selected": seqs_json }))
                .into_response()
        }
        Err(e) => engine_error(e),
    }
}

/// Body of `POST /v1/sinks/forget`, `/v1/sinks/pause` and
/// `/v1/sinks/resume`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkRequest {
    /// The sink (for forget: the orphan).
    pub sink: String,
}

type SinkBody = Result<axum::Json<SinkRequest>, axum::extract::rejection::JsonRejection>;

/// The sink a `/v1/sinks/*` request names, once its token is checked; the
/// answer to send instead when it cannot be had.
fn sink_of(s: &AdminState, headers: &HeaderMap, body: SinkBody) -> Result<SinkName, Box<Response>> {
    if !allowed(s, headers) {
        return Err(Box::new(unauthorized()));
    }
    let axum::Json(req) =
        body.map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e.body_text())))?;
    SinkName::new(req.sink).map_err(|e| Box::new(engine_error(e.into())))
}

async fn forget(State(s): State<Arc<AdminState>>, headers: HeaderMap, body: SinkBody) -> Response {
    let sink = match sink_of(&s, &headers, body) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    match s.outbox.forget_orphan(&sink).await {
        Ok(offset) => {
            axum::Json(json!({"forgotten": sink.as_str(), "offset": offset.0})).into_response()
        }
        Err(e) => engine_error(e),
    }
}

/// Pauses (`pause`) or resumes a sink.
async fn pause_or_resume(
    s: &AdminState,
    headers: &HeaderMap,
    body: SinkBody,
    pause: bool,
) -> Response {
    let sink = match sink_of(s, headers, body) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let before = s.outbox.status().ok().and_then(|st| {
        st.sinks
            .into_iter()
            .find(|k| k.name == sink.as_str())
            .map(|k| k.paused_at_ms)
    });
    let result = if pause {
        s.outbox.pause_sink(&sink).await.map(Some)
    } else {
        s.outbox.resume_sink(&sink).await.map(|_| None)
    };
    match result {
        Ok(now) => {
            let changed = before.is_some_and(|b| b.is_some() != now.is_some());
            axum::Json(super::pause::answer(&sink, now, changed)).into_response()
        }
        Err(e) => engine_error(e),
    }
}

async fn pause(State(s): State<Arc<AdminState>>, headers: HeaderMap, body: SinkBody) -> Response {
    pause_or_resume(&s, &headers, body, true).await
}

async fn resume(State(s): State<Arc<AdminState>>, headers: HeaderMap, body: SinkBody) -> Response {
    pause_or_resume(&s, &headers, body, false).await
}
