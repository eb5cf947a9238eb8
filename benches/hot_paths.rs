//! Criterion benches of the hot paths: the codec, append with group commit,
//! the worker loop with a no-op sink, and the ack watermark.
//!
//! ```text
//! cargo bench --bench hot_paths
//! ```

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use outbox::__bench::{self as codec, AckTracker, BatchHeader, LogEntry};
use outbox::{Outbox, Record, Seq, SinkConfig};

#[path = "../tests/common/sinks.rs"]
mod sinks;
use sinks::{Decided, Noop, Stuck};

const PAYLOAD: usize = 256;

fn entries(n: usize) -> Vec<LogEntry> {
    (0..n)
        .map(|i| LogEntry::new(Record::new(vec![(i % 251) as u8; PAYLOAD])))
        .collect()
}

fn header(e: &[LogEntry]) -> BatchHeader {
    BatchHeader::records(e, 1)
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let e = entries(256);
    let h = header(&e);
    let value = codec::encode_batch(Seq(0), h, &e).unwrap();
    let key = codec::log_key(Seq(0));
    g.throughput(Throughput::Elements(256));
    g.bench_function("encode_batch_256", |b| {
        b.iter(|| codec::encode_batch(Seq(0), h, std::hint::black_box(&e)).unwrap())
    });
    g.bench_function("decode_batch_256", |b| {
        b.iter(|| codec::decode_batch(&key, std::hint::black_box(&value)).unwrap())
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_batch_header", |b| {
        b.iter(|| codec::decode_batch_header(&key, std::hint::black_box(&value)).unwrap())
    });
    g.finish();
}

fn ack(c: &mut Criterion) {
    let mut g = c.benchmark_group("ack");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("register_then_release_10k_2_sinks", |b| {
        b.iter_batched(
            || AckTracker::<u64>::new(vec![0, 0]),
            |mut t| {
                for s in 0..10_000u64 {
                    t.register(Seq(s), vec![s]);
                }
                let mut n = 0;
                for o in (256..=10_240u64).step_by(256) {
                    n += t.commit(0, o).len();
                    n += t.commit(1, o).len();
                }
                assert_eq!(n, 10_000);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Append with group commit: 8 tasks each dispatching 128-record requests,
/// no sinks, until 16k records are durable.
fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ob, _acks) = rt
        .block_on(Outbox::<()>::builder(dir.path()).open())
        .unwrap();
    let ob = Arc::new(ob);
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(16 * 1024));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("group_commit_16k", |b| {
        b.to_async(&rt).iter(|| {
            let ob = ob.clone();
            async move {
                let mut tasks = Vec::new();
                for _ in 0..8 {
                    let ob = ob.clone();
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..16 {
                            let items = (0..128)
                                .map(|_| (Record::new(vec![7u8; PAYLOAD]), vec![]))
                                .collect();
                            ob.dispatch_many(items).await.unwrap();
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            }
        })
    });
    g.finish();
    rt.block_on(outbox::Outbox::clone(&ob).shutdown(Duration::from_secs(5)))
        .unwrap();
}

/// The worker loop: 16k records already in the log, one no-op sink
/// replays them from the start to the last ack.
fn worker(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("worker");
    g.throughput(Throughput::Elements(16 * 1024));
    g.sample_size(10);
    g.bench_function("replay_16k_noop_sink", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                rt.block_on(async {
                    let (ob, _a) = Outbox::<u64>::builder(dir.path())
                        .sink("s", Stuck, SinkConfig::default())
                        .open()
                        .await
                        .unwrap();
                    for k in 0..128u64 {
                        let items = (0..128u64)
                            .map(|i| (Record::new(vec![7u8; PAYLOAD]), vec![k * 128 + i]))
                            .collect();
                        ob.dispatch_many(items).await.unwrap();
                    }
                    // Undrained: everything stays pending for the replay.
                    ob.shutdown(Duration::ZERO).await.unwrap();
                });
                dir
            },
            |dir| {
                rt.block_on(async {
                    let (ob, _acks) = Outbox::<u64>::builder(dir.path())
                        .sink("s", Decided(Noop), SinkConfig::default())
                        .open()
                        .await
                        .unwrap();
                    // Replay from offset 0, measured by the committed offset.
                    loop {
                        let st = ob.status().unwrap();
                        if st.sinks[0].offset >= 16 * 1024 {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    ob.shutdown(Duration::ZERO).await.unwrap();
                });
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, codec, ack, append, worker);
criterion_main!(benches);
