//! DLQ triage end to end: a webhook receiver on 127.0.0.1 refuses a record
//! with 400 (permanent), the record lands in the DLQ, `outbox dlq redrive`
//! moves it back, and the next run delivers it with the same id.

mod cli_common;

use cli_common::{Receiver, code, dump_json, run, stderr, stdout};

fn config(dir: &std::path::Path, rx: &Receiver) -> std::path::PathBuf {
    let text = format!(
        "data_dir = \"{}\"\ndrain_timeout_secs = 5\n[[sinks]]\nname = \"web\"\nkind = \"webhook\"\nretry_max = 0\nstart = \"earliest\"\n[sinks.webhook]\nurl = \"http://{}/hook\"\nsecret_env = \"OUTBOX_TEST_HOOK\"\nsecret_format = \"raw\"\n",
        dir.join("data").display(),
        rx.addr
    );
    let p = dir.join("outbox.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run_daemon(cfg: &std::path::Path, input: &[u8]) -> std::process::Output {
    let mut c = cli_common::bin();
    c.env("OUTBOX_TEST_HOOK", "hook-secret")
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn redrive_after_a_permanent_failure_redelivers_with_the_same_id() {
    // 400 to the first request (permanent), 200 to everything after.
    let rx = Receiver::start(vec![400, 200]);
    let t = tempfile::tempdir().unwrap();
    let cfg = config(t.path(), &rx);
    let data = t.path().join("data");
    let dir = data.to_str().unwrap();

    let o = run_daemon(&cfg, b"{\"alert\":1}\n");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let first = rx.seen();
    assert_eq!(first.len(), 1, "{first:?}");
    let (status, id, body) = first[0].clone();
    assert_eq!((status, body.as_str()), (400, "{\"alert\":1}"));
    assert!(id.starts_with("msg_") && id.ends_with("_0"), "{id}");

    // The DLQ holds it, with the id and the receiver's answer.
    let o = run(
        &["dlq", "list", "--data-dir", dir, "--sink", "web", "--json"],
        b"",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{list}");
    assert_eq!(entries[0]["delivery_id"], id.as_str());
    assert_eq!(entries[0]["seq"], 0);
    assert_eq!(entries[0]["payload"]["text"], "{\"alert\":1}");
    assert!(
        entries[0]["error"].as_str().unwrap().contains("400"),
        "{list}"
    );

    // Redrive without a selection is a usage error.
    let o = run(&["dlq", "redrive", "--data-dir", dir, "--sink", "web"], b"");
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--seq N") && stderr(&o).contains("--all"));
    // An unknown sink is too.
    let o = run(
        &[
            "dlq",
            "redrive",
            "--data-dir",
            dir,
            "--sink",
            "nope",
            "--all",
        ],
        b"",
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("unknown sink `nope`"), "{}", stderr(&o));

    let o = run(
        &[
            "dlq",
            "redrive",
            "--data-dir",
            dir,
            "--sink",
            "web",
            "--seq",
            "0",
        ],
        b"",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "redrove 1 record of sink web\n");
    let v = dump_json(&data, &[]);
    assert_eq!(v["dlq"], serde_json::json!([]));
    let log = v["log"].as_array().unwrap();
    let last = log.last().unwrap();
    assert_eq!(last["delivery_id"], id.as_str());
    assert_eq!(last["target"], "web");
    assert_eq!(last["seq"], 1);

    // The next run delivers it again, under the same id, and it sticks.
    let o = run_daemon(&cfg, b"");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let seen = rx.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1], (200, id.clone(), "{\"alert\":1}".to_string()));
    let o = run(&["status", "--data-dir", dir, "--json"], b"");
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["sinks"][0]["committed"], 2, "{s}");
    assert_eq!(s["sinks"][0]["dlq"], 0, "{s}");
}

#[test]
fn purge_needs_confirmation_and_removes_only_what_was_chosen() {
    let rx = Receiver::start(vec![422]);
    let t = tempfile::tempdir().unwrap();
    let cfg = config(t.path(), &rx);
    let data = t.path().join("data");
    let dir = data.to_str().unwrap();
    let o = run_daemon(&cfg, b"{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // stdin is not a terminal here: without --yes it refuses, and keeps all.
    let purge = |sel: &[&str]| {
        let mut args = vec!["dlq", "purge", "--data-dir", dir, "--sink", "web"];
        args.extend_from_slice(sel);
        run(&args, b"y\n")
    };
    let dlq_seqs = || -> Vec<u64> {
        dump_json(&data, &["--tree", "dlq"])["dlq"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(dlq_seqs(), [0, 1, 2]);
    let o = purge(&["--all"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--yes"), "{}", stderr(&o));
    assert_eq!(dlq_seqs(), [0, 1, 2]);

    let o = purge(&["--seq", "1", "--yes"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "purged 1 record of sink web\n");
    assert_eq!(dlq_seqs(), [0, 2]);

    let o = purge(&["--all", "--yes"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "purged 2 records of sink web\n");
    assert_eq!(dlq_seqs(), Vec::<u64>::new());
}
