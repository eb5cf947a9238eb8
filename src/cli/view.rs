//! The view `dump` prints, built offline from an [`Inspector`] or online from a
//! running [`Outbox`] (the admin endpoint's `GET /v1/dump`).
//!
//! JSON shape (the first `dump --json`'s, with trees left out when not
//! selected, and `sink_state` added):
//! `{"meta":{..}, "offsets":[..], "sink_state":[..], "log":[..], "dlq":[..]}`.
//! `sink_state` has one object per sink with an offset:
//! `{"sink", "paused_at_ms", "retrying":[{"seq", "attempts", "counted",
//! "next_at_ms", "last_error"}]}`.
//! A payload is `{"text": ..}` when it is UTF-8 and `{"base64": ..}`
//! otherwise.

use base64::Engine;
use outbox::inspect::Inspector;
use outbox::{DeadLetter, Error, LogRecord, Outbox, Result, Retrying, Seq, SinkName};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Which tree(s) to show.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TreeSel {
    /// The records.
    Log,
    /// Each sink's committed offset.
    Offsets,
    /// Dead-lettered failures (the DLQ).
    Dlq,
    /// Format version, log id, creation time, extent.
    Meta,
    /// Each sink's operator pause and the records it is retrying.
    #[value(name = "sink_state")]
    #[serde(rename = "sink_state")]
    SinkState,
    /// Everything.
    #[default]
    All,
}

impl TreeSel {
    fn has(self, t: TreeSel) -> bool {
        self == TreeSel::All || self == t
    }
}

/// The selection, as flags or as the admin endpoint's query string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpQuery {
    /// Trees to show. Default all.
    #[serde(default)]
    pub tree: TreeSel,
    /// Only this sink's offset and DLQ entries, and only the log records it
    /// delivers (not those redriven to another sink).
    pub sink: Option<String>,
    /// Only log records and DLQ entries with a seq at least this.
    pub from: Option<u64>,
    /// At most this many log records and this many DLQ entries.
    pub limit: Option<usize>,
}

impl DumpQuery {
    fn sink_name(&self) -> Result<Option<SinkName>> {
        self.sink
            .as_deref()
            .map(|s| SinkName::new(s).map_err(|e| Error::config("--sink", e.to_string())))
            .transpose()
    }

    fn limit(&self) -> usize {
        self.limit.unwrap_or(usize::MAX)
    }
}

/// Builds the view from a stopped outbox.
///
/// # Errors
/// [`outbox::StoreError::Corrupted`] naming the tree and key of a value that
/// does not decode; [`outbox::ConfigError::Invalid`] for an invalid `--sink`.
pub fn offline(store: &Inspector, q: &DumpQuery) -> Result<Value> {
    let sink = q.sink_name()?;
    let log_id = store.log_id();
    let extent = store.extent()?;
    let reserved = store.seq_reserved()?;
    let next = extent.end.max(reserved);
    let members = store.members()?;
    let orphan = |name: &SinkName| {
        members
            .iter()
            .find(|m| m.name == name.as_str())
            .is_none_or(|m| m.orphaned_at_ms.is_some())
    };
    let mut out = Map::new();
    if q.tree.has(TreeSel::Meta) {
        out.insert(
            "meta".into(),
            json!({
                "format_version": store.format_version(),
                "log_id": log_id.simple().to_string(),
                "created_at_ms": store.created_at_ms(),
                "first_seq": extent.first.map(|s| s.0),
                "next_seq": next.0,
                "seq_reserved": reserved.0,
                "configured_sinks": members.iter().filter(|m| m.orphaned_at_ms.is_none()).map(|m| m.name.clone()).collect::<Vec<_>>(),
                "members": members.iter().map(|m| json!({"sink": m.name, "orphaned_at_ms": m.orphaned_at_ms})).collect::<Vec<_>>(),
            }),
        );
    }
    if q.tree.has(TreeSel::Offsets) {
        let offsets: Vec<Value> = store
            .offsets()?
            .into_iter()
            .filter(|o| sink.as_ref().is_none_or(|s| *s == o.sink))
            .map(|o| {
                let orphaned = orphan(&o.sink);
                json!({
                    "sink": o.sink.as_str(),
                    "offset": o.offset.0,
                    "lag": next.0.saturating_sub(o.offset.0),
                    "orphaned": orphaned,
                    "updated_at_ms": o.updated_at_ms,
                })
            })
            .collect();
        out.insert("offsets".into(), Value::Array(offsets));
    }
    if q.tree.has(TreeSel::SinkState) {
        let mut states = Vec::new();
        for o in store.offsets()? {
            if sink.as_ref().is_none_or(|s| *s == o.sink) {
                let paused = store.paused(&o.sink)?;
                states.push(sink_state_json(&o.sink, paused, &store.retrying(&o.sink)?));
            }
        }
        out.insert("sink_state".into(), Value::Array(states));
    }
    if q.tree.has(TreeSel::Log) {
        let from = q.from.unwrap_or(0);
        let mut log = Vec::new();
        for r in store.records(Seq(from)) {
            let r = r?;
            if !delivered_by(&r, sink.as_ref()) {
                continue;
            }
            if log.len() >= q.limit() {
                break;
            }
            log.push(log_json(&r));
        }
        out.insert("log".into(), Value::Array(log));
    }
    if q.tree.has(TreeSel::Dlq) {
        let dlq = dlq_values(store.dead_letters().iter(sink.as_ref()), q)?;
        out.insert("dlq".into(), dlq);
    }
    Ok(Value::Object(out))
}

