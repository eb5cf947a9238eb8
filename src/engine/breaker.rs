//! A sink's circuit breaker: pure and synchronous. The caller passes `now`
//! in (or a clock, asked only when the time matters) and reports each
//! attempt's result; nothing here reads a clock of its own, sleeps or logs.
//!
//! ```text
//!            trip                  probe_interval passes
//!  Closed ────────────▶ Open ─────────────────────────▶ HalfOpen
//!    ▲                   ▲            probe failed          │
//!    │                   └──────────────────────────────────┤
//!    └──────────────────────────────────────────────────────┘
//!                           probe succeeded
//!
//!  any state ── pause ──▶ Paused ── resume ──▶ Closed
//! ```
//!
//! Invariants:
//! - **Closed** permits every delivery; it trips to Open when the
//!   configured run of consecutive failures is reached, or when the last
//!   `window` results (a full window, counted since the breaker last
//!   closed) hold at least `percent` % failures;
//! - **Open** permits nothing until `probe_interval` after it opened (or
//!   after the last probe failed); then the first [`Breaker::permit`] turns
//!   it HalfOpen and answers [`Permit::Probe`], exactly once;
//! - **HalfOpen** permits nothing more until the probe's result is reported
//!   with [`Breaker::on_probe`]: a success closes the breaker, a failure
//!   reopens it for another `probe_interval`, and an abandoned probe
//!   ([`Breaker::probe_abandoned`]) makes the next `permit` probe at once;
//! - **Paused** is the operator's: it permits nothing, sends no probes, and
//!   nothing but [`Breaker::resume`] leaves it; results reported while
//!   paused change nothing;
//! - results of ordinary deliveries reported while not Closed (attempts
//!   that were in flight when the breaker opened) change nothing, and a
//!   probe result is only taken while HalfOpen;
//! - every way into Closed starts with empty counts.
//!
//! What counts as a failure is the caller's to say through [`Health`];
//! [`Health::of`] is the rule the engine uses.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::BreakerConfig;
pub use crate::metrics::BreakerState;
use crate::sink::DeliveryResult;

/// What one attempt says about the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// It answered: delivered, or refused this one record.
    Up,
    /// It did not answer usefully: a timeout, a refused connection, a 5xx.
    Down,
}

impl Health {
    /// A transient failure is [`Health::Down`]; a success or a permanent
    /// failure is [`Health::Up`], because a permanent failure is about one
    /// record (a 400 for a malformed body): pausing the sink for it would
    /// hold back every good record behind it, which is what the DLQ avoids.
    pub fn of(result: &DeliveryResult) -> Health {
        match result {
            Err(e) if e.is_transient() => Health::Down,
            _ => Health::Up,
        }
    }
}

/// What the caller may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Deliver as usual and report with [`Breaker::on_result`].
    Deliver,
    /// Deliver one record as the probe and report with
    /// [`Breaker::on_probe`] (or [`Breaker::probe_abandoned`]).
    Probe,
    /// Open: ask again after this long.
    Wait(Duration),
    /// A probe is in flight: wait for its result.
    ProbeInFlight,
    /// Paused by an operator: wait for a resume.
    Paused,
}

/// Why the breaker opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trip {
    /// This many failures in a row.
    Consecutive(u32),
    /// `failures` of the last `window` attempts failed.
    Ratio {
        /// Failures in the window.
        failures: u32,
        /// The window's size.
        window: u32,
    },
}

