//! Opening a data directory: lock, format check, first-time initialisation.
//!
//! A new directory is created with mode 0700 and sled's files are set to
//! 0600. Opening fails with [`Error::Locked`] when another process holds the
//! directory, [`Error::UnknownFormat`] when `meta.format_version` is not one
//! this build reads, and [`Error::StoreCorrupt`] when sled itself cannot read
//! its files (sled panics on some damage; that panic is caught and reported).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use uuid::Uuid;

use super::{Store, Verified, now_ms};
use crate::codec::{self, FormatVersion, meta_key, tree};
use crate::error::{StoreError as Error, StoreResult as Result};

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled's page cache, in bytes. Default 64 MiB (sled's own default is
    /// 1 GiB).
    pub cache_bytes: u64,
    /// Create the directory when it does not exist. Default true. The
    /// inspection commands set it to false so a typo is an error, not a new
    /// empty outbox.
    pub create: bool,
    /// After each flush, fsync sled's files (`store::sync`), so that what
    /// is flushed survives a power loss. Default true; the engine sets it
    /// from its sync policy.
    pub fsync: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 << 20,
            create: true,
            fsync: true,
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `path` for writing, after
    /// [`Store::verify`] has found it sound.
    ///
    /// # Errors
    /// [`Error::Locked`], [`Error::UnknownFormat`], [`Error::StoreCorrupt`],
    /// [`Error::Corrupted`] (what `verify` refuses, or meta that does not
    /// decode), or [`Error::Io`].
    pub fn open(path: impl AsRef<Path>, opts: &StoreOptions) -> Result<(Store, Verified)> {
        Self::open_as(path.as_ref(), opts, None)
    }

    /// As [`Store::open`], but a directory created by this call takes the
    /// log id and creation time given (a salvage continues the same log, so
    /// delivery ids stay what they were); an existing one keeps its own.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub(super) fn open_as(
        path: &Path,
        opts: &StoreOptions,
        identity: Option<(Uuid, u64)>,
    ) -> Result<(Store, Verified)> {
        let path = path.to_path_buf();
        guarded(&path, || {
            let mut store = Self::open_inner(path.clone(), opts, false, identity)?;
            store.undo_interrupted_write()?;
            let verified = store.verify()?;
            let now = super::witness::Witness {
                log_id: store.log_id,
                next_seq: verified.extent.end.0,
                offsets: verified
                    .offsets
                    .iter()
                    .map(|(n, o)| (n.to_string(), o.0))
                    .collect(),
                dlq: verified.dlq,
            };
            let old = super::witness::read(&path)?;
            let on_disk = if old.as_ref() == Some(&now) {
                old
            } else {
                // Best effort: a read-only directory is still readable.
                match store.write_witness_file(&now) {
                    Ok(()) => Some(now.clone()),
                    Err(e) => {
                        tracing::debug!(error = %e, "could not write the witness file");
                        old
                    }
                }
            };
            store.witness_file.get_mut().on_disk = on_disk;
            *store.written.get_mut() = now;
            if opts.fsync {
                let files = super::sync::FileSync::open(&path).map_err(|e| {
                    Error::Io(std::io::Error::new(
                        e.kind(),
                        format!("fsync of {}: {e}", path.display()),
                    ))
                })?;
                store.files = Some(Mutex::new(files));
            }
            Ok((store, verified))
        })
    }

    /// Opens an existing store for reading only, without verifying it, so
    /// that `check`, `dump` and `salvage` can look at a damaged one. Nothing
    /// is written, not even the witness.
    ///
    /// # Errors
    /// As [`Store::open`], less what `verify` refuses.
    pub fn inspect(path: impl AsRef<Path>, cache_bytes: u64) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        let opts = StoreOptions {
            cache_bytes,
            create: false,
            fsync: false,
        };
        guarded(&path, || Self::open_inner(path.clone(), &opts, true, None))
    }

    fn open_inner(
        path: PathBuf,
        opts: &StoreOptions,
        inspect: bool,
        identity: Option<(Uuid, u64)>,
    ) -> Result<Store> {
        let existed = path.exists();
        if !existed {
            if !opts.create {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("data directory {} does not exist", path.display()),
                )));
            }
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)?;
            // The directory's own name must survive a power cut too.
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::File::open(parent)?.sync_all()?;
            }
        } else if !path.is_dir() {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("data directory {} is not a directory", path.display()),
            )));
        } else if !opts.create && !path.join("db").exists() {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} holds no outbox data (no `db` file)", path.display()),
            )));
        }
        let db = open_sled(&path, opts.cache_bytes)?;
        if !inspect {
            restrict_permissions(&path);
        }
        let open_tree = |name: &str| db.open_tree(name).map_err(|e| sled_open_error(&path, e));
        let log = super::log_trees::LogTrees::open(&db).map_err(|e| sled_open_error(&path, e))?;
        let offsets = open_tree(tree::OFFSETS)?;
        let dlq = open_tree(tree::DLQ)?;
        let meta = open_tree(tree::META)?;
        let idem = open_tree(tree::IDEM)?;

        let witnessed = super::witness::read(&path)?;
        let (log_id, created_at_ms, format, dir_format) = match meta
            .get(meta_key::FORMAT_VERSION)
            .map_err(Error::from_sled)?
        {
            None => {
                if let Some(w) = &witnessed {
                    return Err(Error::Corrupted {
                        tree: tree::META,
                        key: "`format_version`".into(),
                        reason: format!(
                            "missing, yet {} says this directory held log {} up to seq {}: sled's db file is damaged and sled recovered nothing",
                            super::witness::FILE,
                            w.log_id.simple(),
                            w.next_seq
                        ),
                    });
                }
                if !log.is_empty() || !offsets.is_empty() || !dlq.is_empty() {
                    return Err(Error::Corrupted {
                        tree: tree::META,
                        key: "`format_version`".into(),
                        reason: "missing, yet the other trees hold data".into(),
                    });
                }
                if inspect {
                    return Err(Error::Io(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!(
                            "{} holds no outbox data (an empty sled database)",
                            path.display()
                        ),
                    )));
                }
                let (id, now) = initialise(&path, &db, &meta, identity)?;
                (id, now, FormatVersion::CURRENT, codec::DIR_FORMAT)
            }
            Some(v) => {
                let found = match v.as_ref() {
                    [b] => *b,
                    _ => {
                        return Err(Error::Corrupted {
                            tree: tree::META,
                            key: "`format_version`".into(),
                            reason: format!("expected one byte, found {}", v.len()),
                        });
                    }
                };
                let Some(format) = codec::value_format(found) else {
                    return Err(Error::UnknownFormat {
                        path,
                        found,
                        supported: codec::DIR_FORMAT,
                    });
                };
                let mut dir_format = found;
                if found == FormatVersion::V2 as u8 && !inspect {
                    // Version 2 is version 3 with no generation yet: say so
                    // before any is written, so that an older build refuses
                    // the directory instead of reading only the tree `log`.
                    meta.insert(meta_key::FORMAT_VERSION, &[codec::DIR_FORMAT])
                        .map_err(Error::from_sled)?;
                    dir_format = codec::DIR_FORMAT;
                }
                let id = meta
                    .get(meta_key::LOG_ID)
                    .map_err(Error::from_sled)?
                    .ok_or_else(|| missing(meta_key::LOG_ID))?;
                let created = meta
                    .get(meta_key::CREATED_AT)
                    .map_err(Error::from_sled)?
                    .ok_or_else(|| missing(meta_key::CREATED_AT))?;
                (
                    codec::decode_log_id(&id)?,
                    codec::decode_meta_u64(meta_key::CREATED_AT, &created)?,
                    format,
                    dir_format,
                )
            }
        };
        Ok(Store {
            db,
            log,
            offsets,
            dlq,
            meta,
            idem,
            path,
            log_id,
            created_at_ms,
            format,
            dir_format,
            poisoned: Mutex::new(None),
            offset_lock: Mutex::new(()),
            written: Mutex::new(super::witness::Witness {
                log_id,
                ..Default::default()
            }),
            witness_file: Mutex::new(super::WitnessFile::default()),
            files: None,
            inspect,
        })
    }
}

