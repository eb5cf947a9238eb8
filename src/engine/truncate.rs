//! The truncator: removes log batches every configured sink has passed:
//! whole generations, and the last generation's values once the log has
//! been quiet for a pass (`Store::truncate_below`).
//!
//! Invariant: only whole values that end at or below the lowest durable
//! offset of every member are removed: the configured sinks, and the
//! orphans, which keep their backlog until they are forgotten. It also
//! prunes idempotency keys older than the window.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::core::Core;
use crate::types::Seq;

/// How often the log's size is reported to the metrics hook.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Batches removed per sled batch, so truncation never holds the tree long.
const CHUNK: usize = 64;

/// Idempotency keys pruned per pass (once a second).
const PRUNE_MAX: usize = 100_000;

pub(crate) async fn run<T: Send + 'static>(core: Arc<Core<T>>) {
    let mut tick = tokio::time::interval(core.cfg.truncate_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A pass runs every tick, also when the low-water mark has not moved:
    // the log's last generation is emptied once it has been quiet for a
    // while (`Store::truncate_below`), which no offset commit announces.
    let mut done_below = Seq(0);
    let mut last_report = std::time::Instant::now() - REPORT_EVERY;
    loop {
        tick.tick().await;
        if last_report.elapsed() >= REPORT_EVERY {
            last_report = std::time::Instant::now();
            if let Ok(extent) = core.store.extent() {
                core.report_log_size(extent.first);
            }
            let window = core.cfg.idempotency_window.as_millis() as u64;
            let before = crate::store::now_ms().saturating_sub(window);
            let store = core.store.clone();
            let pruned =
                tokio::task::spawn_blocking(move || store.idem_prune(before, PRUNE_MAX)).await;
            if let Ok(Err(e)) = pruned {
                tracing::error!(error = %e, "pruning idempotency keys failed");
            }
        }
        let below = low_water(&core);
        if below < done_below {
            continue;
        }
        if below > done_below {
            core.tail.lock().evict_below(below);
            core.holes.lock().drop_below(below);
            if let Some(idx) = &core.bytes {
                idx.lock().drop_below(below);
            }
        }
        loop {
            let store = core.store.clone();
            let r = tokio::task::spawn_blocking(move || store.truncate_below(below, CHUNK)).await;
            match r {
                Ok(Ok((_, 0))) => break,
                Ok(Ok((seqs, values))) => {
                    tracing::trace!(seqs, values, below = below.0, "truncated");
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "truncation failed");
                    break;
                }
                Err(_) => return,
            }
        }
        done_below = below;
    }
}

/// The lowest durable offset over every member; the head with none.
pub(crate) fn low_water<T>(core: &Core<T>) -> Seq {
    core.sinks
        .iter()
        .map(|s| Seq(s.committed.load(Ordering::Acquire)))
        .chain(core.lowest_orphan_offset())
        .min()
        .unwrap_or_else(|| core.head())
}
