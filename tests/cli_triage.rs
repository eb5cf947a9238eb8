//! DLQ triage end to end (`dlq list|show|redrive|purge` with `--since`,
//! `--until`, `--error-match`, `--limit`, `--dry-run`), offline and through
//! the admin endpoint. The DLQ is filled for real: `outbox run` delivers to
//! a webhook receiver on 127.0.0.1 that refuses each record with the
//! status the record asks for (`{"status":422}`), so each entry's seq,
//! error and time are known.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::cli::{
    Daemon, HOOK, Receiver, code, dump_json, http, run, run_config_ok, stderr, stdout,
};
use common::config::parking_webhook;
use common::process::wait_for;
use serde_json::{Value, json};

/// Answers the record's `status` (a 4xx dead-letters it at once with
/// `retry_max = 0`) until `fixed` is set, and 200 from then on.
fn receiver(fixed: Arc<AtomicBool>) -> Receiver {
    Receiver::answering(Box::new(move |_id, body| {
        if fixed.load(Ordering::SeqCst) {
            return 200;
        }
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["status"].as_u64())
            .map_or(200, |s| s as u16)
    }))
}

/// NDJSON records `{"n":N,"status":S}`.
fn records(items: &[(u64, u16)]) -> String {
    items
        .iter()
        .map(|(n, s)| format!("{{\"n\":{n},\"status\":{s}}}\n"))
        .collect()
}

/// The first three records dead-letter in one run, the next three in a later
/// one; `mid` is an instant strictly between the two.
const FIRST: &[(u64, u16)] = &[(0, 400), (1, 422), (2, 400)];
const SECOND: &[(u64, u16)] = &[(3, 422), (4, 400), (5, 410)];

fn now_rfc3339() -> String {
    format!("{:.3}", jiff::Timestamp::now())
}

/// Runs `outbox ARGS` and returns stdout, asserting exit 0.
fn ok(args: &[&str]) -> String {
    let o = run(args, b"");
    assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    stdout(&o)
}

/// Runs `outbox ARGS`, asserting exit 2 and that stderr names `what`.
fn usage(args: &[&str], what: &str) {
    let o = run(args, b"");
    assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
    assert!(stderr(&o).contains(what), "{args:?}: {}", stderr(&o));
}

/// `dlq list --json` with `target` (`--data-dir DIR` or `--admin URL`)
/// and `extra` flags: the listed entries.
fn list(target: &[&str], extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["dlq", "list", "--sink", "web", "--json"];
    args.extend_from_slice(target);
    args.extend_from_slice(extra);
    let v: Value = serde_json::from_str(&ok(&args)).unwrap();
    v.as_array().unwrap().clone()
}

