//! `outbox dump`: meta, offsets (orphans marked), each sink's state (its
//! pause and the records it is retrying), the log and the DLQ.
//!
//! Offline it opens the store read-only in spirit (it writes nothing), so
//! it needs the daemon stopped: sled holds an exclusive lock on the
//! directory, and the error says so and points at `--admin URL`, which asks
//! the running daemon's admin endpoint (`GET /v1/dump`) instead.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use outbox::Result;
use serde_json::{Value, json};

use super::client::{self, AdminArgs};
use super::view::{self, DumpQuery, TreeSel, payload_text};

/// Output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Sections for humans.
    Text,
    /// One JSON object: `{"meta", "offsets", "sink_state", "log", "dlq"}`.
    Json,
    /// One JSON object per line, each with a `"tree"` field.
    Ndjson,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The data directory (of a stopped outbox).
    #[arg(long, value_name = "DIR", required_unless_present = "admin")]
    pub data_dir: Option<PathBuf>,
    /// Which tree to show.
    #[arg(long, value_enum, default_value_t = TreeSel::All)]
    pub tree: TreeSel,
    /// Only this sink's offset and DLQ, and the log records it delivers.
    #[arg(long, value_name = "NAME")]
    pub sink: Option<String>,
    /// Only log records and DLQ entries with seq >= SEQ.
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,
    /// At most N log records and N DLQ entries.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Same as --format json (kept from the first release).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

