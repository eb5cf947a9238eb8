//! Salvage: copies what can still be read of a damaged store into a fresh
//! one, and says exactly what could not be.
//!
//! The damaged directory is opened without verifying it, and every read of
//! it is guarded: a sled error or panic ends the reading of that tree, and
//! what it did not reach counts as lost. The copy is created through the
//! normal creation path (fsync on, `conf` fsynced, witness written), with
//! the same log id, so every copied record keeps its seq and its delivery
//! id.
//!
//! Invariants of the copy:
//! - every log value that passes its checksum and decodes is copied as it
//!   was (records, holes and lost markers alike); each seq range that cannot
//!   be read becomes a lost marker, so the new log is a chain from its first
//!   seq to its end and the loss stays visible to `check`, `dump` and every
//!   sink's worker (which logs and counts what it passes over);
//! - the new log starts at the lowest of the seq floor and every readable
//!   offset, and ends at the highest of the last value's end, the witness's
//!   durable head, every readable offset and every DLQ seq: records that
//!   should be there and are not are written off, never silently absent;
//! - a sink whose offset cannot be read restarts at what the witness file
//!   recorded for it (a lower bound of its durable offset), or else at the
//!   first seq of the new log: duplicates rather than loss;
//! - offsets, membership, DLQ entries (with their history) and idempotency
//!   keys that pass their checksum are copied byte for byte;
//! - a write a crash cut short (the store's write intent,
//!   `store::intent`) was never receipted, so its log values and
//!   idempotency entries are not copied, exactly as the open would undo
//!   them; an intent that does not decode is reported, and what it covered
//!   is copied as found (a request that may be partial, rather than loss);
//! - `seq_reserved` is carried over, so no seq ever receipted is assigned
//!   again;
//! - the copy is built in a sibling directory and renamed into place only
//!   when complete, so `--out` holds a whole copy or nothing.

mod ledger;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use ledger::{LogLedger, Step, plan_offsets};
pub use ledger::{Loss, Restart, SeqRanges};

use super::open::{guarded, open_sled, sled_open_error};
use super::{Store, StoreOptions, now_ms, witness};
use crate::codec::{self, BatchHeader, BatchKind, LogEntry, Member, meta_key, tree};
use crate::error::{StoreError as Error, StoreResult as Result};
use crate::types::{Seq, SinkName};

/// How far ahead of the head the appender reserves seqs (the engine's
/// reservation chunk): a new reservation when the stored one is unreadable.
const RESERVE_MARGIN: u64 = 1 << 20;

/// Log values buffered before they are written to the copy.
const WRITE_BYTES: usize = 8 << 20;

/// What a salvage copied, and what it could not.
#[derive(Debug, Clone, Default)]
pub struct SalvageReport {
    /// The log id of the copy (the damaged store's, when it could be read).
    pub log_id: Uuid,
    /// The copy's first seq and end.
    pub first: Seq,
    /// One past the copy's last seq.
    pub end: Seq,
    /// Log values copied, and the records in them.
    pub values: u64,
    /// Records copied.
    pub records: u64,
    /// Seqs in holes and lost markers copied as they were (written off
    /// before this salvage).
    pub marker_seqs: u64,
    /// Log seqs that could not be recovered, each now a lost marker.
    pub lost: Vec<Loss>,
    /// Seqs two log values claimed; the later claim was dropped.
    pub conflicts: Vec<Loss>,
    /// Offsets copied.
    pub offsets: Vec<(SinkName, Seq)>,
    /// Sinks whose offset could not be read, and where they restart.
    pub restarted: Vec<Restart>,
    /// Offset entries whose key is not a sink name: `(key, why)`.
    pub offsets_unreadable: Vec<(String, String)>,
    /// Members written to the copy.
    pub members: usize,
    /// DLQ entries copied.
    pub dlq: u64,
    /// DLQ entries that could not be read, as seq ranges per sink.
    pub dlq_lost: SeqRanges,
    /// DLQ entries whose key is not a sink and seq: `(key, why)`.
    pub dlq_unreadable: Vec<(String, String)>,
    /// DLQ entries the witness counted that are not there at all.
    pub dlq_missing: u64,
    /// Idempotency entries copied.
    pub idem: u64,
    /// Idempotency entries that could not be read: `(key, why)`.
    pub idem_lost: Vec<(String, String)>,
    /// Sink states copied: retry counts and times, operator pauses.
    pub sink_state: u64,
    /// Sink states that could not be read: `(key, why)`. A lost retry state
    /// restarts that record's count; a lost pause resumes the sink.
    pub sink_state_lost: Vec<(String, String)>,
    /// A write a crash cut short, found by its intent: never receipted,
    /// so left out of the copy, as the open would undo it. Not a loss.
    pub interrupted_write: Option<InterruptedWrite>,
    /// Meta values that could not be read, and what was used instead.
    pub meta: Vec<String>,
    /// Trees sled could not read to the end: `(tree, why)`.
    pub trees: Vec<(String, String)>,
}

