//! The worker's delivery behaviour on a real sled directory: ordering,
//! several deliveries in flight and the contiguous watermark, replay of what
//! was in flight, the routing filter, the circuit breaker, the rate limit,
//! operator pause, and idempotent dispatch.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use outbox::sink::{BoxFuture, DeliveryContext, DeliveryError, DeliveryResult, Sink};
use outbox::{
    BreakerConfig, DeliveryId, Ordering, Outbox, RateLimit, Record, Seq, SinkConfig, SinkName,
};
use parking_lot::Mutex;
use tokio::sync::watch;

fn name(s: &str) -> SinkName {
    SinkName::new(s).unwrap()
}

/// A sink that holds each record whose payload is in `held` until released,
/// and fails transiently those in `failing` until they are removed.
#[derive(Clone, Default)]
struct Steered {
    /// (seq, delivery id, payload), in the order deliveries completed.
    done: Arc<Mutex<Vec<(u64, String, String)>>>,
    /// Attempts started, by payload.
    started: Arc<Mutex<Vec<(String, Instant)>>>,
    held: Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>,
    failing: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Steered {
    fn hold(&self, payload: &str) -> watch::Sender<bool> {
        let (tx, rx) = watch::channel(false);
        self.held.lock().insert(payload.to_string(), rx);
        tx
    }

    fn payloads(&self) -> Vec<String> {
        self.done.lock().iter().map(|(_, _, p)| p.clone()).collect()
    }
}

impl Sink for Steered {
    fn deliver<'a>(
        &'a self,
        record: &'a Record,
        ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        let p = String::from_utf8_lossy(&record.payload).into_owned();
        self.started.lock().push((p.clone(), Instant::now()));
        let gate = self.held.lock().get(&p).cloned();
        Box::pin(async move {
            if let Some(mut g) = gate {
                let _ = g.wait_for(|open| *open).await;
            }
            if self.failing.lock().contains(&p) {
                return Err(DeliveryError::transient("steered: down"));
            }
            self.done
                .lock()
                .push((ctx.seq.0, ctx.delivery_id.to_string(), p));
            Ok(())
        })
    }
    fn kind(&self) -> &'static str {
        "steered"
    }
}

fn unordered(n: usize) -> SinkConfig {
    SinkConfig {
        ordering: Ordering::Unordered,
        max_in_flight: Some(n),
        ..fast()
    }
}

async fn committed(ob: &Outbox<u32>) -> u64 {
    ob.status().unwrap().sinks[0].offset
}

