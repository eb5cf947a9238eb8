//! The JetStream source in the library, against a real `nats-server -js`
//! (see `tests/nats`): the ack-token lifecycle step by step, with a gated
//! test sink on a real sled directory.
#![cfg(feature = "jetstream")]

mod common;
mod nats;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Behaviour, TestSink, eventually};
use outbox::source::jetstream::{AckMode, JetStreamSource, JetStreamSourceConfig, JsAck};
use outbox::{Outbox, OutboxConfig};
use tokio::sync::oneshot;

async fn publish(js: &async_nats::jetstream::Context, payloads: &[&str]) {
    for p in payloads {
        js.publish("in.x", p.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// (num_pending, num_ack_pending) of consumer `c`.
async fn pending(js: &async_nats::jetstream::Context) -> (u64, usize) {
    let s = js.get_stream("IN").await.unwrap();
    let mut c: async_nats::jetstream::consumer::PullConsumer = s.get_consumer("c").await.unwrap();
    let i = c.info().await.unwrap();
    (i.num_pending, i.num_ack_pending)
}

/// Waits (10 s at most) until consumer `c` has nothing pending or unacked.
async fn all_acked(js: &async_nats::jetstream::Context) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pending(js).await != (0, 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "messages left unacked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Running {
    outbox: Arc<Outbox<JsAck>>,
    source: Arc<JetStreamSource>,
    stop: Option<oneshot::Sender<()>>,
    run: tokio::task::JoinHandle<outbox::Result<()>>,
    pump: tokio::task::JoinHandle<()>,
}

/// Opens an outbox with `sink`, connects the source and runs it, acking
/// every released token.
async fn start(
    dir: &std::path::Path,
    cfg: JetStreamSourceConfig,
    engine: OutboxConfig,
    sink: TestSink,
) -> Running {
    start_with(dir, cfg, engine, sink, common::fast()).await
}

/// [`start`] with the sink's settings.
async fn start_with(
    dir: &std::path::Path,
    cfg: JetStreamSourceConfig,
    engine: OutboxConfig,
    sink: TestSink,
    sink_cfg: outbox::SinkConfig,
) -> Running {
    let source = Arc::new(JetStreamSource::connect(cfg).await.unwrap());
    let (ob, mut acks) = Outbox::<JsAck>::builder(dir)
        .config(engine)
        .sink("t", sink, sink_cfg)
        .open()
        .await
        .unwrap();
    let outbox = Arc::new(ob);
    let acker = source.acker();
    let pump = tokio::spawn(async move {
        while let Some(t) = acks.recv().await {
            let acker = acker.clone();
            tokio::spawn(async move { acker.ack(t).await });
        }
    });
    let (stop, stopped) = oneshot::channel();
    let run = {
        let (source, outbox) = (source.clone(), outbox.clone());
        tokio::spawn(async move {
            source
                .run(outbox, async move {
                    let _ = stopped.await;
                })
                .await
        })
    };
    Running {
        outbox,
        source,
        stop: Some(stop),
        run,
        pump,
    }
}

impl Running {
    async fn finish(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.run.await.unwrap().unwrap();
        Outbox::clone(&self.outbox)
            .shutdown(Duration::from_secs(5))
            .await
            .unwrap();
        let _ = self.pump.await;
        if let Ok(s) = Arc::try_unwrap(self.source) {
            s.close().await;
        }
    }
}

fn config(url: &str) -> JetStreamSourceConfig {
    JetStreamSourceConfig::new(url, "IN", "c")
}

/// A released token whose ack cannot reach the server (SIGSTOPped) is
/// retried and counted, and acked once the server answers again; nothing is
/// acked before the sink has the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_ack_is_retried_and_counted() {
    let server = nats_or_skip!();
    let js = nats::js(&server.url()).await;
    nats::stream(&js, "IN", &["in.>"], Duration::from_secs(120)).await;
    publish(&js, &["{\"n\":0}", "{\"n\":1}", "{\"n\":2}"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (sink, gate) = TestSink::gated(Behaviour::Ok);
    let r = start(
        dir.path(),
        config(&server.url()),
        OutboxConfig::default(),
        sink.clone(),
    )
    .await;
    let stats = r.source.stats();
    let acker = r.source.acker();
    eventually("three messages tracked", || acker.tracked() == 3).await;
    assert_eq!(pending(&js).await, (0, 3));
    assert_eq!(stats.acked.load(Ordering::Relaxed), 0);

    server.pause();
    gate.send(true).unwrap();
    // Each ack waits up to the API timeout (10 s) for the server's answer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stats.ack_retries.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ack retry counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats.acked.load(Ordering::Relaxed), 0);
    server.resume();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stats.acked.load(Ordering::Relaxed) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "acks not confirmed after resume: {}",
            stats.summary()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending(&js).await, (0, 0));
    assert_eq!(
        sink.delivered(),
        [&b"{\"n\":0}"[..], b"{\"n\":1}", b"{\"n\":2}"]
    );
    assert_eq!(acker.tracked(), 0);
    r.finish().await;
}

/// `ack = "accepted"` acks once the record is durable, while the sink is
/// still short of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_mode_acks_once_durable() {
    let server = nats_or_skip!();
    let js = nats::js(&server.url()).await;
    nats::stream(&js, "IN", &["in.>"], Duration::from_secs(120)).await;
    publish(&js, &["1", "2", "3", "4"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (sink, gate) = TestSink::gated(Behaviour::Ok);
    let mut cfg = config(&server.url());
    cfg.ack = AckMode::Accepted;
    let r = start(dir.path(), cfg, OutboxConfig::default(), sink.clone()).await;
    let stats = r.source.stats();
    eventually("four acks", || stats.acked.load(Ordering::Relaxed) == 4).await;
    assert_eq!(pending(&js).await, (0, 0));
    assert!(sink.delivered().is_empty());
    assert_eq!(stats.appended.load(Ordering::Relaxed), 4);
    gate.send(true).unwrap();
    eventually("the sink has all four", || sink.delivered().len() == 4).await;
    r.finish().await;
}

/// Invalid JSON and a record over `max_record_bytes` are terminated and
/// counted; the valid messages around them are delivered in stream order
/// with the subject as a header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_messages_are_terminated_and_counted() {
    let server = nats_or_skip!();
    let js = nats::js(&server.url()).await;
    nats::stream(&js, "IN", &["in.>"], Duration::from_secs(120)).await;
    let big = format!("\"{}\"", "x".repeat(2000));
    publish(&js, &["{\"n\":0}", "{oops", &big, "{\"n\":3}"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (sink, gate) = TestSink::gated(Behaviour::Ok);
    let engine = OutboxConfig {
        max_record_bytes: 1024,
        ..OutboxConfig::default()
    };
    let r = start(dir.path(), config(&server.url()), engine, sink.clone()).await;
    let stats = r.source.stats();
    let acker = r.source.acker();
    eventually("two appended and held, two terminated", || {
        stats.appended.load(Ordering::Relaxed) == 2
            && stats.terminated.load(Ordering::Relaxed) == 2
            && acker.tracked() == 2
    })
    .await;
    // The sink holds them, so the log still has both records.
    let log = r.outbox.read_log(outbox::Seq(0), 10).unwrap();
    let got: Vec<(&[u8], Option<&str>)> = log
        .iter()
        .map(|l| (&l.record.payload[..], l.record.header("nats-subject")))
        .collect();
    assert_eq!(
        got,
        [
            (&b"{\"n\":0}"[..], Some("in.x")),
            (&b"{\"n\":3}"[..], Some("in.x"))
        ]
    );
    assert_eq!(pending(&js).await, (0, 2));
    gate.send(true).unwrap();
    all_acked(&js).await;
    assert_eq!(sink.delivered(), [&b"{\"n\":0}"[..], b"{\"n\":3}"]);
    assert_eq!(stats.received.load(Ordering::Relaxed), 4);
    assert_eq!(stats.acked.load(Ordering::Relaxed), 2);
    r.finish().await;
}

/// Every daemon must derive the same ids: two connections (as two daemons,
/// or one daemon before and after a restart of itself and of the server)
/// see the same stream identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_sees_the_same_stream_identity() {
    let mut server = nats_or_skip!();
    let js = nats::js(&server.url()).await;
    nats::stream(&js, "IN", &["in.>"], Duration::from_secs(120)).await;
    let a = JetStreamSource::connect(config(&server.url()))
        .await
        .unwrap();
    let b = JetStreamSource::connect(config(&server.url()))
        .await
        .unwrap();
    assert_eq!(a.stream(), b.stream());
    assert_eq!(a.stream().delivery_id(7), b.stream().delivery_id(7));
    server.restart();
    let c = JetStreamSource::connect(config(&server.url()))
        .await
        .unwrap();
    assert_eq!(a.stream(), c.stream());
    eprintln!("{:?} -> {}", c.stream(), c.stream().idempotency_key(7));
    // Deleted and created again: another identity, so other keys and ids.
    let js = nats::js(&server.url()).await;
    js.delete_stream("IN").await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    nats::stream(&js, "IN", &["in.>"], Duration::from_secs(120)).await;
    let d = JetStreamSource::connect(config(&server.url()))
        .await
        .unwrap();
    assert_eq!(d.stream().name, "IN");
    assert_ne!(a.stream().created_ns, d.stream().created_ns);
    assert_ne!(a.stream().idempotency_key(7), d.stream().idempotency_key(7));
    for s in [a, b, c, d] {
        s.close().await;
    }
}

/// Under a full Block sink the source waits for room message by message,
/// and the log keeps the stream's order: 2,000 messages go through a sink
/// whose lag limit is 40 while its gate opens and closes, and the sink
/// gets them in stream order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sink_keeps_the_stream_order() {
    let server = nats_or_skip!();
    let js = nats::js(&server.url()).await;
    nats::stream(&js, "IN", &["in.>"], Duration::from_secs(120)).await;
    let n = 2_000u64;
    let mut acks = Vec::new();
    for i in 0..n {
        acks.push(
            js.publish("in.x", format!("{{\"n\":{i}}}").into())
                .await
                .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (sink, gate) = TestSink::gated(Behaviour::Ok);
    let sink_cfg = outbox::SinkConfig {
        max_lag_records: Some(40),
        ..common::fast()
    };
    let r = start_with(
        dir.path(),
        config(&server.url()),
        OutboxConfig::default(),
        sink.clone(),
        sink_cfg,
    )
    .await;
    // The gate opens and closes while the source waits for room.
    let mut open = false;
    while sink.delivered().len() < n as usize {
        tokio::time::sleep(Duration::from_millis(if open { 5 } else { 20 })).await;
        open = !open;
        gate.send(open).unwrap();
    }
    gate.send(true).unwrap();
    let got: Vec<u64> = sink
        .delivered()
        .iter()
        .map(|p| {
            let v: serde_json::Value = serde_json::from_slice(p).unwrap();
            v["n"].as_u64().unwrap()
        })
        .collect();
    let first_wrong = got.iter().zip(0..).position(|(g, i)| *g != i);
    assert_eq!(
        (got.len(), first_wrong),
        (n as usize, None),
        "the stream's order, each once; around the first misplaced: {:?}",
        first_wrong.map(|i| &got[i.saturating_sub(3)..(i + 3).min(got.len())])
    );
    r.finish().await;
    all_acked(&js).await;
}