pub fn run(args: DumpArgs) -> Result<ExitCode> {
    let q = DumpQuery {
        tree: args.tree,
        sink: args.sink.clone(),
        from: args.from,
        limit: args.limit,
    };
    let view = match &args.data_dir {
        Some(dir) if args.admin.admin.is_none() => {
            view::offline(&super::inspect_existing(dir)?, &q)?
        }
        _ => {
            let query = serde_urlencoded(&q);
            client::call(
                &args.admin,
                reqwest::Method::GET,
                &format!("/v1/dump?{query}"),
                None,
            )?
        }
    };
    let format = if args.json { Format::Json } else { args.format };
    let out = match format {
        Format::Json => serde_json::to_string_pretty(&view).unwrap_or_default() + "\n",
        Format::Ndjson => ndjson(&view),
        Format::Text => text(&view),
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// The query string for `/v1/dump`.
fn serde_urlencoded(q: &DumpQuery) -> String {
    let mut parts = vec![format!(
        "tree={}",
        match q.tree {
            TreeSel::Log => "log",
            TreeSel::Offsets => "offsets",
            TreeSel::Dlq => "dlq",
            TreeSel::Meta => "meta",
            TreeSel::SinkState => "sink_state",
            TreeSel::All => "all",
        }
    )];
    if let Some(s) = &q.sink {
        // Sink names are [A-Za-z0-9_.-]; anything else is refused by the
        // daemon, so percent-encode only to keep the URL well-formed.
        let enc: String = s
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        parts.push(format!("sink={enc}"));
    }
    if let Some(f) = q.from {
        parts.push(format!("from={f}"));
    }
    if let Some(l) = q.limit {
        parts.push(format!("limit={l}"));
    }
    parts.join("&")
}

/// One object per line, each tagged with its tree.
pub fn ndjson(v: &Value) -> String {
    let mut out = String::new();
    let mut line = |tree: &str, item: &Value| {
        let mut obj = serde_json::Map::new();
        obj.insert("tree".into(), json!(tree));
        if let Some(m) = item.as_object() {
            obj.extend(m.clone());
        }
        out += &Value::Object(obj).to_string();
        out.push('\n');
    };
    if let Some(m) = v.get("meta") {
        line("meta", m);
    }
    for tree in ["offsets", "sink_state", "log", "dlq"] {
        for item in v.get(tree).and_then(Value::as_array).into_iter().flatten() {
            line(tree, item);
        }
    }
    out
}

/// The human form: one section per tree shown.
pub fn text(v: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    if let Some(m) = v.get("meta") {
        out += "== meta\n";
        out += &format!("format_version  {}\n", m["format_version"]);
        out += &format!("log_id          {}\n", s(&m["log_id"]));
        out += &format!("created_at_ms   {}\n", m["created_at_ms"]);
        out += &format!("first_seq       {}\n", m["first_seq"]);
        out += &format!("next_seq        {}\n", m["next_seq"]);
    }
    if let Some(offsets) = v.get("offsets").and_then(Value::as_array) {
        out += "== offsets\n";
        for o in offsets {
            out += &format!(
                "{:<24} offset {:>10}  lag {:>10}{}\n",
                s(&o["sink"]),
                o["offset"],
                o["lag"],
                if o["orphaned"].as_bool() == Some(true) {
                    "  (orphaned)"
                } else {
                    ""
                }
            );
        }
    }
    if let Some(states) = v.get("sink_state").and_then(Value::as_array) {
        out += "== sink_state\n";
        for st in states {
            let retrying = st["retrying"].as_array().map_or(&[][..], Vec::as_slice);
            out += &format!(
                "{:<24} {}  retrying {}\n",
                s(&st["sink"]),
                match st["paused_at_ms"].as_u64() {
                    Some(at) => format!("paused at {at}"),
                    None => "running".to_string(),
                },
                retrying.len()
            );
            for r in retrying {
                out += &format!(
                    "  seq {} attempts={} next_at_ms={} last_error={}\n",
                    r["seq"],
                    r["attempts"],
                    r["next_at_ms"],
                    s(&r["last_error"])
                );
            }
        }
    }
    if let Some(log) = v.get("log").and_then(Value::as_array) {
        out += "== log\n";
        for r in log {
            let target = r["target"]
                .as_str()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default();
            out += &format!(
                "{:>10} {}{}  {}\n",
                r["seq"],
                s(&r["delivery_id"]),
                target,
                payload_text(&r["payload"])
            );
        }
    }
    if let Some(dlq) = v.get("dlq").and_then(Value::as_array) {
        out += "== dlq\n";
        for e in dlq {
            out += &format!(
                "{}/{} {} attempts={} error={}  {}\n",
                s(&e["sink"]),
                e["seq"],
                s(&e["delivery_id"]),
                e["attempts"],
                s(&e["error"]),
                payload_text(&e["payload"])
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({
            "meta": {"format_version": 1, "log_id": "ab", "created_at_ms": 5, "first_seq": 0, "next_seq": 2},
            "offsets": [{"sink": "out", "offset": 1, "lag": 1, "orphaned": false, "updated_at_ms": 9}],
            "log": [{"seq": 1, "delivery_id": "msg_ab_1", "target": null, "headers": [], "payload": {"text": "{\"a\":1}"}}],
            "dlq": [],
        })
    }

    #[test]
    fn ndjson_tags_each_line_with_its_tree() {
        let out = ndjson(&sample());
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["tree"], "meta");
        assert_eq!(lines[1]["tree"], "offsets");
        assert_eq!(lines[1]["sink"], "out");
        assert_eq!(lines[2]["tree"], "log");
        assert_eq!(lines[2]["delivery_id"], "msg_ab_1");
    }

    #[test]
    fn text_shows_only_the_sections_present() {
        let t = text(&json!({"dlq": []}));
        assert_eq!(t, "== dlq\n");
        let t = text(&sample());
        assert!(t.contains("== meta\n") && t.contains("== log\n"));
        assert!(t.contains("msg_ab_1  {\"a\":1}"), "{t}");
    }

    #[test]
    fn query_string_carries_the_selection() {
        let q = DumpQuery {
            tree: TreeSel::Dlq,
            sink: Some("web-1".into()),
            from: Some(3),
            limit: Some(10),
        };
        assert_eq!(serde_urlencoded(&q), "tree=dlq&sink=web-1&from=3&limit=10");
        // The admin endpoint reads the same name back.
        let q = DumpQuery {
            tree: TreeSel::SinkState,
            ..DumpQuery::default()
        };
        assert_eq!(serde_urlencoded(&q), "tree=sink_state");
        let back: DumpQuery = serde_json::from_value(json!({"tree": "sink_state"})).unwrap();
        assert_eq!(back.tree, TreeSel::SinkState);
    }

    #[test]
    fn text_lists_each_sink_s_pause_and_retries() {
        let t = text(&json!({"sink_state": [
            {"sink": "out", "paused_at_ms": null, "retrying": []},
            {"sink": "web", "paused_at_ms": 7, "retrying": [
                {"seq": 4, "attempts": 2, "counted": 2, "next_at_ms": 90, "last_error": "HTTP 503"}
            ]},
        ]}));
        assert_eq!(
            t,
            "== sink_state\n\
             out                      running  retrying 0\n\
             web                      paused at 7  retrying 1\n\
             \x20 seq 4 attempts=2 next_at_ms=90 last_error=HTTP 503\n"
        );
    }
}
