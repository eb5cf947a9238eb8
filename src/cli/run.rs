//! `outbox run`: stdin NDJSON in, sinks out.
//!
//! Each line of stdin is one record; its payload is the line's bytes exactly
//! (without the line ending). Lines are validated as JSON first: a bad line
//! is reported with its line number and not appended. Lines are grouped into
//! `dispatch_many` calls of up to 256 and up to 16 calls are in flight, so
//! group commit has work to share.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use outbox::{Outbox, OutboxConfig, Record, Result, SinkConfig, SyncPolicy};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::sinks;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The data directory (created with mode 0700 when missing).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// A sink: NAME=stdout, NAME=file:PATH or NAME=webhook:URL. Repeat for
    /// more.
    #[arg(long = "sink", value_name = "NAME=KIND[:ARG]")]
    pub sinks: Vec<String>,
    /// The environment variable holding a webhook sink's signing secret:
    /// NAME=ENVVAR. Give it twice for one sink to sign with both while
    /// rotating (new first). See docs/webhooks.md.
    #[arg(long = "webhook-secret-env", value_name = "NAME=ENVVAR")]
    pub webhook_secret_env: Vec<String>,
    /// Sync policy: always (group commit), full (plus fsync), interval:MS.
    #[arg(long, default_value = "always")]
    pub sync: String,
    /// Seconds to let sinks catch up at EOF or on a signal.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub drain_timeout: u64,
}

const GROUP: usize = 256;
const IN_FLIGHT: usize = 16;

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let sync = SyncPolicy::parse(&args.sync)?;
    let mut specs = args
        .sinks
        .iter()
        .map(|s| sinks::parse(s))
        .collect::<Result<Vec<_>>>()?;
    sinks::apply_secret_envs(&mut specs, &args.webhook_secret_env)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(outbox::Error::Io)?;
    rt.block_on(async move {
        let mut builder = Outbox::<()>::builder(&args.data_dir).config(OutboxConfig {
            sync,
            ..OutboxConfig::default()
        });
        for (name, spec) in &specs {
            builder = builder.boxed_sink(name, sinks::build(spec).await?, SinkConfig::default());
        }
        let (outbox, _acks) = builder.open().await?;
        let outbox = Arc::new(outbox);
        let stats = pump(outbox.clone()).await;
        let report = outbox
            .shutdown(Duration::from_secs(args.drain_timeout))
            .await?;
        eprintln!(
            "outbox: appended {} records, rejected {} lines, {}",
            stats.appended,
            stats.rejected,
            if report.drained {
                "all sinks drained".to_string()
            } else {
                format!("left for the next start: {:?}", report.pending)
            }
        );
        if let Some(e) = stats.error {
            return Err(e);
        }
        Ok(if stats.rejected > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

#[derive(Default)]
struct Stats {
    appended: u64,
    rejected: u64,
    error: Option<outbox::Error>,
}

/// Reads stdin until EOF or a signal, dispatching as it goes.
async fn pump(outbox: Arc<Outbox<()>>) -> Stats {
    let mut stats = Stats::default();
    let mut lines = tokio::io::BufReader::with_capacity(1 << 20, tokio::io::stdin());
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut inflight: JoinSet<Result<usize>> = JoinSet::new();
    let mut group: Vec<(Record, Vec<()>)> = Vec::with_capacity(GROUP);
    let mut line_no = 0u64;
    let mut buf = Vec::new();
    let stop = stop_signal();
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
        let line = trim_eol(&buf);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(line) {
            stats.rejected += 1;
            eprintln!("outbox: line {line_no}: not valid JSON ({e}); not appended");
            continue;
        }
        group.push((Record::new(line.to_vec()), Vec::new()));
        // Send a group when full, or when stdin has nothing more buffered.
        if group.len() >= GROUP || lines.buffer().is_empty() {
            if let Err(e) = send(&outbox, &slots, &mut inflight, &mut group, &mut stats).await {
                stats.error = Some(e);
                break;
            }
        }
    }
    if stats.error.is_none() && !group.is_empty() {
        if let Err(e) = send(&outbox, &slots, &mut inflight, &mut group, &mut stats).await {
            stats.error = Some(e);
        }
    }
    while let Some(r) = inflight.join_next().await {
        collect(r, &mut stats);
    }
    stats
}

async fn send(
    outbox: &Arc<Outbox<()>>,
    slots: &Arc<Semaphore>,
    inflight: &mut JoinSet<Result<usize>>,
    group: &mut Vec<(Record, Vec<()>)>,
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
        .map_err(|_| outbox::Error::ShuttingDown)?;
    let items = std::mem::replace(group, Vec::with_capacity(GROUP));
    let outbox = outbox.clone();
    inflight.spawn(async move {
        let n = items.len();
        let r = outbox.dispatch_many(items).await.map(|_| n);
        drop(permit);
        r
    });
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
                stats.error = Some(outbox::Error::Storage(format!("dispatch task failed: {e}")));
            }
        }
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
