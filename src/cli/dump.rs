//! `outbox dump`: meta, offsets (orphans marked), the log and the DLQ.
//!
//! It opens the store itself, so it needs the daemon stopped: sled holds an
//! exclusive lock on the directory, and the error says so.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use clap::Args;
use outbox::codec::{DlqEntry, LogEntry};
use outbox::store::{Store, StoreOptions};
use outbox::{DeliveryId, Result, Seq};
use serde_json::{Value, json};

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DumpArgs) -> Result<ExitCode> {
    let store = Store::open(
        &args.data_dir,
        &StoreOptions {
            create: false,
            cache_bytes: 16 << 20,
        },
    )?;
    let view = collect(&store)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&view).unwrap_or_default()
        );
    } else {
        print_text(&view);
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything `dump` shows, as JSON.
pub fn collect(store: &Store) -> Result<Value> {
    let extent = store.extent()?;
    let configured = store.configured_sinks()?;
    let log_id = store.log_id();
    let offsets: Vec<Value> = store
        .offsets()?
        .into_iter()
        .map(|(name, o)| {
            let orphaned = configured.as_ref().is_some_and(|c| !c.contains(&name));
            json!({
                "sink": name.as_str(),
                "offset": o.next,
                "lag": extent.next.0.saturating_sub(o.next),
                "orphaned": orphaned,
                "updated_at_ms": o.updated_at_ms,
            })
        })
        .collect();
    let mut log = Vec::new();
    for batch in store.iter_batches(Seq(0)) {
        let batch = batch?;
        for (i, e) in batch.entries.iter().enumerate() {
            let seq = Seq(batch.first.0 + i as u64);
            log.push(log_json(log_id, seq, batch.header.appended_at_ms, e));
        }
    }
    let dlq: Vec<Value> = store
        .dlq_list(None)?
        .iter()
        .map(|e| dlq_json(log_id, e))
        .collect();
    Ok(json!({
        "meta": {
            "format_version": outbox::codec::FormatVersion::CURRENT as u8,
            "log_id": log_id.simple().to_string(),
            "created_at_ms": store.created_at_ms(),
            "first_seq": extent.first.map(|s| s.0),
            "next_seq": extent.next.0,
            "configured_sinks": configured.map(|c| c.iter().map(|n| n.to_string()).collect::<Vec<_>>()),
        },
        "offsets": offsets,
        "log": log,
        "dlq": dlq,
    }))
}

fn payload_json(p: &[u8]) -> Value {
    match std::str::from_utf8(p) {
        Ok(s) => json!({"text": s}),
        Err(_) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(p)}),
    }
}

fn log_json(log_id: uuid::Uuid, seq: Seq, at: u64, e: &LogEntry) -> Value {
    json!({
        "seq": seq.0,
        "delivery_id": DeliveryId { log_id, seq: e.origin_seq(seq) }.to_string(),
        "appended_at_ms": at,
        "target": e.target,
        "headers": e.record.headers,
        "payload": payload_json(&e.record.payload),
    })
}

fn dlq_json(log_id: uuid::Uuid, e: &DlqEntry) -> Value {
    json!({
        "sink": e.sink,
        "seq": e.seq,
        "delivery_id": DeliveryId { log_id, seq: Seq(e.origin) }.to_string(),
        "error": e.error,
        "attempts": e.attempts,
        "failed_at_ms": e.failed_at_ms,
        "headers": e.record.headers,
        "payload": payload_json(&e.record.payload),
    })
}

fn payload_text(v: &Value) -> String {
    if let Some(t) = v.get("text").and_then(Value::as_str) {
        t.to_string()
    } else {
        format!(
            "base64:{}",
            v.get("base64").and_then(Value::as_str).unwrap_or("")
        )
    }
}

fn print_text(v: &Value) {
    let m = &v["meta"];
    println!("== meta");
    println!("format_version  {}", m["format_version"]);
    println!("log_id          {}", m["log_id"].as_str().unwrap_or(""));
    println!("created_at_ms   {}", m["created_at_ms"]);
    println!("first_seq       {}", m["first_seq"]);
    println!("next_seq        {}", m["next_seq"]);
    println!("== offsets");
    for o in v["offsets"].as_array().into_iter().flatten() {
        println!(
            "{:<24} offset {:>10}  lag {:>10}{}",
            o["sink"].as_str().unwrap_or(""),
            o["offset"],
            o["lag"],
            if o["orphaned"].as_bool() == Some(true) {
                "  (orphaned)"
            } else {
                ""
            }
        );
    }
    println!("== log");
    for r in v["log"].as_array().into_iter().flatten() {
        let target = r["target"]
            .as_str()
            .map(|t| format!(" -> {t}"))
            .unwrap_or_default();
        println!(
            "{:>10} {}{}  {}",
            r["seq"],
            r["delivery_id"].as_str().unwrap_or(""),
            target,
            payload_text(&r["payload"])
        );
    }
    println!("== dlq");
    for e in v["dlq"].as_array().into_iter().flatten() {
        println!(
            "{}/{} {} attempts={} error={}  {}",
            e["sink"].as_str().unwrap_or(""),
            e["seq"],
            e["delivery_id"].as_str().unwrap_or(""),
            e["attempts"],
            e["error"].as_str().unwrap_or(""),
            payload_text(&e["payload"])
        );
    }
}
