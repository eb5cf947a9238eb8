//! One worker per sink: read from the offset, deliver, commit.
//!
//! Invariants:
//! - records are delivered in seq order; a record is attempted again only
//!   after every earlier one is delivered, parked or skipped;
//! - the offset is committed only after [`Sink::commit`] succeeded for
//!   everything below it, and together with the DLQ entries of the same run
//!   in one sled transaction;
//! - a record aimed at another sink (a redrive) is passed over, not
//!   delivered;
//! - a panic inside the sink is caught, reported (log and metric) and
//!   treated as a transient failure of that attempt, so delivery never
//!   silently stops; the same sink instance keeps being used;
//! - on cancel, the worker stops where it stands and commits what it has
//!   delivered; nothing after that is acknowledged.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;

use crate::codec::{DlqEntry, LogEntry};
use crate::engine::{Completion, Core, SinkSlot};
use crate::error::{Result, panic_message};
use crate::retry::{Decision, RetryPolicy};
use crate::sink::{DeliveryContext, DeliveryError, Sink};
use crate::store::{Batch, now_ms};
use crate::types::Seq;

/// How long a sink's commit may still run once the outbox is cancelled.
const COMMIT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

enum Outcome {
    Delivered,
    Dead(DlqEntry),
    Cancelled,
}

/// Runs the worker for sink `idx` until drained or cancelled.
pub(crate) async fn run<T: Send + 'static>(
    core: Arc<Core<T>>,
    idx: usize,
    mut sink: Box<dyn Sink>,
) {
    let Some(slot) = core.sinks.get(idx) else {
        return;
    };
    let policy = RetryPolicy::from(&slot.cfg);
    let mut pos = Seq(slot.committed.load(Ordering::Acquire));
    let mut head_rx = core.head.subscribe();
    let mut read_failures = 0u32;
    loop {
        let floor = slot.floor.load(Ordering::Acquire);
        if floor > pos.0 {
            let skipped = floor - pos.0;
            slot.dropped.fetch_add(skipped, Ordering::Relaxed);
            core.metrics.dropped(slot.name.as_str(), skipped);
            tracing::warn!(sink = %slot.name, skipped, "sink over its lag limit; skipping (on_full = drop)");
            pos = Seq(floor);
        }
        if core.cancel.is_cancelled() {
            return;
        }
        let head = *head_rx.borrow_and_update();
        if pos >= head {
            if core.drain.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = head_rx.changed() => {}
                _ = core.drain.cancelled() => {}
                _ = core.cancel.cancelled() => return,
            }
            continue;
        }
        let batch = match fetch(&core, pos, head).await {
            Ok(Some(b)) => {
                read_failures = 0;
                b
            }
            Ok(None) => {
                // Nothing stored between pos and head: a gap left by seqs
                // that were never written. Move past it.
                if !commit(
                    &core,
                    idx,
                    slot,
                    &mut sink,
                    Seq(head.0),
                    Vec::new(),
                    0,
                    None,
                )
                .await
                {
                    return;
                }
                pos = head;
                continue;
            }
            Err(e) => {
                read_failures += 1;
                tracing::error!(sink = %slot.name, seq = pos.0, error = %e, "cannot read the log; run `outbox check`");
                let wait = policy.backoff(read_failures, rand::random());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = core.cancel.cancelled() => return,
                }
                continue;
            }
        };
        if batch.first > pos {
            tracing::warn!(sink = %slot.name, from = pos.0, to = batch.first.0, "records below the log's first batch are gone; resuming at the first record");
            pos = batch.first;
        }
        // A run spans consecutive cached batches up to `batch_max` records,
        // so one commit covers as many records as it may.
        let limit = pos.0 + slot.cfg.batch_max as u64;
        let mut batches = vec![batch];
        while let Some(last) = batches.last().map(|b| b.end()) {
            if last.0 >= limit || last >= head {
                break;
            }
            match core.tail.lock().get(last) {
                Some(b) if b.first == last => batches.push(b),
                _ => break,
            }
        }
        let end = Seq(batches.last().map_or(pos.0, |b| b.end().0).min(limit));
        match deliver_run(&core, idx, &policy, &mut sink, &batches, pos, end).await {
            Some(next) => {
                if !next.committed {
                    // The sink's commit failed: deliver the run again.
                    continue;
                }
                pos = next.pos;
                if next.cancelled {
                    return;
                }
            }
            None => return,
        }
    }
}

