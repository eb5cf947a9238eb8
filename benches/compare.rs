//! Side-by-side harness: outbox against the designs a user would otherwise
//! choose, measured in one run on one machine.
//!
//! ```text
//! cargo bench --bench compare -- [--quick] [--json] [--check]
//! ```
//!
//! Every figure uses 256-byte payloads. `--check` exits non-zero when a
//! target of the performance issue is missed. Targets are ratios against
//! baselines measured in the same run, because these machines are shared.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use outbox::sink::{BoxFuture, DeliveryContext, DeliveryResult, Sink};
use outbox::{Outbox, OutboxConfig, Record, SinkConfig};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

const PAYLOAD: usize = 256;

struct Opts {
    quick: bool,
    json: bool,
    check: bool,
}

/// How much each phase does: the full run, `--quick`, or the smoke run that
/// `cargo test --all-targets` makes (no `--bench` flag), which only proves
/// the harness still runs.
struct Sizes {
    n: u64,
    reps: usize,
    sled_per_record: u64,
    naive: u64,
    latency_records: u64,
    pending: u64,
    passed: u64,
    stream: u64,
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
    let n = sz.n;
    // Internal modes: one phase alone (for profiling), or the RSS child.
    if let Some(i) = args.iter().position(|a| a == "--only") {
        let what = args.get(i + 1).map(String::as_str).unwrap_or("");
        let e = match what {
            "inmemory" => rt.block_on(inmemory(n, 1)),
            "outbox_1sink" => rt.block_on(outbox_e2e(n, 1)),
            "outbox_4sinks" => rt.block_on(outbox_e2e(n, 4)),
            "latency" => {
                println!("{}", rt.block_on(latency(sz.latency_records)));
                return;
            }
            "rss" => {
                println!("{}", rss_in_child(sz.pending));
                return;
            }
            "disk" => {
                println!("{}", rt.block_on(disk(sz.pending, sz.stream)));
                return;
            }
            _ => {
                eprintln!("--only inmemory|outbox_1sink|outbox_4sinks|latency|rss|disk");
                std::process::exit(2);
            }
        };
        println!("{what}: {}", throughput(e, n));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--rss-child") {
        let mode = args.get(i + 1).map(String::as_str).unwrap_or("fill");
        let dir = Path::new(args.get(i + 2).map(String::as_str).unwrap_or("."));
        let backlog = args
            .get(i + 3)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        println!("{}", rt.block_on(rss(mode, dir, backlog)));
        return;
    }
    // `cargo bench` passes `--bench`; anything else unknown is a typo.
    for a in args.iter().skip(1) {
        if !matches!(a.as_str(), "--quick" | "--json" | "--check" | "--bench") {
            eprintln!("unknown argument {a}; use [--quick] [--json] [--check]");
            std::process::exit(2);
        }
    }
    let mut out = serde_json::Map::new();
    let started = Instant::now();

