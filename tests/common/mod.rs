//! Helpers shared by the integration tests, one module tree for all of
//! them: each test target includes it with `mod common;`.
//!
//! - this file: the recording [`TestSink`], [`open_outbox`] and the engine
//!   helpers (`fast`, `rec`, `eventually`, `abandon`, acks, `raw_sled`);
//! - [`sinks`]: sinks that hold a delivery forever or drop it (also used by
//!   the benches through `#[path]`);
//! - [`process`]: the binary, kill counts, `copy_dir`, `wait_for`, RSS,
//!   tools that must exist under `CI=true`;
//! - [`config`]: a TOML config builder for `outbox run`;
//! - [`cli`]: running the binary, a daemon, HTTP/1.1 and a webhook receiver;
//! - [`held`]: a store filled through the binary, damaged while stopped;
//! - [`ingest`]: the HTTP clients and oracle of the crash tests.
//!
//! Each integration test file is its own crate and uses only part of this
//! tree, so what one crate leaves unused is not dead code: hence the allow.
#![allow(dead_code)]

pub mod cli;
pub mod config;
pub mod held;
pub mod ingest;
pub mod process;
pub mod sinks;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use outbox::sink::{BoxFuture, DeliveryContext, DeliveryError, DeliveryResult, Sink};
use outbox::{Record, SinkConfig};
use parking_lot::Mutex;
use tokio::sync::watch;

/// One delivery attempt as a sink saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub id: String,
    pub seq: u64,
    pub payload: Vec<u8>,
    pub attempt: u32,
    pub ok: bool,
}

/// What a [`TestSink`] answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    Ok,
    /// Fail transiently this many times overall, then succeed.
    FailFirst(u32),
    AlwaysTransient,
    AlwaysPermanent,
    /// Panic on payloads equal to this.
    PanicOn(Vec<u8>),
}

/// A sink that records every attempt, can be gated, and fails on command.
#[derive(Clone)]
pub struct TestSink {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    pub failures: Arc<AtomicU32>,
    pub gate: Option<watch::Receiver<bool>>,
}

impl TestSink {
    pub fn new(b: Behaviour) -> Self {
        TestSink {
            seen: Arc::new(Mutex::new(Vec::new())),
            behaviour: Arc::new(Mutex::new(b)),
            failures: Arc::new(AtomicU32::new(0)),
            gate: None,
        }
    }

    pub fn gated(b: Behaviour) -> (Self, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let mut s = Self::new(b);
        s.gate = Some(rx);
        (s, tx)
    }

    /// Payloads delivered successfully, in order.
    pub fn delivered(&self) -> Vec<Vec<u8>> {
        self.seen
            .lock()
            .iter()
            .filter(|s| s.ok)
            .map(|s| s.payload.clone())
            .collect()
    }

    pub fn delivered_ids(&self) -> Vec<String> {
        self.seen
            .lock()
            .iter()
            .filter(|s| s.ok)
            .map(|s| s.id.clone())
            .collect()
    }

    pub fn attempts(&self) -> usize {
        self.seen.lock().len()
    }
}

impl Sink for TestSink {
    fn deliver<'a>(
        &'a self,
        record: &'a Record,
        ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        Box::pin(async move {
            if let Some(g) = &self.gate {
                let _ = g.clone().wait_for(|open| *open).await;
            }
            let b = self.behaviour.lock().clone();
            let result = match b {
                Behaviour::Ok => Ok(()),
                Behaviour::FailFirst(n) => {
                    if self.failures.fetch_add(1, Ordering::SeqCst) < n {
                        Err(DeliveryError::transient("not yet"))
                    } else {
                        Ok(())
                    }
                }
                Behaviour::AlwaysTransient => Err(DeliveryError::transient("down")),
                Behaviour::AlwaysPermanent => Err(DeliveryError::permanent("rejected: 400")),
                Behaviour::PanicOn(p) => {
                    if record.payload == p {
                        panic!("test sink panics on {:?}", String::from_utf8_lossy(&p));
                    }
                    Ok(())
                }
            };
            self.seen.lock().push(Seen {
                id: ctx.delivery_id.to_string(),
                seq: ctx.seq.0,
                payload: record.payload.clone(),
                attempt: ctx.attempt,
                ok: result.is_ok(),
            });
            result
        })
    }

    fn kind(&self) -> &'static str {
        "test"
    }
}

/// A fresh temporary directory.
pub fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Opens an outbox on `dir` with the default config and each of `sinks`
/// under its name with [`fast`] retries.
pub async fn open_outbox<T: Send + 'static>(
    dir: &Path,
    sinks: &[(&str, &TestSink)],
) -> (outbox::Outbox<T>, tokio::sync::mpsc::UnboundedReceiver<T>) {
    open_with(dir, outbox::OutboxConfig::default(), sinks)
        .await
        .expect("open the outbox")
}

