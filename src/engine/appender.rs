//! The appender task: packs requests into log values and writes them.
//!
//! Invariants:
//! - seqs are assigned here and nowhere else while the engine runs, in
//!   strictly increasing order, contiguous within a value;
//! - before a seq at or above `meta.seq_reserved` is written, the
//!   reservation is raised past it durably, so no receipt can name a seq a
//!   crash could hand to another record;
//! - one request's records always land in one value, or one atomic run of
//!   values (atomic `dispatch_many` and HTTP ingest requests);
//! - a request with an idempotency key that is already known appends
//!   nothing; its tokens are held against the records the key names, and it
//!   is answered once they are durable; a new key is written in the same
//!   sled transaction as its records;
//! - a value is written before its flush is requested, and its batch is
//!   handed to the completion task with that flush's ticket; nothing here
//!   waits for a flush, so the next value is built while the last flushes;
//! - a failed write answers every request of its group with the error and
//!   poisons the store: nothing more is written or receipted until it is
//!   reopened (what sled had already written may survive, and is then
//!   delivered after the reopen: a failed dispatch is "maybe appended", and
//!   its items are not handed back);
//! - a request answered with an error before anything of it was written (a
//!   reused idempotency key, or one still queued at `Stop`) gets its items
//!   back in the answer;
//! - a redrive runs one bounded chunk at a time, and only while no dispatch
//!   is waiting, so a large redrive never holds dispatch up for long.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::core::Core;
use super::dispatch_error::DispatchError;
use super::msg::{AppendReq, Appended, Completion, Reply};
use crate::codec::{self, BatchHeader, BatchKind, IdemValue, LogEntry};
use crate::config::SyncPolicy;
use crate::error::{DispatchErrorKind, Result, StoreError, StoreResult};
use crate::store::{Batch, Selection, Ticket, now_ms};
use crate::types::{Record, Seq, SinkName};

/// Seqs reserved at a time: one durable meta write (a flush and an
/// fdatasync, ~0.3 ms) per this many records, and at most this many seqs
/// skipped by a restart after a crash.
pub(crate) const RESERVE_CHUNK: u64 = 1 << 20;

/// A redrive in progress.
struct RedriveJob {
    sink: SinkName,
    which: Selection,
    after: Option<Seq>,
    moved: usize,
    last: Option<Ticket>,
    reply: oneshot::Sender<Result<usize>>,
}

/// Where the appender stands: the next seq and the durable reservation.
pub(crate) struct Cursor {
    pub next: Seq,
    pub reserved: Seq,
}

