//! `outbox salvage --data-dir DIR --out NEW`: copies what can still be read
//! of a damaged, stopped outbox into a fresh directory
//! ([`outbox::inspect::salvage`]), and prints exactly what could not be
//! recovered, as seq ranges per tree, then what was copied.
//!
//! Exit codes: 0 when everything was recovered, [`EXIT_LOSSES`] when the
//! copy is complete and verified but something could not be recovered (it
//! is listed), 2 for a usage error (`--out` not empty), 3 when `DIR` is
//! locked by a running daemon or sled cannot open it at all.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use outbox::Result;
use outbox::inspect::{Inspector, SalvageReport};

use super::check;

/// Exit code when the copy is made but something could not be recovered.
pub const EXIT_LOSSES: u8 = 4;

#[derive(Args, Debug)]
pub struct SalvageArgs {
    /// The data directory of a stopped, damaged outbox (only read).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Where to write the copy (must not exist, or be empty).
    #[arg(long, value_name = "NEW")]
    pub out: PathBuf,
}

/// What could not be recovered, one line each; empty when nothing.
pub fn losses(r: &SalvageReport) -> Vec<String> {
    let mut out = Vec::new();
    for l in &r.lost {
        out.push(format!(
            "log: seqs {}..{} ({} seqs): {}",
            l.from,
            l.to,
            l.to.0 - l.from.0,
            l.reason
        ));
    }
    for c in &r.conflicts {
        out.push(format!(
            "log: seqs {}..{} (claimed twice): {}",
            c.from, c.to, c.reason
        ));
    }
    for x in &r.restarted {
        out.push(format!("offsets: sink `{}`: {}", x.sink, x.why));
    }
    for (key, why) in &r.offsets_unreadable {
        out.push(format!("offsets: key {key}: {why}"));
    }
    for (sink, from, to, why) in r.dlq_lost.ranges() {
        out.push(format!(
            "dlq: sink `{sink}`: seqs {from}..{to} ({} entries): {why}",
            to.0 - from.0
        ));
    }
    for (key, why) in &r.dlq_unreadable {
        out.push(format!("dlq: key {key}: {why}"));
    }
    if r.dlq_missing > 0 {
        out.push(format!(
            "dlq: {} entries the witness file counted are not in the tree at all (their seqs are unknown)",
            r.dlq_missing
        ));
    }
    for (key, why) in &r.idem_lost {
        out.push(format!("idem: key {key}: {why}"));
    }
    for (key, why) in &r.sink_state_lost {
        out.push(format!("sink_state: key {key}: {why}"));
    }
    for m in &r.meta {
        out.push(format!("meta: {m}"));
    }
    for (t, why) in &r.trees {
        out.push(format!("tree `{t}`: {why}"));
    }
    out
}

/// The report for humans.
pub fn render(src: &Path, out: &Path, r: &SalvageReport) -> String {
    let mut s = format!(
        "salvage: {} -> {} (log id {}, seqs {}..{})\n",
        src.display(),
        out.display(),
        r.log_id.simple(),
        r.first,
        r.end
    );
    let lost = losses(r);
    if lost.is_empty() {
        s += "not recovered: nothing\n";
    } else {
        s += "not recovered:\n";
        for l in &lost {
            s += &format!("  {l}\n");
        }
    }
    s += &format!(
        "copied: {} records in {} log values ({} seqs of earlier holes and lost markers), {} offsets, {} members, {} DLQ entries with their history, {} idempotency entries, {} sink states\n",
        r.records,
        r.values,
        r.marker_seqs,
        r.offsets.len(),
        r.members,
        r.dlq,
        r.idem,
        r.sink_state
    );
    if let Some(i) = &r.interrupted_write {
        s += &format!(
            "note: a write a crash cut short, from seq {}, was never receipted and is not copied ({} log values, {} idempotency entries), as the open would have undone it\n",
            i.from, i.values, i.idem_entries
        );
    }
    let marked: u64 = r.lost.iter().map(|l| l.to.0 - l.from.0).sum();
    if marked > 0 {
        s += &format!(
            "lost markers written: {} ({marked} seqs); each sink logs and counts them (outbox_sink_lost_records_total) as it passes over them\n",
            r.lost.len()
        );
    }
    if r.restarted.is_empty() {
        s += &format!("offsets kept: {}\n", offsets(&r.offsets));
    } else {
        s += &format!(
            "offsets kept: {}; restarted: {}\n",
            offsets(&r.offsets),
            r.restarted
                .iter()
                .map(|x| format!("{}={}", x.sink, x.at))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    s
}

fn offsets(o: &[(outbox::SinkName, outbox::Seq)]) -> String {
    if o.is_empty() {
        return "none".into();
    }
    o.iter()
        .map(|(n, s)| format!("{n}={s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn run(args: SalvageArgs) -> Result<ExitCode> {
    let report = outbox::inspect::salvage(&args.data_dir, &args.out)?;
    print!("{}", render(&args.data_dir, &args.out, &report));
    let copy = Inspector::open(&args.out)?;
    let checked = copy.check();
    drop(copy);
    if !checked.problems.is_empty() {
        print!("{}", check::render(&args.out, &checked));
        eprintln!(
            "salvage: the copy does not pass `outbox check`; this is a bug in salvage: keep {}",
            args.data_dir.display()
        );
        return Ok(ExitCode::from(check::EXIT_CORRUPT));
    }
    if report.lost_anything() {
        println!(
            "verified: {} passes `outbox check`; what is listed under `not recovered` is gone (exit {EXIT_LOSSES}); see docs/operations.md before using it",
            args.out.display()
        );
        Ok(ExitCode::from(EXIT_LOSSES))
    } else {
        println!(
            "verified: {} passes `outbox check`, and nothing was lost; replace {} with it while outbox is stopped",
            args.out.display(),
            args.data_dir.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}
