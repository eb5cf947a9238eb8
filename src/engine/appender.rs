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
    let mut tokens = Vec::new();
    let mut replies = Vec::with_capacity(group.len());
    let mut oldest = None;
    let mut packer = Packer::new(first, value_bytes(core));
    for (items, req_bytes, reply, at) in group {
        replies.push((reply, packer.next_seq()));
        oldest = Some(oldest.map_or(at, |o: Instant| o.min(at)));
        packer.request(items, req_bytes, &mut tokens);
    }
    let (batches, atomic_runs) = packer.finish();
    let values: Vec<(Seq, Vec<u8>)> = batches
        .iter()
        .map(|b| (b.first, codec::encode_batch(b.header, &b.entries)))
        .collect();
    if let Err(e) = core.store.append_runs(values, &atomic_runs) {
        let msg = e.to_string();
        let mut first_err = Some(e);
        for (reply, _) in replies {
            let err = first_err
                .take()
                .unwrap_or_else(|| Error::Poisoned(msg.clone()));
            let _ = reply.send(Err(err));
        }
        return;
    }
    *next = Seq(first.0 + records as u64);
    core.store.note_appended(*next);
    core.metrics.appended(records as u64, bytes as u64);
    if let Some(this) = bytes.checked_div(records) {
        // A moving mean, weighted 1/8 to the newest group.
        let this = this as u64;
        let _ = core.mean_record_bytes.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |m| Some(if m == 0 { this } else { m - m / 8 + this / 8 }),
        );
    }
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
    let _ = core.done_tx.send(Completion::Appended {
        ticket,
        batches,
        tokens,
        replies,
        at: oldest.unwrap_or_else(Instant::now),
    });
}

/// The value size for the next group: `max_value_bytes` while every sink
/// keeps up, `backlog_value_bytes` once the slowest is more than
/// `backlog_records` behind. While sinks keep up, values are truncated soon
/// after they are written; once a backlog builds, the values stay in sled,
/// whose cache only evicts small pages (docs/performance.md), so smaller
/// values bound memory exactly when a backlog would otherwise fill it.
fn value_bytes<T>(core: &Core<T>) -> usize {
    let head = core.head().0;
    let behind = core
        .sinks
        .iter()
        .map(|s| head.saturating_sub(s.committed.load(std::sync::atomic::Ordering::Acquire)))
        .max()
        .unwrap_or(0);
    if behind > core.cfg.backlog_records {
        core.cfg.backlog_value_bytes
    } else {
        core.cfg.max_value_bytes
    }
}

/// Packs the requests of one group commit into log values.
///
/// Whole requests are packed into values of at most `max_bytes`; small
/// values keep sled's leaf pages small enough for its cache to evict them,
/// which bounds memory under a large backlog (docs/performance.md). A request
/// larger than `max_bytes` is cut into several values that form one *atomic
/// run*, written in a single sled batch, so a request stays all-or-nothing.
/// Values that each hold whole requests need no atomicity between them.
struct Packer {
    max_bytes: u64,
    appended_at_ms: u64,
    next: u64,
    cur: Vec<LogEntry>,
    cur_bytes: u64,
    out: Vec<Arc<Batch>>,
    /// Index ranges into `out` that must be written atomically.
    runs: Vec<std::ops::Range<usize>>,
}

impl Packer {
    fn new(first: Seq, max_bytes: usize) -> Self {
        Packer {
            max_bytes: max_bytes as u64,
            appended_at_ms: now_ms(),
            next: first.0,
            cur: Vec::new(),
            cur_bytes: 0,
            out: Vec::new(),
            runs: Vec::new(),
        }
    }

    fn next_seq(&self) -> Seq {
        Seq(self.next + self.cur.len() as u64)
    }