/// What a salvage left out of a write a crash cut short.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterruptedWrite {
    /// The write's first seq: every log value from it on was part of it.
    pub from: Seq,
    /// Log values left out.
    pub values: u64,
    /// Idempotency entries left out.
    pub idem_entries: u64,
}

impl SalvageReport {
    /// Whether anything could not be recovered.
    pub fn lost_anything(&self) -> bool {
        !(self.lost.is_empty()
            && self.conflicts.is_empty()
            && self.restarted.is_empty()
            && self.offsets_unreadable.is_empty()
            && self.dlq_lost.is_empty()
            && self.dlq_unreadable.is_empty()
            && self.dlq_missing == 0
            && self.idem_lost.is_empty()
            && self.sink_state_lost.is_empty()
            && self.meta.is_empty()
            && self.trees.is_empty())
    }
}

/// The damaged store's sled trees, read directly: nothing about it is
/// trusted or verified.
struct Source {
    _db: sled::Db,
    /// The tree `log` and the log's generations, in seq order.
    log: Vec<(String, sled::Tree)>,
    offsets: sled::Tree,
    dlq: sled::Tree,
    meta: sled::Tree,
    idem: sled::Tree,
    sink_state: sled::Tree,
}

impl Source {
    fn open(dir: &Path, cache_bytes: u64) -> Result<Source> {
        guarded(dir, || {
            let db = open_sled(dir, cache_bytes)?;
            let t = |name: &str| db.open_tree(name).map_err(|e| sled_open_error(dir, e));
            let mut starts: Vec<u64> = db
                .tree_names()
                .iter()
                .filter_map(|n| super::log_trees::parse_gen_name(n))
                .collect();
            starts.sort_unstable();
            let mut log = vec![(tree::LOG.to_string(), t(tree::LOG)?)];
            for s in starts {
                let name = super::log_trees::gen_name(s);
                let tree = t(&name)?;
                log.push((name, tree));
            }
            Ok(Source {
                log,
                offsets: t(tree::OFFSETS)?,
                dlq: t(tree::DLQ)?,
                meta: t(tree::META)?,
                idem: t(tree::IDEM)?,
                sink_state: t(tree::SINK_STATE)?,
                _db: db,
            })
        })
    }
}

/// Reads `tree` in key order, handing each key and value to `f`, until
/// the end or until sled fails or panics; then `Ok(Some(why))`, naming the
/// last key read. An error of `f` (writing the copy) is returned as is.
fn each(
    name: &str,
    t: &sled::Tree,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<Option<String>> {
    let mut iter = t.iter();
    let mut last: Option<String> = None;
    loop {
        let item = std::panic::catch_unwind(AssertUnwindSafe(|| iter.next()));
        let why = match item {
            Ok(None) => return Ok(None),
            Ok(Some(Ok((k, v)))) => {
                f(&k, &v)?;
                last = Some(codec::render_key(name, &k));
                continue;
            }
            Ok(Some(Err(e))) => format!("sled failed: {}", Error::from_sled(e)),
            Err(p) => format!("sled panicked: {}", crate::error::panic_message(&p)),
        };
        let after = last.map_or_else(|| "at its start".to_string(), |k| format!("after key {k}"));
        return Ok(Some(format!("cannot be read {after} ({why})")));
    }
}

/// One meta value, guarded like [`each`].
fn meta_get(src: &Source, key: &[u8]) -> std::result::Result<Option<sled::IVec>, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| src.meta.get(key))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("sled failed: {}", Error::from_sled(e))),
        Err(p) => Err(format!(
            "sled panicked: {}",
            crate::error::panic_message(&p)
        )),
    }
}

