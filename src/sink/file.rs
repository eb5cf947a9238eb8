//! The file sink: appends one payload per line, fsyncs before each offset
//! commit, so "delivered" means on disk.
//!
//! Invariants:
//! - the file holds whole lines only: at open, a torn last line (left by a
//!   crash between write and fsync) is cut back to the last `\n`, and when a
//!   commit fails the file is cut back to its length at the last good commit;
//! - every byte up to the length at the last good commit has been fsynced,
//!   and so has the directory entry that names the file (a file created but
//!   never named durably vanishes at a power cut, offsets and all);
//! - a commit writes and fsyncs everything delivered before it began, in one
//!   `write` and one `fdatasync` on a blocking thread, while deliveries go
//!   on into the next buffer: the worker's group commit shares one fsync
//!   among every record that arrived while the previous one ran.
//!
//! Records cut away this way were never committed, so the worker delivers
//! them again.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::lines::{Lines, buffered_delivery};
use super::{BoxFuture, DeliveryContext, DeliveryError, DeliveryResult, Sink};
use crate::types::Record;

/// Appends payloads to a file, one per line.
pub struct FileSink {
    path: PathBuf,
    /// Lines delivered since the last commit began; appending is all a
    /// delivery does, so it completes at once.
    pending: Lines,
    /// The file and its length at the last good commit, used by one commit
    /// at a time on a blocking thread.
    io: Arc<Mutex<FileState>>,
}

struct FileState {
    path: PathBuf,
    file: Option<File>,
    committed_len: u64,
}

impl FileSink {
    /// Opens `path` for append, creating it (mode 0600) when missing.
    ///
    /// # Errors
    /// The I/O error of opening, reading, truncating or syncing the file.
    ///
    /// # Cancel safety
    /// Cancel safe: the open runs on a blocking thread that finishes even
    /// if the future is dropped, and the file is then closed again; what
    /// the open does to the file (creating it, cutting a torn last line) is
    /// done either way.
    pub async fn open(path: impl AsRef<Path>) -> std::io::Result<FileSink> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let (file, len) = tokio::task::spawn_blocking(move || open_clean(&p))
            .await
            .map_err(std::io::Error::other)??;
        Ok(FileSink {
            io: Arc::new(Mutex::new(FileState {
                path: path.clone(),
                file: Some(file),
                committed_len: len,
            })),
            path,
            pending: Lines::new(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl FileState {
    fn commit(&mut self, buf: &[u8]) -> std::io::Result<()> {
        #[cfg(feature = "failpoints")]
        fail::fail_point!("sink::file::write", |m| Err(std::io::Error::other(
            m.unwrap_or_else(|| "injected file write failure".into())
        )));
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let (f, len) = open_clean(&self.path)?;
                self.committed_len = len;
                self.file.insert(f)
            }
        };
        file.write_all(buf)?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("sink::file::fsync", |m| Err(std::io::Error::other(
            m.unwrap_or_else(|| "injected file fsync failure".into())
        )));
        file.sync_data()?;
        self.committed_len += buf.len() as u64;
        Ok(())
    }

    /// Cuts the file back to the last good commit, so the redelivered
    /// records do not leave a half line behind; the next commit reopens it.
    fn roll_back(&mut self) {
        if let Some(f) = self.file.take() {
            let _ = f.set_len(self.committed_len);
        }
    }
}

fn open_clean(path: &Path) -> std::io::Result<(File, u64)> {
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    if !existed {
        // The new name is made durable before anything is committed into
        // the file under it.
        file.sync_all()?;
        sync_parent(path)?;
    }
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok((file, 0));
    }
    // Find the last newline; everything after it is a torn write.
    let mut end = len;
    let mut chunk = vec![0u8; 4096];
    loop {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(std::io::SeekFrom::Start(start))?;
        let slice = chunk.get_mut(..n).unwrap_or_default();
        file.read_exact(slice)?;
        if let Some(i) = slice.iter().rposition(|b| *b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep != len {
                tracing::warn!(path = %path.display(), bytes = len - keep, "file sink: cutting a torn last line left by a crash");
                file.set_len(keep)?;
                file.sync_data()?;
            }
            return Ok((file, keep));
        }
        if start == 0 {
            tracing::warn!(path = %path.display(), bytes = len, "file sink: file holds no complete line; truncating it");
            file.set_len(0)?;
            file.sync_data()?;
            return Ok((file, 0));
        }
        end = start;
    }
}

/// fsyncs the directory holding `path`.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(dir)?.sync_all()
}

impl Sink for FileSink {
    buffered_delivery!();

    fn commit(&self) -> BoxFuture<'_, DeliveryResult> {
        Box::pin(async move {
            let buf = self.pending.take();
            let io = self.io.clone();
            let done = tokio::task::spawn_blocking(move || {
                let mut st = io.lock();
                let r = st.commit(&buf);
                if r.is_err() {
                    st.roll_back();
                }
                r
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
            match done {
                Ok(()) => Ok(()),
                Err(e) => {
                    // Delivered since the commit began: redelivered too.
                    self.pending.clear();
                    Err(io_err(&self.path, e))
                }
            }
        })
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

fn io_err(path: &Path, e: std::io::Error) -> DeliveryError {
    DeliveryError::transient(format!("file {}: {e}", path.display()))
}
