//! The webhook sink against a real HTTP receiver on 127.0.0.1.
//!
//! The receiver records every request (path, headers, body, arrival time)
//! and answers from a script. Signatures are checked by a verifier written
//! here from the Standard Webhooks and GitHub specs, with HMAC built by hand
//! on SHA-256, so it shares no signing code with the sink.
#![cfg(feature = "webhook")]

mod common;
#[path = "webhook/rotation.rs"]
mod rotation;

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use outbox::sink::webhook::{Scheme, WebhookConfig, WebhookSink};
use outbox::{Outbox, Record, SinkConfig};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, watch};

// ---------------------------------------------------------------------------
// An independent verifier.

/// HMAC-SHA256 per RFC 2104, on the sha2 hash alone.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// What a Standard Webhooks receiver does: check the timestamp against its
/// own clock (5 minutes either way), then accept if any `v1` signature
/// matches. Returns the webhook id to deduplicate on.
fn verify_standard(secret: &str, h: &HeaderMap, body: &[u8], now: u64) -> Result<String, String> {
    let id = header(h, "webhook-id");
    let ts = header(h, "webhook-timestamp");
    if id.is_empty() {
        return Err("no webhook-id".into());
    }
    let ts_n: u64 = ts.parse().map_err(|_| format!("bad timestamp {ts:?}"))?;
    if ts_n.abs_diff(now) > 300 {
        return Err(format!("timestamp {ts_n} too far from {now}"));
    }
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .map_err(|e| e.to_string())?;
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(body);
    let expected = hmac_sha256(&key, &signed);
    for sig in header(h, "webhook-signature").split(' ') {
        if let Some(b64) = sig.strip_prefix("v1,")
            && let Ok(got) = STANDARD.decode(b64)
            && ct_eq(&got, &expected)
        {
            return Ok(id.to_string());
        }
    }
    Err("no signature matches".into())
}

