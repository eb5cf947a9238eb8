//! The JetStream sink against a real `nats-server -js` (see `tests/nats`).
//!
//! Engine-level: records go through a real outbox (a sled directory) into
//! the sink, and the test reads the target stream back message by message.
#![cfg(feature = "jetstream")]

mod common;
mod nats;

use std::sync::atomic::Ordering;
use std::time::Duration;

use outbox::sink::{JetStreamSink, JetStreamSinkConfig};
use outbox::{Outbox, Record, SinkConfig};

fn fast() -> SinkConfig {
    SinkConfig {
        retry_max: 1000,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(100),
        ..SinkConfig::default()
    }
}

/// Every record lands in the stream once, in log order, under its delivery
/// id; publishing the same ids again is answered `duplicate` and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_each_record_once_with_its_delivery_id() {
    let server = nats_or_skip!();
    let js = nats::js(&server.url()).await;
    nats::stream(&js, "OUT", &["out.>"], Duration::from_secs(600)).await;
    let dir = tempfile::tempdir().unwrap();
    let n = 300u64;

    let sink = JetStreamSink::connect(&JetStreamSinkConfig::new(server.url(), "out.records"))
        .await
        .unwrap();
    let stats = sink.stats();
    let (ob, mut acks) = Outbox::<u64>::builder(dir.path())
        .sink("js", sink, fast())
        .open()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let r = ob
            .dispatch(Record::new(format!("{{\"i\":{i}}}").into_bytes()), vec![i])
            .await
            .unwrap();
        ids.push(r.delivery_id.to_string());
    }
    let mut got = Vec::new();
    while got.len() < n as usize {
        got.push(
            tokio::time::timeout(Duration::from_secs(20), acks.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    got.sort();
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    let stored = nats::read_stream(&js, "OUT").await;
    assert_eq!(stored.len(), n as usize);
    for (i, (seq, id, payload)) in stored.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(id.as_deref(), Some(ids[i].as_str()));
        assert_eq!(payload, format!("{{\"i\":{i}}}").as_bytes());
    }
    assert_eq!(stats.acked.load(Ordering::Relaxed), n);
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 0);
    ob.shutdown(Duration::from_secs(5)).await.unwrap();

    // The same delivery ids published again (as a replay would): the stream
    // keeps one copy of each and every PubAck says duplicate.
    let again = JetStreamSink::connect(&JetStreamSinkConfig::new(server.url(), "out.records"))
        .await
        .unwrap();
    for (i, id) in ids.iter().enumerate().take(50) {
        let rec = Record::new(format!("{{\"i\":{i}}}").into_bytes());
        let id = outbox::DeliveryId::parse(id).unwrap();
        again.publish(&rec, id).await.unwrap();
    }
    assert_eq!(again.stats().duplicates.load(Ordering::Relaxed), 50);
    assert_eq!(nats::read_stream(&js, "OUT").await.len(), n as usize);
}
