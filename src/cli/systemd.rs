//! `outbox run` as a systemd service (`Type=notify`): `READY=1` once the
//! outbox is open and every listener is bound, `WATCHDOG=1` while the
//! engine answers its liveness probe, `STOPPING=1` when the drain begins.
//!
//! Invariants:
//! - `READY=1` is sent once, after the outbox is open and the listeners
//!   are bound and announced; `STOPPING=1` once, after the last
//!   `WATCHDOG=1` (the watchdog task is stopped first), since systemd stops
//!   watching once the service is stopping;
//! - `WATCHDOG=1` is sent only right after a probe of the engine succeeded
//!   within the probe timeout: a timer alone would keep a wedged daemon
//!   alive. The probe ([`engine_alive`]) needs the tokio runtime to run
//!   it, a blocking thread to be free, and the engine's state and sled to
//!   answer (`Outbox::status` reads the offsets and counts the DLQ), and
//!   the write path not to be stalled (`Outbox::stalled`: the appender in
//!   one write, or the group commit in one flush, for 30 s), which the
//!   status reads alone would not notice;
//! - without `NOTIFY_SOCKET` nothing is sent; without `WATCHDOG_USEC` (or
//!   with a `WATCHDOG_PID` that is not ours) there is no watchdog.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use outbox::{Outbox, Result, StoreError};
use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Sends `states` to systemd, if it listens. A failure is logged, not
/// fatal: the records are safe either way, and systemd's own start or
/// watchdog timeout says what went wrong.
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::error!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// The service's side of the conversation with systemd.
pub struct Service {
    watchdog: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Service {
    /// Says `READY=1` and, when systemd asked for a watchdog, starts
    /// feeding it at half its timeout while [`engine_alive`] holds.
    pub fn ready<T: Send + 'static>(outbox: &Arc<Outbox<T>>, sinks: usize) -> Service {
        let status = format!(
            "delivering to {sinks} sink{}",
            if sinks == 1 { "" } else { "s" }
        );
        notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
        let watchdog = sd_notify::watchdog_enabled().map(|timeout| {
            let interval = timeout / 2;
            tracing::info!(
                ?timeout,
                "systemd watchdog enabled; probing the engine every {interval:?}"
            );
            let stop = CancellationToken::new();
            let outbox = outbox.clone();
            let task = tokio::spawn(feed(
                interval,
                stop.clone(),
                move || engine_alive(outbox.clone()),
                || notify(&[NotifyState::Watchdog]),
            ));
            (stop, task)
        });
        Service { watchdog }
    }

    /// Stops the watchdog, then says `STOPPING=1`.
    pub async fn stopping(self) {
        if let Some((stop, task)) = self.watchdog {
            stop.cancel();
            let _ = task.await;
        }
        notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    }
}

/// The liveness probe: see the module doc. The engine's pipeline (the
/// appender, the completion task, the group-commit flusher) is not
/// exercised, because the engine has no call that passes through it
/// without appending.
pub async fn engine_alive<T: Send + 'static>(outbox: Arc<Outbox<T>>) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        outbox.status()?;
        match outbox.stalled(Outbox::<T>::STALL_AFTER) {
            Some(why) => Err(StoreError::Storage(why.into()).into()),
            None => Ok(()),
        }
    })
    .await
    .map_err(|e| StoreError::Storage(format!("liveness probe: {e}").into()))?
}

/// Every `interval`, runs `probe` for at most half the interval and calls
/// `send` only when it succeeded in time; returns when `stop` is
/// cancelled. A wedged probe therefore starves the watchdog, and systemd
/// restarts the service once its `WatchdogSec` passes.
pub async fn feed<P, F, S>(interval: Duration, stop: CancellationToken, mut probe: P, mut send: S)
where
    P: FnMut() -> F,
    F: Future<Output = Result<()>>,
    S: FnMut(),
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(interval / 2, probe()) => r,
        };
        match answer {
            Ok(Ok(())) => send(),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "engine liveness probe failed; not feeding the systemd watchdog")
            }
            Err(_) => tracing::error!(
                "engine liveness probe did not answer within {:?}; not feeding the systemd watchdog",
                interval / 2
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Runs `feed` for `run` of paused time with a probe that answers
    /// `answer(n)` on its n-th call (None: never answers), and returns
    /// the probe call at which each feed happened.
    async fn fed(run: Duration, answer: fn(u32) -> Option<Result<()>>) -> Vec<u32> {
        let calls = Arc::new(AtomicU32::new(0));
        let feeds = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = {
            let (calls, feeds, stop) = (calls.clone(), feeds.clone(), stop.clone());
            let calls2 = calls.clone();
            tokio::spawn(feed(
                Duration::from_millis(100),
                stop,
                move || {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        match answer(n) {
                            Some(r) => r,
                            None => std::future::pending().await,
                        }
                    }
                },
                move || feeds.lock().push(calls2.load(Ordering::SeqCst)),
            ))
        };
        tokio::time::sleep(run).await;
        stop.cancel();
        task.await.unwrap();
        feeds.lock().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn feeds_once_per_interval_while_the_probe_answers() {
        // Ticks at 0, 100, ..., 950 ms: 10 probes, 10 feeds.
        let got = fed(Duration::from_millis(950), |_| Some(Ok(()))).await;
        assert_eq!(got, (1..=10).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wedged_engine_starves_the_watchdog() {
        // The probe answers 3 times, then hangs for good.
        let got = fed(Duration::from_secs(5), |n| (n <= 3).then_some(Ok(()))).await;
        assert_eq!(got, [1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_probe_is_not_fed_and_recovery_resumes_feeding() {
        let got = fed(Duration::from_millis(950), |n| {
            Some(if (4..=6).contains(&n) {
                Err(StoreError::Poisoned("flush failed".into()).into())
            } else {
                Ok(())
            })
        })
        .await;
        assert_eq!(got, [1, 2, 3, 7, 8, 9, 10]);
    }
}
