//! Error types, one enum per layer, and the umbrella [`Error`] that wraps
//! them.
//!
//! - [`StoreError`]: the data directory and what sled makes of it: locked,
//!   corrupt, of an unknown format, failed after an earlier I/O error, or
//!   an I/O error now.
//! - [`ConfigError`]: the caller asked for something invalid: a setting, or
//!   a sink that is not configured. Trying again without a change fails
//!   again.
//! - [`DispatchErrorKind`]: why the running outbox refused or failed a
//!   call. A [`crate::DispatchError`] carries it, with the records and
//!   tokens when none of them was appended.
//! - [`Error`]: what a call returns when more than one layer can fail
//!   (opening an outbox, an operator call, the offline tools). `?`
//!   converts each layer's error into it.
//!
//! Each is classified by methods, not by listing variants: the worker
//! stops a sink on [`StoreError::is_corruption`] rather than retrying it,
//! and retries on `is_transient`. The binary maps the classifiers onto its
//! exit codes and adds its own advice (`--admin URL`), so no wording of the
//! command line lives here. No sled type appears in a public signature: a
//! sled error is kept as a boxed `source`.

use std::path::PathBuf;

use crate::types::SinkName;

/// A boxed error kept as the `source` of another, so that its type (sled's,
/// a task's) is not part of the API.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the data directory and sled can fail with.
///
/// Non-exhaustive: a later release may add a variant, so a `match` on it
/// needs a `_` arm. Classify with [`StoreError::is_transient`],
/// [`StoreError::is_corruption`] and [`StoreError::is_locked`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (or another `Outbox` in this process) holds the data
    /// directory's lock. sled locks the `db` file inside the directory.
    #[error(
        "data directory {} is locked by another process (sled holds an exclusive lock on {})",
        path.display(),
        path.join("db").display()
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
    },

    /// A stored value or key does not decode, fails its checksum, or is
    /// missing (a gap in the log, an offset below the witness). `tree` and
    /// `key` say where.
    #[error("corrupt data in tree `{tree}` at key {key}: {reason}")]
    Corrupted {
        /// The sled tree: `log`, `offsets`, `dlq`, `meta` or `sink_state`
        /// (or `sled` and `witness` for damage found below the trees).
        tree: &'static str,
        /// The key, rendered for humans (a seq, a sink name, or hex).
        key: String,
        /// What did not decode.
        reason: String,
    },

    /// sled refused to open the directory or reported corruption inside its
    /// own files, or the witness file does not parse.
    #[error("data directory {} is corrupt or unreadable by sled: {reason}", path.display())]
    StoreCorrupt {
        /// The data directory.
        path: PathBuf,
        /// What was found, in words (sled's own message, when it gave one).
        reason: String,
        /// sled's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// The directory was written by a newer or unknown on-disk format.
    #[error("data directory {} has on-disk format version {found}; this build reads version {supported}", path.display())]
    UnknownFormat {
        /// The data directory.
        path: PathBuf,
        /// The version found in `meta`.
        found: u8,
        /// The version this build writes and reads.
        supported: u8,
    },

    /// A value was refused before it was written: it would be larger than
    /// every reader accepts, or it does not encode. Nothing was written.
    #[error("value rejected: {0}")]
    ValueRejected(String),

    /// A previous write, flush or fsync failed. The store refuses further
    /// writes until it is reopened, because sled's state after a failed
    /// flush is not known to be durable. Holds the first failure's message.
    #[error("store is failed after an earlier I/O error ({0}); reopen the outbox")]
    Poisoned(String),

    /// An I/O error from sled or the file system (for example a full disk,
    /// or a data directory that does not exist).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// A sled error that is none of the above, a write refused by a store
    /// opened for inspection only, or a task that was running store work
    /// and failed (it panicked or was cancelled).
    #[error("storage error: {0}")]
    Storage(#[source] BoxError),
}

impl StoreError {
    /// Whether another process (or another `Outbox` in this one) holds the
    /// data directory ([`StoreError::Locked`]).
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Locked { .. })
    }

    /// Whether stored data cannot be read ([`StoreError::Corrupted`],
    /// [`StoreError::StoreCorrupt`], [`StoreError::UnknownFormat`]): a
    /// reader must stop there, never skip it or retry it as if it could
    /// heal.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupted { .. }
                | StoreError::StoreCorrupt { .. }
                | StoreError::UnknownFormat { .. }
        )
    }

    /// Whether the same operation may succeed if tried again later without
    /// anyone's help: an I/O or sled error ([`StoreError::Io`],
    /// [`StoreError::Storage`]), but not a poisoned store's, which waits
    /// for a reopen.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Io(_) | StoreError::Storage(_))
    }

    /// Maps a sled error, keeping corruption and full-disk apart.
    pub(crate) fn from_sled(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => StoreError::Io(io),
            sled::Error::Corruption { at, .. } => StoreError::Corrupted {
                tree: "sled",
                key: format!("{at:?}"),
                reason: "sled detected corruption in its own files".into(),
            },
            other => StoreError::Storage(Box::new(other)),
        }
    }

    /// A [`StoreError::Storage`] for the blocking task `what` that did
    /// store work and failed to finish.
    pub(crate) fn task(what: &'static str, e: tokio::task::JoinError) -> Self {
        StoreError::Storage(Box::new(TaskFailed { what, source: e }))
    }
}