fn seqs(entries: &[Value]) -> Vec<u64> {
    entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// `dlq list` asserting the seqs it selects for each filter. `mid` splits
/// the two runs.
fn check_list_filters(target: &[&str], mid: &str) {
    let l = |extra: &[&str]| seqs(&list(target, extra));
    assert_eq!(l(&[]), [0, 1, 2, 3, 4, 5]);
    assert_eq!(l(&["--since", mid]), [3, 4, 5]);
    assert_eq!(l(&["--until", mid]), [0, 1, 2]);
    assert_eq!(l(&["--since", "1h"]), [0, 1, 2, 3, 4, 5]);
    assert_eq!(l(&["--until", "1h"]), Vec::<u64>::new());
    assert_eq!(l(&["--error-match", "HTTP 422"]), [1, 3]);
    assert_eq!(l(&["--error-match", "HTTP 4(00|10)"]), [0, 2, 4, 5]);
    assert_eq!(l(&["--error-match", "400", "--limit", "2"]), [0, 2]);
    assert_eq!(l(&["--since", mid, "--error-match", "400"]), [4]);
    assert_eq!(
        l(&["--seq", "1", "--seq", "4", "--error-match", "422"]),
        [1]
    );
    assert_eq!(l(&["--limit", "4"]), [0, 1, 2, 3]);
}

/// `dlq show` of seq 1 (refused with 422 in the first run), text and JSON.
fn check_show(target: &[&str], listed: &Value) {
    let mut args = vec!["dlq", "show", "--sink", "web", "1"];
    args.extend_from_slice(target);
    let text = ok(&args);
    let id = listed["delivery_id"].as_str().unwrap();
    assert!(id.ends_with("_1"), "{id}");
    for want in [
        "sink         web\n".to_string(),
        "seq          1\n".to_string(),
        format!("delivery id  {id}\n"),
        "attempts     1\n".to_string(),
        "last error   permanent: HTTP 422\n".to_string(),
        "payload      {\"n\":1,\"status\":422}\n".to_string(),
        "attempt history (oldest first)\n".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    // The entry keeps each attempt: here one, permanent at once.
    let row = text
        .lines()
        .skip_while(|l| !l.starts_with(" ATTEMPT"))
        .nth(1)
        .unwrap_or_else(|| panic!("no history row in\n{text}"));
    assert!(row.trim_start().starts_with("1  "), "{row}");
    assert!(
        row.contains(" permanent ") && row.contains(" ms "),
        "{row:?}"
    );
    assert!(row.ends_with("  permanent: HTTP 422"), "{row:?}");

    args.push("--json");
    let v: Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(v["seq"], 1);
    assert_eq!(v["delivery_id"], id);
    assert_eq!(v["payload"]["text"], "{\"n\":1,\"status\":422}");
    let h = v["history"].as_array().expect("a history");
    assert_eq!(h.len(), 1, "{v}");
    assert_eq!(h[0]["attempt"], 1);
    assert_eq!(h[0]["status"], "permanent");
    assert_eq!(h[0]["error"], "permanent: HTTP 422");
    assert!(
        h[0]["latency_ms"].as_u64().is_some_and(|l| l < 10_000),
        "{v}"
    );
    let at = h[0]["at_ms"].as_u64().unwrap();
    let dead_lettered = listed["failed_at_ms"].as_u64().unwrap();
    assert!(
        at <= dead_lettered && dead_lettered - at < 10_000,
        "attempt at {at}, dead-lettered at {dead_lettered}"
    );

    let mut missing = vec!["dlq", "show", "--sink", "web", "99"];
    missing.extend_from_slice(target);
    let o = run(&missing, b"");
    assert_ne!(code(&o), 0);
    assert!(
        stderr(&o).contains("no DLQ entry at seq 99"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn offline_triage_selects_by_time_error_and_limit() {
    let fixed = Arc::new(AtomicBool::new(false));
    let rx = receiver(fixed.clone());
    let t = tempfile::tempdir().unwrap();
    let cfg = parking_webhook(t.path(), rx.addr);
    let data = t.path().join("data");
    let dir = data.to_str().unwrap();
    let target = ["--data-dir", dir];

    run_config_ok(&cfg, records(FIRST).as_bytes());
    std::thread::sleep(Duration::from_millis(50));
    let mid = now_rfc3339();
    std::thread::sleep(Duration::from_millis(50));
    run_config_ok(&cfg, records(SECOND).as_bytes());
    assert_eq!(rx.seen().len(), 6);

    check_list_filters(&target, &mid);
    let all = list(&target, &[]);
    check_show(&target, &all[1]);

    // Bad filters are usage errors naming the flag; nothing is touched.
    let base = ["dlq", "list", "--data-dir", dir, "--sink", "web"];
    usage(
        &[&base[..], &["--since", "yesterday"]].concat(),
        "--since: `yesterday`",
    );
    usage(
        &[&base[..], &["--error-match", "(unclosed"]].concat(),
        "--error-match",
    );
    usage(
        &[&base[..], &["--since", "1h", "--until", "2h"]].concat(),
        "the window is empty",
    );
    usage(
        &[&base[..], &["--limit", "0"]].concat(),
        "--limit: must be at least 1",
    );
    // redrive must be told what; --limit alone only bounds.
    let redrive = ["dlq", "redrive", "--data-dir", dir, "--sink", "web"];
    usage(&[&redrive[..], &["--limit", "3"]].concat(), "--error-match");
    let unknown = ["dlq", "redrive", "--data-dir", dir, "--sink", "nope"];
    usage(
        &[&unknown[..], &["--all", "--dry-run"]].concat(),
        "unknown sink `nope`",
    );

    let dlq_seqs = || -> Vec<u64> {
        seqs(
            dump_json(&data, &["--tree", "dlq"])["dlq"]
                .as_array()
                .unwrap(),
        )
    };
    let next_seq = || {
        dump_json(&data, &["--tree", "meta"])["meta"]["next_seq"]
            .as_u64()
            .unwrap()
    };

    // A dry run names the seqs and changes nothing.
    let out = ok(&[&redrive[..], &["--error-match", "HTTP 422", "--dry-run"]].concat());
    assert_eq!(
        out,
        "dry run: would redrive 2 records of sink web: seqs 1, 3\n"
    );
    let out = ok(&[&redrive[..], &["--since", &mid, "--dry-run", "--json"]].concat());
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"dry_run": true, "sink": "web", "would_redrive": 3, "seqs": [3, 4, 5]})
    );
    assert_eq!(dlq_seqs(), [0, 1, 2, 3, 4, 5]);
    assert_eq!(next_seq(), 6);

    // The real redrive moves exactly those, as seqs 6 and 7 aimed at web,
    // with their delivery ids.
    let out = ok(&[&redrive[..], &["--error-match", "HTTP 422", "--json"]].concat());
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"redrove": 2, "sink": "web", "seqs": [1, 3]})
    );
    assert_eq!(dlq_seqs(), [0, 2, 4, 5]);
    let log = dump_json(&data, &["--tree", "log", "--from", "6"])["log"].clone();
    let moved: Vec<(u64, &str, &str, &str)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["target"].as_str().unwrap(),
                r["delivery_id"].as_str().unwrap(),
                r["payload"]["text"].as_str().unwrap(),
            )
        })
        .collect();
    let id = |i: usize| all[i]["delivery_id"].as_str().unwrap();
    assert_eq!(
        moved,
        [
            (6, "web", id(1), "{\"n\":1,\"status\":422}"),
            (7, "web", id(3), "{\"n\":3,\"status\":422}"),
        ]
    );

    // Purge: a dry run, a refusal without --yes, then exactly the window.
    let purge = ["dlq", "purge", "--data-dir", dir, "--sink", "web"];
    let out = ok(&[&purge[..], &["--until", &mid, "--dry-run"]].concat());
    assert_eq!(
        out,
        "dry run: would purge 2 records of sink web: seqs 0, 2\n"
    );
    usage(&[&purge[..], &["--until", &mid]].concat(), "--dry-run");
    assert_eq!(dlq_seqs(), [0, 2, 4, 5]);
    let out = ok(&[&purge[..], &["--until", &mid, "--yes"]].concat());
    assert_eq!(out, "purged 2 records of sink web\n");
    assert_eq!(dlq_seqs(), [4, 5]);
    let out = ok(&[&purge[..], &["--all", "--limit", "1", "--yes", "--json"]].concat());
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"purged": 1, "sink": "web", "seqs": [4]})
    );
    assert_eq!(dlq_seqs(), [5]);

    // The next run delivers the redriven records under their old ids.
    fixed.store(true, Ordering::SeqCst);
    run_config_ok(&cfg, b"");
    let seen = rx.seen();
    let last: Vec<(u16, &str, &str)> = seen[6..]
        .iter()
        .map(|(s, i, b)| (*s, i.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        last,
        [
            (200, id(1), "{\"n\":1,\"status\":422}"),
            (200, id(3), "{\"n\":3,\"status\":422}"),
        ]
    );
}

