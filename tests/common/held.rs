//! A store filled through the real binary with every record pending, and
//! the raw sled handles to damage it while it is stopped. Shared by
//! `cli_damage` and `cli_salvage`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cli::{code, run, run_config, stderr, stdout};
use super::raw_sled;

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

// The raw layout these tests damage, as `docs/design.md` writes it down
// (format version 2), restated here on purpose: the library keeps its
// encoder private, and a test that agrees with the document checks it too.

/// A `log` key: the first seq of the value, `u64` BE.
pub fn log_key(first: u64) -> [u8; 8] {
    first.to_be_bytes()
}

/// A `dlq` key: `len: u8`, the sink name, the seq `u64` BE.
pub fn dlq_key(sink: &str, seq: u64) -> Vec<u8> {
    let mut k = vec![u8::try_from(sink.len()).unwrap()];
    k.extend_from_slice(sink.as_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The CRC32C a version-2 value ends with: over the tree's name, the key's
/// length (`u32` BE) and bytes, and the version byte and body.
pub fn checksum(tree: &str, key: &[u8], versioned_body: &[u8]) -> u32 {
    let crc = crc32c::crc32c(tree.as_bytes());
    let crc = crc32c::crc32c_append(crc, &u32::try_from(key.len()).unwrap().to_be_bytes());
    let crc = crc32c::crc32c_append(crc, key);
    crc32c::crc32c_append(crc, versioned_body)
}

/// The `(first seq, count)` of every log value: the key, and the `u32` BE
/// count after the version and kind bytes of a version-2 value.
pub fn values(db: &sled::Db) -> Vec<(u64, u64)> {
    super::log_trees(db)
        .iter()
        .flat_map(|t| t.iter())
        .map(|kv| {
            let (k, v) = kv.unwrap();
            assert_eq!(v[0], 2, "a version-2 value");
            let first = u64::from_be_bytes(k.as_ref().try_into().unwrap());
            let count = u32::from_be_bytes(v[2..6].try_into().unwrap());
            (first, u64::from(count))
        })
        .collect()
}

/// Closes a raw sled handle and waits until its lock is gone.
pub fn close(db: sled::Db, data: &Path) {
    db.flush().unwrap();
    drop(db);
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox::inspect::is_locked(data) {
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
    super::log_tree_with(&db, first)
        .remove(log_key(first))
        .unwrap()
        .expect("the value was there");
    close(db, data);
    (first, first + count)
}

/// Removes `sink`'s committed offset.
pub fn remove_offset(data: &Path, sink: &str) {
    let db = raw_sled(data);
    let offsets = db.open_tree("offsets").unwrap();
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
