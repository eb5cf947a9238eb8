//! The engine: the seed's `Dispatcher`, made durable.
//!
//! Pipeline, with the task that owns each step:
//! 1. `dispatch*` checks limits and hands records to the **appender**, which
//!    packs concurrent requests into one log value (one request never spans
//!    two values), inserts it and requests a group-commit flush.
//! 2. The **completion** task waits for that flush, then publishes the batch
//!    (tail cache, head), registers ack tokens and answers the dispatchers.
//! 3. One **worker** per sink reads from its offset, delivers, and commits its
//!    offset together with the batch's DLQ entries; the completion task
//!    waits for that commit's flush and feeds it to the ack watermark.
//! 4. The **truncator** removes batches every configured sink has passed.
//!
//! Invariants:
//! - a receipt (under `Always`/`Full`) and a published record both imply the
//!   record is durable; workers never see a record that is not;
//! - an ack token is released only after every configured sink's *durable*
//!   offset has passed its record, and exactly once;
//! - a sink's stored offset never decreases.

mod appender;
mod breaker;
mod completion;
mod holes;
mod msg;
mod open;
mod pending;
mod rate_limit;
mod tail;
mod truncate;
mod window;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::codec::DlqEntry;
use crate::config::{OnFull, OutboxConfig, SinkConfig};
use crate::error::{Error, Result};
use crate::metrics::MetricsHook;
use crate::store::{Durability, Selection, Store};
use crate::types::{DeliveryId, Receipt, Record, Seq, SinkName};

pub use breaker::{Breaker, BreakerState, Health, Permit, Trip};
pub(crate) use holes::Holes;
pub(crate) use msg::{AppendReq, Appended, Completion};
pub use open::OutboxBuilder;
pub use rate_limit::TokenBucket;
pub(crate) use tail::{ByteIndex, TailCache};

/// The shared state of one sink.
pub(crate) struct SinkSlot {
    pub name: SinkName,
    pub cfg: SinkConfig,
    /// The durable committed offset.
    pub committed: AtomicU64,
    /// For Drop sinks: the worker skips everything below this.
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
            let committed = s.committed.load(Ordering::Acquire);
            let lag = self.lag(s);
            if s.cfg.max_lag_records.is_some_and(|m| lag >= m) {
                return true;
            }
            match (&self.bytes, s.cfg.max_lag_bytes) {
                (Some(idx), Some(m)) => lag > 0 && idx.lock().bytes_from(Seq(committed)) >= m,
                _ => false,
            }
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

    /// Refuses new work and aborts every task where it stands: nothing
    /// drains and nothing more is committed (what was written may still be
    /// flushed by sled, which is harmless: it is replayed).
    fn stop_now(&self, tasks: &Tasks) {
        self.closing.store(true, Ordering::Release);
        self.cancel.cancel();
        tasks.appender.abort();
        tasks.completion.abort();
        tasks.truncator.abort();
        for w in &tasks.workers {
            w.abort();
        }
    }

    pub fn delivery_id(&self, origin: Seq) -> DeliveryId {
        DeliveryId {
            log_id: self.log_id,
            seq: origin,
        }
    }

    /// The lowest offset of the orphans, which truncation must not pass.
    pub fn orphan_floor(&self) -> Option<Seq> {
        self.orphans.lock().iter().map(|o| o.offset).min()
    }
}

/// Per-sink figures, as [`Outbox::status`] reports them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SinkStatus {
    /// The sink.
    pub name: String,
    /// `ok`; `open` or `half_open` (its breaker); `paused` (by an
    /// operator); or `corrupt` once its worker stopped on data it cannot
    /// read.
    pub state: String,
    /// Why the sink is not `ok`: for `corrupt`, the range and the reason.
    pub error: Option<String>,
    /// Durable committed offset: every seq below it is done.
    pub committed: u64,
    /// Head minus committed.
    pub lag: u64,
    /// DLQ entries.
    pub dlq: usize,
    /// Delivered by this process.
    pub delivered: u64,
    /// Skipped under Drop by this process.
    pub dropped: u64,
    /// Parked in the DLQ by this process.
    pub dead_lettered: u64,
    /// Retries made by this process.
    pub retries: u64,
    /// Records the sink's filter passed over, by this process.
    pub filtered: u64,
    /// The sink's filter, as configured, if it has one.
    pub filter: Option<String>,
    /// When an operator paused it (ms since the Unix epoch), while paused.
    pub paused_at_ms: Option<u64>,
    /// When the oldest record it has not passed was appended (ms since the
    /// Unix epoch); `None` when it has caught up.
    pub oldest_pending_ms: Option<u64>,
}

