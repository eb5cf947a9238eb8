//! Damage to a stopped store, through the real binary: a hole in the log, a
//! lost offset, a checksum failure, and a value that only a worker finds
//! bad. Each must stop with exit 3 naming the seq range or the sink, never
//! exit 0 with records missing.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cli::{Daemon, code, http, run, run_config, stderr, stdout};
use common::held::{
    N, check, check_names_one_problem, checksum, close, fill, log_key, remove_middle_value,
    remove_offset, values,
};
use common::{log_tree_with, raw_sled};

#[test]
fn a_hole_in_the_log_stops_run_and_check_with_exit_3_naming_the_range() {
    let t = tempfile::tempdir().unwrap();
    let (cfg, data) = fill(t.path());
    let (from, to) = remove_middle_value(&data);
    let range = format!("seqs {from}..{to}");

    let o = run_config(&cfg, b"");
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "tree `log` at key {range}: no log value covers these seqs"
        )),
        "{err}"
    );
    assert!(!err.contains("all sinks drained"), "{err}");

    let out = check_names_one_problem(&data, &range);
    assert!(
        out.contains(&format!("{} records", N as u64 - (to - from))),
        "check counts the records still readable: {out}"
    );
}

#[test]
fn a_lost_offset_stops_run_with_exit_3_naming_the_sink() {
    let t = tempfile::tempdir().unwrap();
    let (cfg, data) = fill(t.path());
    remove_offset(&data, "h");

    let o = run_config(&cfg, b"");
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("tree `offsets` at key `h`: missing: sink `h` is a member"),
        "{err}"
    );
    assert!(!err.contains("new sink"), "{err}");

    let o = check(&data);
    assert_eq!(code(&o), 3, "{}", stdout(&o));
    assert!(stdout(&o).contains("key `h`: missing"), "{}", stdout(&o));
}

#[test]
fn a_checksum_failure_stops_run_with_exit_3_naming_the_range() {
    let t = tempfile::tempdir().unwrap();
    let (cfg, data) = fill(t.path());
    let db = raw_sled(&data);
    let vals = values(&db);
    let i = vals.len() / 2;
    let (first, _) = vals[i];
    let (next, _) = vals[i + 1];
    let log = log_tree_with(&db, first);
    let key = log_key(first);
    let mut v = log.get(key).unwrap().unwrap().to_vec();
    let at = v.len() / 2;
    v[at] ^= 0x20;
    log.insert(key, v).unwrap();
    drop(log);
    close(db, &data);
    let range = format!("seqs {first}..{next}");

    let o = run_config(&cfg, b"");
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("tree `log` at key {range}")) && err.contains("checksum mismatch"),
        "{err}"
    );

    check_names_one_problem(&data, &range);
}

/// Replaces the body of the log value at `first` with bytes that do not
/// decode, under a header and a checksum that are sound: open's chain walk
/// (headers only) accepts it, and the worker that reads it finds it bad.
fn plant_undecodable_body(data: &Path, first: u64) {
    let db = raw_sled(data);
    let log = log_tree_with(&db, first);
    let key = log_key(first);
    let old = log.get(key).unwrap().unwrap();
    // Version, kind, count, bytes, time: 22 bytes; then the entries.
    let mut v = old[..22].to_vec();
    v.extend_from_slice(&[0xff; 64]);
    let crc = checksum("log", &key, &v);
    v.extend_from_slice(&crc.to_be_bytes());
    log.insert(key, v).unwrap();
    drop(log);
    close(db, data);
}

fn metric(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(series))
        .map(|l| l[series.len()..].trim().to_string())
}

#[test]
fn a_value_only_a_worker_finds_bad_marks_the_sink_corrupt_while_the_daemon_runs() {
    let t = tempfile::tempdir().unwrap();
    let (_, data) = fill(t.path());
    let db = raw_sled(&data);
    let vals = values(&db);
    close(db, &data);
    let (first, count) = vals[vals.len() / 2];
    plant_undecodable_body(&data, first);
    let range = format!("seqs {first}..{}", first + count);

    // `h` again, now a file sink: it resumes at its offset (0), delivers
    // every record before the bad value, and stops there. Its first record
    // has a durable retry time from the webhook's minute of backoff; a
    // resumed wait is capped by the new settings' longest wait, backoff
    // and Retry-After alike (10 ms).
    let out = t.path().join("out.ndjson");
    let cfg = t.path().join("file.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\ndrain_timeout_secs = 1\n[[sinks]]\nname = \"h\"\nkind = \"file\"\npath = \"{}\"\nbackoff_base_ms = 1\nbackoff_max_ms = 10\nretry_after_max_ms = 10\n",
            data.display(),
            out.display()
        ),
    )
    .unwrap();
    let d = Daemon::listening(&cfg, &[]);
    let admin = d.admin.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = http(admin, "GET", "/v1/status", &[], b"").json();
        if s["sinks"][0]["state"] == "corrupt" {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "never corrupt: {s}\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let sink = &status["sinks"][0];
    assert_eq!(sink["sink"], "h");
    assert_eq!(sink["offset"], first, "{status}");
    assert_eq!(sink["lag"], N as u64 - first, "{status}");
    let why = sink["error"].as_str().unwrap();
    assert!(
        why.contains(&format!("tree `log` at key {range}")) && why.contains("does not decode"),
        "{why}"
    );

    let health = http(admin, "GET", "/healthz", &[], b"");
    assert_eq!(health.status, 503, "{}", health.body);
    assert_eq!(health.json()["status"], "failing");
    assert_eq!(health.json()["corrupt"][0]["sink"], "h");

    let m = http(admin, "GET", "/metrics", &[], b"").body;
    assert_eq!(
        metric(&m, "outbox_sink_corrupt{sink=\"h\"}").as_deref(),
        Some("1"),
        "{m}"
    );

    let o = run(
        &["status", "--admin", &format!("http://{admin}"), "--json"],
        b"",
    );
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["sinks"][0]["state"], "corrupt", "{s}");

    // Everything before the bad value was delivered, nothing after it.
    let lines = std::fs::read_to_string(&out).unwrap();
    let got: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["i"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(got, (0..first).collect::<Vec<_>>());

    let (code, err) = d.stop();
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!(
            "sink h stopped on damaged data: corrupt data in tree `log` at key {range}"
        )),
        "{err}"
    );
}
