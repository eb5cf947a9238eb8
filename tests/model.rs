//! Model-based tests: random operation sequences (dispatch, deliver ok,
//! fail, fail permanently, panic, kill, close, redrive, truncate) run
//! against the real engine on a real sled directory and checked against a
//! plain model. The harness and the properties it checks are in
//! `tests/model/harness.rs`; the fuzz target `ops` runs the same harness.
//!
//! Shrunk counterexamples are kept below as named regression tests.

#[path = "model/harness.rs"]
mod harness;
#[path = "common/sinks.rs"]
mod sinks;
#[path = "model/strategy.rs"]
mod strategy;

use harness::{Fate, Op, Options};
use proptest::prelude::*;

/// Cases per run. Each case opens a sled directory a few times; keep the
/// whole test well under a minute on 2 cores. `PROPTEST_CASES` overrides.
const CASES: u32 = 24;

fn check(ops: &[Op]) -> harness::Stats {
    harness::quiet_panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(harness::run(ops, &Options::default())) {
        Ok(stats) => stats,
        Err(e) => panic!("{e}\nops: {ops:?}"),
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => proptest::collection::vec([strategy::fate(), strategy::fate()], 1..6).prop_map(Op::Dispatch),
        2 => (0u8..15).prop_map(Op::Sleep),
        1 => Just(Op::Settle),
        3 => Just(Op::Kill),
        1 => Just(Op::Close),
        2 => (0usize..2).prop_map(Op::Redrive),
        1 => Just(Op::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(CASES),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_the_model(ops in proptest::collection::vec(op(), 1..24)) {
        check(&ops);
    }
}

use Fate::{Exhaust, Ok as O, Panic, Permanent as P, Transient as T};

#[test]
fn regression_kill_mid_delivery_then_redrive_both_sinks() {
    let s = check(&[
        Op::Dispatch(vec![[O, P], [P, O], [T(2), Exhaust], [O, O]]),
        Op::Sleep(1),
        Op::Kill,
        Op::Dispatch(vec![[O, Panic]]),
        Op::Redrive(0),
        Op::Kill,
        Op::Redrive(1),
        Op::Close,
    ]);
    assert_eq!(s.dispatched, 5);
    assert_eq!(s.redriven, 4, "one dead-lettered at a, three at b");
    assert_eq!(s.kills, 2);
}

#[test]
fn regression_truncate_everything_then_restart_keeps_seqs() {
    let s = check(&[
        Op::Dispatch(vec![[O, O], [O, O], [O, O]]),
        Op::Truncate,
        Op::Close,
        Op::Truncate,
        Op::Kill,
        Op::Dispatch(vec![[O, O]]),
        Op::Truncate,
        Op::Kill,
        Op::Dispatch(vec![[P, O]]),
    ]);
    assert_eq!(s.dispatched, 5);
    assert_eq!(s.dead_lettered, 1);
}

#[test]
fn regression_back_to_back_kills_lose_nothing() {
    let s = check(&[
        Op::Dispatch(vec![[T(1), T(2)]; 5]),
        Op::Kill,
        Op::Kill,
        Op::Dispatch(vec![[O, O]]),
        Op::Kill,
        Op::Settle,
    ]);
    assert_eq!(s.dispatched, 6);
}

/// Shrunk from a proptest failure: a redrive answers once its append is
/// durable, a moment before the head is published, so a settle right after
/// it must wait for the head instead of failing on it.
#[test]
fn regression_redrive_right_after_redrive() {
    let s = check(&[
        Op::Dispatch(vec![[Exhaust, O], [O, P], [O, O], [O, P], [O, O]]),
        Op::Redrive(1),
        Op::Dispatch(vec![[P, T(1)], [O, T(1)]]),
        Op::Close,
        Op::Kill,
        Op::Dispatch(vec![[P, O], [O, O]]),
        Op::Redrive(0),
        Op::Redrive(1),
        Op::Truncate,
    ]);
    assert_eq!(s.redriven, 5);
}

/// Shrunk from a proptest failure: many restarts in a row. The reopen right
/// after `shutdown()` or an undrained stop used to fail with `Locked` now
/// and then, while sled's thread pool still held the file (see
/// `faults::shutdown_releases_the_directory_at_once`).
#[test]
fn regression_many_restarts_in_a_row() {
    let mut ops = Vec::new();
    for i in 0..8 {
        ops.push(Op::Dispatch(vec![[O, P], [T(1), O]]));
        ops.push(if i % 2 == 0 { Op::Close } else { Op::Kill });
    }
    let s = check(&ops);
    assert_eq!(s.kills + s.closes, 8 + 1);
}
