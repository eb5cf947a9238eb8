//! Opening an outbox: validate, open the store, settle every sink's offset,
//! start the tasks.
//!
//! The store is verified first ([`Store::open`]: the log's chain, every
//! member's offset, the witness); a damaged store is refused, naming what is
//! missing. Then, durably and before any task starts: seqs reserved by the
//! last run and never receipted get a hole; a sink seen for the first time
//! gets its offset (the head, or the first record with [`Start::Earliest`]);
//! a member no longer configured becomes an orphan, which keeps its backlog
//! (it holds back truncation, not acks) until it is forgotten or its
//! `orphan_retention` has passed.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::appender::Cursor;
use super::breaker::Breaker;
use super::core::{Core, Orphan, SinkSlot};
use super::handle::{Outbox, Running, Tasks};
use super::holes::Holes;
use super::rate_limit::TokenBucket;
use super::tail::{ByteIndex, TailCache};
use crate::ack::AckTracker;
use crate::codec::{BatchKind, PauseState};
use crate::config::{BreakerConfig, OutboxConfig, SinkConfig, Start, SyncPolicy};
use crate::error::{ConfigError, Error, Result, StoreError};
use crate::metrics::{MetricsHook, NoopMetrics};
use crate::sink::Sink;
use crate::store::{Durability, FlushMode, Store, StoreOptions, now_ms, plan_membership};
use crate::types::{Seq, SinkName};

/// Configures and opens an [`Outbox`].
pub struct OutboxBuilder<T> {
    dir: PathBuf,
    cfg: OutboxConfig,
    sinks: Vec<(String, Box<dyn Sink>, SinkConfig)>,
    metrics: Arc<dyn MetricsHook>,
    _tokens: std::marker::PhantomData<fn(T)>,
}

impl<T: Send + 'static> Outbox<T> {
    /// Starts configuring an outbox on `data_dir`.
    pub fn builder(data_dir: impl Into<PathBuf>) -> OutboxBuilder<T> {
        OutboxBuilder::new(data_dir.into())
    }
}

