//! One worker per sink: reads from its offset, keeps up to `in_flight`
//! deliveries going, and commits its offset as the contiguous watermark of
//! what has finished.
//!
//! Invariants:
//! - records are started in seq order; under `ordering = strict` one at a
//!   time, so each is delivered, dead-lettered or passed over before the next is
//!   attempted; under `none`, up to `max_in_flight` at once, and a retried
//!   record does not hold up the others;
//! - the offset committed is the contiguous watermark ([`Window`]): every
//!   seq below it is delivered (and the sink's commit covering it has
//!   returned), dead-lettered, passed over or dropped; DLQ entries go in the same
//!   sled transaction as the offset that passes them;
//! - sink commits are grouped: one runs while deliveries go on, and the
//!   next covers everything that finished meanwhile (the file sink's fsync
//!   is shared by all of them);
//! - a record aimed at another sink (a redrive), filtered out by this sink's
//!   filter, or in a hole or lost marker is passed over, explicitly;
//!   nothing else is ever passed over: a gap in the log or a value that
//!   fails its checksum stops the sink as `corrupt` (its offset stays where
//!   it is, and what finished before is committed);
//! - when a sink commit fails, everything after the last committed offset
//!   is delivered again (the sink may have discarded it);
//! - on cancel, the worker drops what is in flight (it is delivered again
//!   at the next open) and commits what had finished, giving a running sink
//!   commit a short grace.

mod attempt;
mod commit;
mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;

use self::attempt::{Done, Job, Now};
use self::commit::{CommitResult, Committing};
use self::plan::{Progress, Room, Step};
use super::core::{Core, SinkSlot};
use super::window::Window;
use crate::codec::{DlqEntry, RetryState};
use crate::error::{Result, StoreError};
use crate::filter::Filter;
use crate::retry::RetryPolicy;
use crate::sink::Sink;
use crate::store::Batch;
use crate::types::Seq;

/// How long a sink's commit may still run once the outbox is cancelled.
const COMMIT_GRACE: Duration = Duration::from_secs(2);

/// Runs the worker for sink `idx` until drained, cancelled, or stopped on
/// damaged data.
pub(crate) async fn run<T: Send + 'static>(core: Arc<Core<T>>, idx: usize, sink: Arc<dyn Sink>) {
    let Some(slot) = core.sinks.get(idx) else {
        return;
    };
    let filter = match slot
        .cfg
        .filter
        .as_ref()
        .map(|f| Filter::new(f, &format!("sinks.{}.filter", slot.name)))
    {
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => {
            // Validated at open; kept as a stop rather than a panic.
            tracing::error!(sink = %slot.name, error = %e, "invalid filter; the sink delivers nothing");
            return;
        }
        None => None,
    };
    let start = Seq(slot.committed.load(Ordering::Acquire));
    let resumed = load_retries(&core, slot, start).await;
    let mut w = Worker {
        resumed,
        policy: Arc::new(RetryPolicy::from(&slot.cfg)),
        room: Room::of(&slot.cfg),
        window: Window::new(start),
        committed: start,
        cur: None,
        ahead: std::collections::VecDeque::new(),
        inflight: FuturesUnordered::new(),
        dead_lettered: Vec::new(),
        delivered_since: 0,
        oldest_ms: None,
        committing: None,
        read_failures: 0,
        retry_at: None,
        filter,
        stopping: false,
        core: core.clone(),
        idx,
        sink,
    };
    w.run().await;
}

struct Worker<T: Send + 'static> {
    /// Retry states kept by an earlier run, by seq: each record resumes
    /// its retries where they stood.
    resumed: BTreeMap<Seq, RetryState>,
    core: Arc<Core<T>>,
    idx: usize,
    sink: Arc<dyn Sink>,
    policy: Arc<RetryPolicy>,
    filter: Option<Filter>,
    /// Deliveries in flight and seqs started past the offset, at most.
    room: Room,
    window: Window,
    /// The offset this worker last committed (durable once its flush is).
    committed: Seq,
    /// The value holding `window.next()`, when fetched.
    cur: Option<Arc<Batch>>,
    /// Values read from sled past `cur` in the same read (a worker behind
    /// the tail cache reads runs, not one value per blocking task).
    ahead: std::collections::VecDeque<Arc<Batch>>,
    inflight: FuturesUnordered<BoxFuture<'static, Done>>,
    /// Records dead-lettered and not yet committed.
    dead_lettered: Vec<DlqEntry>,
    /// Deliveries finished since the last sink commit began.
    delivered_since: u64,
    /// Append time of the oldest record delivered since the last commit.
    oldest_ms: Option<u64>,
    committing: Option<Committing>,
    read_failures: u32,
    /// When to try again after a read error or a closed gate.
    retry_at: Option<tokio::time::Instant>,
    /// Stopped on damaged data: finish what is in flight, commit, return.
    stopping: bool,
}

