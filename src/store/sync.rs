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
//! Whether a directory's entries changed is first asked of its `stat`:
//! creating, removing or renaming an entry sets the directory's mtime and
//! ctime to the file system's clock, so when both are as they were at the
//! last listing, and that listing started well after them, nothing changed
//! and the directory is not read again. The file system's clock is coarse
//! (a tick of up to 10 ms): a change within the tick of the last one keeps
//! the timestamps, so a directory whose timestamps are younger than
//! [`SETTLED`] at the listing is listed again at every sync. Listing both
//! directories at every flush cost about 60 µs of a 530 µs flush, ~11 % of
//! a run that waits for the flusher (`compare --only outbox_1sink_full`).
//!
//! Invariant: when [`FileSync::sync`] returns Ok, every byte sled had
//! written before the call, and every directory entry that names it, is on
//! the disk. When it fails, the caller must poison the store: after a
//! failed fsync Linux may have dropped the dirty pages, so a retry that
//! succeeds proves nothing (PostgreSQL's "fsyncgate", 2018).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long after a directory's last change a listing must start for its
/// unchanged timestamps to prove that nothing changed since: several ticks
/// of the file system's coarse clock.
const SETTLED: Duration = Duration::from_millis(50);

/// The files and directories to sync, and what was seen at the last sync.
pub(crate) struct FileSync {
    dir: PathBuf,
    db: File,
    entries: Seen,
    blobs: Seen,
}

/// A directory's entries at its last listing, and its timestamps then.
#[derive(Default)]
struct Seen {
    names: BTreeSet<OsString>,
    /// Inode, mtime and ctime (ns) when listed; `None` when the directory
    /// was absent or never listed.
    stamp: Option<(u64, i128, i128)>,
    /// Whether `names` is known current while `stamp` holds: the listing
    /// started [`SETTLED`] after the stamp's times.
    settled: bool,
    /// Listings made, for the tests.
    #[cfg(test)]
    listed: u64,
}

impl Seen {
    /// The directory's entries if they may have changed since the last
    /// listing (read afresh), `None` if its timestamps prove they did not.
    fn changed(&mut self, dir: &Path) -> std::io::Result<Option<BTreeSet<OsString>>> {
        let stamp = match std::fs::metadata(dir) {
            Ok(m) => Some((
                m.ino(),
                i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if self.settled && stamp == self.stamp {
            return Ok(None);
        }
        let started = SystemTime::now();
        let names = names(dir)?;
        #[cfg(test)]
        {
            self.listed += 1;
        }
        // An absent directory is settled: creating it changes the stamp.
        self.settled = stamp.is_none_or(|(_, m, c)| {
            let since_epoch = started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128);
            since_epoch - m.max(c) > SETTLED.as_nanos() as i128
        });
        self.stamp = stamp;
        Ok((names != self.names).then_some(names))
    }
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
            entries: Seen::default(),
            blobs: Seen::default(),
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
        if let Some(blobs) = self.blobs.changed(&blobs_dir)? {
            for name in blobs.difference(&self.blobs.names) {
                match File::open(blobs_dir.join(name)) {
                    Ok(f) => f.sync_all()?,
                    // Removed again since the listing (sled's cleaner).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            File::open(&blobs_dir)?.sync_all()?;
            self.blobs.names = blobs;
        }
        if let Some(entries) = self.entries.changed(&self.dir)? {
            File::open(&self.dir)?.sync_all()?;
            self.entries.names = entries;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<OsString> {
        names.iter().map(OsString::from).collect()
    }

    /// A directory is listed until its last change has settled, then only
    /// when its timestamps move; every change is seen.
    #[test]
    fn a_directory_is_read_again_only_when_its_timestamps_move() {
        let d = tempfile::tempdir().unwrap();
        let mut seen = Seen::default();
        std::fs::write(d.path().join("a"), b"").unwrap();
        assert_eq!(seen.changed(d.path()).unwrap(), Some(set(&["a"])));
        seen.names = set(&["a"]);
        // Changed just now: not settled, so listed again (and unchanged).
        assert_eq!(seen.changed(d.path()).unwrap(), None);
        assert_eq!(seen.listed, 2);
        std::thread::sleep(SETTLED * 2);
        // The listing that starts now settles it...
        assert_eq!(seen.changed(d.path()).unwrap(), None);
        assert_eq!(seen.listed, 3);
        // ...so the next ones are answered by the stamp alone.
        assert_eq!(seen.changed(d.path()).unwrap(), None);
        assert_eq!(seen.changed(d.path()).unwrap(), None);
        assert_eq!(seen.listed, 3);
        // Creating, renaming and removing entries are each seen at once.
        std::fs::write(d.path().join("b"), b"").unwrap();
        assert_eq!(seen.changed(d.path()).unwrap(), Some(set(&["a", "b"])));
        seen.names = set(&["a", "b"]);
        std::fs::rename(d.path().join("b"), d.path().join("c")).unwrap();
        assert_eq!(seen.changed(d.path()).unwrap(), Some(set(&["a", "c"])));
        seen.names = set(&["a", "c"]);
        std::fs::remove_file(d.path().join("a")).unwrap();
        assert_eq!(seen.changed(d.path()).unwrap(), Some(set(&["c"])));
    }

    /// An absent directory has no entries, and its creation is seen.
    #[test]
    fn an_absent_directory_is_empty_until_it_is_created() {
        let d = tempfile::tempdir().unwrap();
        let blobs = d.path().join("blobs");
        let mut seen = Seen::default();
        assert_eq!(seen.changed(&blobs).unwrap(), None);
        assert_eq!(seen.changed(&blobs).unwrap(), None);
        assert_eq!(seen.listed, 1, "absent is settled");
        std::fs::create_dir(&blobs).unwrap();
        std::fs::write(blobs.join("1"), b"").unwrap();
        assert_eq!(seen.changed(&blobs).unwrap(), Some(set(&["1"])));
    }
}