/// [`open_outbox`] with `cfg`, handing back the open's error.
pub async fn open_with<T: Send + 'static>(
    dir: &Path,
    cfg: outbox::OutboxConfig,
    sinks: &[(&str, &TestSink)],
) -> outbox::Result<(outbox::Outbox<T>, tokio::sync::mpsc::UnboundedReceiver<T>)> {
    let mut b = outbox::Outbox::<T>::builder(dir).config(cfg);
    for (n, s) in sinks {
        b = b.sink(*n, (*s).clone(), fast());
    }
    b.open().await
}

/// Fast retries for tests.
pub fn fast() -> SinkConfig {
    SinkConfig {
        retry_max: 3,
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        batch_max: 16,
        ..SinkConfig::default()
    }
}

pub fn rec(s: &str) -> Record {
    Record::new(s.as_bytes().to_vec())
}

/// `n` records, the `i`th with the payload `payload(i)` and the token `i`.
pub fn numbered(n: u32, payload: impl Fn(u32) -> String) -> Vec<(Record, Vec<u32>)> {
    (0..n).map(|i| (rec(&payload(i)), vec![i])).collect()
}

/// Waits until `f` holds, or panics after 10 s with `what`.
pub async fn eventually(what: &str, f: impl FnMut() -> bool) {
    eventually_within(what, 10, f).await
}

/// Waits until `f` holds, or panics after `secs` seconds with `what`.
pub async fn eventually_within(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The log's sled trees in seq order: `log` (what a directory written
/// before generations holds), then each generation, `log.<first seq in 20
/// digits>`, whose names sort as their seqs do.
pub fn log_trees(db: &sled::Db) -> Vec<sled::Tree> {
    let mut gens: Vec<Vec<u8>> = db
        .tree_names()
        .into_iter()
        .map(|n| n.to_vec())
        .filter(|n| n.starts_with(b"log."))
        .collect();
    gens.sort();
    std::iter::once(db.open_tree("log").unwrap())
        .chain(gens.into_iter().map(|n| db.open_tree(n).unwrap()))
        .collect()
}

/// The log tree that holds the value keyed `first`.
pub fn log_tree_with(db: &sled::Db, first: u64) -> sled::Tree {
    log_trees(db)
        .into_iter()
        .find(|t| t.contains_key(first.to_be_bytes()).unwrap())
        .unwrap_or_else(|| panic!("no log tree holds a value at seq {first}"))
}

/// The log tree a value keyed `seq` belongs in: the last whose first seq
/// (in its name; 0 for `log`) is at or below it.
pub fn log_tree_for(db: &sled::Db, seq: u64) -> sled::Tree {
    log_trees(db)
        .into_iter()
        .filter(|t| {
            let name = t.name();
            let start = name
                .strip_prefix(b"log.")
                .map_or(0, |d| std::str::from_utf8(d).unwrap().parse().unwrap());
            start <= seq
        })
        .last()
        .unwrap()
}

/// sled opened directly on a data directory, with the segment size it was
/// made with (sled refuses another), to plant bad values in tests.
pub fn raw_sled(data: &std::path::Path) -> sled::Db {
    // `conf` ends in a binary checksum: read it as bytes, not as a String.
    let conf = String::from_utf8_lossy(&std::fs::read(data.join("conf")).unwrap()).into_owned();
    let mut c = sled::Config::new().path(data);
    if let Some(size) = conf
        .lines()
        .find_map(|l| l.strip_prefix("segment_size:"))
        .and_then(|v| v.trim().parse().ok())
    {
        c = c.segment_size(size);
    }
    c.open().unwrap()
}

/// Drops `ob` without a shutdown and waits until its data directory is
/// released. This is **not** a crash: the tasks stop where they stand and
/// nothing drains, but sled flushes what it holds when its last handle goes,
/// so it is a clean, undrained stop. Crash tests kill a child process
/// (`tests/crash.rs`, `tests/kill9.rs`) or cut simulated power
/// (`tests/powercut.rs`).
pub async fn abandon<T: Send + 'static>(ob: outbox::Outbox<T>, data: &std::path::Path) {
    drop(ob);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while outbox::inspect::is_locked(data) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !outbox::inspect::is_locked(data),
        "the data directory is still locked 10 s after the drop"
    );
}

/// Receives every token until the channel closes.
pub async fn drain_acks<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(t) = rx.recv().await {
        out.push(t);
    }
    out
}

/// Waits for `n` tokens, or panics after 10 s.
pub async fn acks_n<T: std::fmt::Debug>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    n: usize,
) -> Vec<T> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(t)) => out.push(t),
            other => panic!("waited for {n} acks, got {} then {other:?}", out.len()),
        }
    }
    out
}
