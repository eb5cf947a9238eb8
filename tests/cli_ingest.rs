//! HTTP ingest and the admin endpoint, end to end against the real binary.

mod common;

use common::cli::{Daemon, HOOK, Receiver, code, dump_json, http, run, stderr, stdout};
use common::config::Config;
use common::process::wait_for;
use serde_json::json;

const TOKEN: &str = "test-token-5f1e";

/// A config for `DIR/data` with a bearer token, small limits and `sinks`,
/// written to `DIR/outbox.toml`.
fn config(dir: &std::path::Path, sinks: impl FnOnce(Config) -> Config) -> std::path::PathBuf {
    let c = Config::new(&dir.join("data"))
        .set("max_record_bytes", 64)
        .set("drain_timeout_secs", 5)
        .raw("[ingest]\nmax_body_bytes = 1024\ntoken_env = \"OUTBOX_TEST_TOKEN\"\n");
    sinks(c).write(&dir.join("outbox.toml"))
}

/// POSTs `body` to ingest with `token` (if any) and the `extra` headers.
fn post_with(
    d: &Daemon,
    body: &[u8],
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> common::cli::Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/x-ndjson")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    headers.extend_from_slice(extra);
    http(d.ingest.unwrap(), "POST", "/v1/records", &headers, body)
}

fn post(d: &Daemon, body: &[u8], token: Option<&str>) -> common::cli::Reply {
    post_with(d, body, token, &[])
}

#[test]
fn ingest_is_atomic_per_request_and_admin_reports_it() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out.ndjson");
    // `zz-hold` is a webhook to a port nothing listens on: it never
    // delivers, so the records stay in the log (truncation waits for every
    // sink) and the log can be read back through the admin endpoint and
    // after the stop.
    let cfg = config(t.path(), |c| {
        c.file("out", &out, "").webhook(
            "zz-hold",
            "http://127.0.0.1:9/",
            "backoff_base_ms = 60000\nbackoff_max_ms = 60000\n",
        )
    });
    let data = t.path().join("data");
    let d = Daemon::listening(&cfg, &[("OUTBOX_TEST_TOKEN", TOKEN), HOOK]);
    assert!(d.ingest.unwrap().ip().is_loopback());

    // No token, wrong token: 401, nothing appended.
    let r = post(&d, b"{\"x\":0}\n", None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(post(&d, b"{\"x\":0}\n", Some("wrong")).status, 401);

    let r = post(&d, b"{\"a\":1}\n\n{\"b\":2}\r\n", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"accepted": 2, "first_seq": 0, "last_seq": 1})
    );

    // One bad line among good ones: 400 naming line 3, nothing appended.
    let r = post(&d, b"{\"c\":3}\n\nnot json\n{\"d\":4}\n", Some(TOKEN));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["line"], 3);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("line 3: not valid JSON")
    );

    // A record over max_record_bytes (64): 413 naming its line.
    let big = format!("{{\"e\":5}}\n\"{}\"\n", "x".repeat(100));
    let r = post(&d, big.as_bytes(), Some(TOKEN));
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["line"], 2);

    // A body over max_body_bytes (1024): 413.
    let body = "{\"f\":6}\n".repeat(200);
    let r = post(&d, body.as_bytes(), Some(TOKEN));
    assert_eq!(r.status, 413, "{}", r.body);

    // An empty body is refused too.
    assert_eq!(post(&d, b"\n\n", Some(TOKEN)).status, 400);

    let admin = d.admin.unwrap();
    let health = http(admin, "GET", "/healthz", &[], b"");
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"status": "ok"}))
    );
    wait_for("delivery", 20, || {
        let s = http(admin, "GET", "/v1/status", &[], b"").json();
        s["sinks"][0]["offset"] == 2
    });
    let s = http(admin, "GET", "/v1/status", &[], b"").json();
    assert_eq!(s["head"], 2);
    assert_eq!(
        s["sinks"][0],
        json!({"sink": "out", "offset": 2, "head": 2, "lag": 0, "dlq": 0, "orphaned": false, "state": "ok"})
    );
    assert_eq!(s["sinks"][1]["sink"], "zz-hold");
    assert_eq!(s["sinks"][1]["lag"], 2);

    let m = http(admin, "GET", "/metrics", &[], b"");
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    for want in [
        "outbox_appended_records_total 2",
        "outbox_delivered_total{sink=\"out\"} 2",
        "outbox_dlq_total{sink=\"out\"} 0",
        "outbox_lag_records{sink=\"out\"} 0",
        "outbox_head_seq 2",
        "outbox_write_stalled 0",
        "outbox_append_durable_seconds_bucket",
        "outbox_append_to_delivered_seconds_bucket{sink=\"out\"",
    ] {
        assert!(m.body.contains(want), "missing {want} in\n{}", m.body);
    }

    // The directory is locked: dump says so plainly and points at --admin.
    let o = run(&["dump", "--data-dir", data.to_str().unwrap()], b"");
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("is locked"), "{err}");
    assert!(
        err.contains(&data.join("db").display().to_string()),
        "{err}"
    );
    assert!(err.contains("--admin URL"), "{err}");

    // ... and with --admin it asks the daemon instead.
    let url = format!("http://{admin}");
    let o = run(
        &[
            "dump", "--admin", &url, "--tree", "offsets", "--format", "json",
        ],
        b"",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["offsets"][0]["sink"], "out");
    assert_eq!(v["offsets"][0]["offset"], 2);
    assert!(v.get("log").is_none());
    // The log too, read from the running daemon.
    let o = run(
        &[
            "dump", "--admin", &url, "--tree", "log", "--from", "1", "--format", "json",
        ],
        b"",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let seqs: Vec<u64> = v["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1], "from 1: only the second good record");
    assert!(v["log"][0]["delivery_id"].as_str().unwrap().ends_with("_1"));
    let o = run(&["status", "--admin", &url, "--json"], b"");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["sinks"][0]["offset"], 2);

    let (c, err) = d.stop();
    assert_eq!(c, 0, "{err}");
    assert!(!err.contains(TOKEN), "the token leaked into the logs");
    assert!(err.contains("appended 2 records"), "{err}");

    // Afterwards: exactly the two records of the good request.
    let v = dump_json(&data, &["--tree", "log"]);
    let log = v["log"].as_array().unwrap();
    let got: Vec<(u64, &str)> = log
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["payload"]["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [(0, "{\"a\":1}"), (1, "{\"b\":2}")]);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "{\"a\":1}\n{\"b\":2}\n"
    );
    let o = run(&["status", "--data-dir", data.to_str().unwrap()], b"");
    assert_eq!(code(&o), 0);
    let row: Vec<String> = stdout(&o)
        .lines()
        .nth(2)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(row, ["out", "2", "2", "0", "0", "ok", "no"]);
}

