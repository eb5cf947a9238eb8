//! The versioned encoding of every stored key and value.
//!
//! Everything that reaches disk passes through this module, so a later format
//! change touches one file. Invariants:
//! - every value starts with a format-version byte ([`FormatVersion`]);
//! - keys are big-endian, so sled's byte order is numeric order;
//! - decoding never panics and never trusts a length: bincode runs with a
//!   size limit ([`MAX_VALUE_BYTES`]) and every failure becomes
//!   [`Error::Corrupted`] naming the tree and the key.
//!
//! The byte-level layout is written out in `docs/design.md`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::types::{Record, Seq, SinkName};

/// The largest value bincode may decode, a guard against hostile lengths.
pub const MAX_VALUE_BYTES: usize = 256 << 20;

/// bincode 2, big-endian, fixed-width integers, with a size limit. Pinned here
/// and nowhere else: the layout in `docs/design.md` follows from it.
const BINCODE: bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Fixint,
    bincode::config::Limit<MAX_VALUE_BYTES>,
> = bincode::config::standard()
    .with_big_endian()
    .with_fixed_int_encoding()
    .with_limit::<MAX_VALUE_BYTES>();

/// The on-disk format version, the first byte of every value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FormatVersion {
    /// The first format.
    V1 = 1,
}

impl FormatVersion {
    /// What this build writes.
    pub const CURRENT: FormatVersion = FormatVersion::V1;
}

impl TryFrom<u8> for FormatVersion {
    type Error = u8;
    fn try_from(v: u8) -> std::result::Result<Self, u8> {
        match v {
            1 => Ok(FormatVersion::V1),
            other => Err(other),
        }
    }
}

/// Tree names, as sled knows them.
pub mod tree {
    /// Records, one value per group-commit batch.
    pub const LOG: &str = "log";
    /// Each sink's committed offset.
    pub const OFFSETS: &str = "offsets";
    /// Terminal failures.
    pub const DLQ: &str = "dlq";
    /// Format version, log id, creation time, seq floor.
    pub const META: &str = "meta";
}

/// Keys of the `meta` tree.
pub mod meta_key {
    /// One byte: the format version.
    pub const FORMAT_VERSION: &[u8] = b"format_version";
    /// Version byte + 16 bytes of uuid.
    pub const LOG_ID: &[u8] = b"log_id";
    /// Version byte + u64 BE milliseconds since the Unix epoch.
    pub const CREATED_AT: &[u8] = b"created_at_ms";
    /// Version byte + u64 BE: no seq below this is ever assigned again.
    pub const SEQ_FLOOR: &[u8] = b"seq_floor";
    /// Version byte + bincode `Vec<String>`: the sinks configured at the last
    /// open, so offline tools can tell orphans apart.
    pub const SINKS: &[u8] = b"sinks";
}

/// One record as it sits in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The record as dispatched.
    pub record: Record,
    /// `Some(sink)` for a redriven record: only that sink delivers it, every
    /// other sink passes over it.
    pub target: Option<String>,
    /// The seq the record was first appended under, when it differs from its
    /// own (a redrive). The delivery id is derived from it.
    pub origin: Option<u64>,
}

impl LogEntry {
    /// A fresh record aimed at every sink.
    pub fn new(record: Record) -> LogEntry {
        LogEntry {
            record,
            target: None,
            origin: None,
        }
    }

    /// The seq the delivery id derives from, given this entry's own seq.
    pub fn origin_seq(&self, own: Seq) -> Seq {
        self.origin.map(Seq).unwrap_or(own)
    }
}

/// The fixed header of a log value, readable without decoding the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// How many records the value holds; their seqs are `key .. key+count`.
    pub count: u32,
    /// Sum of [`Record::size`] over the records.
    pub bytes: u64,
    /// When the batch was appended, ms since the Unix epoch.
    pub appended_at_ms: u64,
}

/// Bytes before the bincode part of a log value.
pub const BATCH_HEADER_LEN: usize = 1 + 4 + 8 + 8;

