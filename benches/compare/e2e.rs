//! End to end through the real binary: stdin and HTTP ingest into stdout,
//! file and webhook sinks, each timed until the sink's output is complete
//! (the bytes on stdout or in the file, the distinct records a receiver
//! got), and the daemon's peak RSS with a receiver down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use crate::daemon::{Daemon, Feed, LINE, SECRET_ENV, Setup, file_len, index_of, ndjson, until};
use crate::{pct, throughput};

/// Longest any one end-to-end phase may take before it counts as failed.
const LIMIT: Duration = Duration::from_secs(1200);

/// The drain timeout of a run that must finish: long enough for any sink.
pub(crate) const DRAIN: u64 = 600;

/// The figure of one timed run: complete, or why not (then no rate, so
/// every target on it fails).
pub(crate) fn timed(n: u64, took: Duration, problem: Option<String>) -> Value {
    match problem {
        None => throughput(took, n),
        Some(p) => json!({"records": n, "seconds": took.as_secs_f64(), "error": p}),
    }
}

fn exit_problem(d: &Daemon, status: std::process::ExitStatus) -> Option<String> {
    (!status.success()).then(|| format!("outbox exited with {status}: {}", d.stderr()))
}

fn stdout_sink() -> &'static str {
    "[[sinks]]\nname = \"out\"\nkind = \"stdout\"\n"
}

fn file_sink(path: &std::path::Path) -> String {
    format!("[[sinks]]\nname = \"out\"\nkind = \"file\"\npath = {path:?}\n")
}

/// `outbox run` from spawn to exit, `n` records on stdin, one sink.
/// `file`: a file sink, else stdout.
pub(crate) fn stdin_run(n: u64, file: bool) -> Value {
    let s = Setup::new();
    let out = s.path("out.ndjson");
    s.write(
        "full",
        DRAIN,
        &if file {
            file_sink(&out)
        } else {
            stdout_sink().into()
        },
    );
    let start = Instant::now();
    let mut d = Daemon::start(&s, Feed::Eof(n));
    let status = d.wait(LIMIT);
    let took = start.elapsed();
    let want = n * LINE;
    let problem = exit_problem(&d, status).or_else(|| {
        let got = || {
            if file {
                file_len(&out)
            } else {
                d.stdout_bytes()
            }
        };
        // The stdout reader thread may still be copying the last bytes.
        (!until(Duration::from_secs(5), || got() >= want))
            .then(|| format!("sink output is {} bytes, want {want}", got()))
    });
    timed(n, took, problem)
}

/// HTTP ingest with `conns` connections, `per_req` records a request, into
/// a file sink: from the first request until the file holds every record.
pub(crate) fn ingest_run(rt: &Runtime, n: u64, conns: usize, per_req: u64) -> Value {
    let s = Setup::new();
    let out = s.path("out.ndjson");
    s.write(
        "full",
        DRAIN,
        &format!("[ingest]\nlisten = \"127.0.0.1:0\"\n{}", file_sink(&out)),
    );
    let mut d = Daemon::start(&s, Feed::None);
    let addr = d.listening("ingest");
    let start = Instant::now();
    let load = rt.block_on(post_load(addr, n, conns, per_req));
    let posted = start.elapsed();
    let want = n * LINE;
    let complete = load.error.is_none() && until(LIMIT, || file_len(&out) >= want);
    let took = start.elapsed();
    let status = d.stop();
    let problem = match (load.error, complete) {
        (Some(e), _) => Some(e),
        (None, false) => Some(format!("file holds {} bytes, want {want}", file_len(&out))),
        (None, true) => exit_problem(&d, status),
    };
    let mut v = timed(n, took, problem);
    let mut lat = load.latencies_us;
    lat.sort_unstable();
    v["connections"] = json!(conns);
    v["records_per_request"] = json!(per_req);
    v["accepted_records_per_sec"] = json!((n as f64 / posted.as_secs_f64()).round());
    v["request_ms"] = json!({"p50": pct(&lat, 0.5), "p99": pct(&lat, 0.99), "max": pct(&lat, 1.0)});
    v["retried_503"] = json!(load.retried);
    v
}

struct Load {
    latencies_us: Vec<u64>,
    retried: u64,
    error: Option<String>,
}

