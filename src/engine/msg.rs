//! The messages the engine's tasks send each other: requests to the
//! appender and work for the completion task.
//!
//! They live apart from their receivers because the shared core holds the
//! senders; next to the appender or the completion task they would make
//! those files and the core import each other.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::dispatch_error::DispatchError;
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

/// Where the appender answers one dispatch request: with the first seq,
/// or with the error and, when nothing was written, the request's items.
pub(crate) type Reply<T> = oneshot::Sender<std::result::Result<Appended, DispatchError<T>>>;

/// A request to the appender.
pub(crate) enum AppendReq<T> {
    /// Records from one `dispatch*` call; appended together or not at all.
    Records {
        items: Vec<(Record, Vec<T>)>,
        bytes: usize,
        /// An idempotency key and the digest of the records.
        key: Option<(Vec<u8>, [u8; 16])>,
        reply: Reply<T>,
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

impl<T> AppendReq<T> {
    /// The records and tokens of a `Records` request (none for the others),
    /// for handing back a request that was never taken.
    pub(crate) fn into_items(self) -> Vec<(Record, Vec<T>)> {
        match self {
            AppendReq::Records { items, .. } => items,
            AppendReq::Redrive { .. } | AppendReq::Stop => Vec::new(),
        }
    }
}

/// Work for the completion task, processed in the order sent.
pub(crate) enum Completion<T> {
    Appended {
        ticket: Ticket,
        batches: Vec<Arc<Batch>>,
        tokens: Vec<(Seq, Vec<T>)>,
        replies: Vec<(Reply<T>, Appended)>,
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