/// Encodes one log value: version, header, then the entries.
pub fn encode_batch(header: BatchHeader, entries: &[LogEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + header.bytes as usize + 24 * entries.len());
    out.push(FormatVersion::CURRENT as u8);
    out.extend_from_slice(&header.count.to_be_bytes());
    out.extend_from_slice(&header.bytes.to_be_bytes());
    out.extend_from_slice(&header.appended_at_ms.to_be_bytes());
    // Writing into a Vec cannot fail, and the entries are plain data.
    let _ = bincode::serde::encode_into_std_write(entries, &mut out, BINCODE);
    out
}

fn version(tree: &'static str, key: &[u8], value: &[u8]) -> Result<FormatVersion> {
    let Some(&v) = value.first() else {
        return Err(corrupt(tree, key, "empty value"));
    };
    FormatVersion::try_from(v)
        .map_err(|v| corrupt(tree, key, format!("unknown format version byte {v}")))
}

/// Reads the fixed header of a log value.
///
/// # Errors
/// [`Error::Corrupted`] when the key is not a seq, the value is too short or
/// of an unknown version.
pub fn decode_batch_header(key: &[u8], value: &[u8]) -> Result<(Seq, BatchHeader)> {
    let first = decode_log_key(key)?;
    version(tree::LOG, key, value)?;
    let h = value
        .get(1..BATCH_HEADER_LEN)
        .ok_or_else(|| corrupt(tree::LOG, key, "value shorter than the batch header"))?;
    let (count, rest) = h.split_at(4);
    let (bytes, at) = rest.split_at(8);
    let header = BatchHeader {
        count: u32::from_be_bytes(count.try_into().unwrap_or_default()),
        bytes: u64::from_be_bytes(bytes.try_into().unwrap_or_default()),
        appended_at_ms: u64::from_be_bytes(at.try_into().unwrap_or_default()),
    };
    if header.count == 0 {
        return Err(corrupt(tree::LOG, key, "batch header counts zero records"));
    }
    if first.0.checked_add(u64::from(header.count)).is_none() {
        return Err(corrupt(tree::LOG, key, "batch runs past the largest seq"));
    }
    Ok((first, header))
}

/// Decodes a whole log value.
///
/// # Errors
/// [`Error::Corrupted`] on any mismatch: bad key, bad header, bincode
/// failure, trailing bytes, or a record count or byte total that disagrees
/// with the header.
pub fn decode_batch(key: &[u8], value: &[u8]) -> Result<(Seq, BatchHeader, Vec<LogEntry>)> {
    let (first, header) = decode_batch_header(key, value)?;
    let body = value.get(BATCH_HEADER_LEN..).unwrap_or_default();
    let entries: Vec<LogEntry> = decode_exact(tree::LOG, key, body)?;
    if entries.len() != header.count as usize {
        return Err(corrupt(
            tree::LOG,
            key,
            format!(
                "header counts {} records, value holds {}",
                header.count,
                entries.len()
            ),
        ));
    }
    let bytes: u64 = entries.iter().map(|e| e.record.size() as u64).sum();
    if bytes != header.bytes {
        return Err(corrupt(
            tree::LOG,
            key,
            format!("header counts {} bytes, records hold {bytes}", header.bytes),
        ));
    }
    for e in &entries {
        if let Some(t) = &e.target {
            SinkName::new(t.clone())
                .map_err(|_| corrupt(tree::LOG, key, format!("invalid target sink {t:?}")))?;
        }
    }
    Ok((first, header, entries))
}

/// A log key.
pub fn log_key(first: Seq) -> [u8; 8] {
    first.to_be_bytes()
}

/// Reads a log key.
///
/// # Errors
/// [`Error::Corrupted`] unless the key is eight bytes.
pub fn decode_log_key(key: &[u8]) -> Result<Seq> {
    Seq::from_be_slice(key).ok_or_else(|| corrupt(tree::LOG, key, "key is not an 8-byte seq"))
}

/// A sink's committed offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetValue {
    /// Every seq below this one is done for the sink: delivered, dropped,
    /// passed over, or parked in the DLQ.
    pub next: u64,
    /// When it was last written, ms since the Unix epoch.
    pub updated_at_ms: u64,
}

/// Encodes an offset value.
pub fn encode_offset(v: &OffsetValue) -> Vec<u8> {
    encode_versioned(v)
}

