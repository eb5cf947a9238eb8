//! `outbox status`: one row per sink with committed offset, head, lag, DLQ
//! count and whether it is orphaned; offline from the data directory or
//! from a running daemon (`--admin`, served as `GET /v1/status`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use outbox::inspect::Inspector;
use outbox::{Outbox, Result, SinkName};
use serde::{Deserialize, Serialize};

use super::client::{self, AdminArgs};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The data directory (of a stopped outbox).
    #[arg(long, value_name = "DIR", required_unless_present = "admin")]
    pub data_dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// What `status` reports; also the body of `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    /// The log id.
    pub log_id: String,
    /// The next seq to be assigned (offline) or published (online).
    pub head: u64,
    /// One row per sink with an offset, configured ones first.
    pub sinks: Vec<SinkRow>,
    /// What makes the store unusable, when it is damaged (offline: what the
    /// open-time verification refuses); the exit code is then 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkRow {
    /// The sink's name.
    pub sink: String,
    /// Its committed offset: every seq below it is done for this sink.
    pub offset: u64,
    /// The head, repeated for convenience.
    pub head: u64,
    /// `head - offset`.
    pub lag: u64,
    /// DLQ entries of this sink.
    pub dlq: usize,
    /// Has an offset but is no longer configured.
    pub orphaned: bool,
    /// `ok`, `orphan`, or `corrupt` (its worker stopped on data it cannot
    /// read; `error` says where).
    #[serde(default)]
    pub state: String,
    /// Why the sink is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Paused by an operator since then (ms since the Unix epoch): the
    /// pause holds across restarts until `outbox sinks resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at_ms: Option<u64>,
    /// When the oldest record it has not passed was appended (ms since the
    /// Unix epoch); online only, absent when it has caught up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending_ms: Option<u64>,
    /// The sink's header filter as configured (online only): a record it
    /// does not match passes this sink without a delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// Reads the view from a stopped outbox, and verifies it as an open would.
///
/// # Errors
/// Decoding errors of the offsets or meta trees.
pub fn offline(store: &Inspector) -> Result<StatusView> {
    let (head, members, problem) = match store.verify() {
        Ok(v) => (v.next.0, v.members, None),
        Err(e) => (
            store.extent()?.end.0,
            store.members().unwrap_or_default(),
            Some(e.to_string()),
        ),
    };
    let mut sinks: Vec<SinkRow> = store
        .offsets()?
        .into_iter()
        .map(|o| {
            let name = o.sink;
            let orphaned = members
                .iter()
                .find(|m| m.name == name.as_str())
                .is_none_or(|m| m.orphaned_at_ms.is_some());
            let paused_at_ms = store.paused(&name)?;
            let state = match (orphaned, paused_at_ms) {
                (true, _) => "orphan",
                (false, Some(_)) => "paused",
                (false, None) => "ok",
            };
            Ok(SinkRow {
                orphaned,
                state: state.to_string(),
                error: None,
                paused_at_ms,
                oldest_pending_ms: None,
                filter: None,
                dlq: store.dead_letters().count(&name),
                sink: name.to_string(),
                offset: o.offset.0,
                head,
                lag: head.saturating_sub(o.offset.0),
            })
        })
        .collect::<Result<_>>()?;
    for m in &members {
        if !sinks.iter().any(|s| s.sink == m.name) {
            sinks.push(SinkRow {
                sink: m.name.clone(),
                offset: 0,
                head,
                lag: 0,
                dlq: 0,
                orphaned: m.orphaned_at_ms.is_some(),
                state: "corrupt".into(),
                error: Some("its committed offset is missing".into()),
                paused_at_ms: None,
                oldest_pending_ms: None,
                filter: None,
            });
        }
    }
    sinks.sort_by_key(|r| r.orphaned);
    Ok(StatusView {
        log_id: store.log_id().simple().to_string(),
        head,
        sinks,
        problem,
    })
}

