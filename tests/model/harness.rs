//! The model harness: one operation sequence, run against the real engine on
//! a real sled directory, checked against a plain model.
//!
//! Shared by `tests/model.rs` (proptest, every test run) and
//! `fuzz/fuzz_targets/ops.rs` (cargo-fuzz), so both check the same
//! properties:
//! - every receipt has exactly the seq the model predicts: seqs are
//!   contiguous, strictly increasing and never reused, across kills, closes,
//!   redrives and truncation;
//! - an ack token is released at most once, and only when every sink has the
//!   record in its durable output (committed) or has given it its terminal
//!   failure (it goes to the DLQ);
//! - once settled, every token dispatched in the current session has been
//!   released;
//! - each sink's durable output, first occurrences in order, is exactly the
//!   model's list of `(seq, delivery id, payload)`; a record appears more
//!   than once only at or after the durable offset the sink had when the
//!   process was killed, and at most once more per such kill;
//! - the DLQ is exactly the model's after a settle, and survives a restart
//!   (a subset of it after a kill, equal to it after a drained close);
//! - a redrive moves exactly the sink's DLQ entries, in seq order, to new
//!   seqs that keep their delivery id, and only that sink delivers them;
//! - at the end, what is left of the log decodes to the model's records.
//!
//! The model does not depend on timing: a record's fate at each sink is
//! written into its payload (`r<id>:<fate a><fate b>`), so "deliver ok",
//! "fail", "fail permanently" are properties of the record, and the model
//! predicts the state every sink reaches once it has caught up.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use outbox::sink::{DeliveryContext, DeliveryError, DeliveryResult};

use crate::sinks::{Decide, Decided};
use outbox::{Outbox, OutboxConfig, Record, SinkConfig, SinkName};

/// The sinks every session configures, by index.
pub const SINKS: [&str; 2] = ["a", "b"];
/// Retries after the first attempt; a record that keeps failing is dead-lettered
/// after `RETRY_MAX + 1` attempts.
pub const RETRY_MAX: u32 = 2;

/// What one sink answers for one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Delivered at the first attempt.
    Ok,
    /// Fails transiently this many times (1..=RETRY_MAX), then delivered.
    Transient(u8),
    /// Fails permanently: dead-lettered at once.
    Permanent,
    /// Fails transiently every time: dead-lettered after the retries.
    Exhaust,
    /// Panics every time: dead-lettered after the retries.
    Panic,
}

impl Fate {
    /// Its letter in a payload (`r<id>:<a><b>`).
    pub fn code(self) -> char {
        match self {
            Fate::Ok => 'o',
            Fate::Transient(n) => char::from(b'0' + n.clamp(1, RETRY_MAX as u8)),
            Fate::Permanent => 'p',
            Fate::Exhaust => 'x',
            Fate::Panic => '!',
        }
    }

    /// The fate a payload letter stands for.
    pub fn from_code(c: u8) -> Option<Fate> {
        match c {
            b'o' => Some(Fate::Ok),
            b'1'..=b'9' => Some(Fate::Transient(c - b'0')),
            b'p' => Some(Fate::Permanent),
            b'x' => Some(Fate::Exhaust),
            b'!' => Some(Fate::Panic),
            _ => None,
        }
    }

    /// Whether the record ends in this sink's DLQ.
    pub fn dead_letters(self) -> bool {
        matches!(self, Fate::Permanent | Fate::Exhaust | Fate::Panic)
    }

    /// Attempts made before it is dead-lettered.
    fn attempts(self) -> u32 {
        if self == Fate::Permanent {
            1
        } else {
            RETRY_MAX + 1
        }
    }
}

/// One step of a sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// One `dispatch` (one record) or `dispatch_many` call, each record with
    /// one token and its fate at each sink. Returns at the receipt, without
    /// waiting for delivery.
    Dispatch(Vec<[Fate; 2]>),
    /// Let delivery get partway, in ms.
    Sleep(u8),
    /// Wait until every sink has caught up, then check everything.
    Settle,
    /// Drop the handle without a shutdown: every task stops where it
    /// stands (an undrained stop, not a crash: sled writes what it holds
    /// when dropped); reopen.
    Kill,
    /// `shutdown()` with a drain; reopen.
    Close,
    /// Settle, then redrive every DLQ entry of this sink.
    Redrive(usize),
    /// Settle, then give the truncator (`truncate_every` = 5 ms) time to run.
    Truncate,
}

