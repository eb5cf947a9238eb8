//! Which DLQ entries a triage command acts on: a pure function of the
//! entries, the filter and the time the command started.
//!
//! Invariants:
//! - an entry is selected only when it passes every given condition: its
//!   seq is among `--seq` (when given), it was dead-lettered in the window
//!   `since <= failed_at < until`, and `--error-match` finds a match in
//!   its last error;
//! - selection keeps the order of the input (seq order, as the DLQ tree
//!   stores it) and stops after `--limit` entries, so `--limit N` takes the
//!   N oldest seqs that match;
//! - a relative time (`2h`) counts back from the `now` the caller passes,
//!   once, so every entry is judged against the same instant.
//!
//! The same [`FilterQuery`] is read from the flags and from the admin
//! endpoint's query string, so offline and online select alike.

use std::collections::BTreeSet;

use outbox::DeadLetter;
use outbox::{Error, Result};
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

/// Compiled size cap for `--error-match`: a pattern is operator input, and
/// through the admin endpoint it comes over the network.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The filter as text: flags, or the admin endpoint's query parameters
/// (`since`, `until`, `error_match`, `limit`, `seqs` as `1,2,3`).
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterQuery {
    /// Only entries dead-lettered at or after this time: RFC 3339
    /// (2026-03-01T12:00:00Z) or a duration back from now (2h, 30m, 7d).
    #[arg(long, value_name = "TIME")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only entries dead-lettered before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Only entries whose last error matches this regular expression
    /// (Rust `regex` syntax; `(?i)` for case-insensitive).
    #[arg(long, value_name = "REGEX")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_match: Option<String>,
    /// At most N entries: the N lowest seqs that match.
    #[arg(long, value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl FilterQuery {
    /// Whether a condition that chooses entries (not just `--limit`) is given.
    pub fn chooses(&self) -> bool {
        self.since.is_some() || self.until.is_some() || self.error_match.is_some()
    }
}

/// A checked filter, ready to apply.
#[derive(Debug, Clone)]
pub struct Filter {
    seqs: Option<BTreeSet<u64>>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    error: Option<Regex>,
    limit: Option<usize>,
}

impl Filter {
    /// Checks `q` and the optional seqs; relative times count back from
    /// `now_ms` (ms since the Unix epoch).
    ///
    /// # Errors
    /// [`outbox::ConfigError::Invalid`] naming the flag: a time that is
    /// neither RFC 3339 nor a duration, a window whose start is not before
    /// its end, an invalid or oversized regular expression, or a limit of 0.
    pub fn new(q: &FilterQuery, seqs: Option<&[u64]>, now_ms: u64) -> Result<Filter> {
        let since_ms = q
            .since
            .as_deref()
            .map(|s| parse_time(s, now_ms).map_err(|r| Error::config("--since", r)))
            .transpose()?;
        let until_ms = q
            .until
            .as_deref()
            .map(|s| parse_time(s, now_ms).map_err(|r| Error::config("--until", r)))
            .transpose()?;
        if let (Some(a), Some(b)) = (since_ms, until_ms)
            && a >= b
        {
            return Err(Error::config(
                "--since",
                format!(
                    "the window is empty: --since ({}) is not before --until ({})",
                    render_ms(a),
                    render_ms(b)
                ),
            ));
        }
        let error = q
            .error_match
            .as_deref()
            .map(|p| {
                RegexBuilder::new(p)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| Error::config("--error-match", e.to_string()))
            })
            .transpose()?;
        if q.limit == Some(0) {
            return Err(Error::config("--limit", "must be at least 1"));
        }
        Ok(Filter {
            seqs: seqs.map(|s| s.iter().copied().collect()),
            since_ms,
            until_ms,
            error,
            limit: q.limit,
        })
    }

    /// Whether the filter lets every entry through (no seqs, no
    /// condition, no limit).
    pub fn is_everything(&self) -> bool {
        self.seqs.is_none()
            && self.since_ms.is_none()
            && self.until_ms.is_none()
            && self.error.is_none()
            && self.limit.is_none()
    }

    /// The most entries to take: `--limit`, or no limit.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(usize::MAX)
    }

    /// Whether one entry passes every condition (the limit aside).
    pub fn matches(&self, e: &DeadLetter) -> bool {
        self.seqs.as_ref().is_none_or(|s| s.contains(&e.seq.0))
            && self.since_ms.is_none_or(|t| e.failed_at_ms >= t)
            && self.until_ms.is_none_or(|t| e.failed_at_ms < t)
            && self.error.as_ref().is_none_or(|r| r.is_match(&e.error))
    }

    /// The entries that pass, in input order, at most `limit` of them.
    /// Stops reading the input once the limit is reached. The reference for
    /// what the streaming selections (`dlq_select`, `dlq_page`)
    /// take with [`Filter::matches`] and [`Filter::limit`].
    #[cfg(test)]
    pub fn select<I: IntoIterator<Item = DeadLetter>>(&self, entries: I) -> Vec<DeadLetter> {
        entries
            .into_iter()
            .filter(|e| self.matches(e))
            .take(self.limit.unwrap_or(usize::MAX))
            .collect()
    }
}

