//! The configuration's tests: file text in, plan or named error out.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use outbox::sink::{JetStreamSinkConfig, WebhookConfig};
use outbox::source::jetstream::JetStreamSourceConfig;
use outbox::{
    BreakerConfig, Error, FailureRatio, OnFull, OutboxConfig, RateLimit, Result, SinkConfig, Start,
    SyncPolicy,
};

use super::listen::parse_listen;
use super::plan::DEFAULT_DRAIN_SECS;
use super::schema::parse_file;
use super::*;
use crate::cli::LogFormat;
use crate::cli::sinks::SinkSpec;

fn no_env(_: &str) -> Option<String> {
    None
}

fn plan(text: &str) -> Result<RunPlan> {
    let f = parse_file(text).map_err(|r| Error::config("file", r))?;
    resolve(f, Overrides::default(), &no_env)
}

const MINIMAL: &str = r#"
data_dir = "/tmp/x"
[[sinks]]
name = "out"
kind = "stdout"
"#;

#[test]
fn minimal_file_gets_the_documented_defaults() {
    let p = plan(MINIMAL).unwrap();
    assert_eq!(p.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(p.engine, OutboxConfig::default());
    assert_eq!(p.sinks.len(), 1);
    assert_eq!(p.sinks[0].name, "out");
    assert_eq!(p.sinks[0].spec, SinkSpec::Stdout);
    assert_eq!(p.sinks[0].cfg, SinkConfig::default());
    assert_eq!(p.drain_timeout, Duration::from_secs(DEFAULT_DRAIN_SECS));
    assert!(p.ingest.is_none() && p.admin.is_none());
    assert_eq!(p.log_format, LogFormat::Text);
}

#[test]
fn every_sink_setting_maps_onto_sink_config() {
    let p = plan(
        r#"
data_dir = "d"
sync = "interval:20"
cache_bytes = 2097152
max_record_bytes = 1000
[[sinks]]
name = "f"
kind = "file"
path = "/tmp/f.ndjson"
on_full = "drop"
max_lag_records = 10
max_lag_bytes = 4096
batch_max = 7
retry_max = 0
backoff_base_ms = 5
backoff_max_ms = 50
retry_after_max_ms = 60
start = "earliest"
"#,
    )
    .unwrap();
    assert_eq!(
        p.engine.sync,
        SyncPolicy::Interval(Duration::from_millis(20))
    );
    assert_eq!(p.engine.cache_bytes, 2 << 20);
    assert_eq!(p.engine.max_record_bytes, 1000);
    let s = &p.sinks[0];
    assert_eq!(s.spec, SinkSpec::File("/tmp/f.ndjson".into()));
    assert_eq!(
        s.cfg,
        SinkConfig {
            on_full: OnFull::Drop,
            max_lag_records: Some(10),
            max_lag_bytes: Some(4096),
            batch_max: 7,
            retry_max: 0,
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(50),
            retry_after_max: Duration::from_millis(60),
            start: Start::Earliest,
            ..SinkConfig::default()
        }
    );
}

#[test]
fn unknown_keys_are_named() {
    let e = parse_file("data_dir = \"d\"\ncolour = 1\n").unwrap_err();
    assert!(e.contains("colour"), "{e}");
    let e = parse_file("[[sinks]]\nname = \"a\"\nkind = \"stdout\"\nretries = 3\n").unwrap_err();
    assert!(e.contains("retries"), "{e}");
    let e = parse_file("[ingest]\nlisten = \"1\"\nport = 3\n").unwrap_err();
    assert!(e.contains("port"), "{e}");
    let e = parse_file("[[sinks]]\nname = \"a\"\nkind = \"ftp\"\n").unwrap_err();
    assert!(e.contains("ftp"), "{e}");
    let e = parse_file(
        "[[sinks]]\nname = \"w\"\nkind = \"webhook\"\n[sinks.webhook]\nurl = \"http://x\"\nsecret_env = \"S\"\nretry = 1\n",
    )
    .unwrap_err();
    assert!(e.contains("retry"), "{e}");
}

#[test]
fn duplicate_names_missing_paths_and_bad_names_are_named() {
    let e = plan(&format!(
        "{MINIMAL}[[sinks]]\nname = \"out\"\nkind = \"stdout\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("sinks[1].name") && e.contains("duplicate sink name `out`"),
        "{e}"
    );
    let e = plan("data_dir = \"d\"\n[[sinks]]\nname = \"f\"\nkind = \"file\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sinks.f.path") && e.contains("missing"), "{e}");
    let e = plan("data_dir = \"d\"\n[[sinks]]\nname = \"a b\"\nkind = \"stdout\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sinks[0].name"), "{e}");
    let e = plan("[[sinks]]\nname = \"a\"\nkind = \"stdout\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("data_dir"), "{e}");
    let e = plan("data_dir = \"d\"\n").unwrap_err().to_string();
    assert!(e.contains("sinks"), "{e}");
    let e = plan(&format!("{MINIMAL}batch_max = 0\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("sinks.out.batch_max"), "{e}");
}

#[test]
fn webhook_sinks_embed_their_config() {
    let p = plan(
        "data_dir = \"d\"\n[[sinks]]\nname = \"w\"\nkind = \"webhook\"\nretry_max = 2\n[sinks.webhook]\nurl = \"http://127.0.0.1:9/h\"\nsecret_env = \"HOOK\"\ntimeout_ms = 500\n",
    )
    .unwrap();
    let mut want = WebhookConfig::new("http://127.0.0.1:9/h", "HOOK");
    want.timeout_ms = 500;
    assert_eq!(p.sinks[0].spec, SinkSpec::Webhook(Box::new(want)));
    assert_eq!(p.sinks[0].cfg.retry_max, 2);
    let e = plan("data_dir = \"d\"\n[[sinks]]\nname = \"w\"\nkind = \"webhook\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sinks.w.webhook") && e.contains("missing"),
        "{e}"
    );
    let e = plan(&format!(
        "{MINIMAL}[sinks.webhook]\nurl = \"http://x\"\nsecret_env = \"S\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("sinks.out.webhook"), "{e}");
}

#[test]
fn a_jetstream_source_and_sink_take_every_key() {
    let p = plan(
        r#"
data_dir = "d"
[source]
kind = "jetstream"
url = "nats://127.0.0.1:4222"
stream = "ORDERS"
consumer = "outbox"
ack = "accepted"
filter_subject = "orders.>"
validate = "none"
ack_wait_ms = 5000
max_ack_pending = 64
[[sinks]]
name = "js"
kind = "jetstream"
[sinks.jetstream]
url = "nats://127.0.0.1:4222"
subject = "out.orders"
timeout_ms = 700
"#,
    )
    .unwrap();
    let mut want = JetStreamSourceConfig::new("nats://127.0.0.1:4222", "ORDERS", "outbox");
    want.ack = outbox::source::jetstream::AckMode::Accepted;
    want.filter_subject = Some("orders.>".into());
    want.validate = outbox::source::jetstream::Validate::None;
    want.ack_wait_ms = 5000;
    want.max_ack_pending = 64;
    assert_eq!(p.source, Some(want));
    let mut sink = JetStreamSinkConfig::new("nats://127.0.0.1:4222", "out.orders");
    sink.timeout_ms = 700;
    assert_eq!(p.sinks[0].spec, SinkSpec::JetStream(Box::new(sink)));

    // The defaults, and stdin when there is no [source].
    let p = plan("data_dir = \"d\"\n[source]\nkind = \"jetstream\"\nurl = \"nats://h\"\nstream = \"S\"\nconsumer = \"c\"\n[[sinks]]\nname = \"o\"\nkind = \"stdout\"\n").unwrap();
    assert_eq!(
        p.source,
        Some(JetStreamSourceConfig::new("nats://h", "S", "c"))
    );
    assert_eq!(plan(MINIMAL).unwrap().source, None);
}

#[test]
fn jetstream_mistakes_are_named() {
    let src =
        "[source]\nkind = \"jetstream\"\nurl = \"nats://h\"\nstream = \"S\"\nconsumer = \"c\"\n";
    let e = parse_file(&format!("{src}acks = \"delivered\"\n")).unwrap_err();
    assert!(e.contains("acks"), "{e}");
    let e = parse_file(&format!("{src}ack = \"later\"\n")).unwrap_err();
    assert!(e.contains("later"), "{e}");
    let e = parse_file("[source]\nkind = \"kafka\"\n").unwrap_err();
    assert!(e.contains("kafka"), "{e}");
    let e = parse_file("[source]\nkind = \"jetstream\"\nurl = \"nats://h\"\n").unwrap_err();
    assert!(e.contains("stream"), "{e}");
    let e = plan(&format!("{MINIMAL}{}", src.replace("\"S\"", "\"a.b\"")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("source.stream"), "{e}");
    let e = plan(&format!("{MINIMAL}[ingest]\nlisten = \"0\"\n{src}"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("source.kind") && e.contains("ingest.listen"),
        "{e}"
    );
    let e = plan("data_dir = \"d\"\n[[sinks]]\nname = \"j\"\nkind = \"jetstream\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sinks.j.jetstream") && e.contains("missing"),
        "{e}"
    );
    let e = plan("data_dir = \"d\"\n[[sinks]]\nname = \"j\"\nkind = \"jetstream\"\n[sinks.jetstream]\nurl = \"nats://h\"\nsubject = \"a.*\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sinks.j.jetstream.subject") && e.contains("wildcard"),
        "{e}"
    );
    let e = plan(&format!(
        "{MINIMAL}[sinks.jetstream]\nurl = \"nats://h\"\nsubject = \"a\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("sinks.out.jetstream"), "{e}");
}

#[test]
fn the_source_flag_parses_and_overrides_the_file() {
    assert_eq!(
        parse_source_flag("jetstream:nats://127.0.0.1:4222/ORDERS/outbox").unwrap(),
        JetStreamSourceConfig::new("nats://127.0.0.1:4222", "ORDERS", "outbox")
    );
    for bad in [
        "kafka:x/y/z",
        "jetstream:nats://h",
        "jetstream:S/c",
        "jetstream:nats://h/a.b/c",
        "jetstream:nats://h/S/",
    ] {
        let e = parse_source_flag(bad).unwrap_err();
        assert_eq!(crate::cli::exit::exit_code(&e), 2);
        assert!(e.to_string().contains("--source"), "{e}");
    }
    let flags = Overrides {
        source: Some(JetStreamSourceConfig::new("nats://f", "F", "f")),
        ..Overrides::default()
    };
    let file = parse_file(&format!(
        "{MINIMAL}[source]\nkind = \"jetstream\"\nurl = \"nats://h\"\nstream = \"S\"\nconsumer = \"c\"\n"
    ))
    .unwrap();
    let p = resolve(file, flags, &no_env).unwrap();
    assert_eq!(p.source.unwrap().url, "nats://f");
}

#[test]
fn flags_override_the_file() {
    let f = parse_file(&format!("{MINIMAL}\n")).unwrap();
    let flags = Overrides {
        data_dir: Some("/other".into()),
        sinks: vec![
            ("out".into(), SinkSpec::File("/o".into())),
            ("extra".into(), SinkSpec::Stdout),
        ],
        sync: Some("full".into()),
        drain_timeout_secs: Some(3),
        ingest_listen: Some("9000".into()),
        admin_listen: None,
        source: None,
        log_format: Some(LogFormat::Json),
    };
    let p = resolve(f, flags, &no_env).unwrap();
    assert_eq!(p.data_dir, PathBuf::from("/other"));
    assert_eq!(p.engine.sync, SyncPolicy::Full);
    let names: Vec<_> = p.sinks.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["out", "extra"]);
    assert_eq!(p.sinks[0].spec, SinkSpec::File("/o".into()));
    assert_eq!(p.drain_timeout, Duration::from_secs(3));
    assert_eq!(
        p.ingest.unwrap().listen.addr,
        "127.0.0.1:9000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(p.log_format, LogFormat::Json);
}

#[test]
fn tokens_come_from_the_environment_and_never_print() {
    let text = format!("{MINIMAL}[ingest]\nlisten = \"0.0.0.0:8080\"\ntoken_env = \"TOK\"\n");
    let env = |k: &str| (k == "TOK").then(|| "s3cret-value".to_string());
    let p = resolve(parse_file(&text).unwrap(), Overrides::default(), &env).unwrap();
    let i = p.ingest.unwrap();
    assert_eq!(i.listen.token.as_ref().unwrap().expose(), b"s3cret-value");
    assert!(!format!("{:?}", i).contains("s3cret"));
    // Unset variable: named, no value printed.
    let e = resolve(parse_file(&text).unwrap(), Overrides::default(), &no_env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ingest.token_env") && e.contains("TOK is not set"),
        "{e}"
    );
    // Non-loopback without a token is refused.
    let text = format!("{MINIMAL}[ingest]\nlisten = \"0.0.0.0:8080\"\n");
    let e = plan(&text).unwrap_err().to_string();
    assert!(
        e.contains("ingest.token_env") && e.contains("loopback"),
        "{e}"
    );
}

#[test]
fn listen_addresses_parse() {
    let lo = |p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p);
    assert_eq!(parse_listen("k", "8080").unwrap(), lo(8080));
    assert_eq!(parse_listen("k", "localhost:81").unwrap(), lo(81));
    assert_eq!(parse_listen("k", "127.0.0.1:0").unwrap(), lo(0));
    assert!(parse_listen("k", "[::1]:9").unwrap().ip().is_loopback());
    let e = parse_listen("ingest.listen", "example.com:80")
        .unwrap_err()
        .to_string();
    assert!(e.contains("ingest.listen"), "{e}");
}

const HOOK: &str = "data_dir = \"d\"\n[[sinks]]\nname = \"hook\"\nkind = \"stdout\"\n";

#[test]
fn delivery_features_parse_into_sink_config() {
    let p = plan(&format!(
        r#"{HOOK}retry_schedule = ["5s", "5m", "30m", "2h", "1h 30m", "250ms"]
retry_after_max_ms = 60000
[sinks.breaker]
consecutive_failures = 20
failure_percent = 50
failure_window = 200
probe_interval = "45s"
[sinks.rate_limit]
per_second = 10
burst = 40
[sinks.filter.headers]
event-type = ["alert.*", "incident.opened"]
tenant = ["blue"]
[sinks.filter.json]
"/severity" = ["high", "critical"]
"#
    ))
    .unwrap();
    let cfg = &p.sinks[0].cfg;
    let s = Duration::from_secs;
    assert_eq!(
        cfg.retry_schedule,
        Some(vec![
            s(5),
            s(300),
            s(1800),
            s(7200),
            s(5400),
            Duration::from_millis(250)
        ])
    );
    assert_eq!(cfg.retry_after_max, s(60));
    assert_eq!(
        cfg.breaker,
        Some(BreakerConfig {
            consecutive_failures: Some(20),
            failure_ratio: Some(FailureRatio {
                percent: 50,
                window: 200
            }),
            probe_interval: s(45),
        })
    );
    assert_eq!(
        cfg.rate_limit,
        Some(RateLimit {
            per_second: 10,
            burst: 40
        })
    );
    let f = cfg.filter.as_ref().unwrap();
    assert_eq!(
        f.to_string(),
        "event-type=alert.*|incident.opened AND tenant=blue AND /severity=high|critical"
    );
}

#[test]
fn delivery_feature_defaults() {
    let p = plan(&format!(
        "{HOOK}[sinks.breaker]\nconsecutive_failures = 3\n[sinks.rate_limit]\nper_second = 7\n"
    ))
    .unwrap();
    let cfg = &p.sinks[0].cfg;
    assert_eq!(
        cfg.breaker,
        Some(BreakerConfig {
            consecutive_failures: Some(3),
            failure_ratio: None,
            probe_interval: Duration::from_secs(30),
        })
    );
    assert_eq!(
        cfg.rate_limit,
        Some(RateLimit {
            per_second: 7,
            burst: 7
        })
    );
    let p = plan(&format!("{HOOK}[sinks.breaker]\nfailure_percent = 90\n")).unwrap();
    assert_eq!(
        p.sinks[0].cfg.breaker.as_ref().unwrap().failure_ratio,
        Some(FailureRatio {
            percent: 90,
            window: 100
        })
    );
    let p = plan(HOOK).unwrap();
    let cfg = &p.sinks[0].cfg;
    assert!(cfg.retry_schedule.is_none() && cfg.breaker.is_none());
    assert!(cfg.rate_limit.is_none() && cfg.filter.is_none());
}

#[test]
fn bad_delivery_feature_values_name_the_key() {
    for (extra, want) in [
        (
            "retry_schedule = [\"5s\", \"5x\"]\n",
            "sinks.hook.retry_schedule[1]: `5x` is not a duration",
        ),
        (
            "retry_schedule = [\"-1s\"]\n",
            "sinks.hook.retry_schedule[0]",
        ),
        (
            "retry_schedule = []\n",
            "sinks.hook.retry_schedule: must list at least one delay",
        ),
        (
            "retry_schedule = [\"5s\"]\nretry_max = 3\n",
            "sinks.hook.retry_schedule: cannot be combined with retry_max",
        ),
        (
            "retry_schedule = [\"5s\"]\nbackoff_base_ms = 3\n",
            "cannot be combined with backoff_base_ms",
        ),
        (
            "retry_schedule = [\"5s\"]\nbackoff_max_ms = 3\n",
            "cannot be combined with backoff_max_ms",
        ),
        (
            "[sinks.breaker]\nprobe_interval = \"10s\"\n",
            "sinks.hook.breaker: set consecutive_failures or failure_percent",
        ),
        (
            "[sinks.breaker]\nconsecutive_failures = 0\n",
            "sinks.hook.breaker.consecutive_failures: must be at least 1",
        ),
        (
            "[sinks.breaker]\nfailure_percent = 300\n",
            "sinks.hook.breaker.failure_percent: 300 is not between 1 and 100",
        ),
        (
            "[sinks.breaker]\nfailure_percent = 0\n",
            "sinks.hook.breaker.failure_percent: 0 is not between 1 and 100",
        ),
        (
            "[sinks.breaker]\nfailure_window = 10\n",
            "sinks.hook.breaker.failure_window: needs failure_percent",
        ),
        (
            "[sinks.breaker]\nfailure_percent = 5\nfailure_window = 0\n",
            "sinks.hook.breaker.failure_window",
        ),
        (
            "[sinks.breaker]\nconsecutive_failures = 1\nprobe_interval = \"soon\"\n",
            "sinks.hook.breaker.probe_interval: `soon` is not a duration",
        ),
        (
            "[sinks.breaker]\nconsecutive_failures = 1\nprobe_interval = \"0s\"\n",
            "sinks.hook.breaker.probe_interval: must be above zero",
        ),
        (
            "[sinks.rate_limit]\nper_second = 0\n",
            "sinks.hook.rate_limit.per_second: must be at least 1",
        ),
        (
            "[sinks.rate_limit]\nper_second = 5\nburst = 0\n",
            "sinks.hook.rate_limit.burst: must be at least 1",
        ),
        (
            "[sinks.filter.headers]\nevent-type = [\"a[\"]\n",
            "sinks.hook.filter.headers.event-type[0]: `a[` is not a valid pattern",
        ),
        (
            "[sinks.filter.headers]\nevent-type = []\n",
            "sinks.hook.filter.headers.event-type: lists no pattern",
        ),
        (
            "[sinks.filter.json]\n\"severity\" = [\"high\"]\n",
            "sinks.hook.filter.json.severity: is not a JSON pointer",
        ),
    ] {
        let e = plan(&format!("{HOOK}{extra}")).unwrap_err();
        assert_eq!(crate::cli::exit::exit_code(&e), 2, "{extra}");
        let e = e.to_string();
        assert!(e.contains(want), "{extra}: {e}");
    }
    // Unknown keys inside the new tables are refused by the parser.
    for (extra, key) in [
        ("[sinks.breaker]\nthreshold = 3\n", "threshold"),
        (
            "[sinks.rate_limit]\nper_second = 1\nper_minute = 3\n",
            "per_minute",
        ),
        ("[sinks.filter]\nevent-type = [\"a\"]\n", "event-type"),
    ] {
        let e = parse_file(&format!("{HOOK}{extra}")).unwrap_err();
        assert!(e.contains(&format!("unknown field `{key}`")), "{e}");
    }
    let e = parse_file(&format!("{HOOK}[sinks.rate_limit]\nburst = 3\n")).unwrap_err();
    assert!(e.contains("missing field `per_second`"), "{e}");
}

#[test]
fn webhook_secrets_with_expiry_parse() {
    let p = plan(
        r#"data_dir = "d"
[[sinks]]
name = "w"
kind = "webhook"
[sinks.webhook]
url = "http://127.0.0.1:9/h"
secrets = [
  { env = "NEW" },
  { env = "OLD", expires_at = "2025-07-01T00:00:00Z" },
]
"#,
    )
    .unwrap();
    let SinkSpec::Webhook(w) = &p.sinks[0].spec else {
        panic!("not a webhook: {:?}", p.sinks[0].spec);
    };
    assert!(w.secret_env.is_empty());
    assert_eq!(
        w.secrets,
        vec![
            outbox::sink::webhook::SecretSpec::new("NEW"),
            outbox::sink::webhook::SecretSpec::expiring(
                "OLD",
                std::time::UNIX_EPOCH + Duration::from_secs(1_751_328_000)
            ),
        ]
    );
    let e = parse_file(
        "[[sinks]]\nname = \"w\"\nkind = \"webhook\"\n[sinks.webhook]\nurl = \"http://x\"\nsecrets = [{ env = \"A\", expires_at = \"next week\" }]\n",
    )
    .unwrap_err();
    assert!(e.contains("`next week` is not an RFC 3339 time"), "{e}");
}
