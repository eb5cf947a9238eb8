//! `outbox run --config`: config errors exit 2 naming the key, before the
//! data directory is created; and every subcommand's help has an example.

mod common;

use common::cli::{code, run, stderr, stdout};

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn run_config(text: &str) -> (i32, String, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let text = text.replace("DATA", data.to_str().unwrap());
    let cfg = write(t.path(), "outbox.toml", &text);
    let o = run(&["run", "--config", cfg.to_str().unwrap()], b"{\"a\":1}\n");
    let exists = data.exists();
    assert!(
        !exists,
        "the data directory was created despite a config error"
    );
    // Keep the tempdir alive until checked.
    drop(t);
    (code(&o), stderr(&o), data)
}

#[test]
fn unknown_key_exits_2_naming_it() {
    let (c, err, _) = run_config(
        "data_dir = \"DATA\"\n[[sinks]]\nname = \"out\"\nkind = \"stdout\"\nretires = 3\n",
    );
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("unknown field `retires`"), "{err}");
    assert!(err.contains("line 5"), "{err}");
}

#[test]
fn duplicate_sink_name_exits_2_naming_it() {
    let (c, err, _) = run_config(
        "data_dir = \"DATA\"\n[[sinks]]\nname = \"out\"\nkind = \"stdout\"\n[[sinks]]\nname = \"out\"\nkind = \"stdout\"\n",
    );
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("sinks[1].name") && err.contains("duplicate sink name `out`"),
        "{err}"
    );
}

#[test]
fn file_sink_without_path_exits_2_naming_the_key() {
    let (c, err, _) = run_config("data_dir = \"DATA\"\n[[sinks]]\nname = \"f\"\nkind = \"file\"\n");
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("sinks.f.path") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn unset_token_variable_exits_2_naming_it() {
    let (c, err, _) = run_config(
        "data_dir = \"DATA\"\n[ingest]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"OUTBOX_TEST_SURELY_UNSET\"\n[[sinks]]\nname = \"out\"\nkind = \"stdout\"\n",
    );
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("ingest.token_env") && err.contains("OUTBOX_TEST_SURELY_UNSET is not set"),
        "{err}"
    );
}

#[test]
fn missing_config_file_exits_2() {
    let o = run(&["run", "--config", "/nonexistent/outbox.toml"], b"");
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("--config") && stderr(&o).contains("/nonexistent/outbox.toml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn flags_override_the_file() {
    let t = tempfile::tempdir().unwrap();
    let from_file = t.path().join("file-data");
    let from_flag = t.path().join("flag-data");
    let out = t.path().join("out.ndjson");
    let cfg = write(
        t.path(),
        "outbox.toml",
        &format!(
            "data_dir = \"{}\"\n[[sinks]]\nname = \"out\"\nkind = \"stdout\"\n",
            from_file.display()
        ),
    );
    let o = run(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            from_flag.to_str().unwrap(),
            "--sink",
            &format!("out=file:{}", out.display()),
        ],
        b"{\"n\":1}\n{\"n\":2}\n",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!from_file.exists());
    assert!(from_flag.join("db").exists());
    // The flag's file sink replaced the file's stdout sink of that name.
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "{\"n\":1}\n{\"n\":2}\n"
    );
    assert_eq!(stdout(&o), "");
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for sub in [
        vec!["run"],
        vec!["dump"],
        vec!["status"],
        vec!["dlq"],
        vec!["dlq", "list"],
        vec!["dlq", "show"],
        vec!["dlq", "redrive"],
        vec!["dlq", "purge"],
        vec!["check"],
        vec!["compact"],
    ] {
        let mut args = sub.clone();
        args.push("--help");
        let o = run(&args, b"");
        assert_eq!(code(&o), 0, "{sub:?}");
        assert!(stdout(&o).contains("Example:"), "{sub:?}: {}", stdout(&o));
    }
}

#[test]
fn read_only_commands_refuse_a_missing_data_dir() {
    for sub in ["dump", "status", "check"] {
        let o = run(&[sub, "--data-dir", "/nonexistent/outbox-data"], b"");
        assert_eq!(code(&o), 2, "{sub}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--data-dir") && stderr(&o).contains("does not exist"),
            "{sub}: {}",
            stderr(&o)
        );
        assert!(!std::path::Path::new("/nonexistent/outbox-data").exists());
    }
}