/// A blocking task that did store work panicked or was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("{what} task failed: {source}")]
struct TaskFailed {
    what: &'static str,
    source: tokio::task::JoinError,
}

/// The caller asked for something invalid: trying again without a change
/// fails again.
///
/// Non-exhaustive: a later release may add a variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A configuration value (or a command-line flag) is invalid. Raised by
    /// `open()` and each `validate` before anything is touched on disk.
    #[error("invalid configuration: {param}: {reason}")]
    Invalid {
        /// The parameter, e.g. `sinks[0].name` or `max_lag_records`.
        param: String,
        /// Why it is rejected.
        reason: String,
    },

    /// The named sink is not configured (or, for DLQ and membership
    /// operations, is not known to the data directory).
    #[error("unknown sink `{0}`")]
    UnknownSink(String),
}

impl ConfigError {
    /// A [`ConfigError::Invalid`] naming the parameter `param` and the
    /// reason it is rejected.
    pub fn invalid(param: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            param: param.into(),
            reason: reason.into(),
        }
    }
}

/// Why the running outbox refused or failed a call: what a
/// [`crate::DispatchError`] carries, and what an operator call (pause,
/// redrive, purge, forget, a second shutdown) is refused with.
///
/// Non-exhaustive: a later release may add a variant. Classify with
/// [`DispatchErrorKind::is_transient`] and
/// [`DispatchErrorKind::is_corruption`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchErrorKind {
    /// A record was rejected before it was appended (for example it is
    /// larger than `max_record_bytes`, or its idempotency key is empty),
    /// or an operator call was refused (forgetting a sink that is still
    /// configured). Nothing was appended or changed.
    #[error("record rejected: {0}")]
    Rejected(String),

    /// [`crate::Outbox::dispatch_once`] was given a key that was used
    /// within the idempotency window for other records (compared by a
    /// digest of the payloads and headers). Nothing was appended.
    #[error("idempotency key reused for different records: {0}")]
    KeyReused(String),

    /// [`crate::Outbox::try_dispatch`] found a Block sink at its lag limit
    /// (`on_full = block`). Nothing was appended; the records come back.
    #[error("sink `{sink}` is at its lag limit (on_full = block)")]
    Full {
        /// The first full Block sink.
        sink: SinkName,
    },

    /// [`crate::Outbox::try_dispatch`] found the appender's queue full (a
    /// burst of concurrent dispatches). Nothing was appended; the records
    /// come back.
    #[error("the appender's queue is full")]
    Busy,

    /// The outbox is shutting down or has shut down; nothing was appended
    /// (or, for an operator call, changed).
    #[error("outbox is shutting down")]
    ShuttingDown,

    /// The store failed: before the request was taken (it is poisoned), or
    /// while writing or flushing it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DispatchErrorKind {
    /// Whether the same call may succeed if made again later without
    /// anyone's help: a full sink or queue ([`DispatchErrorKind::Full`],
    /// [`DispatchErrorKind::Busy`]) or a transient store error
    /// ([`StoreError::is_transient`]).
    pub fn is_transient(&self) -> bool {
        match self {
            DispatchErrorKind::Full { .. } | DispatchErrorKind::Busy => true,
            DispatchErrorKind::Store(e) => e.is_transient(),
            _ => false,
        }
    }

    /// Whether the store found data it cannot read
    /// ([`StoreError::is_corruption`]).
    pub fn is_corruption(&self) -> bool {
        matches!(self, DispatchErrorKind::Store(e) if e.is_corruption())
    }
}

