//! Routing: which records a sink receives, decided from the record alone.
//!
//! A [`FilterSpec`] is what the configuration says; [`Filter::new`] checks
//! and compiles it once, and [`Filter::matches`] is a pure function of the
//! record.
//!
//! Invariants:
//! - every condition must hold (AND); within one condition, any pattern may
//!   match (OR); a filter without conditions passes every record;
//! - a header condition holds when some header of that name (compared ASCII
//!   case-insensitively, as [`Record::header`] does) has a value that a
//!   pattern matches; a record without the header fails it;
//! - a JSON condition holds when the payload parses as JSON and the value at
//!   the pointer (RFC 6901) is a string a pattern matches, or a number or
//!   boolean whose JSON text (`500`, `true`) a pattern matches; a payload
//!   that is not JSON, a missing value, `null`, an array or an object fails
//!   it;
//! - patterns are globs matched against the whole value, case-sensitively:
//!   `*` matches any run of characters (`/` included), `?` one character,
//!   `[abc]` one of a set, `{a,b}` either, and `\` escapes the next
//!   character; a pattern without these matches exactly its own text.

use std::collections::BTreeMap;
use std::fmt;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use crate::error::ConfigError;
use crate::types::Record;

/// A sink's filter, as configured.
///
/// In TOML, under a `[[sinks]]` table:
///
/// ```toml
/// [sinks.filter.headers]
/// event-type = ["alert.*", "incident.opened"]
/// [sinks.filter.json]
/// "/severity" = ["high", "critical"]
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Header name to the patterns its value may match.
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// JSON pointer into the payload to the patterns its value may match.
    #[serde(default)]
    pub json: BTreeMap<String, Vec<String>>,
}

impl FilterSpec {
    /// Whether the spec has no condition, and so passes every record.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.json.is_empty()
    }
}

/// One line for `status`: `event-type=alert.*|incident.opened AND
/// /severity=high|critical`, or `*` when the spec has no condition.
impl fmt::Display for FilterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("*");
        }
        let conditions = self.headers.iter().chain(&self.json);
        for (i, (key, patterns)) in conditions.enumerate() {
            if i > 0 {
                f.write_str(" AND ")?;
            }
            write!(f, "{key}={}", patterns.join("|"))?;
        }
        Ok(())
    }
}

/// A compiled [`FilterSpec`].
#[derive(Clone, Debug)]
pub struct Filter {
    headers: Vec<(String, GlobSet)>,
    json: Vec<(String, GlobSet)>,
}

impl Filter {
    /// Checks and compiles `spec`; `param` (e.g. `sinks.alerts.filter`)
    /// prefixes the parameter named in an error.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the entry, e.g.
    /// `sinks.alerts.filter.headers.event-type[1]`: an empty header name,
    /// two header names that differ only in case, a JSON pointer that does
    /// not start with `/`, an empty list of patterns, or a pattern that is
    /// not a valid glob.
    pub fn new(spec: &FilterSpec, param: &str) -> Result<Filter, ConfigError> {
        let mut headers = Vec::with_capacity(spec.headers.len());
        for (name, patterns) in &spec.headers {
            let key = format!("{param}.headers.{name}");
            if name.is_empty() {
                return Err(ConfigError::invalid(key, "the header name is empty"));
            }
            if headers
                .iter()
                .any(|(n, _): &(String, GlobSet)| n.eq_ignore_ascii_case(name))
            {
                return Err(ConfigError::invalid(
                    key,
                    "is given twice (header names are compared case-insensitively)",
                ));
            }
            headers.push((name.clone(), compile(&key, patterns)?));
        }
        let mut json = Vec::with_capacity(spec.json.len());
        for (pointer, patterns) in &spec.json {
            let key = format!("{param}.json.{pointer}");
            if !pointer.starts_with('/') {
                return Err(ConfigError::invalid(
                    key,
                    "is not a JSON pointer: it must start with `/`, e.g. \"/severity\"",
                ));
            }
            json.push((pointer.clone(), compile(&key, patterns)?));
        }
        Ok(Filter { headers, json })
    }

