//! Looking at, and repairing, the data directory of a stopped outbox: what
//! the `outbox` binary's offline commands (`dump`, `status`, `dlq`, `check`,
//! `compact`, `salvage`, `sinks`) are built on, and what an embedder's own
//! tooling can use.
//!
//! ```no_run
//! use outbox::inspect::Inspector;
//!
//! # fn demo() -> outbox::Result<()> {
//! let store = Inspector::open("/tmp/outbox-data")?;
//! let report = store.check();
//! println!("{} records, {} problems", report.records, report.problems.len());
//! for dead in store.dead_letters().iter(None) {
//!     let dead = dead?;
//!     println!("{} {} {}", dead.sink, dead.seq, dead.error);
//! }
//! # Ok(()) }
//! ```
//!
//! Invariants:
//! - an [`Inspector`] writes nothing of outbox's own (not even the witness
//!   file), and does not verify the store first, so a damaged store can
//!   still be looked at; what does not decode is an error naming the tree
//!   and the key, never skipped;
//! - an [`Admin`] opens only an existing directory (a typo is an error, not
//!   a new empty outbox), only after verifying it, and makes what it writes
//!   durable (fsynced) before it returns;
//! - both hold sled's exclusive lock on the directory while they live: a
//!   running outbox and an offline command never share it ([`is_locked`]);
//! - nothing here exposes the on-disk encoding: every value comes back as
//!   one of this module's types (or the crate's), converted in one place.

mod admin;
mod check;
mod reader;
mod types;

use std::path::Path;

use crate::error::Result;

pub use crate::store::{InterruptedWrite, LogExtent, Loss, Restart, SalvageReport, SeqRanges};
pub use admin::{Admin, DlqSelection};
pub use check::{Checker, Problem, Report, TREES};
pub use reader::Inspector;
pub use types::{BatchInfo, BatchKind, Member, Offset, Verified};

/// sled's page cache for an offline command, in bytes.
const CACHE_BYTES: u64 = 16 << 20;

/// The directory format this build writes, `meta/format_version`: 3, with
/// version-2 values (their first byte) and the log in generations; see
/// `docs/design.md`.
pub const CURRENT_FORMAT: u8 = crate::codec::DIR_FORMAT;

/// Whether another process holds the lock of the data directory `dir` (a
/// running outbox, or an offline command). Probes the lock without taking
/// it.
pub fn is_locked(dir: &Path) -> bool {
    crate::store::is_locked(dir)
}

/// Copies what can still be read of the damaged, stopped outbox in `src`
/// into a fresh directory `out`, which must not exist or be empty, and
/// reports exactly what could not be recovered. `src` is only read.
///
/// # Errors
/// [`crate::ConfigError::Invalid`] when `out` is not empty;
/// [`crate::StoreError::Locked`] when `src` is in use;
/// [`crate::StoreError::StoreCorrupt`] when sled cannot open it at all; I/O
/// errors writing the copy.
pub fn salvage(src: &Path, out: &Path) -> Result<SalvageReport> {
    crate::store::salvage(src, out, CACHE_BYTES)
}
