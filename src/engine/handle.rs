//! The handle: [`Outbox`] and what an embedder calls on it to dispatch,
//! pause and resume sinks, read the log and manage the DLQ.
//!
//! Invariants:
//! - a dispatch returns a receipt only once the appender answered it, that
//!   is once its records are durable under the sync policy;
//! - a dispatch waits (never fails) while a Block sink is full, and fails
//!   with `ShuttingDown` once shutdown has begun or `Poisoned` once the
//!   store failed, rather than wait forever; a `try_dispatch*` never waits
//!   to be queued;
//! - a failed dispatch hands its records and tokens back exactly when none
//!   of them was written.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::breaker::BreakerState;
use super::core::{Core, SinkSlot};
use super::dispatch_error::{DispatchError, Items};
use super::msg::{AppendReq, Appended};
use super::receipt_future::ReceiptFuture;
use crate::dead_letter::{DeadLetter, DeadLetterPage, DeadLetters};
use crate::error::{ConfigError, DispatchErrorKind, Error, Result, StoreError};
use crate::log_record::LogRecord;
use crate::store::Selection;
use crate::types::{DeliveryId, Receipt, Record, Seq, SinkName};

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

/// What [`Outbox::dispatch_once`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatched {
    /// One receipt per record, in order.
    pub receipts: Vec<Receipt>,
    /// The key was seen within the idempotency window: nothing was
    /// appended, and these are the receipts of the first dispatch.
    pub duplicate: bool,
}

/// The handles of the engine's tasks, held until the outbox stops.
pub(super) struct Tasks {
    pub appender: JoinHandle<Seq>,
    pub completion: JoinHandle<()>,
    pub workers: Vec<JoinHandle<()>>,
    pub truncator: JoinHandle<()>,
}

/// What the clones of one [`Outbox`] share: the tasks, until a shutdown
/// takes them. Dropped with the last clone, it stops whatever still runs
/// where it stands (`lifecycle.rs`).
pub(super) struct Running<T: Send + 'static> {
    pub core: Arc<Core<T>>,
    pub tasks: Mutex<Option<Tasks>>,
}

/// A durable outbox. `T` is the embedder's ack token type.
///
/// Open one with [`Outbox::builder`]. Dispatch from any number of tasks;
/// concurrent dispatches share group commits. Tokens come back on the
/// receiver returned by [`OutboxBuilder::open`](crate::OutboxBuilder::open).
/// An `Outbox` is a handle: its clones share one engine.
///
/// # Stopping
/// [`Outbox::shutdown`] is the one way to stop: it drains for at most its
/// timeout, stops the tasks and, called on the last handle, returns only
/// once the data directory is released, so it can be opened again at once.
/// A holder of an `Arc<Outbox>` shuts down a clone,
/// `Outbox::clone(&outbox).shutdown(timeout)`; the handles left answer
/// dispatches and operator calls with
/// [`DispatchErrorKind::ShuttingDown`], still read the log, the DLQ and
/// the status, and hold the directory until the last is dropped.
///
/// # Dropping
/// Dropping the last handle without a shutdown stops every task where it
/// stands: nothing is drained, a delivery in progress is abandoned, and
/// nothing more is committed. A record that was receipted is never lost:
/// what was not delivered stays in the log and is delivered again at the
/// next open, with the same delivery id, and its tokens are dropped, never
/// released, so the source delivers them again. Dropping does not wait for
/// sled to release the directory's lock, so an open of the same directory
/// right after may fail with [`StoreError::Locked`] for a moment.
pub struct Outbox<T: Send + 'static = ()> {
    pub(super) core: Arc<Core<T>>,
    pub(super) running: Arc<Running<T>>,
}

impl<T: Send + 'static> Clone for Outbox<T> {
    /// Another handle to the same engine.
    fn clone(&self) -> Self {
        Outbox {
            core: self.core.clone(),
            running: self.running.clone(),
        }
    }
}

