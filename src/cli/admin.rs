//! The admin endpoint:
//! - `GET /healthz`: 200 `{"status":"ok"}`, 503 while shutting down; no
//!   token needed;
//! - `GET /metrics`: Prometheus text;
//! - `GET /v1/status`: the `outbox status --json` view;
//! - `GET /v1/dump?tree=&sink=&from=&limit=`: the `outbox dump --format
//!   json` view, without log records (the engine cannot read them for us);
//! - `POST /v1/dlq/redrive`, `POST /v1/dlq/purge` with
//!   `{"sink":NAME,"seqs":[N..]|null}`: answer `{"moved":N}` / `{"purged":N}`.
//!
//! Every route but `/healthz` requires the bearer token when one is set.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use outbox::{Error, Outbox, Seq, SinkName};
use serde::Deserialize;
use serde_json::json;

use super::auth::BearerAuth;
use super::ingest::{error, unauthorized};
use super::prometheus::PromHook;
use super::view::{self, DumpQuery};

/// Shared by every admin request.
pub struct AdminState {
    /// The engine.
    pub outbox: Arc<Outbox<()>>,
    /// The recorder's handle.
    pub metrics: PrometheusHandle,
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
        .route("/v1/dlq/redrive", post(redrive))
        .route("/v1/dlq/purge", post(purge))
        .with_state(state)
}

fn allowed(s: &AdminState, headers: &HeaderMap) -> bool {
    s.auth.as_ref().is_none_or(|a| a.check(headers))
}

fn engine_error(e: Error) -> Response {
    let status = match &e {
        Error::Config { .. } => StatusCode::BAD_REQUEST,
        Error::UnknownSink(_) => StatusCode::NOT_FOUND,
        Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

async fn healthz(State(s): State<Arc<AdminState>>) -> Response {
    if s.outbox.is_closing() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "shutting down"})),
        )
            .into_response()
    } else {
        axum::Json(json!({"status": "ok"})).into_response()
    }
}

async fn metrics(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if !allowed(&s, &headers) {
        return unauthorized();
    }
    if let Ok(st) = s.outbox.status() {
        PromHook::refresh(&st);
    }
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

fn dlq_target(r: &DlqRequest) -> outbox::Result<(SinkName, Option<Vec<Seq>>)> {
    let sink = SinkName::new(r.sink.clone())?;
    Ok((
        sink,
        r.seqs.as_ref().map(|v| v.iter().map(|s| Seq(*s)).collect()),
    ))
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
    body: Result<axum::Json<DlqRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    dlq_op(state, headers, body, DlqOp::Redrive).await
}

async fn purge(
    state: State<Arc<AdminState>>,
    headers: HeaderMap,
    body: Result<axum::Json<DlqRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    dlq_op(state, headers, body, DlqOp::Purge).await
}

async fn dlq_op(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: Result<axum::Json<DlqRequest>, axum::extract::rejection::JsonRejection>,
    op: DlqOp,
) -> Response {
    if !allowed(&s, &headers) {
        return unauthorized();
    }
    let axum::Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let (sink, seqs) = match dlq_target(&req) {
        Ok(t) => t,
        Err(e) => return engine_error(e),
    };
    let (result, field) = match op {
        DlqOp::Redrive => (s.outbox.dlq_redrive(&sink, seqs).await, "moved"),
        DlqOp::Purge => (s.outbox.dlq_purge(&sink, seqs).await, "purged"),
    };
    match result {
        Ok(n) => {
            tracing::info!(sink = %sink, n, "DLQ {field}");
            axum::Json(json!({ field: n, "sink": sink.as_str() })).into_response()
        }
        Err(e) => engine_error(e),
    }
}
