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
mod completion;
mod open;
mod tail;
mod truncate;

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
use crate::store::{Batch, Durability, Store};
use crate::types::{DeliveryId, Receipt, Record, Seq, SinkName};

pub use open::OutboxBuilder;
pub(crate) use tail::{ByteIndex, TailCache};

/// A request to the appender.
pub(crate) enum AppendReq<T> {
    /// Records from one `dispatch*` call; appended together or not at all.
    Records {
        items: Vec<(Record, Vec<T>)>,
        bytes: usize,
        reply: oneshot::Sender<Result<Seq>>,
        at: Instant,
    },
    /// Move DLQ entries of one sink back into the log, for that sink only.
    Redrive {
        sink: SinkName,
        seqs: Option<Vec<Seq>>,
        reply: oneshot::Sender<Result<usize>>,
    },
    /// Finish what was queued before this, then stop.
    Stop,
}

/// Work for the completion task, processed in the order sent.
pub(crate) enum Completion<T> {
    Appended {
        ticket: crate::store::Ticket,
        batches: Vec<Arc<Batch>>,
        tokens: Vec<(Seq, Vec<T>)>,
        replies: Vec<(oneshot::Sender<Result<Seq>>, Seq)>,
        at: Instant,
    },
    Committed {
        ticket: crate::store::Ticket,
        sink: usize,
        offset: Seq,
    },
    /// Shutdown: everything before this has been sent.
    Finish,
}

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
}

impl<T> Core<T> {
    pub fn head(&self) -> Seq {
        *self.head.borrow()
    }

