//! `outbox compact --data-dir DIR --out DIR2`: rewrites a stopped outbox
//! into a fresh directory through sled's export/import, then verifies it.
//!
//! The source is only read. The result is verified twice: sled's checksum
//! over every key and value must match the source's, and the same checks as
//! `outbox check` must pass on it. Sizes before and after are printed. A
//! progress bar is drawn on a terminal; otherwise plain progress lines go to
//! stderr.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use outbox::inspect::Inspector;
use outbox::{Error, Result, StoreError};

use super::check;

#[derive(Args, Debug)]
pub struct CompactArgs {
    /// The data directory of a stopped outbox.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Where to write the compacted copy (must not exist, or be empty).
    #[arg(long, value_name = "DIR2")]
    pub out: PathBuf,
}

/// Bytes of every file under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn human(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    format!("{bytes} bytes ({:.1} MiB)", bytes as f64 / MIB)
}

pub fn run(args: CompactArgs) -> Result<ExitCode> {
    if args.out == args.data_dir {
        return Err(Error::config("--out", "must differ from --data-dir"));
    }
    let src = super::inspect_existing(&args.data_dir)?;
    // A damaged store is not compacted (the copy would keep the damage
    // and look new): `outbox salvage` is the tool for that.
    src.verify()?;
    let before = dir_size(&args.data_dir);
    let total = src.key_count();
    let src_sum = src.checksum()?;
    eprintln!(
        "compact: copying {total} keys from {} to {}",
        args.data_dir.display(),
        args.out.display()
    );
    let mut progress = Progress::new(total);
    src.export_to(&args.out, &mut |n| progress.set(n))?;
    progress.finish();
    drop(src);

    let out = Inspector::open(&args.out)?;
    let out_sum = out.checksum()?;
    let report = out.check();
    let copied = out.key_count();
    drop(out);
    if out_sum != src_sum || copied != total {
        return Err(StoreError::Storage(
            format!(
                "verification failed: the copy in {} holds {copied} keys with checksum {out_sum:08x}, the source {total} keys with {src_sum:08x}; keep using {}",
                args.out.display(),
                args.data_dir.display()
            )
            .into(),
        )
        .into());
    }
    if !report.problems.is_empty() {
        print!("{}", check::render(&args.out, &report));
        eprintln!(
            "compact: the copy does not pass `outbox check` (the source has the same problems); keep using {}",
            args.data_dir.display()
        );
        return Ok(ExitCode::from(check::EXIT_CORRUPT));
    }
    let after = dir_size(&args.out);
    println!("before: {}", human(before));
    println!("after:  {}", human(after));
    println!(
        "verified: {copied} keys, checksum {out_sum:08x}, check clean; replace {} with {} while outbox is stopped",
        args.data_dir.display(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A bar on a terminal, plain lines (every 10%) otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    next_line: u64,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} keys ({elapsed})")
            {
                b.set_style(style);
            }
            b
        });
        Progress {
            bar,
            total,
            next_line: 0,
        }
    }

    fn set(&mut self, n: u64) {
        match &self.bar {
            Some(b) => b.set_position(n),
            None => {
                if n >= self.next_line {
                    eprintln!("compact: {n}/{} keys copied", self.total);
                    self.next_line = n + (self.total / 10).max(1);
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}
