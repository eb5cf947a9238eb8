//! The oracle: what the journals say happened, checked against the store
//! as a crash left it (opened read-only with `Store::inspect`, before any
//! restart could repair it).
//!
//! While reading a run's journal:
//! - a receipt's seq is above every seq any earlier run saw (seqs are never
//!   reused across a crash), its delivery id is `(log id, seq)`, and no seq
//!   is receipted twice;
//! - an ack token is released once, by the run that dispatched it;
//! - every attempt of a sink is at or above that sink's durable offset at
//!   the kill before (a restart resumes there), and under strict ordering
//!   a run's successful deliveries to a sink are in strictly increasing seq
//!   order, as are the first successful deliveries over all runs;
//! - a delivery carries its receipt's delivery id and record; a redriven
//!   copy carries its origin's, reaches only the sink that dead-lettered it, and
//!   only after that sink dead-lettered it.
//!
//! After each kill, and after the final drained close, against the store:
//! - the store verifies (chain, offsets, witness) and offsets never go back;
//! - every released ack's record is passed by every sink's **durable**
//!   offset or is in its durable DLQ, and every sink's journal shows it
//!   delivered or dead-lettered (the sinks' output is the synced journal);
//! - every receipted seq is in the log with its record and delivery id if
//!   any sink's offset is at or below it, and every sink whose offset has
//!   passed it delivered or dead-lettered it;
//! - a dead-lettered record whose sink's offset has passed it is in the DLQ, or in
//!   the log or a delivery as a redriven copy: a crash loses no DLQ entry;
//! - every DLQ entry is a record its sink dead-lettered, under its delivery id;
//! - the next seq the store will assign is above every seq seen.
//!
//! After the drained close: both offsets are at the log's end, every
//! receipted record was delivered to every sink under its receipt's
//! delivery id (or is in that sink's DLQ, or its redriven copy was
//! delivered), and every token of the last run was released.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use outbox::DeliveryId;
use outbox::inspect::Inspector;

use crate::child::ID_STRIDE;
use crate::harness::SINKS;
use crate::journal::{Attempt, Line, Outcome};

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// What a run did, for the test's summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub runs: u64,
    pub kills: u64,
    pub receipted: u64,
    pub acked: u64,
    pub delivered: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    pub redriven: u64,
}

impl Stats {
    /// Adds `o`'s figures to these.
    pub fn add(&mut self, o: &Stats) {
        self.runs += o.runs;
        self.kills += o.kills;
        self.receipted += o.receipted;
        self.acked += o.acked;
        self.delivered += o.delivered;
        self.duplicates += o.duplicates;
        self.dead_lettered += o.dead_lettered;
        self.redriven += o.redriven;
    }
}

/// One receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Receipt {
    did: DeliveryId,
    id: u64,
}

/// One record in the store's log.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    id: u64,
    did: DeliveryId,
    target: Option<usize>,
}

/// The store as inspection found it.
struct Durable {
    log_id: uuid::Uuid,
    offsets: [u64; 2],
    dlq: BTreeMap<(usize, u64), DeliveryId>,
    log: BTreeMap<u64, Stored>,
    next: u64,
    end: u64,
}

#[derive(Default)]
pub struct Oracle {
    log_id: Option<uuid::Uuid>,
    receipts: BTreeMap<u64, Receipt>,
    /// A plain (not redriven) record's seq, by record id.
    seq_of: BTreeMap<u64, u64>,
    /// Released tokens, with the run that released them.
    acked: BTreeMap<u64, u32>,
    /// Successful deliveries by `(sink, seq)`: the delivery id each time.
    ok: BTreeMap<(usize, u64), Vec<DeliveryId>>,
    /// `(sink, seq)` pairs a sink gave its terminal failure.
    dead_lettered: BTreeSet<(usize, u64)>,
    /// The sink each redriven copy's seq is aimed at.
    copies: BTreeMap<u64, usize>,
    /// Per sink, the last first-time successful delivery.
    last_first: [Option<u64>; 2],
    /// Every seq seen in an earlier run's journal is below this.
    seen_below: u64,
    /// Durable offsets at the last kill.
    offsets: [u64; 2],
    /// Journal lines already read.
    consumed: usize,
    pub stats: Stats,
}

/// The state of the run being read.
#[derive(Default)]
struct RunState {
    opened: bool,
    ops_done: bool,
    closed: bool,
    receipted: BTreeSet<u64>,
    last_ok: [Option<u64>; 2],
    seen_below: u64,
}