/// Knobs that differ between the proptest and the fuzz runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Allow [`Fate::Panic`]; libFuzzer aborts on any panic, even a caught
    /// one, so the fuzz target maps it to [`Fate::Exhaust`].
    pub allow_panics: bool,
    /// How long a settle may take before it counts as a failure.
    pub settle_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allow_panics: true,
            settle_timeout: Duration::from_secs(20),
        }
    }
}

/// What a run did, for the figures in `docs/testing.md`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub dispatched: u64,
    pub acked: u64,
    pub kills: u64,
    pub closes: u64,
    pub redriven: u64,
    pub dead_lettered: u64,
    pub duplicates: u64,
}

/// One successful delivery, as the sink saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub seq: u64,
    pub origin: u64,
    pub id: u64,
    pub payload: Vec<u8>,
}

/// What one model sink has seen. Survives the sink (and the outbox): a
/// restart gives the new sink the same log.
#[derive(Debug, Default)]
pub struct SinkLog {
    /// Delivered since the last `commit`; lost on a kill, like a file
    /// sink's unsynced buffer.
    pending: Vec<Delivered>,
    /// The durable output: every delivery a `commit` covered.
    pub committed: Vec<Delivered>,
    /// Record ids whose last attempt ended in a dead-letter.
    pub terminal: BTreeSet<u64>,
    /// Transient failures so far, by delivery origin.
    failures: HashMap<u64, u32>,
    /// Payloads the sink could not read (a harness or engine bug).
    pub garbage: Vec<Vec<u8>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Parses `r<id>:<fates>`.
pub fn parse_payload(p: &[u8]) -> Option<(u64, [Fate; 2])> {
    let s = std::str::from_utf8(p).ok()?;
    let (id, fates) = s.strip_prefix('r')?.split_once(':')?;
    let f = fates.as_bytes();
    if f.len() != 2 {
        return None;
    }
    Some((
        id.parse().ok()?,
        [Fate::from_code(f[0])?, Fate::from_code(f[1])?],
    ))
}

/// The payload of record `id`: its fate at each sink travels with it.
pub fn payload(id: u64, fates: [Fate; 2]) -> Vec<u8> {
    format!("r{id}:{}{}", fates[0].code(), fates[1].code()).into_bytes()
}

/// The panic message of [`Fate::Panic`]; the proptest silences it.
pub const PANIC_MSG: &str = "model sink panics on purpose";

/// Installs a panic hook that prints every panic but [`Fate::Panic`]'s.
pub fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if msg != PANIC_MSG {
                default(info);
            }
        }));
    });
}

struct ModelSink {
    idx: usize,
    log: Arc<Mutex<SinkLog>>,
}

impl Decide for ModelSink {
    fn decide(&self, record: &Record, ctx: &DeliveryContext<'_>) -> DeliveryResult {
        let Some((id, fates)) = parse_payload(&record.payload) else {
            lock(&self.log).garbage.push(record.payload.clone());
            return Err(DeliveryError::permanent("unreadable payload"));
        };
        let origin = ctx.delivery_id.seq.0;
        // A redriven record (its seq differs from its delivery id's)
        // is delivered: the receiver was "fixed" before the redrive.
        let fate = if ctx.seq.0 != origin {
            Fate::Ok
        } else {
            fates[self.idx]
        };
        let mut log = lock(&self.log);
        let ok = match fate {
            Fate::Ok => true,
            Fate::Transient(n) => {
                let f = log.failures.entry(origin).or_default();
                if *f < u32::from(n) {
                    *f += 1;
                    false
                } else {
                    true
                }
            }
            Fate::Permanent => {
                log.terminal.insert(id);
                return Err(DeliveryError::permanent("model: permanent"));
            }
            Fate::Exhaust | Fate::Panic => {
                if ctx.attempt > RETRY_MAX {
                    log.terminal.insert(id);
                }
                if fate == Fate::Panic {
                    drop(log);
                    panic!("{PANIC_MSG}");
                }
                false
            }
        };
        if !ok {
            return Err(DeliveryError::transient("model: transient"));
        }
        log.pending.push(Delivered {
            seq: ctx.seq.0,
            origin,
            id,
            payload: record.payload.clone(),
        });
        Ok(())
    }

    fn commit(&self) -> DeliveryResult {
        let mut log = lock(&self.log);
        let pending = std::mem::take(&mut log.pending);
        log.committed.extend(pending);
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "model"
    }
}

