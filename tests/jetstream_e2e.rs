//! The JetStream source and sink in the real binary, against a real
//! `nats-server -js` started by each test (see `tests/nats`), with real
//! webhook receivers on 127.0.0.1 and SIGKILL for crashes.
#![cfg(feature = "jetstream")]

mod common;
mod nats;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use parking_lot::Mutex;
use rand::Rng;
use uuid::Uuid;

use common::ingest::http_client;
use common::process::bin;

const SECRET_B64: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQ=";
/// The namespace of `src/source/jetstream/map.rs`, spelled out again so a
/// change there fails here.
const NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b7e_94d3_4c0a_8e55_1d2a_b7c9_03f4);

/// The delivery id every daemon must give message `seq` of the stream
/// `name` created at `created_ns`.
fn fleet_id(name: &str, created_ns: i128, seq: u64) -> String {
    let log_id = Uuid::new_v5(
        &NAMESPACE,
        format!("jetstream:{name}:{created_ns}").as_bytes(),
    );
    format!("msg_{}_{seq}", log_id.simple())
}

/// The stream's creation time in ns, as the server reports it.
fn created_ns(s: &async_nats::jetstream::stream::Stream) -> i128 {
    s.cached_info().created.unix_timestamp_nanos()
}

fn payload(n: u64) -> String {
    format!("{{\"n\":{n}}}")
}

fn n_of(body: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "not a test payload ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    v["n"].as_u64().expect("n")
}

// ---------------------------------------------------------------- receiver

/// A webhook receiver: records (webhook-id, n) of every 200; answers 500 to
/// about `fail_one_in` requests (0: never), and holds every request while
/// the gate is closed.
#[derive(Default)]
struct Hook {
    got: Mutex<Vec<(String, u64)>>,
    fail_one_in: u32,
    closed: AtomicBool,
}

