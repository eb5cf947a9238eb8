//! The stdout sink: one payload per line.

use tokio::io::AsyncWriteExt;

use super::lines::{Lines, buffered_delivery};
use super::{BoxFuture, DeliveryContext, DeliveryError, DeliveryResult, Sink};
use crate::types::Record;

/// Writes each payload followed by `\n` to standard output. Lines are
/// buffered and written, then flushed, at each commit, before the offset
/// moves past them.
pub struct StdoutSink {
    pending: Lines,
    out: tokio::sync::Mutex<tokio::io::Stdout>,
}

impl StdoutSink {
    /// A sink on this process's stdout.
    pub fn new() -> Self {
        StdoutSink {
            pending: Lines::new(),
            out: tokio::sync::Mutex::new(tokio::io::stdout()),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for StdoutSink {
    buffered_delivery!();

    fn commit(&self) -> BoxFuture<'_, DeliveryResult> {
        Box::pin(async move {
            let mut out = self.out.lock().await;
            let buf = self.pending.take();
            out.write_all(&buf).await.map_err(io_err)?;
            out.flush().await.map_err(io_err)
        })
    }

    fn kind(&self) -> &'static str {
        "stdout"
    }
}

fn io_err(e: std::io::Error) -> DeliveryError {
    DeliveryError::transient(format!("stdout: {e}"))
}
