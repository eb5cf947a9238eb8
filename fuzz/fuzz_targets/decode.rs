//! Every on-disk key and value decoder, fed arbitrary bytes, and the same
//! bytes through `outbox check`'s value-by-value verification.
//!
//! The codec is private, so its properties (Ok or `Corrupted`, never a
//! panic; whatever decodes as a version-2 value re-encodes to exactly the
//! bytes it came from) are asserted by `outbox::__fuzz::decode`, the body
//! of this target kept inside the crate (`src/codec/fuzz.rs`, behind the
//! `fuzzing` feature). The public side, [`outbox::inspect::Checker`], must
//! never panic either, and every problem it reports names one of the trees.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outbox::inspect::{Checker, TREES};

fuzz_target!(|data: &[u8]| {
    outbox::__fuzz::decode(data);
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let (key, value) = match rest.split_first() {
        Some((&k, tail)) => tail.split_at((k as usize).min(tail.len())),
        None => (&[][..], &[][..]),
    };
    let tree = TREES[usize::from(which) % TREES.len()];
    let mut c = Checker::new();
    c.value(tree, key, value);
    let report = c.finish();
    for p in &report.problems {
        assert!(TREES.contains(&p.tree.as_str()), "{p}");
    }
});
