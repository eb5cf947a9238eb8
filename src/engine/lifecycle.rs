//! How an outbox stops: [`Outbox::shutdown`] drains and stops the tasks in
//! pipeline order and, on the last handle, waits until the data directory
//! is released; dropping the last handle without a shutdown stops every
//! task where it stands.
//!
//! Invariants:
//! - shutdown stops the appender first, then waits for what it wrote to be
//!   published, then for the workers; the completion task stops last, so
//!   every worker commit is applied to the ack watermark;
//! - the tasks are stopped once: by the first shutdown, or by the drop of
//!   the last handle when no shutdown took them;
//! - what was not delivered stays in the log, its tokens unreleased: a
//!   receipted record is never lost, whichever way the outbox stops.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::core::Core;
use super::handle::{Outbox, Running, Tasks};
use super::msg::{AppendReq, Completion};
use crate::error::{DispatchErrorKind, Error, Result, StoreError};
use crate::types::{Seq, SinkName};

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

/// How long shutdown waits for a cancelled worker before aborting it.
const WORKER_STOP: Duration = Duration::from_secs(5);

impl<T> Core<T> {
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
}

impl<T: Send + 'static> Outbox<T> {
    /// Stops accepting records, lets the sinks catch up for at most
    /// `drain_timeout`, then stops them, flushes, and drops this handle.
    /// What was not delivered stays in the log and is replayed on the next
    /// open; its tokens are never released. When this is the last handle,
    /// it returns once the data directory is released (no task holds the
    /// store and sled has let go of its lock), so the directory can be
    /// opened again at once; otherwise the directory is released when the
    /// last handle is dropped (see [`Outbox`]).
    ///
    /// # Errors
    /// [`DispatchErrorKind::ShuttingDown`] when another handle has shut the
    /// outbox down already (this handle is still dropped, and the directory
    /// released if it was the last); [`StoreError::Poisoned`] when the
    /// final flush fails.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future part way drops this handle with
    /// the outbox stopping; when it was the last handle, what is left is
    /// stopped where it stands, as on a drop.
    pub async fn shutdown(self, drain_timeout: Duration) -> Result<ShutdownReport> {
        let report = self.stop(drain_timeout).await;
        self.release().await;
        report
    }

    /// Drains and stops the tasks; the first half of [`Outbox::shutdown`].
    async fn stop(&self, drain_timeout: Duration) -> Result<ShutdownReport> {
        let Some(tasks) = self.running.tasks.lock().take() else {
            return Err(DispatchErrorKind::ShuttingDown.into());
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
                .map_err(|e| StoreError::task("shutdown", e))
                .and_then(|r| r)
                .map_err(Error::from);
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

    /// Drops this handle. When it was the last, waits until no task holds
    /// the store, so sled's lock is gone when this returns.
    async fn release(self) {
        let Outbox { core, running } = self;
        // Of several handles let go at once, exactly one gets the last
        // reference (a count read first would let two concurrent shutdowns
        // both see the other and neither wait); the others return, and the
        // last to go releases the directory.
        let Some(running) = Arc::into_inner(running) else {
            return;
        };
        core.durability.stop();
        drop(running);
        let mut core = core;
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

impl<T: Send + 'static> Drop for Running<T> {
    fn drop(&mut self) {
        // The last handle went without a shutdown: stop the tasks where they
        // are. Nothing is lost: undelivered records stay in the log, their
        // tokens unreleased.
        if let Some(tasks) = self.tasks.get_mut().take() {
            self.core.stop_now(&tasks);
        }
    }
}
