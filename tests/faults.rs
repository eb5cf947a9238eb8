//! Faults: each must end in a clear error or a recovery, never a panic, and
//! lose no acknowledged record. One concern a module:
//!
//! - [`sink`]: a sink that panics (in `deliver` and in `commit`), a sink
//!   that hangs forever (drain timeout);
//! - [`disk`]: a full disk (a small tmpfs, as root; a failure under
//!   `CI=true` when it cannot mount), a read-only data directory, the lock
//!   after a close, two processes opening the same directory;
//! - [`corruption`]: damaged data directories: bad values, flipped bytes,
//!   truncated files.

mod common;

#[path = "faults/corruption.rs"]
mod corruption;
#[path = "faults/disk.rs"]
mod disk;
#[path = "faults/sink.rs"]
mod sink;