/// POSTs records `0..n` in `per_req`-record requests from `conns` clients,
/// one keep-alive connection each; a 503 (a sink at its lag limit) is
/// retried after 5 ms and counted.
async fn post_load(addr: SocketAddr, n: u64, conns: usize, per_req: u64) -> Load {
    let next = Arc::new(AtomicU64::new(0));
    let reqs = n.div_ceil(per_req);
    let url = format!("http://{addr}/v1/records");
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (next, url) = (next.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let (mut lat, mut retried) = (Vec::new(), 0u64);
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= reqs {
                    return Ok((lat, retried));
                }
                let body = ndjson(k * per_req, ((k + 1) * per_req).min(n));
                loop {
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .header("content-type", "application/x-ndjson")
                        .body(body.clone())
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    let status = r.status();
                    let text = r.text().await.map_err(|e| e.to_string())?;
                    if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                        retried += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    if !status.is_success() {
                        return Err(format!("ingest answered {status}: {text}"));
                    }
                    lat.push(t.elapsed().as_micros() as u64);
                    break;
                }
            }
        }));
    }
    let mut load = Load {
        latencies_us: Vec::new(),
        retried: 0,
        error: None,
    };
    for t in tasks {
        match t.await.unwrap() {
            Ok((l, r)) => {
                load.latencies_us.extend(l);
                load.retried += r;
            }
            Err(e) => load.error = Some(e),
        }
    }
    load
}

// ------------------------------------------------------------- receivers

/// What a receiver has seen: distinct record indices per path `/s/K`.
struct Seen {
    delay: Duration,
    bits: Vec<Vec<AtomicU64>>,
    distinct: AtomicU64,
    requests: AtomicU64,
    /// Requests being answered now, and the most at once: how many
    /// deliveries the sink really kept in flight.
    open: AtomicU64,
    max_open: AtomicU64,
    /// Distinct deliveries after which `done` is stamped.
    target: u64,
    start: Instant,
    /// Microseconds after `start`: the first request, and the moment the
    /// target was reached (0: not yet).
    first_us: AtomicU64,
    done_us: AtomicU64,
}

impl Seen {
    fn mark(&self, k: usize, body: &[u8]) {
        let (Some(i), Some(bits)) = (index_of(body), self.bits.get(k)) else {
            return;
        };
        let Some(word) = bits.get((i / 64) as usize) else {
            return;
        };
        let bit = 1u64 << (i % 64);
        if word.fetch_or(bit, Ordering::Relaxed) & bit == 0
            && self.distinct.fetch_add(1, Ordering::Relaxed) + 1 == self.target
        {
            let now = self.start.elapsed().as_micros() as u64;
            self.done_us.store(now.max(1), Ordering::Relaxed);
        }
    }
}

async fn hook(State(s): State<Arc<Seen>>, Path(k): Path<usize>, body: Bytes) -> StatusCode {
    let now = s.start.elapsed().as_micros() as u64;
    s.requests.fetch_add(1, Ordering::Relaxed);
    let open = s.open.fetch_add(1, Ordering::Relaxed) + 1;
    s.max_open.fetch_max(open, Ordering::Relaxed);
    let _ = s
        .first_us
        .compare_exchange(0, now.max(1), Ordering::Relaxed, Ordering::Relaxed);
    if !s.delay.is_zero() {
        tokio::time::sleep(s.delay).await;
    }
    s.mark(k, &body);
    s.open.fetch_sub(1, Ordering::Relaxed);
    StatusCode::OK
}