#[test]
fn ingest_answers_503_while_a_block_sink_is_full() {
    // The receiver always answers 503, so the sink never commits and its
    // lag stays at its limit of one record.
    let rx = Receiver::start(vec![503]);
    let t = tempfile::tempdir().unwrap();
    let cfg = config(t.path(), |c| {
        c.webhook(
            "web",
            &format!("http://{}/hook", rx.addr),
            "max_lag_records = 1\nretry_max = 1000\nbackoff_base_ms = 50\nbackoff_max_ms = 100\n",
        )
    });
    let d = Daemon::ingesting(
        &cfg,
        &["--drain-timeout", "1"],
        &[("OUTBOX_TEST_TOKEN", TOKEN), HOOK],
    );
    let r = post(&d, b"{\"a\":1}\n", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for("the first attempt", 20, || !rx.seen().is_empty());
    let r = post(&d, b"{\"b\":2}\n", Some(TOKEN));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        r.json()["error"].as_str().unwrap().contains("sink web"),
        "{}",
        r.body
    );
    let (c, err) = d.stop();
    assert_eq!(c, 0, "{err}");
    assert!(!err.contains("hook-secret"));
    let v = dump_json(&t.path().join("data"), &["--tree", "log"]);
    assert_eq!(v["log"].as_array().unwrap().len(), 1, "{v}");
}

/// A SIGTERM the moment the listeners are announced drains and exits 0: the
/// handler is installed before anything is announced.
#[test]
fn sigterm_right_after_start_drains_and_exits_0() {
    for _ in 0..5 {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out.ndjson");
        let cfg = config(t.path(), |c| c.file("out", &out, ""));
        let d = Daemon::ingesting(&cfg, &[], &[("OUTBOX_TEST_TOKEN", TOKEN)]);
        let (c, err) = d.stop();
        assert_eq!(c, 0, "{err}");
        assert!(err.contains("appended 0 records"), "{err}");
    }
}

/// POSTs `body` with an `Idempotency-Key`.
fn post_keyed(d: &Daemon, key: &str, body: &[u8]) -> common::cli::Reply {
    post_with(d, body, Some(TOKEN), &[("Idempotency-Key", key)])
}

/// POSTs the two records keyed `order-17`; the answer is the receipt of
/// the first time, seqs 0 and 1.
fn post_order_17(d: &Daemon) -> common::cli::Reply {
    let r = post_keyed(d, "order-17", b"{\"a\":1}\n{\"b\":2}\n");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"accepted": 2, "first_seq": 0, "last_seq": 1})
    );
    r
}

/// The file sink's output lines (one payload each), in order.
fn output_lines(out: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_retried_post_with_the_same_idempotency_key_appends_nothing() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out.ndjson");
    let cfg = config(t.path(), |c| c.file("out", &out, ""));
    let envs = [("OUTBOX_TEST_TOKEN", TOKEN)];
    let d = Daemon::listening(&cfg, &envs);

    let r = post_order_17(&d);
    assert_eq!(r.header("idempotent-replayed"), None);

    // The same key and body: the original receipt, marked as a replay.
    let r = post_order_17(&d);
    assert_eq!(r.header("idempotent-replayed"), Some("true"));

    // The same key with another body: 409, nothing appended.
    let r = post_keyed(&d, "order-17", b"{\"a\":1}\n{\"b\":3}\n");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key reused for a different body"),
        "{}",
        r.body
    );
    // A bad key: 400 naming the header.
    let r = post_keyed(&d, "", b"{\"c\":4}\n");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("Idempotency-Key"), "{}", r.body);

    // Another key appends after the first request.
    let r = post_keyed(&d, "order-18", b"{\"c\":4}\n");
    assert_eq!(r.json()["first_seq"], 2, "{}", r.body);
    wait_for("delivery", 20, || output_lines(&out).len() == 3);
    let (c, err) = d.stop();
    assert_eq!(c, 0, "{err}");

    // The key is durable with its records: after a restart the replay still
    // answers with the original seqs and appends nothing.
    let d = Daemon::listening(&cfg, &envs);
    let r = post_order_17(&d);
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    let (c, err) = d.stop();
    assert_eq!(c, 0, "{err}");
    assert_eq!(
        output_lines(&out),
        ["{\"a\":1}", "{\"b\":2}", "{\"c\":4}"],
        "each record delivered once"
    );
    let v = dump_json(&t.path().join("data"), &["--tree", "meta"]);
    assert_eq!(v["meta"]["next_seq"], 3, "{v}");
}