struct RunEnd {
    pos: Seq,
    committed: bool,
    cancelled: bool,
}

/// Delivers `[start, end)` of `batch`, then commits. `None` means stop.
async fn deliver_run<T: Send + 'static>(
    core: &Arc<Core<T>>,
    idx: usize,
    policy: &RetryPolicy,
    sink: &mut Box<dyn Sink>,
    batches: &[Arc<Batch>],
    start: Seq,
    end: Seq,
) -> Option<RunEnd> {
    let slot = core.sinks.get(idx)?;
    let mut dlq = Vec::new();
    let mut delivered = 0u64;
    let mut seq = start;
    let mut cancelled = false;
    let mut bi = 0;
    while seq < end {
        while batches.get(bi).is_some_and(|b| b.end() <= seq) {
            bi += 1;
        }
        let Some(batch) = batches.get(bi) else {
            break;
        };
        let Some(entry) = batch.entries.get((seq.0 - batch.first.0) as usize) else {
            break;
        };
        if entry
            .target
            .as_deref()
            .is_some_and(|t| t != slot.name.as_str())
        {
            seq = seq.next();
            continue;
        }
        match deliver_one(core, slot, policy, sink, entry, seq).await {
            Outcome::Delivered => delivered += 1,
            Outcome::Dead(e) => dlq.push(e),
            Outcome::Cancelled => {
                cancelled = true;
                break;
            }
        }
        seq = seq.next();
    }
    if seq == start && cancelled {
        return None;
    }
    let latency_from = batches.first().map(|b| b.header.appended_at_ms);
    let committed = commit(core, idx, slot, sink, seq, dlq, delivered, latency_from).await;
    if !committed && core.cancel.is_cancelled() {
        return None;
    }
    Some(RunEnd {
        pos: if committed { seq } else { start },
        committed,
        cancelled,
    })
}

/// Commits the sink, then the offset and DLQ entries. Returns false when the
/// sink's commit failed (the run must be delivered again) or the store
/// refused the write (the worker stops; the store is poisoned).
#[allow(clippy::too_many_arguments)]
async fn commit<T: Send + 'static>(
    core: &Arc<Core<T>>,
    idx: usize,
    slot: &SinkSlot,
    sink: &mut Box<dyn Sink>,
    to: Seq,
    dlq: Vec<DlqEntry>,
    delivered: u64,
    appended_at_ms: Option<u64>,
) -> bool {
    if delivered > 0 {
        // Caught like `deliver`, and bounded once the outbox is cancelled: a
        // commit that hangs (an fsync on a dead mount) must not hold up
        // shutdown. A run whose commit did not finish is delivered again.
        let fut = AssertUnwindSafe(async { sink.commit().await }).catch_unwind();
        tokio::pin!(fut);
        let outcome = if core.cancel.is_cancelled() {
            tokio::time::timeout(COMMIT_GRACE, &mut fut).await.ok()
        } else {
            tokio::select! {
                r = &mut fut => Some(r),
                _ = core.cancel.cancelled() => tokio::time::timeout(COMMIT_GRACE, &mut fut).await.ok(),
            }
        };
        let error = match outcome {
            Some(Ok(Ok(()))) => None,
            Some(Ok(Err(e))) => Some(e.to_string()),
            Some(Err(panic)) => {
                core.metrics.panicked(slot.name.as_str());
                Some(format!(
                    "sink panicked in commit: {}",
                    panic_message(&panic)
                ))
            }
            None => {
                tracing::warn!(sink = %slot.name, "sink commit did not finish before shutdown; the run stays in the log for replay");
                return false;
            }
        };
        if let Some(e) = error {
            slot.retries.fetch_add(1, Ordering::Relaxed);
            core.metrics.retried(slot.name.as_str());
            tracing::warn!(sink = %slot.name, error = %e, "sink commit failed; delivering the batch again");
            let wait = RetryPolicy::from(&slot.cfg).backoff(1, rand::random());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = core.cancel.cancelled() => {}
            }
            return false;
        }
    }
    let parked = dlq.len() as u64;
    let r: Result<Seq> = core.store.commit_offset(&slot.name, to, &dlq);
    match r {
        Ok(stored) => {
            let ticket = core.durability.request();
            let _ = core.done_tx.send(Completion::Committed {
                ticket,
                sink: idx,
                offset: stored,
            });
            if delivered > 0 {
                slot.delivered.fetch_add(delivered, Ordering::Relaxed);
                let latency = appended_at_ms
                    .map(|at| std::time::Duration::from_millis(now_ms().saturating_sub(at)))
                    .unwrap_or_default();
                core.metrics
                    .delivered(slot.name.as_str(), delivered, latency);
            }
            if parked > 0 {
                slot.dead_lettered.fetch_add(parked, Ordering::Relaxed);
                core.metrics.dlq(slot.name.as_str(), parked);
            }
            true
        }
        Err(e) => {
            tracing::error!(sink = %slot.name, error = %e, "offset commit failed; worker stops (the store is failed until reopened)");
            core.cancel.cancel();
            false
        }
    }
}

