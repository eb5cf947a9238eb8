//! The default source: NDJSON records on stdin.
//!
//! Each line of stdin is one record; its payload is the line's bytes exactly
//! (without the line ending). Lines are validated first (see
//! [`super::ndjson`]): a bad line is reported with its line number and not
//! appended. Lines are grouped into `dispatch_many` calls of up to 256 and
//! up to 16 groups wait for durability at once, so group commit has work to
//! share. Groups are admitted one after another (`try_dispatch_many`, or a
//! waiting `dispatch_many` when a sink is full), so the log keeps the order
//! of the lines. Reading stops at EOF or on SIGINT/SIGTERM.

use std::sync::Arc;

use outbox::{Record, Result};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::ndjson;
use super::token::{AckToken, Engine};

const GROUP: usize = 256;
const IN_FLIGHT: usize = 16;

/// What the pump did.
#[derive(Default)]
pub struct Stats {
    /// Records appended (durable).
    pub appended: u64,
    /// Lines refused.
    pub rejected: u64,
    /// The error that stopped reading, if any.
    pub error: Option<outbox::Error>,
}

/// Reads stdin until EOF or `stop`, dispatching as it goes.
pub async fn pump(
    outbox: Arc<Engine>,
    max_record: usize,
    stop: impl std::future::Future<Output = ()>,
) -> Stats {
    let mut stats = Stats::default();
    let mut lines = tokio::io::BufReader::with_capacity(1 << 20, tokio::io::stdin());
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut inflight: JoinSet<Result<usize>> = JoinSet::new();
    let mut group: Vec<(Record, Vec<AckToken>)> = Vec::with_capacity(GROUP);
    let mut line_no = 0u64;
    let mut buf = Vec::new();
    tokio::pin!(stop);
    loop {
        buf.clear();
        let read = tokio::select! {
            r = lines.read_until(b'\n', &mut buf) => r,
            _ = &mut stop => {
                tracing::info!("signal received; draining");
                break;
            }
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                stats.error = Some(outbox::Error::Io(e));
                break;
            }
        };
        if n == 0 {
            break;
        }
        line_no += 1;
        match ndjson::check_line(ndjson::trim_eol(&buf), line_no, max_record) {
            Ok(None) => continue,
            Ok(Some(payload)) => group.push((Record::new(payload.to_vec()), Vec::new())),
            Err(e) => {
                stats.rejected += 1;
                eprintln!("outbox: {e}; not appended");
                continue;
            }
        }
        // Send a group when full, or when stdin has nothing more buffered.
        if (group.len() >= GROUP || lines.buffer().is_empty())
            && let Err(e) = send(&outbox, &slots, &mut inflight, &mut group, &mut stats).await
        {
            stats.error = Some(e);
            break;
        }
    }
    if stats.error.is_none()
        && !group.is_empty()
        && let Err(e) = send(&outbox, &slots, &mut inflight, &mut group, &mut stats).await
    {
        stats.error = Some(e);
    }
    while let Some(r) = inflight.join_next().await {
        collect(r, &mut stats);
    }
    stats
}

async fn send(
    outbox: &Arc<Engine>,
    slots: &Arc<Semaphore>,
    inflight: &mut JoinSet<Result<usize>>,
    group: &mut Vec<(Record, Vec<AckToken>)>,
    stats: &mut Stats,
) -> Result<()> {
    while let Some(r) = inflight.try_join_next() {
        collect(r, stats);
    }
    if let Some(e) = stats.error.take() {
        return Err(e);
    }
    let permit = slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| outbox::DispatchErrorKind::ShuttingDown)?;
    let items = std::mem::replace(group, Vec::with_capacity(GROUP));
    let n = items.len();
    // Admitted here, one group after another, so the log keeps the order of
    // the lines; only the wait for durability runs concurrently.
    match outbox.try_dispatch_many(items) {
        Ok(receipts) => {
            inflight.spawn(async move {
                let r = receipts.await.map(|_| n).map_err(outbox::Error::from);
                drop(permit);
                r
            });
        }
        Err(e)
            if matches!(
                e.kind(),
                outbox::DispatchErrorKind::Full { .. } | outbox::DispatchErrorKind::Busy
            ) =>
        {
            // Backpressure: wait for room in line, so no later group can
            // overtake this one.
            let Some(items) = e.into_items() else {
                return Err(outbox::DispatchErrorKind::Busy.into());
            };
            outbox
                .dispatch_many(items)
                .await
                .map_err(outbox::Error::from)?;
            stats.appended += n as u64;
            drop(permit);
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

fn collect(r: std::result::Result<Result<usize>, tokio::task::JoinError>, stats: &mut Stats) {
    match r {
        Ok(Ok(n)) => stats.appended += n as u64,
        Ok(Err(e)) => {
            if stats.error.is_none() {
                stats.error = Some(e);
            }
        }
        Err(e) => {
            if stats.error.is_none() {
                stats.error = Some(
                    outbox::StoreError::Storage(format!("dispatch task failed: {e}").into()).into(),
                );
            }
        }
    }
}
