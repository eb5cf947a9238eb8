//! The messages the engine's tasks send each other: requests to the
//! appender and work for the completion task.
//!
//! They live apart from their receivers because the shared core holds the
//! senders; next to the appender or the completion task they would make
//! those files and the core import each other.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::error::Result;
use crate::store::{Batch, Selection, Ticket};
use crate::types::{Record, Seq, SinkName};

/// What the appender answers a dispatch with, once it is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Appended {
    /// The seq of the first record.
    pub first: Seq,
    /// An idempotency key found the records of an earlier dispatch.
    pub duplicate: bool,
}

/// A request to the appender.
pub(crate) enum AppendReq<T> {
    /// Records from one `dispatch*` call; appended together or not at all.
    Records {
        items: Vec<(Record, Vec<T>)>,
        bytes: usize,
        /// An idempotency key and the digest of the records.
        key: Option<(Vec<u8>, [u8; 16])>,
        reply: oneshot::Sender<Result<Appended>>,
        at: Instant,
    },
    /// Move DLQ entries of one sink back into the log, for that sink only.
    Redrive {
        sink: SinkName,
        which: Selection,
        reply: oneshot::Sender<Result<usize>>,
    },
    /// Finish what was queued before this, then stop.
    Stop,
}

/// Work for the completion task, processed in the order sent.
pub(crate) enum Completion<T> {
    Appended {
        ticket: Ticket,
        batches: Vec<Arc<Batch>>,
        tokens: Vec<(Seq, Vec<T>)>,
        replies: Vec<(oneshot::Sender<Result<Appended>>, Appended)>,
        at: Instant,
    },
    Committed {
        ticket: Ticket,
        sink: usize,
        offset: Seq,
    },
    /// Shutdown: everything before this has been sent.
    Finish,
}
