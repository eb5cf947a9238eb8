//! `outbox sinks pause NAME` and `outbox sinks resume NAME`: an operator's
//! pause, through a running daemon's admin endpoint (`POST
//! /v1/sinks/pause`, `POST /v1/sinks/resume`) or, for a stopped outbox,
//! in its data directory.
//!
//! A paused sink delivers nothing and dead-letters nothing: its records
//! stay in the log and its lag grows (its `on_full` policy still applies).
//! The pause is durable when the command returns and holds across restarts
//! until it is resumed. Each change is logged by the daemon, shows in
//! `outbox status` (state `paused`, and since when) and in the
//! `outbox_breaker_state{state="paused"}` gauge.

use std::process::ExitCode;

use outbox::{Error, Result, SinkName};
use serde_json::{Value, json};

use super::client;
use super::membership::SinkArgs;

/// Pauses (`pause`) or resumes the sink and prints what changed.
///
/// # Errors
/// [`outbox::ConfigError::Invalid`] (exit 2) for a bad name or a sink the
/// outbox does not know; the admin client's errors; storage errors offline.
pub fn run(a: SinkArgs, pause: bool) -> Result<ExitCode> {
    let sink = SinkName::new(a.sink.clone()).map_err(|e| Error::config("NAME", e.to_string()))?;
    let v = match (&a.admin.admin, &a.data_dir) {
        (None, Some(dir)) => offline(dir, &sink, pause)?,
        _ => client::call(
            &a.admin,
            reqwest::Method::POST,
            if pause {
                "/v1/sinks/pause"
            } else {
                "/v1/sinks/resume"
            },
            Some(json!({"sink": sink.as_str()})),
        )?,
    };
    if a.json {
        println!("{v}");
    } else {
        println!("{}", text(&v));
    }
    Ok(ExitCode::SUCCESS)
}

/// The answer of both routes: `{"sink", "paused": bool, "paused_at_ms",
/// "changed": bool}`.
pub fn answer(sink: &SinkName, paused_at_ms: Option<u64>, changed: bool) -> Value {
    json!({
        "sink": sink.as_str(),
        "paused": paused_at_ms.is_some(),
        "paused_at_ms": paused_at_ms,
        "changed": changed,
    })
}

fn text(v: &Value) -> String {
    let sink = v["sink"].as_str().unwrap_or_default();
    match (v["paused"].as_bool(), v["changed"].as_bool()) {
        (Some(true), Some(true)) => format!("paused sink {sink}"),
        (Some(true), _) => format!(
            "sink {sink} was already paused (since {} ms after the epoch)",
            v["paused_at_ms"]
        ),
        (_, Some(true)) => format!("resumed sink {sink}"),
        _ => format!("sink {sink} was not paused"),
    }
}

fn offline(dir: &std::path::Path, sink: &SinkName, pause: bool) -> Result<Value> {
    let store = super::open_existing(dir)?;
    if !store.members()?.iter().any(|m| m.name == sink.as_str()) {
        return Err(Error::config(
            "NAME",
            format!("the outbox in {} has no sink `{sink}`", dir.display()),
        ));
    }
    let before = store.paused(sink)?;
    let (now, changed) = match (pause, before) {
        (true, Some(p)) => (Some(p), false),
        (true, None) => (Some(super::clock::now_ms()), true),
        (false, before) => (None, before.is_some()),
    };
    if changed {
        store.set_paused(sink, now)?;
    }
    Ok(answer(sink, now, changed))
}