impl Oracle {
    /// Reads the lines run `run` added to the journal and checks them; then
    /// checks the store in `data` as it was left. `closed`: the run ended in
    /// a drained close rather than a kill.
    ///
    /// # Errors
    /// The first property that does not hold.
    pub fn after_run(
        &mut self,
        run: u32,
        lines: &[(u32, Line)],
        data: &Path,
        closed: bool,
    ) -> Result<(), String> {
        let new = lines.get(self.consumed..).unwrap_or(&[]);
        self.consumed = lines.len();
        // The store first: its log id is what every delivery id must name
        // (a sink can be handed a record before the open line is written).
        let durable = inspect(data)?;
        ensure!(
            *self.log_id.get_or_insert(durable.log_id) == durable.log_id,
            "after run {run} the store has another log id: {}",
            durable.log_id
        );
        let mut rs = RunState {
            seen_below: self.seen_below,
            ..RunState::default()
        };
        for (i, (r, line)) in new.iter().enumerate() {
            ensure!(*r == run, "run {run} journal holds a line of run {r}");
            self.line(run, &mut rs, line)
                .map_err(|e| format!("run {run}, its journal line {}: {e}", i + 1))?;
        }
        ensure!(!new.is_empty(), "run {run} journaled nothing");
        self.stats.runs += 1;
        self.check_store(&durable, &rs)
            .map_err(|e| format!("after run {run}: {e}"))?;
        if closed {
            ensure!(
                rs.ops_done && rs.closed,
                "run {run} did not finish its drain"
            );
            self.check_drained(&durable, &rs)?;
        } else {
            self.stats.kills += 1;
        }
        self.offsets = durable.offsets;
        self.seen_below = rs.seen_below.max(durable.next);
        Ok(())
    }

    fn did_ok(&self, did: &DeliveryId) -> Result<(), String> {
        ensure!(
            Some(did.log_id) == self.log_id,
            "delivery id {did} names another log than {:?}",
            self.log_id
        );
        Ok(())
    }

    fn line(&mut self, run: u32, rs: &mut RunState, line: &Line) -> Result<(), String> {
        match line {
            Line::Open { log_id, head } => {
                ensure!(!rs.opened, "opened twice");
                rs.opened = true;
                let id = uuid::Uuid::parse_str(log_id).map_err(|e| format!("log id: {e}"))?;
                ensure!(Some(id) == self.log_id, "opened with log id {id}");
                ensure!(
                    *head >= self.seen_below,
                    "opened at head {head}, though seqs up to {} were seen",
                    self.seen_below
                );
            }
            Line::Receipt { seq, did, id } => {
                self.did_ok(did)?;
                ensure!(
                    did.seq.0 == *seq,
                    "receipt for seq {seq} has delivery id {did}"
                );
                ensure!(
                    *seq >= self.seen_below,
                    "seq {seq} receipted again: an earlier run saw seqs up to {}",
                    self.seen_below
                );
                ensure!(
                    id / ID_STRIDE == u64::from(run),
                    "receipt of record {id}, not one of this run"
                );
                let r = Receipt { did: *did, id: *id };
                ensure!(
                    self.receipts.insert(*seq, r).is_none(),
                    "seq {seq} receipted twice"
                );
                if let Some(s) = self.seq_of.insert(*id, *seq) {
                    ensure!(
                        s == *seq,
                        "record {id} receipted as {seq}, delivered as {s}"
                    );
                }
                rs.receipted.insert(*id);
                rs.seen_below = rs.seen_below.max(seq + 1);
                self.stats.receipted += 1;
            }
            Line::Ack { id } => {
                ensure!(
                    id / ID_STRIDE == u64::from(run),
                    "token {id} released by run {run}, which did not dispatch it"
                );
                ensure!(
                    self.acked.insert(*id, run).is_none(),
                    "token {id} released twice"
                );
                self.stats.acked += 1;
            }
            Line::Handed(a) => self.handed(rs, a)?,
            Line::Redrive { moved, .. } => self.stats.redriven += *moved as u64,
            Line::OpsDone => rs.ops_done = true,
            Line::Closed => {
                ensure!(rs.ops_done, "closed before the last operation");
                rs.closed = true;
            }
        }
        Ok(())
    }