    // Throughputs: interleaved repetitions, median of each, so a burst of
    // load from a neighbour on this shared machine hits every figure alike.
    let reps = sz.reps;
    let (spr_n, nd_n) = (sz.sled_per_record, sz.naive);
    let mut runs: Vec<(&str, u64, Vec<Duration>)> = vec![
        ("inmemory", n, vec![]),
        ("sled_per_record", spr_n, vec![]),
        ("naive_durable", nd_n, vec![]),
        ("outbox_1sink", n, vec![]),
        ("outbox_4sinks", n, vec![]),
    ];
    for _ in 0..reps {
        for (name, count, times) in runs.iter_mut() {
            let t = match *name {
                "inmemory" => rt.block_on(inmemory(*count, 1)),
                "sled_per_record" => sled_per_record(*count).0,
                "naive_durable" => naive_durable(*count).0,
                "outbox_1sink" => rt.block_on(outbox_e2e(*count, 1)),
                _ => rt.block_on(outbox_e2e(*count, 4)),
            };
            times.push(t);
        }
    }
    for (name, count, mut times) in runs {
        times.sort();
        let mut v = throughput(times[times.len() / 2], count);
        v["runs_records_per_sec"] = json!(
            times
                .iter()
                .map(|t| (count as f64 / t.as_secs_f64()).round())
                .collect::<Vec<_>>()
        );
        out.insert(name.into(), v);
    }
    // Latency: median p99 over three windows.
    let mut lats: Vec<Value> = (0..3)
        .map(|_| rt.block_on(latency(sz.latency_records)))
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
    let pending = sz.pending;
    out.insert("restart".into(), rt.block_on(restart(pending, sz.passed)));
    out.insert("disk".into(), rt.block_on(disk(pending, sz.stream)));
    out.insert("rss".into(), rss_in_child(pending));
    out.insert("elapsed_s".into(), json!(started.elapsed().as_secs_f64()));
    out.insert("quick".into(), json!(opts.quick));
    out.insert("smoke".into(), json!(smoke));
    let v = Value::Object(out);
    if smoke {
        eprintln!(
            "smoke run (no --bench): tiny sizes in a test build; the figures below prove only that the harness runs"
        );
    }
    let verdicts = check(&v);
    if opts.json {
        let mut v = v;
        v["targets"] = Value::Array(
            verdicts
                .iter()
                .map(|(n, ok, d)| json!({"target": n, "met": ok, "detail": d}))
                .collect(),
        );
        println!("{}", serde_json::to_string_pretty(&v).unwrap());
    } else {
        print_table(&v, &verdicts);
    }
    if opts.check && verdicts.iter().any(|(_, ok, _)| !ok) {
        std::process::exit(1);
    }
}

fn throughput(elapsed: Duration, n: u64) -> Value {
    json!({
        "records": n,
        "seconds": elapsed.as_secs_f64(),
        "records_per_sec": (n as f64 / elapsed.as_secs_f64()).round(),
    })
}

fn payload(i: u64) -> Vec<u8> {
    let mut p = vec![b'x'; PAYLOAD];
    p[..8].copy_from_slice(&i.to_be_bytes());
    p
}

// ---------------------------------------------------------------- a. inmemory

/// The seed's design: a bounded mpsc per sink, an Arc guard per event whose
/// drop releases the ack tokens once every worker is done with it.
async fn inmemory(n: u64, sinks: usize) -> Duration {
    struct Guard {
        token: u64,
        ack: mpsc::UnboundedSender<u64>,
    }
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.ack.send(self.token);
        }
    }
    struct Item {
        _payload: Arc<Vec<u8>>,
        _guard: Arc<Guard>,
    }
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let mut txs = Vec::new();
    for _ in 0..sinks {
        let (tx, mut rx) = mpsc::channel::<Item>(1024);
        txs.push(tx);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(64);
            while rx.recv_many(&mut batch, 64).await > 0 {
                for item in batch.drain(..) {
                    std::hint::black_box(&item);
                }
            }
        });
    }
    let start = Instant::now();
    let producer = tokio::spawn(async move {
        for i in 0..n {
            let guard = Arc::new(Guard {
                token: i,
                ack: ack_tx.clone(),
            });
            let p = Arc::new(payload(i));
            for tx in &txs {
                let _ = tx
                    .send(Item {
                        _payload: p.clone(),
                        _guard: guard.clone(),
                    })
                    .await;
            }
        }
    });
    let mut acked = 0;
    while acked < n {
        if ack_rx.recv().await.is_none() {
            break;
        }
        acked += 1;
    }
    let e = start.elapsed();
    let _ = producer.await;
    e
}

// ------------------------------------------------------- b. sled per record

/// Raw sled, one key per record: insert (flush every 1k), read, remove.
fn sled_per_record(n: u64) -> (Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(64 << 20)
        .open()
        .unwrap();
    let t = db.open_tree("log").unwrap();
    let start = Instant::now();
    for i in 0..n {
        t.insert(i.to_be_bytes(), payload(i)).unwrap();
        if i % 1000 == 999 {
            db.flush().unwrap();
        }
    }
    db.flush().unwrap();
    for i in 0..n {
        let v = t.get(i.to_be_bytes()).unwrap();
        std::hint::black_box(v);
        t.remove(i.to_be_bytes()).unwrap();
        if i % 1000 == 999 {
            db.flush().unwrap();
        }
    }
    db.flush().unwrap();
    (start.elapsed(), n)
}