/// Decodes an offset value.
///
/// # Errors
/// [`Error::Corrupted`] naming the sink when the value does not decode.
pub fn decode_offset(key: &[u8], value: &[u8]) -> Result<OffsetValue> {
    decode_versioned(tree::OFFSETS, key, value)
}

/// Reads an offsets key (the sink name).
///
/// # Errors
/// [`Error::Corrupted`] when it is not a valid sink name.
pub fn decode_offset_key(key: &[u8]) -> Result<SinkName> {
    std::str::from_utf8(key)
        .ok()
        .and_then(|s| SinkName::new(s).ok())
        .ok_or_else(|| corrupt(tree::OFFSETS, key, "key is not a valid sink name"))
}

/// A terminal failure, parked for one sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqEntry {
    /// The sink that failed.
    pub sink: String,
    /// The seq the record had in the log when it failed.
    pub seq: u64,
    /// The seq its delivery id derives from.
    pub origin: u64,
    /// The record.
    pub record: Record,
    /// The last error, as text.
    pub error: String,
    /// Delivery attempts made.
    pub attempts: u32,
    /// When it was parked, ms since the Unix epoch.
    pub failed_at_ms: u64,
}

/// A DLQ key: one byte of name length, the name, then the BE seq. Entries of
/// one sink sort together, in seq order.
pub fn dlq_key(sink: &SinkName, seq: Seq) -> Vec<u8> {
    let name = sink.as_str().as_bytes();
    let mut k = Vec::with_capacity(1 + name.len() + 8);
    // SinkName is at most 64 bytes, so the length fits a byte.
    k.push(name.len() as u8);
    k.extend_from_slice(name);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The key prefix of every DLQ entry of `sink`.
pub fn dlq_prefix(sink: &SinkName) -> Vec<u8> {
    let name = sink.as_str().as_bytes();
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(name.len() as u8);
    k.extend_from_slice(name);
    k
}

/// Reads a DLQ key.
///
/// # Errors
/// [`Error::Corrupted`] when the layout or the name is wrong.
pub fn decode_dlq_key(key: &[u8]) -> Result<(SinkName, Seq)> {
    parse_dlq_key(key)
        .ok_or_else(|| corrupt(tree::DLQ, key, "key is not <len><sink name><8-byte seq>"))
}

/// The parse behind [`decode_dlq_key`], without building an error: the
/// error's rendering ([`render_key`]) parses DLQ keys too.
fn parse_dlq_key(key: &[u8]) -> Option<(SinkName, Seq)> {
    let (&len, rest) = key.split_first()?;
    let len = len as usize;
    if rest.len() != len + 8 {
        return None;
    }
    let (name, seq) = rest.split_at(len);
    let name = std::str::from_utf8(name)
        .ok()
        .and_then(|s| SinkName::new(s).ok())?;
    Some((name, Seq::from_be_slice(seq)?))
}

/// Encodes a DLQ value.
pub fn encode_dlq(v: &DlqEntry) -> Vec<u8> {
    encode_versioned(v)
}

/// Decodes a DLQ value and checks it against its key.
///
/// # Errors
/// [`Error::Corrupted`] when it does not decode or disagrees with the key.
pub fn decode_dlq(key: &[u8], value: &[u8]) -> Result<DlqEntry> {
    let (sink, seq) = decode_dlq_key(key)?;
    let entry: DlqEntry = decode_versioned(tree::DLQ, key, value)?;
    if entry.sink != sink.as_str() || entry.seq != seq.0 {
        return Err(corrupt(
            tree::DLQ,
            key,
            "value names another sink or seq than its key",
        ));
    }
    Ok(entry)
}

/// Encodes a u64 meta value (creation time, seq floor).
pub fn encode_meta_u64(v: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(FormatVersion::CURRENT as u8);
    out.extend_from_slice(&v.to_be_bytes());
    out
}

/// Decodes a u64 meta value.
///
/// # Errors
/// [`Error::Corrupted`] unless it is a version byte and eight bytes.
pub fn decode_meta_u64(key: &[u8], value: &[u8]) -> Result<u64> {
    version(tree::META, key, value)?;
    value
        .get(1..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt(tree::META, key, "expected a version byte and a u64"))
}

/// Encodes the log id.
pub fn encode_log_id(id: Uuid) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(FormatVersion::CURRENT as u8);
    out.extend_from_slice(id.as_bytes());
    out
}

