//! The JetStream source: reads a durable pull consumer and appends each
//! message as one record, acking it to JetStream only when outbox is done
//! with it.
//!
//! Invariants:
//! - under `ack = "delivered"` (the default) a message is acked only after
//!   every sink's durable offset has passed its record: its [`JsAck`] is the
//!   record's ack token, released by the engine's watermark; under
//!   `accepted`, only after its record is durable in the log;
//! - a message is appended at most once per idempotency window, keyed by
//!   stream and stream sequence, so a redelivery (after a crash between
//!   append and ack, or to another daemon of a fleet) does not become a
//!   second record: its token joins the first record's;
//! - its delivery id depends only on the stream (name and creation time)
//!   and the stream sequence ([`map::StreamId`]), the same on every daemon
//!   of a fleet;
//! - while a message waits (for the append, or for the sinks) it gets
//!   in-progress acks, so `ack_wait` does not run out under a slow sink;
//! - a message that fails validation, or that the engine refuses for good
//!   (larger than `max_record_bytes`), is terminated (`Term`), logged and
//!   counted; one refused because outbox is stopping is handed back (`Nak`);
//! - nothing is acked on error: a message not acked is redelivered by
//!   JetStream after `ack_wait`.
//!
//! Records enter the log in the order the consumer delivers them as far as
//! one daemon can tell: each message is admitted (`try_dispatch_once`) before
//! the next, and when a sink is full the source waits for room in line
//! rather than letting a later group overtake; only the waits for
//! durability run concurrently. Redeliveries and a fleet reorder them, as
//! JetStream does.
//!
//! Parts: [`config`] (the settings), [`connect`] (connection and consumer
//! setup), [`ack`] (the ack-token lifecycle), [`map`] (message to record,
//! pure), [`stats`] (counters).

pub mod ack;
pub mod config;
pub mod connect;
pub mod map;
pub mod stats;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::MessagesErrorKind;
use futures::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use self::ack::Acker;
use self::map::Incoming;
use crate::engine::{DispatchError, Outbox};
use crate::error::{DispatchErrorKind, Error, Result};
use crate::types::Record;

pub use self::ack::JsAck;
pub use self::config::{AckMode, JetStreamSourceConfig};
pub use self::map::{NAMESPACE, Validate};
pub use self::stats::SourceStats;

/// Messages handed to the engine together, at most.
const GROUP: usize = 256;
/// Groups being appended at once, at most.
const GROUPS_IN_FLIGHT: usize = 8;
/// Messages pulled per request.
const PULL_BATCH: usize = 512;
/// The server's idle heartbeat on a pull; two missed ones end the pull.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Longest wait before setting the consumer up again after a failure.
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);

/// A connected JetStream source. See the module docs.
pub struct JetStreamSource {
    cfg: JetStreamSourceConfig,
    conn: connect::Connected,
    acker: Arc<Acker>,
    stats: Arc<SourceStats>,
    progress: tokio::task::JoinHandle<()>,
}

/// One message, tracked and mapped, ready to append.
struct Prepared {
    token: JsAck,
    key: String,
    record: Record,
}

impl JetStreamSource {
    /// Connects, checks the stream and gets or creates the consumer, and
    /// starts sending in-progress acks for the messages it will track.
    ///
    /// # Errors
    /// As [`connect::connect`].
    pub async fn connect(cfg: JetStreamSourceConfig) -> Result<JetStreamSource> {
        let conn = connect::connect(&cfg).await?;
        let stats = Arc::new(SourceStats::default());
        let acker = Acker::new(conn.js.clone(), conn.ack_wait, stats.clone());
        let progress = tokio::spawn(acker.clone().progress_loop());
        tracing::info!(url = %cfg.url, stream = %cfg.stream, consumer = %cfg.consumer, ack_wait_ms = conn.ack_wait.as_millis() as u64, "jetstream source connected");
        Ok(JetStreamSource {
            cfg,
            conn,
            acker,
            stats,
            progress,
        })
    }

