//! The proptest strategies the model tests share (`tests/model.rs`,
//! `tests/model_crash.rs`); the fuzz target draws its own from libFuzzer's
//! bytes.

use proptest::prelude::*;

use crate::harness::{Fate, RETRY_MAX};

/// A record's fate at one sink: mostly delivered, sometimes failing.
pub fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        8 => Just(Fate::Ok),
        2 => (1u8..=RETRY_MAX as u8).prop_map(Fate::Transient),
        2 => Just(Fate::Permanent),
        1 => Just(Fate::Exhaust),
        1 => Just(Fate::Panic),
    ]
}
