//! `check`, `status` and `compact` on data directories prepared by `run`.

mod common;

use common::cli::{code, dump_json, run, stderr, stdout};
use common::{log_trees, raw_sled};

/// Appends `n` records through `outbox run` with a file sink and returns
/// the data directory.
fn prepare(t: &tempfile::TempDir, n: usize, pad: usize) -> std::path::PathBuf {
    let data = t.path().join("data");
    let input: String = (0..n)
        .map(|i| format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(pad)))
        .collect();
    let o = run(
        &[
            "run",
            "--data-dir",
            data.to_str().unwrap(),
            "--sink",
            &format!(
                "out={}",
                format_args!("file:{}", t.path().join("out.ndjson").display())
            ),
        ],
        input.as_bytes(),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    data
}

/// Runs `outbox ARGS`, retrying while the directory is still locked by
/// this test's own sled handle (sled releases its lock when its background
/// threads finish, a moment after the handle is dropped).
fn run_unlocked(args: &[&str]) -> std::process::Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let o = run(args, b"");
        if !stderr(&o).contains("is locked") || std::time::Instant::now() > deadline {
            return o;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn poke(data: &std::path::Path, tree: &str, key: &[u8], value: &[u8]) {
    let db = raw_sled(data);
    db.open_tree(tree).unwrap().insert(key, value).unwrap();
    db.flush().unwrap();
}

#[test]
fn check_is_clean_then_reports_each_corrupted_value_with_tree_and_key() {
    let t = tempfile::tempdir().unwrap();
    let data = prepare(&t, 3, 0);
    let dir = data.to_str().unwrap();
    let o = run(&["check", "--data-dir", dir], b"");
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(
            "1 log batches (3 records, 0 holes or lost markers), 1 offsets, 0 DLQ entries, 6 meta keys, 0 idempotency entries; head 3"
        ),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).ends_with("ok: no problems found\n"));

    // An offset past the head (a version-1 value: no checksum to stop it).
    let mut ov = vec![1u8];
    ov.extend_from_slice(&99u64.to_be_bytes());
    ov.extend_from_slice(&0u64.to_be_bytes());
    poke(&data, "offsets", b"out", &ov);
    let o = run_unlocked(&["check", "--data-dir", dir]);
    assert_eq!(code(&o), 3, "{}", stdout(&o));
    let out = stdout(&o);
    let problems: Vec<&str> = out.lines().filter(|l| l.starts_with("problem: ")).collect();
    assert_eq!(
        problems,
        vec!["problem: tree `offsets` key `out`: offset 99 is past the head 3"],
        "{out}"
    );
    assert!(out.ends_with("1 problem found\n"), "{out}");

    // A log value cut short by a byte: its checksum fails, and with its
    // header unknown the head is not guessed; as the last value, it takes
    // every seq from its key on.
    let db = raw_sled(&data);
    let log = log_trees(&db).into_iter().find(|t| !t.is_empty()).unwrap();
    let (k, v) = log.first().unwrap().unwrap();
    log.insert(k, &v[..v.len() - 1]).unwrap();
    db.flush().unwrap();
    drop((log, db));
    let o = run_unlocked(&["check", "--data-dir", dir]);
    assert_eq!(code(&o), 3, "{}", stdout(&o));
    let out = stdout(&o);
    let problems: Vec<&str> = out.lines().filter(|l| l.starts_with("problem: ")).collect();
    assert_eq!(problems.len(), 1, "{out}");
    assert!(
        problems[0].starts_with(
            "problem: tree `log` key seqs 0..: the value at seq 0 cannot be read (checksum mismatch"
        ),
        "{out}"
    );

    // A value that does not decode at all, in the JSON report.
    poke(&data, "dlq", b"\x03web\0\0\0\0\0\0\0\x01", b"\x01garbage");
    let o = run_unlocked(&["check", "--data-dir", dir, "--json"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(&o), stderr(&o)));
    let p = r["problems"].as_array().unwrap();
    assert_eq!(p.len(), 2, "{r}");
    let dlq: Vec<_> = p.iter().filter(|p| p["tree"] == "dlq").collect();
    assert_eq!(dlq.len(), 1, "{r}");
    assert_eq!(dlq[0]["key"], "web/seq 1");
    assert!(
        dlq[0]["reason"]
            .as_str()
            .unwrap()
            .contains("does not decode"),
        "{r}"
    );
}

#[test]
fn status_marks_orphans() {
    let t = tempfile::tempdir().unwrap();
    let data = prepare(&t, 2, 0);
    let dir = data.to_str().unwrap();
    // Run again with another sink only: `out` becomes an orphan.
    let o = run(
        &["run", "--data-dir", dir, "--sink", "console=stdout"],
        b"{\"z\":1}\n",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "{\"z\":1}\n");
    let o = run(&["status", "--data-dir", dir], b"");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[1],
        ["SINK", "OFFSET", "HEAD", "LAG", "DLQ", "STATE", "ORPHANED"]
    );
    assert_eq!(lines[2], ["console", "3", "3", "0", "0", "ok", "no"]);
    assert_eq!(lines[3], ["out", "2", "3", "1", "0", "orphan", "yes"]);
    assert_eq!(lines.len(), 4, "{out}");

    // The orphan keeps its backlog until it is forgotten: one record here.
    let o = run(&["sinks", "forget", "out", "--data-dir", dir], b"");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "forgot sink out at offset 2; the 1 record(s) it had not passed no longer hold back truncation\n"
    );
    let o = run(&["status", "--data-dir", dir], b"");
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 3, "only `console` is left: {out}");
    assert!(!out.contains("out "), "{out}");
    // Forgetting it again: not a member (exit 2, the sink named).
    let o = run(&["sinks", "forget", "out", "--data-dir", dir], b"");
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("unknown sink `out`"), "{}", stderr(&o));
}

#[test]
fn compact_shrinks_and_preserves_contents() {
    let t = tempfile::tempdir().unwrap();
    // ~6 MiB through the log; all delivered, so truncation empties it, but
    // sled keeps its file size.
    let data = prepare(&t, 6000, 1000);
    let before = dump_json(&data, &["--tree", "all"]);
    let out = t.path().join("compacted");
    let compact = || {
        run(
            &[
                "compact",
                "--data-dir",
                data.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            b"",
        )
    };
    let o = compact();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    let size = |label: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(label))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {label} in {text}"))
    };
    let (b, a) = (size("before: "), size("after:  "));
    assert!(a < b, "after {a} is not below before {b}");
    assert!(text.contains("check clean"), "{text}");
    // Plain progress lines when stderr is not a terminal.
    assert!(stderr(&o).contains("keys copied"), "{}", stderr(&o));
    let after = dump_json(&out, &["--tree", "all"]);
    assert_eq!(before, after);
    assert_eq!(before["meta"]["next_seq"], 6000);
    let o = run(&["check", "--data-dir", out.to_str().unwrap()], b"");
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    // The output directory must be new.
    let o = compact();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--out"), "{}", stderr(&o));
}