async fn serve_hook(hook: Arc<Hook>) -> std::net::SocketAddr {
    use axum::http::{HeaderMap, StatusCode};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let hook = hook.clone();
            async move {
                while hook.closed.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if hook.fail_one_in > 0 && rand::rng().random_ratio(1, hook.fail_one_in) {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                hook.got.lock().push((id, n_of(&body)));
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

// ------------------------------------------------------------------ daemon

struct Daemon {
    child: Child,
    admin: u16,
    log: PathBuf,
}

impl Daemon {
    /// `outbox run --config CFG`, stderr appended to `log`; waits until the
    /// daemon announces its admin endpoint, which it does once the source is
    /// set up and the outbox open.
    async fn start(cfg: &Path, admin: u16, log: &Path) -> Daemon {
        let banner = format!("outbox: admin listening on http://127.0.0.1:{admin}");
        let before = std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches(&banner)
            .count();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = bin()
            .args(["run", "--config"])
            .arg(cfg)
            .env("JS_HOOK_SECRET", SECRET_B64)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            admin,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("the daemon exited ({st}) before serving: {}", d.log_text());
            }
            if d.log_text().matches(&banner).count() > before {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not come up: {}",
                d.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn sigkill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and the exit code.
    async fn stop(mut self) -> i32 {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /metrics` of the admin endpoint.
    async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `outbox` run to completion.
fn run_to_end(args: &[&str]) -> std::process::Output {
    bin()
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `outbox dump --format json` of a stopped data directory.
fn dump(data: &Path) -> serde_json::Value {
    let o = run_to_end(&[
        "dump",
        "--data-dir",
        data.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Config text: a JetStream source and the given sink tables.
fn source_config(dir: &Path, url: &str, admin: u16, source_extra: &str, sinks: &str) -> PathBuf {
    let cfg = dir.join("outbox.toml");
    let text = format!(
        r#"data_dir = "{data}"
drain_timeout_secs = 30

[admin]
listen = "127.0.0.1:{admin}"

[log]
level = "warn"

[source]
kind = "jetstream"
url = "{url}"
stream = "IN"
consumer = "outbox"
ack_wait_ms = 2000
{source_extra}

{sinks}
"#,
        data = dir.join("data").display(),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// A source config from `url` with [`file_and_hook_sinks`], its admin
/// listener on a free port (returned).
fn file_and_hook_config(dir: &Path, url: &str, hook: std::net::SocketAddr) -> (PathBuf, u16) {
    let admin = nats::free_port();
    let sinks = file_and_hook_sinks(dir, hook);
    (source_config(dir, url, admin, "", &sinks), admin)
}

fn file_and_hook_sinks(dir: &Path, hook: std::net::SocketAddr) -> String {
    format!(
        "[[sinks]]\nname = \"out\"\nkind = \"file\"\npath = \"{}\"\n\n{}",
        dir.join("out.ndjson").display(),
        hook_sink(hook, 2000)
    )
}

/// The webhook sink `hook` to `addr`: it retries fast and long, and gives
/// up on a request after `timeout_ms`.
fn hook_sink(addr: std::net::SocketAddr, timeout_ms: u64) -> String {
    format!(
        r#"[[sinks]]
name = "hook"
kind = "webhook"
retry_max = 100000
backoff_base_ms = 1
backoff_max_ms = 20
[sinks.webhook]
url = "http://{addr}/hook"
secret_env = "JS_HOOK_SECRET"
timeout_ms = {timeout_ms}
"#
    )
}

/// The file sink's lines as `n`s; a torn last line (a kill mid-write) is
/// left out.
fn file_ns(path: &Path) -> Vec<u64> {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
    text.lines().map(|l| n_of(l.as_bytes())).collect()
}

// ------------------------------------------------------------------- nats

async fn publish_range(js: &async_nats::jetstream::Context, ns: std::ops::Range<u64>) {
    let mut acks = Vec::new();
    for n in ns {
        let mut h = async_nats::HeaderMap::new();
        h.insert("x-test", n.to_string().as_str());
        acks.push(
            js.publish_with_headers("in.orders", h, payload(n).into())
                .await
                .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap();
    }
}

async fn consumer(js: &async_nats::jetstream::Context) -> PullConsumer {
    let stream = js.get_stream("IN").await.unwrap();
    stream
        .get_consumer("outbox")
        .await
        .expect("the consumer outbox made")
}

/// (num_pending, num_ack_pending, num_redelivered) of the consumer.
async fn pending(c: &mut PullConsumer) -> (u64, usize, usize) {
    let i = c.info().await.unwrap();
    (i.num_pending, i.num_ack_pending, i.num_redelivered)
}

async fn wait_for(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------ tests

/// Publish, run outbox with a file sink and a flaky webhook sink, SIGKILL
/// it at random moments at least 10 times (publishing more between runs),
/// then let a last run drain. Every message is in both sinks, the consumer
/// has nothing pending or unacked, and no stream sequence was appended
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_survives_sigkills_and_acks_everything_once() {
    let server = nats_or_skip!();
    let js = nats::js(&server.url()).await;
    let created = created_ns(&nats::stream(&js, "IN", &["in.>"], Duration::from_secs(120)).await);
    let dir = tempfile::tempdir().unwrap();
    let hook = Arc::new(Hook {
        fail_one_in: 8,
        ..Hook::default()
    });
    let addr = serve_hook(hook.clone()).await;
    let (cfg, admin) = file_and_hook_config(dir.path(), &server.url(), addr);
    let log = dir.path().join("outbox.log");
    let data = dir.path().join("data");

    let kills = 12;
    let per_run = 300u64;
    let mut published = 0u64;
    // Log seq -> n, for every record seen in the log at a kill.
    let mut logged: BTreeMap<u64, u64> = BTreeMap::new();
    for k in 0..kills {
        publish_range(&js, published..published + per_run).await;
        published += per_run;
        let d = Daemon::start(&cfg, admin, &log).await;
        let ms = rand::rng().random_range(200..1200);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        d.sigkill();
        let v = dump(&data);
        for r in v["log"].as_array().unwrap() {
            let n = n_of(r["payload"]["text"].as_str().unwrap().as_bytes());
            logged.insert(r["seq"].as_u64().unwrap(), n);
        }
        eprintln!(
            "kill {k}: after {ms} ms; {} records in the log",
            v["log"].as_array().unwrap().len()
        );
    }
    let d = Daemon::start(&cfg, admin, &log).await;
    let mut c = consumer(&js).await;
    let want: BTreeSet<u64> = (0..published).collect();
    wait_for("every message in both sinks and acked", 120, async || {
        let hooked: BTreeSet<u64> = hook.got.lock().iter().map(|(_, n)| *n).collect();
        let filed: BTreeSet<u64> = file_ns(&dir.path().join("out.ndjson"))
            .into_iter()
            .collect();
        let (p, ap, _) = pending(&mut c).await;
        hooked == want && filed == want && p == 0 && ap == 0
    })
    .await;
    let code = d.stop().await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 0, "{text}");

    // Every message in every sink.
    let filed: BTreeSet<u64> = file_ns(&dir.path().join("out.ndjson"))
        .into_iter()
        .collect();
    assert_eq!(filed, want);
    let hooked: BTreeSet<u64> = hook.got.lock().iter().map(|(_, n)| *n).collect();
    assert_eq!(hooked, want);
    // Nothing pending, nothing unacked.
    let (p, ap, _) = pending(&mut c).await;
    assert_eq!((p, ap), (0, 0), "consumer still holds messages");
    // Stream sequence n+1 carries n (a fresh stream numbers from 1).
    // No stream sequence appended twice: no n sits under two log seqs in
    // what the log held at any kill (dumped while the daemon was dead).
    let v = dump(&data);
    for r in v["log"].as_array().unwrap() {
        let n = n_of(r["payload"]["text"].as_str().unwrap().as_bytes());
        logged.insert(r["seq"].as_u64().unwrap(), n);
    }
    let mut seqs_of: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (seq, n) in &logged {
        seqs_of.entry(*n).or_default().push(*seq);
    }
    let twice: Vec<_> = seqs_of.iter().filter(|(_, s)| s.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "stream sequences appended twice: {} of them, e.g. {:?}",
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>()
    );
    eprintln!(
        "{} distinct records seen in the log at the kills; the last run: {}",
        logged.len(),
        text.lines()
            .rev()
            .find(|l| l.starts_with("outbox: jetstream source: "))
            .unwrap_or("")
    );
    // Every webhook delivery of n carries the fleet id of stream seq n+1.
    for (id, n) in hook.got.lock().iter() {
        assert_eq!(id, &fleet_id("IN", created, n + 1), "webhook-id of n={n}");
    }
}

/// A gated webhook sink holds the acks: every message is in the file sink
/// at once, but none is acked while the webhook is short of it, and none is
/// redelivered although the wait is longer than ack_wait (in-progress acks).
/// Once the gate opens every message is acked, and both sinks got the
/// messages in stream order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ack_before_every_sink_has_the_record() {
    let server = nats_or_skip!();
    let js = nats::js(&server.url()).await;
    nats::stream(&js, "IN", &["in.>"], Duration::from_secs(120)).await;
    let dir = tempfile::tempdir().unwrap();
    let hook = Arc::new(Hook::default());
    hook.closed.store(true, Ordering::Release);
    let addr = serve_hook(hook.clone()).await;
    let (cfg, admin) = file_and_hook_config(dir.path(), &server.url(), addr);
    let log = dir.path().join("outbox.log");
    let n = 40u64;
    publish_range(&js, 0..n).await;
    let d = Daemon::start(&cfg, admin, &log).await;
    let mut c = consumer(&js).await;
    wait_for("the file sink has every message", 30, async || {
        file_ns(&dir.path().join("out.ndjson")).len() == n as usize
    })
    .await;
    // Three ack_waits (2 s each) with the webhook held.
    for _ in 0..6 {
        let (p, ap, redelivered) = pending(&mut c).await;
        assert_eq!(p, 0, "every message was delivered to outbox");
        assert_eq!(
            ap as u64, n,
            "a message was acked while the webhook sink is short of it"
        );
        assert_eq!(
            redelivered, 0,
            "ack_wait ran out: no in-progress ack was sent"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(hook.got.lock().is_empty());
    hook.closed.store(false, Ordering::Release);
    wait_for("every message acked", 30, async || {
        pending(&mut c).await == (0, 0, 0)
    })
    .await;
    assert_eq!(d.stop().await, 0);
    let order: Vec<u64> = (0..n).collect();
    assert_eq!(file_ns(&dir.path().join("out.ndjson")), order);
    let hooked: Vec<u64> = hook.got.lock().iter().map(|(_, n)| *n).collect();
    assert_eq!(hooked, order);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        counter(&text, "outbox: jetstream source: ", "appended"),
        n,
        "{text}"
    );
    assert_eq!(
        counter(&text, "outbox: jetstream source: ", "acked"),
        n,
        "{text}"
    );
    assert!(
        counter(&text, "outbox: jetstream source: ", "progress") > 0,
        "{text}"
    );
}

/// Bad input: an unreachable server and a missing stream stop `run` before
/// the data directory is created, with a message and exit code 1 and 2; an
/// invalid payload is terminated and counted while the valid ones around it
/// are delivered; a server that goes away mid-run is waited out and nothing
/// is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_nothing_is_lost() {
    let mut server = nats_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out.ndjson");
    let sinks = format!(
        "[[sinks]]\nname = \"out\"\nkind = \"file\"\npath = \"{}\"\n",
        out.display()
    );
    let admin = nats::free_port();

    // Nothing listens on this port.
    let nowhere = format!("nats://127.0.0.1:{}", nats::free_port());
    let cfg = source_config(dir.path(), &nowhere, admin, "", &sinks);
    let o = run_to_end(&["run", "--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot connect to NATS at") && err.contains(&nowhere),
        "{err}"
    );
    assert!(!data.exists(), "the data directory was created");

    // The stream does not exist yet.
    let cfg = source_config(dir.path(), &server.url(), admin, "", &sinks);
    let o = run_to_end(&["run", "--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("source.stream") && err.contains("stream `IN` does not exist"),
        "{err}"
    );
    assert!(!data.exists(), "the data directory was created");

    // An invalid payload between two valid ones.
    let js = nats::js(&server.url()).await;
    nats::stream(&js, "IN", &["in.>"], Duration::from_secs(120)).await;
    publish_range(&js, 0..1).await;
    js.publish("in.orders", "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    publish_range(&js, 2..3).await;
    let log = dir.path().join("outbox.log");
    let d = Daemon::start(&cfg, admin, &log).await;
    let mut c = consumer(&js).await;
    wait_for(
        "both valid messages filed and all three settled",
        30,
        async || file_ns(&out) == [0, 2] && pending(&mut c).await == (0, 0, 0),
    )
    .await;

    // The server goes away (SIGKILL) and comes back on the same port and
    // store; messages published before and after are all delivered.
    server.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart();
    let js = nats::js(&server.url()).await;
    publish_range(&js, 3..200).await;
    let mut c = consumer(&js).await;
    let want: Vec<u64> = [0].into_iter().chain(2..200).collect();
    wait_for(
        "every valid message filed after the outage",
        60,
        async || {
            let mut got = file_ns(&out);
            got.sort();
            got.dedup();
            let (p, ap, _) = pending(&mut c).await;
            got == want && p == 0 && ap == 0
        },
    )
    .await;
    assert_eq!(d.stop().await, 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("stream sequence 2: payload is not valid JSON"),
        "the invalid message is not named: {text}"
    );
    // Once, or again if the SIGKILLed server lost the Term before it wrote
    // its consumer state (it then redelivers the message).
    let terminated = counter(&text, "outbox: jetstream source: ", "terminated");
    assert!((1..=2).contains(&terminated), "{text}");
}

/// A counter from the last summary line starting with `prefix`.
fn counter(log: &str, prefix: &str, key: &str) -> u64 {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` line with {key}: {log}"))
}

/// Two daemons, each with its own data directory, share one consumer. B's
/// webhook receiver holds every request, so B appends messages it cannot
/// finish; B is SIGKILLed. JetStream redelivers B's unacked messages to A
/// after ack_wait, and B, restarted with its receiver open, delivers its own
/// log too. Every message reaches a receiver, the consumer ends with
/// nothing pending, the messages delivered by both carry the same delivery
/// id both times, and that id is derived from stream and sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_two_shares_a_consumer_and_survives_a_kill() {
    let server = nats_or_skip!();
    let js = nats::js(&server.url()).await;
    let created = created_ns(&nats::stream(&js, "IN", &["in.>"], Duration::from_secs(120)).await);
    let hooks = [Arc::new(Hook::default()), Arc::new(Hook::default())];
    hooks[1].closed.store(true, Ordering::Release);
    let addrs = [
        serve_hook(hooks[0].clone()).await,
        serve_hook(hooks[1].clone()).await,
    ];
    let n = 2000u64;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let admins = [nats::free_port(), nats::free_port()];
    let sinks = |d: &Path, addr: std::net::SocketAddr| {
        format!(
            "{}\n[[sinks]]\nname = \"out\"\nkind = \"file\"\npath = \"{}\"\n",
            hook_sink(addr, 60000),
            d.join("out.ndjson").display()
        )
    };
    let cfgs: Vec<PathBuf> = (0..2)
        .map(|i| {
            source_config(
                dirs[i].path(),
                &server.url(),
                admins[i],
                "max_ack_pending = 5000",
                &sinks(dirs[i].path(), addrs[i]),
            )
        })
        .collect();
    let logs: Vec<PathBuf> = (0..2).map(|i| dirs[i].path().join("outbox.log")).collect();
    let a = Daemon::start(&cfgs[0], admins[0], &logs[0]).await;
    let b = Daemon::start(&cfgs[1], admins[1], &logs[1]).await;
    publish_range(&js, 0..n).await;
    let b_out = dirs[1].path().join("out.ndjson");
    wait_for("B appends messages it cannot finish", 30, async || {
        file_ns(&b_out).len() >= 20
    })
    .await;
    b.sigkill();
    let held: BTreeSet<u64> = file_ns(&b_out).into_iter().collect();
    let mut c = consumer(&js).await;
    // B's unacked messages go to A once ack_wait (2 s) runs out.
    wait_for("A delivers every message", 60, async || {
        hooks[0]
            .got
            .lock()
            .iter()
            .map(|(_, n)| *n)
            .collect::<BTreeSet<_>>()
            .len()
            == n as usize
    })
    .await;
    hooks[1].got.lock().clear();
    hooks[1].closed.store(false, Ordering::Release);
    let b = Daemon::start(&cfgs[1], admins[1], &logs[1]).await;
    wait_for(
        "B delivers its own log, and nothing is pending",
        60,
        async || {
            let got: BTreeSet<u64> = hooks[1].got.lock().iter().map(|(_, n)| *n).collect();
            let (p, ap, _) = pending(&mut c).await;
            held.is_subset(&got) && p == 0 && ap == 0
        },
    )
    .await;
    assert_eq!(a.stop().await, 0);
    assert_eq!(b.stop().await, 0);
    let mut ids_of: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for h in &hooks {
        for (id, n) in h.got.lock().iter() {
            ids_of.entry(*n).or_default().insert(id.clone());
        }
    }
    let want: BTreeSet<u64> = (0..n).collect();
    assert_eq!(ids_of.keys().copied().collect::<BTreeSet<_>>(), want);
    let twice: BTreeSet<u64> = hooks[1].got.lock().iter().map(|(_, n)| *n).collect();
    assert!(twice.is_superset(&held) && !held.is_empty());
    eprintln!("{} messages delivered by both daemons", twice.len());
    for n in &twice {
        assert_eq!(
            ids_of[n].len(),
            1,
            "n={n} was delivered under two ids: {:?}",
            ids_of[n]
        );
    }
    for (n, ids) in &ids_of {
        assert_eq!(
            ids,
            &BTreeSet::from([fleet_id("IN", created, n + 1)]),
            "n={n}: not the fleet id"
        );
    }
}

/// The JetStream sink under SIGKILL of outbox and a restart of nats-server:
/// records come in over HTTP ingest while outbox is killed 5 times and the
/// server restarted once. The target stream ends with every accepted record
/// exactly once under its delivery id, and the replays after the last kill
/// were counted as duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_survives_sigkills_and_a_server_restart() {
    let mut server = nats_or_skip!();
    let js = nats::js(&server.url()).await;
    nats::stream(&js, "OUT", &["out.>"], Duration::from_secs(600)).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = nats::free_port();
    let ingest = nats::free_port();
    let cfg = dir.path().join("outbox.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"data_dir = "{data}"
[ingest]
listen = "127.0.0.1:{ingest}"
[admin]
listen = "127.0.0.1:{admin}"
[log]
level = "warn"
[[sinks]]
name = "js"
kind = "jetstream"
batch_max = 512
retry_max = 100000
backoff_base_ms = 5
backoff_max_ms = 200
[sinks.jetstream]
url = "{url}"
subject = "out.records"
timeout_ms = 2000
"#,
            data = data.display(),
            url = server.url()
        ),
    )
    .unwrap();
    let log = dir.path().join("outbox.log");
    // n -> log seq, for every record in a 200.
    let accepted: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let mut expected_dups = 0u64;
    let mut last_expected = 0u64;
    for run in 0..6 {
        let d = Daemon::start(&cfg, admin, &log).await;
        let stop = Arc::new(AtomicBool::new(false));
        let pump = tokio::spawn(push(ingest, accepted.clone(), next.clone(), stop.clone()));
        if run == 2 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            server.restart();
        }
        let ms = rand::rng().random_range(300..900);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if run == 5 {
            stop.store(true, Ordering::Relaxed);
            pump.await.unwrap();
            let want = accepted.lock().len() as u64;
            let mut st = js.get_stream("OUT").await.unwrap();
            wait_for("the stream holds every accepted record", 60, async || {
                st.info().await.unwrap().state.messages >= want
            })
            .await;
            let m = d.metrics().await;
            assert_eq!(d.stop().await, 0);
            let text = std::fs::read_to_string(&log).unwrap();
            let dups = counter(&text, "outbox: jetstream sink js: ", "duplicates");
            assert!(
                dups >= last_expected,
                "{dups} duplicates counted, {last_expected} replays of records the stream held"
            );
            assert!(m.contains("outbox_jetstream_publish_total"), "{m}");
            break;
        }
        stop.store(true, Ordering::Relaxed);
        d.sigkill();
        pump.await.unwrap();
        // The records at or past the committed offset that the stream
        // already holds are published again by the next run: each must come
        // back as a duplicate.
        let v = dump(&data);
        let committed = v["offsets"][0]["offset"].as_u64().unwrap();
        let in_stream: BTreeSet<String> = nats::read_stream(&js, "OUT")
            .await
            .into_iter()
            .filter_map(|(_, id, _)| id)
            .collect();
        last_expected = v["log"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["seq"].as_u64().unwrap() >= committed)
            .filter(|r| in_stream.contains(r["delivery_id"].as_str().unwrap()))
            .count() as u64;
        expected_dups += last_expected;
        eprintln!(
            "run {run}: killed after {ms} ms; {last_expected} records to be replayed as duplicates"
        );
    }
    assert!(
        expected_dups > 0,
        "no kill left a published record uncommitted: the duplicate path was not exercised"
    );
    // Every accepted record exactly once, under its delivery id.
    let stored = nats::read_stream(&js, "OUT").await;
    let mut by_id: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (_, id, body) in &stored {
        by_id
            .entry(id.clone().expect("Nats-Msg-Id"))
            .or_default()
            .push(n_of(body));
    }
    let once: Vec<_> = by_id.iter().filter(|(_, ns)| ns.len() != 1).collect();
    assert!(
        once.is_empty(),
        "delivery ids stored more than once: {once:?}"
    );
    let stored_ns: BTreeSet<u64> = by_id.values().flatten().copied().collect();
    let accepted_ns: BTreeSet<u64> = accepted.lock().keys().copied().collect();
    assert!(
        accepted_ns.is_subset(&stored_ns),
        "accepted records missing from the stream: {:?}",
        accepted_ns
            .difference(&stored_ns)
            .take(10)
            .collect::<Vec<_>>()
    );
    assert_eq!(stored.len(), by_id.len());
}

/// Pushes NDJSON batches to ingest until `stop`; keeps n -> log seq of
/// every 200.
async fn push(
    port: u16,
    accepted: Arc<Mutex<BTreeMap<u64, u64>>>,
    next: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let http = http_client();
    let url = format!("http://127.0.0.1:{port}/v1/records");
    while !stop.load(Ordering::Relaxed) {
        let k = 20u64;
        let first = next.fetch_add(k, Ordering::Relaxed);
        let body: String = (first..first + k).map(|n| payload(n) + "\n").collect();
        let Ok(resp) = http.post(&url).body(body).send().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        if resp.status().as_u16() != 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let Ok(text) = resp.text().await else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let f = v["first_seq"].as_u64().unwrap();
        let mut a = accepted.lock();
        for i in 0..k {
            a.insert(first + i, f + i);
        }
    }
}
