//! # outbox
//!
//! A durable write-ahead delivery engine. Every dispatched record is appended
//! to an embedded sled log and made durable before it is receipted; one
//! worker per sink delivers it and commits its own offset, and the source's
//! ack tokens are released only once every sink's durable offset has passed
//! the record, so nothing accepted is lost on the way to its sinks, even
//! across a crash.
//!
//! ```no_run
//! use outbox::{Outbox, Record, SinkConfig, sink::FileSink};
//!
//! # async fn demo() -> outbox::Result<()> {
//! let file = FileSink::open("/tmp/out.ndjson").await?;
//! let (outbox, mut acks) = Outbox::<u64>::builder("/tmp/outbox-data")
//!     .sink("file", file, SinkConfig::default())
//!     .open()
//!     .await?;
//! let receipt = outbox.dispatch(Record::new(b"{\"hello\":1}".to_vec()), vec![7]).await?;
//! println!("durable as {}", receipt.delivery_id);
//! assert_eq!(acks.recv().await, Some(7)); // delivered to every sink, durably
//! outbox.shutdown(std::time::Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
//!
//! A stopped outbox's data directory is read (and repaired) through
//! [`inspect`]; the store and its on-disk encoding are private.
//!
//! Lints: `unsafe` is denied except in the store's `flock` probe (behind
//! [`inspect::is_locked`]), allowed by name with a SAFETY comment; every
//! public item is documented; non-test code does not `unwrap`.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod ack;
mod codec;
pub mod config;
mod dead_letter;
mod engine;
mod error;
pub mod filter;
#[cfg(test)]
mod fixture_v2;
pub mod inspect;
mod log_record;
pub mod metrics;
#[cfg(feature = "jetstream")]
mod nats;
mod retry;
mod retrying;
pub mod sink;
pub mod source;
mod store;
mod types;

pub use config::{
    BreakerConfig, FailureRatio, OnFull, Ordering, OutboxConfig, RateLimit, SinkConfig, Start,
    SyncPolicy,
};
pub use dead_letter::{DeadLetter, DeadLetterPage, DeadLetters, FailedAttempt};
pub use engine::{
    Breaker, BreakerState, Dispatched, Health, Meta, Outbox, OutboxBuilder, Permit, ReceiptFuture,
    ShutdownReport, SinkStatus, Status, TokenBucket, Trip,
};
pub use engine::{DispatchError, Items};
pub use error::{ConfigError, DispatchErrorKind, Error, Result, StoreError};
pub use log_record::LogRecord;
pub use metrics::{MetricsHook, NoopMetrics};
pub use retrying::Retrying;
pub use types::{DeliveryId, Receipt, Record, Seq, SinkName};

/// Not part of the API: internals the crate's own benchmarks
/// (`benches/hot_paths.rs`) measure: the ack watermark, and the log value
/// encoder and decoders on the append and delivery paths. Hidden from the
/// docs, unstable, and may change or go in any release; nothing else may use
/// it (a stopped store is read through [`inspect`]).
#[doc(hidden)]
pub mod __bench {
    pub use crate::ack::AckTracker;
    pub use crate::codec::{
        BatchHeader, LogEntry, decode_batch, decode_batch_header, encode_batch, log_key,
    };
}

/// Not part of the API: the body of the `decode` fuzz target
/// (`fuzz/fuzz_targets/decode.rs`), which needs the private codec. Only with
/// the `fuzzing` feature, which only the fuzz crate enables; hidden and
/// unstable.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::codec::fuzz::decode;
}