/// Reads the view from a running outbox.
///
/// # Errors
/// As [`Outbox::status`] and [`Outbox::dlq_list`].
pub fn online<T: Send + 'static>(outbox: &Outbox<T>) -> Result<StatusView> {
    let st = outbox.status()?;
    let mut sinks: Vec<SinkRow> = st
        .sinks
        .iter()
        .map(|s| SinkRow {
            sink: s.name.clone(),
            offset: s.offset,
            head: st.head,
            lag: s.lag,
            dlq: s.dlq,
            orphaned: false,
            state: s.state.clone(),
            error: s.error.clone(),
            paused_at_ms: s.paused_at_ms,
            oldest_pending_ms: s.oldest_pending_ms,
            filter: s.filter.clone(),
        })
        .collect();
    for o in &st.orphans {
        let dlq = match SinkName::new(o.name.clone()) {
            Ok(n) => outbox.dlq_count(&n),
            Err(_) => 0,
        };
        sinks.push(SinkRow {
            sink: o.name.clone(),
            offset: o.offset,
            head: st.head,
            lag: st.head.saturating_sub(o.offset),
            dlq,
            orphaned: true,
            state: "orphan".into(),
            error: None,
            paused_at_ms: None,
            oldest_pending_ms: None,
            filter: None,
        });
    }
    let problem = sinks.iter().find(|s| s.state == "corrupt").map(|s| {
        format!(
            "sink `{}` is corrupt: {}",
            s.sink,
            s.error.clone().unwrap_or_default()
        )
    });
    Ok(StatusView {
        log_id: st.log_id,
        head: st.head,
        sinks,
        problem,
    })
}

/// The human table.
pub fn table(v: &StatusView) -> String {
    let w = v
        .sinks
        .iter()
        .map(|s| s.sink.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!("log {}  head {}\n", v.log_id, v.head);
    out += &format!(
        "{:<w$}  {:>12}  {:>12}  {:>10}  {:>6}  {:<8}  ORPHANED\n",
        "SINK", "OFFSET", "HEAD", "LAG", "DLQ", "STATE"
    );
    for s in &v.sinks {
        out += &format!(
            "{:<w$}  {:>12}  {:>12}  {:>10}  {:>6}  {:<8}  {}\n",
            s.sink,
            s.offset,
            s.head,
            s.lag,
            s.dlq,
            s.state,
            if s.orphaned { "yes" } else { "no" }
        );
    }
    for s in &v.sinks {
        if let Some(e) = &s.error {
            out += &format!("sink {}: {e}\n", s.sink);
        }
        if let Some(f) = &s.filter {
            out += &format!("sink {}: filter {f}\n", s.sink);
        }
        if let Some(at) = s.paused_at_ms {
            out += &format!(
                "sink {}: paused by an operator since {} (`outbox sinks resume {}`)\n",
                s.sink,
                rfc3339(at),
                s.sink
            );
        }
    }
    if let Some(p) = &v.problem {
        out += &format!("problem: {p}\n");
    }
    out
}

/// A time in ms since the Unix epoch, as RFC 3339 in UTC to the second.
fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

pub fn run(args: StatusArgs) -> Result<ExitCode> {
    let view = match (&args.admin.admin, &args.data_dir) {
        (Some(_), _) => {
            let v = client::call(&args.admin, reqwest::Method::GET, "/v1/status", None)?;
            serde_json::from_value(v).map_err(|e| {
                outbox::Error::Io(std::io::Error::other(format!(
                    "admin endpoint sent an unexpected status shape: {e}"
                )))
            })?
        }
        (None, Some(dir)) => offline(&super::inspect_existing(dir)?)?,
        (None, None) => {
            return Err(outbox::Error::config(
                "--data-dir",
                "missing: pass --data-dir DIR or --admin URL",
            ));
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&view).unwrap_or_default()
        );
    } else {
        print!("{}", table(&view));
    }
    Ok(if view.problem.is_some() {
        ExitCode::from(super::check::EXIT_CORRUPT)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_one_row_per_sink() {
        let v = StatusView {
            log_id: "abc".into(),
            head: 10,
            sinks: vec![
                SinkRow {
                    sink: "out".into(),
                    offset: 7,
                    head: 10,
                    lag: 3,
                    dlq: 1,
                    orphaned: false,
                    state: "paused".into(),
                    error: None,
                    paused_at_ms: Some(1_700_000_000_000),
                    oldest_pending_ms: None,
                    filter: Some("event-type = [\"alert.*\"]".into()),
                },
                SinkRow {
                    sink: "old-sink".into(),
                    offset: 2,
                    head: 10,
                    lag: 8,
                    dlq: 0,
                    orphaned: true,
                    state: "orphan".into(),
                    error: None,
                    paused_at_ms: None,
                    oldest_pending_ms: None,
                    filter: None,
                },
            ],
            problem: None,
        };
        let t = table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[0], "log abc  head 10");
        let cols: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(cols, ["out", "7", "10", "3", "1", "paused", "no"]);
        let cols: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(cols, ["old-sink", "2", "10", "8", "0", "orphan", "yes"]);
        assert_eq!(lines[4], "sink out: filter event-type = [\"alert.*\"]");
        assert_eq!(
            lines[5],
            "sink out: paused by an operator since 2023-11-14T22:13:20Z (`outbox sinks resume out`)"
        );
    }
}
