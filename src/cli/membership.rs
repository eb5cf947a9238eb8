//! `outbox sinks forget NAME`: forgets an orphaned sink, offline or through
//! a running daemon's admin endpoint (`POST /v1/sinks/forget`). The
//! `pause` and `resume` subcommands are in [`super::pause`].
//!
//! An orphan (a sink with an offset that is no longer configured) keeps its
//! backlog, so a typo in the configuration never deletes records. Forgetting
//! it is the operator's decision that the backlog may go: its offset and
//! membership are removed durably, and the log is truncated past it.
//!
//! Offline, a sink that was configured at the last open can be forgotten too
//! (nothing is running to use it); the command prints how many records it
//! had not passed. Through a daemon, only an orphan can be (409 otherwise).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use outbox::{Error, Result, SinkName};
use serde_json::json;

use super::client::{self, AdminArgs};

#[derive(Subcommand, Debug)]
pub enum SinksCommand {
    /// Forget an orphaned sink: its backlog no longer holds back truncation.
    Forget(SinkArgs),
    /// Pause a sink: nothing is delivered or dead-lettered, its records stay
    /// in the log, until it is resumed (kept across restarts).
    Pause(SinkArgs),
    /// Resume a paused sink: deliveries start at once.
    Resume(SinkArgs),
}

/// The arguments of every `outbox sinks` subcommand.
#[derive(Args, Debug)]
pub struct SinkArgs {
    /// The sink.
    #[arg(value_name = "NAME")]
    pub sink: String,
    /// The data directory (of a stopped outbox).
    #[arg(long, value_name = "DIR", required_unless_present = "admin")]
    pub data_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

pub fn run(c: SinksCommand) -> Result<ExitCode> {
    match c {
        SinksCommand::Forget(a) => forget(a),
        SinksCommand::Pause(a) => super::pause::run(a, true),
        SinksCommand::Resume(a) => super::pause::run(a, false),
    }
}

fn forget(a: SinkArgs) -> Result<ExitCode> {
    let sink = SinkName::new(a.sink.clone()).map_err(|e| Error::config("NAME", e.to_string()))?;
    let (offset, pending) = match (&a.admin.admin, &a.data_dir) {
        (None, Some(dir)) => {
            let store = super::open_existing(dir)?;
            let head = store.extent()?.end.0;
            let offset = store.forget(&sink)?.0;
            (offset, Some(head.saturating_sub(offset)))
        }
        _ => {
            let v = client::call(
                &a.admin,
                reqwest::Method::POST,
                "/v1/sinks/forget",
                Some(json!({"sink": sink.as_str()})),
            )?;
            (v["offset"].as_u64().unwrap_or(0), None)
        }
    };
    if a.json {
        println!(
            "{}",
            json!({"forgotten": sink.as_str(), "offset": offset, "pending": pending})
        );
    } else {
        match pending {
            Some(n) => println!(
                "forgot sink {sink} at offset {offset}; the {n} record(s) it had not passed no longer hold back truncation"
            ),
            None => println!("forgot sink {sink} at offset {offset}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
