//! `outbox dlq list|show|redrive|purge`: DLQ triage on a stopped outbox, or
//! on a running one through its admin endpoint (`--admin URL`).
//!
//! - every command acts on the entries that [`select`] picks: `--seq`,
//!   `--since`/`--until`, `--error-match`, `--limit`; offline and online
//!   pick alike because both run the same [`select::Filter`];
//! - redrive and purge change nothing unless told what: `--seq`, `--all` or
//!   a filter; `--dry-run` reports the seqs they would change and changes
//!   nothing;
//! - redrive appends the chosen entries to the log for that sink only,
//!   keeping their delivery ids, and removes them from the DLQ in the same
//!   transaction; it reports how many moved;
//! - purge removes entries for good, so it asks first: on a terminal it
//!   shows the seqs and prompts, and removes exactly those; without a
//!   terminal it refuses unless given `--yes`.

mod select;
mod show;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use outbox::inspect::{DlqSelection, Inspector};
use outbox::{ConfigError, Error, Result, Seq, SinkName};
use serde_json::{Value, json};

use super::admin::DlqQuery;
use super::client::{self, AdminArgs};
use super::view::{dlq_json, payload_text};
pub use select::{Filter, FilterQuery, render_ms};
pub use show::entry_json;

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List a sink's DLQ entries, optionally filtered.
    #[command(
        after_help = "Example:\n  outbox dlq list --data-dir ./data --sink web\n  outbox dlq list --data-dir ./data --sink web --since 2h --error-match '(?i)timeout' --limit 20"
    )]
    List(ListArgs),
    /// Print one entry: its record, its error and its attempt history.
    #[command(after_help = "Example:\n  outbox dlq show --data-dir ./data --sink web 17")]
    Show(show::ShowArgs),
    /// Move entries back into the log for that sink only (same delivery ids).
    #[command(
        after_help = "Example:\n  outbox dlq redrive --data-dir ./data --sink web --seq 17 --seq 18\n  outbox dlq redrive --data-dir ./data --sink web --all\n  outbox dlq redrive --data-dir ./data --sink web --since 2026-03-01T09:00:00Z --until 2026-03-01T11:00:00Z --error-match 'answered 5\\d\\d' --dry-run"
    )]
    Redrive(ChangeArgs),
    /// Delete entries for good. Asks first unless --yes.
    #[command(
        after_help = "Example:\n  outbox dlq purge --data-dir ./data --sink web --all --yes\n  outbox dlq purge --data-dir ./data --sink web --until 7d --dry-run"
    )]
    Purge(ChangeArgs),
}

/// Which entries of which sink, and where to find them.
#[derive(Args, Debug)]
pub struct Target {
    /// The data directory (of a stopped outbox).
    #[arg(long, value_name = "DIR", required_unless_present = "admin")]
    pub data_dir: Option<PathBuf>,
    /// The sink whose DLQ to act on.
    #[arg(long, value_name = "NAME")]
    pub sink: String,
    /// Only the entry at this seq (repeat for more).
    #[arg(long = "seq", value_name = "N", conflicts_with = "all")]
    pub seqs: Vec<u64>,
    /// Every entry of the sink (narrowed by any filter given).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub filter: FilterQuery,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args, Debug)]
pub struct ChangeArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print the seqs that would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before purging.
    #[arg(long)]
    pub yes: bool,
}

impl Target {
    fn seqs(&self) -> Option<&[u64]> {
        (!self.seqs.is_empty()).then_some(self.seqs.as_slice())
    }

    /// The checked filter; relative times count back from now.
    fn filter(&self) -> Result<Filter> {
        Filter::new(&self.filter, self.seqs(), super::clock::now_ms())
    }

    /// Redrive and purge must be told what: `--seq`, `--all` or a filter
    /// (`--limit` alone only bounds, it does not choose).
    fn require_choice(&self, verb: &str) -> Result<()> {
        if self.all || !self.seqs.is_empty() || self.filter.chooses() {
            return Ok(());
        }
        Err(Error::config(
            "--seq",
            format!(
                "{verb} needs --seq N (repeatable), --all, or a filter (--since, --until, --error-match)"
            ),
        ))
    }

