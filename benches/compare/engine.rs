//! In-process throughputs: outbox's engine with a no-op sink against the
//! designs it replaces (an in-memory channel, sled used naively).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use outbox::sink::{BoxFuture, DeliveryContext, DeliveryResult, Sink};
use outbox::{Outbox, OutboxConfig, Record, SinkConfig, SyncPolicy};
use tokio::sync::{mpsc, watch};

use crate::payload;

// ---------------------------------------------------------------- a. inmemory

/// The in-memory design outbox replaces: a bounded mpsc per sink, an Arc
/// guard per event whose drop releases the ack tokens once every worker is
/// done with it.
pub(crate) async fn inmemory(n: u64, sinks: usize) -> Duration {
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

/// A fresh sled database with outbox's cache size, and its `log` tree.
fn sled_log() -> (tempfile::TempDir, sled::Db, sled::Tree) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(64 << 20)
        .open()
        .unwrap();
    let t = db.open_tree("log").unwrap();
    (dir, db, t)
}

/// Raw sled, one key per record: insert (flush every 1k), read, remove.
pub(crate) fn sled_per_record(n: u64) -> (Duration, u64) {
    let (_dir, db, t) = sled_log();
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
pub(crate) fn naive_durable(n: u64) -> (Duration, u64) {
    let (_dir, db, t) = sled_log();
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
pub(crate) struct NoopSink {
    pub(crate) delivered: Arc<AtomicU64>,
    pub(crate) first: Arc<watch::Sender<Option<Instant>>>,
    pub(crate) gate: Option<watch::Receiver<bool>>,
}

impl NoopSink {
    pub(crate) fn new() -> Self {
        NoopSink {
            delivered: Arc::new(AtomicU64::new(0)),
            first: Arc::new(watch::channel(None).0),
            gate: None,
        }
    }
}

impl NoopSink {
    fn count(&self, record: &Record) {
        std::hint::black_box(&record.payload);
        if self.delivered.fetch_add(1, Ordering::Relaxed) == 0 {
            self.first.send_replace(Some(Instant::now()));
        }
    }
}

impl Sink for NoopSink {
    fn deliver_now(&self, record: &Record, _ctx: &DeliveryContext<'_>) -> Option<DeliveryResult> {
        if self.gate.is_some() {
            return None;
        }
        self.count(record);
        Some(Ok(()))
    }

    fn deliver<'a>(
        &'a self,
        record: &'a Record,
        _ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        self.count(record);
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
pub(crate) fn engine_cfg() -> OutboxConfig {
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

pub(crate) fn sink_cfg() -> SinkConfig {
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

/// Dispatch n records from concurrent dispatchers under `sync`, wait for
/// every ack.
pub(crate) async fn outbox_e2e(n: u64, sinks: usize, sync: SyncPolicy) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = engine_cfg();
    cfg.sync = sync;
    let mut b = Outbox::<u64>::builder(dir.path()).config(cfg);
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
    outbox::Outbox::clone(&ob)
        .shutdown(Duration::from_secs(10))
        .await
        .unwrap();
    e
}

/// The engine under the bench's config on `dir` with one sink `s`.
pub(crate) async fn open_one(
    dir: &std::path::Path,
    sink: NoopSink,
) -> (Outbox<u64>, tokio::sync::mpsc::UnboundedReceiver<u64>) {
    Outbox::<u64>::builder(dir)
        .config(engine_cfg())
        .sink("s", sink, sink_cfg())
        .open()
        .await
        .unwrap()
}

/// Dispatches `n` records from DISPATCHERS tasks in CHUNK-record calls;
/// the token of each record is its index.
pub(crate) async fn pump(ob: &Arc<Outbox<u64>>, n: u64) {
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
