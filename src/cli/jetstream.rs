//! The daemon's side of the JetStream source and sinks: the task that acks
//! released tokens, the copy of their counters into `/metrics`, and the
//! exit summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use outbox::sink::JetStreamSinkStats;
use outbox::source::jetstream::SourceStats;
use outbox::source::jetstream::ack::Acker;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::token::AckToken;

/// Acks confirmed at once, at most: each waits for the server's answer.
const ACKS_IN_FLIGHT: usize = 256;

/// Acks every released token until the engine closes the channel (after
/// its shutdown), then waits for the acks still in flight.
pub fn spawn_ack_pump(
    mut acks: mpsc::UnboundedReceiver<AckToken>,
    acker: Arc<Acker>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(ACKS_IN_FLIGHT));
        let mut running = JoinSet::new();
        while let Some(token) = acks.recv().await {
            let AckToken::JetStream(token) = token;
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let acker = acker.clone();
            running.spawn(async move {
                acker.ack(token).await;
                drop(permit);
            });
            while running.try_join_next().is_some() {}
        }
        while running.join_next().await.is_some() {}
    })
}

/// Copies the counters into the Prometheus recorder every second (only
/// when `/metrics` is served).
pub fn spawn_metrics(
    source: Option<Arc<SourceStats>>,
    sinks: Vec<(String, Arc<JetStreamSinkStats>)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        loop {
            if let Some(s) = &source {
                for (event, v) in [
                    ("received", g(&s.received)),
                    ("appended", g(&s.appended)),
                    ("duplicate", g(&s.duplicates)),
                    ("terminated", g(&s.terminated)),
                    ("nakked", g(&s.nakked)),
                    ("acked", g(&s.acked)),
                    ("ack_retry", g(&s.ack_retries)),
                    ("ack_abandoned", g(&s.ack_abandoned)),
                    ("progress", g(&s.progress)),
                ] {
                    metrics::counter!("outbox_jetstream_source_total", "event" => event)
                        .absolute(v);
                }
            }
            for (name, s) in &sinks {
                for (event, v) in [
                    ("acked", g(&s.acked)),
                    ("duplicate", g(&s.duplicates)),
                    ("failed", g(&s.failed)),
                ] {
                    metrics::counter!("outbox_jetstream_publish_total", "sink" => name.clone(), "event" => event)
                        .absolute(v);
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// The exit summary lines of the JetStream parts.
pub fn summary(
    source: Option<&SourceStats>,
    sinks: &[(String, Arc<JetStreamSinkStats>)],
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(s) = source {
        out.push(format!("outbox: jetstream source: {}", s.summary()));
    }
    for (name, s) in sinks {
        out.push(format!(
            "outbox: jetstream sink {name}: acked={} duplicates={} failed={}",
            s.acked.load(Ordering::Relaxed),
            s.duplicates.load(Ordering::Relaxed),
            s.failed.load(Ordering::Relaxed)
        ));
    }
    out
}