// -------------------------------------------------------- c. naive durable

/// One insert and one flush per record.
fn naive_durable(n: u64) -> (Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(64 << 20)
        .open()
        .unwrap();
    let t = db.open_tree("log").unwrap();
    let start = Instant::now();
    for i in 0..n {
        t.insert(i.to_be_bytes(), payload(i)).unwrap();
        db.flush().unwrap();
    }
    (start.elapsed(), n)
}

// --------------------------------------------------------- d. outbox e2e

/// A sink that accepts everything, optionally gated shut.
#[derive(Clone)]
struct NoopSink {
    delivered: Arc<AtomicU64>,
    first: Arc<watch::Sender<Option<Instant>>>,
    gate: Option<watch::Receiver<bool>>,
}

impl NoopSink {
    fn new() -> Self {
        NoopSink {
            delivered: Arc::new(AtomicU64::new(0)),
            first: Arc::new(watch::channel(None).0),
            gate: None,
        }
    }
}

impl Sink for NoopSink {
    fn deliver<'a>(
        &'a self,
        record: &'a Record,
        _ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        std::hint::black_box(&record.payload);
        if self.delivered.fetch_add(1, Ordering::Relaxed) == 0 {
            self.first.send_replace(Some(Instant::now()));
        }
        match &self.gate {
            None => Box::pin(std::future::ready(Ok(()))),
            Some(g) => Box::pin(async move {
                let _ = g.clone().wait_for(|open| *open).await;
                Ok(())
            }),
        }
    }
    fn kind(&self) -> &'static str {
        "noop"
    }
}

/// Engine settings: the defaults, unless an environment variable overrides
/// one, for experiments like the value-size table in docs/performance.md:
/// `OUTBOX_BENCH_CACHE_MB`, `_TAIL_MB`, `_BATCH_KB`, `_BATCH_RECORDS`,
/// `_VALUE_KB`, `_BACKLOG_VALUE_KB`, `_BACKLOG_RECORDS`, `_TRUNCATE_MS`
/// (each prefixed `OUTBOX_BENCH`). A recorded run sets none of them.
fn engine_cfg() -> OutboxConfig {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let mut c = OutboxConfig::default();
    if let Some(mb) = env("OUTBOX_BENCH_CACHE_MB") {
        c.cache_bytes = mb << 20;
    }
    if let Some(kb) = env("OUTBOX_BENCH_BATCH_KB") {
        c.max_batch_bytes = (kb << 10) as usize;
    }
    if let Some(ms) = env("OUTBOX_BENCH_TRUNCATE_MS") {
        c.truncate_every = Duration::from_millis(ms);
    }
    if let Some(kb) = env("OUTBOX_BENCH_BACKLOG_VALUE_KB") {
        c.backlog_value_bytes = (kb << 10) as usize;
    }
    if let Some(n) = env("OUTBOX_BENCH_BACKLOG_RECORDS") {
        c.backlog_records = n;
    }
    if let Some(kb) = env("OUTBOX_BENCH_VALUE_KB") {
        c.max_value_bytes = (kb << 10) as usize;
    }
    if let Some(n) = env("OUTBOX_BENCH_BATCH_RECORDS") {
        c.max_batch_records = n as usize;
    }
    if let Some(mb) = env("OUTBOX_BENCH_TAIL_MB") {
        c.tail_cache_bytes = (mb << 20) as usize;
    }
    c
}

fn sink_cfg() -> SinkConfig {
    SinkConfig {
        max_lag_records: Some(10_000_000),
        ..SinkConfig::default()
    }
}

const DISPATCHERS_DEFAULT: u64 = 8;

