//! `outbox run`: the daemon. Records come from stdin (the default) or from
//! HTTP ingest, go durably into the log, and out to every sink.
//!
//! Order of startup, so that a mistake costs nothing:
//! 1. the config file is read and merged with the flags, and every value is
//!    checked ([`super::config::resolve`]); errors exit 2 before anything
//!    is opened;
//! 2. the listeners are bound (a port in use fails here, before the data
//!    directory is touched), the sinks are built;
//! 3. the outbox is opened, and each bound address is announced on stderr as
//!    `outbox: ingest listening on http://ADDR` (and `admin`), which is how
//!    tests and scripts find a port 0 listener.
//!
//! 4. systemd hears `READY=1` (when `NOTIFY_SOCKET` is set) and, with
//!    `WATCHDOG_USEC`, `WATCHDOG=1` while the engine answers
//!    ([`super::systemd`]).
//!
//! Shutdown (EOF on stdin, SIGINT or SIGTERM): systemd hears `STOPPING=1`,
//! ingest answers 503 from then on, in-flight requests get up to the drain
//! timeout to finish, then the sinks drain for at most the drain timeout;
//! what is left stays in the log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use outbox::source::jetstream::JetStreamSource;
use outbox::{DispatchErrorKind, Error, Result, StoreError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::LogFormat;
use super::auth::BearerAuth;
use super::config::{self, FileConfig, Overrides, RunPlan};
use super::token::Engine;
use super::{admin, ingest, jetstream, prometheus, sinks, stdin, systemd};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A TOML config file (see docs/configuration.md). Flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The data directory (created with mode 0700 when missing).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A sink: NAME=stdout, NAME=file:PATH or NAME=webhook:URL. Repeat for
    /// more. Replaces a file sink of the same name.
    #[arg(long = "sink", value_name = "NAME=KIND[:ARG]")]
    pub sinks: Vec<String>,
    /// The environment variable holding a webhook sink's signing secret:
    /// NAME=ENVVAR. Give it twice for one sink to sign with both while
    /// rotating (new first). See docs/webhooks.md.
    #[arg(long = "webhook-secret-env", value_name = "NAME=ENVVAR")]
    pub webhook_secret_env: Vec<String>,
    /// Sync policy: always (group commit), full (plus fsync), interval:MS.
    #[arg(long)]
    pub sync: Option<String>,
    /// Seconds to let sinks catch up at EOF or on a signal [default: 30].
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<u64>,
    /// Serve HTTP ingest here instead of reading stdin: HOST:PORT or PORT
    /// (127.0.0.1). Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub ingest_listen: Option<String>,
    /// Serve the admin endpoint (metrics, health, status) here.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Read a JetStream stream instead of stdin:
    /// jetstream:URL/STREAM/CONSUMER (a durable pull consumer, created when
    /// missing). Replaces the file's [source]. See docs/configuration.md.
    #[arg(long, value_name = "jetstream:URL/STREAM/CONSUMER")]
    pub source: Option<String>,
}

/// Reads the file (if any), merges the flags, checks everything.
///
/// # Errors
/// [`outbox::ConfigError::Invalid`] naming the key or flag.
pub fn plan(args: &RunArgs, log_format: Option<LogFormat>) -> Result<RunPlan> {
    let file = match &args.config {
        Some(p) => config::read_file(p)?,
        None => FileConfig::default(),
    };
    let mut specs = args
        .sinks
        .iter()
        .map(|s| sinks::parse(s))
        .collect::<Result<Vec<_>>>()?;
    sinks::apply_secret_envs(&mut specs, &args.webhook_secret_env)?;
    config::resolve(
        file,
        Overrides {
            data_dir: args.data_dir.clone(),
            sinks: specs,
            sync: args.sync.clone(),
            drain_timeout_secs: args.drain_timeout,
            ingest_listen: args.ingest_listen.clone(),
            admin_listen: args.admin_listen.clone(),
            source: args
                .source
                .as_deref()
                .map(config::parse_source_flag)
                .transpose()?,
            log_format,
        },
        &|k| std::env::var(k).ok(),
    )
}

pub fn run(plan: RunPlan) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Io)?;
    rt.block_on(serve(plan))
}

async fn bind(key: &str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("{key} {addr}: cannot bind: {e}"),
        ))
    })
}

fn announce(what: &str, l: &TcpListener) -> Result<SocketAddr> {
    let addr = l.local_addr().map_err(Error::Io)?;
    tracing::info!(%addr, "{what} listening");
    eprintln!("outbox: {what} listening on http://{addr}");
    Ok(addr)
}