/// Runs until a `Stop` request; returns the next unassigned seq.
pub(crate) async fn run<T: Send + 'static>(
    core: Arc<Core<T>>,
    mut rx: mpsc::Receiver<AppendReq<T>>,
    mut cur: Cursor,
) -> Seq {
    let mut carry: Option<AppendReq<T>> = None;
    let mut redrives: VecDeque<RedriveJob> = VecDeque::new();
    loop {
        let req = match carry.take() {
            Some(r) => r,
            None if !redrives.is_empty() => match rx.try_recv() {
                Ok(r) => r,
                Err(mpsc::error::TryRecvError::Empty) => {
                    redrive_step(&core, &mut cur, &mut redrives);
                    tokio::task::yield_now().await;
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return cur.next,
            },
            None => match rx.recv().await {
                Some(r) => r,
                None => return cur.next,
            },
        };
        let mut group = match req {
            AppendReq::Stop => {
                while !redrives.is_empty() {
                    redrive_step(&core, &mut cur, &mut redrives);
                }
                refuse_queued(&mut rx);
                return cur.next;
            }
            AppendReq::Redrive { sink, which, reply } => {
                redrives.push_back(RedriveJob {
                    sink,
                    which,
                    after: None,
                    moved: 0,
                    last: None,
                    reply,
                });
                continue;
            }
            AppendReq::Records {
                items,
                bytes,
                key,
                reply,
                at,
            } => vec![Req {
                items,
                bytes,
                key,
                reply,
                at,
            }],
        };
        // Gather what else is queued, within the group limits.
        let mut records: usize = group[0].items.len();
        let mut bytes: usize = group[0].bytes;
        while records < core.cfg.max_batch_records && bytes < core.cfg.max_batch_bytes {
            match rx.try_recv() {
                Ok(AppendReq::Records {
                    items,
                    bytes: b,
                    key,
                    reply,
                    at,
                }) => {
                    let req = Req {
                        items,
                        bytes: b,
                        key,
                        reply,
                        at,
                    };
                    if records + req.items.len() > core.cfg.max_batch_records
                        || bytes + b > core.cfg.max_batch_bytes
                    {
                        carry = Some(req.into_append());
                        break;
                    }
                    records += req.items.len();
                    bytes += b;
                    group.push(req);
                }
                Ok(other) => {
                    carry = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        write_group(&core, &mut cur, group);
    }
}

/// Closes the queue and answers what is still in it with `ShuttingDown`,
/// handing each request's items back: nothing of them was written. A later
/// `send` fails and gets its request back the same way.
fn refuse_queued<T>(rx: &mut mpsc::Receiver<AppendReq<T>>) {
    rx.close();
    while let Ok(req) = rx.try_recv() {
        match req {
            AppendReq::Records { items, reply, .. } => {
                let _ = reply.send(Err(DispatchError::returned(
                    DispatchErrorKind::ShuttingDown,
                    items,
                )));
            }
            AppendReq::Redrive { reply, .. } => {
                let _ = reply.send(Err(DispatchErrorKind::ShuttingDown.into()));
            }
            AppendReq::Stop => {}
        }
    }
}

/// One dispatch request.
struct Req<T> {
    items: Vec<(Record, Vec<T>)>,
    bytes: usize,
    key: Option<(Vec<u8>, [u8; 16])>,
    reply: Reply<T>,
    at: Instant,
}

impl<T> Req<T> {
    fn into_append(self) -> AppendReq<T> {
        AppendReq::Records {
            items: self.items,
            bytes: self.bytes,
            key: self.key,
            reply: self.reply,
            at: self.at,
        }
    }
}

/// How a keyed request was resolved.
enum Keyed {
    /// Not seen: append, then record the key.
    New,
    /// Seen, with the same content: the first record's seq.
    Duplicate(Seq),
}

fn resolve_key(
    core: &Core<impl Send>,
    key: &(Vec<u8>, [u8; 16]),
    count: usize,
    in_group: &HashMap<Vec<u8>, IdemValue>,
) -> std::result::Result<Keyed, DispatchErrorKind> {
    let (k, digest) = key;
    let known = match in_group.get(k) {
        Some(v) => Some(*v),
        None => core.store.idem_get(k)?,
    };
    let window = core.cfg.idempotency_window.as_millis() as u64;
    match known {
        Some(v) if now_ms().saturating_sub(v.at_ms) < window => {
            if &v.digest != digest || v.count as usize != count {
                Err(DispatchErrorKind::KeyReused(format!(
                    "key `{}` was used within the last {:?} for {} different record(s); nothing was appended",
                    String::from_utf8_lossy(k),
                    core.cfg.idempotency_window,
                    v.count
                )))
            } else {
                Ok(Keyed::Duplicate(Seq(v.first)))
            }
        }
        _ => Ok(Keyed::New),
    }
}

fn write_group<T: Send + 'static>(core: &Arc<Core<T>>, cur: &mut Cursor, group: Vec<Req<T>>) {
    let first = cur.next;
    let mut tokens = Vec::new();
    let mut replies = Vec::with_capacity(group.len());
    let mut early = Vec::new();
    let mut keys: Vec<(Vec<u8>, IdemValue)> = Vec::new();
    let mut in_group: HashMap<Vec<u8>, IdemValue> = HashMap::new();
    let mut oldest: Option<Instant> = None;
    let mut packer = Packer::new(first, value_bytes(core));
    let mut failed: Vec<(Reply<T>, DispatchError<T>)> = Vec::new();
    let mut records = 0u64;
    let mut bytes = 0u64;
    for req in group {
        oldest = Some(oldest.map_or(req.at, |o| o.min(req.at)));
        if let Some(key) = &req.key {
            match resolve_key(core, key, req.items.len(), &in_group) {
                Err(e) => {
                    // Nothing of it is written: hand the items back.
                    failed.push((req.reply, DispatchError::returned(e, req.items)));
                    continue;
                }
                Ok(Keyed::Duplicate(orig)) => {
                    for (i, (_, t)) in req.items.into_iter().enumerate() {
                        if !t.is_empty() {
                            tokens.push((Seq(orig.0 + i as u64), t));
                        }
                    }
                    replies.push((
                        req.reply,
                        Appended {
                            first: orig,
                            duplicate: true,
                        },
                    ));
                    continue;
                }
                Ok(Keyed::New) => {
                    let v = IdemValue {
                        first: packer.next_seq().0,
                        count: req.items.len() as u32,
                        digest: key.1,
                        at_ms: now_ms(),
                    };
                    in_group.insert(key.0.clone(), v);
                    keys.push((key.0.clone(), v));
                }
            }
        }
        let appended = Appended {
            first: packer.next_seq(),
            duplicate: false,
        };
        records += req.items.len() as u64;
        bytes += req.bytes as u64;
        packer.request(req.items, req.bytes, &mut tokens);
        if matches!(core.cfg.sync, SyncPolicy::Interval(_)) {
            early.push((req.reply, appended));
        } else {
            replies.push((req.reply, appended));
        }
    }
    for (reply, e) in failed {
        let _ = reply.send(Err(e));
    }
    let (batches, atomic_runs) = packer.finish();
    let end = batches.last().map_or(first, |b| b.end());
    let written = {
        let _busy = core.appending_since.enter();
        write_values(core, cur, &batches, &atomic_runs, end, &keys)
    };
    if let Err(e) = written {
        let msg = e.to_string();
        let mut first_err = Some(e);
        for (reply, _) in replies.into_iter().chain(early) {
            let err = first_err
                .take()
                .unwrap_or_else(|| StoreError::Poisoned(msg.clone()));
            // The write may have reached the disk: nothing comes back.
            let _ = reply.send(Err(DispatchError::kept(err)));
        }
        return;
    }
    cur.next = end;
    if records > 0 {
        core.metrics.appended(records, bytes);
        if let Some(this) = bytes.checked_div(records) {
            // A moving mean, weighted 1/8 to the newest group.
            let _ = core.mean_record_bytes.fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |m| Some(if m == 0 { this } else { m - m / 8 + this / 8 }),
            );
        }
    }
    if batches.is_empty() && replies.is_empty() && early.is_empty() && tokens.is_empty() {
        return;
    }
    let ticket = core.durability.request();
    // Under the interval policy a receipt does not wait for the flush; the
    // batch is still published to the workers only once it is durable.
    for (reply, a) in early {
        let _ = reply.send(Ok(a));
    }
    let _ = core.done_tx.send(Completion::Appended {
        ticket,
        batches,
        tokens,
        replies,
        at: oldest.unwrap_or_else(Instant::now),
    });
}

/// Reserves seqs up to `end` if needed, writes the values and the keys.
fn write_values<T>(
    core: &Core<T>,
    cur: &mut Cursor,
    batches: &[Arc<Batch>],
    atomic_runs: &[std::ops::Range<usize>],
    end: Seq,
    keys: &[(Vec<u8>, IdemValue)],
) -> StoreResult<()> {
    if batches.is_empty() {
        return Ok(());
    }
    if end > cur.reserved {
        let to = Seq(end.0.saturating_add(RESERVE_CHUNK));
        core.store.reserve_seqs(to)?;
        cur.reserved = to;
    }
    let values = batches
        .iter()
        .map(|b| Ok((b.first, codec::encode_batch(b.first, b.header, &b.entries)?)))
        .collect::<StoreResult<Vec<_>>>()?;
    if keys.is_empty() {
        core.store.append_runs(values, atomic_runs)?;
    } else {
        // Keys and their records in one transaction: after a crash, a key
        // is there exactly when its records are.
        core.store.append_keyed(values, keys)?;
    }
    core.store.note_appended(end);
    Ok(())
}

/// The value size for the next group: `max_value_bytes` while every sink
/// keeps up, `backlog_value_bytes` once the slowest is more than
/// `backlog_records` behind. While sinks keep up, values are truncated soon
/// after they are written; once a backlog builds, the values stay in sled,
/// whose cache only evicts small pages (docs/performance.md), so smaller
/// values bound memory exactly when a backlog would otherwise fill it.
fn value_bytes<T>(core: &Core<T>) -> usize {
    let behind = core.sinks.iter().map(|s| core.lag(s)).max().unwrap_or(0);
    if behind > core.cfg.backlog_records {
        core.cfg.backlog_value_bytes
    } else {
        core.cfg.max_value_bytes
    }
}

/// Runs the next chunk of the first redrive job, and answers the job when
/// it is done (once its last chunk is durable, without blocking here).
fn redrive_step<T: Send + 'static>(
    core: &Arc<Core<T>>,
    cur: &mut Cursor,
    jobs: &mut VecDeque<RedriveJob>,
) {
    let Some(job) = jobs.front_mut() else {
        return;
    };
    let step = {
        let _busy = core.appending_since.enter();
        core.store.redrive_chunk(
            &job.sink,
            &job.which,
            job.after,
            cur.next,
            core.cfg.max_value_bytes,
        )
    };
    match step {
        Ok(Some(chunk)) => {
            job.after = Some(chunk.cursor);
            job.moved += chunk.moved;
            let batches: Vec<Arc<Batch>> = chunk.batches.into_iter().map(Arc::new).collect();
            if let Some(b) = batches.last() {
                cur.next = b.end();
            }
            if cur.next > cur.reserved {
                // Redriven seqs are never receipted, but keep the invariant
                // that everything written is below the reservation.
                let to = Seq(cur.next.0.saturating_add(RESERVE_CHUNK));
                if core.store.reserve_seqs(to).is_ok() {
                    cur.reserved = to;
                }
            }
            let ticket = core.durability.request();
            job.last = Some(ticket);
            let _ = core.done_tx.send(Completion::Appended {
                ticket,
                batches,
                tokens: Vec::new(),
                replies: Vec::new(),
                at: Instant::now(),
            });
        }
        Ok(None) => {
            if let Some(job) = jobs.pop_front() {
                let durability = core.durability.clone();
                tokio::spawn(async move {
                    let r = match job.last {
                        Some(t) => durability.wait(t).await.map(|()| job.moved),
                        None => Ok(0),
                    };
                    let _ = job.reply.send(r);
                });
            }
        }
        Err(e) => {
            if let Some(job) = jobs.pop_front() {
                let _ = job.reply.send(Err(e.into()));
            }
        }
    }
}

/// Packs the requests of one group commit into log values.
///
/// Whole requests are packed into values of at most `max_bytes`; small
/// values keep sled's leaf pages small enough for its cache to evict them,
/// which bounds memory under a large backlog (docs/performance.md). A request
/// larger than `max_bytes` is cut into several values that form one *atomic
/// run*, written whole or not at all (`store::intent`).
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
        items: Vec<(Record, Vec<T>)>,
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
                kind: BatchKind::Records,
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
