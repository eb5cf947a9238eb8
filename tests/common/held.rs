//! A store filled through the real binary with every record pending, and
//! the raw sled handles to damage it while it is stopped. Shared by
//! `cli_damage` and `cli_salvage`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cli::{code, run, run_config, stderr, stdout};
use super::raw_sled;
use outbox::codec;

/// Records written by [`fill`]; about 190 fit in one 96 KiB log value, so
/// the log holds a dozen values or more.
pub const N: usize = 2000;

/// The sink `h`: a webhook to a port nothing listens on, with a minute's
/// backoff, so every record stays pending.
pub const HELD: &str = "[[sinks]]\nname = \"h\"\nkind = \"webhook\"\nbackoff_base_ms = 60000\nbackoff_max_ms = 60000\n[sinks.webhook]\nurl = \"http://127.0.0.1:9/\"\nsecret_env = \"OUTBOX_TEST_HOOK\"\nsecret_format = \"raw\"\n";

/// A config for `DIR/data` with `sinks` (TOML), written to `DIR/name`.
pub fn config_with(t: &Path, name: &str, data: &Path, sinks: &str) -> PathBuf {
    let text = format!(
        "data_dir = \"{}\"\ndrain_timeout_secs = 1\n{sinks}",
        data.display()
    );
    let p = t.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A config whose only sink is [`HELD`].
pub fn config(t: &Path) -> PathBuf {
    config_with(t, "outbox.toml", &t.join("data"), HELD)
}

/// `n` records of about 500 bytes, `{"i":I,"p":"x..."}`, one per line.
pub fn input(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"i\":{i},\"p\":\"{}\"}}\n", "x".repeat(480)))
        .collect()
}

/// Appends [`N`] records of about 500 bytes through `outbox run`, all
/// pending for `h`, and stops cleanly. Returns the config and data dir.
pub fn fill(t: &Path) -> (PathBuf, PathBuf) {
    let cfg = config(t);
    let o = run_config(&cfg, input(N).as_bytes());
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
pub fn values(db: &sled::Db) -> Vec<(u64, u64)> {
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
pub fn close(db: sled::Db, data: &Path) {
    db.flush().unwrap();
    drop(db);
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox::store::is_locked(data) {
        assert!(Instant::now() < deadline, "sled kept its lock");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the log value in the middle; returns its seq range.
pub fn remove_middle_value(data: &Path) -> (u64, u64) {
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

/// Removes `sink`'s committed offset.
pub fn remove_offset(data: &Path, sink: &str) {
    let db = raw_sled(data);
    let offsets = db.open_tree(codec::tree::OFFSETS).unwrap();
    assert!(offsets.remove(sink.as_bytes()).unwrap().is_some());
    drop(offsets);
    close(db, data);
}

pub fn check(data: &Path) -> std::process::Output {
    run(&["check", "--data-dir", data.to_str().unwrap()], b"")
}

/// `outbox check` exits 3 with exactly one problem, at key `key`; returns
/// its report.
pub fn check_names_one_problem(data: &Path, key: &str) -> String {
    let o = check(data);
    assert_eq!(code(&o), 3, "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("key {key}:")) && out.contains("1 problem found"),
        "{out}"
    );
    out
}