#[test]
fn delivery_feature_keys_are_accepted_by_the_binary() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out.ndjson");
    let cfg = write(
        t.path(),
        "outbox.toml",
        &format!(
            r#"data_dir = "{}"
[[sinks]]
name = "out"
kind = "file"
path = "{}"
retry_schedule = ["5s", "5m", "30m", "2h"]
retry_after_max_ms = 60000
[sinks.breaker]
consecutive_failures = 20
failure_percent = 50
failure_window = 100
probe_interval = "30s"
[sinks.rate_limit]
per_second = 1000
burst = 100
[sinks.filter.json]
"/severity" = ["high", "crit*"]
"#,
            t.path().join("data").display(),
            out.display()
        ),
    );
    // The filter is enforced: `low` passes the sink without a delivery.
    let pass = "{\"severity\":\"high\",\"n\":1}\n{\"severity\":\"critical\",\"n\":2}\n";
    let input = format!("{pass}{{\"severity\":\"low\",\"n\":3}}\n");
    let o = run(
        &["run", "--config", cfg.to_str().unwrap()],
        input.as_bytes(),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), pass);

    // `status` shows the filter, through the admin endpoint and its table.
    let d = common::cli::Daemon::listening(&cfg, &[]);
    let url = format!("http://{}", d.admin.unwrap());
    let o = run(&["status", "--admin", &url, "--json"], b"");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let filter = v["sinks"][0]["filter"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(filter.contains("/severity"), "{v}");
    let o = run(&["status", "--admin", &url], b"");
    assert!(
        stdout(&o).contains(&format!("sink out: filter {filter}")),
        "{}",
        stdout(&o)
    );
    let (c, err) = d.stop();
    assert_eq!(c, 0, "{err}");
}

#[test]
fn bad_delivery_feature_values_exit_2_naming_the_key() {
    for (extra, want) in [
        (
            "retry_schedule = [\"5s\", \"soon\"]\n",
            "sinks.out.retry_schedule[1]: `soon` is not a duration",
        ),
        (
            "retry_schedule = [\"5s\"]\nretry_max = 4\n",
            "sinks.out.retry_schedule: cannot be combined with retry_max",
        ),
        (
            "[sinks.breaker]\nfailure_percent = 150\n",
            "sinks.out.breaker.failure_percent: 150 is not between 1 and 100",
        ),
        (
            "[sinks.rate_limit]\nper_second = 0\n",
            "sinks.out.rate_limit.per_second: must be at least 1",
        ),
        (
            "[sinks.filter.headers]\nevent-type = [\"alert.[\"]\n",
            "sinks.out.filter.headers.event-type[0]",
        ),
        (
            "[sinks.breaker]\nthreshold = 5\n",
            "unknown field `threshold`",
        ),
    ] {
        let (c, err, _) = run_config(&format!(
            "data_dir = \"DATA\"\n[[sinks]]\nname = \"out\"\nkind = \"stdout\"\n{extra}"
        ));
        assert_eq!(c, 2, "{extra}: {err}");
        assert!(err.contains(want), "{extra}: {err}");
    }
}

#[test]
fn a_webhook_whose_every_secret_has_expired_exits_2() {
    // The expired keys are not read, so their variables need not be set.
    let (c, err, _) = run_config(
        "data_dir = \"DATA\"\n[[sinks]]\nname = \"w\"\nkind = \"webhook\"\n[sinks.webhook]\nurl = \"http://127.0.0.1:9/h\"\nsecrets = [\n  { env = \"OUTBOX_TEST_OLD\", expires_at = \"2001-01-01T00:00:00Z\" },\n  { env = \"OUTBOX_TEST_OLDER\", expires_at = \"2000-06-01T12:00:00+02:00\" },\n]\n",
    );
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("secrets") && err.contains("every secret has expired"),
        "{err}"
    );
    assert!(
        err.contains("2001-01-01T00:00:00Z"),
        "names the last: {err}"
    );
}