/// Everything the engine, the store and the offline tools can fail with:
/// one variant per layer.
///
/// Non-exhaustive: a later release may add a variant, so a `match` on it
/// needs a `_` arm. Classify with [`Error::is_config`],
/// [`Error::is_locked`], [`Error::is_corruption`] and
/// [`Error::is_transient`] rather than by listing variants; each delegates
/// to the layer's own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The data directory or sled failed. Every store error arrives here,
    /// whichever call it came through.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The caller asked for something invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// The running outbox refused or failed a call: a dispatch (a
    /// [`crate::DispatchError`] converted with `?`, its items dropped) or an
    /// operator call. Never holds [`DispatchErrorKind::Store`]: converting
    /// one gives [`Error::Store`].
    #[error(transparent)]
    Dispatch(DispatchErrorKind),

    /// A source of records (such as JetStream) failed: it cannot reach its
    /// server, or the server refused a request. What it had not appended
    /// was not acknowledged to it.
    #[error("source: {0}")]
    Source(String),

    /// An I/O error outside the data directory: a sink's file, a socket.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<DispatchErrorKind> for Error {
    fn from(k: DispatchErrorKind) -> Self {
        match k {
            DispatchErrorKind::Store(e) => Error::Store(e),
            other => Error::Dispatch(other),
        }
    }
}

impl Error {
    /// Whether the caller asked for something invalid ([`Error::Config`]):
    /// a configuration value or a sink that is not configured. Trying
    /// again without a change fails again.
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Config(_))
    }

    /// Whether another process (or another `Outbox` in this one) holds the
    /// data directory ([`StoreError::is_locked`]).
    pub fn is_locked(&self) -> bool {
        matches!(self, Error::Store(e) if e.is_locked())
    }

    /// Whether stored data cannot be read ([`StoreError::is_corruption`]):
    /// a reader must stop there, never skip it or retry it as if it could
    /// heal.
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Store(e) => e.is_corruption(),
            Error::Dispatch(k) => k.is_corruption(),
            _ => false,
        }
    }

    /// Whether the same operation may succeed if tried again later without
    /// anyone's help: a transient store or dispatch error
    /// ([`StoreError::is_transient`], [`DispatchErrorKind::is_transient`])
    /// or an I/O error.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Store(e) => e.is_transient(),
            Error::Dispatch(k) => k.is_transient(),
            Error::Io(_) => true,
            _ => false,
        }
    }

    /// An [`Error::Config`] ([`ConfigError::Invalid`]) naming the
    /// parameter `param` and the reason it is rejected.
    pub fn config(param: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config(ConfigError::invalid(param, reason))
    }
}