fn reason(e: &Error) -> String {
    match e {
        Error::Corrupted { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// What was read of the damaged store's meta and witness.
struct SourceMeta {
    log_id: Uuid,
    created_at_ms: u64,
    floor: Option<Seq>,
    reserved: Option<Seq>,
    /// Present but unreadable: a fresh reservation is made above the end.
    reserved_lost: bool,
    members: Option<Vec<Member>>,
    /// The witness, when it belongs to this log.
    witness: Option<witness::Witness>,
}

fn read_meta(dir: &Path, src: &Source, r: &mut SalvageReport) -> Result<SourceMeta> {
    let u64_at = |key: &[u8], r: &mut SalvageReport| -> (Option<u64>, bool) {
        match meta_get(src, key) {
            Ok(None) => (None, false),
            Ok(Some(v)) => match codec::decode_meta_u64(key, &v) {
                Ok(n) => (Some(n), false),
                Err(e) => {
                    r.meta.push(format!(
                        "{}: {}",
                        codec::render_key(tree::META, key),
                        reason(&e)
                    ));
                    (None, true)
                }
            },
            Err(why) => {
                r.meta
                    .push(format!("{}: {why}", codec::render_key(tree::META, key)));
                (None, true)
            }
        }
    };
    match meta_get(src, meta_key::FORMAT_VERSION) {
        Ok(Some(v)) => match v.as_ref() {
            [b] => {
                if codec::value_format(*b).is_none() {
                    // A newer format is not damage: it is not ours to read.
                    return Err(Error::UnknownFormat {
                        path: dir.to_path_buf(),
                        found: *b,
                        supported: codec::DIR_FORMAT,
                    });
                }
            }
            _ => r
                .meta
                .push(format!("`format_version`: {} bytes, not one", v.len())),
        },
        Ok(None) => r.meta.push("`format_version`: missing".into()),
        Err(why) => r.meta.push(format!("`format_version`: {why}")),
    }
    let witnessed = match witness::read(dir) {
        Ok(w) => w,
        Err(e) => {
            r.meta.push(format!("{}: {e}", witness::FILE));
            None
        }
    };
    let log_id = match meta_get(src, meta_key::LOG_ID) {
        Ok(Some(v)) => codec::decode_log_id(&v).map_err(|e| reason(&e)),
        Ok(None) => Err("missing".to_string()),
        Err(why) => Err(why),
    };
    let log_id = match (log_id, &witnessed) {
        (Ok(id), _) => id,
        (Err(why), Some(w)) => {
            r.meta.push(format!(
                "`log_id`: {why}; the witness file's log id is used, so delivery ids are kept"
            ));
            w.log_id
        }
        (Err(why), None) => {
            r.meta.push(format!(
                "`log_id`: {why}; a new log id is minted, so the copied records' delivery ids change"
            ));
            Uuid::new_v4()
        }
    };
    let (created, _) = u64_at(meta_key::CREATED_AT, r);
    let (floor, _) = u64_at(meta_key::SEQ_FLOOR, r);
    let (reserved, reserved_lost) = u64_at(meta_key::SEQ_RESERVED, r);
    let members = match meta_get(src, meta_key::MEMBERS) {
        Ok(Some(v)) => codec::decode_members(&v).map(Some).map_err(|e| reason(&e)),
        Ok(None) => match meta_get(src, meta_key::SINKS) {
            // A version-1 directory: the sinks configured at its last open.
            Ok(Some(v)) => codec::decode_sink_list(&v)
                .map(|names| {
                    Some(
                        names
                            .iter()
                            .map(|n| Member {
                                name: n.to_string(),
                                orphaned_at_ms: None,
                            })
                            .collect(),
                    )
                })
                .map_err(|e| reason(&e)),
            Ok(None) => Err("missing".to_string()),
            Err(why) => Err(why),
        },
        Err(why) => Err(why),
    };
    let members = members.unwrap_or_else(|why| {
        r.meta.push(format!(
            "`members`: {why}; every sink with an offset is made a member"
        ));
        None
    });
    Ok(SourceMeta {
        log_id,
        created_at_ms: created.unwrap_or_else(now_ms),
        floor: floor.map(Seq),
        reserved: reserved.map(Seq),
        reserved_lost,
        members,
        witness: witnessed.filter(|w| w.log_id == log_id),
    })
}

/// The write intent of a write a crash cut short, if there is one that
/// decodes; one that does not is reported, and then nothing is left out.
fn read_intent(src: &Source, r: &mut SalvageReport) -> Option<codec::WriteIntent> {
    let why = match meta_get(src, meta_key::WRITE_INTENT) {
        Ok(None) => return None,
        Ok(Some(v)) => match codec::decode_write_intent(&v) {
            Ok(i) => return Some(i),
            Err(e) => reason(&e),
        },
        Err(why) => why,
    };
    r.meta.push(format!(
        "{}: {why}; the values and idempotency entries of the write it marked are copied as found, so a request a crash cut short may be delivered in part",
        codec::render_key(tree::META, meta_key::WRITE_INTENT)
    ));
    None
}

/// Writes log values to the copy, buffered.
struct LogWriter<'a> {
    new: &'a Store,
    buf: Vec<(Seq, Vec<u8>)>,
    bytes: usize,
}

impl LogWriter<'_> {
    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.new.append_runs(std::mem::take(&mut self.buf), &[])?;
            self.bytes = 0;
        }
        Ok(())
    }

    fn push(&mut self, first: Seq, value: Vec<u8>) -> Result<()> {
        self.bytes += value.len();
        self.buf.push((first, value));
        if self.bytes >= WRITE_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn lost(&mut self, l: &Loss) -> Result<()> {
        self.flush()?;
        self.new.write_marker(BatchKind::Lost, l.from, l.to)?;
        Ok(())
    }
}