#[test]
fn online_triage_through_the_admin_endpoint() {
    let fixed = Arc::new(AtomicBool::new(false));
    let rx = receiver(fixed.clone());
    let t = tempfile::tempdir().unwrap();
    let cfg = parking_webhook(t.path(), rx.addr);
    let d = Daemon::listening(&cfg, &[HOOK]);
    let admin = d.admin.unwrap();
    let url = format!("http://{admin}");
    let target = ["--admin", url.as_str()];
    let dlq_count = || {
        http(admin, "GET", "/v1/status", &[], b"").json()["sinks"][0]["dlq"]
            .as_u64()
            .unwrap()
    };
    let post = |items: &[(u64, u16)]| {
        let r = d.post(records(items).as_bytes());
        assert_eq!(r.status, 200, "{}", r.body);
    };

    post(FIRST);
    wait_for("the first DLQ entries", 20, || dlq_count() == 3);
    std::thread::sleep(Duration::from_millis(50));
    let mid = now_rfc3339();
    std::thread::sleep(Duration::from_millis(50));
    post(SECOND);
    wait_for("the second DLQ entries", 20, || dlq_count() == 6);

    check_list_filters(&target, &mid);
    let all = list(&target, &[]);
    check_show(&target, &all[1]);

    // The raw endpoints: the same filter as query parameters.
    let r = http(
        admin,
        "GET",
        "/v1/dlq?sink=web&error_match=HTTP%20422&limit=1",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(seqs(r.json()["entries"].as_array().unwrap()), [1]);
    let r = http(
        admin,
        "GET",
        "/v1/dlq?sink=web&seqs=2,5,9&error_match=400",
        &[],
        b"",
    );
    assert_eq!(seqs(r.json()["entries"].as_array().unwrap()), [2]);
    let r = http(admin, "GET", "/v1/dlq?sink=web&since=yesterday", &[], b"");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["error"].as_str().unwrap().contains("`yesterday`"),
        "{}",
        r.body
    );
    let r = http(admin, "GET", "/v1/dlq?sink=web&colour=red", &[], b"");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http(admin, "GET", "/v1/dlq/web/99", &[], b"");
    assert_eq!(r.status, 404, "{}", r.body);
    let r = http(
        admin,
        "POST",
        "/v1/dlq/purge?until=1h&dry_run=true",
        &[("Content-Type", "application/json")],
        br#"{"sink":"web","seqs":null}"#,
    );
    assert_eq!(
        r.json(),
        json!({"sink": "web", "dry_run": true, "selected": [], "purged": 0})
    );
    usage(
        &[
            "dlq",
            "redrive",
            "--admin",
            &url,
            "--sink",
            "nope",
            "--all",
            "--dry-run",
        ],
        "unknown sink `nope`",
    );

    // Dry runs change nothing.
    let redrive = ["dlq", "redrive", "--admin", url.as_str(), "--sink", "web"];
    let out = ok(&[&redrive[..], &["--error-match", "HTTP 422", "--dry-run"]].concat());
    assert_eq!(
        out,
        "dry run: would redrive 2 records of sink web: seqs 1, 3\n"
    );
    assert_eq!(seqs(&list(&target, &[])), [0, 1, 2, 3, 4, 5]);

    // Redrive: delivered at once, under the old ids, once the receiver
    // accepts.
    fixed.store(true, Ordering::SeqCst);
    let out = ok(&[&redrive[..], &["--error-match", "HTTP 422", "--json"]].concat());
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"redrove": 2, "sink": "web", "seqs": [1, 3]})
    );
    wait_for("the redriven records", 20, || rx.seen().len() == 8);
    let id = |i: usize| all[i]["delivery_id"].as_str().unwrap().to_string();
    let mut redelivered: Vec<(u16, String)> = rx.seen()[6..]
        .iter()
        .map(|(s, i, _)| (*s, i.clone()))
        .collect();
    redelivered.sort();
    assert_eq!(redelivered, [(200, id(1)), (200, id(3))]);
    assert_eq!(seqs(&list(&target, &[])), [0, 2, 4, 5]);

    // Purge through the endpoint: dry run, then the window.
    let purge = ["dlq", "purge", "--admin", url.as_str(), "--sink", "web"];
    let out = ok(&[&purge[..], &["--until", &mid, "--dry-run"]].concat());
    assert_eq!(
        out,
        "dry run: would purge 2 records of sink web: seqs 0, 2\n"
    );
    assert_eq!(seqs(&list(&target, &[])), [0, 2, 4, 5]);
    let out = ok(&[&purge[..], &["--until", &mid, "--yes"]].concat());
    assert_eq!(out, "purged 2 records of sink web\n");
    let out = ok(&[&purge[..], &["--error-match", "410", "--yes", "--json"]].concat());
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"purged": 1, "sink": "web", "seqs": [5]})
    );
    assert_eq!(seqs(&list(&target, &[])), [4]);

    let (code, err) = d.stop();
    assert_eq!(code, 0, "{err}");
}