fn verify_github(secret: &[u8], h: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let got = header(h, "x-hub-signature-256");
    let hex: String = hmac_sha256(secret, body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if ct_eq(got.as_bytes(), format!("sha256={hex}").as_bytes()) {
        Ok(())
    } else {
        Err(format!("bad github signature {got:?}"))
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------
// The receiver.

/// One request as the receiver saw it, and what it answered.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    at: Instant,
    status: u16,
}

impl Hit {
    fn id(&self) -> &str {
        header(&self.headers, "webhook-id")
    }
    fn timestamp(&self) -> u64 {
        header(&self.headers, "webhook-timestamp").parse().unwrap()
    }
}

/// What the receiver answers.
#[derive(Clone, Debug)]
enum Reply {
    Status(u16),
    With {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Never answers.
    Hang,
    /// Streams this many bytes of `x` with status 200 or 500, counting what
    /// it hands to the server, and reports the count when the body is
    /// dropped (finished, or cut off by the client).
    Stream {
        status: u16,
        total: usize,
    },
    /// 200 if the Standard Webhooks signature verifies with this secret and
    /// the id was not seen before, else 401.
    Verify(&'static str),
}

#[derive(Clone)]
struct Receiver {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    fallback: Arc<Mutex<Reply>>,
    count: watch::Receiver<usize>,
    count_tx: Arc<watch::Sender<usize>>,
    streamed: Arc<Mutex<Option<oneshot::Sender<usize>>>>,
    seen_ids: Arc<Mutex<HashSet<String>>>,
}

impl Receiver {
    /// Starts a receiver on 127.0.0.1 that answers `script` in order, then
    /// `fallback` forever.
    async fn start(script: Vec<Reply>, fallback: Reply) -> Receiver {
        // A small send buffer (inherited by accepted sockets) keeps the
        // kernel from absorbing megabytes of a streamed body on loopback, so
        // what the server hands over tracks what the client reads.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(16 << 10).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(64).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (count_tx, count) = watch::channel(0);
        let rx = Receiver {
            url: format!("http://{addr}/hook"),
            hits: Arc::default(),
            script: Arc::new(Mutex::new(script.into())),
            fallback: Arc::new(Mutex::new(fallback)),
            count,
            count_tx: Arc::new(count_tx),
            streamed: Arc::default(),
            seen_ids: Arc::default(),
        };
        let app = axum::Router::new().fallback(handle).with_state(rx.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        rx
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().clone()
    }

    /// Waits until at least `n` requests have been answered (or, for a
    /// hanging reply, received).
    async fn wait_hits(&self, n: usize) {
        let mut c = self.count.clone();
        tokio::time::timeout(Duration::from_secs(10), c.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {n} requests"))
            .unwrap();
    }

    /// Arms the byte counter of the next streamed reply.
    fn on_streamed(&self) -> oneshot::Receiver<usize> {
        let (tx, rx) = oneshot::channel();
        *self.streamed.lock() = Some(tx);
        rx
    }
}

static XS: [u8; 64 << 10] = [b'x'; 64 << 10];

/// Reports how much a streamed body handed over once the server drops it.
struct Counted {
    sent: Arc<AtomicUsize>,
    done: Option<oneshot::Sender<usize>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(d) = self.done.take() {
            let _ = d.send(self.sent.load(Ordering::SeqCst));
        }
    }
}

async fn handle(State(rx): State<Receiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let reply = rx
        .script
        .lock()
        .pop_front()
        .unwrap_or_else(|| rx.fallback.lock().clone());
    let mut hit = Hit {
        path: uri.path().to_string(),
        headers,
        body: body.to_vec(),
        at: Instant::now(),
        status: 0,
    };
    let response = match reply {
        Reply::Status(s) => status_only(s),
        Reply::With {
            status,
            headers,
            body,
        } => {
            let mut r = Response::builder().status(status);
            for (k, v) in headers {
                r = r.header(k, v);
            }
            r.body(Body::from(body)).unwrap()
        }
        Reply::Hang => {
            rx.hits.lock().push(hit);
            rx.count_tx.send_modify(|c| *c += 1);
            std::future::pending::<()>().await;
            unreachable!()
        }
        Reply::Stream { status, total } => {
            let guard = Counted {
                sent: Arc::new(AtomicUsize::new(0)),
                done: rx.streamed.lock().take(),
            };
            let stream = futures::stream::unfold((guard, 0usize), move |(g, n)| async move {
                if n >= total {
                    return None;
                }
                let len = XS.len().min(total - n);
                g.sent.fetch_add(len, Ordering::SeqCst);
                let chunk = Bytes::from_static(&XS[..len]);
                Some((Ok::<_, Infallible>(chunk), (g, n + len)))
            });
            Response::builder()
                .status(status)
                .body(Body::from_stream(stream))
                .unwrap()
        }
        Reply::Verify(secret) => {
            match verify_standard(secret, &hit.headers, &hit.body, now_secs()) {
                Ok(id) if rx.seen_ids.lock().insert(id.clone()) => status_only(200),
                _ => status_only(401),
            }
        }
    };
    hit.status = response.status().as_u16();
    rx.hits.lock().push(hit);
    rx.count_tx.send_modify(|c| *c += 1);
    response
}

fn status_only(s: u16) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(s).unwrap())
        .body(Body::empty())
        .unwrap()
}

// ---------------------------------------------------------------------------
// Helpers.

const VECTOR_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const OTHER_SECRET: &str = "whsec_b3V0Ym94LXRlc3Qtcm90YXRpb24ta2V5";

fn secrets(name: &str) -> Option<OsString> {
    match name {
        "HOOK_SECRET" => Some(VECTOR_SECRET.into()),
        "HOOK_SECRET_NEW" => Some(OTHER_SECRET.into()),
        "HOOK_RAW" => Some("raw-github-secret".into()),
        _ => None,
    }
}

fn sink_for(rx: &Receiver) -> WebhookSink {
    WebhookSink::with_env(&WebhookConfig::new(&rx.url, "HOOK_SECRET"), secrets).unwrap()
}

type Acks = tokio::sync::mpsc::UnboundedReceiver<u32>;

/// An outbox in `dir` with one sink, `hook`.
async fn open_hook(
    dir: &std::path::Path,
    sink: WebhookSink,
    cfg: SinkConfig,
) -> (Outbox<u32>, Acks) {
    Outbox::<u32>::builder(dir)
        .sink("hook", sink, cfg)
        .open()
        .await
        .unwrap()
}

/// A reply with a `Retry-After` header.
fn retry_after(status: u16, value: impl Into<String>) -> Reply {
    Reply::With {
        status,
        headers: vec![("retry-after", value.into())],
        body: vec![],
    }
}

async fn next_ack(acks: &mut Acks) -> u32 {
    tokio::time::timeout(Duration::from_secs(10), acks.recv())
        .await
        .expect("ack within 10 s")
        .expect("ack channel open")
}

// ---------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn the_request_carries_the_published_vector_when_clock_and_id_are_fixed() {
    let rx = Receiver::start(vec![], Reply::Status(204)).await;
    let sink = sink_for(&rx).with_clock(|| 1649367553);
    let body = br#"{"email":"test@example.com","username":"test_user"}"#;
    sink.send(
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        &Record::new(body.to_vec()),
    )
    .await
    .unwrap();
    let hits = rx.hits();
    assert_eq!(hits.len(), 1);
    let h = &hits[0];
    assert_eq!(h.path, "/hook");
    assert_eq!(h.body, body);
    assert_eq!(h.id(), "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk");
    assert_eq!(header(&h.headers, "webhook-timestamp"), "1649367553");
    assert_eq!(
        header(&h.headers, "webhook-signature"),
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    );
    assert_eq!(header(&h.headers, "content-type"), "application/json");
    assert_eq!(
        header(&h.headers, "user-agent"),
        concat!("outbox/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(header(&h.headers, "x-hub-signature-256"), "");
}

#[tokio::test]
async fn content_type_comes_from_the_record_and_static_headers_are_added() {
    let rx = Receiver::start(vec![], Reply::Status(200)).await;
    let mut cfg = WebhookConfig::new(&rx.url, "HOOK_SECRET");
    cfg.headers.insert("X-Tenant".into(), "blue".into());
    let sink = WebhookSink::with_env(&cfg, secrets).unwrap();
    let rec = Record::new(b"plain text".to_vec()).with_header("Content-Type", "text/plain");
    sink.send("msg_a", &rec).await.unwrap();
    let h = &rx.hits()[0];
    assert_eq!(header(&h.headers, "content-type"), "text/plain");
    assert_eq!(header(&h.headers, "x-tenant"), "blue");
    assert_eq!(h.body, b"plain text");
    verify_standard(VECTOR_SECRET, &h.headers, &h.body, now_secs()).unwrap();
}

#[tokio::test]
async fn a_503_then_a_200_is_two_requests_with_one_id_and_two_valid_signatures() {
    let rx = Receiver::start(vec![Reply::Status(503)], Reply::Status(200)).await;
    // A clock one second further on each attempt, to see each one re-signed.
    let tick = Arc::new(AtomicU64::new(now_secs()));
    let clock = {
        let tick = tick.clone();
        move || tick.fetch_add(1, Ordering::SeqCst)
    };
    let d = dir();
    let (ob, mut acks) = open_hook(d.path(), sink_for(&rx).with_clock(clock), fast()).await;
    let r = ob
        .dispatch(rec(r#"{"alert":"disk full"}"#), vec![7])
        .await
        .unwrap();
    assert_eq!(next_ack(&mut acks).await, 7);
    let hits = rx.hits();
    assert_eq!(
        hits.iter().map(|h| h.status).collect::<Vec<_>>(),
        vec![503, 200]
    );
    let id = r.delivery_id.to_string();
    assert!(!id.contains('.'));
    assert_eq!(hits[0].id(), id);
    assert_eq!(hits[1].id(), id);
    assert_eq!(hits[1].timestamp(), hits[0].timestamp() + 1, "re-stamped");
    assert_ne!(
        header(&hits[0].headers, "webhook-signature"),
        header(&hits[1].headers, "webhook-signature"),
        "re-signed"
    );
    for h in &hits {
        assert_eq!(h.body, br#"{"alert":"disk full"}"#);
        let got = verify_standard(VECTOR_SECRET, &h.headers, &h.body, now_secs());
        assert_eq!(got.as_deref(), Ok(id.as_str()));
    }
    assert!(ob.dlq_list(None).unwrap().is_empty());
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn permanent_answers_go_to_the_dlq_after_exactly_one_request() {
    let mut long = vec![b'a'; 1000];
    long.extend_from_slice(&[b'b'; 2000]);
    let rx = Receiver::start(
        vec![
            Reply::With {
                status: 400,
                headers: vec![],
                body: long,
            },
            Reply::Status(410),
            Reply::With {
                status: 302,
                headers: vec![("location", "/elsewhere".into())],
                body: vec![],
            },
        ],
        Reply::Status(200),
    )
    .await;
    let d = dir();
    let (ob, mut acks) = open_hook(d.path(), sink_for(&rx), fast()).await;
    let receipts = ob
        .dispatch_many((0..3).map(|i| (rec(&format!("{i}")), vec![i])).collect())
        .await
        .unwrap();
    for want in 0..3 {
        assert_eq!(next_ack(&mut acks).await, want);
    }
    let hits = rx.hits();
    assert_eq!(
        hits.iter().map(|h| (h.id(), h.status)).collect::<Vec<_>>(),
        receipts
            .iter()
            .map(|r| r.delivery_id.to_string())
            .zip([400, 410, 302])
            .collect::<Vec<_>>()
            .iter()
            .map(|(id, s)| (id.as_str(), *s))
            .collect::<Vec<_>>(),
        "one request per record"
    );
    assert!(
        hits.iter().all(|h| h.path == "/hook"),
        "the redirect is not followed"
    );
    let dl = ob.dlq_list(None).unwrap();
    let got: Vec<(u64, u32, String)> = dl
        .iter()
        .map(|e| (e.seq.0, e.attempts, e.error.clone()))
        .collect();
    let quoted = format!("{}{}", "a".repeat(1000), "b".repeat(24));
    assert_eq!(
        got,
        vec![
            (0, 1, format!("permanent: HTTP 400: {quoted}")),
            (1, 1, "permanent: HTTP 410".to_string()),
            (
                2,
                1,
                "permanent: HTTP 302; redirect to /elsewhere not followed".to_string()
            ),
        ]
    );
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(rx.hits().len(), 3, "nothing retried");
}

#[tokio::test]
async fn transient_answers_are_retried_then_dead_lettered() {
    let script = [408, 429, 500, 502, 503, 504]
        .into_iter()
        .map(Reply::Status)
        .chain([Reply::Status(200)])
        .collect();
    let rx = Receiver::start(script, Reply::Status(503)).await;
    let d = dir();
    let cfg = SinkConfig {
        retry_max: 6,
        ..fast()
    };
    let (ob, mut acks) = open_hook(d.path(), sink_for(&rx), cfg).await;
    let first = ob.dispatch(rec("first"), vec![1]).await.unwrap();
    assert_eq!(next_ack(&mut acks).await, 1);
    let hits = rx.hits();
    assert_eq!(
        hits.iter().map(|h| h.status).collect::<Vec<_>>(),
        vec![408, 429, 500, 502, 503, 504, 200]
    );
    let id = first.delivery_id.to_string();
    assert!(hits.iter().all(|h| h.id() == id));
    assert!(ob.dlq_list(None).unwrap().is_empty());

    // Now the receiver only answers 503: 1 + retry_max attempts, then the DLQ.
    let second = ob.dispatch(rec("second"), vec![2]).await.unwrap();
    assert_eq!(next_ack(&mut acks).await, 2);
    let hits = rx.hits();
    let later: Vec<&Hit> = hits.iter().skip(7).collect();
    assert_eq!(later.len(), 7);
    let id = second.delivery_id.to_string();
    assert!(later.iter().all(|h| h.id() == id && h.status == 503));
    let dl = ob.dlq_list(None).unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(
        (dl[0].seq.0, dl[0].attempts, dl[0].error.as_str()),
        (1, 7, "transient: HTTP 503")
    );
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Sends one record through an outbox whose receiver answers `first`, then
/// 200, and returns the time between the two requests.
async fn retry_gap(first: Reply, retry_after_max: Duration) -> Duration {
    let rx = Receiver::start(vec![first], Reply::Status(200)).await;
    let d = dir();
    // Backoff alone would retry within 5 ms.
    let cfg = SinkConfig {
        retry_after_max,
        ..fast()
    };
    let (ob, mut acks) = open_hook(d.path(), sink_for(&rx), cfg).await;
    ob.dispatch(rec("r"), vec![1]).await.unwrap();
    assert_eq!(next_ack(&mut acks).await, 1);
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
    let hits = rx.hits();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[1].status, 200);
    hits[1].at - hits[0].at
}

#[tokio::test]
async fn retry_after_is_honoured_in_both_forms_and_capped() {
    let minute = Duration::from_secs(60);
    // An HTTP date three seconds ahead, cut to whole seconds: 2 to 3 s.
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    let (delta, date, capped) = tokio::join!(
        retry_gap(retry_after(503, "2"), minute),
        retry_gap(retry_after(429, date), minute),
        // An hour is capped by retry_after_max.
        retry_gap(retry_after(503, "3600"), Duration::from_millis(300)),
    );
    let ms = Duration::from_millis;
    assert!(delta >= ms(2000) && delta < ms(3500), "delta: {delta:?}");
    assert!(date >= ms(1900) && date < ms(4500), "date: {date:?}");
    assert!(capped >= ms(300) && capped < ms(2000), "capped: {capped:?}");
}

#[tokio::test]
async fn a_restart_between_attempts_keeps_the_webhook_id() {
    let rx = Receiver::start(vec![], Reply::Status(503)).await;
    let d = dir();
    let slow = SinkConfig {
        retry_max: 1000,
        ..fast()
    };
    let (ob, _acks) = open_hook(d.path(), sink_for(&rx), slow.clone()).await;
    let r = ob.dispatch(rec(r#"{"n":1}"#), vec![1]).await.unwrap();
    rx.wait_hits(2).await;
    // A restart (an undrained close; the crash case is tests/crash.rs).
    ob.shutdown(Duration::ZERO).await.unwrap();
    let before = rx.hits().len();
    assert!(before >= 2);

    *rx.fallback.lock() = Reply::Status(200);
    let (ob, _acks) = open_hook(d.path(), sink_for(&rx), slow).await;
    eventually("delivered after the restart", || {
        rx.hits().iter().any(|h| h.status == 200)
    })
    .await;
    let hits = rx.hits();
    let id = r.delivery_id.to_string();
    assert!(hits.len() > before);
    assert_eq!(hits.iter().filter(|h| h.status == 200).count(), 1);
    assert_eq!(hits.last().map(|h| h.status), Some(200));
    for h in &hits {
        assert_eq!(h.id(), id, "the same webhook-id before and after");
        assert_eq!(h.body, br#"{"n":1}"#);
        verify_standard(VECTOR_SECRET, &h.headers, &h.body, now_secs()).unwrap();
    }
    let report = ob.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.drained, "{report:?}");
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let rx = Receiver::start(vec![Reply::Hang], Reply::Status(200)).await;
    let mut cfg = WebhookConfig::new(&rx.url, "HOOK_SECRET");
    cfg.timeout_ms = 300;
    let sink = WebhookSink::with_env(&cfg, secrets).unwrap();

    // One attempt on its own: a timeout, classified transient.
    let e = sink.send("msg_t", &rec("x")).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().starts_with("transient: timed out"), "{e}");

    // Through the engine: the hung attempt is retried with the same id.
    rx.script.lock().push_back(Reply::Hang);
    let d = dir();
    let (ob, mut acks) = open_hook(d.path(), sink, fast()).await;
    let r = ob.dispatch(rec("slow"), vec![1]).await.unwrap();
    assert_eq!(next_ack(&mut acks).await, 1);
    let hits = rx.hits();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[2].status, 200);
    let id = r.delivery_id.to_string();
    assert_eq!((hits[1].id(), hits[2].id()), (id.as_str(), id.as_str()));
    assert!(hits[2].at - hits[1].at >= Duration::from_millis(300));
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = WebhookConfig::new(format!("http://127.0.0.1:{port}/hook"), "HOOK_SECRET");
    let sink = WebhookSink::with_env(&cfg, secrets).unwrap();
    let e = sink.send("msg_c", &rec("x")).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        e.to_string().starts_with("transient: connect failed"),
        "{e}"
    );
    assert!(
        !e.to_string().contains("127.0.0.1"),
        "no URL in errors: {e}"
    );
}

#[tokio::test]
async fn a_10_mib_body_is_read_only_up_to_the_cap() {
    const TEN_MIB: usize = 10 << 20;
    const CAP: usize = 64 << 10;
    let rx = Receiver::start(vec![], Reply::Status(200)).await;
    let mut cfg = WebhookConfig::new(&rx.url, "HOOK_SECRET");
    cfg.response_body_max = CAP;
    let capped = WebhookSink::with_env(&cfg, secrets).unwrap();
    cfg.response_body_max = usize::MAX;
    let unbounded = WebhookSink::with_env(&cfg, secrets).unwrap();

    // Control: a sink without a cap makes the server send all 10 MiB, so the
    // counter does see a full read.
    rx.script.lock().push_back(Reply::Stream {
        status: 200,
        total: TEN_MIB,
    });
    let sent = rx.on_streamed();
    unbounded.send("msg_control", &rec("x")).await.unwrap();
    let full = tokio::time::timeout(Duration::from_secs(10), sent)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(full, TEN_MIB);

    for status in [200u16, 500] {
        rx.script.lock().push_back(Reply::Stream {
            status,
            total: TEN_MIB,
        });
        let sent = rx.on_streamed();
        let result = capped.send("msg_big", &rec("x")).await;
        // The server stops once the client hangs up.
        let sent = tokio::time::timeout(Duration::from_secs(10), sent)
            .await
            .expect("the client hung up")
            .unwrap();
        eprintln!("status {status}: server handed over {sent} bytes of {TEN_MIB}");
        // What the server can hand over is the cap plus what hyper and the
        // two sockets buffer: 512 KiB measured on loopback, against the full
        // 10 MiB of the control above.
        assert!(sent <= 2 << 20, "status {status}: {sent} bytes sent");
        if status == 200 {
            result.unwrap();
        } else {
            let e = result.unwrap_err();
            assert!(e.is_transient());
            assert_eq!(
                e.to_string(),
                format!("transient: HTTP 500: {}", "x".repeat(1024))
            );
        }
    }
}

#[tokio::test]
async fn an_independent_verifier_accepts_every_request_during_rotation() {
    // The receiver still knows only the old secret; the sink signs with the
    // new one first and the old one second.
    let rx = Receiver::start(vec![], Reply::Verify(VECTOR_SECRET)).await;
    let mut cfg = WebhookConfig::new(&rx.url, "HOOK_SECRET_NEW");
    cfg.secret_env.push("HOOK_SECRET".into());
    let sink = WebhookSink::with_env(&cfg, secrets).unwrap();
    let d = dir();
    let (ob, mut acks) = open_hook(d.path(), sink, fast()).await;
    let payloads: Vec<Vec<u8>> = (0..20)
        .map(|i| match i % 4 {
            0 => format!(r#"{{"i":{i}}}"#).into_bytes(),
            1 => format!("dots.in.body.{i}\nand a newline").into_bytes(),
            2 => format!("unicode ✓ {i}").into_bytes(),
            _ => vec![0, 255, 46, i as u8],
        })
        .collect();
    let receipts = ob
        .dispatch_many(
            payloads
                .iter()
                .enumerate()
                .map(|(i, p)| (Record::new(p.clone()), vec![i as u32]))
                .collect(),
        )
        .await
        .unwrap();
    for want in 0..20 {
        assert_eq!(next_ack(&mut acks).await, want);
    }
    let hits = rx.hits();
    assert_eq!(hits.len(), 20);
    assert!(
        hits.iter().all(|h| h.status == 200),
        "every request verified"
    );
    assert_eq!(
        hits.iter().map(|h| h.body.clone()).collect::<Vec<_>>(),
        payloads
    );
    assert_eq!(
        hits.iter().map(|h| h.id().to_string()).collect::<Vec<_>>(),
        receipts
            .iter()
            .map(|r| r.delivery_id.to_string())
            .collect::<Vec<_>>()
    );
    assert!(ob.dlq_list(None).unwrap().is_empty());
    ob.shutdown(Duration::from_secs(5)).await.unwrap();

    // The new secret verifies them as well; and the verifier is not a
    // rubber stamp.
    let h = &hits[0];
    let now = now_secs();
    verify_standard(OTHER_SECRET, &h.headers, &h.body, now).unwrap();
    let wrong = "whsec_d3Jvbmcgc2VjcmV0";
    assert!(verify_standard(wrong, &h.headers, &h.body, now).is_err());
    assert!(verify_standard(VECTOR_SECRET, &h.headers, b"{\"i\":1}", now).is_err());
    assert!(verify_standard(VECTOR_SECRET, &h.headers, &h.body, now + 600).is_err());
}

#[tokio::test]
async fn github_scheme_signs_the_body_in_hex() {
    let rx = Receiver::start(vec![], Reply::Status(200)).await;
    let mut cfg = WebhookConfig::new(&rx.url, "HOOK_RAW");
    cfg.scheme = Scheme::Github;
    cfg.secret_format = outbox::sink::webhook::SecretFormat::Raw;
    let sink = WebhookSink::with_env(&cfg, secrets).unwrap();
    sink.send("msg_g", &rec(r#"{"action":"opened"}"#))
        .await
        .unwrap();
    let h = &rx.hits()[0];
    verify_github(b"raw-github-secret", &h.headers, &h.body).unwrap();
    assert!(verify_github(b"other", &h.headers, &h.body).is_err());
    assert_eq!(h.id(), "msg_g", "the id is still sent, for deduplication");
    assert_eq!(header(&h.headers, "webhook-signature"), "");
}

#[tokio::test]
async fn a_retry_schedule_resumes_where_it_was_after_a_restart_and_dead_letters_at_the_same_attempt()
 {
    let ms = Duration::from_millis;
    // Attempt 1: 503 -> the schedule's 500 ms. Attempt 2: 503 with
    // Retry-After: 60, capped by retry_after_max at 3 s instead of the
    // schedule's 10 s. The outbox restarts during that wait. Attempt 3: 503
    // -> 1 s. Attempt 4: 503, and the schedule (3 retries) is spent: DLQ.
    let rx = Receiver::start(
        vec![Reply::Status(503), retry_after(503, "60")],
        Reply::Status(503),
    )
    .await;
    let d = dir();
    let cfg = SinkConfig {
        retry_schedule: Some(vec![ms(500), ms(10_000), ms(1_000)]),
        retry_after_max: ms(3_000),
        ..fast()
    };
    let (ob, _acks) = open_hook(d.path(), sink_for(&rx), cfg.clone()).await;
    let r = ob.dispatch(rec(r#"{"n":1}"#), vec![1]).await.unwrap();
    rx.wait_hits(2).await;
    // The state is stored, and durable, before the wait begins.
    tokio::time::sleep(ms(200)).await;
    ob.shutdown(Duration::ZERO).await.unwrap();
    assert_eq!(rx.hits().len(), 2);

    let (ob, _acks) = open_hook(d.path(), sink_for(&rx), cfg).await;
    tokio::time::sleep(ms(500)).await;
    assert_eq!(rx.hits().len(), 2, "no attempt right after the reopen");
    rx.wait_hits(4).await;
    eventually("the record is dead-lettered", || {
        ob.status().unwrap().sinks[0].dlq == 1
    })
    .await;
    tokio::time::sleep(ms(1_500)).await;
    let hits = rx.hits();
    assert_eq!(
        hits.len(),
        4,
        "exactly the schedule's attempts, across the restart"
    );
    let gap = |i: usize| hits[i].at - hits[i - 1].at;
    assert!(gap(1) >= ms(480) && gap(1) < ms(1_500), "{:?}", gap(1));
    assert!(
        gap(2) >= ms(2_950) && gap(2) < ms(4_000),
        "Retry-After (capped at 3 s) kept across the restart: {:?}",
        gap(2)
    );
    assert!(gap(3) >= ms(980) && gap(3) < ms(2_000), "{:?}", gap(3));
    let id = r.delivery_id.to_string();
    assert!(hits.iter().all(|h| h.id() == id));

    let dlq = ob.dlq_list(None).unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!((dlq[0].seq, dlq[0].attempts), (r.seq, 4));
    assert_eq!(dlq[0].history.len(), 4, "{:?}", dlq[0].history);
    assert!(dlq[0].history.iter().all(|a| a.error.contains("503")));
    let st = ob.status().unwrap();
    assert_eq!((st.sinks[0].lag, st.sinks[0].dead_lettered), (0, 1));
    ob.shutdown(Duration::from_secs(5)).await.unwrap();

    // The state went with the record: nothing is left to resume.
    let db = raw_sled(d.path());
    let states = db.open_tree("sink_state").unwrap();
    assert_eq!(states.scan_prefix(b"r").count(), 0);
}
