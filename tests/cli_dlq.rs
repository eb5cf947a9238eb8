//! DLQ triage end to end: a webhook receiver on 127.0.0.1 refuses a record
//! with 400 (permanent), the record lands in the DLQ, `outbox dlq redrive`
//! moves it back, and the next run delivers it with the same id.

mod common;

use common::cli::{HOOK, Receiver, code, dump_json, run, run_config_ok, stderr, stdout};
use common::config::parking_webhook;

#[test]
fn redrive_after_a_permanent_failure_redelivers_with_the_same_id() {
    // 400 to the first request (permanent), 200 to everything after.
    let rx = Receiver::start(vec![400, 200]);
    let t = tempfile::tempdir().unwrap();
    let cfg = parking_webhook(t.path(), rx.addr);
    let data = t.path().join("data");
    let dir = data.to_str().unwrap();

    run_config_ok(&cfg, b"{\"alert\":1}\n");
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

    let redrive = |sink: &str, args: &[&str]| {
        let cmd = ["dlq", "redrive", "--data-dir", dir, "--sink", sink];
        run(&[&cmd[..], args].concat(), b"")
    };
    // Redrive without a selection is a usage error.
    let o = redrive("web", &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--seq N") && stderr(&o).contains("--all"));
    // An unknown sink is too.
    let o = redrive("nope", &["--all"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("unknown sink `nope`"), "{}", stderr(&o));

    let o = redrive("web", &["--seq", "0"]);
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
    run_config_ok(&cfg, b"");
    let seen = rx.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1], (200, id.clone(), "{\"alert\":1}".to_string()));
    let o = run(&["status", "--data-dir", dir, "--json"], b"");
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["sinks"][0]["offset"], 2, "{s}");
    assert_eq!(s["sinks"][0]["dlq"], 0, "{s}");
}

#[test]
fn purge_needs_confirmation_and_removes_only_what_was_chosen() {
    let rx = Receiver::start(vec![422]);
    let t = tempfile::tempdir().unwrap();
    let cfg = parking_webhook(t.path(), rx.addr);
    let data = t.path().join("data");
    let dir = data.to_str().unwrap();
    run_config_ok(&cfg, b"{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");

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

/// `dlq list --json` with `target` and `extra` flags: the listed seqs and
/// delivery ids.
fn listed(target: &[&str], extra: &[&str]) -> Vec<(u64, String)> {
    let mut args = vec!["dlq", "list", "--sink", "web", "--json"];
    args.extend_from_slice(target);
    args.extend_from_slice(extra);
    let o = run(&args, b"");
    assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["delivery_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_dlq_larger_than_a_page_is_listed_whole_online_and_offline() {
    // 2,500 dead-lettered records: the admin endpoint answers 1,000 a page, so the
    // online listing takes three pages and must join them without a gap or
    // a repeat.
    const N: u64 = 2_500;
    let rx = Receiver::start(vec![422]);
    let t = tempfile::tempdir().unwrap();
    let cfg = parking_webhook(t.path(), rx.addr);
    // Time to dead-letter them all before the drain at EOF gives up.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("drain_timeout_secs = 5", "drain_timeout_secs = 300"),
    )
    .unwrap();
    let data = t.path().join("data");
    let input: String = (0..N).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    run_config_ok(&cfg, input.as_bytes());
    assert_eq!(rx.seen().len() as u64, N, "one refused attempt per record");

    let offline = listed(&["--data-dir", data.to_str().unwrap()], &[]);
    assert_eq!(
        offline.iter().map(|e| e.0).collect::<Vec<_>>(),
        (0..N).collect::<Vec<_>>()
    );
    let ids: Vec<String> = rx.seen().into_iter().map(|s| s.1).collect();
    assert_eq!(
        offline.iter().map(|e| e.1.clone()).collect::<Vec<_>>(),
        ids,
        "each entry keeps the delivery id of its refused attempt"
    );

    let d = common::cli::Daemon::listening(&cfg, &[HOOK]);
    let url = format!("http://{}", d.admin.unwrap());
    let online = listed(&["--admin", &url], &[]);
    assert_eq!(
        online, offline,
        "the paged listing is the whole DLQ, in order"
    );
    // A limit that ends inside the second page.
    let limited = listed(&["--admin", &url], &["--limit", "1500"]);
    assert_eq!(limited, offline[..1500].to_vec());
    let (code_, err) = d.stop();
    assert_eq!(code_, 0, "{err}");
}