impl<T: Send + 'static> Worker<T> {
    fn slot(&self) -> &SinkSlot {
        // `run` checked the index.
        &self.core.sinks[self.idx]
    }

    async fn run(&mut self) {
        let mut head_rx = self.core.head.subscribe();
        let mut draining = false;
        loop {
            if self.core.cancel.is_cancelled() {
                return self.stop_now().await;
            }
            self.apply_drop_floor();
            let head = *head_rx.borrow_and_update();
            if !self.stopping {
                self.dispatch(head).await;
            }
            self.maybe_commit();
            let progress = Progress {
                idle: self.inflight.is_empty(),
                committing: self.committing.is_some(),
                next: self.window.next(),
                done: self.window.done(),
                committed: self.committed,
                head,
                dead_lettered: !self.dead_lettered.is_empty(),
            };
            if self.stopping && progress.settled() {
                return;
            }
            if (draining || self.core.drain.is_cancelled()) && progress.caught_up() {
                return;
            }
            let core = self.core.clone();
            let slot = &core.sinks[self.idx];
            let idle = self.inflight.is_empty();
            let committing = self.committing.is_some();
            let retry_at = self.retry_at;
            let event = tokio::select! {
                Some(done) = self.inflight.next(), if !idle => Event::Finished(done),
                r = commit_result(&mut self.committing), if committing => Event::Committed(r),
                _ = head_rx.changed() => Event::Wake,
                _ = sleep_until(retry_at), if retry_at.is_some() => Event::Retry,
                _ = slot.gate_changed.notified() => Event::Wake,
                _ = core.drain.cancelled(), if !draining => Event::Drain,
                _ = core.cancel.cancelled() => Event::Wake,
            };
            match event {
                Event::Finished(done) => self.finish(done),
                Event::Committed(r) => self.on_committed(r).await,
                Event::Retry => self.retry_at = None,
                Event::Drain => draining = true,
                Event::Wake => {}
            }
        }
    }

    /// Starts records while there is room: in flight, in the window, and
    /// through the sink's gates.
    async fn dispatch(&mut self, head: Seq) {
        if self.retry_at.is_some() {
            return;
        }
        let core = self.core.clone();
        let slot = &core.sinks[self.idx];
        while self.room.admits(
            self.inflight.len(),
            self.window.next(),
            head,
            self.committed,
        ) {
            let pos = self.window.next();
            let batch = match self.batch_at(pos, head).await {
                Some(b) => b,
                None => return,
            };
            match plan::step(&batch, pos, head, slot.name.as_str(), self.filter.as_ref()) {
                Step::Pass { to, lost } => {
                    // A hole or a lost marker: an explicit, durable
                    // statement that these seqs hold no record to deliver.
                    // A lost marker stands for records that existed:
                    // passing it is said aloud.
                    if lost {
                        tracing::warn!(sink = %slot.name, from = pos.0, to = to.0, "passing over seqs written off by `outbox salvage`: their records were lost to damage and are not delivered");
                        core.metrics.lost(slot.name.as_str(), to.0 - pos.0);
                    }
                    self.window.pass(to);
                    continue;
                }
                Step::OtherSink => {
                    self.window.pass(pos.next());
                    continue;
                }
                Step::Filtered => {
                    core.metrics.filtered(slot.name.as_str(), 1);
                    slot.filtered.fetch_add(1, Ordering::Relaxed);
                    self.window.pass(pos.next());
                    continue;
                }
                Step::Deliver => {}
            }
            let state = slot.breaker.lock().state();
            if !plan::gate_open(state, self.inflight.is_empty()) {
                return;
            }
            let seq = self.window.start();
            self.oldest_ms.get_or_insert(batch.header.appended_at_ms);
            let resume = self.resumed.remove(&seq);
            let mut failed = None;
            if resume.is_none() {
                match attempt::now(&core, self.idx, &self.sink, &batch, seq) {
                    Now::Delivered => {
                        self.finish(Done::Delivered(seq));
                        continue;
                    }
                    Now::Failed(f) => failed = Some(f),
                    Now::Later => {}
                }
            }
            let job = Job {
                core: self.core.clone(),
                idx: self.idx,
                sink: self.sink.clone(),
                policy: self.policy.clone(),
                batch,
                seq,
                resume,
            };
            let mut fut: BoxFuture<'static, Done> = match failed {
                Some(f) => Box::pin(attempt::after(job, f)),
                None => Box::pin(attempt::deliver(job)),
            };
            // Most deliveries (a buffered file write) finish on the first
            // poll; only one that waits joins the set in flight.
            match futures::poll!(&mut fut) {
                std::task::Poll::Ready(done) => self.finish(done),
                std::task::Poll::Pending => self.inflight.push(fut),
            }
        }
    }

    /// The published value covering `pos`: the current one, the tail cache,
    /// or the store. `None` when the worker must wait (a read error, retried
    /// later) or stop (damaged data).
    async fn batch_at(&mut self, pos: Seq, head: Seq) -> Option<Arc<Batch>> {
        if let Some(b) = &self.cur
            && b.first <= pos
            && pos < b.end()
        {
            return Some(b.clone());
        }
        while let Some(b) = self.ahead.front() {
            if b.end() <= pos {
                self.ahead.pop_front();
                continue;
            }
            if b.first <= pos {
                let b = self.ahead.pop_front()?;
                self.cur = Some(b.clone());
                return Some(b);
            }
            // Not what follows: read again from `pos`.
            self.ahead.clear();
        }
        match fetch(&self.core, pos, head).await {
            Ok(mut run) => {
                self.read_failures = 0;
                let b = run.pop_front()?;
                self.ahead = run;
                self.cur = Some(b.clone());
                Some(b)
            }
            Err(e) if e.is_corruption() => {
                stop_corrupt(&self.core, &self.core.sinks[self.idx], &e);
                self.stopping = true;
                None
            }
            Err(e) => {
                self.read_failures += 1;
                let slot = &self.core.sinks[self.idx];
                self.core.metrics.read_failed(slot.name.as_str());
                tracing::error!(sink = %slot.name, seq = pos.0, error = %e, "cannot read the log; retrying");
                let wait = self.policy.backoff(self.read_failures, rand::random());
                self.retry_at = Some(tokio::time::Instant::now() + wait);
                None
            }
        }
    }

    fn finish(&mut self, done: Done) {
        let seq = done.seq();
        if seq < self.window.done() {
            // Finished after a Drop skip passed it: nothing to record.
            return;
        }
        match done {
            Done::Delivered(_) => self.delivered_since += 1,
            Done::DeadLettered(e) => self.dead_lettered.push(*e),
        }
        self.window.finish(seq);
    }

    /// Under Drop, the completion task moves the floor past what the sink
    /// is too far behind on; the worker skips it, counted.
    fn apply_drop_floor(&mut self) {
        let core = self.core.clone();
        let slot = &core.sinks[self.idx];
        let floor = Seq(slot.floor.load(Ordering::Acquire));
        if let Some(skipped) = plan::drop_skip(floor, self.window.done()) {
            slot.dropped.fetch_add(skipped, Ordering::Relaxed);
            self.core.metrics.dropped(slot.name.as_str(), skipped);
            tracing::warn!(sink = %slot.name, skipped, "sink over its lag limit; skipping (on_full = drop)");
            self.window.skip_to(floor);
            self.dead_lettered.retain(|e| e.seq >= floor.0);
        }
    }

    /// Starts a commit when none runs and something finished past the last
    /// one.
    fn maybe_commit(&mut self) {
        if self.committing.is_some() {
            return;
        }
        let upto = self.window.done();
        if upto <= self.committed && self.dead_lettered.iter().all(|e| Seq(e.seq) >= upto) {
            return;
        }
        let dlq: Vec<DlqEntry> = {
            let (below, above): (Vec<_>, Vec<_>) = self
                .dead_lettered
                .drain(..)
                .partition(|e| Seq(e.seq) < upto);
            self.dead_lettered = above;
            below
        };
        let delivered = std::mem::take(&mut self.delivered_since);
        let oldest_ms = self.oldest_ms.take();
        self.committing = Some(commit::start(
            self.sink.clone(),
            upto,
            dlq,
            delivered,
            oldest_ms,
        ));
    }

    async fn on_committed(&mut self, r: CommitResult) {
        let Some(c) = self.committing.take() else {
            return;
        };
        match r {
            CommitResult::Ok => match commit::offset(&self.core, self.idx, &c) {
                Ok(stored) => self.committed = stored,
                Err(()) => {
                    // The store is failed: stop where we stand.
                    self.inflight = FuturesUnordered::new();
                    self.stopping = true;
                    self.window = Window::new(self.committed);
                }
            },
            CommitResult::Failed(e) => {
                let core = self.core.clone();
                let slot = &core.sinks[self.idx];
                slot.retries.fetch_add(1, Ordering::Relaxed);
                self.core.metrics.retried(slot.name.as_str());
                tracing::warn!(sink = %slot.name, error = %e, "sink commit failed; delivering again everything after the last committed offset");
                self.reset();
                let wait = self.policy.backoff(1, rand::random());
                self.retry_at = Some(tokio::time::Instant::now() + wait);
            }
        }
    }

    /// Back to the last committed offset: what is in flight is dropped and
    /// everything after the offset is delivered again.
    fn reset(&mut self) {
        self.inflight = FuturesUnordered::new();
        self.window = Window::new(self.committed);
        self.dead_lettered.clear();
        self.delivered_since = 0;
        self.oldest_ms = None;
        self.cur = None;
        self.ahead.clear();
        self.slot().breaker.lock().probe_abandoned();
        // The records delivered again keep the retry counts stored for them
        // (a small read; a failed sink commit is rare).
        let slot = &self.core.sinks[self.idx];
        match self.core.store.retry_states(&slot.name, self.committed) {
            Ok(states) => self.resumed = states,
            Err(e) => {
                tracing::warn!(sink = %slot.name, error = %e, "cannot read the stored retry states; those records start their retries again");
            }
        }
    }

    /// Cancelled: drop what is in flight, let a running commit finish within
    /// the grace, and commit what had finished.
    async fn stop_now(&mut self) {
        if !self.inflight.is_empty() {
            self.slot().breaker.lock().probe_abandoned();
        }
        self.inflight = FuturesUnordered::new();
        if let Some(c) = self.committing.as_mut() {
            match tokio::time::timeout(COMMIT_GRACE, &mut c.fut).await {
                Ok(r) => self.on_committed(r).await,
                Err(_) => {
                    tracing::warn!(sink = %self.slot().name, "sink commit did not finish before shutdown; what it covered stays in the log for replay");
                    return;
                }
            }
        }
        self.maybe_commit();
        if let Some(c) = self.committing.as_mut() {
            match tokio::time::timeout(COMMIT_GRACE, &mut c.fut).await {
                Ok(r) => self.on_committed(r).await,
                Err(_) => {
                    tracing::warn!(sink = %self.slot().name, "sink commit did not finish before shutdown; what it covered stays in the log for replay");
                }
            }
        }
    }
}