async fn deliver_one<T: Send + 'static>(
    core: &Arc<Core<T>>,
    slot: &SinkSlot,
    policy: &RetryPolicy,
    sink: &mut Box<dyn Sink>,
    entry: &LogEntry,
    seq: Seq,
) -> Outcome {
    let origin = entry.origin_seq(seq);
    let delivery_id = core.delivery_id(origin);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let ctx = DeliveryContext {
            sink: &slot.name,
            seq,
            delivery_id,
            attempt: attempts,
        };
        // The call itself sits inside the caught future, so a sink that
        // panics before returning its future is caught too.
        let attempt =
            AssertUnwindSafe(async { sink.deliver(&entry.record, &ctx).await }).catch_unwind();
        tokio::pin!(attempt);
        // Most deliveries (a buffered file write, stdout) finish on the first
        // poll; only one that waits is raced against cancellation, which
        // registers with the token's lock each time (it was 3 % of the CPU
        // with four sinks).
        let result = match futures::poll!(&mut attempt) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => tokio::select! {
                r = &mut attempt => r,
                _ = core.cancel.cancelled() => return Outcome::Cancelled,
            },
        };
        let error = match result {
            Ok(Ok(())) => return Outcome::Delivered,
            Ok(Err(e)) => e,
            Err(panic) => {
                let msg = panic_message(&panic);
                core.metrics.panicked(slot.name.as_str());
                tracing::error!(sink = %slot.name, seq = seq.0, panic = %msg, "sink panicked while delivering; treating it as a failed attempt");
                DeliveryError::transient(format!("sink panicked: {msg}"))
            }
        };
        match policy.decide(attempts, &error, rand::random()) {
            Decision::Retry(wait) => {
                slot.retries.fetch_add(1, Ordering::Relaxed);
                core.metrics.retried(slot.name.as_str());
                tracing::debug!(sink = %slot.name, seq = seq.0, attempts, ?wait, error = %error, "retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = core.cancel.cancelled() => return Outcome::Cancelled,
                }
            }
            Decision::DeadLetter => {
                tracing::warn!(sink = %slot.name, seq = seq.0, attempts, error = %error, "parking record in the DLQ");
                return Outcome::Dead(DlqEntry {
                    sink: slot.name.to_string(),
                    seq: seq.0,
                    origin: origin.0,
                    record: entry.record.clone(),
                    error: error.to_string(),
                    attempts,
                    failed_at_ms: now_ms(),
                });
            }
        }
    }
}

/// The batch holding `pos` (or the first after it), if it is published.
async fn fetch<T>(core: &Arc<Core<T>>, pos: Seq, head: Seq) -> Result<Option<Arc<Batch>>> {
    if let Some(b) = core.tail.lock().get(pos) {
        return Ok(Some(b));
    }
    let store = core.store.clone();
    let read = tokio::task::spawn_blocking(move || store.read_from(pos))
        .await
        .map_err(|e| crate::Error::Storage(format!("read task failed: {e}")))??;
    Ok(read.filter(|b| b.first < head).map(Arc::new))
}