/// Copies a value's seqs from `from` on.
fn copy_value(
    w: &mut LogWriter<'_>,
    r: &mut SalvageReport,
    first: Seq,
    header: BatchHeader,
    mut entries: Vec<LogEntry>,
    from: Seq,
) -> Result<()> {
    let skip = from.0 - first.0;
    let count = header.count - u32::try_from(skip).unwrap_or(header.count);
    let header = match header.kind {
        BatchKind::Records => {
            entries.drain(
                ..usize::try_from(skip)
                    .unwrap_or(entries.len())
                    .min(entries.len()),
            );
            r.records += entries.len() as u64;
            BatchHeader::records(&entries, header.appended_at_ms)
        }
        BatchKind::Hole | BatchKind::Lost => {
            r.marker_seqs += u64::from(count);
            BatchHeader { count, ..header }
        }
    };
    r.values += 1;
    w.push(from, codec::encode_batch(from, header, &entries)?)
}

/// Copies what can be read of the stopped, possibly damaged store in `src`
/// into a new store at `out`, writing off what cannot be read. See the
/// module docs for what is kept and how.
///
/// # Errors
/// [`crate::ConfigError::Invalid`] when `out` is `src`, exists and is not
/// empty, or a partial copy from an interrupted salvage is in the way, or
/// `src` holds no outbox; [`Error::Locked`] when a process holds `src`;
/// [`Error::StoreCorrupt`] when sled cannot open `src` at all;
/// [`Error::UnknownFormat`] for a newer format; I/O errors writing the copy
/// (which is then removed); [`Error::Storage`] if the copy does not verify,
/// which would be a bug.
pub fn salvage(src: &Path, out: &Path, cache_bytes: u64) -> crate::Result<SalvageReport> {
    if out == src {
        return Err(crate::Error::config("--out", "must differ from --data-dir"));
    }
    super::compact::ensure_fresh(out)?;
    if !src.join("db").is_file() {
        return Err(crate::Error::config(
            "--data-dir",
            format!("{} holds no outbox data (no `db` file)", src.display()),
        ));
    }
    if super::is_locked(src) {
        return Err(Error::Locked {
            path: src.to_path_buf(),
        }
        .into());
    }
    let partial = partial_path(out)?;
    if partial.exists() {
        return Err(crate::Error::config(
            "--out",
            format!(
                "{} exists, left by an interrupted salvage: remove it and run salvage again",
                partial.display()
            ),
        ));
    }
    let source = Source::open(src, cache_bytes)?;
    let copied = copy(src, &source, &partial, cache_bytes);
    drop(source);
    let report = match copied {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e.into());
        }
    };
    std::fs::rename(&partial, out).map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!(
                "moving the copy from {} to {}: {e}",
                partial.display(),
                out.display()
            ),
        ))
    })?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)
            .and_then(|f| f.sync_all())
            .map_err(Error::Io)?;
    }
    let check = Store::inspect(out, cache_bytes).and_then(|s| s.verify());
    if let Err(e) = check {
        return Err(Error::Storage(
            format!(
                "the copy in {} does not verify ({e}); this is a bug in salvage: keep {}",
                out.display(),
                src.display()
            )
            .into(),
        )
        .into());
    }
    Ok(report)
}

