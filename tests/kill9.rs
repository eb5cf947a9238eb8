//! The kill -9 test of the real binary, with an oracle.
//!
//! `outbox run` serves HTTP ingest (`POST /v1/records`, NDJSON) and
//! delivers to a file sink and to a webhook sink whose receiver (a server on
//! 127.0.0.1 in this test) answers 500 at random. Clients push records with
//! unique ids and keep every id whose request got a 200. The daemon is
//! SIGKILLed at random moments (during appends, deliveries, offset commits
//! and truncation: all run continuously under the load) at least 20 times,
//! and restarted on the same data directory each time. A final run drains
//! cleanly on SIGTERM. Then:
//! - every opening of the data directory succeeded (each run came up and
//!   served until it was killed);
//! - every id that got a 200 is in the file sink's output at least once,
//!   and every line there is an intact record;
//! - a record appears again in the file only in the run after a kill, and
//!   only if its seq is at or after the file sink's durable committed
//!   offset at that kill (read with `outbox status` while the daemon is
//!   dead); the duplicates are counted and printed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;

use common::config::Config;
use common::ingest::{Load, Oracle, client, crash_sinks, out_ids};
use common::process::{bin, kill_count};

const TORN: &str = "the file ends in a torn line";

const SECRET_B64: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQ=";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The webhook receiver: 500 on about one request in five, else 200.
#[derive(Default)]
struct Receiver {
    got: Mutex<BTreeMap<u64, u64>>,
    failed: AtomicU64,
}

