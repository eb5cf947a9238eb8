//! One record's delivery, with its retries: a future the worker keeps in
//! flight until the record is delivered or dead-lettered.
//!
//! Invariants:
//! - every attempt passes the sink's gates first: its circuit breaker (no
//!   attempt while open or paused, except the one probe) and its token
//!   bucket (every attempt, retries and probes included, takes a token);
//! - an attempt counts toward `retry_max` (or the retry schedule) only when
//!   it was made with the breaker closed: while the endpoint is judged down
//!   a record waits in the log, it is not dead-lettered for the endpoint's fault;
//! - while the sink is paused by an operator nothing is dead-lettered: an attempt
//!   that was out when the pause landed and failed (even permanently) waits
//!   for the resume and is made again, without counting;
//! - a panic in the sink is caught and is a transient failure of that
//!   attempt; the last attempts' outcomes go with a dead-lettered record;
//! - dropping the future (the worker is cancelled, or resets after a failed
//!   sink commit) abandons the record, which stays in the log and is
//!   delivered again: nothing is marked done that was not.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::FutureExt;

use crate::codec::{Attempt, DlqEntry, HISTORY_MAX, RetryState};
use crate::engine::breaker::{BreakerState, Health, Permit};
use crate::engine::core::Core;
use crate::error::panic_message;
use crate::retry::{Decision, RetryPolicy};
use crate::sink::{DeliveryContext, DeliveryError, DeliveryResult, Sink};
use crate::store::{Batch, now_ms};
use crate::types::Seq;

/// How a record's delivery ended.
pub(super) enum Done {
    /// The sink took it.
    Delivered(Seq),
    /// Dead-lettered: a permanent failure, or the retries ran out.
    DeadLettered(Box<DlqEntry>),
}

impl Done {
    pub(super) fn seq(&self) -> Seq {
        match self {
            Done::Delivered(s) => *s,
            Done::DeadLettered(e) => Seq(e.seq),
        }
    }
}

/// Everything a delivery needs, owned, so its future outlives the worker's
/// borrow of the batch it came from.
pub(super) struct Job<T> {
    pub core: Arc<Core<T>>,
    pub idx: usize,
    pub sink: Arc<dyn Sink>,
    pub policy: Arc<RetryPolicy>,
    pub batch: Arc<Batch>,
    pub seq: Seq,
    /// Where an earlier run left this record's retries.
    pub resume: Option<RetryState>,
}

/// Delivers the record, retrying as the policy says, and returns how it
/// ended. See the module invariants.
///
/// The first attempt of a record with no retries behind it, to a sink
/// whose breaker is closed and that has no rate limit, is made here, in a
/// small future (no timers, no history): that is nearly every delivery, and
/// the worker boxes a future per record (perf, 4 sinks: the retry loop's
/// large state machine was the worker's largest share, 12 % of the
/// samples, with its moves and allocation). Anything else, and a failed
/// first attempt, continues in [`retrying`], boxed on its own.
pub(super) async fn deliver<T: Send + 'static>(job: Job<T>) -> Done {
    let fast = job.resume.is_none()
        && job.core.sinks.get(job.idx).is_some_and(|slot| {
            slot.bucket.is_none() && slot.breaker.lock().state() == BreakerState::Closed
        });
    if !fast {
        return Box::pin(retrying(job, None)).await;
    }
    let (Some(slot), Some(entry)) = (job.core.sinks.get(job.idx), job.batch.entry(job.seq)) else {
        return Done::Delivered(job.seq);
    };
    let ctx = DeliveryContext {
        sink: &slot.name,
        seq: job.seq,
        delivery_id: entry.delivery_id(job.seq, job.core.log_id),
        attempt: 1,
    };
    let (result, latency) = attempt(&job.core, &job.sink, entry, &ctx).await;
    report(&job.core, job.idx, false, &result);
    match result {
        Ok(()) => Done::Delivered(job.seq),
        Err(error) => {
            let first = Failed {
                probe: false,
                error,
                latency,
            };
            Box::pin(retrying(job, Some(first))).await
        }
    }
}