/// Runs an open with sled's panics caught: sled panics on some damage, when
/// it opens and when it first reads a damaged page, so everything an open
/// reads runs inside this guard.
pub(super) fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(Error::StoreCorrupt {
            path: path.to_path_buf(),
            reason: format!(
                "sled panicked reading its files: {}",
                crate::error::panic_message(&panic)
            ),
            source: None,
        })
    })
}

/// Writes the meta of a new directory and makes it, and sled's `conf`,
/// durable. `format_version` is written last: its presence means the rest
/// is there. A new log id is minted unless `identity` gives one.
fn initialise(
    dir: &Path,
    db: &sled::Db,
    meta: &sled::Tree,
    identity: Option<(Uuid, u64)>,
) -> Result<(Uuid, u64)> {
    let (id, now) = identity.unwrap_or_else(|| (Uuid::new_v4(), now_ms()));
    meta.insert(meta_key::LOG_ID, codec::encode_log_id(id)?)
        .map_err(Error::from_sled)?;
    meta.insert(
        meta_key::CREATED_AT,
        codec::encode_meta_u64(meta_key::CREATED_AT, now)?,
    )
    .map_err(Error::from_sled)?;
    meta.insert(
        meta_key::SEQ_FLOOR,
        codec::encode_meta_u64(meta_key::SEQ_FLOOR, 0)?,
    )
    .map_err(Error::from_sled)?;
    meta.insert(meta_key::MEMBERS, codec::encode_members(&[])?)
        .map_err(Error::from_sled)?;
    meta.insert(meta_key::FORMAT_VERSION, &[codec::DIR_FORMAT])
        .map_err(Error::from_sled)?;
    db.flush().map_err(Error::from_sled)?;
    // Always, whatever the sync policy: a `conf` lost to a power cut is
    // found empty at the next open (sled: "empty/corrupt configuration
    // file found").
    super::sync::sync_conf(dir)?;
    std::fs::File::open(dir.join("db"))?.sync_all()?;
    Ok((id, now))
}

