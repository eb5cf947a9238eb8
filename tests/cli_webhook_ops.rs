//! Webhook operations through the real binary, against a receiver on
//! 127.0.0.1: a retry schedule that resumes after the daemon is killed
//! (SIGKILL, no chance to save anything) and that `dump` shows, and an
//! operator's pause that
//! holds across a kill and a restart until it is resumed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cli::{Daemon, Receiver, code, http, prom_value, run, stderr, stdout};
use common::process::wait_for;
use serde_json::Value;

const SECRET: (&str, &str) = ("OUTBOX_TEST_HOOK", "hook-secret");

fn config(dir: &Path, receiver: &Receiver, web_extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("outbox.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\ndrain_timeout_secs = 1\n[[sinks]]\nname = \"web\"\nkind = \"webhook\"\n{web_extra}\n[sinks.webhook]\nurl = \"http://{}/hook\"\nsecret_env = \"OUTBOX_TEST_HOOK\"\nsecret_format = \"raw\"\n[[sinks]]\nname = \"out\"\nkind = \"file\"\npath = \"{}\"\n",
            dir.join("data").display(),
            receiver.addr,
            dir.join("out.ndjson").display()
        ),
    )
    .unwrap();
    cfg
}

fn start(cfg: &Path) -> Daemon {
    Daemon::listening(cfg, &[SECRET])
}

fn ingest(d: &Daemon, body: &[u8]) {
    let r = d.post(body);
    assert_eq!(r.status, 200, "{}", r.body);
}

fn admin_url(d: &Daemon) -> String {
    format!("http://{}", d.admin.unwrap())
}

fn status(d: &Daemon) -> Value {
    let o = run(&["status", "--admin", &admin_url(d), "--json"], b"");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn sink<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sink"] == name)
        .unwrap_or_else(|| panic!("no sink {name} in {st}"))
}

fn metric(d: &Daemon, series: &str) -> f64 {
    prom_value(
        &http(d.admin.unwrap(), "GET", "/metrics", &[], b"").body,
        series,
    )
}

