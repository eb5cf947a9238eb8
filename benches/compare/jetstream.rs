//! NATS JetStream beside outbox, against a real `nats-server -js` started
//! here (the tests' helper, `tests/nats`), all through `async-nats`, the
//! client outbox itself uses:
//! - the server's own rates: publish with ack to a file-backed stream, a
//!   pull consumer that acks, and both at once (the peer of
//!   `outbox_1sink`);
//! - outbox between JetStream and a sink: the JetStream source into a
//!   stdout sink, and stdin into a JetStream sink, through the binary.
//!
//! Durability: nats-server 2.9 writes a file-backed stream's messages to
//! its files at once but fsyncs them only every `sync_interval` (2 minutes
//! by default), so a PubAck survives a crash of the server process, not a
//! power loss; outbox's default fsyncs before each receipt.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::PullConsumer};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::daemon::{Daemon, Feed, LINE, Setup, record, until};
use crate::e2e::{DRAIN, timed};
use crate::nats::NatsServer;

/// Publishes awaiting their PubAck at once.
const WINDOW: usize = 256;
/// The pull consumer's `max_ack_pending`: the source's default.
const MAX_ACK_PENDING: i64 = 10_000;

/// Starts `nats-server -js` when it is installed; `None` when not.
pub(crate) fn server() -> Option<NatsServer> {
    crate::nats::binary()?;
    NatsServer::start()
}

async fn context(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.unwrap())
}

