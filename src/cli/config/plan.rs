//! What `outbox run` runs: the checked plan, and the flags that override
//! the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use outbox::source::jetstream::JetStreamSourceConfig;
use outbox::{OutboxConfig, SinkConfig};

use super::secret::Secret;
use crate::cli::LogFormat;
use crate::cli::sinks::SinkSpec;

/// Default largest ingest request body: 16 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;
/// Default drain timeout, in seconds.
pub const DEFAULT_DRAIN_SECS: u64 = 30;

#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--sink NAME=KIND[:ARG]`, parsed.
    pub sinks: Vec<(String, SinkSpec)>,
    /// `--sync`
    pub sync: Option<String>,
    /// `--drain-timeout`
    pub drain_timeout_secs: Option<u64>,
    /// `--ingest-listen`
    pub ingest_listen: Option<String>,
    /// `--admin-listen`
    pub admin_listen: Option<String>,
    /// `--source jetstream:URL/STREAM/CONSUMER`, parsed.
    pub source: Option<JetStreamSourceConfig>,
    /// `--log-format`
    pub log_format: Option<LogFormat>,
}

/// One sink, ready to build.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkPlan {
    /// Its name.
    pub name: String,
    /// What to build.
    pub spec: SinkSpec,
    /// Delivery settings.
    pub cfg: SinkConfig,
}

/// An HTTP listener's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenPlan {
    /// Where to bind.
    pub addr: SocketAddr,
    /// The bearer token clients must send, if any.
    pub token: Option<Secret>,
}

/// Ingest settings.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestPlan {
    /// Listener.
    pub listen: ListenPlan,
    /// Largest request body.
    pub max_body_bytes: usize,
}

/// Everything `run` needs, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Engine settings.
    pub engine: OutboxConfig,
    /// Sinks, in order.
    pub sinks: Vec<SinkPlan>,
    /// Drain timeout at shutdown.
    pub drain_timeout: Duration,
    /// HTTP ingest; `None` reads stdin (or `source`).
    pub ingest: Option<IngestPlan>,
    /// The JetStream source, when `[source] kind = "jetstream"`.
    pub source: Option<JetStreamSourceConfig>,
    /// Admin endpoint.
    pub admin: Option<ListenPlan>,
    /// Log format.
    pub log_format: LogFormat,
    /// Default log filter when `RUST_LOG` is unset.
    pub log_level: String,
}
