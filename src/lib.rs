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
//! Lints: `unsafe` is denied except in three functions that call libc,
//! each allowed by name with a SAFETY comment (`tune_glibc_malloc` and
//! `trim_glibc_malloc`, and the store's `flock` probe `store::is_locked`);
//! every public item is documented; non-test code does not `unwrap`.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod ack;
pub mod codec;
pub mod config;
mod dead_letter;
mod engine;
mod error;
pub mod filter;
pub mod inspect;
mod log_record;
pub mod metrics;
#[cfg(feature = "jetstream")]
mod nats;
mod retry;
pub mod sink;
pub mod source;
pub mod store;
mod tuning;
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
pub use error::{Error, Result};
pub use log_record::LogRecord;
pub use metrics::{MetricsHook, NoopMetrics};
pub use tuning::{trim_glibc_malloc, tune_glibc_malloc};
pub use types::{DeliveryId, Receipt, Record, Seq, SinkName};

/// Not part of the API: internals the crate's own benchmarks
/// (`benches/hot_paths.rs`) measure. Hidden from the docs, unstable, and
/// may change or go in any release.
#[doc(hidden)]
pub mod __bench {
    pub use crate::ack::AckTracker;
}