/// One record in the model's log.
#[derive(Clone, Debug)]
struct Entry {
    origin: u64,
    id: u64,
    fates: [Fate; 2],
    /// Set on redriven records: only that sink delivers them.
    target: Option<usize>,
}

/// The plain model: a log, a DLQ, and who holds which token.
#[derive(Default)]
struct Model {
    next_seq: u64,
    next_id: u64,
    /// The log, by seq.
    log: BTreeMap<u64, Entry>,
    /// `(sink, seq)` → origin: what the DLQ holds once every sink caught up.
    dlq: BTreeMap<(usize, u64), u64>,
    /// Tokens dispatched in this session (lost, never released, at a kill).
    session_tokens: BTreeSet<u64>,
    /// Per kill, each sink's durable offset just before it.
    kills: Vec<[u64; 2]>,
    /// The last stop was not a drained close: the next open skips the seqs
    /// that were reserved and never used (a hole), so the next seq is the
    /// reopened head, at least the model's.
    crashed: bool,
    /// Nothing was dispatched or redriven since the last settle.
    settled: bool,
}

impl Model {
    /// What sink `s` delivers once it has caught up: `(seq, origin, id)`.
    fn expected(&self, s: usize) -> Vec<(u64, u64, u64)> {
        self.log
            .iter()
            .filter(|(_, e)| match e.target {
                Some(t) => t == s,
                None => !e.fates[s].dead_letters(),
            })
            .map(|(seq, e)| (*seq, e.origin, e.id))
            .collect()
    }
}

/// Shared with the task that receives acks.
#[derive(Default)]
struct AckState {
    released: BTreeSet<u64>,
    violations: Vec<String>,
}

struct Session {
    outbox: Outbox<u64>,
    acks: tokio::task::JoinHandle<()>,
}

struct Harness {
    dir: tempfile::TempDir,
    opts: Options,
    logs: [Arc<Mutex<SinkLog>>; 2],
    model: Model,
    acks: Arc<Mutex<AckState>>,
    log_id: Option<String>,
    stats: Stats,
}

/// Every model sink's configuration: quick retries, small batches.
pub fn sink_cfg() -> SinkConfig {
    SinkConfig {
        retry_max: RETRY_MAX,
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(2),
        batch_max: 4,
        ..SinkConfig::default()
    }
}

/// The engine's configuration: frequent truncation, small log values.
pub fn engine_cfg() -> OutboxConfig {
    OutboxConfig {
        truncate_every: Duration::from_millis(5),
        cache_bytes: 1 << 20,
        tail_cache_bytes: 1 << 16,
        // Small values, so one sequence spans many log batches.
        max_batch_records: 3,
        ..OutboxConfig::default()
    }
}