    fn request<T>(
        &mut self,
        items: Vec<(crate::types::Record, Vec<T>)>,
        bytes: usize,
        tokens: &mut Vec<(Seq, Vec<T>)>,
    ) {
        let bytes = bytes as u64;
        if !self.cur.is_empty() && self.cur_bytes + bytes > self.max_bytes {
            self.cut();
        }
        let big = bytes > self.max_bytes;
        let run_start = self.out.len();
        for (record, t) in items {
            let seq = self.next_seq();
            if !t.is_empty() {
                tokens.push((seq, t));
            }
            let size = record.size() as u64;
            if big && !self.cur.is_empty() && self.cur_bytes + size > self.max_bytes {
                self.cut();
            }
            self.cur_bytes += size;
            self.cur.push(LogEntry::new(record));
        }
        if big {
            self.cut();
            if self.out.len() - run_start > 1 {
                self.runs.push(run_start..self.out.len());
            }
        }
    }

    fn cut(&mut self) {
        if self.cur.is_empty() {
            return;
        }
        let n = self.cur.len() as u64;
        self.out.push(Arc::new(Batch {
            first: Seq(self.next),
            header: BatchHeader {
                count: n as u32,
                bytes: self.cur_bytes,
                appended_at_ms: self.appended_at_ms,
            },
            entries: std::mem::take(&mut self.cur),
        }));
        self.next += n;
        self.cur_bytes = 0;
    }

    fn finish(mut self) -> (Vec<Arc<Batch>>, Vec<std::ops::Range<usize>>) {
        self.cut();
        (self.out, self.runs)
    }
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
    let Some(batch) = core.store.redrive_at(sink, seqs, *next)? else {
        return Ok((0, None));
    };
    let moved = batch.entries.len();
    *next = batch.end();
    core.store.note_appended(*next);
    let ticket = core.durability.request();
    Ok((
        moved,
        Some((
            ticket,
            Completion::Appended {
                ticket,
                batches: vec![Arc::new(batch)],
                tokens: Vec::new(),
                replies: Vec::new(),
                at: Instant::now(),
            },
        )),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Record;

    fn req(n: usize, size: usize) -> (Vec<(Record, Vec<u32>)>, usize) {
        let items: Vec<(Record, Vec<u32>)> = (0..n)
            .map(|i| (Record::new(vec![b'x'; size]), vec![i as u32]))
            .collect();
        (items, n * size)
    }

    #[test]
    fn whole_requests_share_a_value_up_to_the_limit() {
        let mut p = Packer::new(Seq(10), 100);
        let mut tokens = Vec::new();
        for _ in 0..3 {
            let (items, bytes) = req(2, 20); // 40 bytes each
            p.request(items, bytes, &mut tokens);
        }
        let (batches, runs) = p.finish();
        let shape: Vec<(u64, u32, u64)> = batches
            .iter()
            .map(|b| (b.first.0, b.header.count, b.header.bytes))
            .collect();
        assert_eq!(
            shape,
            vec![(10, 4, 80), (14, 2, 40)],
            "a request is never split across values"
        );
        assert!(runs.is_empty());
        let seqs: Vec<u64> = tokens.iter().map(|(s, _)| s.0).collect();
        assert_eq!(seqs, vec![10, 11, 12, 13, 14, 15]);
    }

    #[test]
    fn a_large_request_becomes_one_atomic_run() {
        let mut p = Packer::new(Seq(0), 100);
        let mut tokens = Vec::new();
        let (items, bytes) = req(1, 30);
        p.request(items, bytes, &mut tokens);
        let (items, bytes) = req(7, 40); // 280 bytes > 100
        p.request(items, bytes, &mut tokens);
        let (items, bytes) = req(1, 30);
        p.request(items, bytes, &mut tokens);
        let (batches, runs) = p.finish();
        let shape: Vec<(u64, u32)> = batches
            .iter()
            .map(|b| (b.first.0, b.header.count))
            .collect();
        assert_eq!(shape, vec![(0, 1), (1, 2), (3, 2), (5, 2), (7, 1), (8, 1)]);
        assert_eq!(
            runs,
            vec![1..5],
            "the big request's values are written atomically"
        );
        assert_eq!(tokens.len(), 9);
        assert_eq!(batches.last().unwrap().end(), Seq(9));
    }
}