/// A fresh file-backed stream `NAME` capturing subject `name`.
async fn stream(js: &jetstream::Context, name: &str) -> jetstream::stream::Stream {
    let _ = js.delete_stream(name).await;
    js.create_stream(jetstream::stream::Config {
        name: name.into(),
        subjects: vec![name.to_lowercase()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn consumer(s: &jetstream::stream::Stream) -> PullConsumer {
    s.create_consumer(jetstream::consumer::pull::Config {
        durable_name: Some("peer".into()),
        ack_policy: AckPolicy::Explicit,
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Publishes records `0..n` to `subject`, [`WINDOW`] PubAcks outstanding.
async fn publish(js: &jetstream::Context, subject: &str, n: u64) {
    let mut acks = VecDeque::with_capacity(WINDOW);
    for i in 0..n {
        let f = js
            .publish(subject.to_string(), record(i).into())
            .await
            .unwrap();
        acks.push_back(f);
        if acks.len() >= WINDOW {
            acks.pop_front().unwrap().await.unwrap();
        }
    }
    for f in acks {
        f.await.unwrap();
    }
}

/// Receives and acks `n` messages, then waits until the server has
/// recorded every ack (the consumer's ack floor).
async fn consume(mut c: PullConsumer, n: u64) {
    let mut msgs = c.messages().await.unwrap();
    for _ in 0..n {
        let m = msgs.next().await.unwrap().unwrap();
        std::hint::black_box(&m.payload);
        m.ack().await.unwrap();
    }
    drop(msgs);
    loop {
        let i = c.info().await.unwrap();
        if i.ack_floor.stream_sequence >= n && i.num_ack_pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The server's publish-and-consume rate: a publisher and a pull consumer
/// at once, from the first publish until every message is acked.
pub(crate) async fn pubsub(url: &str, n: u64, tag: usize) -> Duration {
    let js = context(url).await;
    let name = format!("PEER{tag}");
    let s = stream(&js, &name).await;
    let c = consumer(&s).await;
    let start = Instant::now();
    let subject = name.to_lowercase();
    let producer = tokio::spawn(async move { publish(&js, &subject, n).await });
    consume(c, n).await;
    producer.await.unwrap();
    let took = start.elapsed();
    let _ = context(url).await.delete_stream(&name).await;
    took
}

/// Publish with ack alone.
pub(crate) async fn publish_only(url: &str, n: u64, tag: usize) -> Duration {
    let js = context(url).await;
    let name = format!("PUB{tag}");
    stream(&js, &name).await;
    let start = Instant::now();
    publish(&js, &name.to_lowercase(), n).await;
    let took = start.elapsed();
    let _ = js.delete_stream(&name).await;
    took
}

/// A pull consumer that acks, over `n` messages published beforehand.
pub(crate) async fn consume_only(url: &str, n: u64, tag: usize) -> Duration {
    let js = context(url).await;
    let name = format!("SUB{tag}");
    let s = stream(&js, &name).await;
    publish(&js, &name.to_lowercase(), n).await;
    let c = consumer(&s).await;
    let start = Instant::now();
    consume(c, n).await;
    let took = start.elapsed();
    let _ = js.delete_stream(&name).await;
    took
}

/// `outbox run` with the JetStream source (`ack = "delivered"`) into a
/// stdout sink, over `n` messages published beforehand: from spawn until
/// stdout holds every record and the consumer's ack floor is at `n`.
pub(crate) fn source_run(rt: &tokio::runtime::Runtime, url: &str, n: u64, tag: usize) -> Value {
    let name = format!("SRC{tag}");
    let js = rt.block_on(async {
        let js = context(url).await;
        stream(&js, &name).await;
        publish(&js, &name.to_lowercase(), n).await;
        js
    });
    let s = Setup::new();
    s.write(
        "full",
        DRAIN,
        &format!(
            "[source]\nkind = \"jetstream\"\nurl = {url:?}\nstream = {name:?}\nconsumer = \"outbox\"\n\
             [[sinks]]\nname = \"out\"\nkind = \"stdout\"\n"
        ),
    );
    let start = Instant::now();
    let mut d = Daemon::start(&s, Feed::None);
    let want = n * LINE;
    let mut complete = until(Duration::from_secs(1200), || d.stdout_bytes() >= want);
    complete = complete
        && rt.block_on(async {
            let st = js.get_stream(&name).await.unwrap();
            let mut c: PullConsumer = st.get_consumer("outbox").await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let i = c.info().await.unwrap();
                if i.ack_floor.stream_sequence >= n && i.num_ack_pending == 0 {
                    return true;
                }
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    let took = start.elapsed();
    d.stop();
    let _ = rt.block_on(js.delete_stream(&name));
    let problem = (!complete).then(|| {
        format!(
            "stdout holds {} of {want} bytes, or not every message was acked: {}",
            d.stdout_bytes(),
            d.stderr()
        )
    });
    timed(n, took, problem)
}

/// `outbox run`, `n` records on stdin into a JetStream sink with
/// `ordering = "none"` (64 publishes in flight): from spawn until the
/// daemon has drained and exited, then the stream must hold `n` messages.
pub(crate) fn sink_run(rt: &tokio::runtime::Runtime, url: &str, n: u64, tag: usize) -> Value {
    let name = format!("OUT{tag}");
    let js = rt.block_on(async {
        let js = context(url).await;
        stream(&js, &name).await;
        js
    });
    let s = Setup::new();
    s.write(
        "full",
        DRAIN,
        &format!(
            "[[sinks]]\nname = \"js\"\nkind = \"jetstream\"\nordering = \"none\"\n\
             [sinks.jetstream]\nurl = {url:?}\nsubject = {:?}\n",
            name.to_lowercase()
        ),
    );
    let start = Instant::now();
    let mut d = Daemon::start(&s, Feed::Eof(n));
    let status = d.wait(Duration::from_secs(1200));
    let took = start.elapsed();
    let stored = rt.block_on(async {
        let mut st = js.get_stream(&name).await.unwrap();
        st.info().await.unwrap().state.messages
    });
    let _ = rt.block_on(js.delete_stream(&name));
    let problem = if !status.success() {
        Some(format!("outbox exited with {status}: {}", d.stderr()))
    } else {
        (stored != n).then(|| format!("the stream holds {stored} messages, want {n}"))
    };
    let mut v = timed(n, took, problem);
    v["stream_messages"] = json!(stored);
    v
}
