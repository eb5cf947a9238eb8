//! The engine: a dispatcher with one worker per sink and ack tokens, made
//! durable.
//!
//! Pipeline, with the task that owns each step:
//! 1. `dispatch*` checks limits and hands records to the **appender**, which
//!    packs concurrent requests into one log value (one request never spans
//!    two values), inserts it and requests a group-commit flush.
//! 2. The **completion** task waits for that flush, then publishes the batch
//!    (tail cache, head), registers ack tokens and answers the dispatchers.
//! 3. One **worker** per sink reads from its offset, delivers, and commits its
//!    offset together with the batch's DLQ entries; the completion task
//!    waits for that commit's flush and feeds it to the ack watermark.
//! 4. The **truncator** removes batches every configured sink has passed.
//!
//! Invariants:
//! - a receipt (under `Always`/`Full`) and a published record both imply the
//!   record is durable; workers never see a record that is not;
//! - an ack token is released only after every configured sink's *durable*
//!   offset has passed its record, and exactly once;
//! - a sink's stored offset never decreases.

mod appender;
mod backpressure;
mod breaker;
mod completion;
mod core;
mod dispatch_error;
mod handle;
mod holes;
mod lifecycle;
mod msg;
mod open;
mod pending;
mod rate_limit;
mod receipt_future;
mod stall;
mod status;
mod tail;
mod truncate;
mod window;
mod worker;

pub use breaker::{Breaker, BreakerState, Health, Permit, Trip};
pub use dispatch_error::{DispatchError, Items};
pub use handle::{Dispatched, Meta, Outbox};
pub use lifecycle::ShutdownReport;
pub use open::OutboxBuilder;
pub use rate_limit::TokenBucket;
pub use receipt_future::ReceiptFuture;
pub use status::{SinkStatus, Status};