    /// The consumer's `ack_wait` and `max_ack_pending`, as the server has
    /// them (an existing consumer keeps its own).
    pub fn consumer_limits(&self) -> (Duration, i64) {
        (
            self.conn.ack_wait,
            self.conn.consumer.cached_info().config.max_ack_pending,
        )
    }

    /// The stream read, with its creation time.
    pub fn stream(&self) -> &map::StreamId {
        &self.conn.stream
    }

    /// The acker: give it every released [`JsAck`].
    pub fn acker(&self) -> Arc<Acker> {
        self.acker.clone()
    }

    /// The counters, shared.
    pub fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }

    /// Reads messages and appends them until `stop` resolves, then waits for
    /// the appends in flight. The outbox keeps running: shut it down next
    /// (releasing the tokens of what the sinks finish), then call
    /// [`JetStreamSource::close`].
    ///
    /// A lost connection, an ended pull or a deleted consumer is waited out
    /// and set up again, logged, for as long as it takes.
    ///
    /// # Errors
    /// The engine's error when an append fails for a reason other than a
    /// refused record or shutdown (a failed flush:
    /// [`crate::StoreError::Poisoned`]); then the source stops and the
    /// message is handed back.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped part way, appends already admitted still
    /// complete and their tokens are acked as usual, but messages fetched
    /// and not yet appended are neither acked nor nacked; the server
    /// redelivers them after its ack wait. Resolve `stop` instead.
    pub async fn run<T>(&self, outbox: Arc<Outbox<T>>, stop: impl Future<Output = ()>) -> Result<()>
    where
        T: From<JsAck> + Send + 'static,
    {
        tokio::pin!(stop);
        let slots = Arc::new(Semaphore::new(GROUPS_IN_FLIGHT));
        let mut inflight: JoinSet<Result<()>> = JoinSet::new();
        let mut consumer = self.conn.consumer.clone();
        let mut backoff = Duration::from_millis(100);
        let mut result = Ok(());
        // Set when the pull must be set up again (it failed to start, ended,
        // or its consumer was deleted).
        let mut resubscribe = false;
        'pull: loop {
            if std::mem::take(&mut resubscribe) {
                consumer = match self.reconsume(consumer).await {
                    Ok(c) => c,
                    Err(e) => {
                        result = Err(e);
                        break 'pull;
                    }
                };
            }
            let mut messages = match consumer
                .stream()
                .max_messages_per_batch(PULL_BATCH)
                .heartbeat(HEARTBEAT)
                .messages()
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "jetstream source: cannot start pulling; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut stop => break 'pull,
                    }
                    backoff = (backoff * 2).min(RESUBSCRIBE_MAX);
                    resubscribe = true;
                    continue 'pull;
                }
            };
            loop {
                let next = tokio::select! {
                    m = messages.next() => m,
                    _ = &mut stop => break 'pull,
                    Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                        if let Err(e) = joined(done) {
                            result = Err(e);
                            break 'pull;
                        }
                        continue;
                    }
                };
                let mut group = Vec::new();
                match next {
                    None => {
                        tracing::warn!("jetstream source: the pull ended; pulling again");
                        resubscribe = true;
                        continue 'pull;
                    }
                    Some(Err(e)) => {
                        let gone = e.kind() == MessagesErrorKind::ConsumerDeleted;
                        tracing::warn!(error = %e, "jetstream source: pull error");
                        if gone {
                            resubscribe = true;
                            continue 'pull;
                        }
                        continue;
                    }
                    Some(Ok(m)) => group.push(m),
                }
                backoff = Duration::from_millis(100);
                // Take what else is ready, so one append carries many.
                while group.len() < GROUP {
                    match messages.next().now_or_never() {
                        Some(Some(Ok(m))) => group.push(m),
                        Some(Some(Err(e))) => {
                            tracing::warn!(error = %e, "jetstream source: pull error");
                            break;
                        }
                        _ => break,
                    }
                }
                let prepared = self.prepare(group).await;
                if prepared.is_empty() {
                    continue;
                }
                let permit = tokio::select! {
                    p = slots.clone().acquire_owned() => p.map_err(|_| DispatchErrorKind::ShuttingDown)?,
                    _ = &mut stop => {
                        for p in &prepared {
                            self.acker.nak(&p.token).await;
                        }
                        break 'pull;
                    }
                };
                // The whole group is admitted here, in order, before the next
                // one is read: that keeps the log in delivery order, even
                // when a full sink makes an admission wait.
                let admitted = match self.admit(&outbox, prepared, &mut stop).await {
                    Some(a) => a,
                    None => break 'pull,
                };
                let (acker, stats, mode) = (self.acker.clone(), self.stats.clone(), self.cfg.ack);
                inflight.spawn(async move {
                    let r = settle(acker, stats, mode, admitted).await;
                    drop(permit);
                    r
                });
            }
        }
        while let Some(done) = inflight.join_next().await {
            if let Err(e) = joined(done)
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        result
    }

    /// Sets the consumer up again (it may have been deleted, or the
    /// connection lost), waiting and retrying; after three failures the old
    /// handle is pulled on again, which retries too.
    ///
    /// # Errors
    /// [`Error::Source`] when the stream was deleted and created again: its
    /// sequences start over, so the keys and ids of this run no longer
    /// apply; a restart picks the new stream up.
    async fn reconsume(
        &self,
        old: async_nats::jetstream::consumer::PullConsumer,
    ) -> Result<async_nats::jetstream::consumer::PullConsumer> {
        let mut wait = Duration::from_millis(100);
        for _ in 0..3 {
            match connect::setup_consumer(&self.conn.js, &self.cfg).await {
                Ok((id, _)) if id != self.conn.stream => {
                    return Err(Error::Source(format!(
                        "stream `{}` was deleted and created again while outbox ran; restart outbox to read the new one",
                        self.cfg.stream
                    )));
                }
                Ok((_, c)) => return Ok(c),
                Err(e) => {
                    tracing::warn!(error = %e, "jetstream source: cannot set the consumer up; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RESUBSCRIBE_MAX);
                }
            }
        }
        Ok(old)
    }

    /// Tracks each message, maps it, terminates the invalid ones.
    async fn prepare(&self, group: Vec<async_nats::jetstream::Message>) -> Vec<Prepared> {
        let mut out = Vec::with_capacity(group.len());
        for msg in group {
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            let seq = match msg.info() {
                Ok(i) => i.stream_sequence,
                Err(e) => {
                    // Not a JetStream delivery: there is nothing to ack and no
                    // sequence to key it by. A pull consumer never sends one.
                    tracing::error!(subject = %msg.subject, error = %e, "jetstream source: message without a JetStream reply subject; not appended");
                    continue;
                }
            };
            // `info()` parsed the reply subject, so it is there.
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let token = self.acker.track(reply, seq);
            let headers: Vec<(String, String)> = msg
                .headers
                .iter()
                .flat_map(|h| h.iter())
                .flat_map(|(k, vs)| {
                    vs.iter()
                        .map(move |v| (k.to_string(), v.as_str().to_string()))
                })
                .collect();
            let incoming = Incoming {
                stream_seq: seq,
                subject: msg.subject.as_str(),
                headers,
                payload: &msg.payload,
            };
            match map::to_record(incoming, self.cfg.validate) {
                Ok(record) => out.push(Prepared {
                    record: record.with_delivery_id(self.conn.stream.delivery_id(seq)),
                    key: self.conn.stream.idempotency_key(seq),
                    token,
                }),
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "jetstream source: invalid message terminated (Term)");
                    self.acker.term(&token).await;
                }
            }
        }
        out
    }

    /// Hands a group's messages to the engine one after another, each under
    /// its idempotency key, without waiting for durability. When a sink is
    /// full (or the appender busy) it waits for room for that message before
    /// admitting the next, so the group keeps its order. Returns `None` when
    /// `stop` resolved while waiting: the messages not admitted are handed
    /// back (`Nak`).
    async fn admit<T>(
        &self,
        outbox: &Arc<Outbox<T>>,
        group: Vec<Prepared>,
        stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Option<Vec<(JsAck, Admission)>>
    where
        T: From<JsAck> + Send + 'static,
    {
        let mut admitted: Vec<(JsAck, Admission)> = Vec::with_capacity(group.len());
        let mut rest = group.into_iter();
        while let Some(p) = rest.next() {
            let tokens = match self.cfg.ack {
                AckMode::Delivered => vec![T::from(p.token.clone())],
                AckMode::Accepted => Vec::new(),
            };
            let outcome: Admission = match outbox
                .try_dispatch_once(&p.key, vec![(p.record, tokens)])
            {
                Ok(receipt) => Box::pin(FutureExt::map(receipt, |r| {
                    r.map(|d| d.duplicate).map_err(DispatchError::into_kind)
                })),
                Err(e)
                    if matches!(
                        e.kind(),
                        DispatchErrorKind::Full { .. } | DispatchErrorKind::Busy
                    ) && e.has_items() =>
                {
                    let items = e.into_items().unwrap_or_default();
                    let waited = tokio::select! {
                        r = outbox.dispatch_once(&p.key, items) => r.map(|d| d.duplicate).map_err(DispatchError::into_kind),
                        _ = stop.as_mut() => {
                            // Not admitted: this one and the rest go back.
                            self.acker.nak(&p.token).await;
                            for q in rest {
                                self.acker.nak(&q.token).await;
                            }
                            let settled = settle(self.acker.clone(), self.stats.clone(), self.cfg.ack, admitted).await;
                            if let Err(e) = settled {
                                tracing::error!(error = %e, "jetstream source: an append admitted before the stop failed; its message was handed back (Nak)");
                            }
                            return None;
                        }
                    };
                    Box::pin(futures::future::ready(waited))
                }
                Err(e) => Box::pin(futures::future::ready(Err(e.into_kind()))),
            };
            admitted.push((p.token, outcome));
        }
        Some(admitted)
    }

    /// Stops the in-progress acks and any ack still retrying, and flushes
    /// what the client has buffered (acks included) to the server. Call it
    /// after the outbox has shut down and its released tokens were acked.
    ///
    /// # Cancel safety
    /// Dropping it part way may leave buffered acks unsent; the server then
    /// redelivers those messages (the engine answers a redelivered message
    /// from its idempotency key).
    pub async fn close(self) {
        self.acker.stop();
        let _ = self.progress.await;
        if let Err(e) = self.conn.client.flush().await {
            tracing::warn!(error = %e, "jetstream source: final flush failed");
        }
    }
}

