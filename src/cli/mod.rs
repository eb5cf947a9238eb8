//! The binary's subcommands, one per file, plus the pieces they share.
//!
//! Exit codes (documented in `docs/operations.md`): 0 ok, 1 runtime
//! failure, 2 usage or configuration error, 3 data directory locked or
//! corrupt (and `check` finding a problem), 4 `salvage` made a verified
//! copy but could not recover everything (what is gone is listed).

mod admin;
mod auth;
mod check;
mod client;
mod clock;
mod compact;
mod config;
mod dlq;
mod dump;
mod exit;
mod ingest;
mod jetstream;
mod logging;
pub mod malloc;
mod membership;
mod ndjson;
mod pause;
mod prometheus;
mod run;
mod salvage;
mod sinks;
mod status;
mod stdin;
mod systemd;
mod token;
mod view;

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use outbox::inspect::{Admin, Inspector};
use outbox::{Error, Result, StoreError};

/// A durable write-ahead delivery engine.
#[derive(Parser, Debug)]
#[command(name = "outbox", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr [default: text, or log.format from --config].
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
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
    /// Append records durably and deliver them to every sink. Records come
    /// from stdin (NDJSON) unless HTTP ingest or a JetStream source is
    /// configured. At EOF (or SIGINT/SIGTERM) drain and exit.
    #[command(
        after_help = "Example:\n  outbox run --config examples/outbox.toml < examples/records.ndjson\n  printf '{\"a\":1}\\n' | outbox run --data-dir ./data --sink out=file:./out.ndjson --sink console=stdout"
    )]
    Run(run::RunArgs),
    /// Print meta, offsets, the log and the DLQ of a stopped outbox (or,
    /// with --admin, what a running daemon can show).
    #[command(
        after_help = "Example:\n  outbox dump --data-dir ./data --tree log --from 100 --limit 10 --format ndjson\n  outbox dump --admin http://127.0.0.1:9090 --tree dlq"
    )]
    Dump(dump::DumpArgs),
    /// One row per sink: committed offset, head, lag, DLQ count, orphaned.
    #[command(
        after_help = "Example:\n  outbox status --data-dir ./data\n  outbox status --admin http://127.0.0.1:9090 --json"
    )]
    Status(status::StatusArgs),
    /// List, show, redrive or purge a sink's DLQ entries.
    #[command(
        subcommand,
        after_help = "Example:\n  outbox dlq list --data-dir ./data --sink web --since 2h --error-match timeout\n  outbox dlq show --data-dir ./data --sink web 17\n  outbox dlq redrive --data-dir ./data --sink web --all --dry-run"
    )]
    Dlq(dlq::DlqCommand),
    /// Verify every value of a stopped outbox; exit 0 only when all is well.
    #[command(after_help = "Example:\n  outbox check --data-dir ./data")]
    Check(check::CheckArgs),
    /// Rewrite a stopped outbox into a fresh, smaller directory and verify it.
    #[command(after_help = "Example:\n  outbox compact --data-dir ./data --out ./data.compact")]
    Compact(compact::CompactArgs),
    /// Copy what can still be read of a damaged, stopped outbox into a
    /// fresh directory; list exactly what could not be recovered (exit 4
    /// when something could not).
    #[command(after_help = "Example:\n  outbox salvage --data-dir ./data --out ./data.salvaged")]
    Salvage(salvage::SalvageArgs),
    /// Manage sinks: pause or resume one, forget an orphan so its backlog
    /// can go.
    #[command(
        subcommand,
        after_help = "Example:\n  outbox sinks pause hook --admin http://127.0.0.1:9090\n  outbox sinks resume hook --admin http://127.0.0.1:9090\n  outbox sinks forget old-hook --data-dir ./data"
    )]
    Sinks(membership::SinksCommand),
}

/// Exit code for a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// Turns "no such directory" into a usage error naming `--data-dir`.
fn map_missing<T>(dir: &Path, r: Result<T>) -> Result<T> {
    match r {
        Err(Error::Store(StoreError::Io(e))) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::config(
                "--data-dir",
                format!("{} is not an outbox data directory: {e}", dir.display()),
            ))
        }
        other => other,
    }
}

/// Opens an existing data directory for an offline command that writes
/// (redrive, purge, forget), after verifying it; never creates one, so a
/// typo is an error rather than a new empty outbox. What it writes is
/// fsynced.
fn open_existing(dir: &Path) -> Result<Admin> {
    map_missing(dir, Admin::open(dir))
}

/// Opens an existing data directory for an offline command that only
/// reads (dump, status, list, check), without verifying it, so that a
/// damaged store can still be looked at. Writes nothing.
fn inspect_existing(dir: &Path) -> Result<Inspector> {
    map_missing(dir, Inspector::open(dir))
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Run(a) => run::plan(&a, cli.log_format).and_then(|plan| {
            logging::init(plan.log_format, &plan.log_level);
            run::run(plan)
        }),
        other => {
            logging::init(cli.log_format.unwrap_or(LogFormat::Text), "warn");
            match other {
                Command::Dump(a) => dump::run(a),
                Command::Status(a) => status::run(a),
                Command::Dlq(c) => dlq::run(c),
                Command::Check(a) => check::run(a),
                Command::Compact(a) => compact::run(a),
                Command::Salvage(a) => salvage::run(a),
                Command::Sinks(c) => membership::run(c),
                Command::Run(_) => Ok(ExitCode::SUCCESS),
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", exit::message(&e));
            ExitCode::from(exit::exit_code(&e))
        }
    }
}