/// The name of sink `s`.
pub fn name(s: usize) -> SinkName {
    SinkName::new(SINKS[s]).expect("valid sink name")
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Runs `ops` on a fresh data directory and checks every step.
///
/// # Errors
/// A description of the first property that does not hold.
pub async fn run(ops: &[Op], opts: &Options) -> Result<Stats, String> {
    let base = std::path::Path::new("/dev/shm");
    let dir = if base.is_dir() {
        tempfile::tempdir_in(base)
    } else {
        tempfile::tempdir()
    }
    .map_err(|e| format!("tempdir: {e}"))?;
    let mut h = Harness {
        dir,
        opts: opts.clone(),
        logs: [Arc::default(), Arc::default()],
        model: Model {
            settled: true,
            ..Model::default()
        },
        acks: Arc::default(),
        log_id: None,
        stats: Stats::default(),
    };
    let mut session = h.open().await?;
    for (i, op) in ops.iter().enumerate() {
        session = h
            .step(session, op)
            .await
            .map_err(|e| format!("op {i} ({op:?}): {e}"))?;
    }
    session = h.step(session, &Op::Settle).await?;
    h.close(session).await?;
    h.final_check()?;
    Ok(h.stats)
}

impl Harness {
    async fn open(&mut self) -> Result<Session, String> {
        let path = self.dir.path().join("data");
        let logs = self.logs.clone();
        let build = || {
            let mut b = Outbox::<u64>::builder(&path).config(engine_cfg());
            for (i, log) in logs.iter().enumerate() {
                b = b.sink(
                    SINKS[i],
                    Decided(ModelSink {
                        idx: i,
                        log: log.clone(),
                    }),
                    sink_cfg(),
                );
            }
            b
        };
        let (outbox, mut rx) = build().open().await.map_err(|e| format!("open: {e}"))?;
        let head = outbox.status().map_err(|e| format!("status: {e}"))?.head;
        if self.model.crashed {
            ensure!(
                head >= self.model.next_seq,
                "reopened at head {head}, below the model's next seq {}",
                self.model.next_seq
            );
            self.model.next_seq = head;
            self.model.crashed = false;
        } else {
            ensure!(
                head == self.model.next_seq,
                "reopened after a drained close at head {head}, the model says {}",
                self.model.next_seq
            );
        }
        let id = outbox.log_id().simple().to_string();
        match &self.log_id {
            None => self.log_id = Some(id),
            Some(old) => ensure!(*old == id, "log id changed across a restart"),
        }
        let state = self.acks.clone();
        let logs = self.logs.clone();
        let acks = tokio::spawn(async move {
            while let Some(tok) = rx.recv().await {
                // Checked the moment the token arrives: by then every sink
                // must hold the record durably or have dead-lettered it.
                let missing: Vec<&str> = logs
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| {
                        let l = lock(l);
                        !(l.terminal.contains(&tok) || l.committed.iter().any(|d| d.id == tok))
                    })
                    .map(|(i, _)| SINKS[i])
                    .collect();
                let mut st = lock(&state);
                if !missing.is_empty() {
                    st.violations.push(format!(
                        "token {tok} released before sinks {missing:?} had it durably"
                    ));
                }
                if !st.released.insert(tok) {
                    st.violations.push(format!("token {tok} released twice"));
                }
            }
        });
        let s = Session { outbox, acks };
        // The DLQ survives the restart: all of it after a settled stop, a
        // part of it (the rest is dead-lettered again later) after a kill.
        self.check_dlq(&s.outbox, self.model.settled)?;
        Ok(s)
    }

    async fn step(&mut self, s: Session, op: &Op) -> Result<Session, String> {
        self.check_violations()?;
        match op {
            Op::Dispatch(recs) => self.dispatch(&s, recs).await?,
            Op::Sleep(ms) => tokio::time::sleep(Duration::from_millis(u64::from(*ms))).await,
            Op::Settle => self.settle(&s).await?,
            Op::Kill => {
                let st = s.outbox.status().map_err(|e| format!("status: {e}"))?;
                let offsets = [st.sinks[0].offset, st.sinks[1].offset];
                self.model.kills.push(offsets);
                // Not a crash (sled flushes what it holds when its last
                // handle goes): an undrained stop. Real crashes are in
                // tests/crash.rs, tests/kill9.rs and tests/powercut.rs.
                let data = self.dir.path().join("data");
                drop(s.outbox);
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while outbox::inspect::is_locked(&data) && std::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let _ = s.acks.await;
                self.model.crashed = true;
                for l in &self.logs {
                    lock(l).pending.clear();
                }
                // Tokens not released by now are never released.
                self.model.session_tokens.clear();
                self.stats.kills += 1;
                return self.open().await;
            }
            Op::Close => {
                self.close(s).await?;
                return self.open().await;
            }
            Op::Redrive(sink) => {
                let sink = sink % SINKS.len();
                self.settle(&s).await?;
                let chosen: Vec<(u64, u64)> = self
                    .model
                    .dlq
                    .iter()
                    .filter(|((k, _), _)| *k == sink)
                    .map(|((_, seq), origin)| (*seq, *origin))
                    .collect();
                let n = s
                    .outbox
                    .dlq_redrive(&name(sink), None)
                    .await
                    .map_err(|e| format!("redrive: {e}"))?;
                ensure!(
                    n == chosen.len(),
                    "redrive moved {n} entries, the model has {}",
                    chosen.len()
                );
                for (seq, origin) in chosen {
                    let e = self
                        .model
                        .log
                        .get(&seq)
                        .cloned()
                        .ok_or("DLQ seq not in model")?;
                    self.model.dlq.remove(&(sink, seq));
                    let at = self.model.next_seq;
                    self.model.next_seq += 1;
                    self.model.log.insert(
                        at,
                        Entry {
                            origin,
                            target: Some(sink),
                            ..e
                        },
                    );
                    self.stats.redriven += 1;
                }
                if n > 0 {
                    self.model.settled = false;
                }
            }
            Op::Truncate => {
                self.settle(&s).await?;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        Ok(s)
    }

    /// `shutdown()` with a drain: everything delivered, every token
    /// released.
    async fn close(&mut self, s: Session) -> Result<(), String> {
        let report = s
            .outbox
            .shutdown(Duration::from_secs(20))
            .await
            .map_err(|e| format!("shutdown: {e}"))?;
        ensure!(report.drained, "shutdown did not drain: {report:?}");
        let _ = s.acks.await;
        self.check_violations()?;
        self.check_tokens_released()?;
        self.model.settled = true;
        self.check_sink_outputs()?;
        self.model.session_tokens.clear();
        self.stats.closes += 1;
        Ok(())
    }

    async fn dispatch(&mut self, s: &Session, recs: &[[Fate; 2]]) -> Result<(), String> {
        if recs.is_empty() {
            return Ok(());
        }
        let mut items = Vec::with_capacity(recs.len());
        let mut planned = Vec::with_capacity(recs.len());
        for f in recs {
            let mut fates = *f;
            if !self.opts.allow_panics {
                for x in &mut fates {
                    if *x == Fate::Panic {
                        *x = Fate::Exhaust;
                    }
                }
            }
            let id = self.model.next_id;
            self.model.next_id += 1;
            items.push((Record::new(payload(id, fates)), vec![id]));
            planned.push((id, fates));
        }
        let seqs: Vec<u64> = if items.len() == 1 {
            let (r, t) = items.pop().ok_or("no item")?;
            vec![
                s.outbox
                    .dispatch(r, t)
                    .await
                    .map_err(|e| format!("dispatch: {e}"))?
                    .seq
                    .0,
            ]
        } else {
            s.outbox
                .dispatch_many(items)
                .await
                .map_err(|e| format!("dispatch_many: {e}"))?
                .iter()
                .map(|r| r.seq.0)
                .collect()
        };
        let want: Vec<u64> =
            (self.model.next_seq..self.model.next_seq + planned.len() as u64).collect();
        ensure!(
            seqs == want,
            "receipts have seqs {seqs:?}, the model says {want:?}"
        );
        for ((id, fates), seq) in planned.into_iter().zip(seqs) {
            self.model.log.insert(
                seq,
                Entry {
                    origin: seq,
                    id,
                    fates,
                    target: None,
                },
            );
            for (i, f) in fates.iter().enumerate() {
                if f.dead_letters() {
                    self.model.dlq.insert((i, seq), seq);
                }
            }
            self.model.session_tokens.insert(id);
            self.stats.dispatched += 1;
        }
        self.model.next_seq += recs.len() as u64;
        self.model.settled = false;
        Ok(())
    }

    /// Waits until every sink caught up, every DLQ entry is dead-lettered and
    /// every token of this session is released, then checks everything.
    async fn settle(&mut self, s: &Session) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.opts.settle_timeout;
        loop {
            let st = s.outbox.status().map_err(|e| format!("status: {e}"))?;
            ensure!(
                st.head <= self.model.next_seq,
                "head is {}, past the model's {}",
                st.head,
                self.model.next_seq
            );
            let caught_up = st.head == self.model.next_seq
                && st.sinks.iter().enumerate().all(|(i, k)| {
                    let dead_lettered = self.model.dlq.keys().filter(|(s, _)| *s == i).count();
                    k.offset == st.head && k.dlq == dead_lettered
                });
            let released = {
                let a = lock(&self.acks);
                self.model.session_tokens.is_subset(&a.released)
            };
            if caught_up && released {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "not settled after {:?}: status {st:?}, tokens released: {released}",
                    self.opts.settle_timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.model.settled = true;
        self.check_violations()?;
        self.check_dlq(&s.outbox, true)?;
        self.check_sink_outputs()
    }

    fn check_violations(&self) -> Result<(), String> {
        let a = lock(&self.acks);
        if let Some(v) = a.violations.first() {
            return Err(v.clone());
        }
        for (i, l) in self.logs.iter().enumerate() {
            if let Some(g) = lock(l).garbage.first() {
                return Err(format!(
                    "sink {} got a payload it cannot read: {g:?}",
                    SINKS[i]
                ));
            }
        }
        Ok(())
    }

    fn check_tokens_released(&self) -> Result<(), String> {
        let a = lock(&self.acks);
        let missing: Vec<&u64> = self.model.session_tokens.difference(&a.released).collect();
        ensure!(missing.is_empty(), "tokens never released: {missing:?}");
        Ok(())
    }

    /// The DLQ equals the model's (`exact`) or is a part of it.
    fn check_dlq(&self, ob: &Outbox<u64>, exact: bool) -> Result<(), String> {
        let got = ob.dlq_list(None).map_err(|e| format!("dlq_list: {e}"))?;
        let mut seen = BTreeSet::new();
        for e in &got {
            let sink = SINKS
                .iter()
                .position(|s| *s == e.sink)
                .ok_or_else(|| format!("DLQ entry for unknown sink {:?}", e.sink))?;
            let want = self.model.dlq.get(&(sink, e.seq.0));
            ensure!(
                want == Some(&e.delivery_id.seq.0),
                "DLQ holds {}/{} (origin {}), the model has {want:?}",
                e.sink,
                e.seq,
                e.delivery_id.seq
            );
            let m = self
                .model
                .log
                .get(&e.seq.0)
                .ok_or("DLQ seq not in the log model")?;
            ensure!(
                e.record.payload == payload(m.id, m.fates),
                "DLQ payload of {}/{} differs",
                e.sink,
                e.seq
            );
            let fate = m.fates[sink];
            ensure!(
                e.attempts == fate.attempts(),
                "DLQ entry {}/{} made {} attempts; a {fate:?} record makes {}",
                e.sink,
                e.seq,
                e.attempts,
                fate.attempts()
            );
            seen.insert((sink, e.seq.0));
        }
        if exact {
            let want: BTreeSet<(usize, u64)> = self.model.dlq.keys().copied().collect();
            ensure!(seen == want, "DLQ holds {seen:?}, the model has {want:?}");
        }
        Ok(())
    }

    /// Each sink's durable output against the model, once caught up.
    fn check_sink_outputs(&mut self) -> Result<(), String> {
        let mut dups = 0;
        for (i, l) in self.logs.iter().enumerate() {
            let l = lock(l);
            let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
            let mut firsts = Vec::new();
            for d in &l.committed {
                let m =
                    self.model.log.get(&d.seq).ok_or_else(|| {
                        format!("sink {} delivered unknown seq {}", SINKS[i], d.seq)
                    })?;
                ensure!(
                    d.payload == payload(m.id, m.fates) && d.origin == m.origin && d.id == m.id,
                    "sink {} got seq {} as {:?} (origin {}), the model has id {} origin {}",
                    SINKS[i],
                    d.seq,
                    String::from_utf8_lossy(&d.payload),
                    d.origin,
                    m.id,
                    m.origin
                );
                let c = counts.entry(d.seq).or_default();
                *c += 1;
                if *c == 1 {
                    firsts.push((d.seq, d.origin, d.id));
                }
            }
            let want = self.model.expected(i);
            ensure!(
                firsts == want,
                "sink {} holds {firsts:?}, the model says {want:?}",
                SINKS[i]
            );
            for (seq, n) in counts {
                let allowed = self.model.kills.iter().filter(|k| k[i] <= seq).count() as u64;
                ensure!(
                    n - 1 <= allowed,
                    "sink {} holds seq {seq} {n} times; only {allowed} kills happened at or below it",
                    SINKS[i]
                );
                dups += n - 1;
            }
        }
        self.stats.duplicates = dups;
        self.stats.dead_lettered = self.model.dlq.len() as u64;
        self.stats.acked = lock(&self.acks).released.len() as u64;
        Ok(())
    }

    /// Offline: the log's extent and every record left in it.
    fn final_check(&self) -> Result<(), String> {
        let path = self.dir.path().join("data");
        let store =
            outbox::inspect::Inspector::open(&path).map_err(|e| format!("reopen store: {e}"))?;
        store.verify().map_err(|e| format!("verify: {e}"))?;
        let ext = store.extent().map_err(|e| format!("extent: {e}"))?;
        ensure!(
            ext.end.0 == self.model.next_seq,
            "the store's next seq is {}, the model says {}",
            ext.end.0,
            self.model.next_seq
        );
        for e in store.records(outbox::Seq(0)) {
            let e = e.map_err(|e| format!("stored record: {e}"))?;
            let seq = e.seq.0;
            let m = self
                .model
                .log
                .get(&seq)
                .ok_or_else(|| format!("log holds seq {seq}, unknown to the model"))?;
            ensure!(
                e.record.payload == payload(m.id, m.fates)
                    && e.delivery_id.seq.0 == m.origin
                    && e.target.as_deref() == m.target.map(|t| SINKS[t]),
                "log record {seq} differs from the model"
            );
        }
        Ok(())
    }
}
