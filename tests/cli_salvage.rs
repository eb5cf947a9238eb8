//! `outbox salvage` through the real binary: what it copies, what it
//! writes off and says so, and that the copy verifies and delivers.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{Daemon, HOOK, Receiver, code, dump_json, run, run_config, stderr, stdout};
use common::held::{
    HELD, N, check, close, config_with, dlq_key, fill, input, remove_middle_value, remove_offset,
};
use common::raw_sled;
use serde_json::Value;

fn salvage(data: &Path, out: &Path) -> std::process::Output {
    run(
        &[
            "salvage",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        b"",
    )
}

/// Runs salvage, which must exit 4; returns its report and the lines
/// under `not recovered:`.
fn salvage_with_losses(data: &Path, new: &Path) -> (String, Vec<String>) {
    let o = salvage(data, new);
    assert_eq!(code(&o), 4, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let lost = out
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(str::to_string)
        .collect();
    (out, lost)
}

/// `seq -> (delivery id, payload)` of every record in the log.
fn log_records(dir: &Path) -> Vec<(u64, String, String)> {
    dump_json(dir, &["--tree", "log"])["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["delivery_id"].as_str().unwrap().to_string(),
                r["payload"]["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn i_of(line: &str) -> u64 {
    serde_json::from_str::<Value>(line).unwrap()["i"]
        .as_u64()
        .unwrap()
}

/// Runs the copy with `h` as a file sink; returns the `i` of every line
/// delivered and the run's stderr.
fn deliver_to_file(t: &Path, data: &Path) -> (Vec<u64>, String) {
    let out = t.join("delivered.ndjson");
    let cfg = config_with(
        t,
        "file.toml",
        data,
        &format!(
            "[[sinks]]\nname = \"h\"\nkind = \"file\"\npath = \"{}\"\nbackoff_base_ms = 1\nbackoff_max_ms = 10\nretry_after_max_ms = 10\n",
            out.display()
        ),
    );
    // The salvage kept the webhook's retry state of the first record (a
    // minute of backoff); the file sink's settings cap the resumed wait.
    let o = run_config(&cfg, b"");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("all sinks drained"), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    (text.lines().map(i_of).collect(), stderr(&o))
}

#[test]
fn a_removed_value_is_written_off_exactly_and_the_copy_delivers_the_rest_with_their_ids() {
    let t = tempfile::tempdir().unwrap();
    let (_, data) = fill(t.path());
    let before = log_records(&data);
    assert_eq!(before.len(), N);
    let (from, to) = remove_middle_value(&data);
    let new = t.path().join("new");

    let (out, lost) = salvage_with_losses(&data, &new);
    assert_eq!(
        lost,
        vec![format!(
            "  log: seqs {from}..{to} ({} seqs): no log value covers these seqs",
            to - from
        )],
        "{out}"
    );
    let kept = N as u64 - (to - from);
    assert!(
        out.contains(&format!("copied: {kept} records in ")),
        "{out}"
    );
    assert!(out.contains("lost markers written: 1 ("), "{out}");
    assert!(out.contains("offsets kept: h=0\n"), "{out}");

    let o = check(&new);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("({kept} records, 1 holes or lost markers)")),
        "{}",
        stdout(&o)
    );

    // Every other record is there under its seq, delivery id and payload.
    let want: Vec<_> = before
        .into_iter()
        .filter(|(s, _, _)| *s < from || *s >= to)
        .collect();
    assert_eq!(log_records(&new), want);

    let (got, err) = deliver_to_file(t.path(), &new);
    let expect: Vec<u64> = (0..N as u64).filter(|i| *i < from || *i >= to).collect();
    assert_eq!(got, expect);
    assert!(
        err.contains("passing over seqs written off by `outbox salvage`")
            && err.contains(&format!("from={from} to={to}")),
        "{err}"
    );
}

#[test]
fn a_lost_offset_restarts_its_sink_where_nothing_readable_is_skipped() {
    let t = tempfile::tempdir().unwrap();
    let (_, data) = fill(t.path());
    remove_offset(&data, "h");
    let new = t.path().join("new");

    let (out, lost) = salvage_with_losses(&data, &new);
    assert_eq!(
        lost,
        vec![
            "  offsets: sink `h`: its offset is missing, yet it is a member; it restarts at seq 0, the witness file's record of it: every seq below was done; those between it and the lost offset may be delivered again"
        ],
        "{out}"
    );
    assert!(out.contains(&format!("copied: {N} records")), "{out}");
    assert!(out.contains("restarted: h=0\n"), "{out}");
    assert_eq!(code(&check(&new)), 0);
    let (got, _) = deliver_to_file(t.path(), &new);
    assert_eq!(got, (0..N as u64).collect::<Vec<_>>());
}

/// A store with two sinks: `p` dead-letters every record (its receiver answers
/// 400), `h` holds them all pending. Returns the data dir.
fn dead_lettered_and_held(t: &Path, n: usize) -> (PathBuf, Receiver) {
    let rx = Receiver::start(vec![400]);
    let data = t.join("data");
    let sinks = format!(
        "{HELD}[[sinks]]\nname = \"p\"\nkind = \"webhook\"\n[sinks.webhook]\nurl = \"http://{}/\"\nsecret_env = \"OUTBOX_TEST_HOOK\"\nsecret_format = \"raw\"\n",
        rx.addr
    );
    let cfg = config_with(t, "two.toml", &data, &sinks);
    let o = run_config(&cfg, input(n).as_bytes());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let dlq = dump_json(&data, &["--tree", "dlq"])["dlq"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(dlq, n, "every record dead-lettered for p");
    (data, rx)
}

fn dlq_entries(dir: &Path) -> Vec<Value> {
    dump_json(dir, &["--tree", "dlq"])["dlq"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_damaged_dlq_entry_is_named_and_the_others_keep_their_history() {
    let t = tempfile::tempdir().unwrap();
    let (data, _rx) = dead_lettered_and_held(t.path(), 20);
    let before = dlq_entries(&data);
    let db = raw_sled(&data);
    let dlq = db.open_tree("dlq").unwrap();
    let key = dlq_key("p", 7);
    let mut v = dlq.get(&key).unwrap().unwrap().to_vec();
    let at = v.len() / 2;
    v[at] ^= 0x01;
    dlq.insert(&key, v).unwrap();
    drop(dlq);
    close(db, &data);
    let new = t.path().join("new");

    let (out, lost) = salvage_with_losses(&data, &new);
    assert_eq!(lost.len(), 1, "{out}");
    assert!(
        lost[0].starts_with("  dlq: sink `p`: seqs 7..8 (1 entries): checksum mismatch"),
        "{out}"
    );
    assert!(out.contains("20 records in"), "{out}");
    assert!(out.contains(", 19 DLQ entries with their history"), "{out}");
    assert_eq!(code(&check(&new)), 0);
    let want: Vec<Value> = before.into_iter().filter(|e| e["seq"] != 7).collect();
    assert_eq!(want.len(), 19);
    assert!(
        want.iter()
            .all(|e| !e["history"].as_array().unwrap().is_empty())
    );
    assert_eq!(dlq_entries(&new), want);
}

#[test]
fn an_undamaged_store_is_copied_whole_with_exit_0() {
    let t = tempfile::tempdir().unwrap();
    let (data, _rx) = dead_lettered_and_held(t.path(), 50);
    let new = t.path().join("new");
    // An operator's pause is part of what a salvage keeps.
    let o = run(
        &["sinks", "pause", "p", "--data-dir", data.to_str().unwrap()],
        b"",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let o = salvage(&data, &new);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("not recovered: nothing\n"), "{out}");
    let o = run(
        &["status", "--data-dir", new.to_str().unwrap(), "--json"],
        b"",
    );
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = st["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sink"] == "p")
        .unwrap();
    assert_eq!(p["state"], "paused", "{st}");
    assert!(
        out.contains("copied: 50 records in ")
            && out.contains(", 2 offsets, 2 members, 50 DLQ entries"),
        "{out}"
    );
    assert!(out.contains("offsets kept: h=0, p=50\n"), "{out}");
    assert_eq!(code(&check(&new)), 0);
    let (a, b) = (dump_json(&data, &[]), dump_json(&new, &[]));
    for tree in ["log", "dlq", "offsets"] {
        assert_eq!(a[tree], b[tree], "{tree}");
    }
    assert_eq!(a["log"].as_array().unwrap().len(), 50);
    assert_eq!(a["meta"]["log_id"], b["meta"]["log_id"]);

    // A second salvage into the now non-empty copy is refused.
    let o = salvage(&data, &new);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("exists and is not an empty directory"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn salvage_refuses_a_store_a_daemon_holds() {
    let t = tempfile::tempdir().unwrap();
    let (cfg, data) = fill(t.path());
    let d = Daemon::ingesting(&cfg, &[], &[HOOK]);
    let new = t.path().join("new");
    let o = salvage(&data, &new);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is locked by another process"),
        "{}",
        stderr(&o)
    );
    assert!(!new.exists());
    let (c, err) = d.stop();
    assert_eq!(c, 0, "{err}");
}