/// Decodes the log id.
///
/// # Errors
/// [`Error::Corrupted`] unless it is a version byte and 16 bytes.
pub fn decode_log_id(value: &[u8]) -> Result<Uuid> {
    let key = meta_key::LOG_ID;
    version(tree::META, key, value)?;
    value
        .get(1..)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(Uuid::from_bytes)
        .ok_or_else(|| corrupt(tree::META, key, "expected a version byte and 16 bytes"))
}

/// Encodes the configured sink list.
pub fn encode_sink_list(names: &[String]) -> Vec<u8> {
    encode_versioned(&names)
}

/// Decodes the configured sink list.
///
/// # Errors
/// [`Error::Corrupted`] when it does not decode or holds an invalid name.
pub fn decode_sink_list(value: &[u8]) -> Result<Vec<SinkName>> {
    let key = meta_key::SINKS;
    let names: Vec<String> = decode_versioned(tree::META, key, value)?;
    names
        .into_iter()
        .map(|n| {
            SinkName::new(n.clone())
                .map_err(|_| corrupt(tree::META, key, format!("invalid sink name {n:?}")))
        })
        .collect()
}

fn encode_versioned<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![FormatVersion::CURRENT as u8];
    let _ = bincode::serde::encode_into_std_write(v, &mut out, BINCODE);
    out
}

fn decode_versioned<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    value: &[u8],
) -> Result<T> {
    version(tree, key, value)?;
    decode_exact(tree, key, value.get(1..).unwrap_or_default())
}

fn decode_exact<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    body: &[u8],
) -> Result<T> {
    let (v, used) = bincode::serde::decode_from_slice(body, BINCODE)
        .map_err(|e| corrupt(tree, key, format!("does not decode: {e}")))?;
    if used != body.len() {
        return Err(corrupt(
            tree,
            key,
            format!("{} trailing bytes after the value", body.len() - used),
        ));
    }
    Ok(v)
}

