//! Damage to a stopped store, through the real binary: a hole in the log, a
//! lost offset, a checksum failure, and a value that only a worker finds
//! bad. Each must stop with exit 3 naming the seq range or the sink, never
//! exit 0 with records missing.

mod cli_common;
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cli_common::{Daemon, code, http, run, stderr, stdout};
use common::raw_sled;
use outbox::codec;

/// Records written by [`fill`]; about 190 fit in one 96 KiB log value, so
/// the log holds a dozen values or more.
const N: usize = 2000;

/// A config whose only sink, `h`, is a webhook to a port nothing listens
/// on (with a minute's backoff), so every record stays pending.
fn config(t: &Path) -> PathBuf {
    let text = format!(
        "data_dir = \"{}\"\ndrain_timeout_secs = 1\n[[sinks]]\nname = \"h\"\nkind = \"webhook\"\nbackoff_base_ms = 60000\nbackoff_max_ms = 60000\n[sinks.webhook]\nurl = \"http://127.0.0.1:9/\"\nsecret_env = \"OUTBOX_TEST_HOOK_SECRET\"\nsecret_format = \"raw\"\n",
        t.join("data").display()
    );
    let p = t.join("outbox.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run_cfg(cfg: &Path, stdin: &[u8]) -> std::process::Output {
    cli_common::bin()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("OUTBOX_TEST_HOOK_SECRET", "k")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            let _ = c.stdin.take().unwrap().write_all(stdin);
            c.wait_with_output()
        })
        .unwrap()
}

/// Appends [`N`] records of about 500 bytes through `outbox run`, all
/// pending for `h`, and stops cleanly. Returns the config and data dir.
fn fill(t: &Path) -> (PathBuf, PathBuf) {
    let cfg = config(t);
    let input: String = (0..N)
        .map(|i| format!("{{\"i\":{i},\"p\":\"{}\"}}\n", "x".repeat(480)))
        .collect();
    let o = run_cfg(&cfg, input.as_bytes());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("appended {N} records"))
            && stderr(&o).contains(&format!("h={N}")),
        "{}",
        stderr(&o)
    );
    (cfg, t.join("data"))
}

/// The `(first seq, count)` of every log value.
fn values(db: &sled::Db) -> Vec<(u64, u64)> {
    db.open_tree(codec::tree::LOG)
        .unwrap()
        .iter()
        .map(|kv| {
            let (k, v) = kv.unwrap();
            let (first, h) = codec::decode_batch_header(&k, &v).unwrap();
            (first.0, u64::from(h.count))
        })
        .collect()
}

/// Closes a raw sled handle and waits until its lock is gone.
fn close(db: sled::Db, data: &Path) {
    db.flush().unwrap();
    drop(db);
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox::store::is_locked(data) {
        assert!(Instant::now() < deadline, "sled kept its lock");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the log value in the middle; returns its seq range.
fn remove_middle_value(data: &Path) -> (u64, u64) {
    let db = raw_sled(data);
    let vals = values(&db);
    assert!(vals.len() >= 5, "expected several log values: {vals:?}");
    let (first, count) = vals[vals.len() / 2];
    db.open_tree(codec::tree::LOG)
        .unwrap()
        .remove(codec::log_key(outbox::Seq(first)))
        .unwrap()
        .expect("the value was there");
    close(db, data);
    (first, first + count)
}

fn check(data: &Path) -> std::process::Output {
    run(&["check", "--data-dir", data.to_str().unwrap()], b"")
}

/// `outbox check` exits 3 with exactly one problem, at key `key`; returns
/// its report.
fn check_names_one_problem(data: &Path, key: &str) -> String {
    let o = check(data);
    assert_eq!(code(&o), 3, "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("key {key}:")) && out.contains("1 problem found"),
        "{out}"
    );
    out
}

#[test]
fn a_hole_in_the_log_stops_run_and_check_with_exit_3_naming_the_range() {
    let t = tempfile::tempdir().unwrap();
    let (cfg, data) = fill(t.path());
    let (from, to) = remove_middle_value(&data);
    let range = format!("seqs {from}..{to}");

    let o = run_cfg(&cfg, b"");
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
    let db = raw_sled(&data);
    let offsets = db.open_tree(codec::tree::OFFSETS).unwrap();
    assert!(offsets.remove(b"h").unwrap().is_some());
    drop(offsets);
    close(db, &data);

    let o = run_cfg(&cfg, b"");
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
    let log = db.open_tree(codec::tree::LOG).unwrap();
    let key = codec::log_key(outbox::Seq(first));
    let mut v = log.get(key).unwrap().unwrap().to_vec();
    let at = v.len() / 2;
    v[at] ^= 0x20;
    log.insert(key, v).unwrap();
    drop(log);
    close(db, &data);
    let range = format!("seqs {first}..{next}");

    let o = run_cfg(&cfg, b"");
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
    let log = db.open_tree(codec::tree::LOG).unwrap();
    let key = codec::log_key(outbox::Seq(first));
    let old = log.get(key).unwrap().unwrap();
    // Version, kind, count, bytes, time: 22 bytes; then the entries.
    let mut v = old[..22].to_vec();
    v.extend_from_slice(&[0xff; 64]);
    let crc = codec::checksum(codec::tree::LOG, &key, &v);
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
    // every record before the bad value, and stops there.
    let out = t.path().join("out.ndjson");
    let cfg = t.path().join("file.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\ndrain_timeout_secs = 1\n[[sinks]]\nname = \"h\"\nkind = \"file\"\npath = \"{}\"\n",
            data.display(),
            out.display()
        ),
    )
    .unwrap();
    let d = Daemon::start(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--ingest-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let admin = d.admin.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = http(admin, "GET", "/v1/status", &[], b"").json();
        if s["sinks"][0]["state"] == "corrupt" {
            break s;
        }
        assert!(Instant::now() < deadline, "never corrupt: {s}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let sink = &status["sinks"][0];
    assert_eq!(sink["sink"], "h");
    assert_eq!(sink["committed"], first, "{status}");
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
