//! `outbox check`: verifies a stopped outbox value by value
//! ([`outbox::inspect::Inspector::check`]) and renders the report. `check`
//! exits 0 only when it finds nothing, and 3 otherwise.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use outbox::Result;
use outbox::inspect::Report;

/// Exit code when problems are found.
pub const EXIT_CORRUPT: u8 = 3;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The data directory (of a stopped outbox).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The report for humans.
pub fn render(dir: &Path, r: &Report) -> String {
    let mut out = String::new();
    for p in &r.problems {
        out += &format!("problem: {p}\n");
    }
    out += &format!(
        "checked {}: {} log batches ({} records, {} holes or lost markers), {} offsets, {} DLQ entries, {} meta keys, {} idempotency entries; head {}\n",
        dir.display(),
        r.batches,
        r.records,
        r.markers,
        r.offsets,
        r.dlq,
        r.meta,
        r.idem,
        r.head
    );
    if let Some(from) = r.interrupted_write {
        out += &format!(
            "note: a crash interrupted a write from seq {from}; the next open for writing removes what it left (none of it was receipted) and covers its seqs with a hole\n"
        );
    }
    out += &match r.problems.len() {
        0 => "ok: no problems found\n".to_string(),
        1 => "1 problem found\n".to_string(),
        n => format!("{n} problems found\n"),
    };
    out
}

pub fn run(args: CheckArgs) -> Result<ExitCode> {
    let report = match super::inspect_existing(&args.data_dir) {
        Ok(store) => store.check(),
        // A store whose meta does not decode cannot be opened; that is a
        // finding, reported like the others.
        Err(e) => Report::unopenable(e)?,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", render(&args.data_dir, &report));
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CORRUPT)
    })
}
