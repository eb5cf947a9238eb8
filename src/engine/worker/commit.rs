//! A worker's commit: the sink's commit (the file sink's fsync), then the
//! offset and the DLQ entries it passes, in one sled transaction, then the
//! flush that makes them durable, awaited by the completion task.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::codec::DlqEntry;
use crate::engine::core::Core;
use crate::engine::msg::Completion;
use crate::error::panic_message;
use crate::sink::Sink;
use crate::store::now_ms;
use crate::types::Seq;

/// What a sink commit came to.
pub(super) enum CommitResult {
    /// The sink made every delivery it covers durable.
    Ok,
    /// It failed (or panicked): everything after the last offset is
    /// delivered again.
    Failed(String),
}

/// A commit in progress.
pub(super) struct Committing {
    pub fut: BoxFuture<'static, CommitResult>,
    /// The offset it commits.
    pub upto: Seq,
    /// The DLQ entries below `upto`.
    pub dlq: Vec<DlqEntry>,
    /// Deliveries it covers, for the metrics.
    pub delivered: u64,
    /// Append time of the oldest of them.
    pub oldest_ms: Option<u64>,
}

/// Starts the sink's commit (skipped when nothing was delivered since the
/// last one).
pub(super) fn start(
    sink: Arc<dyn Sink>,
    upto: Seq,
    dlq: Vec<DlqEntry>,
    delivered: u64,
    oldest_ms: Option<u64>,
) -> Committing {
    let fut: BoxFuture<'static, CommitResult> = if delivered == 0 {
        Box::pin(std::future::ready(CommitResult::Ok))
    } else {
        Box::pin(async move {
            // Caught like `deliver`: a panic is a failed commit.
            match AssertUnwindSafe(async { sink.commit().await })
                .catch_unwind()
                .await
            {
                Ok(Ok(())) => CommitResult::Ok,
                Ok(Err(e)) => CommitResult::Failed(e.to_string()),
                Err(panic) => CommitResult::Failed(format!(
                    "sink panicked in commit: {}",
                    panic_message(&panic)
                )),
            }
        })
    };
    Committing {
        fut,
        upto,
        dlq,
        delivered,
        oldest_ms,
    }
}

/// Writes the offset and the DLQ entries of a finished sink commit, and
/// hands its flush to the completion task. Returns the offset stored.
///
/// # Errors
/// `Err(())` when the store refused the write: it is poisoned, and the
/// worker stops.
pub(super) fn offset<T>(core: &Arc<Core<T>>, idx: usize, c: &Committing) -> Result<Seq, ()> {
    let Some(slot) = core.sinks.get(idx) else {
        return Err(());
    };
    match core.store.commit_offset(&slot.name, c.upto, &c.dlq) {
        Ok(stored) => {
            if slot.retry_dirty.swap(false, Ordering::AcqRel) {
                // Not in the offset's transaction: a state left below the
                // offset by a crash here is stale and never read.
                match core.store.retry_clear_below(&slot.name, stored) {
                    Ok(remain) if remain => slot.retry_dirty.store(true, Ordering::Release),
                    Ok(_) => {}
                    Err(e) => {
                        slot.retry_dirty.store(true, Ordering::Release);
                        tracing::warn!(sink = %slot.name, error = %e, "could not remove passed retry states; they are stale and ignored");
                    }
                }
            }
            let ticket = core.durability.request();
            let _ = core.done_tx.send(Completion::Committed {
                ticket,
                sink: idx,
                offset: stored,
            });
            if c.delivered > 0 {
                slot.delivered.fetch_add(c.delivered, Ordering::Relaxed);
                let latency = c
                    .oldest_ms
                    .map(|at| std::time::Duration::from_millis(now_ms().saturating_sub(at)))
                    .unwrap_or_default();
                core.metrics
                    .delivered(slot.name.as_str(), c.delivered, latency);
            }
            let dead_lettered = c.dlq.len() as u64;
            if dead_lettered > 0 {
                slot.dead_lettered
                    .fetch_add(dead_lettered, Ordering::Relaxed);
                core.metrics.dlq(slot.name.as_str(), dead_lettered);
            }
            Ok(stored)
        }
        Err(e) => {
            tracing::error!(sink = %slot.name, error = %e, "offset commit failed; worker stops (the store is failed until reopened)");
            core.cancel.cancel();
            Err(())
        }
    }
}
