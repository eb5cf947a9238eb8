//! `outbox dlq list|redrive|purge`: DLQ triage on a stopped outbox, or on a
//! running one through its admin endpoint (`--admin URL`).
//!
//! - redrive appends the chosen entries to the log for that one sink only,
//!   keeping their delivery ids, and removes them from the DLQ in the same
//!   transaction; it reports how many moved;
//! - purge removes entries for good, so it asks first: on a terminal it
//!   prompts, and without a terminal it refuses unless given `--yes`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use outbox::{Error, Result, Seq, SinkName};
use serde_json::{Value, json};

use super::client::{self, AdminArgs};
use super::view::{dlq_json, payload_text};

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List a sink's DLQ entries.
    #[command(after_help = "Example:\n  outbox dlq list --data-dir ./data --sink web")]
    List(DlqArgs),
    /// Move entries back into the log for that sink only (same delivery ids).
    #[command(
        after_help = "Example:\n  outbox dlq redrive --data-dir ./data --sink web --seq 17 --seq 18\n  outbox dlq redrive --data-dir ./data --sink web --all"
    )]
    Redrive(DlqArgs),
    /// Delete entries for good. Asks first unless --yes.
    #[command(after_help = "Example:\n  outbox dlq purge --data-dir ./data --sink web --all --yes")]
    Purge(DlqArgs),
}

#[derive(Args, Debug)]
pub struct DlqArgs {
    /// The data directory (of a stopped outbox).
    #[arg(long, value_name = "DIR", required_unless_present = "admin")]
    pub data_dir: Option<PathBuf>,
    /// The sink whose DLQ to act on.
    #[arg(long, value_name = "NAME")]
    pub sink: String,
    /// Only the entry at this seq (repeat for more).
    #[arg(long = "seq", value_name = "N", conflicts_with = "all")]
    pub seqs: Vec<u64>,
    /// Every entry of the sink.
    #[arg(long)]
    pub all: bool,
    /// Do not ask before purging.
    #[arg(long)]
    pub yes: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

impl DlqArgs {
    /// `None` for all, or the chosen seqs.
    fn selection(&self, verb: &str) -> Result<Option<Vec<Seq>>> {
        if self.all {
            return Ok(None);
        }
        if self.seqs.is_empty() {
            return Err(Error::Config {
                param: "--seq".into(),
                reason: format!("{verb} needs --seq N (repeatable) or --all"),
            });
        }
        Ok(Some(self.seqs.iter().map(|s| Seq(*s)).collect()))
    }

    fn sink_name(&self) -> Result<SinkName> {
        SinkName::new(self.sink.clone()).map_err(|e| Error::Config {
            param: "--sink".into(),
            reason: e.to_string(),
        })
    }
}

pub fn run(cmd: DlqCommand) -> Result<ExitCode> {
    match cmd {
        DlqCommand::List(a) => list(a),
        DlqCommand::Redrive(a) => redrive(a),
        DlqCommand::Purge(a) => purge(a),
    }
}

fn selection_json(sel: &Option<Vec<Seq>>) -> Value {
    match sel {
        None => Value::Null,
        Some(s) => json!(s.iter().map(|s| s.0).collect::<Vec<_>>()),
    }
}

fn list(a: DlqArgs) -> Result<ExitCode> {
    let sink = a.sink_name()?;
    let entries: Vec<Value> = match (&a.admin.admin, &a.data_dir) {
        (None, Some(dir)) => {
            let store = super::open_existing(dir)?;
            let log_id = store.log_id();
            store
                .dlq_list(Some(&sink))?
                .iter()
                .map(|e| dlq_json(log_id, e))
                .collect()
        }
        _ => {
            let v = client::call(
                &a.admin,
                reqwest::Method::GET,
                &format!("/v1/dump?tree=dlq&sink={sink}"),
                None,
            )?;
            v.get("dlq")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        }
    };
    let entries: Vec<Value> = entries
        .into_iter()
        .filter(|e| a.seqs.is_empty() || e["seq"].as_u64().is_some_and(|s| a.seqs.contains(&s)))
        .collect();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        );
    } else {
        println!(
            "{:>10}  {:<48}  {:>8}  ERROR / PAYLOAD",
            "SEQ", "DELIVERY ID", "ATTEMPTS"
        );
        for e in &entries {
            println!(
                "{:>10}  {:<48}  {:>8}  {}\n{:>10}  {}",
                e["seq"],
                e["delivery_id"].as_str().unwrap_or(""),
                e["attempts"],
                e["error"].as_str().unwrap_or(""),
                "",
                payload_text(&e["payload"])
            );
        }
        eprintln!(
            "{} entr{} in the DLQ of sink {sink}",
            entries.len(),
            if entries.len() == 1 { "y" } else { "ies" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn redrive(a: DlqArgs) -> Result<ExitCode> {
    let sink = a.sink_name()?;
    let sel = a.selection("redrive")?;
    let moved = match (&a.admin.admin, &a.data_dir) {
        (None, Some(dir)) => {
            let store = super::open_existing(dir)?;
            let seqs = store.redrive_offline(&sink, sel.as_deref())?;
            if let (Some(first), Some(last)) = (seqs.first(), seqs.last()) {
                eprintln!(
                    "appended as seqs {first}..={last}; sink {sink} delivers them when the outbox runs next"
                );
            }
            seqs.len() as u64
        }
        _ => {
            let v = client::call(
                &a.admin,
                reqwest::Method::POST,
                "/v1/dlq/redrive",
                Some(json!({"sink": sink.as_str(), "seqs": selection_json(&sel)})),
            )?;
            v["moved"].as_u64().unwrap_or(0)
        }
    };
    report(&a, "redrove", moved, &sink);
    Ok(ExitCode::SUCCESS)
}

fn purge(a: DlqArgs) -> Result<ExitCode> {
    let sink = a.sink_name()?;
    let sel = a.selection("purge")?;
    if !a.yes {
        let what = match &sel {
            None => format!("every DLQ entry of sink {sink}"),
            Some(s) => format!(
                "{} DLQ entr{} of sink {sink}",
                s.len(),
                if s.len() == 1 { "y" } else { "ies" }
            ),
        };
        if !std::io::stdin().is_terminal() {
            return Err(Error::Config {
                param: "--yes".into(),
                reason: format!(
                    "purge deletes {what} for good; stdin is not a terminal, so pass --yes to confirm"
                ),
            });
        }
        eprint!("Delete {what} for good? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(Error::Io)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            eprintln!("nothing purged");
            return Ok(ExitCode::from(1));
        }
    }
    let removed = match (&a.admin.admin, &a.data_dir) {
        (None, Some(dir)) => {
            let store = super::open_existing(dir)?;
            let n = store.dlq_purge(&sink, sel.as_deref())?;
            store.flush()?;
            n as u64
        }
        _ => {
            let v = client::call(
                &a.admin,
                reqwest::Method::POST,
                "/v1/dlq/purge",
                Some(json!({"sink": sink.as_str(), "seqs": selection_json(&sel)})),
            )?;
            v["purged"].as_u64().unwrap_or(0)
        }
    };
    report(&a, "purged", removed, &sink);
    Ok(ExitCode::SUCCESS)
}

fn report(a: &DlqArgs, verb: &str, n: u64, sink: &SinkName) {
    if a.json {
        println!("{}", json!({ verb: n, "sink": sink.as_str() }));
    } else {
        println!(
            "{verb} {n} record{} of sink {sink}",
            if n == 1 { "" } else { "s" }
        );
    }
}