/// An axum webhook receiver on 127.0.0.1 inside this process: `POST /s/K`
/// answers 200 after `delay`, for `paths` paths of `n` records each.
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    seen: Arc<Seen>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) fn start(rt: &Runtime, paths: usize, n: u64, delay: Duration) -> Receiver {
        let words = n.div_ceil(64) as usize;
        let seen = Arc::new(Seen {
            delay,
            bits: (0..paths)
                .map(|_| (0..words).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            distinct: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            open: AtomicU64::new(0),
            max_open: AtomicU64::new(0),
            target: n * paths as u64,
            start: Instant::now(),
            first_us: AtomicU64::new(0),
            done_us: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/s/{k}", post(hook))
            .with_state(seen.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let server = rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, seen, server }
    }

    pub(crate) fn distinct(&self) -> u64 {
        self.seen.distinct.load(Ordering::Relaxed)
    }

    pub(crate) fn requests(&self) -> u64 {
        self.seen.requests.load(Ordering::Relaxed)
    }

    /// From the first request to the last distinct record, once complete.
    pub(crate) fn window(&self) -> Option<Duration> {
        let (f, d) = (
            self.seen.first_us.load(Ordering::Relaxed),
            self.seen.done_us.load(Ordering::Relaxed),
        );
        (d > 0).then(|| Duration::from_micros(d.saturating_sub(f).max(1)))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One `[[sinks]]` webhook table posting to `url`, plus `extra` keys.
pub(crate) fn webhook_sink(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = {name:?}\nkind = \"webhook\"\n{extra}[sinks.webhook]\nurl = {url:?}\nsecret_env = {SECRET_ENV:?}\n"
    )
}

/// `n` records on stdin to one webhook sink with `extra` keys (ordering,
/// max_in_flight), the receiver answering after `delay`: the rate from the
/// receiver's first request to its last distinct record.
pub(crate) fn webhook_run(rt: &Runtime, n: u64, extra: &str, delay: Duration) -> Value {
    let r = Receiver::start(rt, 1, n, delay);
    let url = format!("http://{}/s/0", r.addr);
    let s = Setup::new();
    s.write("full", DRAIN, &webhook_sink("hook", &url, extra));
    let start = Instant::now();
    let mut d = Daemon::start(&s, Feed::Eof(n));
    let complete = until(LIMIT, || r.distinct() >= n);
    let status = d.wait(LIMIT);
    let problem = if complete {
        exit_problem(&d, status)
    } else {
        Some(format!("receiver got {} of {n} records", r.distinct()))
    };
    let took = r.window().unwrap_or_else(|| start.elapsed());
    let mut v = timed(n, took, problem);
    v["requests"] = json!(r.requests());
    v["max_concurrent_requests"] = json!(r.seen.max_open.load(Ordering::Relaxed));
    v["spawn_to_exit_s"] = json!(start.elapsed().as_secs_f64());
    v
}

/// Ten webhook sinks, `ordering = "none"`, one of them pointing at a port
/// nobody listens on (connection refused), while `n` records go in on
/// stdin and out to the nine live ones: the daemon's peak RSS (`VmHWM`).
/// Every sink's lag limit is raised to 2M so the dead one does not block
/// dispatch at the default 1M before the last record.
pub(crate) fn rss_dead_receiver(rt: &Runtime, n: u64) -> Value {
    const LIVE: usize = 9;
    let r = Receiver::start(rt, LIVE, n, Duration::ZERO);
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let keys = "ordering = \"none\"\nmax_lag_records = 2000000\n";
    let mut sinks = String::new();
    for k in 0..LIVE {
        let url = format!("http://{}/s/{k}", r.addr);
        sinks.push_str(&webhook_sink(&format!("live{k}"), &url, keys));
    }
    sinks.push_str(&webhook_sink(
        "dead",
        &format!("http://127.0.0.1:{dead_port}/s/0"),
        keys,
    ));
    let s = Setup::new();
    // The dead sink never drains: stop without waiting for it.
    s.write("full", 1, &sinks);
    let start = Instant::now();
    let mut d = Daemon::start(&s, Feed::Hold(n));
    let want = n * LIVE as u64;
    let mut samples = Vec::new();
    let complete = until(LIMIT, || {
        let t = start.elapsed();
        if samples.len() as u128 <= t.as_millis() / 1000 {
            samples.push((t.as_secs(), d.peak_rss_kib(), r.distinct()));
        }
        r.distinct() >= want
    });
    let took = start.elapsed();
    let peak = d.peak_rss_kib();
    d.close_stdin();
    d.stop();
    let problem = (!complete).then(|| format!("live receivers got {} of {want}", r.distinct()));
    let mut v = timed(n, took, problem);
    v["live_sinks"] = json!(LIVE);
    v["dead_sinks"] = json!(1);
    v["deliveries"] = json!(r.distinct());
    v["peak_rss_kib"] = json!(peak);
    v["rss_kib_each_second"] = json!(samples.iter().map(|s| s.1).collect::<Vec<_>>());
    v
}