/// Reads `--since`/`--until`: an RFC 3339 time, or a duration counted back
/// from `now_ms` (`2h`, `90m`, `1h 30m`, `7d`, `2 hours ago`, ISO `PT2H`).
/// Returns ms since the Unix epoch.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_time(s: &str, now_ms: u64) -> std::result::Result<u64, String> {
    let s = s.trim();
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return u64::try_from(t.as_millisecond())
            .map_err(|_| format!("`{s}` is before 1970-01-01T00:00:00Z"));
    }
    // A span, so that days and weeks are accepted; counted as 24 h and 7
    // days, since a triage window needs no calendar. Months and years are
    // refused: their length is not fixed.
    let back = s
        .parse::<jiff::Span>()
        .and_then(|span| span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()));
    match back {
        // "2h" and "2h ago" (which jiff reads as negative) both count back.
        Ok(d) => {
            let back = u64::try_from(d.abs().as_millis()).unwrap_or(u64::MAX);
            Ok(now_ms.saturating_sub(back))
        }
        Err(_) => Err(format!(
            "`{s}` is neither an RFC 3339 time (2026-03-01T12:00:00Z, 2026-03-01T13:00:00+01:00) nor a duration back from now (30s, 2h, 1h30m, 7d, 2 weeks)"
        )),
    }
}

/// A time in ms since the Unix epoch as RFC 3339 (UTC, ms precision).
pub fn render_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| format!("{ms} ms"), |t| format!("{t:.3}"))
}