    fn sink_name(&self) -> Result<SinkName> {
        SinkName::new(self.sink.clone()).map_err(|e| Error::config("--sink", e.to_string()))
    }

    fn offline(&self) -> Option<&PathBuf> {
        match (&self.admin.admin, &self.data_dir) {
            (None, Some(dir)) => Some(dir),
            _ => None,
        }
    }

    /// The admin endpoint's query for this target's filter.
    fn query(&self, with_target: bool, dry_run: bool) -> String {
        serde_urlencoded::to_string(self.dlq_query(with_target, dry_run)).unwrap_or_default()
    }

    fn dlq_query(&self, with_target: bool, dry_run: bool) -> DlqQuery {
        DlqQuery {
            sink: with_target.then(|| self.sink.clone()),
            seqs: (with_target && !self.seqs.is_empty()).then(|| {
                self.seqs
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            since: self.filter.since.clone(),
            until: self.filter.until.clone(),
            error_match: self.filter.error_match.clone(),
            limit: self.filter.limit,
            from: None,
            dry_run,
        }
    }

    /// The query of one page of `GET /v1/dlq`, from seq `from`, taking at
    /// most `remaining` more entries.
    fn page_query(&self, from: Option<u64>, remaining: usize) -> String {
        let mut q = self.dlq_query(true, false);
        q.from = from;
        if remaining != usize::MAX {
            q.limit = Some(remaining);
        }
        serde_urlencoded::to_string(&q).unwrap_or_default()
    }
}

pub fn run(cmd: DlqCommand) -> Result<ExitCode> {
    match cmd {
        DlqCommand::List(a) => list(a.target),
        DlqCommand::Show(a) => show::run(a),
        DlqCommand::Redrive(a) => redrive(a),
        DlqCommand::Purge(a) => purge(a),
    }
}

/// The seqs of the entries of `sink` that `filter` selects, from a stopped
/// outbox, streamed: seqs are held, records are not.
fn select_offline(store: &Inspector, sink: &SinkName, filter: &Filter) -> Result<Vec<u64>> {
    Ok(store
        .dead_letters()
        .select(sink, |e| filter.matches(e), filter.limit())?
        .into_iter()
        .map(|s| s.0)
        .collect())
}

/// Fails with [`outbox::ConfigError::UnknownSink`] unless `sink` has an
/// offset: a typo must not look like an empty DLQ to a command that changes
/// things.
fn known_sink(store: &Inspector, sink: &SinkName) -> Result<()> {
    match store.offset(sink)? {
        Some(_) => Ok(()),
        None => Err(ConfigError::UnknownSink(sink.to_string()).into()),
    }
}

fn list(a: Target) -> Result<ExitCode> {
    let sink = a.sink_name()?;
    let filter = a.filter()?;
    let mut out = Listing::start(a.json);
    match a.offline() {
        Some(dir) => {
            let store = super::inspect_existing(dir)?;
            // Streamed: one entry in memory at a time, however large the DLQ.
            for e in store.dead_letters().iter(Some(&sink)) {
                if out.count >= filter.limit() {
                    break;
                }
                let e = e?;
                if filter.matches(&e) {
                    out.entry(&dlq_json(&e));
                }
            }
        }
        None => {
            // Paged: the endpoint answers at most a page at a time, and says
            // where the next one starts.
            let mut from = None;
            loop {
                let remaining = filter.limit() - out.count;
                let v = client::call(
                    &a.admin,
                    reqwest::Method::GET,
                    &format!("/v1/dlq?{}", a.page_query(from, remaining)),
                    None,
                )?;
                for e in v
                    .get("entries")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    out.entry(e);
                }
                match v.get("next").and_then(Value::as_u64) {
                    Some(n) if out.count < filter.limit() => from = Some(n),
                    _ => break,
                }
            }
        }
    }
    out.finish(&sink, filter.is_everything());
    Ok(ExitCode::SUCCESS)
}

/// Prints a DLQ listing as it is read: a JSON array, or a table.
struct Listing {
    json: bool,
    count: usize,
}

impl Listing {
    fn start(json: bool) -> Listing {
        if json {
            print!("[");
        } else {
            println!(
                "{:>10}  {:<48}  {:<24}  {:>8}  ERROR / PAYLOAD",
                "SEQ", "DELIVERY ID", "IN DLQ SINCE", "ATTEMPTS"
            );
        }
        Listing { json, count: 0 }
    }