/// What woke the worker.
enum Event {
    Finished(Done),
    Committed(CommitResult),
    Retry,
    Drain,
    Wake,
}

/// The running commit's result (never resolves without one).
async fn commit_result(c: &mut Option<Committing>) -> CommitResult {
    match c {
        Some(c) => (&mut c.fut).await,
        None => std::future::pending().await,
    }
}

/// The retry states an earlier run kept for this sink from `start` (its
/// offset) on; those below it are stale and removed. A read error is
/// logged and the records retry from the start (as without the state).
async fn load_retries<T>(
    core: &Arc<Core<T>>,
    slot: &SinkSlot,
    start: Seq,
) -> BTreeMap<Seq, RetryState> {
    let store = core.store.clone();
    let name = slot.name.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let states = store.retry_states(&name, start)?;
        store.retry_clear_below(&name, start)?;
        Ok::<_, StoreError>(states)
    })
    .await
    .map_err(|e| StoreError::task("retry state", e))
    .and_then(|r| r);
    match loaded {
        Ok(states) => {
            if !states.is_empty() {
                slot.retry_dirty.store(true, Ordering::Release);
                tracing::info!(sink = %slot.name, records = states.len(), "resuming retries where the last run left them");
            }
            states
        }
        Err(e) => {
            tracing::error!(sink = %slot.name, error = %e, "cannot read the stored retry states; those records start their retries again");
            BTreeMap::new()
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The published value covering `pos` (`pos < head`): from the tail cache,
/// or read from the store.
///
/// # Errors
/// [`StoreError::Corrupted`] naming the range when no value covers `pos`
/// or the value is damaged; an I/O error when it cannot be read now.
async fn fetch<T>(
    core: &Arc<Core<T>>,
    pos: Seq,
    head: Seq,
) -> Result<std::collections::VecDeque<Arc<Batch>>, StoreError> {
    if let Some(b) = core.tail.lock().get(pos) {
        return Ok(std::collections::VecDeque::from([b]));
    }
    let store = core.store.clone();
    let run = tokio::task::spawn_blocking(move || store.read_run(pos, head, READ_RUN_BYTES))
        .await
        .map_err(|e| StoreError::task("read", e))??;
    Ok(run.into_iter().map(Arc::new).collect())
}

/// How much a worker behind the tail cache reads from sled at a time.
const READ_RUN_BYTES: u64 = 1 << 20;

/// Stops the sink for good on data it cannot read: reported in its status,
/// the log and the metrics; its offset stays where it is.
fn stop_corrupt<T>(core: &Core<T>, slot: &SinkSlot, e: &StoreError) {
    let why = e.to_string();
    tracing::error!(sink = %slot.name, error = %why, "sink stopped: the log cannot be read here, and nothing is ever skipped; its records stay in the log. Run `outbox check`, then see `outbox salvage` in docs/operations.md");
    core.metrics.corrupt(slot.name.as_str(), &why);
    *slot.corrupt.lock() = Some(why);
}