/// How [`now`] went.
pub(super) enum Now {
    /// The sink took the record at once.
    Delivered,
    /// The attempt failed: the retry loop goes on from it ([`after`]).
    Failed(Failed),
    /// Not at once: the worker calls [`deliver`].
    Later,
}

/// The first attempt through [`Sink::deliver_now`], when the sink's
/// breaker is closed and it has no rate limit, so that no gate could make
/// it wait: no future, no allocation. Reported to the breaker as
/// [`deliver`] would.
pub(super) fn now<T>(
    core: &Core<T>,
    idx: usize,
    sink: &Arc<dyn Sink>,
    batch: &Batch,
    seq: Seq,
) -> Now {
    let Some(slot) = core.sinks.get(idx) else {
        return Now::Later;
    };
    if slot.bucket.is_some() || slot.breaker.lock().state() != BreakerState::Closed {
        return Now::Later;
    }
    let Some(entry) = batch.entry(seq) else {
        return Now::Later;
    };
    let ctx = DeliveryContext {
        sink: &slot.name,
        seq,
        delivery_id: entry.delivery_id(seq, core.log_id),
        attempt: 1,
    };
    let result = match std::panic::catch_unwind(AssertUnwindSafe(|| {
        sink.deliver_now(&entry.record, &ctx)
    })) {
        Ok(None) => return Now::Later,
        Ok(Some(r)) => r,
        Err(panic) => Err(panicked(core, &ctx, &panic)),
    };
    report(core, idx, false, &result);
    match result {
        Ok(()) => Now::Delivered,
        Err(error) => Now::Failed(Failed {
            probe: false,
            error,
            latency: Duration::ZERO,
        }),
    }
}

/// The rest of a delivery whose first attempt [`now`] made and failed.
pub(super) async fn after<T: Send + 'static>(job: Job<T>, failed: Failed) -> Done {
    retrying(job, Some(failed)).await
}

fn panicked<T>(
    core: &Core<T>,
    ctx: &DeliveryContext<'_>,
    panic: &Box<dyn std::any::Any + Send>,
) -> DeliveryError {
    let msg = panic_message(panic);
    core.metrics.panicked(ctx.sink.as_str());
    tracing::error!(sink = %ctx.sink, seq = ctx.seq.0, panic = %msg, "sink panicked while delivering; treating it as a failed attempt");
    DeliveryError::transient(format!("sink panicked: {msg}"))
}

/// A failed attempt, handed from a first attempt to the retry loop.
pub(super) struct Failed {
    probe: bool,
    error: DeliveryError,
    latency: Duration,
}

/// One call of the sink, with a panic caught as a transient failure.
/// Returns the result and how long the call waited.
async fn attempt<T>(
    core: &Core<T>,
    sink: &Arc<dyn Sink>,
    entry: &crate::codec::LogEntry,
    ctx: &DeliveryContext<'_>,
) -> (DeliveryResult, Duration) {
    // The call itself sits inside the caught future, so a sink that
    // panics before returning its future is caught too.
    let (caught, started) =
        timed(AssertUnwindSafe(async { sink.deliver(&entry.record, ctx).await }).catch_unwind())
            .await;
    let result = match caught {
        Ok(r) => r,
        Err(panic) => Err(panicked(core, ctx, &panic)),
    };
    (result, started.map(|s| s.elapsed()).unwrap_or_default())
}

