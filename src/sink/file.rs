//! The file sink: appends one payload per line, fsyncs before each offset
//! commit, so "delivered" means on disk.
//!
//! Invariants:
//! - the file holds whole lines only: at open, a torn last line (left by a
//!   crash between write and fsync) is cut back to the last `\n`, and when a
//!   commit fails the file is cut back to its length at the last good commit;
//! - every byte up to the length at the last good commit has been fsynced.
//!
//! Records cut away this way were never committed, so the worker delivers
//! them again.

use std::path::{Path, PathBuf};

use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{BoxFuture, DeliveryContext, DeliveryError, DeliveryResult, Sink};
use crate::types::Record;

/// Appends payloads to a file, one per line.
pub struct FileSink {
    path: PathBuf,
    file: Option<File>,
    buf: Vec<u8>,
    committed_len: u64,
}

impl FileSink {
    /// Opens `path` for append, creating it (mode 0600) when missing.
    ///
    /// # Errors
    /// The I/O error of opening, reading or truncating the file.
    pub async fn open(path: impl AsRef<Path>) -> std::io::Result<FileSink> {
        let path = path.as_ref().to_path_buf();
        let (file, len) = open_clean(&path).await?;
        Ok(FileSink {
            path,
            file: Some(file),
            buf: Vec::with_capacity(64 << 10),
            committed_len: len,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn write_out(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let (f, len) = open_clean(&self.path).await?;
                self.committed_len = len;
                self.file.insert(f)
            }
        };
        file.write_all(&self.buf).await?;
        self.buf.clear();
        Ok(())
    }

    async fn commit_inner(&mut self) -> std::io::Result<()> {
        self.write_out().await?;
        if let Some(f) = &mut self.file {
            f.flush().await?;
            f.sync_data().await?;
            self.committed_len = f.metadata().await?.len();
        }
        Ok(())
    }

    /// Cuts the file back to the last good commit and forgets the buffer, so
    /// the redelivered batch does not leave a half line behind.
    async fn roll_back(&mut self) {
        self.buf.clear();
        if let Some(f) = self.file.take() {
            let _ = f.set_len(self.committed_len).await;
        }
    }
}

async fn open_clean(path: &Path) -> std::io::Result<(File, u64)> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .await?;
    let len = file.metadata().await?.len();
    if len == 0 {
        return Ok((file, 0));
    }
    // Find the last newline; everything after it is a torn write.
    let mut end = len;
    let mut chunk = vec![0u8; 4096];
    loop {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(std::io::SeekFrom::Start(start)).await?;
        let slice = chunk.get_mut(..n).unwrap_or_default();
        file.read_exact(slice).await?;
        if let Some(i) = slice.iter().rposition(|b| *b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep != len {
                tracing::warn!(path = %path.display(), bytes = len - keep, "file sink: cutting a torn last line left by a crash");
                file.set_len(keep).await?;
            }
            return Ok((file, keep));
        }
        if start == 0 {
            tracing::warn!(path = %path.display(), bytes = len, "file sink: file holds no complete line; truncating it");
            file.set_len(0).await?;
            return Ok((file, 0));
        }
        end = start;
    }
}

impl Sink for FileSink {
    fn deliver<'a>(
        &'a mut self,
        record: &'a Record,
        _ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        Box::pin(async move {
            // Buffer only: all I/O happens in `commit`, so a failure there
            // rolls the whole batch back and the worker redelivers all of it.
            self.buf.extend_from_slice(&record.payload);
            self.buf.push(b'\n');
            Ok(())
        })
    }

    fn commit(&mut self) -> BoxFuture<'_, DeliveryResult> {
        Box::pin(async move {
            match self.commit_inner().await {
                Ok(()) => Ok(()),
                Err(e) => {
                    self.roll_back().await;
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
