//! The stdout sink: one payload per line.

use tokio::io::{AsyncWriteExt, BufWriter, Stdout};

use super::{BoxFuture, DeliveryContext, DeliveryError, DeliveryResult, Sink};
use crate::types::Record;

/// Writes each payload followed by `\n` to standard output, and flushes
/// before each offset commit.
pub struct StdoutSink {
    out: BufWriter<Stdout>,
}

impl StdoutSink {
    /// A sink on this process's stdout.
    pub fn new() -> Self {
        StdoutSink {
            out: BufWriter::with_capacity(64 << 10, tokio::io::stdout()),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for StdoutSink {
    fn deliver<'a>(
        &'a mut self,
        record: &'a Record,
        _ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        Box::pin(async move {
            self.out.write_all(&record.payload).await.map_err(io_err)?;
            self.out.write_all(b"\n").await.map_err(io_err)
        })
    }

    fn commit(&mut self) -> BoxFuture<'_, DeliveryResult> {
        Box::pin(async move { self.out.flush().await.map_err(io_err) })
    }

    fn kind(&self) -> &'static str {
        "stdout"
    }
}

fn io_err(e: std::io::Error) -> DeliveryError {
    DeliveryError::transient(format!("stdout: {e}"))
}