/// The retry loop: every attempt after a failed one (`failed`, when
/// [`deliver`] made the first), or all of them.
async fn retrying<T: Send + 'static>(job: Job<T>, mut failed: Option<Failed>) -> Done {
    let Job {
        core,
        idx,
        sink,
        policy,
        batch,
        seq,
        resume,
    } = job;
    let Some(slot) = core.sinks.get(idx) else {
        return Done::Delivered(seq);
    };
    let Some(entry) = batch.entry(seq) else {
        return Done::Delivered(seq);
    };
    let delivery_id = entry.delivery_id(seq, core.log_id);
    let mut attempts = 0u32;
    let mut counted = 0u32;
    let mut history: Vec<Attempt> = Vec::new();
    if let Some(f) = &failed {
        attempts = 1;
        counted = u32::from(!f.probe);
    }
    if let Some(r) = resume {
        // Capped, so a clock stepped back cannot hold a record for longer
        // than any wait the policy could have chosen.
        let wait =
            Duration::from_millis(r.next_at_ms.saturating_sub(now_ms())).min(policy.longest_wait());
        tracing::info!(sink = %slot.name, seq = seq.0, attempts = r.attempts, counted = r.counted, ?wait, "resuming the retries of an earlier run");
        (attempts, counted, history) = (r.attempts, r.counted, r.history);
        tokio::time::sleep(wait).await;
    }
    loop {
        let Failed {
            probe,
            error,
            latency,
        } = match failed.take() {
            Some(f) => f,
            None => {
                let probe = pass_gates(&core, idx).await;
                attempts += 1;
                if !probe {
                    counted += 1;
                }
                let ctx = DeliveryContext {
                    sink: &slot.name,
                    seq,
                    delivery_id,
                    attempt: attempts,
                };
                let (result, latency) = attempt(&core, &sink, entry, &ctx).await;
                report(&core, idx, probe, &result);
                match result {
                    Ok(()) => return Done::Delivered(seq),
                    Err(error) => Failed {
                        probe,
                        error,
                        latency,
                    },
                }
            }
        };
        if history.len() == HISTORY_MAX {
            history.remove(0);
        }
        history.push(Attempt {
            at_ms: now_ms().saturating_sub(latency.as_millis() as u64),
            latency_ms: latency.as_millis() as u64,
            permanent: !error.is_transient(),
            error: error.to_string(),
        });
        let state = slot.breaker.lock().state();
        if state == BreakerState::Paused {
            // Paused while this attempt was out: nothing is dead-lettered for the
            // sink while it is paused. The record waits at the gate and is
            // tried again after the resume; this attempt does not count.
            if !probe {
                counted = counted.saturating_sub(1);
            }
            slot.retries.fetch_add(1, Ordering::Relaxed);
            core.metrics.retried(slot.name.as_str());
            continue;
        }
        if state != BreakerState::Closed && error.is_transient() {
            // The endpoint is judged down: the record waits at the gate for
            // the next probe instead of spending its retries.
            slot.retries.fetch_add(1, Ordering::Relaxed);
            core.metrics.retried(slot.name.as_str());
            continue;
        }
        match policy.decide(counted, &error, rand::random()) {
            Decision::Retry(wait) => {
                slot.retries.fetch_add(1, Ordering::Relaxed);
                core.metrics.retried(slot.name.as_str());
                tracing::debug!(sink = %slot.name, seq = seq.0, attempts, ?wait, error = %error, "retrying");
                let until = tokio::time::Instant::now() + wait;
                let state = RetryState {
                    attempts,
                    counted,
                    next_at_ms: now_ms().saturating_add(wait.as_millis() as u64),
                    history: history.clone(),
                };
                keep(&core, idx, seq, &state).await;
                tokio::time::sleep_until(until).await;
            }
            Decision::DeadLetter => {
                tracing::warn!(sink = %slot.name, seq = seq.0, attempts, error = %error, "dead-lettering the record (it goes to the DLQ)");
                return Done::DeadLettered(Box::new(DlqEntry {
                    sink: slot.name.to_string(),
                    seq: seq.0,
                    origin: delivery_id.seq.0,
                    origin_log: entry.origin_log,
                    record: entry.record.clone(),
                    error: error.to_string(),
                    attempts,
                    failed_at_ms: now_ms(),
                    history,
                }));
            }
        }
    }
}