impl<T: Send + 'static> OutboxBuilder<T> {
    fn new(dir: PathBuf) -> Self {
        OutboxBuilder {
            dir,
            cfg: OutboxConfig::default(),
            sinks: Vec::new(),
            metrics: Arc::new(NoopMetrics),
            _tokens: std::marker::PhantomData,
        }
    }

    /// Replaces the engine settings.
    pub fn config(mut self, cfg: OutboxConfig) -> Self {
        self.cfg = cfg;
        self
    }

    /// Sets the sync policy.
    pub fn sync(mut self, policy: SyncPolicy) -> Self {
        self.cfg.sync = policy;
        self
    }

    /// Adds a sink. Names are checked by [`OutboxBuilder::open`].
    pub fn sink(mut self, name: impl Into<String>, sink: impl Sink, cfg: SinkConfig) -> Self {
        self.sinks.push((name.into(), Box::new(sink), cfg));
        self
    }

    /// Adds an already boxed sink.
    pub fn boxed_sink(
        mut self,
        name: impl Into<String>,
        sink: Box<dyn Sink>,
        cfg: SinkConfig,
    ) -> Self {
        self.sinks.push((name.into(), sink, cfg));
        self
    }

    /// Sets the metrics hook.
    pub fn metrics(mut self, hook: Arc<dyn MetricsHook>) -> Self {
        self.metrics = hook;
        self
    }

    /// Opens the data directory, replays from each sink's committed offset
    /// and starts delivering. Returns the outbox and the ack receiver.
    ///
    /// Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] for a bad setting or a duplicate or
    /// invalid sink name (before anything is opened); then the store's open
    /// errors ([`crate::StoreError::Locked`],
    /// [`crate::StoreError::UnknownFormat`], corruption, I/O).
    ///
    /// # Cancel safety
    /// Cancel safe: the only wait is the store's open on a blocking thread.
    /// Dropped there, that open still completes and the store is closed
    /// again as its result is dropped (the directory stays locked until
    /// then); no task has started and nothing is delivered.
    pub async fn open(self) -> Result<(Outbox<T>, mpsc::UnboundedReceiver<T>)> {
        self.cfg.validate()?;
        let mut seen = HashSet::new();
        let mut named = Vec::with_capacity(self.sinks.len());
        for (i, (name, sink, cfg)) in self.sinks.into_iter().enumerate() {
            let name = SinkName::new(name).map_err(|e| match e {
                ConfigError::Invalid { reason, .. } => {
                    ConfigError::invalid(format!("sinks[{i}].name"), reason)
                }
                other => other,
            })?;
            if !seen.insert(name.clone()) {
                return Err(Error::config(
                    format!("sinks[{i}].name"),
                    format!("duplicate sink name `{name}`"),
                ));
            }
            cfg.validate(name.as_str())?;
            named.push((name, sink, cfg));
        }
        let cfg = self.cfg;
        let dir = self.dir;
        let opts = StoreOptions {
            cache_bytes: cfg.cache_bytes,
            create: true,
            fsync: cfg.sync == SyncPolicy::Full,
        };
        let retention_ms = cfg.orphan_retention.as_millis() as u64;
        let names: Vec<(SinkName, Start)> =
            named.iter().map(|(n, _, c)| (n.clone(), c.start)).collect();
        let need_bytes = named.iter().any(|(_, _, c)| c.max_lag_bytes.is_some());
        let opened = tokio::task::spawn_blocking(move || {
            open_store(&dir, &opts, &names, need_bytes, retention_ms)
        })
        .await
        .map_err(|e| StoreError::task("open", e))??;
        let OpenedStore {
            store,
            next,
            reserved,
            offsets,
            orphans,
            bytes,
            holes,
            paused,
        } = opened;
        let store = Arc::new(store);
        let mode = FlushMode {
            min_interval: match cfg.sync {
                SyncPolicy::Interval(d) => d,
                SyncPolicy::Always | SyncPolicy::Full => std::time::Duration::ZERO,
            },
        };
        let durability = Arc::new(Durability::start(store.clone(), mode)?);
        let (append_tx, append_rx) = mpsc::channel(4096);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let (head, _) = watch::channel(next);
        let mut sinks_owned = Vec::with_capacity(named.len());
        let mut slots = Vec::with_capacity(named.len());
        for (((name, sink, scfg), off), pause) in named.into_iter().zip(offsets.iter()).zip(paused)
        {
            let mut breaker = Breaker::new(scfg.breaker.clone().unwrap_or(
                // No triggers: it never trips, but can be paused by hand.
                BreakerConfig {
                    consecutive_failures: None,
                    failure_ratio: None,
                    probe_interval: BreakerConfig::DEFAULT_PROBE_INTERVAL,
                },
            ));
            if let Some(p) = pause {
                breaker.pause();
                tracing::warn!(sink = %name, paused_at_ms = p.at_ms, "sink paused by an operator (kept from an earlier run): nothing is delivered until `outbox sinks resume`");
            }
            slots.push(SinkSlot {
                committed: AtomicU64::new(off.0),
                floor: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                dead_lettered: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                corrupt: Mutex::new(None),
                filtered: AtomicU64::new(0),
                breaker: Mutex::new(breaker),
                paused_at_ms: Mutex::new(pause.map(|p| p.at_ms)),
                retry_dirty: AtomicBool::new(false),
                oldest: Mutex::new(None),
                bucket: scfg
                    .rate_limit
                    .map(|r| Mutex::new(TokenBucket::new(r, std::time::Instant::now()))),
                gate_changed: Notify::new(),
                name,
                cfg: scfg,
            });
            sinks_owned.push(sink);
        }
        let core = Arc::new(Core {
            log_id: store.log_id(),
            store,
            durability,
            tail: Mutex::new(TailCache::new(cfg.tail_cache_bytes)),
            bytes: bytes.map(Mutex::new),
            cfg,
            sinks: slots,
            head,
            room: Notify::new(),
            metrics: self.metrics,
            closing: AtomicBool::new(false),
            append_tx,
            done_tx,
            drain: CancellationToken::new(),
            cancel: CancellationToken::new(),
            mean_record_bytes: AtomicU64::new(0),
            orphans: Mutex::new(orphans),
            holes: Mutex::new(holes),
            appending_since: Default::default(),
        });
        for slot in &core.sinks {
            let state = slot.breaker.lock().state();
            core.metrics.breaker(slot.name.as_str(), state);
            super::pending::oldest(&core, slot, true);
        }
        let acks = AckTracker::new(offsets.iter().map(|s| s.0).collect());
        let appender = tokio::spawn(super::appender::run(
            core.clone(),
            append_rx,
            Cursor { next, reserved },
        ));
        let completion = tokio::spawn(super::completion::run(core.clone(), done_rx, acks, ack_tx));
        let workers = sinks_owned
            .into_iter()
            .enumerate()
            .map(|(i, sink)| tokio::spawn(super::worker::run(core.clone(), i, Arc::from(sink))))
            .collect();
        let truncator = tokio::spawn(super::truncate::run(core.clone()));
        tracing::info!(
            log_id = %core.log_id,
            head = next.0,
            sinks = core.sinks.len(),
            "outbox open"
        );
        Ok((
            Outbox {
                running: Arc::new(Running {
                    core: core.clone(),
                    tasks: Mutex::new(Some(Tasks {
                        appender,
                        completion,
                        workers,
                        truncator,
                    })),
                }),
                core,
            },
            ack_rx,
        ))
    }
}