/// An orphaned sink, as [`Outbox::status`] reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OrphanStatus {
    /// The sink.
    pub name: String,
    /// Its offset: the log is kept from here on for it.
    pub offset: u64,
    /// Since when it is not configured, ms since the Unix epoch.
    pub orphaned_at_ms: u64,
    /// When it will be forgotten (its retention), ms since the Unix epoch.
    pub forget_at_ms: u64,
}

/// What [`Outbox::status`] returns.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// The log id.
    pub log_id: String,
    /// The next seq to publish.
    pub head: u64,
    /// Configured sinks.
    pub sinks: Vec<SinkStatus>,
    /// Sinks with an offset that are not configured: they hold back
    /// truncation (their backlog is kept) but not acks, until forgotten.
    pub orphans: Vec<OrphanStatus>,
}

/// One record as [`Outbox::read_log`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Its seq.
    pub seq: Seq,
    /// Its delivery id (the origin's, for a redriven record).
    pub delivery_id: DeliveryId,
    /// When its batch was appended, ms since the Unix epoch.
    pub appended_at_ms: u64,
    /// The only sink that delivers it, for a redriven record.
    pub target: Option<String>,
    /// The record.
    pub record: Record,
}

/// What [`Outbox::meta`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Minted when the directory was created.
    pub log_id: Uuid,
    /// When the directory was created, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// The first seq still in the log.
    pub first_seq: Option<Seq>,
    /// The next seq to assign.
    pub next_seq: Seq,
}

/// What [`Outbox::shutdown`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every sink caught up before the drain timeout.
    pub drained: bool,
    /// Records each sink left in the log for the next start.
    pub pending: Vec<(SinkName, u64)>,
    /// Sinks whose worker stopped on data it cannot read, with the reason
    /// (naming the range). Their records stay in the log.
    pub corrupt: Vec<(SinkName, String)>,
}

/// What [`Outbox::dispatch_once`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatched {
    /// One receipt per record, in order.
    pub receipts: Vec<Receipt>,
    /// The key was seen within the idempotency window: nothing was
    /// appended, and these are the receipts of the first dispatch.
    pub duplicate: bool,
}

/// How long shutdown waits for a cancelled worker before aborting it.
const WORKER_STOP: Duration = Duration::from_secs(5);

struct Tasks {
    appender: JoinHandle<Seq>,
    completion: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    truncator: JoinHandle<()>,
}

/// A durable outbox. `T` is the embedder's ack token type.
///
/// Open one with [`Outbox::builder`]. Dispatch from any number of tasks;
/// concurrent dispatches share group commits. Tokens come back on the
/// receiver returned by [`OutboxBuilder::open`].
///
/// Stop it with [`Outbox::shutdown`] (or [`Outbox::close`], which also
/// waits until the data directory is released). Dropping it without a
/// shutdown stops every task where it stands: nothing is drained, and what
/// was not yet delivered stays in the log for the next open, with its
/// tokens unreleased. Either way, a record that was receipted is never lost.
pub struct Outbox<T: Send + 'static = ()> {
    core: Arc<Core<T>>,
    tasks: Mutex<Option<Tasks>>,
}