    /// Whether `record` passes: see the module docs.
    pub fn matches(&self, record: &Record) -> bool {
        let headers_hold = self.headers.iter().all(|(name, set)| {
            record
                .headers
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case(name) && set.is_match(v))
        });
        if !headers_hold {
            return false;
        }
        if self.json.is_empty() {
            return true;
        }
        // Parsed once per record, and only when a JSON condition exists.
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&record.payload) else {
            return false;
        };
        self.json
            .iter()
            .all(|(pointer, set)| match doc.pointer(pointer) {
                Some(serde_json::Value::String(s)) => set.is_match(s),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    set.is_match(v.to_string())
                }
                _ => false,
            })
    }
}

fn compile(key: &str, patterns: &[String]) -> Result<GlobSet, ConfigError> {
    if patterns.is_empty() {
        return Err(ConfigError::invalid(
            key,
            "lists no pattern, so no record could pass; remove it or add a pattern",
        ));
    }
    let mut set = GlobSetBuilder::new();
    for (i, p) in patterns.iter().enumerate() {
        set.add(glob(p).map_err(|e| {
            ConfigError::invalid(
                format!("{key}[{i}]"),
                format!("`{p}` is not a valid pattern: {}", e.kind()),
            )
        })?);
    }
    set.build()
        .map_err(|e| ConfigError::invalid(key, format!("the patterns do not compile: {e}")))
}

