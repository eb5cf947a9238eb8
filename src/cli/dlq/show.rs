//! `outbox dlq show --sink NAME SEQ`: one DLQ entry, its record and its
//! attempt history.
//!
//! The history has one row per attempt kept with the entry (the last 10,
//! oldest first): when it began, whether the failure was transient or
//! permanent, how long it took, and what the sink said. An entry
//! dead-lettered by outbox 0.1 kept no history: it shows one row, the last
//! attempt, at the time the entry was dead-lettered, with its status and
//! latency unknown (`null`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use outbox::{DeadLetter, Error, Result, Seq, SinkName};
use serde_json::{Value, json};

use super::super::client::{self, AdminArgs};
use super::super::view::{dlq_json, payload_text};
use super::select::render_ms;

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The data directory (of a stopped outbox).
    #[arg(long, value_name = "DIR", required_unless_present = "admin")]
    pub data_dir: Option<PathBuf>,
    /// The sink whose DLQ holds the entry.
    #[arg(long, value_name = "NAME")]
    pub sink: String,
    /// The entry's seq (as `dlq list` shows it).
    #[arg(value_name = "SEQ")]
    pub seq: u64,
    /// Print JSON: the `dlq list --json` fields plus `history`.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// The attempt history of `e`, oldest first: `{attempt, at_ms, status,
/// latency_ms, error}` per attempt kept.
pub fn history(e: &DeadLetter) -> Value {
    if e.history.is_empty() {
        return json!([{
            "attempt": e.attempts,
            "at_ms": e.failed_at_ms,
            "status": null,
            "latency_ms": null,
            "error": e.error,
        }]);
    }
    // The history keeps the last attempts: number them from the end.
    let first = e.attempts.saturating_sub(e.history.len() as u32) + 1;
    Value::Array(
        e.history
            .iter()
            .zip(first..)
            .map(|(a, n)| {
                json!({
                    "attempt": n,
                    "at_ms": a.at_ms,
                    "status": if a.permanent { "permanent" } else { "transient" },
                    "latency_ms": a.latency_ms,
                    "error": a.error,
                })
            })
            .collect(),
    )
}

/// One entry as `dlq show --json` and `GET /v1/dlq/{sink}/{seq}` give it.
pub fn entry_json(e: &DeadLetter) -> Value {
    let mut v = dlq_json(e);
    if let Some(o) = v.as_object_mut() {
        o.insert("history".into(), history(e));
    }
    v
}

pub fn run(a: ShowArgs) -> Result<ExitCode> {
    let sink = SinkName::new(a.sink.clone()).map_err(|e| Error::config("--sink", e.to_string()))?;
    let v = match (&a.admin.admin, &a.data_dir) {
        (None, Some(dir)) => {
            let store = super::super::inspect_existing(dir)?;
            let entry = store
                .dead_letters()
                .get(&sink, Seq(a.seq))?
                .ok_or_else(|| not_found(&sink, a.seq))?;
            entry_json(&entry)
        }
        _ => client::call(
            &a.admin,
            reqwest::Method::GET,
            &format!("/v1/dlq/{sink}/{}", a.seq),
            None,
        )?,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", text(&v));
    }
    Ok(ExitCode::SUCCESS)
}

/// The error for a seq with no entry: a usage error (exit 2), like an
/// unknown sink, since the operator named something that is not there.
pub fn not_found(sink: &SinkName, seq: u64) -> Error {
    Error::config(
        "SEQ",
        format!("sink {sink} has no DLQ entry at seq {seq} (see `outbox dlq list`)"),
    )
}

fn text(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut out = String::new();
    let mut line = |k: &str, val: String| out.push_str(&format!("{k:<12} {val}\n"));
    line("sink", s("sink"));
    line("seq", v["seq"].to_string());
    line("delivery id", s("delivery_id"));
    line(
        "in DLQ since",
        v["failed_at_ms"]
            .as_u64()
            .map(render_ms)
            .unwrap_or_default(),
    );
    line("attempts", v["attempts"].to_string());
    line("last error", s("error"));
    // Headers are `[[name, value], ...]`, in the record's order.
    match v["headers"].as_array() {
        Some(h) if !h.is_empty() => {
            for (i, kv) in h.iter().enumerate() {
                let name = if i == 0 { "headers" } else { "" };
                let part = |j: usize| kv.get(j).and_then(Value::as_str).unwrap_or("");
                line(name, format!("{}: {}", part(0), part(1)));
            }
        }
        _ => line("headers", "-".into()),
    }
    line("payload", payload_text(&v["payload"]));
    out.push_str("\nattempt history (oldest first)\n");
    out.push_str(&format!(
        "{:>8}  {:<24}  {:>9}  {:>10}  ERROR\n",
        "ATTEMPT", "AT", "STATUS", "LATENCY"
    ));
    for h in v["history"].as_array().into_iter().flatten() {
        let or_dash = |x: &Value, unit: &str| {
            x.as_u64()
                .map_or_else(|| "-".to_string(), |n| format!("{n}{unit}"))
        };
        out.push_str(&format!(
            "{:>8}  {:<24}  {:>9}  {:>10}  {}\n",
            h["attempt"],
            h["at_ms"].as_u64().map(render_ms).unwrap_or_default(),
            h["status"].as_str().unwrap_or("-"),
            or_dash(&h["latency_ms"], " ms"),
            h["error"].as_str().unwrap_or("")
        ));
    }
    out
}
