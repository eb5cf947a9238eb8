//! [`ReceiptFuture`]: the receipts of a dispatch the appender has taken,
//! resolved once its records are durable under the sync policy.
//!
//! Invariant: a `ReceiptFuture` exists only once the request is in the
//! appender's queue, so whether it is polled or dropped changes nothing of
//! what is appended, delivered or acked; it only carries the answer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::dispatch_error::DispatchError;
use super::handle::Dispatched;
use super::msg::Appended;
use crate::error::DispatchErrorKind;
use crate::types::{DeliveryId, Receipt, Seq};

/// The answer channel of one request.
pub(crate) type Answer<T> = oneshot::Receiver<std::result::Result<Appended, DispatchError<T>>>;

/// Resolves to the receipts of an admitted dispatch once its records are
/// durable: what [`Outbox::try_dispatch`](crate::Outbox::try_dispatch),
/// [`Outbox::try_dispatch_many`](crate::Outbox::try_dispatch_many) and
/// [`Outbox::try_dispatch_once`](crate::Outbox::try_dispatch_once) return.
/// `O` is [`Receipt`], `Vec<Receipt>` or [`Dispatched`].
///
/// # Errors
/// Resolves to a [`DispatchError`]: [`DispatchErrorKind::KeyReused`], or
/// [`DispatchErrorKind::ShuttingDown`] when shutdown began before the
/// appender wrote the request, hand the items back (nothing was appended);
/// [`DispatchErrorKind::Store`] ([`crate::StoreError::Poisoned`] or
/// [`crate::StoreError::Io`]) when the store failed while writing or flushing
/// them does not (the records may be durable; their tokens are dropped, never
/// released).
///
/// # Cancel safety
/// Dropping it is safe: the records are appended, delivered and their
/// tokens released all the same; only the receipts are lost.
#[must_use = "the receipts come only by awaiting it; dropping it still appends the records"]
pub struct ReceiptFuture<T, O = Vec<Receipt>> {
    rx: Answer<T>,
    given: Vec<Option<DeliveryId>>,
    log_id: Uuid,
    finish: fn(Dispatched) -> Option<O>,
}

impl<T, O> ReceiptFuture<T, O> {
    pub(crate) fn new(
        rx: Answer<T>,
        given: Vec<Option<DeliveryId>>,
        log_id: Uuid,
        finish: fn(Dispatched) -> Option<O>,
    ) -> Self {
        ReceiptFuture {
            rx,
            given,
            log_id,
            finish,
        }
    }

    /// The same answer, shaped by `finish` instead.
    pub(crate) fn map<P>(self, finish: fn(Dispatched) -> Option<P>) -> ReceiptFuture<T, P> {
        ReceiptFuture {
            rx: self.rx,
            given: self.given,
            log_id: self.log_id,
            finish,
        }
    }

    fn receipts(&self, done: Appended) -> Dispatched {
        let receipts = self
            .given
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let seq = Seq(done.first.0 + i as u64);
                Receipt {
                    seq,
                    delivery_id: id.unwrap_or(DeliveryId {
                        log_id: self.log_id,
                        seq,
                    }),
                }
            })
            .collect();
        Dispatched {
            receipts,
            duplicate: done.duplicate,
        }
    }
}

impl<T, O> std::fmt::Debug for ReceiptFuture<T, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptFuture")
            .field("records", &self.given.len())
            .finish_non_exhaustive()
    }
}

impl<T, O> Future for ReceiptFuture<T, O> {
    type Output = std::result::Result<O, DispatchError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let answer = match Pin::new(&mut this.rx).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(a) => a,
        };
        Poll::Ready(match answer {
            Ok(Ok(done)) => (this.finish)(this.receipts(done))
                .ok_or_else(|| DispatchError::kept(DispatchErrorKind::ShuttingDown)),
            Ok(Err(e)) => Err(e),
            // The appender dropped the request without an answer (the
            // outbox was dropped mid-write): it may have been written.
            Err(_) => Err(DispatchError::kept(DispatchErrorKind::ShuttingDown)),
        })
    }
}
