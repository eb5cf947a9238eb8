//! Error types, one enum per layer.
//!
//! [`Error`] is what the public API returns. It is classified by
//! [`Error::is_config`], [`Error::is_locked`], [`Error::is_corruption`] and
//! [`Error::is_transient`]; the binary maps those onto its exit codes and
//! adds its own advice (`--admin URL`), so no wording of the command line
//! lives here.

use std::path::PathBuf;

use crate::types::SinkName;

/// Everything the engine and the store can fail with.
///
/// Non-exhaustive: a later release may add a variant, so a `match` on it
/// needs a `_` arm. Classify with [`Error::is_transient`] and
/// [`Error::is_corruption`] rather than by listing variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
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

    /// A stored value or key does not decode. `tree` and `key` say where.
    #[error("corrupt data in tree `{tree}` at key {key}: {reason}")]
    Corrupted {
        /// The sled tree: `log`, `offsets`, `dlq` or `meta`.
        tree: &'static str,
        /// The key, rendered for humans (a seq, a sink name, or hex).
        key: String,
        /// What did not decode.
        reason: String,
    },

    /// sled refused to open the directory or reported corruption inside its
    /// own files.
    #[error("data directory {} is corrupt or unreadable by sled: {reason}", path.display())]
    StoreCorrupt {
        /// The data directory.
        path: PathBuf,
        /// sled's own message.
        reason: String,
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

    /// A configuration value is invalid. Raised by `open()` before anything
    /// is touched on disk.
    #[error("invalid configuration: {param}: {reason}")]
    Config {
        /// The parameter, e.g. `sinks[0].name` or `max_lag_records`.
        param: String,
        /// Why it is rejected.
        reason: String,
    },

    /// A record was rejected before it was appended (for example it is larger
    /// than the configured per-record limit). Nothing was appended.
    #[error("record rejected: {0}")]
    Rejected(String),

    /// [`crate::Outbox::dispatch_once`] was given a key that was used
    /// within the idempotency window for other records (compared by a
    /// digest of the payloads and headers). Nothing was appended.
    #[error("idempotency key reused for different records: {0}")]
    KeyReused(String),

    /// The named sink is not configured (or, for DLQ operations, is not known
    /// to the data directory).
    #[error("unknown sink `{0}`")]
    UnknownSink(String),

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

    /// The outbox is shutting down or has shut down; nothing was appended.
    #[error("outbox is shutting down")]
    ShuttingDown,

    /// A previous write or flush failed. The store refuses further writes
    /// until it is reopened, because sled's state after a failed flush is not
    /// known to be durable.
    #[error("store is failed after an earlier I/O error ({0}); reopen the outbox")]
    Poisoned(String),

    /// An I/O error from sled or the file system (for example a full disk).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// A source of records (such as JetStream) failed: it cannot reach its
    /// server, or the server refused a request. What it had not appended
    /// was not acknowledged to it.
    #[error("source: {0}")]
    Source(String),

    /// A sled error that is none of the above.
    #[error("storage error: {0}")]
    Storage(String),
}

impl Error {
    /// Whether the caller asked for something invalid: a configuration
    /// value ([`Error::Config`]) or a sink that is not configured
    /// ([`Error::UnknownSink`]). Trying again without a change fails again.
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Config { .. } | Error::UnknownSink(_))
    }

    /// Whether another process (or another `Outbox` in this one) holds the
    /// data directory ([`Error::Locked`]).
    pub fn is_locked(&self) -> bool {
        matches!(self, Error::Locked { .. })
    }

    /// Whether the error means stored data cannot be read: a reader must
    /// stop there, never skip it or retry it as if it could heal.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corrupted { .. } | Error::StoreCorrupt { .. } | Error::UnknownFormat { .. }
        )
    }

    /// Whether the same operation may succeed if tried again later without
    /// anyone's help (an I/O error other than a poisoned store's, a full
    /// sink or a full queue).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Io(_) | Error::Storage(_) | Error::Full { .. } | Error::Busy
        )
    }

    /// An [`Error::Config`] naming the parameter `param` and the reason it
    /// is rejected.
    pub fn config(param: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            param: param.into(),
            reason: reason.into(),
        }
    }

    /// Maps a sled error, keeping corruption and full-disk apart.
    pub(crate) fn from_sled(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => Error::Io(io),
            sled::Error::Corruption { at, .. } => Error::Corrupted {
                tree: "sled",
                key: format!("{at:?}"),
                reason: "sled detected corruption in its own files".into(),
            },
            other => Error::Storage(other.to_string()),
        }
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
