//! Side-by-side harness: outbox against the designs a user would otherwise
//! choose, measured in one run on one machine.
//!
//! ```text
//! cargo bench --bench compare -- [--quick] [--json] [--check]
//! ```
//!
//! Every figure uses 256-byte payloads. `--check` exits non-zero when a
//! target of the performance issues is missed. Targets are ratios against
//! baselines measured in the same run, because these machines are shared.
//!
//! The families, one module each:
//! - [`engine`]: the engine in-process with a no-op sink, against an
//!   in-memory channel and sled used naively;
//! - [`state`]: latency, restart, disk and RSS of the engine;
//! - [`e2e`]: the real binary (`outbox run`) with stdout, file and webhook
//!   sinks, stdin and HTTP ingest, receivers started here;
//! - [`peers`] and [`jetstream`]: SQLite's outbox table and NATS JetStream;
//! - [`targets`]: the verdicts and the table.

mod daemon;
mod e2e;
mod engine;
mod jetstream;
#[path = "../../src/cli/malloc.rs"]
mod malloc;
#[global_allocator]
static ALLOC: malloc::Alloc = malloc::Alloc;
#[path = "../../tests/nats/mod.rs"]
mod nats;
mod peers;
#[path = "../../tests/common/process.rs"]
mod process;
mod state;
mod targets;

use std::time::{Duration, Instant};

use outbox::SyncPolicy;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

pub(crate) const PAYLOAD: usize = 256;

struct Opts {
    quick: bool,
    json: bool,
    check: bool,
}

/// How much each phase does: the full run, `--quick`, or the smoke run that
/// `cargo test --all-targets` makes (no `--bench` flag), which only proves
/// the harness still runs, every scenario once.
struct Sizes {
    n: u64,
    reps: usize,
    sled_per_record: u64,
    naive: u64,
    latency_records: u64,
    pending: u64,
    passed: u64,
    stream: u64,
    sqlite: u64,
    /// JetStream, each direction.
    js: u64,
    /// Repetitions of the runs through the binary.
    bin_reps: usize,
    /// stdin and HTTP ingest through the binary.
    bin: u64,
    webhook: u64,
    webhook_slow: u64,
    /// Records through ten webhook sinks, one of them dead.
    dead_receiver: u64,
}

