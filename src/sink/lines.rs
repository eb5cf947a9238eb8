//! The line buffer of the file and stdout sinks: a delivery appends its
//! record's payload and a newline, and completes at once; the sink's commit
//! takes the buffer and writes it.
//!
//! Invariant: what `take` returns is every line pushed since the last
//! `take` or `clear`, in push order, each ending in `\n`.

use parking_lot::Mutex;

use super::{BoxFuture, DeliveryResult};
use crate::types::Record;

/// Lines delivered since the last commit began.
pub(super) struct Lines(Mutex<Vec<u8>>);

/// `Sink::deliver` and `Sink::deliver_now` for a sink whose deliveries
/// only append to its `pending: Lines`: all its I/O happens in `commit`,
/// so a failure there rolls back everything since the last good commit and
/// the worker delivers all of it again.
macro_rules! buffered_delivery {
    () => {
        fn deliver<'a>(
            &'a self,
            record: &'a Record,
            _ctx: &'a DeliveryContext<'a>,
        ) -> BoxFuture<'a, DeliveryResult> {
            self.pending.deliver(record)
        }

        fn deliver_now(
            &self,
            record: &Record,
            _ctx: &DeliveryContext<'_>,
        ) -> Option<DeliveryResult> {
            self.pending.deliver_now(record)
        }
    };
}
pub(super) use buffered_delivery;

impl Lines {
    pub fn new() -> Lines {
        Lines(Mutex::new(Vec::with_capacity(64 << 10)))
    }

    /// Appends `record` as one line: a delivery that is already done.
    pub fn deliver(&self, record: &Record) -> BoxFuture<'static, DeliveryResult> {
        self.append(record);
        Box::pin(std::future::ready(Ok(())))
    }

    /// [`Lines::deliver`] without the future, for `Sink::deliver_now`.
    pub fn deliver_now(&self, record: &Record) -> Option<DeliveryResult> {
        self.append(record);
        Some(Ok(()))
    }

    fn append(&self, record: &Record) {
        let mut buf = self.0.lock();
        buf.extend_from_slice(&record.payload);
        buf.push(b'\n');
    }

    /// The lines buffered so far; the buffer starts again empty.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock())
    }

    /// Forgets the lines buffered so far (they are delivered again).
    pub fn clear(&self) {
        self.0.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_come_back_in_order_once() {
        let l = Lines::new();
        l.deliver(&Record::new(b"{\"a\":1}".to_vec()))
            .await
            .unwrap();
        l.deliver(&Record::new(b"{\"b\":2}".to_vec()))
            .await
            .unwrap();
        assert_eq!(l.take(), b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(l.take(), b"");
        l.deliver(&Record::new(b"x".to_vec())).await.unwrap();
        l.clear();
        l.deliver(&Record::new(b"y".to_vec())).await.unwrap();
        assert_eq!(l.take(), b"y\n");
    }
}
