//! The binary's subcommands.
//!
//! Exit codes (documented in `docs/operations.md`): 0 ok, 1 runtime failure,
//! 2 usage or configuration error, 3 data directory locked or corrupt.

mod dump;
mod run;
mod sinks;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A durable write-ahead delivery engine.
#[derive(Parser, Debug)]
#[command(name = "outbox", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read NDJSON records from stdin, append them durably and deliver them
    /// to every sink. At EOF (or SIGINT/SIGTERM) drain and exit.
    #[command(
        after_help = "Example:\n  printf '{\"a\":1}\\n{\"b\":2}\\n' | outbox run --data-dir ./data --sink out=file:./out.ndjson --sink console=stdout"
    )]
    Run(run::RunArgs),
    /// Print meta, offsets, the log and the DLQ of a stopped outbox.
    #[command(after_help = "Example:\n  outbox dump --data-dir ./data --json")]
    Dump(dump::DumpArgs),
}

/// Exit code for a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Dump(a) => dump::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
