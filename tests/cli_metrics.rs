//! The alerting signals end to end: the real daemon's `/metrics` has the
//! per-sink series the dashboard and the alert rules use, the oldest
//! pending age grows for a stuck sink and stays 0 for one that keeps up,
//! and every metric `docs/grafana/outbox.json` and
//! `docs/prometheus/alerts.yml` name is one the daemon exports. The rules
//! and the dashboard's queries are checked with `promtool` (Debian's
//! `prometheus` package; `.ci/run` installs it).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::cli::{Daemon, Receiver, http, prom_value as value};
use common::process::tool;
use common::process::wait_for;
use serde_json::Value;

fn repo(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every `outbox_*` metric name in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\boutbox_[a-z_]+[a-z]").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

#[test]
fn metrics_carry_the_alerting_signals_the_dashboard_and_alerts_use() {
    // web: the receiver answers 503, so the record stays pending (retried).
    let rx = Receiver::start(vec![503]);
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("outbox.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\ndrain_timeout_secs = 1\n[[sinks]]\nname = \"web\"\nkind = \"webhook\"\nretry_max = 1000\n[sinks.webhook]\nurl = \"http://{}/hook\"\nsecret_env = \"OUTBOX_TEST_HOOK\"\nsecret_format = \"raw\"\n[[sinks]]\nname = \"out\"\nkind = \"file\"\npath = \"{}\"\n",
            t.path().join("data").display(),
            rx.addr,
            t.path().join("out.ndjson").display()
        ),
    )
    .unwrap();
    let d = Daemon::listening(&cfg, &[("OUTBOX_TEST_HOOK", "hook-secret")]);
    let admin = d.admin.unwrap();
    let scrape = || {
        let r = http(admin, "GET", "/metrics", &[], b"");
        assert_eq!(r.status, 200);
        r.body
    };

    // Before any record: every per-sink series is there, the breaker
    // closed, nothing pending.
    let m = scrape();
    for sink in ["web", "out"] {
        let s = |name: &str| format!("{name}{{sink=\"{sink}\"}}");
        assert_eq!(value(&m, &s("outbox_oldest_pending_age_seconds")), 0.0);
        assert_eq!(value(&m, &s("outbox_sink_acked_records_total")), 0.0);
        assert_eq!(value(&m, &s("outbox_filtered_total")), 0.0);
        assert_eq!(value(&m, &s("outbox_log_read_errors_total")), 0.0);
        let state = |st: &str| format!("outbox_breaker_state{{sink=\"{sink}\",state=\"{st}\"}}");
        assert_eq!(value(&m, &state("closed")), 1.0, "{m}");
        assert_eq!(value(&m, &state("open")), 0.0);
        assert_eq!(value(&m, &state("paused")), 0.0);
    }

    let r = d.post(b"{\"n\":1}\n");
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for("out to deliver and web to be refused", 20, || {
        let m = scrape();
        value(&m, "outbox_lag_records{sink=\"out\"}") == 0.0 && !rx.seen().is_empty()
    });
    std::thread::sleep(Duration::from_millis(1_500));
    let m = scrape();
    // web has had its record for at least 1.5 s; out has nothing pending.
    let web_age = value(&m, "outbox_oldest_pending_age_seconds{sink=\"web\"}");
    assert!((1.5..60.0).contains(&web_age), "web age {web_age}\n{m}");
    assert_eq!(
        value(&m, "outbox_oldest_pending_age_seconds{sink=\"out\"}"),
        0.0
    );
    assert_eq!(value(&m, "outbox_lag_records{sink=\"web\"}"), 1.0);
    // Per-sink acking: out passed its record, web has not.
    assert_eq!(
        value(&m, "outbox_sink_acked_records_total{sink=\"out\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "outbox_sink_acked_records_total{sink=\"web\"}"),
        0.0
    );
    assert_eq!(value(&m, "outbox_acked_total"), 0.0, "web holds the ack");
    // ... and it keeps growing with nothing else happening.
    std::thread::sleep(Duration::from_millis(1_000));
    let later = value(&scrape(), "outbox_oldest_pending_age_seconds{sink=\"web\"}");
    assert!(later >= web_age + 0.9, "{web_age} -> {later}");

    // Every metric the dashboard and the alerts name is exported (a
    // histogram by its _bucket/_sum/_count series), and every metric
    // exported is documented.
    let exported = names(&m);
    let used: BTreeSet<String> = names(&repo("docs/grafana/outbox.json"))
        .union(&names(&repo("docs/prometheus/alerts.yml")))
        .cloned()
        .collect();
    assert!(used.len() >= 15, "{used:?}");
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(missing.is_empty(), "used but not exported: {missing:?}");
    let docs = names(&repo("docs/operations.md"));
    let undocumented: Vec<_> = m
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| !docs.contains(*n))
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/operations.md: {undocumented:?}"
    );

    let (code, err) = d.stop();
    assert_eq!(code, 0, "{err}");
}

fn promtool_ok(args: &[&str]) {
    let Some(mut c) = tool("promtool", "apt-get install prometheus") else {
        return;
    };
    let o = c
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_and_fire_when_they_should() {
    promtool_ok(&["check", "rules", "docs/prometheus/alerts.yml"]);
    promtool_ok(&["test", "rules", "docs/prometheus/alerts_test.yml"]);
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let dash: Value = serde_json::from_str(&repo("docs/grafana/outbox.json")).unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 20, "{}", exprs.len());
    // As Grafana would send them, then checked as recording rules.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$sink", ".*");
        rules += &format!(
            "      - record: dashboard_query_{i}\n        expr: '{}'\n",
            e.replace('\'', "''")
        );
    }
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("dashboard.yml");
    std::fs::write(&file, rules).unwrap();
    promtool_ok(&["check", "rules", file.to_str().unwrap()]);
}