/// Renders a key for an error message: a seq for 8-byte keys, text for
/// printable keys, hex otherwise.
pub fn render_key(tree: &str, key: &[u8]) -> String {
    if tree == tree::LOG {
        if let Some(s) = Seq::from_be_slice(key) {
            return format!("seq {s}");
        }
    }
    if tree == tree::DLQ {
        if let Some((sink, seq)) = parse_dlq_key(key) {
            return format!("{sink}/seq {seq}");
        }
    }
    match std::str::from_utf8(key) {
        Ok(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic()) => format!("`{s}`"),
        _ => {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

fn corrupt(tree: &'static str, key: &[u8], reason: impl Into<String>) -> Error {
    Error::Corrupted {
        tree,
        key: render_key(tree, key),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<LogEntry> {
        vec![
            LogEntry::new(Record::new(b"hello".to_vec()).with_header("content-type", "text/plain")),
            LogEntry {
                record: Record::new(vec![0, 159, 146, 150]),
                target: Some("file".into()),
                origin: Some(7),
            },
        ]
    }

    fn header(e: &[LogEntry]) -> BatchHeader {
        BatchHeader {
            count: e.len() as u32,
            bytes: e.iter().map(|e| e.record.size() as u64).sum(),
            appended_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn batch_round_trips() {
        let e = entries();
        let v = encode_batch(header(&e), &e);
        assert_eq!(v[0], 1);
        let (first, h, back) = decode_batch(&log_key(Seq(10)), &v).unwrap();
        assert_eq!(first, Seq(10));
        assert_eq!(h, header(&e));
        assert_eq!(back, e);
        assert_eq!(back[1].origin_seq(Seq(11)), Seq(7));
        assert_eq!(back[0].origin_seq(Seq(10)), Seq(10));
    }

    #[test]
    fn batch_layout_is_the_documented_one() {
        let e = vec![LogEntry::new(Record::new(b"ab".to_vec()))];
        let v = encode_batch(header(&e), &e);
        let mut want = vec![1u8];
        want.extend_from_slice(&1u32.to_be_bytes());
        want.extend_from_slice(&2u64.to_be_bytes());
        want.extend_from_slice(&1_700_000_000_000u64.to_be_bytes());
        want.extend_from_slice(&1u64.to_be_bytes()); // entries: len
        want.extend_from_slice(&0u64.to_be_bytes()); // headers: len
        want.extend_from_slice(&2u64.to_be_bytes()); // payload: len
        want.extend_from_slice(b"ab");
        want.push(0); // target: None
        want.push(0); // origin: None
        assert_eq!(v, want);
    }

    #[test]
    fn every_prefix_of_a_batch_is_an_error() {
        let e = entries();
        let v = encode_batch(header(&e), &e);
        for n in 0..v.len() {
            let err = decode_batch(&log_key(Seq(3)), &v[..n]).unwrap_err();
            match err {
                Error::Corrupted { tree, key, .. } => {
                    assert_eq!(tree, "log");
                    assert_eq!(key, "seq 3");
                }
                other => panic!("prefix {n}: {other}"),
            }
        }
    }

    #[test]
    fn wrong_version_and_header_mismatch_are_named() {
        let e = entries();
        let mut v = encode_batch(header(&e), &e);
        v[0] = 9;
        let err = decode_batch(&log_key(Seq(1)), &v).unwrap_err().to_string();
        assert!(err.contains("unknown format version byte 9"), "{err}");
        let mut v = encode_batch(header(&e), &e);
        v[4] = 3; // count 3, holds 2
        let err = decode_batch(&log_key(Seq(1)), &v).unwrap_err().to_string();
        assert!(err.contains("header counts 3 records"), "{err}");
        let err = decode_batch(b"abc", &v).unwrap_err().to_string();
        assert!(err.contains("tree `log`"), "{err}");
    }

    #[test]
    fn hostile_length_does_not_allocate() {
        // A header that claims u64::MAX entries must fail fast, not OOM.
        let mut v = encode_batch(
            BatchHeader {
                count: 1,
                bytes: 0,
                appended_at_ms: 0,
            },
            &[],
        );
        v.truncate(BATCH_HEADER_LEN);
        v.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode_batch(&log_key(Seq(0)), &v).is_err());
    }

    #[test]
    fn offset_dlq_and_meta_round_trip() {
        let o = OffsetValue {
            next: 99,
            updated_at_ms: 5,
        };
        assert_eq!(decode_offset(b"s", &encode_offset(&o)).unwrap(), o);
        let sink = SinkName::new("web").unwrap();
        let key = dlq_key(&sink, Seq(12));
        assert!(key.starts_with(&dlq_prefix(&sink)));
        assert_eq!(decode_dlq_key(&key).unwrap(), (sink.clone(), Seq(12)));
        let d = DlqEntry {
            sink: "web".into(),
            seq: 12,
            origin: 4,
            record: Record::new(b"x".to_vec()),
            error: "HTTP 400".into(),
            attempts: 1,
            failed_at_ms: 77,
        };
        assert_eq!(decode_dlq(&key, &encode_dlq(&d)).unwrap(), d);
        let other = dlq_key(&sink, Seq(13));
        assert!(decode_dlq(&other, &encode_dlq(&d)).is_err());
        assert_eq!(decode_meta_u64(b"k", &encode_meta_u64(123)).unwrap(), 123);
        let names = vec!["a".to_string(), "web-1".to_string()];
        let back = decode_sink_list(&encode_sink_list(&names)).unwrap();
        assert_eq!(
            back.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            ["a", "web-1"]
        );
        assert!(decode_sink_list(&encode_sink_list(&["a b".to_string()])).is_err());
        let id = Uuid::new_v4();
        assert_eq!(decode_log_id(&encode_log_id(id)).unwrap(), id);
        assert!(decode_log_id(&[1, 2, 3]).is_err());
    }

    #[test]
    fn keys_render_for_humans() {
        assert_eq!(render_key("log", &Seq(5).to_be_bytes()), "seq 5");
        assert_eq!(render_key("offsets", b"file"), "`file`");
        assert_eq!(render_key("meta", &[0, 1]), "0x0001");
        let k = dlq_key(&SinkName::new("a").unwrap(), Seq(2));
        assert_eq!(render_key("dlq", &k), "a/seq 2");
    }
}
