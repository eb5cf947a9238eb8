//! The ack-token lifecycle of JetStream messages.
//!
//! A fetched message is *tracked* here from the moment it arrives until it
//! is acked, terminated or handed back (`Nak`). Its ack token ([`JsAck`])
//! travels through the outbox; when the engine releases it (every sink's
//! durable offset has passed the record, or at once under `ack =
//! "accepted"`), [`Acker::ack`] stops tracking it and acks it with
//! `double_ack`, which waits for the server's confirmation.
//!
//! Invariants:
//! - a message is acked only through a released token (or, under
//!   `accepted`, a receipt): nothing here acks on its own;
//! - while a message is tracked, an in-progress ack (`AckKind::Progress`) is
//!   sent at least every half `ack_wait`, so JetStream does not redeliver a
//!   message that is merely waiting for a slow sink;
//! - a failed ack is retried with capped backoff until it succeeds or the
//!   process stops, and each retry is counted; one never acked is
//!   redelivered by JetStream after `ack_wait` and, being keyed by stream
//!   sequence, not appended again.
//!
//! [`ProgressSchedule`] is the pure part: which tracked messages are due for
//! an in-progress ack at a given instant.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::message::Acker as NatsAcker;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::stats::SourceStats;

/// The ack token of a record that came from JetStream. Small and `Clone`:
/// the message's reply subject stays in the [`Acker`]'s table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsAck {
    /// The tracking id, unique in this process.
    pub id: u64,
    /// The message's stream sequence.
    pub stream_seq: u64,
}

/// When tracked messages are due for an in-progress ack. Pure.
#[derive(Debug)]
pub struct ProgressSchedule {
    every: Duration,
    last: HashMap<u64, Instant>,
}

impl ProgressSchedule {
    /// In-progress acks every half `ack_wait` (at least every 50 ms, so a
    /// tiny `ack_wait` cannot turn this into a busy loop).
    pub fn new(ack_wait: Duration) -> Self {
        ProgressSchedule {
            every: (ack_wait / 2).max(Duration::from_millis(50)),
            last: HashMap::new(),
        }
    }

    /// How often each tracked message gets an in-progress ack.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Starts the clock of `id` at `now` (the message just arrived, so the
    /// server's `ack_wait` for it just started).
    pub fn track(&mut self, id: u64, now: Instant) {
        self.last.insert(id, now);
    }

    /// Stops tracking `id`; `false` if it was not tracked.
    pub fn untrack(&mut self, id: u64) -> bool {
        self.last.remove(&id).is_some()
    }

    /// The ids due at `now`, oldest first; their clocks restart at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<u64> {
        let mut due: Vec<(Instant, u64)> = self
            .last
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= self.every)
            .map(|(id, t)| (*t, *id))
            .collect();
        due.sort();
        for (_, id) in &due {
            self.last.insert(*id, now);
        }
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// How many are tracked.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether none is tracked.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

struct Table {
    replies: HashMap<u64, async_nats::Subject>,
    schedule: ProgressSchedule,
}

/// Tracks messages and acks them. Shared (`Arc`) by the fetch loop, the
/// progress task and whoever receives the released tokens.
pub struct Acker {
    js: async_nats::jetstream::Context,
    table: Mutex<Table>,
    next_id: AtomicU64,
    stats: Arc<SourceStats>,
    stop: CancellationToken,
}

