//! [`Admin`]: a stopped outbox's data directory, opened for the operator
//! commands that change it (DLQ redrive and purge, pause and resume,
//! forgetting an orphan).
//!
//! Invariants: only an existing directory is opened, and only once it
//! verifies; every change is durable (flushed and fsynced) before its
//! method returns.

use std::ops::Deref;
use std::path::Path;

use super::CACHE_BYTES;
use super::reader::Inspector;
use crate::codec::PauseState;
use crate::error::Result;
use crate::store::{Selection, Store, StoreOptions};
use crate::types::{Seq, SinkName};

/// Which DLQ entries of one sink a redrive or purge takes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DlqSelection {
    /// Every entry.
    All,
    /// The entries at these seqs (absent ones are ignored).
    Seqs(Vec<Seq>),
}

impl DlqSelection {
    fn stored(&self) -> Selection {
        match self {
            DlqSelection::All => Selection::All,
            DlqSelection::Seqs(s) => Selection::Seqs(s.clone()),
        }
    }
}

/// The data directory of a stopped outbox, opened read-write after it
/// verified. Everything an [`Inspector`] reads, it reads too (through
/// `Deref`).
pub struct Admin {
    inner: Inspector,
}

impl Deref for Admin {
    type Target = Inspector;
    fn deref(&self) -> &Inspector {
        &self.inner
    }
}

impl Admin {
    /// Opens the existing data directory `dir` for writing, after verifying
    /// it; never creates one. What it writes is fsynced.
    ///
    /// # Errors
    /// As [`Inspector::open`], plus what verification refuses.
    pub fn open(dir: impl AsRef<Path>) -> Result<Admin> {
        let opts = StoreOptions {
            create: false,
            cache_bytes: CACHE_BYTES,
            fsync: true,
        };
        let (store, _) = Store::open(dir, &opts)?;
        Ok(Admin {
            inner: Inspector::from_store(store),
        })
    }

    fn store(&self) -> &Store {
        self.inner.store()
    }

    /// Moves the selected DLQ entries of `sink` back into the log, for that
    /// sink only, keeping their delivery ids: appended at the head (after a
    /// hole for seqs the last run reserved), in chunks of at most
    /// `value_bytes` of records, each durable before the next. Returns the
    /// seqs they were appended under.
    ///
    /// # Errors
    /// [`crate::ConfigError::UnknownSink`] when `sink` has no offset; storage
    /// errors.
    pub fn redrive(
        &self,
        sink: &SinkName,
        which: &DlqSelection,
        value_bytes: usize,
    ) -> Result<Vec<Seq>> {
        self.store()
            .redrive_offline(sink, &which.stored(), value_bytes)
    }

    /// Removes the selected DLQ entries of `sink`, durably. Returns how many
    /// were removed.
    ///
    /// # Errors
    /// [`crate::StoreError::Poisoned`] or [`crate::StoreError::Io`].
    pub fn purge(&self, sink: &SinkName, which: &DlqSelection) -> Result<usize> {
        let n = self.store().dlq_purge(sink, &which.stored())?;
        self.store().flush()?;
        Ok(n)
    }

    /// Pauses `sink` as of `at_ms` (ms since the Unix epoch), or lifts its
    /// pause (`None`), durably. The outbox finds it so when it next runs.
    ///
    /// # Errors
    /// [`crate::StoreError::Poisoned`] or [`crate::StoreError::Io`].
    pub fn set_paused(&self, sink: &SinkName, at_ms: Option<u64>) -> Result<()> {
        self.store()
            .set_paused(sink, at_ms.map(|at_ms| PauseState { at_ms }))?;
        Ok(self.store().flush()?)
    }

    /// Forgets the member `sink`: its offset, membership and delivery state
    /// go, durably, so its backlog no longer holds back truncation. Returns
    /// the offset it had.
    ///
    /// # Errors
    /// [`crate::ConfigError::UnknownSink`] when `sink` is not a member; storage
    /// errors.
    pub fn forget(&self, sink: &SinkName) -> Result<Seq> {
        let offset = self.store().forget(sink)?;
        self.store().sink_state_forget(sink)?;
        self.store().flush()?;
        Ok(offset)
    }
}
