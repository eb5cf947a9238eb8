//! The state the handle and the engine's tasks share: one [`Core`] per
//! outbox, one [`SinkSlot`] per configured sink.
//!
//! Invariants:
//! - `head` only moves forward, and only once the records below it are
//!   durable (the completion task publishes it after the group commit);
//! - a slot's `committed` is the sink's *durable* offset and never decreases;
//! - every sender a task needs is held here, so the tasks import this file
//!   and the messages (`msg.rs`), never each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::backpressure::LagLimit;
use super::breaker::{Breaker, BreakerState};
use super::holes::Holes;
use super::msg::{AppendReq, Completion};
use super::rate_limit::TokenBucket;
use super::tail::{ByteIndex, TailCache};
use crate::config::{OnFull, OutboxConfig, SinkConfig};
use crate::metrics::MetricsHook;
use crate::store::{Durability, Since, Store};
use crate::types::{Seq, SinkName};

/// The shared state of one sink.
pub(crate) struct SinkSlot {
    pub name: SinkName,
    pub cfg: SinkConfig,
    /// The durable committed offset.
    pub committed: AtomicU64,
    /// The Drop floor: for a Drop sink over its lag limit, the worker skips
    /// everything below this.
    pub floor: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub retries: AtomicU64,
    /// Set when the worker stopped on data it cannot read: the message
    /// names the range. The sink delivers nothing more until the operator
    /// repairs the store (`outbox salvage`) and restarts.
    pub corrupt: Mutex<Option<String>>,
    /// Records the sink's filter passed over, by this process.
    pub filtered: AtomicU64,
    /// The circuit breaker (it never trips without `cfg.breaker`, but an
    /// operator can still pause the sink through it).
    pub breaker: Mutex<Breaker>,
    /// The token bucket, with `cfg.rate_limit`.
    pub bucket: Option<Mutex<TokenBucket>>,
    /// Notified when the breaker closes or is resumed, for waiting
    /// deliveries and the worker.
    pub gate_changed: Notify,
    /// When an operator paused the sink (durably), ms since the Unix epoch.
    pub paused_at_ms: Mutex<Option<u64>>,
    /// Retry states may be stored for this sink: the next offset commit
    /// removes those it passes.
    pub retry_dirty: AtomicBool,
    /// The log value of the oldest pending record, as last reported
    /// (`None`: caught up).
    pub oldest: Mutex<Option<crate::store::RecordsAt>>,
}

impl SinkSlot {
    /// The sink's state for status reports: `corrupt`, the breaker's state
    /// when it is not closed (`open`, `half_open`, `paused`), or `ok`.
    pub fn state(&self) -> (&'static str, Option<String>) {
        if let Some(why) = &*self.corrupt.lock() {
            return ("corrupt", Some(why.clone()));
        }
        match self.breaker.lock().state() {
            BreakerState::Closed => ("ok", None),
            other => (other.as_str(), None),
        }
    }
}

/// A sink that is no longer configured but keeps its backlog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Orphan {
    pub name: SinkName,
    pub offset: Seq,
    pub since_ms: u64,
}

/// State shared by the handle and the tasks.
pub(crate) struct Core<T> {
    pub store: Arc<Store>,
    pub durability: Arc<Durability>,
    pub cfg: OutboxConfig,
    pub sinks: Vec<SinkSlot>,
    pub log_id: Uuid,
    /// One past the last published (durable) seq.
    pub head: watch::Sender<Seq>,
    pub tail: Mutex<TailCache>,
    pub bytes: Option<Mutex<ByteIndex>>,
    /// Notified whenever a committed offset moves, for Block waiters.
    pub room: Notify,
    pub metrics: Arc<dyn MetricsHook>,
    pub closing: AtomicBool,
    pub append_tx: mpsc::Sender<AppendReq<T>>,
    pub done_tx: mpsc::UnboundedSender<Completion<T>>,
    /// Workers stop once caught up.
    pub drain: CancellationToken,
    /// Workers stop now, committing what they delivered.
    pub cancel: CancellationToken,
    /// Mean stored size of a record, from the batches appended this
    /// session, for the log-bytes estimate (0 until the first append).
    pub mean_record_bytes: AtomicU64,
    /// Orphaned sinks: they hold back truncation (not acks) until forgotten.
    pub orphans: Mutex<Vec<Orphan>>,
    /// Seq ranges with no record (holes, lost markers), left out of lag.
    pub holes: Mutex<Holes>,
    /// Since when the appender is in its current write to the store.
    pub appending_since: Since,
}

impl<T> Core<T> {
    pub fn head(&self) -> Seq {
        *self.head.borrow()
    }

    /// Records a sink has not passed: head minus its durable offset, less
    /// the seqs with no record (a crash's hole) in between.
    pub fn lag(&self, slot: &SinkSlot) -> u64 {
        let committed = Seq(slot.committed.load(Ordering::Acquire));
        self.holes.lock().records(committed, self.head())
    }

    /// The first Block sink whose lag is at its limit.
    pub fn full_sink(&self) -> Option<&SinkSlot> {
        self.sinks.iter().find(|s| {
            if s.cfg.on_full != OnFull::Block {
                return false;
            }
            let committed = Seq(s.committed.load(Ordering::Acquire));
            LagLimit::of(&s.cfg).is_full(self.lag(s), || {
                self.bytes
                    .as_ref()
                    .map(|idx| idx.lock().bytes_from(committed))
            })
        })
    }

    /// Reports the log's size: records as the span of seqs from the first
    /// value to the head (holes included), bytes as that times the mean
    /// record size. Counting exactly would mean reading every
    /// value, which pulls the whole log into sled's cache.
    pub fn report_log_size(&self, first: Option<Seq>) {
        let records = first.map_or(0, |f| self.holes.lock().records(f, self.head()));
        let bytes = records.saturating_mul(self.mean_record_bytes.load(Ordering::Relaxed));
        self.metrics.log_size(records, bytes);
    }

    /// The lowest offset of the orphans, which truncation must not pass.
    pub fn lowest_orphan_offset(&self) -> Option<Seq> {
        self.orphans.lock().iter().map(|o| o.offset).min()
    }
}
