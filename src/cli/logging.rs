//! Logs go to stderr through tracing-subscriber: `RUST_LOG` filters (it
//! wins over the configured level), and the format is text or JSON. Colour
//! only on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use super::LogFormat;

/// Installs the global subscriber; `default_level` applies when `RUST_LOG`
/// is unset.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
