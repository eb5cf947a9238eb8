//! The [`Sink`] trait and the built-in sinks.
//!
//! A sink delivers records and answers Ok, transient or permanent for each.
//! Before the worker commits an offset past a run of records it calls
//! [`Sink::commit`], so a sink that buffers (the file sink) can make
//! "delivered" mean "on disk".
//!
//! Every method takes `&self`, so one worker can keep several deliveries of
//! its sink in flight at once (see `max_in_flight`); a sink keeps whatever
//! state it mutates behind its own lock. A sink is driven by one worker only.

mod file;
#[cfg(feature = "jetstream")]
pub mod jetstream;
mod lines;
mod stdout;
#[cfg(feature = "webhook")]
pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::types::{DeliveryId, Record, Seq, SinkName};

pub use file::FileSink;
#[cfg(feature = "jetstream")]
pub use jetstream::{JetStreamSink, JetStreamSinkConfig, JetStreamSinkStats};
pub use stdout::StdoutSink;
#[cfg(feature = "webhook")]
pub use webhook::{WebhookConfig, WebhookSink};

/// A boxed, sendable future, as the trait methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why one delivery attempt failed. Non-exhaustive: a later release may add
/// a variant; decide with [`DeliveryError::is_transient`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// May succeed later: a timeout, a 5xx, a full disk. The worker retries
    /// with backoff, or after `retry_after` when the receiver gave one.
    #[error("transient: {error}")]
    Transient {
        /// What happened.
        error: String,
        /// How long the receiver asked us to wait (e.g. `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Will not succeed on retry: a 4xx, a malformed record. Goes to the DLQ
    /// at once.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl DeliveryError {
    /// A transient error without a retry-after.
    pub fn transient(error: impl Into<String>) -> Self {
        DeliveryError::Transient {
            error: error.into(),
            retry_after: None,
        }
    }

    /// A permanent error.
    pub fn permanent(error: impl Into<String>) -> Self {
        DeliveryError::Permanent(error.into())
    }

    /// Whether the worker should retry.
    pub fn is_transient(&self) -> bool {
        matches!(self, DeliveryError::Transient { .. })
    }

    /// The receiver's requested delay, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Transient { retry_after, .. } => *retry_after,
            DeliveryError::Permanent(_) => None,
        }
    }
}

/// What one attempt returns.
pub type DeliveryResult = Result<(), DeliveryError>;

/// What a sink knows about the delivery it is making.
#[derive(Clone, Debug)]
pub struct DeliveryContext<'a> {
    /// The sink's configured name.
    pub sink: &'a SinkName,
    /// The record's seq in the log.
    pub seq: Seq,
    /// The stable id receivers deduplicate on.
    pub delivery_id: DeliveryId,
    /// 1 for the first attempt in this process, 2 for the first retry, ...
    pub attempt: u32,
}

/// A destination. One instance per configured sink, driven by one worker.
///
/// The worker may call [`Sink::deliver`] again before an earlier call's
/// future has finished (up to the sink's `max_in_flight`); the calls are
/// made in seq order, so a sink whose deliveries complete at once (a buffer
/// append) sees records in order.
pub trait Sink: Send + Sync + 'static {
    /// Delivers one record.
    fn deliver<'a>(
        &'a self,
        record: &'a Record,
        ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult>;

    /// Delivers one record without waiting, for a sink whose delivery is a
    /// buffer append (its I/O is in [`Sink::commit`]): `Some` is the result
    /// [`Sink::deliver`] would have given. `None`, the default, says it
    /// cannot, and must mean that nothing was done: the worker then calls
    /// `deliver`. The worker asks first, for a record's first attempt while
    /// the sink's breaker is closed and it has no rate limit; a delivery
    /// made here costs no future (4 sinks that do nothing: the futures were
    /// the workers' largest cost). A panic here is a failed attempt, as in
    /// `deliver`.
    fn deliver_now(&self, record: &Record, ctx: &DeliveryContext<'_>) -> Option<DeliveryResult> {
        let _ = (record, ctx);
        None
    }

    /// Makes every delivery that completed before this call durable on the
    /// sink's side. Called before the worker commits its offset past those
    /// records; the worker does not call it again until it returns. An error
    /// makes the worker deliver again everything after its last committed
    /// offset, so a sink may discard what it buffered since its last good
    /// commit. Default: nothing to do.
    fn commit(&self) -> BoxFuture<'_, DeliveryResult> {
        Box::pin(async { Ok(()) })
    }

    /// A short, stable label for logs and metrics, such as `file`.
    fn kind(&self) -> &'static str;
}

/// A `Box` or an `Arc` of a sink is a sink: every call goes to the sink
/// inside.
macro_rules! forward_sink {
    ($($ptr:ty),*) => {$(
        impl<S: Sink + ?Sized> Sink for $ptr {
            fn deliver<'a>(
                &'a self,
                record: &'a Record,
                ctx: &'a DeliveryContext<'a>,
            ) -> BoxFuture<'a, DeliveryResult> {
                (**self).deliver(record, ctx)
            }
            fn deliver_now(
                &self,
                record: &Record,
                ctx: &DeliveryContext<'_>,
            ) -> Option<DeliveryResult> {
                (**self).deliver_now(record, ctx)
            }
            fn commit(&self) -> BoxFuture<'_, DeliveryResult> {
                (**self).commit()
            }
            fn kind(&self) -> &'static str {
                (**self).kind()
            }
        }
    )*};
}

forward_sink!(Box<S>, std::sync::Arc<S>);
