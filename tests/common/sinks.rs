//! Small sinks, and [`Decided`], a sink made of a synchronous decision.
//! Self-contained, so that a bench or a target without `mod common` can
//! include this file alone with `#[path]`.
// A crate that includes this file alone uses only part of it.
#![allow(dead_code)]

use outbox::Record;
use outbox::sink::{BoxFuture, DeliveryContext, DeliveryResult, Sink};

/// A test sink whose delivery is decided at once, without waiting: wrap it
/// in [`Decided`] to get a [`Sink`].
pub trait Decide: Send + Sync + 'static {
    /// The outcome of delivering `record`; a panic here is a panic of the
    /// delivery's future, as in any sink.
    fn decide(&self, record: &Record, ctx: &DeliveryContext<'_>) -> DeliveryResult;

    /// The outcome of a commit.
    fn commit(&self) -> DeliveryResult {
        Ok(())
    }

    fn kind(&self) -> &'static str;
}

/// The [`Sink`] of a [`Decide`]: each call runs inside the returned
/// future, as the engine polls it.
#[derive(Clone)]
pub struct Decided<D>(pub D);

impl<D: Decide> Sink for Decided<D> {
    fn deliver<'a>(
        &'a self,
        record: &'a Record,
        ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        Box::pin(async move { self.0.decide(record, ctx) })
    }

    fn commit(&self) -> BoxFuture<'_, DeliveryResult> {
        Box::pin(async move { self.0.commit() })
    }

    fn kind(&self) -> &'static str {
        self.0.kind()
    }
}

/// Never finishes a delivery: everything it is given stays pending.
pub struct Stuck;

impl Sink for Stuck {
    fn deliver<'a>(
        &'a self,
        _record: &'a Record,
        _ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        Box::pin(std::future::pending())
    }

    fn kind(&self) -> &'static str {
        "stuck"
    }
}

/// Accepts every delivery at once, reading the payload so that the work is
/// not optimised away. A [`Sink`] as `Decided(Noop)`.
#[derive(Clone)]
pub struct Noop;

impl Decide for Noop {
    fn decide(&self, record: &Record, _ctx: &DeliveryContext<'_>) -> DeliveryResult {
        std::hint::black_box(&record.payload);
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "noop"
    }
}