impl Sizes {
    fn new(quick: bool, smoke: bool) -> Sizes {
        if smoke {
            Sizes {
                n: 5_000,
                reps: 1,
                sled_per_record: 1_000,
                naive: 100,
                latency_records: 1_000,
                pending: 2_000,
                passed: 5_000,
                stream: 5_000,
                sqlite: 2_000,
                js: 1_000,
                bin_reps: 1,
                bin: 2_000,
                webhook: 300,
                webhook_slow: 200,
                dead_receiver: 300,
            }
        } else if quick {
            Sizes {
                n: 200_000,
                reps: 3,
                sled_per_record: 50_000,
                naive: 2_000,
                latency_records: 20_000,
                pending: 100_000,
                passed: 500_000,
                stream: 500_000,
                sqlite: 100_000,
                js: 50_000,
                bin_reps: 3,
                bin: 200_000,
                webhook: 20_000,
                webhook_slow: 5_000,
                dead_receiver: 50_000,
            }
        } else {
            Sizes {
                n: 1_000_000,
                reps: 5,
                sled_per_record: 200_000,
                naive: 10_000,
                latency_records: 100_000,
                pending: 1_000_000,
                passed: 5_000_000,
                stream: 3_000_000,
                sqlite: 300_000,
                js: 200_000,
                bin_reps: 3,
                bin: 1_000_000,
                webhook: 50_000,
                webhook_slow: 20_000,
                dead_receiver: 1_000_000,
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opts = Opts {
        quick: args.iter().any(|a| a == "--quick"),
        json: args.iter().any(|a| a == "--json"),
        check: args.iter().any(|a| a == "--check"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs the
    // binary with no arguments at all.
    let smoke = args.len() == 1;
    let sz = Sizes::new(opts.quick, smoke);
    if let Some(i) = args.iter().position(|a| a == "--only") {
        only(&rt, &sz, args.get(i + 1).map(String::as_str).unwrap_or(""));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--rss-child") {
        let mode = args.get(i + 1).map(String::as_str).unwrap_or("fill");
        let dir = std::path::Path::new(args.get(i + 2).map(String::as_str).unwrap_or("."));
        let backlog = args
            .get(i + 3)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        println!("{}", rt.block_on(state::rss(mode, dir, backlog)));
        return;
    }
    // `cargo bench` passes `--bench`; anything else unknown is a typo.
    for a in args.iter().skip(1) {
        if !matches!(a.as_str(), "--quick" | "--json" | "--check" | "--bench") {
            eprintln!("unknown argument {a}; use [--quick] [--json] [--check]");
            std::process::exit(2);
        }
    }
    let started = Instant::now();
    let nats = jetstream::server();
    let url = nats.as_ref().map(|s| s.url());
    let mut out = serde_json::Map::new();
    in_process(&rt, &sz, url.as_deref(), &mut out);
    let pending = sz.pending;
    out.insert(
        "restart".into(),
        rt.block_on(state::restart(pending, sz.passed)),
    );
    out.insert("disk".into(), rt.block_on(state::disk(pending, sz.stream)));
    out.insert("rss".into(), state::rss_in_child(pending));
    through_binary(&rt, &sz, url.as_deref(), &mut out);
    out.insert(
        "nats_server".into(),
        match &nats {
            Some(_) => json!(nats_version()),
            None => json!("not installed: the JetStream figures were not run"),
        },
    );
    drop(nats);
    out.insert("elapsed_s".into(), json!(started.elapsed().as_secs_f64()));
    out.insert("quick".into(), json!(opts.quick));
    out.insert("smoke".into(), json!(smoke));
    let v = Value::Object(out);
    if smoke {
        eprintln!(
            "smoke run (no --bench): tiny sizes in a test build; the figures below prove only that the harness runs"
        );
    }
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let verdicts = targets::check(&v, ci);
    if opts.json {
        let mut v = v;
        v["targets"] = Value::Array(verdicts.iter().map(targets::Target::json).collect());
        println!("{}", serde_json::to_string_pretty(&v).unwrap());
    } else {
        targets::print_table(&v, &verdicts);
    }
    if opts.check && verdicts.iter().any(|t| t.fails()) {
        std::process::exit(1);
    }
}

/// One phase alone, for profiling (`perf record -g -- …/compare --only X`
/// follows the daemon too).
fn only(rt: &Runtime, sz: &Sizes, what: &str) {
    let n = sz.n;
    let v = match what {
        "inmemory" => throughput(rt.block_on(engine::inmemory(n, 1)), n),
        "outbox_1sink" | "outbox_1sink_full" => {
            throughput(rt.block_on(engine::outbox_e2e(n, 1, SyncPolicy::Full)), n)
        }
        "outbox_1sink_always" => {
            throughput(rt.block_on(engine::outbox_e2e(n, 1, SyncPolicy::Always)), n)
        }
        "outbox_4sinks" => throughput(
            rt.block_on(engine::outbox_e2e(n, 4, SyncPolicy::default())),
            n,
        ),
        "sqlite_outbox" => throughput(peers::sqlite_outbox(sz.sqlite), sz.sqlite),
        "latency" => rt.block_on(state::latency(sz.latency_records)),
        "rss" => state::rss_in_child(sz.pending),
        "restart" => rt.block_on(state::restart(sz.pending, sz.passed)),
        "disk" => rt.block_on(state::disk(sz.pending, sz.stream)),
        "stdin_stdout" => e2e::stdin_run(sz.bin, false),
        "stdin_file" => e2e::stdin_run(sz.bin, true),
        "ingest_file" => e2e::ingest_run(rt, sz.bin, 32, 100),
        "webhook_strict" => e2e::webhook_run(rt, sz.webhook, STRICT, Duration::ZERO),
        "webhook_none" => e2e::webhook_run(rt, sz.webhook, NONE, Duration::ZERO),
        "webhook_20ms" => e2e::webhook_run(rt, sz.webhook_slow, NONE_64, SLOW),
        "rss_dead_receiver" => e2e::rss_dead_receiver(rt, sz.dead_receiver),
        _ => {
            eprintln!(
                "--only inmemory|outbox_1sink_full|outbox_1sink_always|outbox_4sinks|sqlite_outbox|latency|rss|restart|disk|stdin_stdout|stdin_file|ingest_file|webhook_strict|webhook_none|webhook_20ms|rss_dead_receiver"
            );
            std::process::exit(2);
        }
    };
    println!("{what}: {v}");
}

/// The figures of [`in_process`], in the order they are run and printed.
pub(crate) const IN_PROCESS_RUNS: [&str; 8] = [
    "inmemory",
    "sled_per_record",
    "naive_durable",
    "outbox_1sink_full",
    "outbox_1sink_always",
    "outbox_4sinks",
    "sqlite_outbox",
    "jetstream_pubsub",
];

/// The figures of [`through_binary`], in the order they are run and
/// printed.
pub(crate) const BINARY_RUNS: [&str; 10] = [
    "stdin_stdout",
    "stdin_file",
    "ingest_file",
    "webhook_strict",
    "webhook_none",
    "webhook_20ms",
    "jetstream_publish",
    "jetstream_consume",
    "jetstream_to_outbox",
    "outbox_to_jetstream",
];

const STRICT: &str = "ordering = \"strict\"\n";
const NONE: &str = "ordering = \"none\"\n";
const NONE_64: &str = "ordering = \"none\"\nmax_in_flight = 64\n";
/// What the slow receiver adds to each request.
const SLOW: Duration = Duration::from_millis(20);

/// The in-process throughputs, interleaved repetitions, median of each, so
/// a burst of load from a neighbour on this shared machine hits every
/// figure alike; then latency.
fn in_process(
    rt: &Runtime,
    sz: &Sizes,
    nats: Option<&str>,
    out: &mut serde_json::Map<String, Value>,
) {
    let n = sz.n;
    let mut runs: Vec<(&str, u64, Vec<Value>)> = IN_PROCESS_RUNS
        .into_iter()
        .map(|k| {
            let count = match k {
                "sled_per_record" => sz.sled_per_record,
                "naive_durable" => sz.naive,
                "sqlite_outbox" => sz.sqlite,
                "jetstream_pubsub" => sz.js,
                _ => n,
            };
            (k, count, vec![])
        })
        .collect();
    for rep in 0..sz.reps {
        for (name, count, figures) in runs.iter_mut() {
            let c = *count;
            let t = match *name {
                "inmemory" => rt.block_on(engine::inmemory(c, 1)),
                "sled_per_record" => engine::sled_per_record(c).0,
                "naive_durable" => engine::naive_durable(c).0,
                "outbox_1sink_full" => rt.block_on(engine::outbox_e2e(c, 1, SyncPolicy::Full)),
                "outbox_1sink_always" => rt.block_on(engine::outbox_e2e(c, 1, SyncPolicy::Always)),
                "outbox_4sinks" => rt.block_on(engine::outbox_e2e(c, 4, SyncPolicy::default())),
                "sqlite_outbox" => peers::sqlite_outbox(c),
                _ => match nats {
                    Some(url) => rt.block_on(jetstream::pubsub(url, c, rep)),
                    None => continue,
                },
            };
            figures.push(throughput(t, c));
        }
    }
    for (name, _, figures) in runs {
        out.insert(name.into(), median(figures));
    }
    // `outbox_1sink`, which the older targets use, is the default policy.
    let default = match SyncPolicy::default() {
        SyncPolicy::Full => "outbox_1sink_full",
        _ => "outbox_1sink_always",
    };
    let mut o1 = out[default].clone();
    o1["same_as"] = json!(default);
    out.insert("outbox_1sink".into(), o1);
    // Latency: median p99 over three windows.
    let mut lats: Vec<Value> = (0..3)
        .map(|_| rt.block_on(state::latency(sz.latency_records)))
        .collect();
    lats.sort_by(|a, b| {
        let p = |v: &Value| {
            v["dispatch_to_durable_ms"]["p99"]
                .as_f64()
                .unwrap_or(f64::MAX)
        };
        p(a).total_cmp(&p(b))
    });
    let mut lat = lats[1].clone();
    lat["windows_p99_durable_ms"] = json!(
        lats.iter()
            .map(|v| v["dispatch_to_durable_ms"]["p99"].clone())
            .collect::<Vec<_>>()
    );
    out.insert("latency".into(), lat);
}

/// The runs through the binary: stdin and ingest, webhooks, JetStream both
/// ways, interleaved the same way; then the dead-receiver RSS run.
fn through_binary(
    rt: &Runtime,
    sz: &Sizes,
    nats: Option<&str>,
    out: &mut serde_json::Map<String, Value>,
) {
    let mut runs: Vec<(&str, Vec<Value>)> = BINARY_RUNS.into_iter().map(|k| (k, vec![])).collect();
    for rep in 0..sz.bin_reps {
        for (name, figures) in runs.iter_mut() {
            let v = match (*name, nats) {
                ("stdin_stdout", _) => e2e::stdin_run(sz.bin, false),
                ("stdin_file", _) => e2e::stdin_run(sz.bin, true),
                ("ingest_file", _) => e2e::ingest_run(rt, sz.bin, 32, 100),
                ("webhook_strict", _) => e2e::webhook_run(rt, sz.webhook, STRICT, Duration::ZERO),
                ("webhook_none", _) => e2e::webhook_run(rt, sz.webhook, NONE, Duration::ZERO),
                ("webhook_20ms", _) => e2e::webhook_run(rt, sz.webhook_slow, NONE_64, SLOW),
                (_, None) => continue,
                ("jetstream_publish", Some(u)) => {
                    throughput(rt.block_on(jetstream::publish_only(u, sz.js, rep)), sz.js)
                }
                ("jetstream_consume", Some(u)) => {
                    throughput(rt.block_on(jetstream::consume_only(u, sz.js, rep)), sz.js)
                }
                ("jetstream_to_outbox", Some(u)) => jetstream::source_run(rt, u, sz.js, rep),
                (_, Some(u)) => jetstream::sink_run(rt, u, sz.js, rep),
            };
            figures.push(v);
        }
    }
    for (name, figures) in runs {
        out.insert(name.into(), median(figures));
    }
    out.insert(
        "rss_dead_receiver".into(),
        e2e::rss_dead_receiver(rt, sz.dead_receiver),
    );
}

/// The median run by rate, with every run's rate. A run that failed (its
/// output incomplete) makes the whole figure a failure: it is never
/// outvoted by the others. No runs at all: `not_run`.
fn median(mut figures: Vec<Value>) -> Value {
    if figures.is_empty() {
        return json!({"not_run": "nats-server is not installed"});
    }
    let rate = |v: &Value| v["records_per_sec"].as_f64().unwrap_or(0.0);
    figures.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let mut m = figures[figures.len() / 2].clone();
    m["runs_records_per_sec"] = json!(figures.iter().map(rate).collect::<Vec<_>>());
    if let Some(e) = figures.iter().find_map(|v| v.get("error")) {
        m["error"] = e.clone();
        if let Some(o) = m.as_object_mut() {
            o.remove("records_per_sec");
        }
    }
    m
}

fn nats_version() -> String {
    nats::binary()
        .and_then(|b| std::process::Command::new(b).arg("--version").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub(crate) fn throughput(elapsed: Duration, n: u64) -> Value {
    json!({
        "records": n,
        "seconds": elapsed.as_secs_f64(),
        "records_per_sec": (n as f64 / elapsed.as_secs_f64()).round(),
    })
}

pub(crate) fn payload(i: u64) -> Vec<u8> {
    let mut p = vec![b'x'; PAYLOAD];
    p[..8].copy_from_slice(&i.to_be_bytes());
    p
}

/// The `p` quantile of sorted microseconds, in milliseconds.
pub(crate) fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}