fn joined(r: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    r.map_err(|e| Error::Source(format!("append task failed: {e}")))?
}

/// A message handed to the engine: its receipt is awaited by [`settle`].
type Admission = futures::future::BoxFuture<'static, Result<bool, DispatchErrorKind>>;

/// Waits for each admitted message's outcome, then acts on it: counts it,
/// acks it (under `accepted`), terminates a refused one, hands back (`Nak`)
/// one refused because outbox is stopping or failed.
async fn settle(
    acker: Arc<Acker>,
    stats: Arc<SourceStats>,
    mode: AckMode,
    admitted: Vec<(JsAck, Admission)>,
) -> Result<()> {
    let (tokens, outcomes): (Vec<JsAck>, Vec<Admission>) = admitted.into_iter().unzip();
    let results = futures::future::join_all(outcomes).await;
    let mut fatal = None;
    for (token, r) in tokens.iter().zip(results) {
        match r {
            Ok(duplicate) => {
                if duplicate {
                    stats.duplicates.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.appended.fetch_add(1, Ordering::Relaxed);
                }
                if mode == AckMode::Accepted {
                    acker.ack(token.clone()).await;
                }
            }
            Err(DispatchErrorKind::Rejected(why)) => {
                tracing::warn!(stream_seq = token.stream_seq, reason = %why, "jetstream source: record refused; message terminated (Term)");
                acker.term(token).await;
            }
            Err(DispatchErrorKind::ShuttingDown) => acker.nak(token).await,
            Err(e) => {
                acker.nak(token).await;
                fatal.get_or_insert(e);
            }
        }
    }
    match fatal {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
