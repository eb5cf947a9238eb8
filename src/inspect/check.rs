//! `outbox check`'s verification of a stopped outbox, value by value.
//!
//! [`Checker`] is the pure part: fed every key and value of the trees, it
//! reports each problem with its tree and key. It checks that every value
//! decodes, that log batches are in seq order, do not overlap and leave no
//! hole between them, that no offset is past the head and no DLQ entry is
//! at or past it, and that the meta keys are all there and known.
//!
//! Invariants: a value that does not decode is a problem, never a panic
//! and never skipped; when the head cannot be known (a log header does not
//! decode) the checks against it are skipped rather than guessed.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::codec::{self, meta_key, tree};
use crate::error::{StoreError as Error, StoreResult as Result};
use crate::store::Store;
use crate::types::SinkName;

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Problem {
    /// `log`, `offsets`, `dlq`, `meta`, `idem`, `sink_state` or `sled`.
    pub tree: String,
    /// The key, rendered (a seq, a sink name, `sink/seq N`, or hex).
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// The trees of a data directory, by the names sled knows them by (and
/// that [`Problem::tree`] names).
pub const TREES: [&str; 6] = [
    tree::META,
    tree::LOG,
    tree::OFFSETS,
    tree::DLQ,
    tree::IDEM,
    tree::SINK_STATE,
];

impl Report {
    /// The report on a store that could not be opened because of `e`: its
    /// one problem, when `e` names a value that does not decode (the meta
    /// an open reads first).
    ///
    /// # Errors
    /// `e` itself, when it is anything else.
    pub fn unopenable(e: crate::Error) -> crate::Result<Report> {
        match e {
            crate::Error::Store(Error::Corrupted { tree, key, reason }) => Ok(Report {
                problems: vec![Problem {
                    tree: tree.to_string(),
                    key,
                    reason,
                }],
                ..Report::default()
            }),
            e => Err(e),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tree `{}` key {}: {}", self.tree, self.key, self.reason)
    }
}

/// What was checked, and what was found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// Log values (batches) read.
    pub batches: u64,
    /// Records in the batches that decoded.
    pub records: u64,
    /// Holes and lost markers among the batches.
    pub markers: u64,
    /// Idempotency entries read.
    pub idem: u64,
    /// Offsets read.
    pub offsets: u64,
    /// DLQ entries read.
    pub dlq: u64,
    /// Meta keys read.
    pub meta: u64,
    /// The head: the larger of the log's end and `seq_floor` (a lower
    /// bound when a batch header does not decode; the offset and DLQ
    /// checks against it are then skipped).
    pub head: u64,
    /// The first seq of a write that a crash interrupted, when the store
    /// holds its intent (`store::intent`). Not a problem: the next open for
    /// writing removes what it left, none of which was receipted.
    pub interrupted_write: Option<u64>,
    /// Every problem found, in the order found.
    pub problems: Vec<Problem>,
}

/// Verifies a store fed to it one value at a time. Pure: no I/O.
#[derive(Debug, Default)]
pub struct Checker {
    report: Report,
    prev: Option<(u64, u64)>,
    log_end: u64,
    seq_floor: Option<u64>,
    offsets: Vec<(String, u64)>,
    dlq_seqs: Vec<(String, u64)>,
    meta_keys: BTreeSet<Vec<u8>>,
    members: Vec<codec::Member>,
    first: Option<u64>,
    /// A log value whose header did not decode: the head is unknown, so
    /// the checks against it are skipped rather than guessed.
    extent_unknown: bool,
    /// A log value whose header did not decode, with why: the seqs it takes
    /// with it end at the next value's key, reported when that arrives.
    unreadable: Option<(u64, String)>,
}

fn problem_from(e: Error, tree: &str, key: &[u8]) -> Problem {
    match e {
        Error::Corrupted { tree, key, reason } => Problem {
            tree: tree.to_string(),
            key,
            reason,
        },
        other => Problem {
            tree: tree.to_string(),
            key: codec::render_key(tree, key),
            reason: other.to_string(),
        },
    }
}

impl Checker {
    /// A fresh checker.
    pub fn new() -> Checker {
        Checker::default()
    }

    fn push(&mut self, p: Problem) {
        self.report.problems.push(p);
    }

    /// Records a failure to read a tree at all.
    pub fn unreadable(&mut self, tree: &str, e: &Error) {
        self.push(Problem {
            tree: tree.to_string(),
            key: "-".into(),
            reason: format!("cannot iterate: {e}"),
        });
    }

    /// Reports the value whose header did not decode, up to `end` (the
    /// next value's key) or, when none follows, open-ended.
    fn close_unreadable(&mut self, end: Option<u64>) {
        if let Some((first, reason)) = self.unreadable.take() {
            let (key, upto) = match end {
                Some(end) => {
                    // The value covered up to here: what follows is judged
                    // against its end, not reported again as a gap.
                    self.prev = Some((first, end));
                    self.first.get_or_insert(first);
                    (
                        format!("seqs {first}..{end}"),
                        format!("no seq up to {end}"),
                    )
                }
                None => (
                    format!("seqs {first}.."),
                    "nothing after it (it is the last value)".to_string(),
                ),
            };
            self.push(Problem {
                tree: tree::LOG.into(),
                key,
                reason: format!(
                    "the value at seq {first} cannot be read ({reason}), and with it {upto}"
                ),
            });
        }
    }

    /// One key and value of the tree named `tree`, one of [`TREES`]; a
    /// value of any other tree is a problem.
    pub fn value(&mut self, tree: &str, k: &[u8], v: &[u8]) {
        match tree {
            tree::LOG => self.log(k, v),
            tree::OFFSETS => self.offset(k, v),
            tree::DLQ => self.dlq(k, v),
            tree::IDEM => self.idem(k, v),
            tree::META => self.meta(k, v),
            tree::SINK_STATE => self.sink_state(k, v),
            other => self.push(Problem {
                tree: other.to_string(),
                key: "-".into(),
                reason: "no such tree".into(),
            }),
        }
    }

    /// One `log` key and value.
    pub fn log(&mut self, k: &[u8], v: &[u8]) {
        self.report.batches += 1;
        if self.unreadable.is_some() {
            let next = codec::decode_log_key(k).ok().map(|s| s.0);
            self.close_unreadable(next);
        }
        let (first, count) = match codec::decode_batch(k, v) {
            Ok((first, h, _)) => {
                if h.kind != codec::BatchKind::Records {
                    self.report.markers += 1;
                } else {
                    self.report.records += u64::from(h.count);
                }
                (first.0, u64::from(h.count))
            }
            Err(e) => {
                // The header may still say where the batch ends, which keeps
                // the overlap check going past one bad value.
                match (codec::decode_batch_header(k, v), e) {
                    (Ok((first, h)), Error::Corrupted { reason, .. }) => {
                        let end = first.0 + u64::from(h.count);
                        self.log_end = self.log_end.max(end);
                        self.push(Problem {
                            tree: tree::LOG.into(),
                            key: format!("seqs {first}..{end}"),
                            reason: format!(
                                "the value at seq {first} cannot be read ({reason}), and with it no seq up to {end}"
                            ),
                        });
                    }
                    (Ok((first, h)), e) => {
                        self.log_end = self.log_end.max(first.0 + u64::from(h.count));
                        self.push(problem_from(e, tree::LOG, k));
                    }
                    (Err(_), e) => {
                        self.extent_unknown = true;
                        match (codec::decode_log_key(k), e) {
                            (Ok(first), Error::Corrupted { reason, .. }) => {
                                self.unreadable = Some((first.0, reason));
                            }
                            (_, e) => self.push(problem_from(e, tree::LOG, k)),
                        }
                    }
                }
                return;
            }
        };
        let end = first + count;
        if let Some((pfirst, pend)) = self.prev {
            if first <= pfirst {
                self.push(Problem {
                    tree: tree::LOG.into(),
                    key: codec::render_key(tree::LOG, k),
                    reason: format!("seqs are not increasing: follows the batch at seq {pfirst}"),
                });
            } else if first < pend {
                self.push(Problem {
                    tree: tree::LOG.into(),
                    key: codec::render_key(tree::LOG, k),
                    reason: format!(
                        "overlaps the previous batch: seqs {pfirst}..{pend} and {first}..{end}"
                    ),
                });
            } else if first > pend {
                // Seqs are assigned contiguously and only whole batches at
                // the front are truncated, so a hole between two batches is
                // always lost data (sled drops what follows damage).
                self.push(Problem {
                    tree: tree::LOG.into(),
                    key: format!("seqs {pend}..{first}"),
                    reason: format!(
                        "records {pend}..{first} are missing between two batches (the log is contiguous; sled dropped them)"
                    ),
                });
            }
        }
        self.prev = Some((first, end));
        self.first.get_or_insert(first);
        self.log_end = self.log_end.max(end);
    }

    /// One `offsets` key and value.
    pub fn offset(&mut self, k: &[u8], v: &[u8]) {
        self.close_unreadable(None);
        self.report.offsets += 1;
        let name = match codec::decode_offset_key(k) {
            Ok(n) => n,
            Err(e) => return self.push(problem_from(e, tree::OFFSETS, k)),
        };
        match codec::decode_offset(k, v) {
            Ok(o) => self.offsets.push((name.to_string(), o.offset)),
            Err(e) => self.push(problem_from(e, tree::OFFSETS, k)),
        }
    }

    /// One `dlq` key and value.
    pub fn dlq(&mut self, k: &[u8], v: &[u8]) {
        self.close_unreadable(None);
        self.report.dlq += 1;
        match codec::decode_dlq(k, v) {
            Ok(e) => self.dlq_seqs.push((codec::render_key(tree::DLQ, k), e.seq)),
            Err(e) => self.push(problem_from(e, tree::DLQ, k)),
        }
    }

    /// One `idem` key and value: a key's record, or its time index entry.
    pub fn idem(&mut self, k: &[u8], v: &[u8]) {
        self.close_unreadable(None);
        self.report.idem += 1;
        let r = match k.first() {
            Some(b'k') => codec::decode_idem(k, v).map(|_| ()),
            Some(b't') if k.len() >= 9 && v.is_empty() => Ok(()),
            _ => Err(Error::Corrupted {
                tree: tree::IDEM,
                key: codec::render_key(tree::IDEM, k),
                reason: "neither a key record nor a time index entry".into(),
            }),
        };
        if let Err(e) = r {
            self.push(problem_from(e, tree::IDEM, k));
        }
    }

    /// One `sink_state` key and value: a retry state or a pause.
    pub fn sink_state(&mut self, k: &[u8], v: &[u8]) {
        let name_and_seq = |rest: &[u8]| {
            let (&len, rest) = rest.split_first()?;
            let name = rest.get(..usize::from(len))?;
            let name = SinkName::new(std::str::from_utf8(name).ok()?).ok()?;
            let prefix = codec::retry_prefix(&name);
            codec::decode_retry_seq(&prefix, k).ok()
        };
        let r = match k.split_first() {
            Some((b'r', rest)) if name_and_seq(rest).is_some() => {
                codec::decode_retry(k, v).map(|_| ())
            }
            Some((b'p', name))
                if std::str::from_utf8(name).is_ok_and(|n| SinkName::new(n).is_ok()) =>
            {
                codec::decode_pause(k, v).map(|_| ())
            }
            _ => Err(Error::Corrupted {
                tree: tree::SINK_STATE,
                key: codec::render_key(tree::SINK_STATE, k),
                reason: "neither a retry state (r<len><sink><seq>) nor a pause (p<sink>)".into(),
            }),
        };
        if let Err(e) = r {
            self.push(problem_from(e, tree::SINK_STATE, k));
        }
    }

    /// One `meta` key and value.
    pub fn meta(&mut self, k: &[u8], v: &[u8]) {
        self.close_unreadable(None);
        self.report.meta += 1;
        self.meta_keys.insert(k.to_vec());
        let r: Result<()> = match k {
            meta_key::FORMAT_VERSION => match v {
                [b] if codec::value_format(*b).is_some() => Ok(()),
                [b] => Err(corrupt_meta(k, format!("unknown format version {b}"))),
                _ => Err(corrupt_meta(
                    k,
                    format!("expected one byte, found {}", v.len()),
                )),
            },
            meta_key::LOG_ID => codec::decode_log_id(v).map(|_| ()),
            meta_key::CREATED_AT => codec::decode_meta_u64(k, v).map(|_| ()),
            meta_key::SEQ_FLOOR => codec::decode_meta_u64(k, v).map(|f| {
                self.seq_floor = Some(f);
            }),
            meta_key::SEQ_RESERVED => codec::decode_meta_u64(k, v).map(|_| ()),
            meta_key::SINKS => codec::decode_sink_list(v).map(|_| ()),
            meta_key::MEMBERS => codec::decode_members(v).map(|m| {
                self.members = m;
            }),
            meta_key::WRITE_INTENT => codec::decode_write_intent(v).map(|w| {
                self.report.interrupted_write = Some(w.first);
            }),
            _ => Err(corrupt_meta(k, "unknown meta key".into())),
        };
        if let Err(e) = r {
            self.push(problem_from(e, tree::META, k));
        }
    }

    /// The cross-tree checks, then the report.
    pub fn finish(mut self) -> Report {
        self.close_unreadable(None);
        for key in [
            meta_key::FORMAT_VERSION,
            meta_key::LOG_ID,
            meta_key::CREATED_AT,
        ] {
            if !self.meta_keys.contains(key) {
                self.push(Problem {
                    tree: tree::META.into(),
                    key: codec::render_key(tree::META, key),
                    reason: "missing".into(),
                });
            }
        }
        let head = self.log_end.max(self.seq_floor.unwrap_or(0));
        self.report.head = head;
        if self.extent_unknown {
            return self.report;
        }
        for m in std::mem::take(&mut self.members) {
            if !self.offsets.iter().any(|(n, _)| *n == m.name) {
                self.push(Problem {
                    tree: tree::OFFSETS.into(),
                    key: format!("`{}`", m.name),
                    reason: "missing: the sink is a member of the store but its committed offset is gone".into(),
                });
            }
        }
        for (name, next) in std::mem::take(&mut self.offsets) {
            if next > head {
                self.push(Problem {
                    tree: tree::OFFSETS.into(),
                    key: format!("`{name}`"),
                    reason: format!("offset {next} is past the head {head}"),
                });
            }
            if let Some(first) = self.first
                && next < first
            {
                self.push(Problem {
                    tree: tree::LOG.into(),
                    key: format!("seqs {next}..{first}"),
                    reason: format!("missing: sink `{name}` had not passed these records"),
                });
            }
        }
        for (key, seq) in std::mem::take(&mut self.dlq_seqs) {
            if seq >= head {
                self.push(Problem {
                    tree: tree::DLQ.into(),
                    key,
                    reason: format!("entry seq {seq} was never assigned (head is {head})"),
                });
            }
        }
        self.report
    }
}

fn corrupt_meta(k: &[u8], reason: String) -> Error {
    Error::Corrupted {
        tree: tree::META,
        key: codec::render_key(tree::META, k),
        reason,
    }
}

/// Runs the checker over every value of `store`.
pub(crate) fn check_store(store: &Store) -> Report {
    let mut c = Checker::new();
    for t in [tree::META, tree::LOG, tree::OFFSETS, tree::DLQ, tree::IDEM] {
        let Some(iter) = store.raw(t) else { continue };
        for kv in iter {
            match kv {
                Ok((k, v)) => c.value(t, &k, &v),
                Err(e) => {
                    c.unreadable(t, &e);
                    break;
                }
            }
        }
    }
    match store.raw_sink_state() {
        Ok(iter) => {
            for kv in iter {
                match kv {
                    Ok((k, v)) => c.sink_state(&k, &v),
                    Err(e) => {
                        c.unreadable(tree::SINK_STATE, &e);
                        break;
                    }
                }
            }
        }
        Err(e) => c.unreadable(tree::SINK_STATE, &e),
    }
    let mut report = c.finish();
    // What an open refuses that the value-by-value pass cannot see: less
    // than the witness says was durable, for one.
    if let Err(e) = store.verify() {
        let p = problem_from(e, "sled", &[]);
        if !report
            .problems
            .iter()
            .any(|q| q.tree == p.tree && q.key == p.key)
        {
            report.problems.push(p);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BatchHeader, DlqEntry, LogEntry, OffsetValue};
    use crate::types::{Record, Seq, SinkName};

    fn batch(first: u64, n: u32) -> (Vec<u8>, Vec<u8>) {
        let entries: Vec<LogEntry> = (0..n)
            .map(|i| {
                LogEntry::new(Record::new(
                    format!("{}", first + u64::from(i)).into_bytes(),
                ))
            })
            .collect();
        let h = BatchHeader::records(&entries, 1);
        (
            codec::log_key(Seq(first)).to_vec(),
            codec::encode_batch(Seq(first), h, &entries).unwrap(),
        )
    }

    fn good_meta(c: &mut Checker, floor: u64) {
        c.meta(meta_key::FORMAT_VERSION, &[2]);
        c.meta(
            meta_key::LOG_ID,
            &codec::encode_log_id(uuid::Uuid::from_u128(7)).unwrap(),
        );
        let u64_value = |k: &[u8], v: u64| codec::encode_meta_u64(k, v).unwrap();
        c.meta(meta_key::CREATED_AT, &u64_value(meta_key::CREATED_AT, 5));
        c.meta(meta_key::SEQ_FLOOR, &u64_value(meta_key::SEQ_FLOOR, floor));
    }

    fn offset(c: &mut Checker, name: &str, next: u64) {
        c.offset(
            name.as_bytes(),
            &codec::encode_offset(
                name.as_bytes(),
                &OffsetValue {
                    offset: next,
                    updated_at_ms: 0,
                },
            )
            .unwrap(),
        );
    }

    #[test]
    fn a_clean_store_has_no_problems() {
        let mut c = Checker::new();
        good_meta(&mut c, 0);
        for (k, v) in [batch(0, 3), batch(3, 2)] {
            c.log(&k, &v);
        }
        offset(&mut c, "out", 5);
        let sink = SinkName::new("out").unwrap();
        let d = DlqEntry {
            sink: "out".into(),
            seq: 4,
            origin: 4,
            origin_log: None,
            record: Record::new(b"x".to_vec()),
            error: "e".into(),
            attempts: 1,
            failed_at_ms: 1,
            history: Vec::new(),
        };
        let key = codec::dlq_key(&sink, Seq(4));
        c.dlq(&key, &codec::encode_dlq(&key, &d).unwrap());
        let r = c.finish();
        assert_eq!(r.problems, vec![]);
        assert_eq!(
            (r.batches, r.records, r.offsets, r.dlq, r.meta, r.head),
            (2, 5, 1, 1, 4, 5)
        );
    }

    #[test]
    fn sink_state_values_are_checked_and_a_bad_one_is_named() {
        let mut c = Checker::new();
        let web = SinkName::new("web").unwrap();
        let rk = codec::retry_key(&web, Seq(7));
        let state = codec::RetryState {
            attempts: 2,
            counted: 2,
            next_at_ms: 9,
            history: Vec::new(),
        };
        let rv = codec::encode_retry(&rk, &state).unwrap();
        c.sink_state(&rk, &rv);
        let pk = codec::pause_key(&web);
        let pv = codec::encode_pause(&pk, &codec::PauseState { at_ms: 1 }).unwrap();
        c.sink_state(&pk, &pv);
        assert_eq!(c.report.problems, vec![]);
        let mut bad = rv.clone();
        bad[2] ^= 4;
        c.sink_state(&rk, &bad);
        c.sink_state(b"x", b"");
        c.sink_state(&rk[..rk.len() - 1], &rv);
        let p = &c.report.problems;
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p.iter().all(|p| p.tree == tree::SINK_STATE), "{p:?}");
        assert!(p[0].reason.contains("checksum mismatch"), "{p:?}");
        assert!(p[1].reason.contains("neither a retry state"), "{p:?}");
    }

    #[test]
    fn each_problem_names_tree_and_key() {
        let mut c = Checker::new();
        good_meta(&mut c, 0);
        let (k, mut v) = batch(0, 3);
        c.log(&k, &v);
        let (k2, v2) = batch(2, 2); // overlaps 0..3
        c.log(&k2, &v2);
        let (k3, _) = batch(10, 1);
        v.truncate(v.len() - 1);
        c.log(&k3, &v); // does not decode
        offset(&mut c, "ahead", 99);
        c.offset(b"bad", &[1, 2]);
        c.meta(b"mystery", &[1]);
        let r = c.finish();
        let got: Vec<(String, String)> = r
            .problems
            .iter()
            .map(|p| (p.tree.clone(), p.key.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("log".into(), "seq 2".into()),
                ("log".into(), "seqs 10..".into()),
                ("offsets".into(), "`bad`".into()),
                ("meta".into(), "`mystery`".into()),
            ]
        );
        assert!(
            r.problems[0].reason.contains("overlaps"),
            "{}",
            r.problems[0]
        );
        assert!(
            r.problems[1].reason.contains("checksum"),
            "{}",
            r.problems[1]
        );
        // The damaged value's header is unreadable (its checksum covers
        // it), so the head is unknown and `ahead` is not judged against it.
        assert_eq!(r.head, 4);
    }

    #[test]
    fn an_offset_past_the_head_or_below_the_first_record_is_a_problem() {
        let mut c = Checker::new();
        good_meta(&mut c, 0);
        let (k, v) = batch(5, 3);
        c.log(&k, &v);
        offset(&mut c, "ahead", 99);
        offset(&mut c, "behind", 2);
        offset(&mut c, "fine", 6);
        let r = c.finish();
        let got: Vec<(&str, &str)> = r
            .problems
            .iter()
            .map(|p| (p.key.as_str(), p.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("`ahead`", "offset 99 is past the head 8"),
                (
                    "seqs 2..5",
                    "missing: sink `behind` had not passed these records"
                ),
            ]
        );
    }

    #[test]
    fn a_hole_between_batches_is_a_problem() {
        let mut c = Checker::new();
        good_meta(&mut c, 0);
        let (k1, v1) = batch(0, 3);
        let (k2, v2) = batch(5, 2); // 3..5 missing
        c.log(&k1, &v1);
        c.log(&k2, &v2);
        let r = c.finish();
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].tree, "log");
        assert_eq!(r.problems[0].key, "seqs 3..5");
        assert!(
            r.problems[0].reason.contains("records 3..5 are missing"),
            "{}",
            r.problems[0].reason
        );
    }

    #[test]
    fn an_unreadable_header_skips_the_head_checks_instead_of_guessing() {
        let mut c = Checker::new();
        good_meta(&mut c, 0);
        let (k, mut v) = batch(0, 3);
        v[0] = 9;
        c.log(&k, &v);
        offset(&mut c, "out", 3);
        let r = c.finish();
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(
            r.problems[0]
                .reason
                .contains("unknown format version byte 9")
        );
    }

    #[test]
    fn seq_floor_counts_toward_the_head_and_missing_meta_is_named() {
        let mut c = Checker::new();
        c.meta(
            meta_key::SEQ_FLOOR,
            &codec::encode_meta_u64(meta_key::SEQ_FLOOR, 50).unwrap(),
        );
        offset(&mut c, "a", 50);
        let r = c.finish();
        assert_eq!(r.head, 50);
        let keys: Vec<&str> = r.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["`format_version`", "`log_id`", "`created_at_ms`"]);
        assert!(
            r.problems
                .iter()
                .all(|p| p.tree == "meta" && p.reason == "missing")
        );
    }
}