    fn handed(&mut self, rs: &mut RunState, a: &Attempt) -> Result<(), String> {
        let Attempt {
            sink,
            seq,
            ref did,
            id,
            outcome,
        } = *a;
        let name = SINKS.get(sink).ok_or("unknown sink")?;
        self.did_ok(did)?;
        rs.seen_below = rs.seen_below.max(seq + 1);
        ensure!(
            seq >= self.offsets[sink],
            "sink {name} was handed seq {seq}, below its durable offset {} at the last kill",
            self.offsets[sink]
        );
        let origin = did.seq.0;
        if origin == seq {
            if let Some(s) = self.seq_of.insert(id, seq) {
                ensure!(s == seq, "record {id} at seq {s}, now handed as {seq}");
            }
            if let Some(r) = self.receipts.get(&seq) {
                ensure!(
                    r.did == *did && r.id == id,
                    "sink {name} was handed seq {seq} as record {id} ({did}); its receipt says record {} ({})",
                    r.id,
                    r.did
                );
            }
        } else {
            ensure!(
                origin < seq,
                "sink {name}: seq {seq} carries a later seq's id {did}"
            );
            ensure!(
                self.dead_lettered.contains(&(sink, origin)),
                "sink {name} was handed a redriven copy (seq {seq}) of {origin}, which it never dead-lettered"
            );
            ensure!(
                *self.copies.entry(seq).or_insert(sink) == sink,
                "redriven copy {seq} handed to two sinks"
            );
            ensure!(
                self.seq_of.get(&id).is_none_or(|s| *s == origin),
                "redriven copy {seq} of {origin} holds record {id}, which is at {:?}",
                self.seq_of.get(&id)
            );
            ensure!(
                outcome == Outcome::Ok,
                "a redriven copy is always delivered"
            );
        }
        match outcome {
            Outcome::Ok => {
                ensure!(
                    rs.last_ok[sink].is_none_or(|l| l < seq),
                    "sink {name} got seq {seq} after seq {:?} in the same run (ordering = strict)",
                    rs.last_ok[sink]
                );
                rs.last_ok[sink] = Some(seq);
                let times = self.ok.entry((sink, seq)).or_default();
                times.push(*did);
                if times.len() == 1 {
                    ensure!(
                        self.last_first[sink].is_none_or(|l| l < seq),
                        "sink {name} got seq {seq} for the first time after seq {:?} (ordering = strict)",
                        self.last_first[sink]
                    );
                    self.last_first[sink] = Some(seq);
                    self.stats.delivered += 1;
                } else {
                    self.stats.duplicates += 1;
                }
            }
            Outcome::Retry => {}
            Outcome::Terminal => {
                self.dead_lettered.insert((sink, seq));
            }
        }
        Ok(())
    }

    /// Whether `sink`'s journal shows `seq` delivered or dead-lettered.
    fn done(&self, sink: usize, seq: u64) -> bool {
        self.ok.contains_key(&(sink, seq)) || self.dead_lettered.contains(&(sink, seq))
    }

    fn check_store(&self, d: &Durable, rs: &RunState) -> Result<(), String> {
        for (k, name) in SINKS.iter().enumerate() {
            ensure!(
                d.offsets[k] >= self.offsets[k],
                "sink {name}'s durable offset went back from {} to {}",
                self.offsets[k],
                d.offsets[k]
            );
            ensure!(
                d.offsets[k] <= d.end,
                "sink {name}'s offset {} is past the log's end {}",
                d.offsets[k],
                d.end
            );
        }
        ensure!(
            d.next >= rs.seen_below,
            "the store would assign seq {} next, though seqs up to {} were seen",
            d.next,
            rs.seen_below - 1
        );
        // Released acks against the durable offsets and DLQ.
        for id in self.acked.keys() {
            let seq = *self
                .seq_of
                .get(id)
                .ok_or_else(|| format!("token {id} released for a record no sink was handed"))?;
            for (k, name) in SINKS.iter().enumerate() {
                ensure!(
                    d.offsets[k] > seq || d.dlq.contains_key(&(k, seq)),
                    "token {id} (seq {seq}) released, but sink {name}'s durable offset is {} and its DLQ lacks it",
                    d.offsets[k]
                );
                ensure!(
                    self.done(k, seq),
                    "token {id} (seq {seq}) released, but sink {name} never delivered or dead-lettered it"
                );
            }
        }
        let slowest = d.offsets.iter().copied().min().unwrap_or(0);
        for (seq, r) in &self.receipts {
            if *seq >= slowest {
                let want = Stored {
                    id: r.id,
                    did: r.did,
                    target: None,
                };
                ensure!(
                    d.log.get(seq) == Some(&want),
                    "receipted seq {seq} (record {}) is not passed by every sink, yet the log holds {:?}",
                    r.id,
                    d.log.get(seq)
                );
            }
        }
        // Every plain record a sink's offset passed was delivered or dead-lettered.
        for seq in self.seq_of.values() {
            for (k, name) in SINKS.iter().enumerate() {
                if d.offsets[k] > *seq {
                    ensure!(
                        self.done(k, *seq),
                        "sink {name}'s durable offset {} passed seq {seq}, which it never delivered or dead-lettered",
                        d.offsets[k]
                    );
                }
            }
        }
        // No DLQ entry lost.
        for (k, seq) in &self.dead_lettered {
            if d.offsets[*k] <= *seq || d.dlq.contains_key(&(*k, *seq)) {
                continue;
            }
            let copy_in_log = d
                .log
                .iter()
                .any(|(s, e)| *s > *seq && e.target == Some(*k) && e.did.seq.0 == *seq);
            let copy_delivered = self
                .ok
                .range((*k, seq + 1)..(*k, u64::MAX))
                .any(|(_, ids)| ids.iter().any(|i| i.seq.0 == *seq));
            ensure!(
                copy_in_log || copy_delivered,
                "sink {} dead-lettered seq {seq} and its offset passed it, but it is neither in the DLQ nor redriven",
                SINKS[*k]
            );
        }
        for ((k, seq), did) in &d.dlq {
            ensure!(
                self.dead_lettered.contains(&(*k, *seq)),
                "the DLQ holds {}/{seq}, which the sink never dead-lettered",
                SINKS[*k]
            );
            ensure!(
                did.seq.0 == *seq && self.receipts.get(seq).is_none_or(|r| r.did == *did),
                "the DLQ holds {}/{seq} under delivery id {did}",
                SINKS[*k]
            );
        }
        Ok(())
    }

