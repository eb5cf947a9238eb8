//! Model-based crash test: random operation sequences (dispatch with ack
//! tokens, sink outcomes ok / transient / permanent / exhausted / panic,
//! redrive, and crashes) against the real engine, where every crash is a
//! real one: the segment between two crashes runs in a child process (this
//! test binary, re-run with `--exact model_crash_child --ignored`), which
//! the parent SIGKILLs at the planned point, with no flush and no drop.
//!
//! The child journals, each line fdatasynced before it goes on, every
//! receipt, every released ack token and every attempt its sinks were
//! handed (`model_crash/journal.rs`). After each kill the parent opens the
//! stopped store read-only (`Store::inspect`) and checks the journal
//! against the **durable** offsets, DLQ and log, not against
//! `Sink::commit` having run; after the last segment a child drains and
//! closes, and the parent checks that every receipted record reached every
//! sink under its receipt's delivery id, in order. The properties are
//! listed in `model_crash/oracle.rs`.
//!
//! Shrunk counterexamples are kept below as named regression tests.

#[path = "model_crash/child.rs"]
mod child;
#[path = "model/harness.rs"]
mod harness;
#[path = "model_crash/journal.rs"]
mod journal;
#[path = "model_crash/oracle.rs"]
mod oracle;
#[path = "model_crash/parent.rs"]
mod parent;
#[path = "model_crash/plan.rs"]
mod plan;
#[path = "common/sinks.rs"]
mod sinks;
#[path = "model/strategy.rs"]
mod strategy;

use std::sync::Mutex;

use harness::Fate;
use plan::{Kill, Op};
use proptest::prelude::*;

/// Cases per run. Each case spawns a child per segment (three or four on
/// average: 50 to 70 kills and 24 drains per run, about 18 s on 2 shared
/// cores); keep the whole test well under a minute. `PROPTEST_CASES`
/// overrides.
const CASES: u32 = 24;

/// The child process of every case; run by the parent, not on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the model crash test; run by it, not on its own"]
async fn model_crash_child() {
    child::main().await;
}

fn check(ops: &[Op]) -> oracle::Stats {
    match parent::run(ops) {
        Ok(stats) => stats,
        Err(e) => panic!("{e}\nops: {ops:?}"),
    }
}

/// Adds a case's figures to the run's and prints the sums so far (seen
/// with `--nocapture`; the last line is the whole run's).
fn report(s: &oracle::Stats) {
    static TOTAL: Mutex<(u64, Option<oracle::Stats>)> = Mutex::new((0, None));
    let mut t = TOTAL.lock().unwrap_or_else(|p| p.into_inner());
    t.0 += 1;
    let cases = t.0;
    let sum = t.1.get_or_insert_with(oracle::Stats::default);
    sum.add(s);
    println!("model_crash: cases {cases}, {sum:?}");
}

fn kill() -> impl Strategy<Value = Kill> {
    prop_oneof![
        3 => (1u16..40).prop_map(Kill::AtLine),
        1 => (0u8..30).prop_map(Kill::AfterMs),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => proptest::collection::vec([strategy::fate(), strategy::fate()], 1..8).prop_map(Op::Dispatch),
        2 => (0u8..15).prop_map(Op::Sleep),
        2 => (0usize..2).prop_map(Op::Redrive),
        4 => kill().prop_map(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(CASES),
        max_shrink_iters: 100,
        ..ProptestConfig::default()
    })]

    #[test]
    fn crashes_lose_nothing_and_ack_only_what_is_durable(
        ops in proptest::collection::vec(op(), 1..16)
    ) {
        let s = check(&ops);
        let crashes = ops.iter().filter(|o| matches!(o, Op::Crash(_))).count() as u64;
        prop_assert_eq!(s.kills, crashes);
        prop_assert_eq!(s.runs, crashes + 1);
        report(&s);
    }
}

use Fate::{Exhaust, Ok as O, Panic, Permanent as P, Transient as T};

/// A burst of receipts cut by the kill, records pending at both sinks.
#[test]
fn a_kill_in_the_middle_of_a_burst_keeps_every_receipt() {
    let s = check(&[
        Op::Dispatch(vec![[O, O]; 7]),
        Op::Dispatch(vec![[T(2), O]; 7]),
        Op::Crash(Kill::AtLine(6)),
        Op::Dispatch(vec![[O, T(1)]; 3]),
    ]);
    assert_eq!((s.kills, s.runs), (1, 2));
    assert!(s.receipted >= 3, "{s:?}");
    assert!(s.acked >= 3, "the drained run releases its 3 tokens: {s:?}");
}

/// Dead-lettered records, a redrive, and kills during each.
#[test]
fn kills_around_parking_and_redrive_keep_the_dlq() {
    let s = check(&[
        Op::Dispatch(vec![[P, O], [Exhaust, P], [O, Panic], [O, O]]),
        Op::Crash(Kill::AfterMs(3)),
        Op::Dispatch(vec![[O, O]]),
        Op::Sleep(10),
        Op::Redrive(0),
        Op::Crash(Kill::AtLine(2)),
        Op::Redrive(1),
        Op::Redrive(0),
        Op::Crash(Kill::AfterMs(20)),
    ]);
    assert_eq!((s.kills, s.runs), (3, 4));
    assert!((4..=5).contains(&s.receipted), "{s:?}");
}

/// Shrunk from a proptest failure: records dead-lettered before a restart (whose
/// open records the DLQ count in the witness file), redriven after it,
/// then a kill while the process is idle. The reopen used to be refused:
/// "holds 0 entries, but 3 were durable (outbox.witness)".
#[test]
fn regression_a_kill_after_a_redrive_reopens() {
    let s = check(&[
        Op::Dispatch(vec![[P, O], [P, O], [P, O]]),
        Op::Crash(Kill::AfterMs(30)),
        Op::Redrive(0),
        Op::Crash(Kill::AfterMs(20)),
    ]);
    assert_eq!((s.kills, s.runs), (2, 3));
    assert_eq!(s.receipted, 3);
    assert_eq!(s.redriven, 3, "{s:?}");
    assert_eq!(s.dead_lettered, 0, "{s:?}");
}
