//! Operation sequences (dispatch, deliver ok, fail, fail permanently, kill,
//! close, redrive, truncate) against the real engine on a real sled
//! directory, checked against the plain model of `tests/model/harness.rs`,
//! the same harness `tests/model.rs` drives with proptest. A property that
//! does not hold panics, which libFuzzer reports as a crash.
#![no_main]

#[path = "../../tests/model/harness.rs"]
mod harness;
#[path = "../../tests/common/sinks.rs"]
mod sinks;

use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::{Result, Unstructured};
use harness::{Fate, Op, Options, RETRY_MAX};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn fate(u: &mut Unstructured<'_>) -> Result<Fate> {
    Ok(match u.int_in_range(0u8..=9)? {
        0..=4 => Fate::Ok,
        5 => Fate::Transient(u.int_in_range(1..=RETRY_MAX as u8)?),
        6 | 7 => Fate::Permanent,
        _ => Fate::Exhaust,
    })
}

fn op(u: &mut Unstructured<'_>) -> Result<Op> {
    Ok(match u.int_in_range(0u8..=15)? {
        0..=6 => {
            let n = u.int_in_range(1usize..=5)?;
            let mut recs = Vec::with_capacity(n);
            for _ in 0..n {
                recs.push([fate(u)?, fate(u)?]);
            }
            Op::Dispatch(recs)
        }
        7 | 8 => Op::Sleep(u.int_in_range(0u8..=15)?),
        9 => Op::Settle,
        10 | 11 => Op::Kill,
        12 => Op::Close,
        13 | 14 => Op::Redrive(u.int_in_range(0usize..=1)?),
        _ => Op::Truncate,
    })
}

fn ops(data: &[u8]) -> Vec<Op> {
    let mut u = Unstructured::new(data);
    let mut out = Vec::new();
    while out.len() < 24 {
        match op(&mut u) {
            Ok(o) => out.push(o),
            Err(_) => break,
        }
        if u.is_empty() {
            break;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let ops = ops(data);
    if ops.is_empty() {
        return;
    }
    let opts = Options {
        // libFuzzer's panic hook aborts even on a panic the engine catches.
        allow_panics: false,
        settle_timeout: Duration::from_secs(30),
    };
    if let Err(e) = runtime().block_on(harness::run(&ops, &opts)) {
        panic!("{e}\nops: {ops:?}");
    }
});
