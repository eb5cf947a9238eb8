//! The appender task: packs requests into log values and writes them.
//!
//! Invariants:
//! - seqs are assigned here and nowhere else while the engine runs, in
//!   strictly increasing order, contiguous within a value;
//! - one request's records always land in one value (atomic `dispatch_many`
//!   and HTTP ingest requests);
//! - a value is written before its flush is requested, and its batch is
//!   handed to the completion task with that flush's ticket; nothing here
//!   waits for a flush, so the next value is built while the last flushes;
//! - a failed write consumes no seq and answers every request in it with the
//!   error.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::{AppendReq, Completion, Core};
use crate::codec::{self, BatchHeader, LogEntry};
use crate::config::SyncPolicy;
use crate::error::{Error, Result};
use crate::store::{Batch, now_ms};
use crate::types::{Seq, SinkName};

/// Runs until a `Stop` request; returns the next unassigned seq.
pub(crate) async fn run<T: Send + 'static>(
    core: Arc<Core<T>>,
    mut rx: mpsc::Receiver<AppendReq<T>>,
    mut next: Seq,
) -> Seq {
    let mut carry: Option<AppendReq<T>> = None;
    loop {
        let req = match carry.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return next,
            },
        };
        let mut group = match req {
            AppendReq::Stop => return next,
            AppendReq::Redrive { sink, seqs, reply } => {
                let r = redrive(&core, &mut next, &sink, seqs.as_deref());
                match r {
                    Ok((n, Some((ticket, done)))) => {
                        let _ = core.done_tx.send(done);
                        // Reply once durable: wait here; redrives are rare.
                        let durable = core.durability.wait(ticket).await;
                        let _ = reply.send(durable.map(|()| n));
                    }
                    Ok((n, None)) => {
                        let _ = reply.send(Ok(n));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
                continue;
            }
            AppendReq::Records {
                items,
                bytes,
                reply,
                at,
            } => vec![(items, bytes, reply, at)],
        };
        // Gather what else is queued, within the value limits.
        let mut records: usize = group[0].0.len();
        let mut bytes: usize = group[0].1;
        while records < core.cfg.max_batch_records && bytes < core.cfg.max_batch_bytes {
            match rx.try_recv() {
                Ok(AppendReq::Records {
                    items,
                    bytes: b,
                    reply,
                    at,
                }) => {
                    if records + items.len() > core.cfg.max_batch_records
                        || bytes + b > core.cfg.max_batch_bytes
                    {
                        carry = Some(AppendReq::Records {
                            items,
                            bytes: b,
                            reply,
                            at,
                        });
                        break;
                    }
                    records += items.len();
                    bytes += b;
                    group.push((items, b, reply, at));
                }
                Ok(other) => {
                    carry = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        write_group(&core, &mut next, group, records, bytes);
    }
}

type Group<T> = Vec<(
    Vec<(crate::types::Record, Vec<T>)>,
    usize,
    oneshot::Sender<Result<Seq>>,
    Instant,
)>;

fn write_group<T: Send + 'static>(
    core: &Arc<Core<T>>,
    next: &mut Seq,
    group: Group<T>,
    records: usize,
    bytes: usize,
) {
    let first = *next;
    let mut entries = Vec::with_capacity(records);
    let mut tokens = Vec::new();
    let mut replies = Vec::with_capacity(group.len());
    let mut oldest = None;
    let mut seq = first.0;
    for (items, _, reply, at) in group {
        replies.push((reply, Seq(seq)));
        oldest = Some(oldest.map_or(at, |o: Instant| o.min(at)));
        for (record, t) in items {
            if !t.is_empty() {
                tokens.push((Seq(seq), t));
            }
            entries.push(LogEntry::new(record));
            seq += 1;
        }
    }
    let header = BatchHeader {
        count: records as u32,
        bytes: bytes as u64,
        appended_at_ms: now_ms(),
    };
    let value = codec::encode_batch(header, &entries);
    if let Err(e) = core.store.append(first, value) {
        let msg = e.to_string();
        for (reply, _) in replies {
            let _ = reply.send(Err(Error::Poisoned(msg.clone())));
        }
        return;
    }
    *next = Seq(seq);
    core.metrics.appended(records as u64, bytes as u64);
    let ticket = core.durability.request();
    // Under the interval policy a receipt does not wait for the flush; the
    // batch is still published to the workers only once it is durable.
    let replies = if matches!(core.cfg.sync, SyncPolicy::Interval(_)) {
        for (reply, s) in replies {
            let _ = reply.send(Ok(s));
        }
        Vec::new()
    } else {
        replies
    };
    let batch = Arc::new(Batch {
        first,
        header,
        entries,
    });
    let _ = core.done_tx.send(Completion::Appended {
        ticket,
        batch,
        tokens,
        replies,
        at: oldest.unwrap_or_else(Instant::now),
    });
}

/// A redrive that appended something: its flush ticket and its completion.
type Redriven<T> = (crate::store::Ticket, Completion<T>);

/// Appends the chosen DLQ entries of `sink` as one value aimed at that sink
/// and removes them from the DLQ, in one transaction.
fn redrive<T>(
    core: &Arc<Core<T>>,
    next: &mut Seq,
    sink: &SinkName,
    seqs: Option<&[Seq]>,
) -> Result<(usize, Option<Redriven<T>>)> {
    let chosen: Vec<_> = core
        .store
        .dlq_list(Some(sink))?
        .into_iter()
        .filter(|e| seqs.is_none_or(|s| s.contains(&Seq(e.seq))))
        .collect();
    if chosen.is_empty() {
        return Ok((0, None));
    }
    let first = *next;
    let (value, remove) = crate::store::redrive_batch(sink, &chosen);
    core.store.append_redrive(first, value.clone(), &remove)?;
    let (_, header, entries) = codec::decode_batch(&codec::log_key(first), &value)?;
    *next = Seq(first.0 + entries.len() as u64);
    let ticket = core.durability.request();
    Ok((
        chosen.len(),
        Some((
            ticket,
            Completion::Appended {
                ticket,
                batch: Arc::new(Batch {
                    first,
                    header,
                    entries,
                }),
                tokens: Vec::new(),
                replies: Vec::new(),
                at: Instant::now(),
            },
        )),
    ))
}