impl<T: Send + 'static> Outbox<T> {
    /// The data directory's log id.
    pub fn log_id(&self) -> Uuid {
        self.core.log_id
    }

    /// Appends one record and returns once it is durable under the sync
    /// policy. `tokens` are released on the ack channel once every sink's
    /// durable offset has passed the record. While a Block sink is full it
    /// waits for room; [`Outbox::try_dispatch`] answers at once instead.
    ///
    /// # Errors
    /// A [`DispatchError`] holding the error and, when nothing was appended,
    /// the record and its tokens ([`DispatchError::into_items`]):
    /// - [`DispatchErrorKind::Rejected`] (too large),
    ///   [`DispatchErrorKind::ShuttingDown`], or [`StoreError::Poisoned`]
    ///   found before the request was sent: nothing was appended and the
    ///   items come back.
    /// - [`StoreError::Poisoned`] or [`StoreError::Io`] once the appender
    ///   took the request: the store failed while writing or flushing. The
    ///   record may or may not have reached the disk; if it did, it is
    ///   delivered after the outbox is reopened, so a retry may deliver it
    ///   twice (use [`Outbox::dispatch_once`] with a key to make retries
    ///   safe). Its seq is never given to another record. No items come back,
    ///   and the tokens are dropped, never released.
    /// - [`DispatchErrorKind::ShuttingDown`] without items: the `Outbox` was
    ///   dropped (not shut down) while the appender held the request, which
    ///   may have been written. (A request still queued when a shutdown stops
    ///   the appender comes back with its items.)
    ///
    /// # Cancel safety
    /// Not cancel safe: if the future is dropped after the request reached
    /// the appender, the record is appended (and delivered) all the same;
    /// only the receipt is lost. Dropped while waiting for room, nothing is
    /// appended and the record and tokens are dropped.
    pub async fn dispatch(
        &self,
        record: Record,
        tokens: Vec<T>,
    ) -> Result<Receipt, DispatchError<T>> {
        let fut = self.admit(vec![(record, tokens)], None).await?;
        fut.map(one).await
    }

    /// Appends records atomically: all or none. Returns one receipt per
    /// record, in order, with consecutive seqs.
    ///
    /// # Errors
    /// As [`Outbox::dispatch`]; the items come back all together.
    pub async fn dispatch_many(&self, items: Items<T>) -> Result<Vec<Receipt>, DispatchError<T>> {
        self.admit(items, None).await?.map(many).await
    }

    /// Appends records atomically unless `key` was used within the
    /// idempotency window ([`crate::OutboxConfig::idempotency_window`]): then
    /// nothing is appended, the first dispatch's receipts come back with
    /// `duplicate` set, and `tokens` are held against the first dispatch's
    /// records (released at once if every sink has passed them). The key is
    /// durable with the records, in the same group commit.
    ///
    /// # Errors
    /// [`DispatchErrorKind::Rejected`] when `key` is empty or longer than
    /// 1 KiB; [`DispatchErrorKind::KeyReused`] when it was used within the
    /// window for different records (compared by a digest of the payloads
    /// and headers); both hand the items back. Otherwise as
    /// [`Outbox::dispatch`].
    pub async fn dispatch_once(
        &self,
        key: &str,
        items: Items<T>,
    ) -> Result<Dispatched, DispatchError<T>> {
        self.admit(items, Some(key)).await?.await
    }

    /// [`Outbox::dispatch`] without waiting for room: the record is queued
    /// for the appender at once or handed back at once. The returned future
    /// resolves to the receipt once the record is durable; admission never
    /// waits, durability is awaited by whoever wants the receipt.
    ///
    /// # Errors
    /// At once, with the record and tokens back (nothing was appended):
    /// [`DispatchErrorKind::Full`] naming the first Block sink at its lag
    /// limit; [`DispatchErrorKind::Busy`] when the appender's queue is full;
    /// [`DispatchErrorKind::ShuttingDown`]; [`StoreError::Poisoned`];
    /// [`DispatchErrorKind::Rejected`] (too large). The future resolves to
    /// the errors of [`ReceiptFuture`].
    ///
    /// # Cancel safety
    /// Dropping the future after `Ok`: the record is appended, delivered
    /// and its tokens released all the same; only the receipt is lost.
    pub fn try_dispatch(
        &self,
        record: Record,
        tokens: Vec<T>,
    ) -> Result<ReceiptFuture<T, Receipt>, DispatchError<T>> {
        Ok(self.try_admit(vec![(record, tokens)], None)?.map(one))
    }

    /// [`Outbox::dispatch_many`] without waiting for room; see
    /// [`Outbox::try_dispatch`].
    ///
    /// # Errors
    /// As [`Outbox::try_dispatch`]; the items come back all together.
    ///
    /// # Cancel safety
    /// As [`Outbox::try_dispatch`].
    pub fn try_dispatch_many(
        &self,
        items: Items<T>,
    ) -> Result<ReceiptFuture<T, Vec<Receipt>>, DispatchError<T>> {
        Ok(self.try_admit(items, None)?.map(many))
    }

    /// [`Outbox::dispatch_once`] without waiting for room; see
    /// [`Outbox::try_dispatch`]. A duplicate key is found by the appender, so
    /// it resolves through the future (`duplicate` set); a reused key
    /// resolves to [`DispatchErrorKind::KeyReused`] with the items back.
    ///
    /// # Errors
    /// As [`Outbox::try_dispatch`], and [`DispatchErrorKind::Rejected`] when
    /// `key` is empty or longer than 1 KiB.
    ///
    /// # Cancel safety
    /// As [`Outbox::try_dispatch`].
    pub fn try_dispatch_once(
        &self,
        key: &str,
        items: Items<T>,
    ) -> Result<ReceiptFuture<T, Dispatched>, DispatchError<T>> {
        self.try_admit(items, Some(key))
    }

    /// The first Block sink that is full right now, if any.
    /// [`Outbox::try_dispatch`] answers [`DispatchErrorKind::Full`] with it.
    pub fn full_sink(&self) -> Option<SinkName> {
        self.core.full_sink().map(|s| s.name.clone())
    }

    /// Whether shutdown has begun.
    pub fn is_closing(&self) -> bool {
        self.core.closing.load(Ordering::Acquire)
    }

    /// Checks `items` and `key`, waits for room, and queues the request.
    async fn admit(
        &self,
        items: Items<T>,
        key: Option<&str>,
    ) -> Result<ReceiptFuture<T, Dispatched>, DispatchError<T>> {
        let (req, fut) = self.request(items, key)?;
        let Some(req) = req else { return Ok(fut) };
        if let Err(e) = self.wait_for_room().await {
            return Err(DispatchError::returned(e, req.into_items()));
        }
        match self.core.append_tx.send(req).await {
            Ok(()) => Ok(fut),
            Err(mpsc::error::SendError(req)) => Err(DispatchError::returned(
                DispatchErrorKind::ShuttingDown,
                req.into_items(),
            )),
        }
    }

    /// Checks `items` and `key` and queues the request, or hands them back,
    /// without waiting.
    fn try_admit(
        &self,
        items: Items<T>,
        key: Option<&str>,
    ) -> Result<ReceiptFuture<T, Dispatched>, DispatchError<T>> {
        let (req, fut) = self.request(items, key)?;
        let Some(req) = req else { return Ok(fut) };
        if let Some(e) = self.refusal() {
            return Err(DispatchError::returned(e, req.into_items()));
        }
        match self.core.append_tx.try_send(req) {
            Ok(()) => Ok(fut),
            Err(mpsc::error::TrySendError::Full(req)) => Err(DispatchError::returned(
                DispatchErrorKind::Busy,
                req.into_items(),
            )),
            Err(mpsc::error::TrySendError::Closed(req)) => Err(DispatchError::returned(
                DispatchErrorKind::ShuttingDown,
                req.into_items(),
            )),
        }
    }

    /// Validates a dispatch and builds its request (none when there are no
    /// records: the future is answered already) and its receipt future.
    fn request(
        &self,
        items: Items<T>,
        key: Option<&str>,
    ) -> Result<Admission<T>, DispatchError<T>> {
        let core = &self.core;
        if let Some(key) = key
            && (key.is_empty() || key.len() > 1024)
        {
            return Err(DispatchError::returned(
                DispatchErrorKind::Rejected(format!(
                    "idempotency key of {} bytes; it must be 1 to 1024 bytes",
                    key.len()
                )),
                items,
            ));
        }
        if items.is_empty() {
            let (reply, rx) = oneshot::channel();
            let _ = reply.send(Ok(Appended {
                first: Seq(0),
                duplicate: false,
            }));
            return Ok((None, ReceiptFuture::new(rx, Vec::new(), core.log_id, Some)));
        }
        let mut bytes = 0;
        for (i, (r, _)) in items.iter().enumerate() {
            let size = r.size();
            if size > core.cfg.max_record_bytes {
                let e = DispatchErrorKind::Rejected(format!(
                    "record {i} is {size} bytes; max_record_bytes is {}",
                    core.cfg.max_record_bytes
                ));
                return Err(DispatchError::returned(e, items));
            }
            bytes += size;
        }
        let given: Vec<Option<DeliveryId>> = items.iter().map(|(r, _)| r.delivery_id()).collect();
        let key = key.map(|k| (k.as_bytes().to_vec(), digest(&items)));
        let (reply, rx) = oneshot::channel();
        let req = AppendReq::Records {
            items,
            bytes,
            key,
            reply,
            at: Instant::now(),
        };
        Ok((Some(req), ReceiptFuture::new(rx, given, core.log_id, Some)))
    }

    /// Why a dispatch cannot be queued right now: shutdown has begun, the
    /// store failed, or a Block sink is full.
    fn refusal(&self) -> Option<DispatchErrorKind> {
        let core = &self.core;
        if core.closing.load(Ordering::Acquire) {
            return Some(DispatchErrorKind::ShuttingDown);
        }
        if let Some(why) = core.store.poisoned() {
            // The worker that would make room has stopped: waiting would be
            // forever.
            return Some(StoreError::Poisoned(why).into());
        }
        core.full_sink().map(|s| DispatchErrorKind::Full {
            sink: s.name.clone(),
        })
    }

    /// Waits while a Block sink is full.
    ///
    /// # Errors
    /// [`DispatchErrorKind::ShuttingDown`] or [`StoreError::Poisoned`], at
    /// once.
    async fn wait_for_room(&self) -> Result<(), DispatchErrorKind> {
        loop {
            match self.refusal() {
                None => return Ok(()),
                Some(DispatchErrorKind::Full { .. }) => {}
                Some(e) => return Err(e),
            }
            let notified = self.core.room.notified();
            if self.core.full_sink().is_none() {
                return Ok(());
            }
            // The timeout only guards against a missed wake-up.
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// Pauses sink `sink` by hand: no delivery starts (one already sent
    /// finishes), nothing is dead-lettered for the pause, its records
    /// stay in the log and its lag grows; no probe resumes it, only
    /// [`Outbox::resume_sink`]. The pause is durable when this returns and
    /// kept across restarts. Returns when it was paused (ms since the Unix
    /// epoch): now, or the time of an earlier pause that still holds.
    ///
    /// # Errors
    /// [`ConfigError::UnknownSink`] when it is not configured;
    /// [`DispatchErrorKind::ShuttingDown`] once shutdown has begun; storage
    /// errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped after the pause was written but before it
    /// was durable, the pause may hold after the next restart while this
    /// run keeps delivering. Call it again to finish.
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
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`Outbox::pause_sink`]: dropped part way, the
    /// sink may stay paused in this run while the removal reaches the disk.
    /// Call it again to finish.
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
            return Err(DispatchErrorKind::ShuttingDown.into());
        }
        let store = self.core.store.clone();
        let name = sink.clone();
        tokio::task::spawn_blocking(move || store.set_paused(&name, p))
            .await
            .map_err(|e| StoreError::task("pause", e))??;
        self.core.durability.sync().await
    }

    fn slot(&self, sink: &SinkName) -> Result<&SinkSlot> {
        self.core
            .sinks
            .iter()
            .find(|s| &s.name == sink)
            .ok_or_else(|| ConfigError::UnknownSink(sink.to_string()).into())
    }

    /// Up to `limit` records from `from` on, read from the log while the
    /// outbox runs (for an admin endpoint). Includes records not yet durable
    /// only if they are already in sled; published ones always. Holes and
    /// lost markers hold no records and are passed over.
    ///
    /// # Errors
    /// [`StoreError::Corrupted`] when a value does not decode.
    pub fn read_log(&self, from: Seq, limit: usize) -> Result<Vec<LogRecord>> {
        let mut out = Vec::new();
        // The limit is checked when the next record comes, as it always
        // was: a value that does not decode before it is still an error.
        for r in crate::log_record::records(&self.core.store, self.core.log_id, from) {
            let r = r?;
            if out.len() >= limit {
                break;
            }
            out.push(r);
        }
        Ok(out)
    }

    /// The data directory's identity and extent.
    ///
    /// # Errors
    /// [`StoreError::Corrupted`] when the first or last value does not decode.
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
    /// [`StoreError::Corrupted`] when an entry does not decode.
    pub fn dlq_list(&self, sink: Option<&SinkName>) -> Result<Vec<DeadLetter>> {
        self.dlq().list(sink)
    }

    /// The records `sink` is retrying, by seq, with their attempts so far:
    /// the stored retry states a restart resumes (only those at or above
    /// its durable offset). A record has one from its first failed attempt
    /// (written before the worker waits to retry) until the sink's offset
    /// passes it.
    ///
    /// # Errors
    /// [`crate::StoreError::Corrupted`] when a value does not decode.
    pub fn retrying(&self, sink: &SinkName) -> Result<Vec<crate::Retrying>> {
        crate::retrying::read(&self.core.store, sink)
    }

    fn dlq(&self) -> DeadLetters<'_> {
        DeadLetters::new(&self.core.store, self.core.log_id)
    }

    /// One page of the DLQ of `sink`, from seq `from`: the entries `keep`
    /// accepts, at most `max_entries` or until their records reach
    /// `max_bytes`; the page's `next` is where the following page starts.
    /// Memory stays bounded by a page however large the DLQ.
    ///
    /// # Errors
    /// [`StoreError::Corrupted`] when an entry does not decode.
    pub fn dlq_page(
        &self,
        sink: &SinkName,
        from: Seq,
        keep: impl FnMut(&DeadLetter) -> bool,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<DeadLetterPage> {
        let dlq = self.dlq();
        let page =
            self.core
                .store
                .dlq_page(sink, from, dlq.keep_stored(keep), max_entries, max_bytes)?;
        Ok(dlq.page_of(page))
    }

    /// The seqs of the DLQ entries of `sink` that `keep` accepts, at most
    /// `limit`, streamed from the tree: what a filtered redrive or purge
    /// selects.
    ///
    /// # Errors
    /// [`StoreError::Corrupted`] when an entry does not decode.
    pub fn dlq_select(
        &self,
        sink: &SinkName,
        keep: impl FnMut(&DeadLetter) -> bool,
        limit: usize,
    ) -> Result<Vec<Seq>> {
        self.dlq().select(sink, keep, limit)
    }

    /// Streams the DLQ entries of one sink (or all sinks) in key order.
    pub fn dlq_iter(
        &self,
        sink: Option<&SinkName>,
    ) -> impl Iterator<Item = Result<DeadLetter>> + '_ {
        self.dlq().iter(sink)
    }

    /// The DLQ entry of `sink` at `seq`, if any.
    ///
    /// # Errors
    /// [`StoreError::Corrupted`] when the entry does not decode.
    pub fn dlq_get(&self, sink: &SinkName, seq: Seq) -> Result<Option<DeadLetter>> {
        self.dlq().get(sink, seq)
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
    /// [`ConfigError::UnknownSink`] when `sink` is not configured; storage
    /// errors.
    ///
    /// # Cancel safety
    /// Cancel safe in effect: once the request reached the appender the
    /// redrive runs to the end whether or not the future is awaited; only
    /// the count is lost. Every entry is in the DLQ or back in the log,
    /// never both or neither.
    pub async fn dlq_redrive(&self, sink: &SinkName, seqs: Option<Vec<Seq>>) -> Result<usize> {
        if !self.core.sinks.iter().any(|s| &s.name == sink) {
            return Err(ConfigError::UnknownSink(sink.to_string()).into());
        }
        if self.core.closing.load(Ordering::Acquire) {
            return Err(DispatchErrorKind::ShuttingDown.into());
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
            .map_err(|_| DispatchErrorKind::ShuttingDown)?;
        rx.await.map_err(|_| DispatchErrorKind::ShuttingDown)?
    }

    /// Removes DLQ entries of `sink` (those at `seqs`, or all) and makes the
    /// removal durable. Returns how many were removed.
    ///
    /// # Errors
    /// [`DispatchErrorKind::ShuttingDown`] once shutdown has begun; storage
    /// errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: the entries are removed before the wait for
    /// durability, so a dropped future may leave them removed in this run
    /// yet back after a crash. Call it again: purging is idempotent.
    pub async fn dlq_purge(&self, sink: &SinkName, seqs: Option<Vec<Seq>>) -> Result<usize> {
        if self.core.closing.load(Ordering::Acquire) {
            return Err(DispatchErrorKind::ShuttingDown.into());
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
    /// [`DispatchErrorKind::Rejected`] when `sink` is configured (stop using
    /// it in the configuration first); [`ConfigError::UnknownSink`] when it
    /// is not an orphan; storage errors.
    ///
    /// # Cancel safety
    /// Cancel safe in effect: the removal runs on a blocking thread that
    /// finishes even if the future is dropped; the orphan may then still be
    /// listed in this run's status until the next open.
    pub async fn forget_orphan(&self, sink: &SinkName) -> Result<Seq> {
        if self.core.sinks.iter().any(|s| &s.name == sink) {
            return Err(DispatchErrorKind::Rejected(format!(
                "sink `{sink}` is configured; only an orphan (a sink no longer configured) can be forgotten"
            ))
            .into());
        }
        if !self.core.orphans.lock().iter().any(|o| &o.name == sink) {
            return Err(ConfigError::UnknownSink(sink.to_string()).into());
        }
        let store = self.core.store.clone();
        let name = sink.clone();
        let offset = tokio::task::spawn_blocking(move || {
            let o = store.forget(&name)?;
            store.sink_state_forget(&name)?;
            Ok::<_, Error>(o)
        })
        .await
        .map_err(|e| StoreError::task("forget", e))??;
        self.core.orphans.lock().retain(|o| &o.name != sink);
        tracing::warn!(sink = %sink, offset = offset.0, "orphaned sink forgotten; its backlog no longer holds back truncation");
        Ok(offset)
    }
}

/// A checked dispatch: the request to queue (none when there are no
/// records) and the future of its receipts.
type Admission<T> = (Option<AppendReq<T>>, ReceiptFuture<T, Dispatched>);

/// The single receipt of a one-record dispatch.
fn one(d: Dispatched) -> Option<Receipt> {
    d.receipts.into_iter().next()
}

/// The receipts of a dispatch.
fn many(d: Dispatched) -> Option<Vec<Receipt>> {
    Some(d.receipts)
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