/// Concurrent dispatching tasks (`OUTBOX_BENCH_DISPATCHERS` overrides).
fn dispatchers() -> u64 {
    std::env::var("OUTBOX_BENCH_DISPATCHERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DISPATCHERS_DEFAULT)
}
const CHUNK_DEFAULT: u64 = 128;

/// Records per `dispatch_many` call (`OUTBOX_BENCH_CHUNK` overrides).
fn chunk() -> u64 {
    std::env::var("OUTBOX_BENCH_CHUNK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CHUNK_DEFAULT)
}

/// Dispatch n records from concurrent dispatchers, wait for every ack.
async fn outbox_e2e(n: u64, sinks: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Outbox::<u64>::builder(dir.path()).config(engine_cfg());
    for i in 0..sinks {
        b = b.sink(format!("s{i}"), NoopSink::new(), sink_cfg());
    }
    let (ob, mut acks) = b.open().await.unwrap();
    let ob = Arc::new(ob);
    let start = Instant::now();
    pump(&ob, n).await;
    let mut acked = 0;
    while acked < n {
        if acks.recv().await.is_none() {
            break;
        }
        acked += 1;
    }
    let e = start.elapsed();
    ob.shutdown(Duration::from_secs(10)).await.unwrap();
    e
}

/// Dispatches `n` records from DISPATCHERS tasks in CHUNK-record calls;
/// the token of each record is its index.
async fn pump(ob: &Arc<Outbox<u64>>, n: u64) {
    let mut tasks = Vec::new();
    let dispatchers = dispatchers();
    for d in 0..dispatchers {
        let ob = ob.clone();
        tasks.push(tokio::spawn(async move {
            let chunk = chunk();
            let mut i = d * chunk;
            while i < n {
                let end = (i + chunk).min(n);
                let items = (i..end)
                    .map(|k| (Record::new(payload(k)), vec![k]))
                    .collect();
                ob.dispatch_many(items).await.unwrap();
                i += chunk * dispatchers;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

// ------------------------------------------------------------- e. latency

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Offered load of 10k records/s for `secs` seconds, one `dispatch` per
/// record from its own task at its scheduled time.
async fn latency(total: u64) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (ob, mut acks) = Outbox::<(u64, Instant)>::builder(dir.path())
        .sink("s", NoopSink::new(), sink_cfg())
        .open()
        .await
        .unwrap();
    let ob = Arc::new(ob);

    let (lat_tx, mut lat_rx) = mpsc::unbounded_channel::<u64>();
    let ack_task = tokio::spawn(async move {
        let mut v = Vec::with_capacity(total as usize);
        while (v.len() as u64) < total {
            match acks.recv().await {
                Some((_, at)) => v.push(at.elapsed().as_micros() as u64),
                None => break,
            }
        }
        v
    });
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        tick.tick().await;
        let ob = ob.clone();
        let tx = lat_tx.clone();
        tokio::spawn(async move {
            let at = Instant::now();
            ob.dispatch(Record::new(payload(i)), vec![(i, at)])
                .await
                .unwrap();
            let _ = tx.send(at.elapsed().as_micros() as u64);
        });
    }
    drop(lat_tx);
    let mut durable = Vec::with_capacity(total as usize);
    while let Some(l) = lat_rx.recv().await {
        durable.push(l);
    }
    let offered = total as f64 / start.elapsed().as_secs_f64();
    let mut acked = ack_task.await.unwrap();
    durable.sort_unstable();
    acked.sort_unstable();
    ob.shutdown(Duration::from_secs(10)).await.unwrap();
    json!({
        "offered_records_per_sec": offered.round(),
        "records": total,
        "dispatch_to_durable_ms": {"p50": pct(&durable, 0.5), "p99": pct(&durable, 0.99), "p999": pct(&durable, 0.999)},
        "dispatch_to_ack_ms": {"p50": pct(&acked, 0.5), "p99": pct(&acked, 0.99), "p999": pct(&acked, 0.999)},
    })
}

// ------------------------------------------------------------- f. restart

/// Leaves `pending` records undelivered for sink `s` in `dir`.
async fn fill_pending(dir: &Path, pending: u64) {
    let (gated, _gate) = {
        let (tx, rx) = watch::channel(false);
        let mut s = NoopSink::new();
        s.gate = Some(rx);
        (s, tx)
    };
    let (ob, _acks) = Outbox::<u64>::builder(dir)
        .config(engine_cfg())
        .sink("s", gated, sink_cfg())
        .open()
        .await
        .unwrap();
    let ob = Arc::new(ob);
    pump(&ob, pending).await;
    let ob = Arc::try_unwrap(ob).ok().unwrap();
    stop_undrained(ob, dir).await;
}

/// Drops the outbox without draining and waits for its directory's lock to
/// go (sled flushes on drop: an undrained stop, not a crash).
async fn stop_undrained<T: Send + 'static>(ob: Outbox<T>, dir: &Path) {
    drop(ob);
    while outbox::store::is_locked(dir) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Time from the start of `open` to the first redelivered record.
async fn time_to_first(dir: &Path) -> (f64, f64) {
    let sink = NoopSink::new();
    let mut first = sink.first.subscribe();
    let start = Instant::now();
    let (ob, _acks) = Outbox::<u64>::builder(dir)
        .config(engine_cfg())
        .sink("s", sink.clone(), sink_cfg())
        .open()
        .await
        .unwrap();
    let opened = start.elapsed().as_secs_f64();
    let _ = first.wait_for(|f| f.is_some()).await;
    let t = first.borrow().unwrap().duration_since(start).as_secs_f64();
    stop_undrained(ob, dir).await;
    (opened, t)
}

async fn restart(pending: u64, passed: u64) -> Value {
    let dir = tempfile::tempdir().unwrap();
    fill_pending(dir.path(), pending).await;
    let (open1, first1) = time_to_first(dir.path()).await;

    // A second directory that first passed `passed` records through one
    // session, then left `pending` behind.
    let dir2 = tempfile::tempdir().unwrap();
    {
        let (ob, mut acks) = Outbox::<u64>::builder(dir2.path())
            .config(engine_cfg())
            .sink("s", NoopSink::new(), sink_cfg())
            .open()
            .await
            .unwrap();
        let ob = Arc::new(ob);
        pump(&ob, passed).await;
        let mut acked = 0;
        while acked < passed && acks.recv().await.is_some() {
            acked += 1;
        }
        Arc::try_unwrap(ob)
            .ok()
            .unwrap()
            .close(Duration::from_secs(30))
            .await
            .unwrap();
    }
    fill_pending(dir2.path(), pending).await;
    let (open2, first2) = time_to_first(dir2.path()).await;
    json!({
        "pending": pending,
        "open_s": open1,
        "first_redelivery_s": first1,
        "after_passed": passed,
        "open_after_passed_s": open2,
        "first_redelivery_after_passed_s": first2,
    })
}

// ---------------------------------------------------------------- g. disk

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            total += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

/// Disk against live bytes. Live bytes are what a sink still has to
/// deliver: lag times the stored size of a record.
async fn disk(backlog: u64, stream: u64) -> Value {
    let live_per_record = PAYLOAD as u64;
    // Steady state: records stream through while a sink keeps up; the
    // directory is sampled every 100 ms and every sample is held to the
    // target.
    let dir = tempfile::tempdir().unwrap();
    let (ob, mut acks) = Outbox::<u64>::builder(dir.path())
        .config(engine_cfg())
        .sink("s", NoopSink::new(), sink_cfg())
        .open()
        .await
        .unwrap();
    let ob = Arc::new(ob);
    let sampler = {
        let ob = ob.clone();
        let path = dir.path().to_path_buf();
        tokio::spawn(async move {
            let mut worst = (0.0f64, 0u64, 0u64);
            let mut max_disk = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let Ok(st) = ob.status() else { break };
                let live = st.sinks[0].lag * live_per_record;
                let disk = dir_size(&path);
                max_disk = max_disk.max(disk);
                let ratio = disk as f64 / (3.0 * live as f64 + 64.0 * 1048576.0);
                if ratio > worst.0 {
                    worst = (ratio, disk, live);
                }
                if ob.is_closing() {
                    break;
                }
            }
            (worst, max_disk)
        })
    };
    pump(&ob, stream).await;
    let mut acked = 0;
    while acked < stream && acks.recv().await.is_some() {
        acked += 1;
    }
    tokio::time::sleep(Duration::from_millis(600)).await; // a truncation pass
    let end_disk = dir_size(dir.path());
    ob.shutdown(Duration::from_secs(10)).await.unwrap();
    let ((worst_ratio, worst_disk, worst_live), max_disk) = sampler.await.unwrap();
    drop(ob);

    // A backlog, then drained, then compacted.
    let dir2 = tempfile::tempdir().unwrap();
    fill_pending(dir2.path(), backlog).await;
    let backlog_disk = dir_size(dir2.path());
    {
        let sink = NoopSink::new();
        let delivered = sink.delivered.clone();
        let (ob, _a) = Outbox::<u64>::builder(dir2.path())
            .config(engine_cfg())
            .sink("s", sink, sink_cfg())
            .open()
            .await
            .unwrap();
        while delivered.load(Ordering::Relaxed) < backlog {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        ob.close(Duration::from_secs(10)).await.unwrap();
    }
    let drained_disk = dir_size(dir2.path());
    let out = tempfile::tempdir().unwrap();
    let compacted = out.path().join("c");
    {
        let store = outbox::store::Store::inspect(dir2.path(), 16 << 20).unwrap();
        store.export_to(&compacted, 16 << 20, &mut |_| {}).unwrap();
    }
    let compacted_disk = dir_size(&compacted);
    json!({
        "stream_records": stream,
        "steady_max_disk_bytes": max_disk,
        "steady_worst_sample": {"disk_bytes": worst_disk, "live_bytes": worst_live, "ratio_to_limit": worst_ratio},
        "steady_end_disk_bytes": end_disk,
        "backlog_records": backlog,
        "backlog_live_bytes": backlog * live_per_record,
        "backlog_disk_bytes": backlog_disk,
        "drained_disk_bytes": drained_disk,
        "compacted_disk_bytes": compacted_disk,
    })
}

// ----------------------------------------------------------------- h. RSS

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Runs [`rss`] in a fresh process, so earlier phases do not count.
fn rss_in_child(backlog: u64) -> Value {
    let child = |args: &[&str]| -> Value {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(args)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&out.stderr)}))
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_string_lossy().to_string();
    let n = backlog.to_string();
    let fill = child(&["--rss-child", "fill", &path, &n]);
    let replay = child(&["--rss-child", "replay", &path, &n]);
    json!({
        "backlog_records": backlog,
        "fill_peak_rss_kib": fill["peak_rss_kib"],
        "fill_records_per_sec": fill["records_per_sec"],
        "replay_peak_rss_kib": replay["peak_rss_kib"],
        "peak_rss_kib": fill["peak_rss_kib"].as_u64().unwrap_or(u64::MAX).max(replay["peak_rss_kib"].as_u64().unwrap_or(u64::MAX)),
    })
}

/// One process's part of the RSS measure: `fill` builds a backlog of
/// `backlog` records in `dir` and exits; `replay` opens it, as a daemon
/// restarted with that backlog does, and delivers all of it.
async fn rss(mode: &str, dir: &Path, backlog: u64) -> Value {
    let started = Instant::now();
    if mode == "fill" {
        fill_pending(dir, backlog).await;
    } else {
        let sink = NoopSink::new();
        let delivered = sink.delivered.clone();
        let (ob, _a) = Outbox::<u64>::builder(dir)
            .config(engine_cfg())
            .sink("s", sink, sink_cfg())
            .open()
            .await
            .unwrap();
        while delivered.load(Ordering::Relaxed) < backlog {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ob.close(Duration::from_secs(10)).await.unwrap();
    }
    json!({"mode": mode, "peak_rss_kib": status_kb("VmHWM:"), "records_per_sec": (backlog as f64 / started.elapsed().as_secs_f64()).round()})
}

// ------------------------------------------------------------- targets

fn rps(v: &Value, k: &str) -> f64 {
    v[k]["records_per_sec"].as_f64().unwrap_or(0.0)
}

fn check(v: &Value) -> Vec<(String, bool, String)> {
    let mut out = Vec::new();
    let (o1, o4, im, spr) = (
        rps(v, "outbox_1sink"),
        rps(v, "outbox_4sinks"),
        rps(v, "inmemory"),
        rps(v, "sled_per_record"),
    );
    out.push((
        "outbox_1sink >= 0.25 x inmemory".into(),
        o1 >= 0.25 * im,
        format!("{:.3} x", o1 / im),
    ));
    out.push((
        "outbox_4sinks >= 0.8 x outbox_1sink".into(),
        o4 >= 0.8 * o1,
        format!("{:.3} x", o4 / o1),
    ));
    out.push((
        "outbox_1sink >= 5 x sled_per_record".into(),
        o1 >= 5.0 * spr,
        format!("{:.2} x", o1 / spr),
    ));
    let p99 = v["latency"]["dispatch_to_durable_ms"]["p99"]
        .as_f64()
        .unwrap_or(f64::MAX);
    out.push((
        "p99 dispatch to durable at 10k/s <= 2 ms".into(),
        p99 <= 2.0,
        format!("{p99:.3} ms"),
    ));
    let r = v["restart"]["first_redelivery_s"]
        .as_f64()
        .unwrap_or(f64::MAX);
    out.push((
        format!("restart with {} pending <= 1 s", v["restart"]["pending"]),
        r <= 1.0,
        format!("{r:.3} s"),
    ));
    let w = &v["disk"]["steady_worst_sample"];
    let ratio = w["ratio_to_limit"].as_f64().unwrap_or(f64::MAX);
    let d = w["disk_bytes"].as_f64().unwrap_or(f64::MAX) / 1048576.0;
    let live = w["live_bytes"].as_f64().unwrap_or(0.0) / 1048576.0;
    out.push((
        "disk at steady state <= 3 x live + 64 MiB".into(),
        ratio <= 1.0,
        format!(
            "worst sample {d:.1} MiB with {live:.1} MiB live (limit {:.1} MiB)",
            3.0 * live + 64.0
        ),
    ));
    let rss = v["rss"]["peak_rss_kib"].as_f64().unwrap_or(f64::MAX) / 1024.0;
    out.push((
        format!(
            "peak RSS with a {} backlog <= 150 MiB",
            v["rss"]["backlog_records"]
        ),
        rss <= 150.0,
        format!(
            "{rss:.1} MiB (the session that builds the backlog {:.1} MiB, a restart that replays it {:.1} MiB)",
            v["rss"]["fill_peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
            v["rss"]["replay_peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0
        ),
    ));
    out
}

fn print_table(v: &Value, verdicts: &[(String, bool, String)]) {
    println!("{:<18} {:>14} {:>10}", "throughput", "records/s", "records");
    for k in [
        "inmemory",
        "sled_per_record",
        "naive_durable",
        "outbox_1sink",
        "outbox_4sinks",
    ] {
        println!("{:<18} {:>14.0} {:>10}", k, rps(v, k), v[k]["records"]);
    }
    let l = &v["latency"];
    println!(
        "\nlatency at {} records/s offered (ms):",
        l["offered_records_per_sec"]
    );
    for k in ["dispatch_to_durable_ms", "dispatch_to_ack_ms"] {
        println!(
            "  {:<24} p50 {:>8} p99 {:>8} p999 {:>8}",
            k, l[k]["p50"], l[k]["p99"], l[k]["p999"]
        );
    }
    println!("\nrestart: {}", v["restart"]);
    println!("disk: {}", v["disk"]);
    println!("rss: {}", v["rss"]);
    println!("\ntargets:");
    for (n, ok, d) in verdicts {
        println!("  [{}] {:<48} {}", if *ok { "met" } else { "MISSED" }, n, d);
    }
    println!("\nelapsed {:.1} s", v["elapsed_s"].as_f64().unwrap_or(0.0));
}
