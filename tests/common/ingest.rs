//! The clients and the oracle of the crash tests that load the binary over
//! HTTP ingest (`kill9`, `powercut`): each client pushes batches of records
//! with unique ids, and the oracle keeps, for every request answered 200,
//! each id's seq. Whatever the daemon acknowledged must come out again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;

use super::config::Config;

/// The sinks of these tests: `out`, a file sink writing to `out`, and
/// `hook`, a webhook to `hook` signed with the base64 secret in
/// `secret_env`, which retries fast.
pub fn crash_sinks(c: Config, out: &Path, hook: std::net::SocketAddr, secret_env: &str) -> Config {
    c.file("out", out, "batch_max = 64\n")
        .sink(
            "hook",
            "webhook",
            "batch_max = 64\nretry_max = 1000\n\
             # Backpressure (503 at ingest) keeps the webhook's backlog, and so the\n\
             # final drain, short.\n\
             max_lag_records = 3000\nbackoff_base_ms = 1\nbackoff_max_ms = 20\n",
        )
        .raw(&format!(
            "[sinks.webhook]\nurl = \"http://{hook}/hook\"\nsecret_env = \"{secret_env}\"\ntimeout_ms = 2000\n"
        ))
}

/// The HTTP client of a load: a request times out after 5 s.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// What the clients learned.
#[derive(Default)]
pub struct Oracle {
    /// id → (seq, the run in which its 200 came).
    pub acked: Mutex<BTreeMap<u64, (u64, usize)>>,
    pub next_id: AtomicU64,
    pub requests_ok: AtomicU64,
    /// Requests that got no answer, or a 200 whose body was cut.
    pub requests_failed: AtomicU64,
    /// Requests refused with 503 (backpressure), or 500 where
    /// [`Load::server_errors`] allows it.
    pub requests_refused: AtomicU64,
}

/// How the clients load the daemon.
#[derive(Clone, Copy)]
pub struct Load {
    /// Records per request: 1 to this many.
    pub max_batch: u64,
    /// The record with an id, one NDJSON line without its `\n`.
    pub payload: fn(u64) -> String,
    /// A 500 (an I/O error after a power cut failed a sync) is a refusal;
    /// without, a 500 fails the test.
    pub server_errors: bool,
}

/// Pushes batches to `http://127.0.0.1:PORT/v1/records` until `stop`; keeps
/// the ids of every 200 in `oracle`, marked with `run`.
pub async fn client(port: u16, run: usize, load: Load, oracle: Arc<Oracle>, stop: Arc<AtomicBool>) {
    let http = http_client();
    let url = format!("http://127.0.0.1:{port}/v1/records");
    while !stop.load(Ordering::Relaxed) {
        let n = rand::rng().random_range(1..=load.max_batch);
        let first = oracle.next_id.fetch_add(n, Ordering::Relaxed);
        let body: String = (first..first + n)
            .map(|id| (load.payload)(id) + "\n")
            .collect();
        let resp = http
            .post(&url)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await;
        let Ok(resp) = resp else {
            oracle.requests_failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let status = resp.status().as_u16();
        match (status, resp.text().await) {
            (200, Ok(text)) => {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["accepted"].as_u64(), Some(n), "{text}");
                let f = v["first_seq"].as_u64().unwrap();
                assert_eq!(v["last_seq"].as_u64(), Some(f + n - 1), "{text}");
                let mut acked = oracle.acked.lock();
                for (i, id) in (first..first + n).enumerate() {
                    acked.insert(id, (f + i as u64, run));
                }
                oracle.requests_ok.fetch_add(1, Ordering::Relaxed);
            }
            // The daemon died while answering: not a 200 the client saw.
            (200, Err(_)) => {
                oracle.requests_failed.fetch_add(1, Ordering::Relaxed);
            }
            (503, _) => {
                oracle.requests_refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (500, _) if load.server_errors => {
                oracle.requests_refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (s, t) => panic!("ingest answered {s}: {t:?}"),
        }
    }
}

/// The file sink's output at `path` as ids; every line must be the intact
/// record `payload` makes of its id. With `torn_tail_ok`, an unterminated
/// last line (a kill mid-write; cut at the next open, and never committed)
/// is left out; otherwise a torn last line fails with `torn`.
pub fn out_ids(
    path: &Path,
    payload: fn(u64) -> String,
    torn_tail_ok: bool,
    torn: &str,
) -> Vec<u64> {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    if torn_tail_ok {
        text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
    }
    assert!(text.is_empty() || text.ends_with('\n'), "{torn}");
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {}: not intact ({e}): {line:?}", i + 1));
            let id = v["id"].as_u64().unwrap();
            assert_eq!(line, payload(id), "line {} is not the record sent", i + 1);
            id
        })
        .collect()
}