    fn entry(&mut self, e: &Value) {
        if self.json {
            let sep = if self.count == 0 { "\n" } else { ",\n" };
            print!(
                "{sep}{}",
                serde_json::to_string_pretty(e).unwrap_or_default()
            );
        } else {
            println!(
                "{:>10}  {:<48}  {:<24}  {:>8}  {}\n{:>10}  {}",
                e["seq"],
                e["delivery_id"].as_str().unwrap_or(""),
                e["failed_at_ms"]
                    .as_u64()
                    .map(render_ms)
                    .unwrap_or_default(),
                e["attempts"],
                e["error"].as_str().unwrap_or(""),
                "",
                payload_text(&e["payload"])
            );
        }
        self.count += 1;
    }

    fn finish(self, sink: &SinkName, everything: bool) {
        if self.json {
            println!("{}]", if self.count == 0 { "" } else { "\n" });
        } else {
            eprintln!(
                "{} entr{} in the DLQ of sink {sink}{}",
                self.count,
                if self.count == 1 { "y" } else { "ies" },
                if everything { "" } else { " match" }
            );
        }
    }
}

/// What a change command did (or, in a dry run, would do).
struct Outcome {
    /// The seqs selected.
    selected: Vec<u64>,
    /// How many entries actually changed (0 in a dry run).
    changed: u64,
}

fn redrive(a: ChangeArgs) -> Result<ExitCode> {
    let t = &a.target;
    let sink = t.sink_name()?;
    t.require_choice("redrive")?;
    let filter = t.filter()?;
    let out = match t.offline() {
        Some(dir) => {
            let store = super::open_existing(dir)?;
            known_sink(&store, &sink)?;
            let selected = select_offline(&store, &sink, &filter)?;
            let mut changed = 0;
            if !a.dry_run && !selected.is_empty() {
                let chosen: Vec<Seq> = selected.iter().map(|s| Seq(*s)).collect();
                // All of them: let the store take the whole prefix.
                let which = if filter.is_everything() {
                    DlqSelection::All
                } else {
                    DlqSelection::Seqs(chosen)
                };
                let seqs = store.redrive(
                    &sink,
                    &which,
                    outbox::OutboxConfig::default().max_value_bytes,
                )?;
                if let (Some(first), Some(last)) = (seqs.first(), seqs.last()) {
                    eprintln!(
                        "appended as seqs {first}..={last}; sink {sink} delivers them when the outbox runs next"
                    );
                }
                changed = seqs.len() as u64;
            }
            Outcome { selected, changed }
        }
        None => online_change(t, &sink, "redrive", "moved", a.dry_run, None)?,
    };
    report(t, "redrive", "redrove", &out, a.dry_run, &sink);
    Ok(ExitCode::SUCCESS)
}

fn purge(a: ChangeArgs) -> Result<ExitCode> {
    let t = &a.target;
    let sink = t.sink_name()?;
    t.require_choice("purge")?;
    let filter = t.filter()?;
    let ask = !a.yes && !a.dry_run;
    if ask && !std::io::stdin().is_terminal() {
        let what = match t.seqs() {
            Some(s) if !t.filter.chooses() => format!(
                "{} DLQ entr{} of sink {sink}",
                s.len(),
                if s.len() == 1 { "y" } else { "ies" }
            ),
            _ if filter.is_everything() => format!("every DLQ entry of sink {sink}"),
            _ => format!("the DLQ entries of sink {sink} that match"),
        };
        return Err(Error::config(
            "--yes",
            format!(
                "purge deletes {what} for good; stdin is not a terminal, so pass --yes to confirm (or --dry-run to see which)"
            ),
        ));
    }
    let store = match t.offline() {
        Some(dir) => {
            let store = super::open_existing(dir)?;
            known_sink(&store, &sink)?;
            Some(store)
        }
        None => None,
    };
    // What would go: shown before asking, and then exactly that is removed.
    let preview = |dry_run: bool| -> Result<Vec<u64>> {
        match &store {
            Some(store) => select_offline(store, &sink, &filter),
            None => Ok(online_change(t, &sink, "purge", "purged", dry_run, None)?.selected),
        }
    };
    if a.dry_run {
        let selected = preview(true)?;
        let out = Outcome {
            selected,
            changed: 0,
        };
        report(t, "purge", "purged", &out, true, &sink);
        return Ok(ExitCode::SUCCESS);
    }
    let exact: Option<Vec<u64>> = if ask {
        let selected = preview(true)?;
        if selected.is_empty() {
            eprintln!("no DLQ entry of sink {sink} matches; nothing purged");
            report(
                t,
                "purge",
                "purged",
                &Outcome {
                    selected,
                    changed: 0,
                },
                false,
                &sink,
            );
            return Ok(ExitCode::SUCCESS);
        }
        eprint!(
            "Delete {} DLQ entr{} of sink {sink} for good (seqs {})? [y/N] ",
            selected.len(),
            if selected.len() == 1 { "y" } else { "ies" },
            select::ranges(&selected)
        );
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
        Some(selected)
    } else {
        None
    };
    let out = match &store {
        Some(store) => {
            let selected = match exact {
                Some(s) => s,
                None => select_offline(store, &sink, &filter)?,
            };
            let seqs: Vec<Seq> = selected.iter().map(|s| Seq(*s)).collect();
            let n = if selected.is_empty() {
                0
            } else {
                store.purge(&sink, &DlqSelection::Seqs(seqs))?
            };
            Outcome {
                selected,
                changed: n as u64,
            }
        }
        None => online_change(t, &sink, "purge", "purged", false, exact)?,
    };
    report(t, "purge", "purged", &out, false, &sink);
    Ok(ExitCode::SUCCESS)
}

/// `POST /v1/dlq/{verb}` with the filter in the query. With `exact`, the
/// body names those seqs and the filter is left out: the caller already
/// chose (a confirmed purge removes exactly what it showed).
fn online_change(
    t: &Target,
    sink: &SinkName,
    verb: &str,
    field: &str,
    dry_run: bool,
    exact: Option<Vec<u64>>,
) -> Result<Outcome> {
    let (query, seqs) = match exact {
        Some(s) => (String::new(), json!(s)),
        None => (
            t.query(false, dry_run),
            match t.seqs() {
                Some(s) => json!(s),
                None => Value::Null,
            },
        ),
    };
    let v = client::call(
        &t.admin,
        reqwest::Method::POST,
        &format!("/v1/dlq/{verb}?{query}"),
        Some(json!({"sink": sink.as_str(), "seqs": seqs})),
    )?;
    Ok(Outcome {
        selected: v["selected"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default(),
        changed: v[field].as_u64().unwrap_or(0),
    })
}

fn report(t: &Target, verb: &str, done: &str, out: &Outcome, dry_run: bool, sink: &SinkName) {
    let n = out.selected.len();
    let plural = if n == 1 { "" } else { "s" };
    if dry_run {
        if t.json {
            println!(
                "{}",
                json!({"dry_run": true, "sink": sink.as_str(), format!("would_{verb}"): n, "seqs": out.selected})
            );
        } else if n == 0 {
            println!("dry run: would {verb} 0 records of sink {sink}");
        } else {
            println!(
                "dry run: would {verb} {n} record{plural} of sink {sink}: seqs {}",
                select::ranges(&out.selected)
            );
        }
        return;
    }
    if t.json {
        println!(
            "{}",
            json!({ done: out.changed, "sink": sink.as_str(), "seqs": out.selected })
        );
    } else {
        println!(
            "{done} {} record{} of sink {sink}",
            out.changed,
            if out.changed == 1 { "" } else { "s" }
        );
    }
}