/// Whether some process (this one included) holds sled's lock on `dir`.
/// Probes with a non-blocking `flock` on `dir/db`, released at once.
#[allow(unsafe_code)] // flock(2) through libc: see the SAFETY comments
pub fn is_locked(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("db"))
    else {
        return false;
    };
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let got = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if got {
        // SAFETY: as above.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
    }
    !got
}

fn missing(key: &[u8]) -> Error {
    Error::Corrupted {
        tree: tree::META,
        key: codec::render_key(tree::META, key),
        reason: "missing".into(),
    }
}

pub(super) fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::HighThroughput)
        // sled's own background thread: besides a periodic flush it runs
        // sled's segment cleaner, without which space in its file is never
        // reused. outbox's group commit does the durable flushes.
        .flush_every_ms(Some(500))
        .segment_size(segment_size(path));
    config.open().map_err(|e| sled_open_error(path, e))
}

/// sled's segment size for this directory: what an existing directory was
/// created with (sled refuses a different one), else [`SEGMENT_SIZE`].
pub(crate) fn segment_size(path: &Path) -> usize {
    // `conf` ends in a binary checksum: read it as bytes.
    std::fs::read(path.join("conf"))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .and_then(|conf| {
            conf.lines()
                .find_map(|l| l.strip_prefix("segment_size:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
        })
        .filter(|s| s.is_power_of_two())
        .unwrap_or(SEGMENT_SIZE)
}

/// 2 MiB segments (sled's default is 512 KiB). sled writes any log item
/// larger than a quarter of a segment to a blob file of its own; with
/// 512 KiB segments most splits of a leaf holding ~16 batch values of up to
/// 96 KiB created and deleted such a file, and ext4 inode allocation was a
/// quarter of the CPU profile. Larger segments cost disk: at 4 MiB the
/// steady-state file was 2.4x the target (docs/performance.md).
pub(crate) const SEGMENT_SIZE: usize = 2 << 20;

pub(super) fn sled_open_error(path: &Path, e: sled::Error) -> Error {
    match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => Error::Locked {
            path: path.to_path_buf(),
        },
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => Error::Io(io),
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => Error::Io(io),
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::ReadOnlyFilesystem => Error::Io(io),
        sled::Error::Io(io) => Error::StoreCorrupt {
            path: path.to_path_buf(),
            reason: io.to_string(),
            source: Some(Box::new(io)),
        },
        other => Error::StoreCorrupt {
            path: path.to_path_buf(),
            reason: other.to_string(),
            source: Some(Box::new(other)),
        },
    }
}

/// Best effort: 0700 on the directory, 0600 on sled's files.
fn restrict_permissions(path: &Path) {
    let set = |p: PathBuf, mode: u32| {
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode));
    };
    set(path.to_path_buf(), 0o700);
    if let Ok(rd) = std::fs::read_dir(path) {
        for entry in rd.flatten() {
            let p = entry.path();
            if p.is_dir() {
                set(p, 0o700);
            } else {
                set(p, 0o600);
            }
        }
    }
}