    fn check_drained(&mut self, d: &Durable, rs: &RunState) -> Result<(), String> {
        for (k, name) in SINKS.iter().enumerate() {
            ensure!(
                d.offsets[k] == d.end,
                "after the drain, sink {name}'s offset is {}, the log ends at {}",
                d.offsets[k],
                d.end
            );
        }
        for (seq, r) in &self.receipts {
            for (k, name) in SINKS.iter().enumerate() {
                let delivered = self
                    .ok
                    .get(&(k, *seq))
                    .is_some_and(|ids| ids.iter().all(|i| *i == r.did));
                let in_dlq = d.dlq.get(&(k, *seq)) == Some(&r.did);
                let redriven = self
                    .ok
                    .range((k, seq + 1)..(k, u64::MAX))
                    .any(|(_, ids)| ids.contains(&r.did));
                ensure!(
                    delivered || in_dlq || redriven,
                    "receipted seq {seq} (record {}) never reached sink {name} under {}",
                    r.id,
                    r.did
                );
            }
        }
        let missing: Vec<&u64> = rs
            .receipted
            .iter()
            .filter(|id| !self.acked.contains_key(id))
            .collect();
        ensure!(
            missing.is_empty(),
            "tokens of the drained run never released: {missing:?}"
        );
        self.stats.dead_lettered = d.dlq.len() as u64;
        Ok(())
    }
}

/// Opens the stopped store read-only and reads offsets, DLQ and log.
fn inspect(data: &Path) -> Result<Durable, String> {
    // Locked waited out briefly, as in the child (`child.rs`): a sibling
    // case's child forked while this process held the lock shares it until
    // it execs.
    let mut tries = 0;
    let store = loop {
        match Inspector::open(data) {
            Err(e) if e.is_locked() && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            r => break r.map_err(|e| format!("inspect: {e}"))?,
        }
    };
    let verified = store
        .verify()
        .map_err(|e| format!("the store does not verify after the crash: {e}"))?;
    let sink_of = |name: &str| SINKS.iter().position(|s| *s == name);
    let mut offsets = [None; 2];
    for o in store.offsets().map_err(|e| format!("offsets: {e}"))? {
        if let Some(k) = sink_of(o.sink.as_str()) {
            offsets[k] = Some(o.offset.0);
        }
    }
    let [Some(a), Some(b)] = offsets else {
        return Err(format!("a sink's offset is missing: {offsets:?}"));
    };
    let mut dlq = BTreeMap::new();
    let dead = store.dead_letters();
    for e in dead.list(None).map_err(|e| format!("dlq: {e}"))? {
        let k = sink_of(&e.sink).ok_or_else(|| format!("DLQ of unknown sink {}", e.sink))?;
        dlq.insert((k, e.seq.0), e.delivery_id);
    }
    let mut log = BTreeMap::new();
    for e in store.records(outbox::Seq(0)) {
        let e = e.map_err(|e| format!("log: {e}"))?;
        let seq = e.seq.0;
        let (id, _) = crate::harness::parse_payload(&e.record.payload)
            .ok_or_else(|| format!("log seq {seq} holds an unreadable payload"))?;
        let target = match &e.target {
            Some(t) => Some(sink_of(t).ok_or_else(|| format!("target {t}"))?),
            None => None,
        };
        log.insert(
            seq,
            Stored {
                id,
                did: e.delivery_id,
                target,
            },
        );
    }
    Ok(Durable {
        log_id: store.log_id(),
        offsets: [a, b],
        dlq,
        log,
        next: verified.next.0,
        end: verified.extent.end.0,
    })
}