/// The circuit breaker of one sink. See the module docs.
#[derive(Clone, Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: BreakerState,
    /// Failures in a row, while Closed.
    consecutive: u32,
    /// The last results while Closed, newest at the back, at most the
    /// window's size; empty without a ratio trigger.
    window: VecDeque<Health>,
    /// Failures in `window`.
    window_failures: u32,
    /// When Open: the earliest next probe.
    next_probe: Option<Instant>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Breaker {
        Breaker {
            cfg,
            state: BreakerState::Closed,
            consecutive: 0,
            window: VecDeque::new(),
            window_failures: 0,
            next_probe: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a delivery may start at `now`. Opening the way for a probe
    /// (Open → HalfOpen) happens here.
    pub fn permit(&mut self, now: Instant) -> Permit {
        self.permit_with(|| now)
    }

    /// [`Breaker::permit`], asking `clock` for the time only when it
    /// matters (while Open): a worker delivering records through a closed
    /// breaker then reads no clock for it.
    pub fn permit_with(&mut self, clock: impl FnOnce() -> Instant) -> Permit {
        match self.state {
            BreakerState::Closed => Permit::Deliver,
            BreakerState::Paused => Permit::Paused,
            BreakerState::HalfOpen => Permit::ProbeInFlight,
            BreakerState::Open => {
                let now = clock();
                match self.next_probe {
                    Some(at) if now < at => Permit::Wait(at - now),
                    _ => {
                        self.state = BreakerState::HalfOpen;
                        self.next_probe = None;
                        Permit::Probe
                    }
                }
            }
        }
    }

    /// Reports an ordinary delivery's result. Returns why the breaker
    /// opened, when this result opened it.
    pub fn on_result(&mut self, now: Instant, health: Health) -> Option<Trip> {
        self.on_result_with(|| now, health)
    }

    /// [`Breaker::on_result`], asking `clock` for the time only when the
    /// result opens the breaker.
    pub fn on_result_with(
        &mut self,
        clock: impl FnOnce() -> Instant,
        health: Health,
    ) -> Option<Trip> {
        if self.state != BreakerState::Closed {
            return None;
        }
        match health {
            Health::Up => self.consecutive = 0,
            Health::Down => self.consecutive = self.consecutive.saturating_add(1),
        }
        if let Some(ratio) = self.cfg.failure_ratio {
            let window = usize::try_from(ratio.window).unwrap_or(usize::MAX);
            self.window.push_back(health);
            if health == Health::Down {
                self.window_failures += 1;
            }
            if self.window.len() > window && self.window.pop_front() == Some(Health::Down) {
                self.window_failures -= 1;
            }
        }
        let trip = self.trip()?;
        self.open(clock());
        Some(trip)
    }

    /// Reports the probe's result. Returns the new state.
    pub fn on_probe(&mut self, now: Instant, health: Health) -> BreakerState {
        if self.state == BreakerState::HalfOpen {
            match health {
                Health::Up => self.close(),
                Health::Down => self.open(now),
            }
        }
        self.state
    }

    /// The probe never finished (the worker was cancelled): the next
    /// [`Breaker::permit`] probes again at once.
    pub fn probe_abandoned(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.state = BreakerState::Open;
            self.next_probe = None;
        }
    }

    /// The operator pauses the sink, whatever its state.
    pub fn pause(&mut self) {
        self.state = BreakerState::Paused;
        self.next_probe = None;
    }

    /// The operator resumes a paused sink: it closes, with empty counts, so
    /// deliveries start at once (and trip again if the endpoint is still
    /// down). Does nothing unless paused.
    pub fn resume(&mut self) {
        if self.state == BreakerState::Paused {
            self.close();
        }
    }

    fn trip(&self) -> Option<Trip> {
        if let Some(n) = self.cfg.consecutive_failures
            && self.consecutive >= n
        {
            return Some(Trip::Consecutive(self.consecutive));
        }
        let ratio = self.cfg.failure_ratio?;
        let full = self.window.len() == usize::try_from(ratio.window).unwrap_or(usize::MAX);
        // failures / window >= percent / 100, in integers.
        let over = u64::from(self.window_failures) * 100
            >= u64::from(ratio.percent) * u64::from(ratio.window);
        (full && over).then_some(Trip::Ratio {
            failures: self.window_failures,
            window: ratio.window,
        })
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open;
        self.next_probe = Some(now + self.cfg.probe_interval);
        self.reset_counts();
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.next_probe = None;
        self.reset_counts();
    }

    fn reset_counts(&mut self) {
        self.consecutive = 0;
        self.window.clear();
        self.window_failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FailureRatio;
    use crate::sink::DeliveryError;
    use Health::{Down, Up};
    use proptest::prelude::*;

    const PROBE: Duration = Duration::from_secs(30);

    fn consecutive(n: u32) -> Breaker {
        Breaker::new(BreakerConfig {
            consecutive_failures: Some(n),
            failure_ratio: None,
            probe_interval: PROBE,
        })
    }

    fn ratio(percent: u8, window: u32) -> Breaker {
        Breaker::new(BreakerConfig {
            consecutive_failures: None,
            failure_ratio: Some(FailureRatio { percent, window }),
            probe_interval: PROBE,
        })
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn consecutive_failures_trip_and_a_success_resets_the_run() {
        let t0 = Instant::now();
        let mut b = consecutive(3);
        assert_eq!(b.on_result(t0, Down), None);
        assert_eq!(b.on_result(t0, Down), None);
        assert_eq!(b.on_result(t0, Up), None, "the run restarts");
        assert_eq!(b.on_result(t0, Down), None);
        assert_eq!(b.on_result(t0, Down), None);
        assert_eq!(b.permit(t0), Permit::Deliver);
        assert_eq!(b.on_result(t0, Down), Some(Trip::Consecutive(3)));
        assert_eq!(b.state(), BreakerState::Open);
    }

    /// The clock is asked only when the time matters: never while Closed,
    /// and for a result only when it opens the breaker (a success can, once
    /// the ratio's window fills with enough failures already in it).
    #[test]
    fn the_clock_is_read_only_when_the_time_matters() {
        let t0 = Instant::now();
        let reads = std::cell::Cell::new(0u32);
        let clock = || {
            reads.set(reads.get() + 1);
            t0
        };
        let mut b = ratio(50, 4);
        assert_eq!(b.permit_with(clock), Permit::Deliver);
        assert_eq!(b.on_result_with(clock, Down), None);
        assert_eq!(b.on_result_with(clock, Down), None);
        assert_eq!(b.on_result_with(clock, Up), None);
        assert_eq!(reads.get(), 0, "closed, nothing tripped: no clock read");
        assert_eq!(
            b.on_result_with(clock, Up),
            Some(Trip::Ratio {
                failures: 2,
                window: 4
            }),
            "the window is full with 2 of 4 failed"
        );
        assert_eq!(reads.get(), 1, "the trip read the clock once");
        assert_eq!(b.permit_with(clock), Permit::Wait(PROBE));
        assert_eq!(reads.get(), 2, "open: the wait needs the time");
    }

    #[test]
    fn open_waits_probes_once_then_closes_on_success() {
        let t0 = Instant::now();
        let mut b = consecutive(1);
        b.on_result(t0, Down);
        assert_eq!(b.permit(t0), Permit::Wait(PROBE));
        assert_eq!(
            b.permit(secs(t0, 10)),
            Permit::Wait(Duration::from_secs(20))
        );
        assert_eq!(b.permit(secs(t0, 30)), Permit::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.permit(secs(t0, 31)), Permit::ProbeInFlight, "one probe");
        assert_eq!(b.permit(secs(t0, 99)), Permit::ProbeInFlight);
        assert_eq!(b.on_probe(secs(t0, 32), Up), BreakerState::Closed);
        assert_eq!(b.permit(secs(t0, 32)), Permit::Deliver);
    }

    #[test]
    fn a_failed_probe_reopens_for_another_interval() {
        let t0 = Instant::now();
        let mut b = consecutive(2);
        b.on_result(t0, Down);
        b.on_result(t0, Down);
        assert_eq!(b.permit(secs(t0, 30)), Permit::Probe);
        assert_eq!(b.on_probe(secs(t0, 35), Down), BreakerState::Open);
        assert_eq!(b.permit(secs(t0, 64)), Permit::Wait(Duration::from_secs(1)));
        assert_eq!(b.permit(secs(t0, 65)), Permit::Probe);
        assert_eq!(b.on_probe(secs(t0, 66), Up), BreakerState::Closed);
        // Closed again with fresh counts: one failure does not trip a
        // threshold of two.
        assert_eq!(b.on_result(secs(t0, 67), Down), None);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn late_results_and_stray_probe_reports_change_nothing() {
        let t0 = Instant::now();
        let mut b = consecutive(1);
        b.on_result(t0, Down);
        // An attempt that was in flight when the breaker opened succeeds.
        assert_eq!(b.on_result(t0, Up), None);
        assert_eq!(b.state(), BreakerState::Open);
        // A probe result while no probe was granted.
        assert_eq!(b.on_probe(t0, Up), BreakerState::Open);
        assert_eq!(b.permit(secs(t0, 30)), Permit::Probe);
        // An ordinary result during the probe does not decide it.
        assert_eq!(b.on_result(secs(t0, 31), Up), None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn an_abandoned_probe_is_retried_at_once() {
        let t0 = Instant::now();
        let mut b = consecutive(1);
        b.on_result(t0, Down);
        assert_eq!(b.permit(secs(t0, 30)), Permit::Probe);
        b.probe_abandoned();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.permit(secs(t0, 31)), Permit::Probe);
    }

    #[test]
    fn the_ratio_trips_only_on_a_full_window() {
        let t0 = Instant::now();
        let mut b = ratio(50, 4);
        // Three failures out of three: the window is not full yet.
        for _ in 0..3 {
            assert_eq!(b.on_result(t0, Down), None);
        }
        assert_eq!(
            b.on_result(t0, Up),
            Some(Trip::Ratio {
                failures: 3,
                window: 4
            })
        );

        // The window slides: [Up, Up, Down, Up] is 1 of 4; one more failure
        // makes it [Up, Down, Up, Down], exactly 50 %, which trips.
        let mut b = ratio(50, 4);
        for h in [Up, Up, Down, Up] {
            assert_eq!(b.on_result(t0, h), None, "{h:?}");
        }
        assert_eq!(
            b.on_result(t0, Down),
            Some(Trip::Ratio {
                failures: 2,
                window: 4
            })
        );
        // Just under the ratio does not.
        let mut b = ratio(51, 4);
        for h in [Up, Up, Down, Up, Down] {
            assert_eq!(b.on_result(t0, h), None, "{h:?}");
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn pause_holds_everything_until_resume() {
        let t0 = Instant::now();
        let mut b = consecutive(1);
        b.on_result(t0, Down);
        b.pause();
        assert_eq!(b.state(), BreakerState::Paused);
        // No probe however long it waits, and results do nothing.
        assert_eq!(b.permit(secs(t0, 3600)), Permit::Paused);
        assert_eq!(b.on_result(t0, Down), None);
        assert_eq!(b.on_probe(t0, Up), BreakerState::Paused);
        b.probe_abandoned();
        assert_eq!(b.state(), BreakerState::Paused);
        b.resume();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.permit(secs(t0, 3600)), Permit::Deliver);
        // Resume on a breaker that is not paused does nothing.
        b.on_result(t0, Down);
        b.resume();
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn pausing_during_a_probe_ignores_its_result() {
        let t0 = Instant::now();
        let mut b = consecutive(1);
        b.on_result(t0, Down);
        assert_eq!(b.permit(secs(t0, 30)), Permit::Probe);
        b.pause();
        assert_eq!(b.on_probe(secs(t0, 31), Up), BreakerState::Paused);
        assert_eq!(b.permit(secs(t0, 31)), Permit::Paused);
    }

    #[test]
    fn health_of_a_result() {
        assert_eq!(Health::of(&Ok(())), Up);
        assert_eq!(Health::of(&Err(DeliveryError::transient("503"))), Down);
        assert_eq!(Health::of(&Err(DeliveryError::permanent("400"))), Up);
    }

    #[test]
    fn state_names_and_codes_are_distinct() {
        let all = [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Paused,
        ];
        let names: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["closed", "open", "half_open", "paused"]);
        let codes: Vec<u8> = all.iter().map(|s| s.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3]);
    }

    // -----------------------------------------------------------------------
    // The breaker against a plain model: the whole history since the last
    // close in a Vec, and the trip conditions recomputed from it each time.

    #[derive(Clone, Debug)]
    enum Op {
        Advance(u64),
        Permit,
        Result(bool),
        Probe(bool),
        Abandon,
        Pause,
        Resume,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (0u64..50).prop_map(Op::Advance),
            3 => Just(Op::Permit),
            6 => any::<bool>().prop_map(Op::Result),
            2 => any::<bool>().prop_map(Op::Probe),
            1 => Just(Op::Abandon),
            1 => Just(Op::Pause),
            1 => Just(Op::Resume),
        ]
    }

    struct Model {
        consecutive: Option<u32>,
        ratio: Option<(u8, u32)>,
        probe: u64,
        state: BreakerState,
        history: Vec<bool>,
        next_probe: u64,
    }

    impl Model {
        fn tripped(&self) -> bool {
            let run = self.history.iter().rev().take_while(|ok| !**ok).count();
            let by_run = self.consecutive.is_some_and(|n| run >= n as usize);
            let by_ratio = self.ratio.is_some_and(|(percent, window)| {
                let w = window as usize;
                self.history.len() >= w && {
                    let failed = self.history[self.history.len() - w..]
                        .iter()
                        .filter(|ok| !**ok)
                        .count();
                    failed * 100 >= percent as usize * w
                }
            });
            by_run || by_ratio
        }

        fn step(&mut self, now: u64, op: &Op) -> Option<Permit> {
            use BreakerState::*;
            match (op, self.state) {
                (Op::Permit, Closed) => return Some(Permit::Deliver),
                (Op::Permit, Paused) => return Some(Permit::Paused),
                (Op::Permit, HalfOpen) => return Some(Permit::ProbeInFlight),
                (Op::Permit, Open) if now < self.next_probe => {
                    return Some(Permit::Wait(Duration::from_secs(self.next_probe - now)));
                }
                (Op::Permit, Open) => {
                    self.state = HalfOpen;
                    return Some(Permit::Probe);
                }
                (Op::Result(ok), Closed) => {
                    self.history.push(*ok);
                    if self.tripped() {
                        self.state = Open;
                        self.next_probe = now + self.probe;
                        self.history.clear();
                    }
                }
                (Op::Probe(true), HalfOpen) | (Op::Resume, Paused) => {
                    self.state = Closed;
                    self.history.clear();
                }
                (Op::Probe(false), HalfOpen) => {
                    self.state = Open;
                    self.next_probe = now + self.probe;
                }
                (Op::Abandon, HalfOpen) => {
                    self.state = Open;
                    self.next_probe = now;
                }
                (Op::Pause, _) => self.state = Paused,
                _ => {}
            }
            None
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn breaker_matches_the_model(
            consecutive in proptest::option::of(1u32..6),
            ratio in proptest::option::of((1u8..=100, 1u32..8)),
            probe in 1u64..40,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            prop_assume!(consecutive.is_some() || ratio.is_some());
            let t0 = Instant::now();
            let mut b = Breaker::new(BreakerConfig {
                consecutive_failures: consecutive,
                failure_ratio: ratio.map(|(percent, window)| FailureRatio { percent, window }),
                probe_interval: Duration::from_secs(probe),
            });
            let mut m = Model {
                consecutive,
                ratio,
                probe,
                state: BreakerState::Closed,
                history: Vec::new(),
                next_probe: 0,
            };
            let mut now = 0u64;
            for (i, op) in ops.iter().enumerate() {
                let at = t0 + Duration::from_secs(now);
                let want = m.step(now, op);
                let got = match op {
                    Op::Advance(s) => {
                        now += s;
                        None
                    }
                    Op::Permit => Some(b.permit(at)),
                    Op::Result(ok) => {
                        b.on_result(at, if *ok { Up } else { Down });
                        None
                    }
                    Op::Probe(ok) => {
                        b.on_probe(at, if *ok { Up } else { Down });
                        None
                    }
                    Op::Abandon => {
                        b.probe_abandoned();
                        None
                    }
                    Op::Pause => {
                        b.pause();
                        None
                    }
                    Op::Resume => {
                        b.resume();
                        None
                    }
                };
                prop_assert_eq!(got, want, "op {} {:?}", i, op);
                prop_assert_eq!(b.state(), m.state, "op {} {:?}", i, op);
            }
        }
    }
}
