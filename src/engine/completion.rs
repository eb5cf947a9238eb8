//! The completion task: turns flushed tickets into published batches,
//! receipts and released acks, in the order they were sent.
//!
//! It owns the [`AckTracker`]; nothing else touches the watermark. Both kinds
//! of message wait for their flush first, so the tracker only ever sees
//! durable offsets, and the workers only ever see durable batches.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::backpressure::LagLimit;
use super::core::Core;
use super::dispatch_error::DispatchError;
use super::msg::Completion;
use crate::ack::AckTracker;
use crate::config::OnFull;
use crate::error::StoreError;
use crate::types::Seq;

pub(crate) async fn run<T: Send + 'static>(
    core: Arc<Core<T>>,
    mut rx: mpsc::UnboundedReceiver<Completion<T>>,
    mut acks: AckTracker<T>,
    ack_tx: mpsc::UnboundedSender<T>,
) {
    let release = |tokens: Vec<T>| {
        let n = tokens.len() as u64;
        if n > 0 {
            for t in tokens {
                // A closed receiver means the embedder stopped listening:
                // the token is dropped, which is "not acked".
                let _ = ack_tx.send(t);
            }
            core.metrics.acked(n);
        }
    };
    while let Some(msg) = rx.recv().await {
        match msg {
            Completion::Finish => return,
            Completion::Appended {
                ticket,
                batches,
                tokens,
                replies,
                at,
            } => match core.durability.wait(ticket).await {
                Ok(()) => {
                    core.metrics.append_durable(at.elapsed());
                    let end = batches.last().map(|b| b.end());
                    if let Some(idx) = &core.bytes {
                        let mut idx = idx.lock();
                        for b in &batches {
                            idx.push(b.first, b.header.bytes);
                        }
                    }
                    {
                        let mut tail = core.tail.lock();
                        for b in batches {
                            tail.insert(b);
                        }
                    }
                    for (seq, t) in tokens {
                        release(acks.register(seq, t));
                    }
                    if let Some(end) = end {
                        core.head.send_if_modified(|h| {
                            let moved = end > *h;
                            *h = (*h).max(end);
                            moved
                        });
                    }
                    for (reply, appended) in replies {
                        let _ = reply.send(Ok(appended));
                    }
                    if end.is_some() {
                        skip_drop_sinks(&core);
                        // A sink that had caught up has a pending record
                        // again.
                        for slot in &core.sinks {
                            if slot.oldest.lock().is_none() {
                                super::pending::oldest(&core, slot, false);
                            }
                        }
                    }
                }
                Err(e) => {
                    // The flush error is already `Poisoned`: pass its reason
                    // on rather than wrapping the message a second time.
                    let why = match &e {
                        crate::Error::Store(StoreError::Poisoned(why)) => why.clone(),
                        other => other.to_string(),
                    };
                    for (reply, _) in replies {
                        // The records may be on disk: nothing comes back.
                        let _ =
                            reply.send(Err(DispatchError::kept(StoreError::Poisoned(why.clone()))));
                    }
                }
            },
            Completion::Committed {
                ticket,
                sink,
                offset,
            } => {
                if core.durability.wait(ticket).await.is_err() {
                    continue;
                }
                if let Some(slot) = core.sinks.get(sink) {
                    let before = slot.committed.fetch_max(offset.0, Ordering::AcqRel);
                    core.metrics.lag(slot.name.as_str(), core.lag(slot));
                    super::pending::acked(&core, slot, Seq(before), offset);
                    super::pending::oldest(&core, slot, false);
                }
                release(acks.commit(sink, offset.0));
                core.room.notify_waiters();
            }
        }
    }
}

/// For each Drop sink over its limit, moves its offset to the oldest seq
/// that fits, durably, without waiting for its worker. The worker notices
/// the floor and skips, counting what it skipped.
fn skip_drop_sinks<T>(core: &Arc<Core<T>>) {
    let head = core.head();
    for (i, slot) in core.sinks.iter().enumerate() {
        if slot.cfg.on_full != OnFull::Drop {
            continue;
        }
        let passed = slot
            .committed
            .load(Ordering::Acquire)
            .max(slot.floor.load(Ordering::Acquire));
        let Some(floor) = LagLimit::of(&slot.cfg).drop_floor(
            Seq(passed),
            // Counted in records: a crash's hole is not lag.
            |n| core.holes.lock().back(head, n),
            |n| core.bytes.as_ref().and_then(|idx| idx.lock().floor_for(n)),
        ) else {
            continue;
        };
        slot.floor.fetch_max(floor.0, Ordering::AcqRel);
        match core.store.commit_offset(&slot.name, floor, &[]) {
            Ok(stored) => {
                let ticket = core.durability.request();
                let _ = core.done_tx.send(Completion::Committed {
                    ticket,
                    sink: i,
                    offset: stored,
                });
            }
            Err(e) => {
                tracing::error!(sink = %slot.name, error = %e, "could not commit a Drop skip")
            }
        }
    }
}