fn glob(pattern: &str) -> std::result::Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        // Values are not paths: `*` crosses `/`.
        .literal_separator(false)
        .backslash_escape(true)
        .case_insensitive(false)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(headers: &[(&str, &[&str])], json: &[(&str, &[&str])]) -> FilterSpec {
        let map = |pairs: &[(&str, &[&str])]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect()
        };
        FilterSpec {
            headers: map(headers),
            json: map(json),
        }
    }

    fn filter(headers: &[(&str, &[&str])], json: &[(&str, &[&str])]) -> Filter {
        Filter::new(&spec(headers, json), "sinks.s.filter").unwrap()
    }

    fn typed(event_type: &str) -> Record {
        Record::new(b"{}".to_vec()).with_header("event-type", event_type)
    }

    #[test]
    fn globs_and_exact_values_on_one_header() {
        let f = filter(&[("event-type", &["alert.*", "incident.opened"])], &[]);
        for (value, want) in [
            ("alert.disk", true),
            ("alert.", true),
            ("alert.a/b", true),
            ("incident.opened", true),
            ("incident.closed", false),
            ("alert", false),
            ("ALERT.disk", false),
            ("xalert.disk", false),
        ] {
            assert_eq!(f.matches(&typed(value)), want, "{value}");
        }
        assert!(!f.matches(&Record::new(b"{}".to_vec())), "no header");
    }

    #[test]
    fn header_names_are_case_insensitive_and_any_repeat_may_match() {
        let f = filter(&[("Event-Type", &["alert.*"])], &[]);
        assert!(f.matches(&Record::new(vec![]).with_header("EVENT-TYPE", "alert.x")));
        let twice = Record::new(vec![])
            .with_header("event-type", "audit")
            .with_header("event-type", "alert.y");
        assert!(f.matches(&twice));
    }

    #[test]
    fn several_headers_must_all_hold() {
        let f = filter(&[("event-type", &["alert.*"]), ("tenant", &["blue"])], &[]);
        let both = typed("alert.cpu").with_header("tenant", "blue");
        assert!(f.matches(&both));
        assert!(!f.matches(&typed("alert.cpu").with_header("tenant", "green")));
        assert!(!f.matches(&typed("alert.cpu")));
        assert!(!f.matches(&Record::new(vec![]).with_header("tenant", "blue")));
    }

    #[test]
    fn escapes_and_classes_work() {
        let f = filter(&[("k", &["a\\*", "v[12]", "{x,y}z", "?"])], &[]);
        let m = |v: &str| f.matches(&Record::new(vec![]).with_header("k", v));
        assert!(m("a*") && !m("ab"));
        assert!(m("v1") && m("v2") && !m("v3"));
        assert!(m("xz") && m("yz") && !m("zz"));
        assert!(m("q") && !m("qq") && !m(""));
    }

    #[test]
    fn json_pointers_match_strings_numbers_and_booleans() {
        let f = filter(
            &[],
            &[("/severity", &["high", "critical"]), ("/code", &["5*"])],
        );
        let rec = |s: &str| Record::new(s.as_bytes().to_vec());
        assert!(f.matches(&rec(r#"{"severity":"high","code":503}"#)));
        assert!(f.matches(&rec(r#"{"severity":"critical","code":"5xx"}"#)));
        assert!(!f.matches(&rec(r#"{"severity":"low","code":503}"#)));
        assert!(!f.matches(&rec(r#"{"severity":"high","code":404}"#)));
        assert!(!f.matches(&rec(r#"{"severity":"high"}"#)), "missing");
        assert!(!f.matches(&rec(r#"{"severity":"high","code":null}"#)));
        assert!(!f.matches(&rec(r#"{"severity":["high"],"code":503}"#)));
        assert!(!f.matches(&rec("not json")));
        assert!(!f.matches(&rec("")));

        let nested = filter(&[], &[("/alert/labels/a~1b", &["true"])]);
        assert!(nested.matches(&rec(r#"{"alert":{"labels":{"a/b":true}}}"#)));
        assert!(!nested.matches(&rec(r#"{"alert":{"labels":{"a/b":false}}}"#)));
        let arr = filter(&[], &[("/0/id", &["7"])]);
        assert!(arr.matches(&rec(r#"[{"id":7}]"#)));
    }

    #[test]
    fn headers_and_json_are_anded() {
        let f = filter(&[("event-type", &["alert.*"])], &[("/severity", &["high"])]);
        let r = |t: &str, body: &str| {
            Record::new(body.as_bytes().to_vec()).with_header("event-type", t)
        };
        assert!(f.matches(&r("alert.a", r#"{"severity":"high"}"#)));
        assert!(!f.matches(&r("audit", r#"{"severity":"high"}"#)));
        assert!(!f.matches(&r("alert.a", r#"{"severity":"low"}"#)));
    }

    #[test]
    fn an_empty_filter_passes_everything() {
        let f = Filter::new(&FilterSpec::default(), "f").unwrap();
        assert!(f.matches(&Record::new(b"\xff".to_vec())));
        assert_eq!(FilterSpec::default().to_string(), "*");
    }

    #[test]
    fn bad_specs_name_the_entry() {
        let cases: [(FilterSpec, &str); 5] = [
            (
                spec(&[("event-type", &["ok", "a[b"])], &[]),
                "headers.event-type[1]",
            ),
            (spec(&[("event-type", &[])], &[]), "headers.event-type"),
            (spec(&[("", &["x"])], &[]), "headers."),
            (spec(&[], &[("severity", &["high"])]), "json.severity"),
            (
                spec(&[("Event-Type", &["a"]), ("event-type", &["b"])], &[]),
                "given twice",
            ),
        ];
        for (s, want) in cases {
            let e = Filter::new(&s, "sinks.s.filter").unwrap_err();
            assert!(matches!(e, ConfigError::Invalid { .. }), "{e}");
            let e = e.to_string();
            assert!(e.contains("sinks.s.filter.") && e.contains(want), "{e}");
        }
    }

    #[test]
    fn display_lists_every_condition() {
        let s = spec(
            &[("event-type", &["alert.*", "incident.opened"])],
            &[("/severity", &["high", "critical"])],
        );
        assert_eq!(
            s.to_string(),
            "event-type=alert.*|incident.opened AND /severity=high|critical"
        );
    }

    #[test]
    fn the_spec_deserializes_and_refuses_unknown_keys() {
        let s: FilterSpec = serde_json::from_str(
            r#"{"headers":{"event-type":["alert.*"]},"json":{"/severity":["high"]}}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            spec(&[("event-type", &["alert.*"])], &[("/severity", &["high"])])
        );
        let e = serde_json::from_str::<FilterSpec>(r#"{"header":{}}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `header`"), "{e}");
    }
}