/// Seqs as compact ascending ranges: `0-2, 5, 9-12`. Every seq is named,
/// so a dry run shows exactly what would change.
pub fn ranges(seqs: &[u64]) -> String {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut iter = sorted.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if end == start {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox::{DeliveryId, Record, Seq};

    const H: u64 = 3_600_000;
    /// 2026-03-01T12:00:00Z
    const NOON: u64 = 1_772_366_400_000;

    fn entry(seq: u64, failed_at_ms: u64, error: &str) -> DeadLetter {
        DeadLetter {
            sink: "web".into(),
            seq: Seq(seq),
            delivery_id: DeliveryId {
                log_id: uuid::Uuid::from_u128(1),
                seq: Seq(seq),
            },
            record: Record::new(format!("{{\"n\":{seq}}}").into_bytes()),
            error: error.into(),
            attempts: 1,
            failed_at_ms,
            history: Vec::new(),
        }
    }

    /// Seqs 0..6, dead-lettered an hour apart ending at noon, alternating
    /// errors.
    fn dlq() -> Vec<DeadLetter> {
        (0..6)
            .map(|s| {
                let err = if s % 2 == 0 {
                    "webhook answered 400 Bad Request"
                } else {
                    "connect timeout after 10s"
                };
                entry(s, NOON - (5 - s) * H, err)
            })
            .collect()
    }

    fn q(
        since: Option<&str>,
        until: Option<&str>,
        re: Option<&str>,
        limit: Option<usize>,
    ) -> FilterQuery {
        FilterQuery {
            since: since.map(str::to_string),
            until: until.map(str::to_string),
            error_match: re.map(str::to_string),
            limit,
        }
    }

    fn seqs(f: &Filter) -> Vec<u64> {
        f.select(dlq()).iter().map(|e| e.seq.0).collect()
    }

    #[test]
    fn times_are_rfc3339_or_durations_back_from_now() {
        assert_eq!(parse_time("2026-03-01T12:00:00Z", 0), Ok(NOON));
        assert_eq!(parse_time("2026-03-01T13:00:00+01:00", 0), Ok(NOON));
        assert_eq!(parse_time("2026-03-01T12:00:00.250Z", 0), Ok(NOON + 250));
        assert_eq!(parse_time("2h", NOON), Ok(NOON - 2 * H));
        assert_eq!(parse_time("90m", NOON), Ok(NOON - 90 * 60_000));
        assert_eq!(parse_time("1h30m", NOON), Ok(NOON - 90 * 60_000));
        assert_eq!(parse_time("2 hours ago", NOON), Ok(NOON - 2 * H));
        assert_eq!(parse_time("PT2H", NOON), Ok(NOON - 2 * H));
        assert_eq!(parse_time("45s", NOON), Ok(NOON - 45_000));
        assert_eq!(parse_time("7d", NOON), Ok(NOON - 7 * 24 * H));
        assert_eq!(parse_time("2 days", NOON), Ok(NOON - 48 * H));
        assert_eq!(parse_time("1w", NOON), Ok(NOON - 7 * 24 * H));
        assert!(parse_time("1 month", NOON).is_err());
        // Further back than the epoch clamps to it rather than wrapping.
        assert_eq!(parse_time("2h", H), Ok(0));
        let e = parse_time("yesterday", NOON).unwrap_err();
        assert!(e.contains("`yesterday`") && e.contains("RFC 3339"), "{e}");
        assert!(
            parse_time("1969-12-31T23:00:00Z", NOON)
                .unwrap_err()
                .contains("before 1970")
        );
    }

    #[test]
    fn no_condition_selects_everything_in_order() {
        let f = Filter::new(&FilterQuery::default(), None, NOON).unwrap();
        assert!(f.is_everything());
        assert_eq!(seqs(&f), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn window_is_half_open() {
        // Dead-lettered at 07:00, 08:00, ..., 12:00.
        let f = Filter::new(
            &q(
                Some("2026-03-01T09:00:00Z"),
                Some("2026-03-01T11:00:00Z"),
                None,
                None,
            ),
            None,
            NOON,
        )
        .unwrap();
        assert!(!f.is_everything());
        assert_eq!(seqs(&f), [2, 3]);
        // Relative: the last 2 h (10:00 onwards, inclusive).
        let f = Filter::new(&q(Some("2h"), None, None, None), None, NOON).unwrap();
        assert_eq!(seqs(&f), [3, 4, 5]);
        // Older than 2 h.
        let f = Filter::new(&q(None, Some("2h"), None, None), None, NOON).unwrap();
        assert_eq!(seqs(&f), [0, 1, 2]);
    }

    #[test]
    fn error_regex_seqs_and_limit_combine() {
        let f = Filter::new(&q(None, None, Some("timeout"), None), None, NOON).unwrap();
        assert_eq!(seqs(&f), [1, 3, 5]);
        let f = Filter::new(&q(None, None, Some("(?i)BAD REQUEST"), None), None, NOON).unwrap();
        assert_eq!(seqs(&f), [0, 2, 4]);
        let f = Filter::new(
            &q(None, None, Some("^webhook answered 4\\d\\d"), Some(2)),
            None,
            NOON,
        )
        .unwrap();
        assert_eq!(seqs(&f), [0, 2]);
        let f = Filter::new(
            &q(Some("3h"), None, Some("400"), None),
            Some(&[0, 4, 5]),
            NOON,
        )
        .unwrap();
        assert_eq!(seqs(&f), [4]);
        let f = Filter::new(&q(None, None, None, Some(4)), Some(&[5, 1, 3]), NOON).unwrap();
        assert_eq!(seqs(&f), [1, 3, 5]);
        let f = Filter::new(&q(None, None, Some("nothing like this"), None), None, NOON).unwrap();
        assert_eq!(seqs(&f), Vec::<u64>::new());
    }

    #[test]
    fn limit_stops_reading_the_input() {
        let f = Filter::new(&q(None, None, None, Some(2)), None, NOON).unwrap();
        let mut read = 0;
        let got = f.select(dlq().into_iter().inspect(|_| read += 1));
        assert_eq!(got.iter().map(|e| e.seq.0).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(read, 2);
    }

    #[test]
    fn bad_filters_name_their_flag() {
        let err = |q: FilterQuery| match Filter::new(&q, None, NOON) {
            Err(Error::Config(outbox::ConfigError::Invalid { param, reason })) => {
                format!("{param}: {reason}")
            }
            other => panic!("expected a config error, got {other:?}"),
        };
        assert!(err(q(Some("soon"), None, None, None)).starts_with("--since: `soon`"));
        assert!(err(q(None, Some("later"), None, None)).starts_with("--until: `later`"));
        let e = err(q(Some("1h"), Some("2h"), None, None));
        assert!(e.starts_with("--since: the window is empty"), "{e}");
        assert!(e.contains("2026-03-01T11:00:00.000Z"), "{e}");
        assert!(err(q(None, None, Some("(unclosed"), None)).starts_with("--error-match: "));
        assert!(err(q(None, None, Some("a{100000}"), None)).starts_with("--error-match: "));
        assert_eq!(
            err(q(None, None, None, Some(0))),
            "--limit: must be at least 1"
        );
    }

    #[test]
    fn ranges_name_every_seq() {
        assert_eq!(ranges(&[]), "");
        assert_eq!(ranges(&[7]), "7");
        assert_eq!(ranges(&[0, 1, 2, 5, 9, 10, 11, 12]), "0-2, 5, 9-12");
        assert_eq!(ranges(&[3, 1, 2, 2]), "1-3");
        assert_eq!(render_ms(NOON), "2026-03-01T12:00:00.000Z");
    }
}
