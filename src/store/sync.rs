//! fsync of sled's files, for stores opened with `fsync` (the `full`
//! policy): what sled's own flush (`sync_file_range`) leaves to chance at a
//! power loss.
//!
//! After each flush: `fdatasync` of `db` (sled's one log file; the size
//! change of a growing file is included), `fsync` of each blob file not yet
//! synced (sled writes one per large item and never syncs it), and `fsync`
//! of the data directory and of `blobs/` whenever their entries changed
//! since the last sync (new blobs, sled's snapshot renames, removals).
//!
//! Invariant: when [`FileSync::sync`] returns Ok, every byte sled had
//! written before the call, and every directory entry that names it, is on
//! the disk. When it fails, the caller must poison the store: after a
//! failed fsync Linux may have dropped the dirty pages, so a retry that
//! succeeds proves nothing (PostgreSQL's "fsyncgate", 2018).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The files and directories to sync, and what was seen at the last sync.
pub(crate) struct FileSync {
    dir: PathBuf,
    db: File,
    entries: BTreeSet<OsString>,
    blobs: BTreeSet<OsString>,
}

impl FileSync {
    /// Opens `dir/db`, and syncs `conf` and the directory once: sled writes
    /// `conf` when it creates a directory and never syncs it.
    pub(crate) fn open(dir: &Path) -> std::io::Result<FileSync> {
        let db = File::open(dir.join("db"))?;
        sync_conf(dir)?;
        let mut s = FileSync {
            dir: dir.to_path_buf(),
            db,
            entries: BTreeSet::new(),
            blobs: BTreeSet::new(),
        };
        s.sync()?;
        Ok(s)
    }

    /// Syncs what the last flush may have left in the page cache.
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        #[cfg(feature = "failpoints")]
        fail::fail_point!("store::fsync", |m| Err(std::io::Error::other(
            m.unwrap_or_else(|| "injected fsync failure".into())
        )));
        self.db.sync_data()?;
        let blobs_dir = self.dir.join("blobs");
        let blobs = names(&blobs_dir)?;
        if blobs != self.blobs {
            for name in blobs.difference(&self.blobs) {
                match File::open(blobs_dir.join(name)) {
                    Ok(f) => f.sync_all()?,
                    // Removed again since the listing (sled's cleaner).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            File::open(&blobs_dir)?.sync_all()?;
            self.blobs = blobs;
        }
        let entries = names(&self.dir)?;
        if entries != self.entries {
            File::open(&self.dir)?.sync_all()?;
            self.entries = entries;
        }
        Ok(())
    }
}

/// Syncs `conf` (if present) and the directory that names it.
pub(crate) fn sync_conf(dir: &Path) -> std::io::Result<()> {
    match File::open(dir.join("conf")) {
        Ok(f) => f.sync_all()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    File::open(dir)?.sync_all()
}

fn names(dir: &Path) -> std::io::Result<BTreeSet<OsString>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.map(|e| e.file_name())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e),
    }
}
