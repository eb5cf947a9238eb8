//! Opening an outbox: validate, open the store, settle every sink's offset,
//! start the tasks.
//!
//! A sink seen for the first time starts at the head (or the earliest record
//! with [`Start::Earliest`]); its offset is written and flushed before any
//! task starts, so a restart keeps its place. An offset on disk for a sink
//! that is not configured is an orphan: reported, and ignored by truncation
//! and acks.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{ByteIndex, Core, Outbox, SinkSlot, TailCache, Tasks};
use crate::ack::AckTracker;
use crate::config::{OutboxConfig, SinkConfig, Start, SyncPolicy};
use crate::error::{Error, Result};
use crate::metrics::{MetricsHook, NoopMetrics};
use crate::sink::Sink;
use crate::store::{Durability, FlushMode, Store, StoreOptions};
use crate::types::{Seq, SinkName};

/// Configures and opens an [`Outbox`].
pub struct OutboxBuilder<T> {
    dir: PathBuf,
    cfg: OutboxConfig,
    sinks: Vec<(String, Box<dyn Sink>, SinkConfig)>,
    metrics: Arc<dyn MetricsHook>,
    _tokens: std::marker::PhantomData<fn(T)>,
}

impl<T: Send + 'static> OutboxBuilder<T> {
    pub(crate) fn new(dir: PathBuf) -> Self {
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
    /// [`Error::Config`] for a bad setting or a duplicate or invalid sink
    /// name (before anything is opened); then the store's open errors
    /// ([`Error::Locked`], [`Error::UnknownFormat`], corruption, I/O).
    pub async fn open(self) -> Result<(Outbox<T>, mpsc::UnboundedReceiver<T>)> {
        self.cfg.validate()?;
        let mut seen = HashSet::new();
        let mut named = Vec::with_capacity(self.sinks.len());
        for (i, (name, sink, cfg)) in self.sinks.into_iter().enumerate() {
            let name = SinkName::new(name).map_err(|e| match e {
                Error::Config { reason, .. } => Error::config(format!("sinks[{i}].name"), reason),
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
        };
        let names: Vec<(SinkName, Start)> =
            named.iter().map(|(n, _, c)| (n.clone(), c.start)).collect();
        let need_bytes = named.iter().any(|(_, _, c)| c.max_lag_bytes.is_some());
        let opened =
            tokio::task::spawn_blocking(move || open_store(&dir, &opts, &names, need_bytes))
                .await
                .map_err(|e| Error::Storage(format!("open task failed: {e}")))??;
        let OpenedStore {
            store,
            next,
            offsets,
            bytes,
        } = opened;
        let store = Arc::new(store);
        let mode = match cfg.sync {
            SyncPolicy::Always => FlushMode {
                min_interval: std::time::Duration::ZERO,
                fsync: false,
            },
            SyncPolicy::Full => FlushMode {
                min_interval: std::time::Duration::ZERO,
                fsync: true,
            },
            SyncPolicy::Interval(d) => FlushMode {
                min_interval: d,
                fsync: false,
            },
        };
        let durability = Arc::new(Durability::start(store.clone(), mode));
        let (append_tx, append_rx) = mpsc::channel(4096);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let (head, _) = watch::channel(next);
        let mut sinks_owned = Vec::with_capacity(named.len());
        let mut slots = Vec::with_capacity(named.len());
        for ((name, sink, scfg), off) in named.into_iter().zip(offsets.iter()) {
            slots.push(SinkSlot {
                name,
                cfg: scfg,
                committed: AtomicU64::new(off.0),
                floor: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                dead_lettered: AtomicU64::new(0),
                retries: AtomicU64::new(0),
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
        });
        let acks = AckTracker::new(offsets.iter().map(|s| s.0).collect());
        let appender = tokio::spawn(super::appender::run(core.clone(), append_rx, next));
        let completion = tokio::spawn(super::completion::run(core.clone(), done_rx, acks, ack_tx));
        let workers = sinks_owned
            .into_iter()
            .enumerate()
            .map(|(i, sink)| tokio::spawn(crate::worker::run(core.clone(), i, sink)))
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
                core,
                tasks: Mutex::new(Some(Tasks {
                    appender,
                    completion,
                    workers,
                    truncator,
                })),
            },
            ack_rx,
        ))
    }
}

struct OpenedStore {
    store: Store,
    next: Seq,
    offsets: Vec<Seq>,
    bytes: Option<ByteIndex>,
}

fn open_store(
    dir: &std::path::Path,
    opts: &StoreOptions,
    sinks: &[(SinkName, Start)],
    need_bytes: bool,
) -> Result<OpenedStore> {
    let store = Store::open(dir, opts)?;
    let extent = store.extent()?;
    let stored = store.offsets()?;
    let mut offsets = Vec::with_capacity(sinks.len());
    let mut wrote = false;
    for (name, start) in sinks {
        let existing = stored
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, o)| Seq(o.next));
        let off = match existing {
            Some(o) if o > extent.next => {
                return Err(Error::Corrupted {
                    tree: crate::codec::tree::OFFSETS,
                    key: format!("`{name}`"),
                    reason: format!("offset {o} is past the head {}", extent.next),
                });
            }
            Some(o) => {
                // An orphan that comes back after the log was truncated past
                // it resumes at the first record still there. The move is
                // written now: a configured sink's offset below the first
                // record is what `Store::open` takes for lost data.
                let low = extent.first.unwrap_or(extent.next);
                if o < low {
                    tracing::warn!(sink = %name, offset = o.0, first = low.0, "sink's offset is below the first record in the log (it was orphaned while the log was truncated); resuming at the first record");
                    store.commit_offset(name, low, &[])?;
                    wrote = true;
                    low
                } else {
                    o
                }
            }
            None => {
                let o = match start {
                    Start::Head => extent.next,
                    Start::Earliest => extent.first.unwrap_or(extent.next),
                };
                store.commit_offset(name, o, &[])?;
                wrote = true;
                tracing::info!(sink = %name, offset = o.0, "new sink");
                o
            }
        };
        offsets.push(off);
    }
    for (name, o) in &stored {
        if !sinks.iter().any(|(n, _)| n == name) {
            tracing::warn!(sink = %name, offset = o.next, "orphaned sink: it has an offset but is not configured; it holds back neither truncation nor acks");
        }
    }
    let names: Vec<SinkName> = sinks.iter().map(|(n, _)| n.clone()).collect();
    if store.configured_sinks()?.as_deref() != Some(&names[..]) {
        store.set_configured_sinks(&names)?;
        wrote = true;
    }
    if wrote {
        store.flush()?;
    }
    let bytes = if need_bytes {
        let mut idx = ByteIndex::default();
        for (first, h) in store.batch_headers()? {
            idx.push(first, h.bytes);
        }
        Some(idx)
    } else {
        None
    };
    Ok(OpenedStore {
        store,
        next: extent.next,
        offsets,
        bytes,
    })
}