/// The text of a caught panic's payload.
pub(crate) fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The result type of the store and the codec.
pub(crate) type StoreResult<T> = std::result::Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::path::PathBuf;

    use super::*;

    fn corrupted() -> StoreError {
        StoreError::Corrupted {
            tree: "log",
            key: "seq 1".into(),
            reason: "bad".into(),
        }
    }

    /// `(is_locked, is_corruption, is_transient)` of each store variant.
    #[test]
    fn store_classifiers() {
        let cases = [
            (
                StoreError::Locked {
                    path: PathBuf::from("/d"),
                },
                (true, false, false),
            ),
            (corrupted(), (false, true, false)),
            (
                StoreError::StoreCorrupt {
                    path: PathBuf::from("/d"),
                    reason: "bad".into(),
                    source: None,
                },
                (false, true, false),
            ),
            (
                StoreError::UnknownFormat {
                    path: PathBuf::from("/d"),
                    found: 9,
                    supported: 2,
                },
                (false, true, false),
            ),
            (
                StoreError::ValueRejected("big".into()),
                (false, false, false),
            ),
            (StoreError::Poisoned("eio".into()), (false, false, false)),
            (
                StoreError::Io(std::io::Error::other("eio")),
                (false, false, true),
            ),
            (StoreError::Storage("sled".into()), (false, false, true)),
        ];
        for (e, want) in cases {
            assert_eq!(
                (e.is_locked(), e.is_corruption(), e.is_transient()),
                want,
                "{e:?}"
            );
        }
    }

    /// A sled error keeps its kind and stays reachable as the source.
    #[test]
    fn sled_errors_map_by_kind_and_keep_their_source() {
        let io = StoreError::from_sled(sled::Error::Io(std::io::Error::other("full")));
        assert!(matches!(&io, StoreError::Io(e) if e.to_string() == "full"));
        let bug = StoreError::from_sled(sled::Error::ReportableBug("oops".into()));
        assert!(matches!(bug, StoreError::Storage(_)));
        assert!(bug.is_transient());
        let src = bug.source().map(|s| s.to_string());
        assert_eq!(
            src.as_deref(),
            Some(
                sled::Error::ReportableBug("oops".into())
                    .to_string()
                    .as_str()
            )
        );
        assert_eq!(bug.to_string(), format!("storage error: {}", src.unwrap()));
        let c = StoreError::from_sled(sled::Error::Corruption { at: None, bt: () });
        assert!(c.is_corruption(), "{c}");
    }

    /// `(is_transient, is_corruption)` of each dispatch kind.
    #[test]
    fn dispatch_classifiers() {
        let cases = [
            (DispatchErrorKind::Rejected("big".into()), (false, false)),
            (DispatchErrorKind::KeyReused("k".into()), (false, false)),
            (
                DispatchErrorKind::Full {
                    sink: SinkName::new("slow").unwrap(),
                },
                (true, false),
            ),
            (DispatchErrorKind::Busy, (true, false)),
            (DispatchErrorKind::ShuttingDown, (false, false)),
            (
                DispatchErrorKind::Store(StoreError::Poisoned("eio".into())),
                (false, false),
            ),
            (
                DispatchErrorKind::Store(StoreError::Io(std::io::Error::other("eio"))),
                (true, false),
            ),
            (DispatchErrorKind::Store(corrupted()), (false, true)),
        ];
        for (e, want) in cases {
            assert_eq!((e.is_transient(), e.is_corruption()), want, "{e:?}");
        }
    }

    /// `(is_config, is_locked, is_corruption, is_transient)` of the
    /// umbrella: each layer's answer, whichever way the error arrived.
    #[test]
    fn umbrella_classifiers_delegate() {
        let cases: [(Error, (bool, bool, bool, bool)); 10] = [
            (
                Error::config("sinks[0].name", "empty"),
                (true, false, false, false),
            ),
            (
                ConfigError::UnknownSink("x".into()).into(),
                (true, false, false, false),
            ),
            (
                StoreError::Locked {
                    path: PathBuf::from("/d"),
                }
                .into(),
                (false, true, false, false),
            ),
            (corrupted().into(), (false, false, true, false)),
            (
                DispatchErrorKind::Store(corrupted()).into(),
                (false, false, true, false),
            ),
            (
                StoreError::Poisoned("eio".into()).into(),
                (false, false, false, false),
            ),
            (DispatchErrorKind::Busy.into(), (false, false, false, true)),
            (
                DispatchErrorKind::ShuttingDown.into(),
                (false, false, false, false),
            ),
            (
                Error::Io(std::io::Error::other("x")),
                (false, false, false, true),
            ),
            (Error::Source("down".into()), (false, false, false, false)),
        ];
        for (e, want) in cases {
            assert_eq!(
                (
                    e.is_config(),
                    e.is_locked(),
                    e.is_corruption(),
                    e.is_transient()
                ),
                want,
                "{e:?}"
            );
        }
    }

    /// A store error inside a dispatch kind becomes `Error::Store`, so one
    /// arm matches it whichever call it came through; the wording is the
    /// layer's own.
    #[test]
    fn conversions_flatten_store_errors_and_keep_the_wording() {
        let e = Error::from(DispatchErrorKind::Store(StoreError::Poisoned("eio".into())));
        assert!(
            matches!(&e, Error::Store(StoreError::Poisoned(w)) if w == "eio"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "store is failed after an earlier I/O error (eio); reopen the outbox"
        );
        let e = Error::from(DispatchErrorKind::ShuttingDown);
        assert!(matches!(
            e,
            Error::Dispatch(DispatchErrorKind::ShuttingDown)
        ));
        assert_eq!(e.to_string(), "outbox is shutting down");
        assert_eq!(
            Error::config("max_lag_records", "must be at least 1").to_string(),
            "invalid configuration: max_lag_records: must be at least 1"
        );
    }
}