#[tokio::test]
async fn unordered_delivery_does_not_wait_for_a_slow_record_but_the_offset_does() {
    let d = dir();
    let sink = Steered::default();
    let slow = sink.hold("r0");
    let (ob, mut acks) = Outbox::<u32>::builder(d.path())
        .sink("web", sink.clone(), unordered(4))
        .open()
        .await
        .unwrap();
    ob.dispatch_many(numbered(4, |i| format!("r{i}")))
        .await
        .unwrap();
    eventually("r1..r3 delivered around r0", || sink.payloads().len() == 3).await;
    assert_eq!(sink.payloads(), ["r1", "r2", "r3"]);
    // The watermark is contiguous: r0 is in flight, so nothing is committed
    // and nothing acked.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(committed(&ob).await, 0);
    assert!(acks.try_recv().is_err(), "no ack before r0 is done");
    slow.send(true).unwrap();
    let mut got = acks_n(&mut acks, 4).await;
    got.sort();
    assert_eq!(got, vec![0, 1, 2, 3]);
    assert_eq!(committed(&ob).await, 4);
    assert_eq!(sink.payloads(), ["r1", "r2", "r3", "r0"]);
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// An outbox with one sink `name` that retries (almost) without end.
async fn open_retrying(path: &std::path::Path, name: &str, sink: impl Sink) -> Outbox<u32> {
    let cfg = SinkConfig {
        retry_max: 1000,
        ..fast()
    };
    let (ob, _acks) = Outbox::<u32>::builder(path)
        .sink(name, sink, cfg)
        .open()
        .await
        .unwrap();
    ob
}

#[tokio::test]
async fn strict_delivers_in_order_even_with_retries() {
    let d = dir();
    let sink = Steered::default();
    sink.failing.lock().insert("r3".into());
    let ob = open_retrying(d.path(), "web", sink.clone()).await;
    ob.dispatch_many(
        (0..10u32)
            .map(|i| (rec(&format!("r{i}")), vec![]))
            .collect(),
    )
    .await
    .unwrap();
    eventually("r3 retried", || {
        sink.started
            .lock()
            .iter()
            .filter(|(p, _)| p == "r3")
            .count()
            >= 3
    })
    .await;
    assert_eq!(sink.payloads(), ["r0", "r1", "r2"], "nothing passes r3");
    sink.failing.lock().clear();
    eventually("all delivered", || sink.payloads().len() == 10).await;
    let want: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    assert_eq!(sink.payloads(), want);
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_restart_with_deliveries_in_flight_delivers_everything_above_the_watermark_again() {
    let d = dir();
    let sink = Steered::default();
    let held = sink.hold("r2");
    let (ob, _acks) = Outbox::<u32>::builder(d.path())
        .sink("web", sink.clone(), unordered(8))
        .open()
        .await
        .unwrap();
    let receipts = ob
        .dispatch_many((0..8u32).map(|i| (rec(&format!("r{i}")), vec![])).collect())
        .await
        .unwrap();
    eventually("all but r2 delivered", || sink.payloads().len() == 7).await;
    eventually("r0, r1 committed", || {
        ob.status().unwrap().sinks[0].offset == 2
    })
    .await;
    // Stop without a drain: r2 is still in flight.
    ob.shutdown(Duration::ZERO).await.unwrap();
    drop(held);

    let again = Steered::default();
    let (ob, _acks) = Outbox::<u32>::builder(d.path())
        .sink("web", again.clone(), unordered(8))
        .open()
        .await
        .unwrap();
    eventually("replayed", || again.payloads().len() == 6).await;
    let mut got: Vec<(u64, String, String)> = again.done.lock().clone();
    got.sort();
    let want: Vec<(u64, String, String)> = receipts[2..]
        .iter()
        .map(|r| (r.seq.0, r.delivery_id.to_string(), format!("r{}", r.seq.0)))
        .collect();
    assert_eq!(got, want, "r2..r7, the same seqs and ids");
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_filtered_out_record_is_passed_and_counted() {
    let d = dir();
    let alerts = Steered::default();
    let all = Steered::default();
    let spec: outbox::filter::FilterSpec = toml::from_str(
        r#"
        [headers]
        event-type = ["alert.*"]
        "#,
    )
    .unwrap();
    let (ob, mut acks) = Outbox::<u32>::builder(d.path())
        .sink(
            "alerts",
            alerts.clone(),
            SinkConfig {
                filter: Some(spec),
                ..fast()
            },
        )
        .sink("all", all.clone(), fast())
        .open()
        .await
        .unwrap();
    let kinds = ["alert.disk", "metric.cpu", "alert.net", "log.line"];
    for (i, k) in kinds.iter().enumerate() {
        ob.dispatch(
            rec(&format!("r{i}")).with_header("event-type", *k),
            vec![i as u32],
        )
        .await
        .unwrap();
    }
    let mut got = acks_n(&mut acks, 4).await;
    got.sort();
    assert_eq!(
        got,
        vec![0, 1, 2, 3],
        "a filtered record is acked once the others have it"
    );
    assert_eq!(alerts.payloads(), ["r0", "r2"]);
    assert_eq!(all.payloads(), ["r0", "r1", "r2", "r3"]);
    let st = ob.status().unwrap();
    assert_eq!((st.sinks[0].filtered, st.sinks[0].offset), (2, 4));
    assert_eq!(st.sinks[0].filter.as_deref(), Some("event-type=alert.*"));
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn an_open_breaker_keeps_records_out_of_the_dlq_and_probes_until_the_endpoint_is_back() {
    let d = dir();
    let sink = Steered::default();
    for i in 0..5 {
        sink.failing.lock().insert(format!("r{i}"));
    }
    let cfg = SinkConfig {
        retry_max: 2,
        breaker: Some(BreakerConfig {
            consecutive_failures: Some(3),
            failure_ratio: None,
            probe_interval: Duration::from_millis(200),
        }),
        ..fast()
    };
    let (ob, _acks) = Outbox::<u32>::builder(d.path())
        .sink("web", sink.clone(), cfg)
        .open()
        .await
        .unwrap();
    ob.dispatch_many((0..5u32).map(|i| (rec(&format!("r{i}")), vec![])).collect())
        .await
        .unwrap();
    eventually("breaker open", || {
        ob.status().unwrap().sinks[0].state != "ok"
    })
    .await;
    // Down for a while: probes every 200 ms, and nothing is dead-lettered although
    // retry_max (2) is long passed.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let st = ob.status().unwrap();
    assert_eq!(st.sinks[0].dlq, 0, "{st:?}");
    assert!(
        matches!(st.sinks[0].state.as_str(), "open" | "half_open"),
        "{st:?}"
    );
    let attempts = sink.started.lock().len();
    assert!(
        (5..=12).contains(&attempts),
        "3 to trip, then one probe per 200 ms: {attempts}"
    );
    // The endpoint is back: the next probe closes the breaker, all go out.
    sink.failing.lock().clear();
    eventually("delivered", || sink.payloads().len() == 5).await;
    assert_eq!(sink.payloads(), ["r0", "r1", "r2", "r3", "r4"]);
    let st = ob.status().unwrap();
    assert_eq!((st.sinks[0].state.as_str(), st.sinks[0].dlq), ("ok", 0));
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn an_operator_pause_holds_every_record_until_resume() {
    let d = dir();
    let sink = Steered::default();
    let (ob, mut acks) = Outbox::<u32>::builder(d.path())
        .sink("web", sink.clone(), fast())
        .open()
        .await
        .unwrap();
    ob.pause_sink(&name("web")).await.unwrap();
    ob.dispatch_many(numbered(3, |i| format!("r{i}")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.started.lock().is_empty());
    let st = ob.status().unwrap();
    assert_eq!((st.sinks[0].state.as_str(), st.sinks[0].lag), ("paused", 3));
    assert!(matches!(
        ob.pause_sink(&name("nope")).await,
        Err(outbox::Error::Config(outbox::ConfigError::UnknownSink(_)))
    ));
    ob.resume_sink(&name("web")).await.unwrap();
    let mut got = acks_n(&mut acks, 3).await;
    got.sort();
    assert_eq!(got, vec![0, 1, 2]);
    assert_eq!(sink.payloads(), ["r0", "r1", "r2"]);
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn the_rate_limit_spaces_attempts() {
    let d = dir();
    let sink = Steered::default();
    let cfg = SinkConfig {
        rate_limit: Some(RateLimit {
            per_second: 20,
            burst: 5,
        }),
        ..unordered(16)
    };
    let (ob, _acks) = Outbox::<u32>::builder(d.path())
        .sink("web", sink.clone(), cfg)
        .open()
        .await
        .unwrap();
    let t0 = Instant::now();
    ob.dispatch_many(
        (0..25u32)
            .map(|i| (rec(&format!("r{i}")), vec![]))
            .collect(),
    )
    .await
    .unwrap();
    eventually("delivered", || sink.payloads().len() == 25).await;
    let took = t0.elapsed();
    // A burst of 5, then 20 more at 20/s: at least 1 s (the 25th token is
    // due at 1.0 s), and well under what a stall would take.
    assert!(took >= Duration::from_millis(950), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let starts: Vec<Instant> = sink.started.lock().iter().map(|(_, t)| *t).collect();
    let after_burst = starts[24].duration_since(starts[5]);
    assert!(
        after_burst >= Duration::from_millis(900),
        "19 tokens at 20/s: {after_burst:?}"
    );
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn dispatch_once_appends_a_key_once_and_holds_the_retry_s_tokens_against_the_first() {
    let d = dir();
    let sink = Steered::default();
    let held = sink.hold("a");
    let (ob, mut acks) = Outbox::<u32>::builder(d.path())
        .sink("web", sink.clone(), fast())
        .open()
        .await
        .unwrap();
    let first = ob
        .dispatch_once("req-1", vec![(rec("a"), vec![1])])
        .await
        .unwrap();
    assert!(!first.duplicate);
    let again = ob
        .dispatch_once("req-1", vec![(rec("a"), vec![2])])
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        again.receipts, first.receipts,
        "the first dispatch's receipts"
    );
    assert_eq!(ob.status().unwrap().head, 1, "nothing appended");
    let e = ob
        .dispatch_once("req-1", vec![(rec("b"), vec![3])])
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), outbox::DispatchErrorKind::KeyReused(_)),
        "{e}"
    );
    let back = e
        .into_items()
        .expect("nothing appended: the items come back");
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].0.payload, b"b");
    assert_eq!(back[0].1, vec![3], "the token comes back, not released");
    held.send(true).unwrap();
    let mut got = acks_n(&mut acks, 2).await;
    got.sort();
    assert_eq!(got, vec![1, 2], "both tokens, once the record is delivered");
    // Once delivered, a retry's token is released at once.
    let late = ob
        .dispatch_once("req-1", vec![(rec("a"), vec![4])])
        .await
        .unwrap();
    assert!(late.duplicate);
    assert_eq!(acks_n(&mut acks, 1).await, vec![4]);
    assert_eq!(sink.payloads(), ["a"]);
    ob.shutdown(Duration::from_secs(5)).await.unwrap();

    // The key is durable with its record: a reopened outbox knows it.
    let (ob, _acks) = Outbox::<u32>::builder(d.path())
        .sink("web", Steered::default(), fast())
        .open()
        .await
        .unwrap();
    let after = ob
        .dispatch_once("req-1", vec![(rec("a"), vec![])])
        .await
        .unwrap();
    assert!(after.duplicate);
    assert_eq!(after.receipts, first.receipts);
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_given_delivery_id_is_kept_through_delivery_and_redrive() {
    let d = dir();
    let sink = Steered::default();
    sink.failing.lock().insert("m".into());
    let given = DeliveryId {
        log_id: uuid::Uuid::from_u128(0x5eed),
        seq: Seq(424242),
    };
    let (ob, _acks) = Outbox::<u32>::builder(d.path())
        .sink(
            "web",
            sink.clone(),
            SinkConfig {
                retry_max: 0,
                ..fast()
            },
        )
        .open()
        .await
        .unwrap();
    let r = ob
        .dispatch(rec("m").with_delivery_id(given), vec![])
        .await
        .unwrap();
    assert_eq!(r.delivery_id, given);
    eventually("dead-lettered", || ob.status().unwrap().sinks[0].dlq == 1).await;
    let dead_lettered = ob.dlq_list(None).unwrap();
    assert_eq!(dead_lettered[0].delivery_id, given);
    sink.failing.lock().clear();
    assert_eq!(ob.dlq_redrive(&name("web"), None).await.unwrap(), 1);
    eventually("redriven", || sink.payloads().len() == 1).await;
    let done = sink.done.lock().clone();
    assert_eq!(done[0].1, given.to_string());
    assert!(done[0].0 > r.seq.0, "a new seq, the same id");
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Fails every attempt permanently, each once `gate` opens.
#[derive(Clone)]
struct Refusing {
    gate: watch::Receiver<bool>,
    attempts: Arc<Mutex<u32>>,
}

impl Sink for Refusing {
    fn deliver<'a>(
        &'a self,
        _record: &'a Record,
        _ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        *self.attempts.lock() += 1;
        let mut gate = self.gate.clone();
        Box::pin(async move {
            let _ = gate.wait_for(|open| *open).await;
            Err(DeliveryError::permanent("refusing: 400"))
        })
    }
    fn kind(&self) -> &'static str {
        "refusing"
    }
}

#[tokio::test]
async fn a_pause_dead_letters_nothing_even_an_attempt_that_was_out_when_it_landed() {
    let d = dir();
    let (open, gate) = watch::channel(false);
    let sink = Refusing {
        gate,
        attempts: Arc::default(),
    };
    let (ob, _acks) = Outbox::<u32>::builder(d.path())
        .sink("web", sink.clone(), fast())
        .open()
        .await
        .unwrap();
    let r = ob.dispatch(rec("r0"), vec![0]).await.unwrap();
    eventually("the attempt is out", || *sink.attempts.lock() == 1).await;
    assert!(ob.pause_sink(&name("web")).await.unwrap() > 0);
    open.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = ob.status().unwrap();
    assert_eq!(
        (st.sinks[0].state.as_str(), st.sinks[0].lag, st.sinks[0].dlq),
        ("paused", 1, 0),
        "refused while paused: not dead-lettered"
    );
    assert_eq!(*sink.attempts.lock(), 1);
    assert!(ob.resume_sink(&name("web")).await.unwrap());
    assert!(
        !ob.resume_sink(&name("web")).await.unwrap(),
        "not paused now"
    );
    eventually("dead-lettered after the resume", || {
        ob.status().unwrap().sinks[0].dlq == 1
    })
    .await;
    let dlq = ob.dlq_list(None).unwrap();
    assert_eq!((dlq[0].seq, dlq[0].attempts), (r.seq, 2));
    assert_eq!(*sink.attempts.lock(), 2);
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Records what the engine reports per sink.
#[derive(Default)]
struct Signals {
    acked: Mutex<HashMap<String, u64>>,
    oldest: Mutex<Vec<(String, Option<std::time::SystemTime>)>>,
}

impl outbox::MetricsHook for Signals {
    fn sink_acked(&self, sink: &str, n: u64) {
        *self.acked.lock().entry(sink.to_string()).or_default() += n;
    }
    fn oldest_pending(&self, sink: &str, at: Option<std::time::SystemTime>) {
        self.oldest.lock().push((sink.to_string(), at));
    }
}

impl Signals {
    fn acked(&self, sink: &str) -> u64 {
        self.acked.lock().get(sink).copied().unwrap_or(0)
    }
    fn last_oldest(&self, sink: &str) -> Option<Option<std::time::SystemTime>> {
        self.oldest
            .lock()
            .iter()
            .rev()
            .find(|(s, _)| s == sink)
            .map(|(_, at)| *at)
    }
}

#[tokio::test]
async fn the_engine_reports_each_sink_s_acked_count_and_oldest_pending_record() {
    let d = dir();
    let signals = Arc::new(Signals::default());
    let (a, b) = (Steered::default(), Steered::default());
    let (ob, mut acks) = Outbox::<u32>::builder(d.path())
        .sink("a", a.clone(), fast())
        .sink("b", b.clone(), fast())
        .metrics(signals.clone())
        .open()
        .await
        .unwrap();
    assert_eq!(signals.last_oldest("a"), Some(None), "reported at open");
    assert_eq!(signals.last_oldest("b"), Some(None));
    ob.pause_sink(&name("b")).await.unwrap();
    let before = std::time::SystemTime::now() - Duration::from_millis(1);
    ob.dispatch_many(numbered(3, |i| format!("r{i}")))
        .await
        .unwrap();
    let after = std::time::SystemTime::now();
    eventually("a passes all three", || signals.acked("a") == 3).await;
    eventually("a caught up", || signals.last_oldest("a") == Some(None)).await;
    assert_eq!(signals.acked("b"), 0);
    let held = signals
        .last_oldest("b")
        .flatten()
        .expect("b has a pending record");
    assert!(
        before <= held && held <= after,
        "{before:?} <= {held:?} <= {after:?}"
    );
    let st = ob.status().unwrap();
    let ms = held
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(st.sinks[1].oldest_pending_ms, Some(ms));
    assert_eq!(st.sinks[0].oldest_pending_ms, None);
    assert!(st.sinks[1].paused_at_ms.is_some());

    ob.resume_sink(&name("b")).await.unwrap();
    let mut got = acks_n(&mut acks, 3).await;
    got.sort();
    assert_eq!(got, vec![0, 1, 2]);
    eventually("b passes all three", || signals.acked("b") == 3).await;
    assert_eq!(signals.last_oldest("b"), Some(None));
    assert_eq!(b.payloads(), ["r0", "r1", "r2"]);
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// One delivery a [`Buffered`] sink made: seq, delivery id, payload, and
/// the path it came by ("now" or "later").
type Made = (u64, String, String, &'static str);

/// A sink that buffers, so it delivers through `deliver_now`: a payload in
/// `failing` fails at once (transiently), one in `panics` panics once; both
/// are then retried through `deliver`, which records its path as "later".
#[derive(Clone, Default)]
struct Buffered {
    /// In the order delivered.
    done: Arc<Mutex<Vec<Made>>>,
    failing: Arc<Mutex<std::collections::HashSet<String>>>,
    panics: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Calls of `deliver_now` and `deliver`, by payload.
    calls: Arc<Mutex<Vec<(String, &'static str)>>>,
}

impl Buffered {
    fn take(
        &self,
        record: &Record,
        ctx: &DeliveryContext<'_>,
        path: &'static str,
    ) -> DeliveryResult {
        let p = String::from_utf8_lossy(&record.payload).into_owned();
        self.calls.lock().push((p.clone(), path));
        if self.panics.lock().remove(&p) {
            panic!("buffered: {p} panics once");
        }
        if self.failing.lock().contains(&p) {
            return Err(DeliveryError::transient("buffered: not now"));
        }
        self.done
            .lock()
            .push((ctx.seq.0, ctx.delivery_id.to_string(), p, path));
        Ok(())
    }
}

impl Sink for Buffered {
    fn deliver<'a>(
        &'a self,
        record: &'a Record,
        ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        Box::pin(async move { self.take(record, ctx, "later") })
    }
    fn deliver_now(&self, record: &Record, ctx: &DeliveryContext<'_>) -> Option<DeliveryResult> {
        Some(self.take(record, ctx, "now"))
    }
    fn kind(&self) -> &'static str {
        "buffered"
    }
}

/// `deliver_now` carries every first attempt while the breaker is closed; a
/// failure or a panic there is an attempt like any other: the record is
/// retried through `deliver`, in order, with its id, and counted.
#[tokio::test]
async fn a_failed_or_panicking_delivery_made_at_once_is_retried_in_order() {
    let d = dir();
    let sink = Buffered::default();
    sink.failing.lock().insert("r3".into());
    sink.panics.lock().insert("r5".into());
    let ob = open_retrying(d.path(), "buf", sink.clone()).await;
    let log = ob.log_id();
    ob.dispatch_many((0..8u32).map(|i| (rec(&format!("r{i}")), vec![])).collect())
        .await
        .unwrap();
    eventually("r3 retried through deliver", || {
        sink.calls
            .lock()
            .iter()
            .filter(|(p, path)| p == "r3" && *path == "later")
            .count()
            >= 2
    })
    .await;
    let payloads = |s: &Buffered| -> Vec<String> {
        s.done.lock().iter().map(|(_, _, p, _)| p.clone()).collect()
    };
    assert_eq!(payloads(&sink), ["r0", "r1", "r2"], "nothing passes r3");
    sink.failing.lock().clear();
    eventually("all delivered", || sink.done.lock().len() == 8).await;
    let done = sink.done.lock().clone();
    for (i, (seq, id, p, path)) in done.iter().enumerate() {
        assert_eq!(*seq, i as u64);
        assert_eq!(*p, format!("r{i}"));
        assert_eq!(*id, format!("msg_{}_{i}", log.simple()));
        // r3 failed at once and r5 panicked at once: both finished in the
        // retry loop; r4, r6 and r7 were delivered at once after r3.
        let want = if i == 3 || i == 5 { "later" } else { "now" };
        assert_eq!(*path, want, "{p}");
    }
    let first_calls: Vec<_> = ["r3", "r5"]
        .iter()
        .map(|p| sink.calls.lock().iter().find(|(q, _)| q == p).unwrap().1)
        .collect();
    assert_eq!(first_calls, ["now", "now"]);
    let st = ob.status().unwrap();
    assert!(st.sinks[0].retries >= 3, "{:?}", st.sinks[0]);
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}
