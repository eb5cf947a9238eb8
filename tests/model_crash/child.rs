//! The child process: opens the outbox on the test's data directory, runs
//! one segment of the plan, and journals what it sees (see `journal.rs`).
//! A crash segment then waits to be killed; the last one drains and
//! closes.
//!
//! Its sinks are the model's: a record's fate at each sink is written in
//! its payload (`r<id>:<fate a><fate b>`), and a sink journals every
//! attempt, synced, before it answers. So the journal's `ok` lines are the
//! sinks' durable output, and nothing here depends on `Sink::commit`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outbox::sink::{DeliveryContext, DeliveryError, DeliveryResult};
use outbox::{Outbox, Record};

use crate::harness::{self, Fate, PANIC_MSG, RETRY_MAX, SINKS};
use crate::journal::{Attempt, Line, Outcome, Writer};
use crate::plan::{self, Op};
use crate::sinks::{Decide, Decided};

/// Environment of a child: the test directory, its run number, its
/// segment's operations, and whether it drains at the end.
pub const ENV_DIR: &str = "OUTBOX_MODEL_CRASH_DIR";
pub const ENV_RUN: &str = "OUTBOX_MODEL_CRASH_RUN";
pub const ENV_OPS: &str = "OUTBOX_MODEL_CRASH_OPS";
pub const ENV_DRAIN: &str = "OUTBOX_MODEL_CRASH_DRAIN";

/// Record ids of run `r` start at `r * ID_STRIDE`, so that ids stay unique
/// though the parent never learns which dispatches a kill cut short.
pub const ID_STRIDE: u64 = 1_000_000;

struct JournalSink {
    idx: usize,
    journal: Arc<Writer>,
    /// Transient failures so far, by delivery id seq (this process only).
    failures: Mutex<HashMap<u64, u32>>,
}

impl Decide for JournalSink {
    fn decide(&self, record: &Record, ctx: &DeliveryContext<'_>) -> DeliveryResult {
        let (id, fates) = harness::parse_payload(&record.payload)
            .unwrap_or_else(|| panic!("unreadable payload {:?}", record.payload));
        let origin = ctx.delivery_id.seq.0;
        // A redriven record is delivered: its receiver was "fixed".
        let fate = if ctx.seq.0 != origin {
            Fate::Ok
        } else {
            fates[self.idx]
        };
        let last = ctx.attempt > RETRY_MAX;
        let outcome = match fate {
            Fate::Ok => Outcome::Ok,
            // The failures are counted per process, but the engine's
            // attempt count is durable: a record that failed before a
            // crash and fails again after it can run out of retries, and
            // is then dead-lettered like any other.
            Fate::Transient(n) => {
                let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                let f = f.entry(origin).or_default();
                if *f < u32::from(n) {
                    *f += 1;
                    if last {
                        Outcome::Terminal
                    } else {
                        Outcome::Retry
                    }
                } else {
                    Outcome::Ok
                }
            }
            Fate::Permanent => Outcome::Terminal,
            Fate::Exhaust | Fate::Panic if last => Outcome::Terminal,
            Fate::Exhaust | Fate::Panic => Outcome::Retry,
        };
        self.journal.write(&Line::Handed(Attempt {
            sink: self.idx,
            seq: ctx.seq.0,
            did: ctx.delivery_id,
            id,
            outcome,
        }));
        match (fate, outcome) {
            (_, Outcome::Ok) => Ok(()),
            (Fate::Permanent, _) => Err(DeliveryError::permanent("model: permanent")),
            (Fate::Panic, _) => panic!("{PANIC_MSG}"),
            _ => Err(DeliveryError::transient("model: transient")),
        }
    }

    fn kind(&self) -> &'static str {
        "model-journal"
    }
}

/// Runs one segment; called by the ignored child test.
///
/// # Panics
/// On any error: the parent sees the child exit before its kill, or
/// without its `C` line, and fails with its stderr.
pub async fn main() {
    harness::quiet_panics();
    let dir = PathBuf::from(std::env::var(ENV_DIR).expect(ENV_DIR));
    let run: u32 = std::env::var(ENV_RUN).expect(ENV_RUN).parse().expect("run");
    let ops = plan::decode(&std::env::var(ENV_OPS).unwrap_or_default());
    let drain = std::env::var_os(ENV_DRAIN).is_some();
    let journal = Arc::new(Writer::open(&dir, run));

    let builder = || {
        let mut b = Outbox::<u64>::builder(dir.join("data")).config(harness::engine_cfg());
        for (i, name) in SINKS.iter().enumerate() {
            b = b.sink(
                *name,
                Decided(JournalSink {
                    idx: i,
                    journal: journal.clone(),
                    failures: Mutex::default(),
                }),
                harness::sink_cfg(),
            );
        }
        b
    };
    // The parent runs several cases at once, and a sibling's child, forked
    // while the parent had this store open for inspection, shares that
    // lock until it execs: a moment, unless the machine is loaded. Locked
    // is the only error waited out, and not for long.
    let mut tries = 0;
    let (ob, mut acks) = loop {
        match builder().open().await {
            Err(e) if e.is_locked() && tries < 50 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            r => break r.expect("open"),
        }
    };
    let st = ob.status().expect("status");
    journal.write(&Line::Open {
        log_id: st.log_id.clone(),
        head: st.head,
    });
    let aj = journal.clone();
    let ack_task = tokio::spawn(async move {
        while let Some(id) = acks.recv().await {
            aj.write(&Line::Ack { id });
        }
    });

    let mut next_id = u64::from(run) * ID_STRIDE;
    for op in &ops {
        match op {
            Op::Dispatch(recs) => {
                let items: Vec<(Record, Vec<u64>)> = recs
                    .iter()
                    .enumerate()
                    .map(|(k, f)| {
                        let id = next_id + k as u64;
                        (Record::new(harness::payload(id, *f)), vec![id])
                    })
                    .collect();
                let ids: Vec<u64> = (next_id..next_id + recs.len() as u64).collect();
                next_id += recs.len() as u64;
                let receipts = if let [(r, t)] = &items[..] {
                    vec![ob.dispatch(r.clone(), t.clone()).await.expect("dispatch")]
                } else {
                    ob.dispatch_many(items).await.expect("dispatch_many")
                };
                assert_eq!(receipts.len(), ids.len(), "one receipt per record");
                for (r, id) in receipts.iter().zip(ids) {
                    journal.write(&Line::Receipt {
                        seq: r.seq.0,
                        did: r.delivery_id,
                        id,
                    });
                }
            }
            Op::Sleep(ms) => tokio::time::sleep(Duration::from_millis(u64::from(*ms))).await,
            Op::Redrive(k) => {
                let sink = k % SINKS.len();
                let moved = ob
                    .dlq_redrive(&harness::name(sink), None)
                    .await
                    .expect("redrive");
                journal.write(&Line::Redrive { sink, moved });
            }
            Op::Crash(_) => unreachable!("a crash ends a segment"),
        }
    }
    journal.write(&Line::OpsDone);
    if !drain {
        // Until the parent's SIGKILL.
        std::future::pending::<()>().await;
    }
    let report = ob
        .shutdown(Duration::from_secs(30))
        .await
        .expect("shutdown");
    assert!(
        report.drained && report.corrupt.is_empty(),
        "close: {report:?}"
    );
    ack_task.await.expect("ack task");
    journal.write(&Line::Closed);
}