/// Builds the view from a running outbox, through its read API: the same
/// shape as [`offline`], except that offsets carry no `updated_at_ms`.
///
/// # Errors
/// [`outbox::ConfigError::Invalid`] for an invalid sink; decoding errors.
pub fn online<T: Send + 'static>(outbox: &Outbox<T>, q: &DumpQuery) -> Result<Value> {
    let sink = q.sink_name()?;
    let status = super::status::online(outbox)?;
    let meta = outbox.meta()?;
    let mut out = Map::new();
    if q.tree.has(TreeSel::Meta) {
        let configured: Vec<&str> = status
            .sinks
            .iter()
            .filter(|s| !s.orphaned)
            .map(|s| s.sink.as_str())
            .collect();
        out.insert(
            "meta".into(),
            json!({
                "format_version": outbox::inspect::CURRENT_FORMAT,
                "log_id": status.log_id,
                "created_at_ms": meta.created_at_ms,
                "first_seq": meta.first_seq.map(|s| s.0),
                "next_seq": status.head,
                "configured_sinks": configured,
            }),
        );
    }
    if q.tree.has(TreeSel::Offsets) {
        let offsets: Vec<Value> = status
            .sinks
            .iter()
            .filter(|s| sink.as_ref().is_none_or(|n| n.as_str() == s.sink))
            .map(|s| {
                json!({
                    "sink": s.sink,
                    "offset": s.offset,
                    "lag": s.lag,
                    "orphaned": s.orphaned,
                    "updated_at_ms": null,
                })
            })
            .collect();
        out.insert("offsets".into(), Value::Array(offsets));
    }
    if q.tree.has(TreeSel::SinkState) {
        let mut states = Vec::new();
        for st in &status.sinks {
            if sink.as_ref().is_none_or(|n| n.as_str() == st.sink) {
                let name = SinkName::new(st.sink.as_str())
                    .map_err(|e| Error::config("sink", e.to_string()))?;
                states.push(sink_state_json(
                    &name,
                    st.paused_at_ms,
                    &outbox.retrying(&name)?,
                ));
            }
        }
        out.insert("sink_state".into(), Value::Array(states));
    }
    if q.tree.has(TreeSel::Log) {
        let mut from = Seq(q.from.unwrap_or(0));
        let mut log = Vec::new();
        // Pages, because a sink filter may skip records.
        'pages: loop {
            let page = outbox.read_log(from, 1024)?;
            let Some(last) = page.last().map(|r| r.seq) else {
                break;
            };
            for r in page {
                if !delivered_by(&r, sink.as_ref()) {
                    continue;
                }
                if log.len() >= q.limit() {
                    break 'pages;
                }
                log.push(log_json(&r));
            }
            from = last.next();
        }
        out.insert("log".into(), Value::Array(log));
    }
    if q.tree.has(TreeSel::Dlq) {
        let dlq = dlq_values(outbox.dlq_iter(sink.as_ref()), q)?;
        out.insert("dlq".into(), dlq);
    }
    Ok(Value::Object(out))
}