#[test]
fn a_retry_schedule_resumes_after_sigkill_with_the_same_count_and_due_time() {
    let rx = Receiver::start(vec![503]);
    let t = tempfile::tempdir().unwrap();
    // 3 retries: 300 ms, 4 s, 300 ms; then the DLQ, at attempt 4.
    let cfg = config(
        t.path(),
        &rx,
        "retry_schedule = [\"300ms\", \"4s\", \"300ms\"]",
    );
    let d = start(&cfg);
    ingest(&d, b"{\"n\":1}\n");
    wait_for("two attempts", 10, || rx.seen().len() >= 2);
    // The retry state is made durable before the 4 s wait begins.
    std::thread::sleep(Duration::from_millis(300));
    drop(d); // SIGKILL
    assert_eq!(rx.seen().len(), 2);
    let data = t.path().join("data");
    // `check` reads the stored retry state, and finds it sound.
    let o = run(&["check", "--data-dir", data.to_str().unwrap()], b"");
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // `dump` shows it: offline, and through the restarted daemon.
    let retrying = |v: &Value| -> Vec<(String, u64, u64, String)> {
        let mut out = Vec::new();
        for st in v["sink_state"].as_array().unwrap() {
            assert_eq!(st["paused_at_ms"], Value::Null, "{st}");
            for r in st["retrying"].as_array().unwrap() {
                out.push((
                    st["sink"].as_str().unwrap().to_string(),
                    r["seq"].as_u64().unwrap(),
                    r["attempts"].as_u64().unwrap(),
                    r["last_error"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
        out
    };
    let dump = |args: &[&str]| -> Value {
        let mut all = vec!["dump", "--tree", "sink_state", "--format", "json"];
        all.extend_from_slice(args);
        let o = run(&all, b"");
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        serde_json::from_str(&stdout(&o)).unwrap()
    };
    let offline = dump(&["--data-dir", data.to_str().unwrap()]);
    let got = retrying(&offline);
    assert_eq!(got.len(), 1, "{offline}");
    assert_eq!((got[0].0.as_str(), got[0].1, got[0].2), ("web", 0, 2));
    assert!(got[0].3.contains("503"), "{offline}");
    let sinks: Vec<&str> = offline["sink_state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sink"].as_str().unwrap())
        .collect();
    assert_eq!(sinks, ["out", "web"]);

    let d = start(&cfg);
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(rx.seen().len(), 2, "no attempt right after the restart");
    let online = dump(&["--admin", &admin_url(&d)]);
    assert_eq!(retrying(&online), got, "{online}");
    wait_for("four attempts", 15, || rx.seen().len() >= 4);
    wait_for("the DLQ entry", 10, || sink(&status(&d), "web")["dlq"] == 1);
    std::thread::sleep(Duration::from_millis(1_000));
    let seen = rx.seen();
    let at = rx.at.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "exactly the schedule's attempts: {seen:?}");
    let gap = |i: usize| at[i] - at[i - 1];
    let ms = Duration::from_millis;
    assert!(gap(1) >= ms(290) && gap(1) < ms(1_500), "{:?}", gap(1));
    assert!(
        gap(2) >= ms(3_950) && gap(2) < ms(6_000),
        "the 4 s wait spans the kill: {:?}",
        gap(2)
    );
    assert!(gap(3) >= ms(290) && gap(3) < ms(1_500), "{:?}", gap(3));
    let id = &seen[0].1;
    assert!(id.starts_with("msg_") && seen.iter().all(|s| &s.1 == id));

    let r = http(d.admin.unwrap(), "GET", "/v1/dlq?sink=web", &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let entries = r.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["attempts"], 4, "{entries:?}");
    let st = status(&d);
    assert_eq!(sink(&st, "web")["lag"], 0);
    let (c, err) = d.stop();
    assert_eq!(c, 0, "{err}");
}

#[test]
fn a_pause_holds_across_a_kill_and_a_restart_until_resumed() {
    let rx = Receiver::start(vec![200]);
    let t = tempfile::tempdir().unwrap();
    let cfg = config(t.path(), &rx, "");
    let d = start(&cfg);
    let admin = admin_url(&d);
    assert_eq!(
        metric(&d, "outbox_breaker_state{sink=\"web\",state=\"paused\"}"),
        0.0
    );

    let o = run(&["sinks", "pause", "web", "--admin", &admin], b"");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "paused sink web");
    let o = run(&["sinks", "pause", "web", "--admin", &admin, "--json"], b"");
    let again: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (again["paused"].as_bool(), again["changed"].as_bool()),
        (Some(true), Some(false))
    );
    let o = run(&["sinks", "pause", "nope", "--admin", &admin], b"");
    assert_eq!(code(&o), 2, "an unknown sink: {}", stderr(&o));

    ingest(&d, b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
    wait_for("out to deliver", 10, || {
        sink(&status(&d), "out")["lag"] == 0
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(rx.seen().is_empty(), "paused: nothing is sent");
    let st = status(&d);
    let web = sink(&st, "web");
    assert_eq!(
        (
            web["state"].as_str(),
            web["lag"].as_u64(),
            web["dlq"].as_u64()
        ),
        (Some("paused"), Some(3), Some(0))
    );
    let paused_at = web["paused_at_ms"].as_u64().expect("paused_at_ms");
    assert!(web["oldest_pending_ms"].as_u64().is_some(), "{web}");
    assert_eq!(
        metric(&d, "outbox_breaker_state{sink=\"web\",state=\"paused\"}"),
        1.0
    );
    let o = run(&["status", "--admin", &admin], b"");
    assert!(
        stdout(&o).contains("sink web: paused by an operator since"),
        "{}",
        stdout(&o)
    );
    let err = d.stderr();
    assert!(err.contains("sink paused by an operator"), "{err}");
    // Killed: the pause was durable when the command answered.
    drop(d); // SIGKILL

    // Stopped: the pause is in the data directory.
    let data = t.path().join("data");
    let o = run(
        &["status", "--data-dir", data.to_str().unwrap(), "--json"],
        b"",
    );
    let st: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(sink(&st, "web")["state"], "paused");
    assert_eq!(sink(&st, "web")["paused_at_ms"].as_u64(), Some(paused_at));
    let o = run(
        &[
            "dump",
            "--data-dir",
            data.to_str().unwrap(),
            "--tree",
            "sink_state",
            "--sink",
            "web",
            "--format",
            "ndjson",
        ],
        b"",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["tree"], "sink_state");
    assert_eq!(lines[0]["sink"], "web");
    assert_eq!(lines[0]["paused_at_ms"].as_u64(), Some(paused_at));
    assert_eq!(lines[0]["retrying"], serde_json::json!([]));

    // Restarted: still paused, the records still in the log.
    let d = start(&cfg);
    let admin = admin_url(&d);
    std::thread::sleep(Duration::from_millis(500));
    assert!(rx.seen().is_empty(), "still paused after the restart");
    let st = status(&d);
    assert_eq!(sink(&st, "web")["state"], "paused");
    assert_eq!(sink(&st, "web")["lag"], 3);
    assert_eq!(
        metric(&d, "outbox_breaker_state{sink=\"web\",state=\"paused\"}"),
        1.0
    );
    assert!(
        d.stderr().contains("kept from an earlier run"),
        "{}",
        d.stderr()
    );

    let o = run(&["sinks", "resume", "web", "--admin", &admin], b"");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "resumed sink web");
    wait_for("the three records", 10, || rx.seen().len() == 3);
    wait_for("web to catch up", 10, || {
        sink(&status(&d), "web")["lag"] == 0
    });
    let seen = rx.seen();
    let bodies: Vec<&str> = seen.iter().map(|s| s.2.as_str()).collect();
    assert_eq!(bodies, ["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"]);
    let ids: std::collections::BTreeSet<&str> = seen.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(ids.len(), 3);
    let st = status(&d);
    assert_eq!(sink(&st, "web")["state"], "ok");
    assert!(sink(&st, "web").get("paused_at_ms").is_none(), "{st}");
    assert_eq!(
        metric(&d, "outbox_breaker_state{sink=\"web\",state=\"paused\"}"),
        0.0
    );
    assert_eq!(
        metric(&d, "outbox_breaker_state{sink=\"web\",state=\"closed\"}"),
        1.0
    );
    assert_eq!(
        metric(&d, "outbox_sink_acked_records_total{sink=\"web\"}"),
        3.0
    );
    let o = run(&["sinks", "resume", "web", "--admin", &admin], b"");
    assert_eq!(stdout(&o).trim(), "sink web was not paused");
    let (c, err) = d.stop();
    assert_eq!(c, 0, "{err}");
    assert!(err.contains("sink resumed by an operator"), "{err}");

    // Offline, on the stopped directory, the same commands.
    let dir = data.to_str().unwrap();
    let o = run(&["sinks", "pause", "web", "--data-dir", dir], b"");
    assert_eq!(
        (code(&o), stdout(&o).trim()),
        (0, "paused sink web"),
        "{}",
        stderr(&o)
    );
    let o = run(&["check", "--data-dir", dir], b"");
    assert_eq!(
        code(&o),
        0,
        "check reads the pause: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = run(&["status", "--data-dir", dir, "--json"], b"");
    let st: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(sink(&st, "web")["state"], "paused");
    let o = run(&["sinks", "resume", "web", "--data-dir", dir], b"");
    assert_eq!(
        (code(&o), stdout(&o).trim()),
        (0, "resumed sink web"),
        "{}",
        stderr(&o)
    );
    let o = run(&["sinks", "pause", "nope", "--data-dir", dir], b"");
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}