impl<T: Send + 'static> Outbox<T> {
    /// Starts configuring an outbox on `data_dir`.
    pub fn builder(data_dir: impl Into<std::path::PathBuf>) -> OutboxBuilder<T> {
        OutboxBuilder::new(data_dir.into())
    }

    /// The data directory's log id.
    pub fn log_id(&self) -> Uuid {
        self.core.log_id
    }

    /// Appends one record and returns once it is durable under the sync
    /// policy. `tokens` are released on the ack channel once every sink's
    /// durable offset has passed the record.
    ///
    /// # Errors
    /// - [`Error::Rejected`] (too large) or [`Error::ShuttingDown`]: nothing
    ///   was appended.
    /// - [`Error::Poisoned`] or [`Error::Io`]: the store failed while
    ///   writing or flushing. The record may or may not have reached the
    ///   disk; if it did, it is delivered after the outbox is reopened, so a
    ///   retry may deliver it twice (use [`Outbox::dispatch_once`] with a key
    ///   to make retries safe). Its seq is never given to another record.
    ///
    /// On error the tokens are dropped, never released.
    ///
    /// # Cancel safety
    /// Not cancel safe: if the future is dropped after the request reached
    /// the appender, the record is appended (and delivered) all the same;
    /// only the receipt is lost.
    pub async fn dispatch(&self, record: Record, tokens: Vec<T>) -> Result<Receipt> {
        let mut r = self.dispatch_many(vec![(record, tokens)]).await?;
        r.pop().ok_or(Error::ShuttingDown)
    }

    /// Appends records atomically: all or none. Returns one receipt per
    /// record, in order, with consecutive seqs.
    ///
    /// # Errors
    /// As [`Outbox::dispatch`].
    pub async fn dispatch_many(&self, items: Vec<(Record, Vec<T>)>) -> Result<Vec<Receipt>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.append(items, None).await.map(|d| d.receipts)
    }

    /// Appends records atomically unless `key` was used within the
    /// idempotency window ([`crate::OutboxConfig::idempotency_window`]): then
    /// nothing is appended, the first dispatch's receipts come back with
    /// `duplicate` set, and `tokens` are held against the first dispatch's
    /// records (released at once if every sink has passed them). The key is
    /// durable with the records, in the same group commit.
    ///
    /// # Errors
    /// [`Error::Rejected`] when `key` is empty or longer than 1 KiB;
    /// [`Error::KeyReused`] when it was used within the window for
    /// different records (compared by a digest of the payloads and
    /// headers); otherwise as [`Outbox::dispatch`].
    pub async fn dispatch_once(
        &self,
        key: &str,
        items: Vec<(Record, Vec<T>)>,
    ) -> Result<Dispatched> {
        if key.is_empty() || key.len() > 1024 {
            return Err(Error::Rejected(format!(
                "idempotency key of {} bytes; it must be 1 to 1024 bytes",
                key.len()
            )));
        }
        if items.is_empty() {
            return Ok(Dispatched {
                receipts: Vec::new(),
                duplicate: false,
            });
        }
        self.append(items, Some(key.as_bytes().to_vec())).await
    }

    /// The first Block sink that is full right now, if any. An ingest
    /// endpoint uses it to answer 503 instead of waiting.
    pub fn full_sink(&self) -> Option<SinkName> {
        self.core.full_sink().map(|s| s.name.clone())
    }

    /// Whether shutdown has begun.
    pub fn is_closing(&self) -> bool {
        self.core.closing.load(Ordering::Acquire)
    }

    async fn append(
        &self,
        items: Vec<(Record, Vec<T>)>,
        key: Option<Vec<u8>>,
    ) -> Result<Dispatched> {
        let core = &self.core;
        let mut bytes = 0;
        for (i, (r, _)) in items.iter().enumerate() {
            let size = r.size();
            if size > core.cfg.max_record_bytes {
                return Err(Error::Rejected(format!(
                    "record {i} is {size} bytes; max_record_bytes is {}",
                    core.cfg.max_record_bytes
                )));
            }
            bytes += size;
        }
        let given: Vec<Option<DeliveryId>> = items.iter().map(|(r, _)| r.delivery_id()).collect();
        let key = key.map(|k| (k, digest(&items)));
        self.wait_for_room().await?;
        let (reply, rx) = oneshot::channel();
        core.append_tx
            .send(AppendReq::Records {
                items,
                bytes,
                key,
                reply,
                at: Instant::now(),
            })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        let done = rx.await.map_err(|_| Error::ShuttingDown)??;
        let receipts = (0..given.len() as u64)
            .zip(given)
            .map(|(i, id)| {
                let seq = Seq(done.first.0 + i);
                Receipt {
                    seq,
                    delivery_id: id.unwrap_or_else(|| core.delivery_id(seq)),
                }
            })
            .collect();
        Ok(Dispatched {
            receipts,
            duplicate: done.duplicate,
        })
    }

    async fn wait_for_room(&self) -> Result<()> {
        let core = &self.core;
        loop {
            if core.closing.load(Ordering::Acquire) {
                return Err(Error::ShuttingDown);
            }
            if let Some(why) = core.store.poisoned() {
                // The worker that would make room has stopped: waiting
                // would be forever.
                return Err(Error::Poisoned(why));
            }
            if core.full_sink().is_none() {
                return Ok(());
            }
            let notified = core.room.notified();
            if core.full_sink().is_none() {
                return Ok(());
            }
            // The timeout only guards against a missed wake-up.
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// Pauses sink `sink` by hand: no delivery starts (one already sent
    /// finishes), nothing is parked in the DLQ for the pause, its records
    /// stay in the log and its lag grows; no probe resumes it, only
    /// [`Outbox::resume_sink`]. The pause is durable when this returns and
    /// kept across restarts. Returns when it was paused (ms since the Unix
    /// epoch): now, or the time of an earlier pause that still holds.
    ///
    /// # Errors
    /// [`Error::UnknownSink`] when it is not configured;
    /// [`Error::ShuttingDown`] once shutdown has begun; storage errors.
    pub async fn pause_sink(&self, sink: &SinkName) -> Result<u64> {
        let slot = self.slot(sink)?;
        if let Some(at) = *slot.paused_at_ms.lock() {
            return Ok(at);
        }
        let at = crate::store::now_ms();
        self.set_pause(sink, Some(crate::codec::PauseState { at_ms: at }))
            .await?;
        *slot.paused_at_ms.lock() = Some(at);
        slot.breaker.lock().pause();
        self.core
            .metrics
            .breaker(sink.as_str(), BreakerState::Paused);
        slot.gate_changed.notify_waiters();
        tracing::warn!(sink = %sink, lag = self.core.lag(slot), "sink paused by an operator: nothing is delivered until it is resumed; its records stay in the log");
        Ok(at)
    }

    /// Resumes a sink paused with [`Outbox::pause_sink`]: the pause is
    /// removed durably, its breaker closes with empty counts and deliveries
    /// start at once. Returns whether it was paused.
    ///
    /// # Errors
    /// As [`Outbox::pause_sink`].
    pub async fn resume_sink(&self, sink: &SinkName) -> Result<bool> {
        let slot = self.slot(sink)?;
        let Some(since) = *slot.paused_at_ms.lock() else {
            return Ok(false);
        };
        self.set_pause(sink, None).await?;
        *slot.paused_at_ms.lock() = None;
        slot.breaker.lock().resume();
        let state = slot.breaker.lock().state();
        self.core.metrics.breaker(sink.as_str(), state);
        slot.gate_changed.notify_waiters();
        let paused_ms = crate::store::now_ms().saturating_sub(since);
        tracing::info!(sink = %sink, state = state.as_str(), paused_ms, lag = self.core.lag(slot), "sink resumed by an operator");
        Ok(true)
    }

    /// Writes a pause (or its removal) and waits until it is durable.
    async fn set_pause(&self, sink: &SinkName, p: Option<crate::codec::PauseState>) -> Result<()> {
        if self.core.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let store = self.core.store.clone();
        let name = sink.clone();
        tokio::task::spawn_blocking(move || store.set_paused(&name, p))
            .await
            .map_err(|e| Error::Storage(format!("pause task failed: {e}")))??;
        self.core.durability.sync().await
    }

    fn slot(&self, sink: &SinkName) -> Result<&SinkSlot> {
        self.core
            .sinks
            .iter()
            .find(|s| &s.name == sink)
            .ok_or_else(|| Error::UnknownSink(sink.to_string()))
    }

    /// Offsets, lag, DLQ counts, sink states and orphans.
    ///
    /// # Errors
    /// None today; typed for the reads a status may need.
    pub fn status(&self) -> Result<Status> {
        let core = &self.core;
        let head = core.head().0;
        let sinks = core
            .sinks
            .iter()
            .map(|s| {
                let committed = s.committed.load(Ordering::Acquire);
                let (state, error) = s.state();
                SinkStatus {
                    name: s.name.to_string(),
                    state: state.to_string(),
                    error,
                    committed,
                    lag: core.lag(s),
                    dlq: core.store.dlq_count(&s.name),
                    delivered: s.delivered.load(Ordering::Relaxed),
                    dropped: s.dropped.load(Ordering::Relaxed),
                    dead_lettered: s.dead_lettered.load(Ordering::Relaxed),
                    retries: s.retries.load(Ordering::Relaxed),
                    filtered: s.filtered.load(Ordering::Relaxed),
                    filter: s.cfg.filter.as_ref().map(|f| f.to_string()),
                    paused_at_ms: *s.paused_at_ms.lock(),
                    oldest_pending_ms: s.oldest.lock().map(|r| r.appended_at_ms),
                }
            })
            .collect();
        let retention = core.cfg.orphan_retention.as_millis() as u64;
        let orphans = core
            .orphans
            .lock()
            .iter()
            .map(|o| OrphanStatus {
                name: o.name.to_string(),
                offset: o.offset.0,
                orphaned_at_ms: o.since_ms,
                forget_at_ms: o.since_ms.saturating_add(retention),
            })
            .collect();
        Ok(Status {
            log_id: core.log_id.simple().to_string(),
            head,
            sinks,
            orphans,
        })
    }

    /// Whether every sink can still deliver: false once one stopped on data
    /// it cannot read, or the store failed. For a health endpoint.
    pub fn is_healthy(&self) -> bool {
        self.core.store.poisoned().is_none()
            && self.core.sinks.iter().all(|s| s.corrupt.lock().is_none())
    }

    /// Up to `limit` records from `from` on, read from the log while the
    /// outbox runs (for an admin endpoint). Includes records not yet durable
    /// only if they are already in sled; published ones always. Holes and
    /// lost markers hold no records and are passed over.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when a value does not decode.
    pub fn read_log(&self, from: Seq, limit: usize) -> Result<Vec<LogRecord>> {
        let mut out = Vec::new();
        for batch in self.core.store.iter_batches(from) {
            let batch = batch?;
            for (i, e) in batch.entries.into_iter().enumerate() {
                let seq = Seq(batch.first.0 + i as u64);
                if seq < from {
                    continue;
                }
                if out.len() >= limit {
                    return Ok(out);
                }
                out.push(LogRecord {
                    seq,
                    delivery_id: e.delivery_id(seq, self.core.log_id),
                    appended_at_ms: batch.header.appended_at_ms,
                    target: e.target,
                    record: e.record,
                });
            }
        }
        Ok(out)
    }

    /// The data directory's identity and extent.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the first or last value does not decode.
    pub fn meta(&self) -> Result<Meta> {
        let extent = self.core.store.extent()?;
        Ok(Meta {
            log_id: self.core.log_id,
            created_at_ms: self.core.store.created_at_ms(),
            first_seq: extent.first,
            next_seq: self.core.head().max(extent.end),
        })
    }

    /// DLQ entries of one sink (or all sinks), collected in memory. For a
    /// DLQ that may be large, page through it with [`Outbox::dlq_page`].
    ///
    /// # Errors
    /// [`Error::Corrupted`] when an entry does not decode.
    pub fn dlq_list(&self, sink: Option<&SinkName>) -> Result<Vec<DlqEntry>> {
        self.core.store.dlq_list(sink)
    }

    /// One page of the DLQ of `sink`, from seq `from`: the entries `keep`
    /// accepts, at most `max_entries` or until their records reach
    /// `max_bytes`; the page's `next` is where the following page starts.
    /// Memory stays bounded by a page however large the DLQ.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when an entry does not decode.
    pub fn dlq_page(
        &self,
        sink: &SinkName,
        from: Seq,
        keep: impl FnMut(&DlqEntry) -> bool,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<crate::store::DlqPage> {
        self.core
            .store
            .dlq_page(sink, from, keep, max_entries, max_bytes)
    }

    /// The seqs of the DLQ entries of `sink` that `keep` accepts, at most
    /// `limit`, streamed from the tree: what a filtered redrive or purge
    /// selects.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when an entry does not decode.
    pub fn dlq_select(
        &self,
        sink: &SinkName,
        keep: impl FnMut(&DlqEntry) -> bool,
        limit: usize,
    ) -> Result<Vec<Seq>> {
        self.core.store.dlq_select(sink, keep, limit)
    }

    /// Streams the DLQ entries of one sink (or all sinks) in key order.
    pub fn dlq_iter(&self, sink: Option<&SinkName>) -> impl Iterator<Item = Result<DlqEntry>> + '_ {
        self.core.store.dlq_iter(sink)
    }

    /// The DLQ entry of `sink` at `seq`, if any.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the entry does not decode.
    pub fn dlq_get(&self, sink: &SinkName, seq: Seq) -> Result<Option<DlqEntry>> {
        self.core.store.dlq_get(sink, seq)
    }

    /// How many DLQ entries `sink` has (configured or orphaned).
    pub fn dlq_count(&self, sink: &SinkName) -> usize {
        self.core.store.dlq_count(sink)
    }

    /// Moves DLQ entries of `sink` (those at `seqs`, or all) back into the
    /// log for that sink only, keeping their delivery ids. Each chunk of the
    /// move (at most 32 MiB of records) appends and removes in one
    /// transaction, so every entry is in exactly one of the two. Returns how
    /// many moved, once all of it is durable.
    ///
    /// # Errors
    /// [`Error::UnknownSink`] when `sink` is not configured; storage errors.
    pub async fn dlq_redrive(&self, sink: &SinkName, seqs: Option<Vec<Seq>>) -> Result<usize> {
        if !self.core.sinks.iter().any(|s| &s.name == sink) {
            return Err(Error::UnknownSink(sink.to_string()));
        }
        if self.core.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let (reply, rx) = oneshot::channel();
        self.core
            .append_tx
            .send(AppendReq::Redrive {
                sink: sink.clone(),
                which: match seqs {
                    Some(s) => Selection::Seqs(s),
                    None => Selection::All,
                },
                reply,
            })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Removes DLQ entries of `sink` (those at `seqs`, or all) and makes the
    /// removal durable. Returns how many were removed.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] once shutdown has begun; storage errors.
    pub async fn dlq_purge(&self, sink: &SinkName, seqs: Option<Vec<Seq>>) -> Result<usize> {
        if self.core.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let which = match seqs {
            Some(s) => Selection::Seqs(s),
            None => Selection::All,
        };
        let n = self.core.store.dlq_purge(sink, &which)?;
        self.core.durability.sync().await?;
        Ok(n)
    }

    /// Forgets an orphaned sink: its offset and membership go, durably, and
    /// its backlog no longer holds back truncation. Returns the offset it
    /// had.
    ///
    /// # Errors
    /// [`Error::Rejected`] when `sink` is configured (stop using it in the
    /// configuration first); [`Error::UnknownSink`] when it is not an
    /// orphan; storage errors.
    pub async fn forget_orphan(&self, sink: &SinkName) -> Result<Seq> {
        if self.core.sinks.iter().any(|s| &s.name == sink) {
            return Err(Error::Rejected(format!(
                "sink `{sink}` is configured; only an orphan (a sink no longer configured) can be forgotten"
            )));
        }
        if !self.core.orphans.lock().iter().any(|o| &o.name == sink) {
            return Err(Error::UnknownSink(sink.to_string()));
        }
        let store = self.core.store.clone();
        let name = sink.clone();
        let offset = tokio::task::spawn_blocking(move || {
            let o = store.forget(&name)?;
            store.sink_state_forget(&name)?;
            Ok::<_, Error>(o)
        })
        .await
        .map_err(|e| Error::Storage(format!("forget task failed: {e}")))??;
        self.core.orphans.lock().retain(|o| &o.name != sink);
        tracing::warn!(sink = %sink, offset = offset.0, "orphaned sink forgotten; its backlog no longer holds back truncation");
        Ok(offset)
    }

    /// Stops accepting records, lets the sinks catch up for at most
    /// `drain_timeout`, then stops them. What was not delivered stays in the
    /// log and is replayed on the next open; its tokens are never released.
    /// The data directory is released when the `Outbox` is dropped (or use
    /// [`Outbox::close`], which also waits for that).
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] when called twice; [`Error::Poisoned`] when
    /// the final flush fails.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future part way leaves the outbox
    /// stopping; drop the `Outbox` too, which stops what is left.
    pub async fn shutdown(&self, drain_timeout: Duration) -> Result<ShutdownReport> {
        let Some(tasks) = self.tasks.lock().take() else {
            return Err(Error::ShuttingDown);
        };
        let core = &self.core;
        core.closing.store(true, Ordering::Release);
        core.room.notify_waiters();
        let deadline = tokio::time::Instant::now() + drain_timeout;
        // Everything queued before Stop is appended and answered.
        let _ = core.append_tx.send(AppendReq::Stop).await;
        let target = tasks.appender.await.unwrap_or(Seq(0));
        // Let the completion task publish what the appender wrote.
        let mut head_rx = core.head.subscribe();
        let _ = tokio::time::timeout_at(deadline, head_rx.wait_for(|h| *h >= target)).await;
        core.drain.cancel();
        let mut workers = tasks.workers;
        // A handle is popped once awaited: awaiting it again would panic.
        let drained = tokio::time::timeout_at(deadline, async {
            while let Some(w) = workers.last_mut() {
                let _ = w.await;
                workers.pop();
            }
        })
        .await
        .is_ok();
        if !drained {
            core.cancel.cancel();
            // Cancelled workers stop at once, save a sink commit that gets
            // a grace period; past that, stop them where they stand.
            for mut w in workers {
                if tokio::time::timeout(WORKER_STOP, &mut w).await.is_err() {
                    tracing::warn!("a worker did not stop after cancel; aborting it");
                    w.abort();
                    let _ = w.await;
                }
            }
        }
        tasks.truncator.abort();
        let _ = tasks.truncator.await;
        // Every worker commit was sent before this marker, so the completion
        // task has applied them all when it stops.
        let _ = core.done_tx.send(Completion::Finish);
        let _ = tasks.completion.await;
        let mut flushed = core.durability.sync().await;
        let head = core.head();
        if flushed.is_ok() && target <= head {
            // Every receipt is durable and below the head: the seqs
            // reserved beyond it were never used, and are given back so a
            // clean restart does not skip them.
            let store = core.store.clone();
            flushed = tokio::task::spawn_blocking(move || store.reserve_seqs(head))
                .await
                .map_err(|e| Error::Storage(format!("shutdown task failed: {e}")))
                .and_then(|r| r);
        }
        core.durability.stop();
        let pending = core
            .sinks
            .iter()
            .map(|s| (s.name.clone(), core.lag(s)))
            .collect::<Vec<_>>();
        let corrupt = core
            .sinks
            .iter()
            .filter_map(|s| s.corrupt.lock().clone().map(|why| (s.name.clone(), why)))
            .collect::<Vec<_>>();
        flushed?;
        Ok(ShutdownReport {
            drained: drained && pending.iter().all(|(_, n)| *n == 0),
            pending,
            corrupt,
        })
    }

    /// [`Outbox::shutdown`], then drops the handle and waits until the data
    /// directory is released, so it can be opened again at once.
    ///
    /// # Errors
    /// As [`Outbox::shutdown`].
    pub async fn close(self, drain_timeout: Duration) -> Result<ShutdownReport> {
        let report = self.shutdown(drain_timeout).await;
        self.release().await;
        report
    }

    /// Drops this handle and waits until no task holds the store, so sled's
    /// lock is gone when this returns.
    async fn release(self) {
        self.core.durability.stop();
        let mut core = self.core.clone();
        drop(self);
        loop {
            match Arc::try_unwrap(core) {
                Ok(c) => {
                    let store = c.store.clone();
                    drop(c);
                    // A blocking read may still hold the store for a moment.
                    while Arc::strong_count(&store) > 1 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let path = store.path().to_path_buf();
                    drop(store);
                    // sled's own I/O threads can keep its file, and so its
                    // lock, open a little after the last handle is gone.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                    while crate::store::is_locked(&path) && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    return;
                }
                Err(c) => {
                    core = c;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
}

impl<T: Send + 'static> Drop for Outbox<T> {
    fn drop(&mut self) {
        // Dropped without shutdown: stop the tasks where they are. Nothing is
        // lost: undelivered records stay in the log, their tokens unreleased.
        if let Some(tasks) = self.tasks.lock().take() {
            self.core.stop_now(&tasks);
        }
    }
}

/// The first 16 bytes of SHA-256 over the records' payloads and headers,
/// each length-prefixed, so a key reused for other content is told apart.
fn digest<T>(items: &[(Record, Vec<T>)]) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (r, _) in items {
        h.update((r.headers.len() as u64).to_be_bytes());
        for (k, v) in &r.headers {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k.as_bytes());
            h.update((v.len() as u64).to_be_bytes());
            h.update(v.as_bytes());
        }
        h.update((r.payload.len() as u64).to_be_bytes());
        h.update(&r.payload);
    }
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}