fn delivered_by(e: &LogRecord, sink: Option<&SinkName>) -> bool {
    match (sink, &e.target) {
        (Some(s), Some(t)) => s.as_str() == t,
        _ => true,
    }
}

/// The DLQ entries at or after `q.from`, at most `q.limit()`, read from
/// `dlq` as a stream: a large DLQ is never loaded whole.
fn dlq_values(dlq: impl Iterator<Item = Result<DeadLetter>>, q: &DumpQuery) -> Result<Value> {
    let from = q.from.unwrap_or(0);
    let mut out = Vec::new();
    for e in dlq {
        if out.len() >= q.limit() {
            break;
        }
        let e = e?;
        if e.seq.0 >= from {
            out.push(dlq_json(&e));
        }
    }
    Ok(Value::Array(out))
}

/// A payload: UTF-8 as text, anything else as base64.
pub fn payload_json(p: &[u8]) -> Value {
    match std::str::from_utf8(p) {
        Ok(s) => json!({"text": s}),
        Err(_) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(p)}),
    }
}

/// One log record as JSON, the same offline and through the admin endpoint.
fn log_json(r: &LogRecord) -> Value {
    json!({
        "seq": r.seq.0,
        "delivery_id": r.delivery_id.to_string(),
        "appended_at_ms": r.appended_at_ms,
        "target": r.target.as_deref(),
        "headers": r.record.headers,
        "payload": payload_json(&r.record.payload),
    })
}

/// One sink's state as JSON: its pause and the records it is retrying,
/// each with its last error.
fn sink_state_json(sink: &SinkName, paused_at_ms: Option<u64>, retrying: &[Retrying]) -> Value {
    json!({
        "sink": sink.as_str(),
        "paused_at_ms": paused_at_ms,
        "retrying": retrying.iter().map(|r| json!({
            "seq": r.seq.0,
            "attempts": r.attempts,
            "counted": r.counted,
            "next_at_ms": r.next_at_ms,
            "last_error": r.history.last().map(|a| a.error.as_str()),
        })).collect::<Vec<_>>(),
    })
}

/// One DLQ entry as JSON.
pub fn dlq_json(e: &DeadLetter) -> Value {
    json!({
        "sink": e.sink,
        "seq": e.seq.0,
        "delivery_id": e.delivery_id.to_string(),
        "error": e.error,
        "attempts": e.attempts,
        "failed_at_ms": e.failed_at_ms,
        "history": e.history.iter().map(|a| json!({
            "at_ms": a.at_ms,
            "latency_ms": a.latency_ms,
            "permanent": a.permanent,
            "error": a.error,
        })).collect::<Vec<_>>(),
        "headers": e.record.headers,
        "payload": payload_json(&e.record.payload),
    })
}

/// A payload value as one line of text: the text, or `base64:...`.
pub fn payload_text(v: &Value) -> String {
    if let Some(t) = v.get("text").and_then(Value::as_str) {
        t.to_string()
    } else {
        format!(
            "base64:{}",
            v.get("base64").and_then(Value::as_str).unwrap_or("")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox::DeliveryId;

    #[test]
    fn payloads_are_text_or_base64() {
        assert_eq!(payload_json(b"{\"a\":1}"), json!({"text": "{\"a\":1}"}));
        assert_eq!(payload_json(&[0xff, 0x00]), json!({"base64": "/wA="}));
        assert_eq!(payload_text(&payload_json(&[0xff, 0x00])), "base64:/wA=");
        assert_eq!(payload_text(&payload_json(b"hi")), "hi");
    }

    #[test]
    fn sink_filter_keeps_untargeted_and_own_records() {
        let s = SinkName::new("a").unwrap();
        let mut e = LogRecord {
            seq: Seq(0),
            delivery_id: DeliveryId {
                log_id: uuid::Uuid::from_u128(1),
                seq: Seq(0),
            },
            appended_at_ms: 0,
            target: None,
            record: outbox::Record::new(b"x".to_vec()),
        };
        assert!(delivered_by(&e, Some(&s)));
        e.target = Some("b".into());
        assert!(!delivered_by(&e, Some(&s)));
        assert!(delivered_by(&e, None));
        e.target = Some("a".into());
        assert!(delivered_by(&e, Some(&s)));
    }
}