/// Stores where the record's retries stand and waits until that is
/// durable, so a restart (or a crash) during the wait resumes with the same
/// count and the same due time. A failed write is logged: the store is
/// failed then, and the worker stops at its next commit.
async fn keep<T>(core: &Core<T>, idx: usize, seq: Seq, state: &RetryState) {
    let Some(slot) = core.sinks.get(idx) else {
        return;
    };
    if let Err(e) = core.store.retry_put(&slot.name, seq, state) {
        tracing::error!(sink = %slot.name, seq = seq.0, error = %e, "cannot store the retry state; a restart would count this record's attempts from 0");
        return;
    }
    slot.retry_dirty.store(true, Ordering::Release);
    let ticket = core.durability.request();
    if let Err(e) = core.durability.wait(ticket).await {
        tracing::error!(sink = %slot.name, seq = seq.0, error = %e, "the retry state did not become durable");
    }
}

/// Runs `fut` and says when it started waiting: the time of its first
/// `Pending`, or `None` when it was ready at once (then it took no
/// measurable time). A sink that answers at once (a file, stdout, a test
/// sink) costs no clock read; one that waits on the network is timed from
/// its first wait, which misses only the synchronous start of its call.
async fn timed<F: Future>(fut: F) -> (F::Output, Option<Instant>) {
    let mut fut = std::pin::pin!(fut);
    let mut started = None;
    let out = std::future::poll_fn(|cx| {
        let p = fut.as_mut().poll(cx);
        if p.is_pending() && started.is_none() {
            started = Some(Instant::now());
        }
        p
    })
    .await;
    (out, started)
}

/// Waits until the breaker and the token bucket let an attempt start.
/// Returns whether it is the breaker's probe. No clock is read when
/// nothing can make it wait (a closed breaker, no rate limit): every clock
/// read is a measurable share of a worker's time (perf, 4 sinks: 13 % of
/// the samples with four reads per record).
async fn pass_gates<T>(core: &Core<T>, idx: usize) -> bool {
    let Some(slot) = core.sinks.get(idx) else {
        return false;
    };
    let probe = loop {
        let changed = slot.gate_changed.notified();
        let permit = slot.breaker.lock().permit_with(Instant::now);
        match permit {
            Permit::Deliver => break false,
            Permit::Probe => {
                core.metrics
                    .breaker(slot.name.as_str(), BreakerState::HalfOpen);
                break true;
            }
            Permit::Wait(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = changed => {}
                }
            }
            // A probe's result, or a resume, wakes it; the timeout guards
            // against a missed wake-up.
            Permit::ProbeInFlight | Permit::Paused => {
                let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
            }
        }
    };
    loop {
        let wait = match &slot.bucket {
            Some(b) => match b.lock().take(Instant::now()) {
                Ok(()) => return probe,
                Err(wait) => wait,
            },
            None => return probe,
        };
        tokio::time::sleep(wait).await;
    }
}

/// Tells the breaker what the attempt says about the endpoint.
fn report<T>(core: &Core<T>, idx: usize, probe: bool, result: &DeliveryResult) {
    let Some(slot) = core.sinks.get(idx) else {
        return;
    };
    let health = Health::of(result);
    let mut b = slot.breaker.lock();
    if probe {
        let state = b.on_probe(Instant::now(), health);
        drop(b);
        match state {
            BreakerState::Closed => {
                tracing::info!(sink = %slot.name, "breaker closed: the probe was delivered")
            }
            _ => tracing::warn!(sink = %slot.name, state = state.as_str(), "breaker probe failed"),
        }
        core.metrics.breaker(slot.name.as_str(), state);
        slot.gate_changed.notify_waiters();
    } else if let Some(trip) = b.on_result_with(Instant::now, health) {
        drop(b);
        tracing::warn!(sink = %slot.name, ?trip, "breaker opened: the sink is paused (records stay in the log) and probes at an interval");
        core.metrics.breaker(slot.name.as_str(), BreakerState::Open);
    }
}
