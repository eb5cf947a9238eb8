//! Rewriting a stopped store into a fresh directory, for `outbox compact`.
//!
//! sled never shrinks its files; space freed by truncation is reused inside
//! them but not returned. [`Store::export_to`] copies every tree through
//! sled's own `export`/`import` into a new database, which holds only the
//! live keys. The source is only read.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use super::Store;
use crate::error::{StoreError as Error, StoreResult as Result};

impl Store {
    /// Keys in all five trees (an O(n) count, for progress reporting).
    pub fn key_count(&self) -> u64 {
        self.log.len() as u64
            + [&self.offsets, &self.dlq, &self.meta, &self.idem]
                .iter()
                .map(|t| t.len() as u64)
                .sum::<u64>()
    }

    /// sled's CRC32 over every key and value of every tree.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Storage`] from sled.
    pub fn checksum(&self) -> Result<u32> {
        self.db.checksum().map_err(Error::from_sled)
    }

    /// Copies every tree into a new sled database in `out`, which must not
    /// exist or be an empty directory; it is created with mode 0700 and its
    /// files set to 0600. `progress` is called with the number of keys
    /// copied so far. On failure `out` is removed again.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] when `out` exists and is not an
    /// empty directory; [`Error::Io`] or [`Error::Storage`] when the copy
    /// fails (sled's import panics on I/O errors; the panic is caught and
    /// reported).
    pub fn export_to(
        &self,
        out: &Path,
        cache_bytes: u64,
        progress: &mut dyn FnMut(u64),
    ) -> crate::Result<()> {
        if out.exists() {
            ensure_fresh(out)?;
        } else {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(out)
                .map_err(Error::Io)?;
        }
        let result = self.copy_into(out, cache_bytes, progress);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(out);
        }
        Ok(result?)
    }

    fn copy_into(&self, out: &Path, cache_bytes: u64, progress: &mut dyn FnMut(u64)) -> Result<()> {
        let db = sled::Config::new()
            .path(out)
            .cache_capacity(cache_bytes)
            .segment_size(super::open::SEGMENT_SIZE)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None)
            .open()
            .map_err(Error::from_sled)?;
        let copied = std::cell::Cell::new(0u64);
        let progress = std::cell::RefCell::new(progress);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let export = self
                .db
                .export()
                .into_iter()
                .map(|(kind, name, items)| {
                    let counted = items.inspect(|_| {
                        copied.set(copied.get() + 1);
                        if copied.get().is_multiple_of(1024) {
                            (progress.borrow_mut())(copied.get());
                        }
                    });
                    (kind, name, counted)
                })
                .collect::<Vec<_>>();
            db.import(export);
        }));
        if let Err(panic) = r {
            let msg = crate::error::panic_message(&panic);
            return Err(Error::Storage(format!("copy failed: {msg}").into()));
        }
        (progress.borrow_mut())(copied.get());
        db.flush().map_err(Error::from_sled)?;
        drop(db);
        // The copy is about to replace the original: make it survive a power
        // loss before anyone does that.
        super::sync::FileSync::open(out)?;
        let _ = std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700));
        set_file_modes(out);
        Ok(())
    }
}

/// Refuses an `--out` that exists and is not an empty directory: nothing
/// is ever written over.
///
/// # Errors
/// [`crate::ConfigError::Invalid`] naming `--out`.
pub(super) fn ensure_fresh(out: &Path) -> crate::Result<()> {
    if !out.exists() {
        return Ok(());
    }
    let empty = out.is_dir()
        && std::fs::read_dir(out)
            .map(|mut rd| rd.next().is_none())
            .unwrap_or(false);
    if empty {
        Ok(())
    } else {
        Err(crate::Error::config(
            "--out",
            format!("{} exists and is not an empty directory", out.display()),
        ))
    }
}

fn set_file_modes(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd.flatten() {
            let p = entry.path();
            let mode = if p.is_dir() { 0o700 } else { 0o600 };
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode));
            if p.is_dir() {
                set_file_modes(&p);
            }
        }
    }
}