    /// The first Block sink whose lag is at its limit.
    pub fn full_sink(&self) -> Option<&SinkSlot> {
        let head = self.head().0;
        self.sinks.iter().find(|s| {
            if s.cfg.on_full != OnFull::Block {
                return false;
            }
            let committed = s.committed.load(Ordering::Acquire);
            let lag = head.saturating_sub(committed);
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
    /// batch to the head (exact but for gaps, which are rare), bytes as that
    /// times the mean record size. Counting exactly would mean reading every
    /// value, which pulls the whole log into sled's cache.
    pub fn report_log_size(&self, first: Option<Seq>) {
        let head = self.head().0;
        let records = first.map_or(0, |f| head.saturating_sub(f.0));
        let bytes = records.saturating_mul(self.mean_record_bytes.load(Ordering::Relaxed));
        self.metrics.log_size(records, bytes);
    }

    /// Refuses new work and aborts every task where it stands, as a crash
    /// would: nothing drains, nothing more is committed.
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
}

/// Per-sink figures, as [`Outbox::status`] reports them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SinkStatus {
    /// The sink.
    pub name: String,
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
    /// Sinks with an offset on disk that are not configured: they hold back
    /// neither truncation nor acks.
    pub orphans: Vec<(String, u64)>,
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
    /// [`Error::Rejected`] (too large), [`Error::ShuttingDown`],
    /// [`Error::Poisoned`] or [`Error::Io`]. Nothing is appended on error,
    /// and the tokens are dropped, not released.
    pub async fn dispatch(&self, record: Record, tokens: Vec<T>) -> Result<Receipt> {
        let first = self.append(vec![(record, tokens)]).await?;
        Ok(Receipt {
            seq: first,
            delivery_id: self.core.delivery_id(first),
        })
    }

    /// Appends records atomically, as one log value: all or none. Returns one
    /// receipt per record, in order, with consecutive seqs.
    ///
    /// # Errors
    /// As [`Outbox::dispatch`].
    pub async fn dispatch_many(&self, items: Vec<(Record, Vec<T>)>) -> Result<Vec<Receipt>> {
        let n = items.len() as u64;
        if n == 0 {
            return Ok(Vec::new());
        }
        let first = self.append(items).await?;
        Ok((0..n)
            .map(|i| {
                let seq = Seq(first.0 + i);
                Receipt {
                    seq,
                    delivery_id: self.core.delivery_id(seq),
                }
            })
            .collect())
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

    async fn append(&self, items: Vec<(Record, Vec<T>)>) -> Result<Seq> {
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
        self.wait_for_room().await?;
        let (reply, rx) = oneshot::channel();
        core.append_tx
            .send(AppendReq::Records {
                items,
                bytes,
                reply,
                at: Instant::now(),
            })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    async fn wait_for_room(&self) -> Result<()> {
        let core = &self.core;
        loop {
            if core.closing.load(Ordering::Acquire) {
                return Err(Error::ShuttingDown);
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

    /// Offsets, lag and DLQ counts.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when an orphan's offset does not decode.
    pub fn status(&self) -> Result<Status> {
        let core = &self.core;
        let head = core.head().0;
        let sinks = core
            .sinks
            .iter()
            .map(|s| {
                let committed = s.committed.load(Ordering::Acquire);
                SinkStatus {
                    name: s.name.to_string(),
                    committed,
                    lag: head.saturating_sub(committed),
                    dlq: core.store.dlq_count(&s.name),
                    delivered: s.delivered.load(Ordering::Relaxed),
                    dropped: s.dropped.load(Ordering::Relaxed),
                    dead_lettered: s.dead_lettered.load(Ordering::Relaxed),
                    retries: s.retries.load(Ordering::Relaxed),
                }
            })
            .collect();
        let orphans = core
            .store
            .offsets()?
            .into_iter()
            .filter(|(n, _)| !core.sinks.iter().any(|s| &s.name == n))
            .map(|(n, o)| (n.to_string(), o.next))
            .collect();
        Ok(Status {
            log_id: core.log_id.simple().to_string(),
            head,
            sinks,
            orphans,
        })
    }

    /// Up to `limit` records from `from` on, read from the log while the
    /// outbox runs (for an admin endpoint). Includes records not yet durable
    /// only if they are already in sled; published ones always.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when a batch does not decode.
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
                    delivery_id: self.core.delivery_id(e.origin_seq(seq)),
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
    /// [`Error::Corrupted`] when the first or last batch does not decode.
    pub fn meta(&self) -> Result<Meta> {
        let extent = self.core.store.extent()?;
        Ok(Meta {
            log_id: self.core.log_id,
            created_at_ms: self.core.store.created_at_ms(),
            first_seq: extent.first,
            next_seq: extent.next,
        })
    }

    /// DLQ entries of one sink (or all sinks).
    ///
    /// # Errors
    /// [`Error::Corrupted`] when an entry does not decode.
    pub fn dlq_list(&self, sink: Option<&SinkName>) -> Result<Vec<DlqEntry>> {
        self.core.store.dlq_list(sink)
    }

    /// Moves DLQ entries of `sink` (those at `seqs`, or all) back into the
    /// log for that sink only, keeping their delivery ids. The append and
    /// the DLQ removal are one transaction. Returns how many moved.
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
                seqs,
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
    /// Storage errors.
    pub async fn dlq_purge(&self, sink: &SinkName, seqs: Option<Vec<Seq>>) -> Result<usize> {
        let n = self.core.store.dlq_purge(sink, seqs.as_deref())?;
        self.core.durability.sync().await?;
        Ok(n)
    }

    /// Stops accepting records, lets the sinks catch up for at most
    /// `drain_timeout`, then stops them. What was not delivered stays in the
    /// log and is replayed on the next open; its tokens are never released.
    /// The data directory is released when the `Outbox` is dropped (or use
    /// [`Outbox::close`], which also waits for that).
    ///
    /// # Errors
    /// [`Error::Poisoned`] when the final flush fails.
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
        let flushed = core.durability.sync().await;
        core.durability.stop();
        let head = core.head().0;
        let pending = core
            .sinks
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    head.saturating_sub(s.committed.load(Ordering::Acquire)),
                )
            })
            .collect::<Vec<_>>();
        flushed?;
        Ok(ShutdownReport {
            drained: drained && pending.iter().all(|(_, n)| *n == 0),
            pending,
        })
    }
}

impl<T: Send + 'static> Outbox<T> {
    /// Stops every task where it stands, as a crash would: no drain, no
    /// final commit. Returns once the data directory is released, so it can
    /// be opened again at once. Meant for tests of replay.
    pub async fn kill(self) {
        let tasks = self.tasks.lock().take();
        if let Some(tasks) = tasks {
            self.core.stop_now(&tasks);
            let _ = tasks.appender.await;
            let _ = tasks.completion.await;
            let _ = tasks.truncator.await;
            for w in tasks.workers {
                let _ = w.await;
            }
        }
        self.release().await;
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