/// `DIR/.NAME.salvage-partial` for `DIR/NAME`: on the same file system, so
/// the final rename is atomic.
fn partial_path(out: &Path) -> crate::Result<PathBuf> {
    let name = out
        .file_name()
        .ok_or_else(|| crate::Error::config("--out", "names no directory"))?;
    let mut partial = std::ffi::OsString::from(".");
    partial.push(name);
    partial.push(".salvage-partial");
    Ok(out.with_file_name(partial))
}

fn copy(dir: &Path, src: &Source, partial: &Path, cache_bytes: u64) -> Result<SalvageReport> {
    let mut r = SalvageReport::default();
    let meta = read_meta(dir, src, &mut r)?;
    r.log_id = meta.log_id;
    let intent = read_intent(src, &mut r);
    let cut = intent.as_ref().map(|i| Seq(i.first));

    let mut readable: BTreeMap<SinkName, Seq> = BTreeMap::new();
    let mut raw_offsets: BTreeMap<SinkName, Vec<u8>> = BTreeMap::new();
    let mut unreadable: Vec<(SinkName, String)> = Vec::new();
    if let Some(why) = each(tree::OFFSETS, &src.offsets, |k, v| {
        match codec::decode_offset_key(k) {
            Ok(name) => match codec::decode_offset(k, v) {
                Ok(o) => {
                    readable.insert(name.clone(), Seq(o.offset));
                    raw_offsets.insert(name, v.to_vec());
                }
                Err(e) => unreadable.push((name, reason(&e))),
            },
            Err(e) => r
                .offsets_unreadable
                .push((codec::render_key(tree::OFFSETS, k), reason(&e))),
        }
        Ok(())
    })? {
        r.trees.push((tree::OFFSETS.into(), why));
    }

    let opts = StoreOptions {
        cache_bytes,
        create: true,
        fsync: true,
    };
    let (new, _) = Store::open_as(partial, &opts, Some((meta.log_id, meta.created_at_ms)))?;

    let mut dlq_end: Option<Seq> = None;
    let mut dlq = 0u64;
    let mut dlq_lost = SeqRanges::default();
    let mut dlq_unreadable = Vec::new();
    if let Some(why) = each(tree::DLQ, &src.dlq, |k, v| {
        match codec::decode_dlq(k, v) {
            Ok(e) => {
                let res = new.dlq.insert(k, v).map(|_| ());
                new.write_result(res)?;
                new.written.lock().dlq += 1;
                dlq += 1;
                dlq_end = dlq_end.max(Some(Seq(e.seq).next()));
            }
            Err(e) => match codec::decode_dlq_key(k) {
                Ok((sink, seq)) => {
                    dlq_lost.add(sink.as_str(), seq, &reason(&e));
                    dlq_end = dlq_end.max(Some(seq.next()));
                }
                Err(_) => dlq_unreadable.push((codec::render_key(tree::DLQ, k), reason(&e))),
            },
        }
        Ok(())
    })? {
        r.trees.push((tree::DLQ.into(), why));
    }
    r.dlq = dlq;
    if let Some(w) = &meta.witness {
        let found = dlq + dlq_lost.count() + dlq_unreadable.len() as u64;
        r.dlq_missing = w.dlq.saturating_sub(found);
    }
    r.dlq_lost = dlq_lost;
    r.dlq_unreadable = dlq_unreadable;

    // The log: a chain from the lowest bound known to the highest.
    let start = meta
        .floor
        .into_iter()
        .chain(readable.values().copied())
        .min();
    let mut ledger = LogLedger::new(start);
    let mut w = LogWriter {
        new: &new,
        buf: Vec::new(),
        bytes: 0,
    };
    let mut left_out = 0u64;
    let mut on_value = |k: &[u8], v: &[u8]| -> Result<()> {
        if let (Some(c), Ok(key)) = (cut, codec::decode_log_key(k))
            && key >= c
        {
            left_out += 1;
            return Ok(());
        }
        match codec::decode_batch(k, v) {
            Ok((first, header, entries)) => {
                let mut entries = Some(entries);
                for step in ledger.good(first, header.count) {
                    match step {
                        Step::Lost(l) => w.lost(&l)?,
                        Step::Copy { from } => {
                            let e = entries.take().unwrap_or_default();
                            copy_value(&mut w, &mut r, first, header, e, from)?;
                        }
                    }
                }
            }
            Err(e) => {
                let key = codec::decode_log_key(k).ok();
                let range = codec::decode_batch_header(k, v)
                    .ok()
                    .map(|(f, h)| (f, Seq(f.0 + u64::from(h.count))));
                for step in ledger.bad(key, range, &reason(&e)) {
                    if let Step::Lost(l) = step {
                        w.lost(&l)?;
                    }
                }
            }
        }
        Ok(())
    };
    // A generation that cannot be read to its end is reported; the next is
    // still read, and the ledger counts what lies between as lost.
    let mut log_failure: Option<String> = None;
    for (name, t) in &src.log {
        if let Some(why) = each(tree::LOG, t, &mut on_value)? {
            let why = format!("(tree `{name}`) {why}");
            log_failure = Some(match log_failure {
                Some(prev) => format!("{prev}; {why}"),
                None => why,
            });
        }
    }
    r.interrupted_write = cut.map(|from| InterruptedWrite {
        from,
        values: left_out,
        idem_entries: 0,
    });
    let mut bounds: Vec<(Seq, String)> = vec![(ledger.next(), String::new())];
    if let Some(wit) = &meta.witness {
        bounds.push((
            Seq(wit.next_seq),
            format!(
                "the witness file says every seq below {} was durable",
                wit.next_seq
            ),
        ));
    }
    for (name, o) in &readable {
        bounds.push((*o, format!("sink `{name}`'s offset is {o}")));
    }
    if let Some(e) = dlq_end {
        bounds.push((e, format!("a DLQ entry has seq {}", e.0.saturating_sub(1))));
    }
    let (end, mut why) = bounds
        .into_iter()
        .max_by_key(|(s, _)| *s)
        .unwrap_or_default();
    if let Some(failure) = &log_failure {
        why = format!("the log {failure}; {why}");
        r.trees.push((tree::LOG.into(), failure.clone()));
    }
    for step in ledger.finish(end, &format!("missing at the end of the log: {why}")) {
        if let Step::Lost(l) = step {
            w.lost(&l)?;
        }
    }
    w.flush()?;
    let end = ledger.next();
    let first = ledger.start().unwrap_or(end);
    new.note_appended(end);
    r.first = first;
    r.end = end;
    r.lost = ledger.lost().to_vec();
    r.conflicts = ledger.conflicts().to_vec();

    // Offsets and membership.
    let plan = plan_offsets(
        &readable,
        &unreadable,
        meta.members.as_deref(),
        meta.witness.as_ref().map(|w| &w.offsets),
        first,
        end,
    );
    for (name, o) in &plan.kept {
        match raw_offsets.get(name) {
            // Kept as it was, byte for byte (its update time too).
            Some(raw) if readable.get(name) == Some(o) => {
                let res = new.offsets.insert(name.as_str().as_bytes(), raw.as_slice());
                new.write_result(res.map(|_| ()))?;
                new.written.lock().offsets.insert(name.to_string(), o.0);
            }
            _ => {
                new.commit_offset(name, *o, &[])?;
            }
        }
    }
    for x in &plan.restarted {
        new.commit_offset(&x.sink, x.at, &[])?;
    }
    let members: Vec<Member> = match meta.members {
        Some(m) => m,
        None => plan
            .kept
            .iter()
            .map(|(n, _)| n)
            .chain(plan.restarted.iter().map(|x| &x.sink))
            .map(|n| Member {
                name: n.to_string(),
                orphaned_at_ms: None,
            })
            .collect(),
    };
    new.set_members(&members)?;
    r.members = members.len();
    r.offsets = plan.kept;
    r.restarted = plan.restarted;

    // Idempotency keys: a key record, or its time index entry.
    let mut idem = 0u64;
    let mut idem_lost = Vec::new();
    let mut idem_left_out = 0u64;
    let uncommitted: &[Vec<u8>] = intent.as_ref().map_or(&[], |i| &i.idem_keys);
    if let Some(why) = each(tree::IDEM, &src.idem, |k, v| {
        if uncommitted.iter().any(|u| u.as_slice() == k) {
            idem_left_out += 1;
            return Ok(());
        }
        let ok = match k.first() {
            Some(b'k') => codec::decode_idem(k, v).map(|_| ()).map_err(|e| reason(&e)),
            Some(b't') if k.len() >= 9 && v.is_empty() => Ok(()),
            _ => Err("neither a key record nor a time index entry".to_string()),
        };
        match ok {
            Ok(()) => {
                let res = new.idem.insert(k, v).map(|_| ());
                new.write_result(res)?;
                idem += 1;
            }
            Err(why) => idem_lost.push((codec::render_key(tree::IDEM, k), why)),
        }
        Ok(())
    })? {
        r.trees.push((tree::IDEM.into(), why));
    }
    r.idem = idem;
    r.idem_lost = idem_lost;
    if let Some(i) = &mut r.interrupted_write {
        i.idem_entries = idem_left_out;
    }

    // Sink states: retry counts and times, and operator pauses, so a
    // salvage neither restarts a retry schedule nor resumes a paused sink.
    let states = new
        .db
        .open_tree(tree::SINK_STATE)
        .map_err(Error::from_sled)?;
    let mut copied = 0u64;
    let mut state_lost = Vec::new();
    if let Some(why) = each(tree::SINK_STATE, &src.sink_state, |k, v| {
        let ok = match k.first() {
            Some(b'r') => codec::decode_retry(k, v).map(|_| ()),
            Some(b'p') => codec::decode_pause(k, v).map(|_| ()),
            _ => Err(Error::Corrupted {
                tree: tree::SINK_STATE,
                key: codec::render_key(tree::SINK_STATE, k),
                reason: "neither a retry state nor a pause".into(),
            }),
        };
        match ok {
            Ok(()) => {
                let res = states.insert(k, v).map(|_| ());
                new.write_result(res)?;
                copied += 1;
            }
            Err(e) => state_lost.push((codec::render_key(tree::SINK_STATE, k), reason(&e))),
        }
        Ok(())
    })? {
        r.trees.push((tree::SINK_STATE.into(), why));
    }
    r.sink_state = copied;
    r.sink_state_lost = state_lost;

    // Meta: the floor, and a reservation no lower than the damaged store's.
    let floor = if first == end {
        end
    } else {
        meta.floor.unwrap_or(first)
    };
    new.put_meta_u64(meta_key::SEQ_FLOOR, floor.0)?;
    let reserved = if meta.reserved_lost {
        Seq(end.0.saturating_add(RESERVE_MARGIN))
    } else {
        meta.reserved.unwrap_or_default().max(end)
    };
    new.reserve_seqs(reserved)?;
    new.flush()?;
    let witnessed = new.written();
    new.write_witness(&witnessed)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{IdemValue, WriteIntent};
    use crate::types::Record;

    fn value(seq: u64, payload: &str) -> (Seq, Vec<u8>) {
        let entries = [LogEntry::new(Record::new(payload))];
        let header = BatchHeader::records(&entries, 1);
        (
            Seq(seq),
            codec::encode_batch(Seq(seq), header, &entries).unwrap(),
        )
    }

    fn opts() -> StoreOptions {
        StoreOptions {
            cache_bytes: 1 << 20,
            create: true,
            fsync: false,
        }
    }

    /// A keyed write that reached sled whole (values and idempotency
    /// entries) but not the removal of its intent, as a crash there leaves
    /// it: the salvage copies the record before it and leaves the write
    /// out, as the open would undo it, and reports it without calling it a
    /// loss.
    #[test]
    fn a_write_a_crash_cut_short_is_left_out_and_reported() {
        let d = tempfile::tempdir().unwrap();
        let (src, out) = (d.path().join("src"), d.path().join("out"));
        {
            let (store, _) = Store::open(&src, &opts()).unwrap();
            store.append_runs(vec![value(0, "kept")], &[]).unwrap();
            let idem = IdemValue {
                first: 1,
                count: 2,
                digest: [7; 16],
                at_ms: 5,
            };
            store
                .append_keyed(
                    vec![value(1, "cut-1"), value(2, "cut-2")],
                    &[(b"req".to_vec(), idem)],
                )
                .unwrap();
            // The crash came before the intent's removal: put it back.
            let (k, _, t) = crate::store::idem::entries(b"req", &idem).unwrap();
            let intent = WriteIntent {
                first: 1,
                idem_keys: vec![t, k],
            };
            store
                .meta
                .insert(
                    meta_key::WRITE_INTENT,
                    codec::encode_write_intent(&intent).unwrap(),
                )
                .unwrap();
            store.flush().unwrap();
        }
        let r = salvage(&src, &out, 1 << 20).unwrap();
        assert_eq!(
            r.interrupted_write,
            Some(InterruptedWrite {
                from: Seq(1),
                values: 2,
                idem_entries: 2,
            })
        );
        assert_eq!((r.records, r.values, r.idem), (1, 1, 0));
        assert_eq!((r.first, r.end), (Seq(0), Seq(1)));
        assert!(!r.lost_anything(), "{r:?}");

        let (copy, _) = Store::open(&out, &opts()).unwrap();
        assert_eq!(copy.interrupted_write().unwrap(), None);
        assert_eq!(copy.idem_get(b"req").unwrap(), None);
        let read = copy.read_at(Seq(0), Seq(1)).unwrap();
        let payloads: Vec<_> = read
            .entries
            .iter()
            .map(|e| e.record.payload.clone())
            .collect();
        assert_eq!(payloads, [b"kept".to_vec()]);
        assert!(copy.read_at(Seq(1), Seq(3)).is_err(), "nothing at seq 1");
    }
}