/// The first wait before trying an ack again.
const ACK_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest wait between two tries of one ack.
const ACK_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Acker {
    pub(super) fn new(
        js: async_nats::jetstream::Context,
        ack_wait: Duration,
        stats: Arc<SourceStats>,
    ) -> Arc<Acker> {
        Arc::new(Acker {
            js,
            table: Mutex::new(Table {
                replies: HashMap::new(),
                schedule: ProgressSchedule::new(ack_wait),
            }),
            next_id: AtomicU64::new(1),
            stats,
            stop: CancellationToken::new(),
        })
    }

    /// Starts tracking a message that just arrived.
    pub(super) fn track(&self, reply: async_nats::Subject, stream_seq: u64) -> JsAck {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut t = self.table.lock();
        t.replies.insert(id, reply);
        t.schedule.track(id, Instant::now());
        JsAck { id, stream_seq }
    }

    fn take(&self, token: &JsAck) -> Option<async_nats::Subject> {
        let mut t = self.table.lock();
        t.schedule.untrack(token.id);
        t.replies.remove(&token.id)
    }

    /// How many messages are tracked (fetched and not yet acked,
    /// terminated or handed back).
    pub fn tracked(&self) -> usize {
        self.table.lock().replies.len()
    }

    /// Acks a released token with `double_ack`, retrying a failure (counted
    /// in [`SourceStats::ack_retries`]) until it succeeds or [`Acker::stop`]
    /// is called. A token that is not tracked (already acked) is ignored.
    pub async fn ack(&self, token: JsAck) {
        let Some(reply) = self.take(&token) else {
            return;
        };
        let acker = NatsAcker::new(self.js.clone(), Some(reply));
        let mut wait = ACK_BACKOFF_MIN;
        loop {
            match acker.double_ack().await {
                Ok(()) => {
                    self.stats.acked.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    let retries = self.stats.ack_retries.fetch_add(1, Ordering::Relaxed);
                    // Every failure is counted; the log gets the first of
                    // each ack and then one in a hundred, so that an outage
                    // with thousands of acks waiting does not flood it.
                    if wait == ACK_BACKOFF_MIN || retries.is_multiple_of(100) {
                        tracing::warn!(stream_seq = token.stream_seq, error = %e, retries_so_far = retries + 1, "jetstream source: ack failed; retrying");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => {
                    self.stats.ack_abandoned.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(stream_seq = token.stream_seq, "jetstream source: stopping with an ack not confirmed; JetStream redelivers the message after ack_wait and it is not appended again");
                    return;
                }
            }
            wait = (wait * 2).min(ACK_BACKOFF_MAX);
        }
    }

    /// Terminates a message (`AckKind::Term`): JetStream never redelivers
    /// it. For a message outbox refuses for good (invalid, too large).
    pub(super) async fn term(&self, token: &JsAck) {
        self.send_final(token, AckKind::Term).await;
        self.stats.terminated.fetch_add(1, Ordering::Relaxed);
    }

    /// Hands a message back (`AckKind::Nak`) so that JetStream redelivers it
    /// at once, to this daemon or another, instead of after `ack_wait`.
    pub(super) async fn nak(&self, token: &JsAck) {
        self.send_final(token, AckKind::Nak(None)).await;
        self.stats.nakked.fetch_add(1, Ordering::Relaxed);
    }

    async fn send_final(&self, token: &JsAck, kind: AckKind) {
        let Some(reply) = self.take(token) else {
            return;
        };
        let acker = NatsAcker::new(self.js.clone(), Some(reply));
        // Best effort by design: if it is lost, the message is redelivered
        // after ack_wait and handled (refused, or appended) again.
        if let Err(e) = acker.double_ack_with(kind).await {
            tracing::warn!(stream_seq = token.stream_seq, kind = ?kind, error = %e, "jetstream source: could not send to the server; the message is redelivered after ack_wait");
        }
    }

    /// Sends the in-progress acks due now. Returns how many were sent.
    pub(super) async fn send_progress(&self) -> usize {
        let due: Vec<async_nats::Subject> = {
            let mut t = self.table.lock();
            let ids = t.schedule.due(Instant::now());
            ids.into_iter()
                .filter_map(|id| t.replies.get(&id).cloned())
                .collect()
        };
        let n = due.len();
        let mut failed = 0usize;
        let mut last_error = None;
        for reply in due {
            // A plain publish: a lost one is covered by the next, sent well
            // before ack_wait runs out.
            let acker = NatsAcker::new(self.js.clone(), Some(reply));
            match acker.ack_with(AckKind::Progress).await {
                Ok(()) => {
                    self.stats.progress.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    failed += 1;
                    last_error = Some(e.to_string());
                }
            }
        }
        // One line per round, not per message: an outage would flood the log.
        if let Some(e) = last_error {
            tracing::warn!(failed, of = n, error = %e, "jetstream source: in-progress acks not sent");
        }
        n
    }

    /// Runs [`Acker::send_progress`] every quarter of the progress period
    /// until [`Acker::stop`].
    pub(super) async fn progress_loop(self: Arc<Self>) {
        let tick = self.table.lock().schedule.every() / 4;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.stop.cancelled() => return,
            }
            self.send_progress().await;
        }
    }

    /// Ends the progress loop and any ack still retrying.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_due_every_half_ack_wait_per_message() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = ProgressSchedule::new(Duration::from_secs(30));
        assert_eq!(s.every(), Duration::from_secs(15));
        s.track(1, t0);
        s.track(2, t0 + ms(5000));
        assert!(s.due(t0 + ms(14_999)).is_empty());
        assert_eq!(s.due(t0 + ms(15_000)), [1]);
        // 1's clock restarted at 15 s; 2 is due at 20 s.
        assert!(s.due(t0 + ms(19_999)).is_empty());
        assert_eq!(s.due(t0 + ms(20_000)), [2]);
        assert_eq!(s.due(t0 + ms(40_000)), [1, 2]);
        assert!(s.untrack(1));
        assert!(!s.untrack(1));
        assert_eq!(s.due(t0 + ms(60_000)), [2]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn oldest_first_and_a_floor_on_the_period() {
        let t0 = Instant::now();
        let mut s = ProgressSchedule::new(Duration::from_millis(10));
        assert_eq!(s.every(), Duration::from_millis(50));
        s.track(7, t0 + Duration::from_millis(2));
        s.track(3, t0 + Duration::from_millis(1));
        s.track(5, t0);
        assert_eq!(s.due(t0 + Duration::from_secs(1)), [5, 3, 7]);
        assert!(!s.is_empty());
    }
}