struct OpenedStore {
    store: Store,
    next: Seq,
    reserved: Seq,
    offsets: Vec<Seq>,
    orphans: Vec<Orphan>,
    bytes: Option<ByteIndex>,
    holes: Holes,
    /// Each configured sink's pause, in order.
    paused: Vec<Option<PauseState>>,
}

fn open_store(
    dir: &std::path::Path,
    opts: &StoreOptions,
    sinks: &[(SinkName, Start)],
    need_bytes: bool,
    retention_ms: u64,
) -> Result<OpenedStore> {
    let (store, verified) = Store::open(dir, opts)?;
    let mut offsets = verified.offsets.clone();
    for (name, to) in &verified.legacy_raise {
        // Version 1 did not keep an orphan's backlog; it resumes at the
        // first record still there, as it did then.
        tracing::warn!(sink = %name, offset = offsets.get(name).map_or(0, |o| o.0), first = to.0, "orphan's offset is below the first record in the log (version 1 truncated past orphans); resuming it at the first record");
        store.commit_offset(name, *to, &[])?;
        offsets.insert(name.clone(), *to);
    }
    let next = verified.next;
    if next > verified.extent.end {
        tracing::info!(
            from = verified.extent.end.0,
            to = next.0,
            "seqs reserved by the last run and never receipted are skipped (a hole in the log)"
        );
        store.write_marker(BatchKind::Hole, verified.extent.end, next)?;
    }
    let mut holes = Holes::default();
    for (from, to) in &verified.markers {
        holes.add(*from, *to);
    }
    holes.add(verified.extent.end, next);
    let plan = plan_membership(
        sinks,
        &verified.members,
        &offsets,
        verified.extent.first,
        next,
        now_ms(),
        retention_ms,
    );
    for (name, o) in &plan.new {
        store.commit_offset(name, *o, &[])?;
        tracing::info!(sink = %name, offset = o.0, "new sink");
    }
    for name in &plan.expired {
        let o = store.forget(name)?;
        store.sink_state_forget(name)?;
        tracing::warn!(sink = %name, offset = o.0, "orphaned sink forgotten: its orphan_retention has passed; its backlog is no longer kept");
    }
    for (name, o, since) in &plan.orphans {
        tracing::warn!(sink = %name, offset = o.0, orphaned_at_ms = since, "orphaned sink: it has an offset but is not configured; its backlog is kept (it holds back truncation, not acks) until `outbox sinks forget` or orphan_retention");
    }
    if store.members()? != plan.members || store.format() != crate::codec::FormatVersion::CURRENT {
        store.set_members(&plan.members)?;
    }
    store.flush()?;
    let bytes = if need_bytes {
        let mut idx = ByteIndex::default();
        for h in store.batch_headers() {
            let (first, h) = h?;
            idx.push(first, h.bytes);
        }
        Some(idx)
    } else {
        None
    };
    let reserved = store.seq_reserved()?.max(next);
    let paused = sinks
        .iter()
        .map(|(name, _)| store.paused(name))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(OpenedStore {
        paused,
        store,
        next,
        reserved,
        offsets: plan.offsets,
        orphans: plan
            .orphans
            .into_iter()
            .map(|(name, offset, since_ms)| Orphan {
                name,
                offset,
                since_ms,
            })
            .collect(),
        bytes,
        holes,
    })
}