async fn serve_receiver(rx: Arc<Receiver>) -> SocketAddr {
    use axum::http::StatusCode;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let rx = rx.clone();
            async move {
                if rand::rng().random_ratio(1, 5) {
                    rx.failed.fetch_add(1, Ordering::Relaxed);
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let v: serde_json::Value = match serde_json::from_slice(&body) {
                    Ok(v) => v,
                    Err(_) => return StatusCode::BAD_REQUEST,
                };
                if let Some(id) = v["id"].as_u64() {
                    *rx.got.lock().entry(id).or_default() += 1;
                }
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn write_config(dir: &Path, ingest: u16, hook: SocketAddr) -> PathBuf {
    let c = Config::new(&dir.join("data"))
        .set("drain_timeout_secs", 120)
        .raw(&format!(
            "[ingest]\nlisten = \"127.0.0.1:{ingest}\"\n\n[log]\nlevel = \"warn\"\n\n"
        ));
    crash_sinks(c, &dir.join("out.ndjson"), hook, "KILL9_HOOK_SECRET")
        .write(&dir.join("outbox.toml"))
}

fn spawn_daemon(cfg: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    bin()
        .args(["run", "--config"])
        .arg(cfg)
        .env("KILL9_HOOK_SECRET", SECRET_B64)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

/// Waits until the daemon answers HTTP on its ingest port; fails if it
/// exits first. A TCP connect alone is not enough: the listener is bound
/// before the store is opened (so a port in use fails early), and the
/// kernel completes connections into its backlog; only once the outbox is
/// open does the server read a request and answer.
async fn wait_ready(child: &mut Child, port: u16, log: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "{what}: the daemon exited ({st}) before serving: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if answers_http(port).await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the daemon did not come up: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether an HTTP request to `port` gets any answer within a second.
async fn answers_http(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: outbox\r\nConnection: close\r\n\r\n")
            .await?;
        let mut first = [0u8; 5];
        s.read_exact(&mut first).await?;
        std::io::Result::Ok(&first == b"HTTP/")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ask).await,
        Ok(Ok(true))
    )
}

/// The clients: up to 40 records a request; a 500 fails the test.
const LOAD: Load = Load {
    max_batch: 40,
    payload,
    server_errors: false,
};

fn payload(id: u64) -> String {
    format!("{{\"id\":{id},\"pad\":\"{}\"}}", "k".repeat(48))
}

/// The file sink's committed offset, from `outbox status` on the stopped
/// directory.
fn out_offset(data: &Path) -> u64 {
    let out = bin()
        .args(["status", "--json", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status on a killed daemon's directory: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sink"] == "out")
        .and_then(|s| s["offset"].as_u64())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loop_loses_no_acknowledged_record() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let receiver = Arc::new(Receiver::default());
    let hook = serve_receiver(receiver.clone()).await;
    let port = free_port();
    let cfg = write_config(dir, port, hook);
    let log = dir.join("daemon.log");
    let out = dir.join("out.ndjson");
    let oracle = Arc::new(Oracle::default());
    // Per kill: full lines in the file, and the file sink's durable offset.
    let mut cuts: Vec<(usize, u64)> = Vec::new();
    let started = Instant::now();
    let kills = kill_count("OUTBOX_KILL9_KILLS", 22);
    for round in 0..kills {
        let mut child = spawn_daemon(&cfg, &log);
        wait_ready(&mut child, port, &log, &format!("run {round}")).await;
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..2)
            .map(|_| tokio::spawn(client(port, round, LOAD, oracle.clone(), stop.clone())))
            .collect();
        let ms = rand::rng().random_range(100..1200);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "run {round}: the daemon exited ({st}) before it was killed: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
        let lines = out_ids(&out, payload, true, TORN).len();
        cuts.push((lines, out_offset(&dir.join("data"))));
    }

    // The final run: a clean drain on SIGTERM.
    let mut child = spawn_daemon(&cfg, &log);
    wait_ready(&mut child, port, &log, "final run").await;
    // Some load on the final run too; the daemon's signal handler is in
    // place by the time it has answered requests.
    let stop = Arc::new(AtomicBool::new(false));
    let c = tokio::spawn(client(port, kills, LOAD, oracle.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    c.await.unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(120);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the final drain did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        st.success(),
        "final drain: {st}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let status = bin()
        .args(["status", "--json", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    for s in v["sinks"].as_array().unwrap() {
        assert_eq!(s["lag"], 0, "after the drain: {s}");
        assert_eq!(s["dlq"], 0, "nothing dead-lettered: {s}");
    }

    // The oracle.
    let acked = oracle.acked.lock().clone();
    let ids = out_ids(&out, payload, false, TORN);
    let mut count: BTreeMap<u64, u64> = BTreeMap::new();
    for id in &ids {
        *count.entry(*id).or_default() += 1;
    }
    let lost: Vec<u64> = acked
        .keys()
        .filter(|id| !count.contains_key(id))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged ids missing from the file sink: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    let hook_got = receiver.got.lock().clone();
    let hook_lost: Vec<&u64> = acked
        .keys()
        .filter(|id| !hook_got.contains_key(id))
        .collect();
    assert!(
        hook_lost.is_empty(),
        "{} acknowledged ids never reached the webhook",
        hook_lost.len()
    );

    // Duplicates: a line that repeats an earlier id must lie in a run after
    // a kill, with a seq at or after the file sink's durable offset then.
    let mut seen = BTreeSet::new();
    let mut dups = 0u64;
    let mut dups_checked = 0u64;
    for (pos, id) in ids.iter().enumerate() {
        if seen.insert(*id) {
            continue;
        }
        dups += 1;
        // The kill that ended the run before the one that wrote this line.
        let kill = cuts.iter().rposition(|(lines, _)| *lines <= pos);
        let Some(k) = kill else {
            panic!("id {id} repeated at line {} before any kill", pos + 1);
        };
        if let Some((seq, _)) = acked.get(id) {
            let offset = cuts[k].1;
            assert!(
                *seq >= offset,
                "id {id} (seq {seq}) delivered again after kill {k}, below the durable offset {offset}"
            );
            dups_checked += 1;
        }
    }
    let hook_dups: u64 = hook_got.values().map(|n| n - 1).sum();
    println!(
        "kill9: kills={kills} acknowledged={} lost=0 file_lines={} duplicates={dups} (seq-checked {dups_checked}) \
         webhook_500s={} webhook_duplicates={hook_dups} requests_ok={} requests_cut={} time={:?}",
        acked.len(),
        ids.len(),
        receiver.failed.load(Ordering::Relaxed),
        oracle.requests_ok.load(Ordering::Relaxed),
        oracle.requests_failed.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert!(
        acked.len() > 500,
        "only {} records acknowledged",
        acked.len()
    );
}