async fn serve(plan: RunPlan) -> Result<ExitCode> {
    // Installed before anything is announced: a SIGTERM that arrives as soon
    // as a listener is up must drain, not kill the process.
    let mut signals = Signals::install()?;
    let ingest_l = match &plan.ingest {
        Some(i) => Some(bind("ingest.listen", i.listen.addr).await?),
        None => None,
    };
    let admin_l = match &plan.admin {
        Some(a) => Some(bind("admin.listen", a.addr).await?),
        None => None,
    };
    // Before the data directory is touched: a missing stream is a
    // configuration error (exit 2), an unreachable server exit 1.
    let source = match &plan.source {
        Some(cfg) => {
            let src = JetStreamSource::connect(cfg.clone()).await?;
            warn_on_sizing(&src, &plan.sinks);
            Some(src)
        }
        None => None,
    };
    let handle = match admin_l {
        Some(_) => Some(prometheus::install()?),
        None => None,
    };
    let mut builder = Engine::builder(&plan.data_dir).config(plan.engine.clone());
    let hook = handle
        .as_ref()
        .map(|_| prometheus::PromHook::new(plan.sinks.iter().map(|s| s.name.clone()).collect()));
    if let Some(h) = &hook {
        builder = builder.metrics(h.clone());
    }
    let mut js_sinks = Vec::new();
    for s in &plan.sinks {
        if let sinks::SinkSpec::File(path) = &s.spec {
            create_parent(path)?;
        }
        let built = sinks::build(&s.spec).await?;
        if let Some(stats) = built.jetstream {
            js_sinks.push((s.name.clone(), stats));
        }
        builder = builder.boxed_sink(&s.name, built.sink, s.cfg.clone());
    }
    let (outbox, acks) = builder.open().await?;
    let outbox = Arc::new(outbox);
    let trimmer = spawn_trimmer();
    // Only the JetStream source dispatches with tokens; without it the
    // receiver is dropped and released tokens (there are none) go nowhere.
    let ack_pump = source
        .as_ref()
        .map(|src| jetstream::spawn_ack_pump(acks, src.acker()));
    let js_metrics = (handle.is_some() && (source.is_some() || !js_sinks.is_empty()))
        .then(|| jetstream::spawn_metrics(source.as_ref().map(|s| s.stats()), js_sinks.clone()));

    let admin_stop = CancellationToken::new();
    let admin_task = match (admin_l, handle, hook, &plan.admin) {
        (Some(l), Some(metrics), Some(hook), Some(a)) => {
            announce("admin", &l)?;
            let state = Arc::new(admin::AdminState {
                outbox: outbox.clone(),
                metrics,
                hook,
                auth: a.token.as_ref().map(BearerAuth::new),
            });
            let stop = admin_stop.clone();
            Some(tokio::spawn(async move {
                axum::serve(l, admin::router(state))
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }))
        }
        _ => None,
    };

    let (appended, rejected, source_error) = match (ingest_l, &plan.ingest) {
        _ if source.is_some() => {
            let src = source
                .as_ref()
                .ok_or(Error::from(DispatchErrorKind::ShuttingDown))?;
            let r = src.run(outbox.clone(), signals.wait()).await;
            tracing::info!("jetstream source stopped; draining");
            // Invalid messages are terminated and counted in the summary,
            // not turned into an exit code: a daemon stops with 0.
            let stats = src.stats();
            (
                stats.appended.load(Ordering::Relaxed),
                0,
                Pending::Stdin(r.err()),
            )
        }
        (Some(l), Some(i)) => {
            announce("ingest", &l)?;
            let state = Arc::new(ingest::IngestState {
                outbox: outbox.clone(),
                auth: i.listen.token.as_ref().map(BearerAuth::new),
                max_record: plan.engine.max_record_bytes,
                stopping: AtomicBool::new(false),
                accepted: AtomicU64::new(0),
            });
            let stop = CancellationToken::new();
            let server = {
                let stop = stop.clone();
                let router = ingest::router(state.clone(), i.max_body_bytes);
                tokio::spawn(async move {
                    axum::serve(l, router)
                        .with_graceful_shutdown(async move { stop.cancelled().await })
                        .await
                })
            };
            let service = systemd::Service::ready(&outbox, plan.sinks.len());
            signals.wait().await;
            service.stopping().await;
            tracing::info!("signal received; refusing new records and draining");
            state.stopping.store(true, Ordering::Release);
            stop.cancel();
            // Requests already in the engine finish; one blocked on a full
            // sink is released by the shutdown below with a 503.
            let mut server = server;
            let finished =
                tokio::time::timeout(plan.drain_timeout.min(Duration::from_secs(10)), &mut server)
                    .await;
            let accepted = state.accepted.load(Ordering::Relaxed);
            (
                accepted,
                0,
                Pending::Server(finished.is_err().then_some(server)),
            )
        }
        _ => {
            let service = systemd::Service::ready(&outbox, plan.sinks.len());
            let stats =
                stdin::pump(outbox.clone(), plan.engine.max_record_bytes, signals.wait()).await;
            service.stopping().await;
            (stats.appended, stats.rejected, Pending::Stdin(stats.error))
        }
    };
    // The admin endpoint keeps its handle, to answer status while this
    // drains: the directory is released when the last handle goes.
    let report = Engine::clone(&outbox).shutdown(plan.drain_timeout).await;
    let source_error = match source_error {
        Pending::Server(Some(server)) => {
            let _ = server.await;
            None
        }
        Pending::Server(None) => None,
        Pending::Stdin(e) => e,
    };
    if let (Some(pump), Some(src)) = (ack_pump, &source) {
        // The engine closed the token channel in its shutdown; acks still
        // unconfirmed get a short grace, then are left to redelivery.
        let mut pump = pump;
        let grace = plan.drain_timeout.min(Duration::from_secs(10));
        if tokio::time::timeout(grace, &mut pump).await.is_err() {
            src.acker().stop();
            let _ = pump.await;
        }
    }
    if let Some(t) = js_metrics {
        t.abort();
    }
    trimmer.abort();
    for line in jetstream::summary(source.as_ref().map(|s| s.stats()).as_deref(), &js_sinks) {
        eprintln!("{line}");
    }
    if let Some(src) = source {
        src.close().await;
    }
    admin_stop.cancel();
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    let report = report?;
    eprintln!(
        "outbox: appended {appended} records, rejected {rejected} lines, {}",
        if report.drained {
            "all sinks drained".to_string()
        } else {
            format!(
                "left for the next start: {}",
                report
                    .pending
                    .iter()
                    .map(|(n, c)| format!("{n}={c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    for (sink, why) in &report.corrupt {
        eprintln!("outbox: sink {sink} stopped on damaged data: {why}");
    }
    if let Some(e) = source_error {
        return Err(e);
    }
    if let Some((sink, _)) = report.corrupt.first() {
        // Records are left undelivered: never exit 0 with that.
        return Err(StoreError::Corrupted {
            tree: "log",
            key: format!("(read by sink `{sink}`)"),
            reason: "the sink stopped on damaged data (the range is named above); its records stay in the log; see `outbox check` and `outbox salvage`".into(),
        }
        .into());
    }
    Ok(if rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// How often free heap memory is handed back to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Every [`TRIM_EVERY`], `malloc_trim` on a blocking thread: glibc keeps
/// freed memory in its thread arenas, and with ten webhook sinks and a dead
/// receiver that was 178 MiB of a 300 MiB RSS (docs/performance.md). Each
/// pass costs a walk of the free lists and, later, one page fault per
/// trimmed page that is used again.
fn spawn_trimmer() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let _ = tokio::task::spawn_blocking(super::malloc::trim_glibc_malloc).await;
        }
    })
}

/// `max_ack_pending` above the smallest `block` sink's lag limit lets
/// messages wait inside blocked appends instead of in JetStream (see
/// docs/configuration.md, "Sizing max_ack_pending"). Legal, so a warning.
fn warn_on_sizing(src: &JetStreamSource, sinks: &[config::SinkPlan]) {
    let (_, max_ack_pending) = src.consumer_limits();
    let smallest = sinks
        .iter()
        .filter(|s| s.cfg.on_full == outbox::OnFull::Block)
        .filter_map(|s| s.cfg.max_lag_records.map(|m| (m, &s.name)))
        .min();
    if let Some((lag, name)) = smallest
        && (max_ack_pending < 0 || max_ack_pending as u64 > lag)
    {
        tracing::warn!(
            max_ack_pending,
            sink = %name,
            max_lag_records = lag,
            "the consumer's max_ack_pending is above this block sink's lag limit: messages may wait in blocked appends (see docs/configuration.md, Sizing max_ack_pending)"
        );
    }
}

/// A file sink's directory is created (mode 0700) when missing, like the
/// data directory.
fn create_parent(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("file sink directory {}: {e}", dir.display()),
                ))
            }),
        _ => Ok(()),
    }
}

type ServerTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// What the source leaves for after the engine's shutdown.
enum Pending {
    /// An ingest server still finishing requests.
    Server(Option<ServerTask>),
    /// The stdin pump's error, if any.
    Stdin(Option<Error>),
}

/// SIGINT and SIGTERM, caught from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(Error::Io)?,
            int: signal(SignalKind::interrupt()).map_err(Error::Io)?,
        })
    }

    /// Resolves on the first SIGINT or SIGTERM.
    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
