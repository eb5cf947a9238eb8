//! Log values: one batch of consecutive seqs per value.
//!
//! Version 2 layout (all integers big-endian):
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0 | 1 | version, `2` |
//! | 1 | 1 | kind: 0 records, 1 hole, 2 lost |
//! | 2 | 4 | `count`: seqs the value covers, at least 1 |
//! | 6 | 8 | `bytes`: sum of [`Record::size`] over its records |
//! | 14 | 8 | `appended_at_ms` |
//! | 22 | .. | records only: bincode `Vec<LogEntry>` with exactly `count` entries |
//! | end − 4 | 4 | CRC32C (see the module above) |
//!
//! A *hole* covers seqs that were reserved but never receipted (a crash
//! lost them before their flush); a *lost* value covers records that
//! `outbox salvage` could not recover. Both are explicit and durable, so the
//! log covers every seq from its first value to its head exactly once, and
//! a reader that finds anything else has found damage.
//!
//! Version 1 (no kind, no checksum) still decodes: header at offsets 1..21,
//! entries without `origin_log`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{BINCODE, FormatVersion, corrupt, decode_exact, seal, tree, unseal};
use crate::error::{StoreError as Error, StoreResult as Result};
use crate::types::{DeliveryId, Record, Seq, SinkName};

/// What a log value holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchKind {
    /// Records, `count` of them.
    Records,
    /// Seqs reserved before a crash and never receipted: no record.
    Hole,
    /// Records that were lost to damage and written off by `outbox salvage`.
    Lost,
}

impl BatchKind {
    fn to_byte(self) -> u8 {
        match self {
            BatchKind::Records => 0,
            BatchKind::Hole => 1,
            BatchKind::Lost => 2,
        }
    }

    fn from_byte(b: u8) -> Option<BatchKind> {
        match b {
            0 => Some(BatchKind::Records),
            1 => Some(BatchKind::Hole),
            2 => Some(BatchKind::Lost),
            _ => None,
        }
    }
}

/// One record as it sits in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The record as dispatched.
    pub record: Record,
    /// `Some(sink)` for a redriven record: only that sink delivers it, every
    /// other sink passes over it.
    pub target: Option<String>,
    /// The seq the delivery id derives from, when it is not the record's
    /// own: a redriven record's first seq, or the sequence a caller gave
    /// with [`Record::with_delivery_id`].
    pub origin: Option<u64>,
    /// The log id the delivery id derives from, when it is not this store's
    /// (a caller-given id).
    #[serde(with = "super::opt_uuid")]
    pub origin_log: Option<Uuid>,
}

/// The version-1 entry, for reading old directories.
#[derive(Deserialize)]
struct LogEntryV1 {
    record: Record,
    target: Option<String>,
    origin: Option<u64>,
}

impl LogEntry {
    /// A fresh record aimed at every sink. A delivery id given with
    /// [`Record::with_delivery_id`] is kept as its origin.
    pub fn new(mut record: Record) -> LogEntry {
        let given = record.take_delivery_id();
        LogEntry {
            record,
            target: None,
            origin: given.map(|id| id.seq.0),
            origin_log: given.map(|id| id.log_id),
        }
    }

    /// The delivery id, given this entry's own seq and the store's log id.
    pub fn delivery_id(&self, own: Seq, log_id: Uuid) -> DeliveryId {
        DeliveryId {
            log_id: self.origin_log.unwrap_or(log_id),
            seq: self.origin.map(Seq).unwrap_or(own),
        }
    }
}

/// The fixed header of a log value, readable without decoding the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// What the value holds.
    pub kind: BatchKind,
    /// How many seqs the value covers: `key .. key+count`.
    pub count: u32,
    /// Sum of [`Record::size`] over the records (0 for holes).
    pub bytes: u64,
    /// When the batch was appended, ms since the Unix epoch.
    pub appended_at_ms: u64,
}

impl BatchHeader {
    /// A header for `entries`, appended now-ish at `appended_at_ms`.
    pub fn records(entries: &[LogEntry], appended_at_ms: u64) -> BatchHeader {
        BatchHeader {
            kind: BatchKind::Records,
            count: entries.len() as u32,
            bytes: entries.iter().map(|e| e.record.size() as u64).sum(),
            appended_at_ms,
        }
    }
}

const V1_HEADER_LEN: usize = 1 + 4 + 8 + 8;
const V2_HEADER_LEN: usize = 1 + 1 + 4 + 8 + 8;

/// Encodes one log value at key `first`.
///
/// # Errors
/// [`Error::ValueRejected`] when the value would exceed
/// `codec::MAX_VALUE_BYTES`, or the entries disagree with the header.
pub fn encode_batch(first: Seq, header: BatchHeader, entries: &[LogEntry]) -> Result<Vec<u8>> {
    let expect = match header.kind {
        BatchKind::Records => header.count as usize,
        BatchKind::Hole | BatchKind::Lost => 0,
    };
    if entries.len() != expect || header.count == 0 {
        return Err(Error::ValueRejected(format!(
            "a log value of kind {:?} counting {} seqs cannot hold {} entries",
            header.kind,
            header.count,
            entries.len()
        )));
    }
    let mut out = Vec::with_capacity(
        V2_HEADER_LEN + header.bytes as usize + 40 * entries.len() + super::CHECKSUM_LEN,
    );
    out.push(FormatVersion::V2 as u8);
    out.push(header.kind.to_byte());
    out.extend_from_slice(&header.count.to_be_bytes());
    out.extend_from_slice(&header.bytes.to_be_bytes());
    out.extend_from_slice(&header.appended_at_ms.to_be_bytes());
    if header.kind == BatchKind::Records {
        bincode::serde::encode_into_std_write(entries, &mut out, BINCODE)
            .map_err(|e| Error::ValueRejected(format!("log value does not encode: {e}")))?;
    }
    seal(tree::LOG, &log_key(first), out)
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().unwrap_or_default())
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().unwrap_or_default())
}

/// Checks a log value's key, checksum and header, and returns them with the
/// bytes of its entries (empty for holes).
fn parse<'a>(key: &[u8], value: &'a [u8]) -> Result<(Seq, BatchHeader, FormatVersion, &'a [u8])> {
    let first = decode_log_key(key)?;
    let (version, body) = unseal(tree::LOG, key, value)?;
    let short = || corrupt(tree::LOG, key, "value shorter than the batch header");
    // `h` is the header without the version byte: [kind,] count, bytes, at.
    let (kind, h, rest) = match version {
        FormatVersion::V1 => {
            let h = body.get(..V1_HEADER_LEN - 1).ok_or_else(short)?;
            (BatchKind::Records, h, body.get(V1_HEADER_LEN - 1..))
        }
        FormatVersion::V2 => {
            let h = body.get(..V2_HEADER_LEN - 1).ok_or_else(short)?;
            let (&kind, h) = h.split_first().ok_or_else(short)?;
            let kind = BatchKind::from_byte(kind)
                .ok_or_else(|| corrupt(tree::LOG, key, format!("unknown batch kind {kind}")))?;
            (kind, h, body.get(V2_HEADER_LEN - 1..))
        }
    };
    let (count, h) = h.split_at(4);
    let (bytes, at) = h.split_at(8);
    let header = BatchHeader {
        kind,
        count: be_u32(count),
        bytes: be_u64(bytes),
        appended_at_ms: be_u64(at),
    };
    if header.count == 0 {
        return Err(corrupt(tree::LOG, key, "batch header counts zero seqs"));
    }
    if first.0.checked_add(u64::from(header.count)).is_none() {
        return Err(corrupt(tree::LOG, key, "batch runs past the largest seq"));
    }
    Ok((first, header, version, rest.unwrap_or_default()))
}

/// Reads the fixed header of a log value, checking its checksum.
///
/// # Errors
/// [`Error::Corrupted`] when the key is not a seq, the checksum fails, the
/// value is too short or of an unknown version or kind.
pub fn decode_batch_header(key: &[u8], value: &[u8]) -> Result<(Seq, BatchHeader)> {
    parse(key, value).map(|(first, header, _, _)| (first, header))
}

/// Decodes a whole log value.
///
/// # Errors
/// [`Error::Corrupted`] on any mismatch: bad key, checksum or header,
/// bincode failure, trailing bytes, a record count or byte total that
/// disagrees with the header, or an invalid target sink name.
pub fn decode_batch(key: &[u8], value: &[u8]) -> Result<(Seq, BatchHeader, Vec<LogEntry>)> {
    let (first, header, version, body) = parse(key, value)?;
    if header.kind != BatchKind::Records {
        if !body.is_empty() || header.bytes != 0 {
            return Err(corrupt(
                tree::LOG,
                key,
                format!("a {:?} value holds record bytes", header.kind),
            ));
        }
        return Ok((first, header, Vec::new()));
    }
    let entries: Vec<LogEntry> = match version {
        FormatVersion::V1 => decode_exact::<Vec<LogEntryV1>>(tree::LOG, key, body)?
            .into_iter()
            .map(|e| LogEntry {
                record: e.record,
                target: e.target,
                origin: e.origin,
                origin_log: None,
            })
            .collect(),
        FormatVersion::V2 => decode_exact(tree::LOG, key, body)?,
    };
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
                origin_log: None,
            },
            LogEntry::new(Record::new(b"js".to_vec()).with_delivery_id(DeliveryId {
                log_id: Uuid::from_u128(9),
                seq: Seq(123_456),
            })),
        ]
    }

    const AT: u64 = 1_700_000_000_000;

    #[test]
    fn batch_round_trips_with_every_kind_of_origin() {
        let e = entries();
        let v = encode_batch(Seq(10), BatchHeader::records(&e, AT), &e).unwrap();
        assert_eq!(v[0], 2);
        let (first, h, back) = decode_batch(&log_key(Seq(10)), &v).unwrap();
        assert_eq!((first, h), (Seq(10), BatchHeader::records(&e, AT)));
        assert_eq!(back, e);
        let own = Uuid::from_u128(1);
        let ids: Vec<String> = back
            .iter()
            .zip(10..)
            .map(|(e, s)| e.delivery_id(Seq(s), own).to_string())
            .collect();
        assert_eq!(
            ids,
            [
                format!("msg_{}_10", own.simple()),
                format!("msg_{}_7", own.simple()),
                format!("msg_{}_123456", Uuid::from_u128(9).simple()),
            ]
        );
    }

    #[test]
    fn batch_layout_is_the_documented_one() {
        let e = vec![LogEntry::new(Record::new(b"ab".to_vec()))];
        let v = encode_batch(Seq(0), BatchHeader::records(&e, AT), &e).unwrap();
        let mut want = vec![2u8, 0];
        want.extend_from_slice(&1u32.to_be_bytes());
        want.extend_from_slice(&2u64.to_be_bytes());
        want.extend_from_slice(&AT.to_be_bytes());
        want.extend_from_slice(&1u64.to_be_bytes()); // entries: len
        want.extend_from_slice(&0u64.to_be_bytes()); // headers: len
        want.extend_from_slice(&2u64.to_be_bytes()); // payload: len
        want.extend_from_slice(b"ab");
        want.extend_from_slice(&[0, 0, 0]); // target, origin, origin_log: None
        let crc = crc32c::crc32c_append(
            crc32c::crc32c_append(
                crc32c::crc32c_append(crc32c::crc32c(b"log"), &8u32.to_be_bytes()),
                &0u64.to_be_bytes(),
            ),
            &want,
        );
        want.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(v, want);
    }

    #[test]
    fn a_hole_covers_seqs_with_no_records() {
        let h = BatchHeader {
            kind: BatchKind::Hole,
            count: 1000,
            bytes: 0,
            appended_at_ms: AT,
        };
        let v = encode_batch(Seq(50), h, &[]).unwrap();
        assert_eq!(v.len(), V2_HEADER_LEN + 4);
        let (first, back, held) = decode_batch(&log_key(Seq(50)), &v).unwrap();
        assert_eq!((first, back, held.len()), (Seq(50), h, 0));
        assert!(encode_batch(Seq(50), h, &entries()).is_err());
    }

    #[test]
    fn version_1_values_still_decode() {
        // The layout of outbox 0.1: no kind, no checksum, no origin_log.
        let mut v = vec![1u8];
        v.extend_from_slice(&1u32.to_be_bytes());
        v.extend_from_slice(&2u64.to_be_bytes());
        v.extend_from_slice(&AT.to_be_bytes());
        v.extend_from_slice(&1u64.to_be_bytes());
        v.extend_from_slice(&0u64.to_be_bytes());
        v.extend_from_slice(&2u64.to_be_bytes());
        v.extend_from_slice(b"ab");
        v.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 1, b'f', 1]);
        v.extend_from_slice(&3u64.to_be_bytes());
        let (first, h, e) = decode_batch(&log_key(Seq(4)), &v).unwrap();
        assert_eq!(
            (first, h.kind, h.count, h.bytes),
            (Seq(4), BatchKind::Records, 1, 2)
        );
        assert_eq!(e[0].record.payload, b"ab");
        assert_eq!(e[0].target.as_deref(), Some("f"));
        assert_eq!((e[0].origin, e[0].origin_log), (Some(3), None));
    }

    #[test]
    fn every_prefix_every_flip_and_a_moved_key_are_errors() {
        let e = entries();
        let key = log_key(Seq(3));
        let v = encode_batch(Seq(3), BatchHeader::records(&e, AT), &e).unwrap();
        for n in 0..v.len() {
            match decode_batch(&key, &v[..n]).unwrap_err() {
                Error::Corrupted { tree, key, .. } => {
                    assert_eq!((tree, key.as_str()), ("log", "seq 3"))
                }
                other => panic!("prefix {n}: {other}"),
            }
        }
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 0x10;
            assert!(decode_batch_header(&key, &bad).is_err(), "flip at {i}");
        }
        let moved = decode_batch(&log_key(Seq(4)), &v).unwrap_err().to_string();
        assert!(
            moved.contains("checksum mismatch") && moved.contains("seq 4"),
            "{moved}"
        );
    }

    #[test]
    fn wrong_version_and_kind_are_named() {
        let e = entries();
        let mut v = encode_batch(Seq(1), BatchHeader::records(&e, AT), &e).unwrap();
        v[0] = 9;
        let err = decode_batch(&log_key(Seq(1)), &v).unwrap_err().to_string();
        assert!(err.contains("unknown format version byte 9"), "{err}");
        let err = decode_batch(b"abc", &v).unwrap_err().to_string();
        assert!(err.contains("tree `log`"), "{err}");
    }

    #[test]
    fn hostile_length_does_not_allocate() {
        // A V1 value (no checksum to stop it) claiming u64::MAX entries.
        let mut v = vec![1u8];
        v.extend_from_slice(&1u32.to_be_bytes());
        v.extend_from_slice(&0u64.to_be_bytes());
        v.extend_from_slice(&0u64.to_be_bytes());
        v.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode_batch(&log_key(Seq(0)), &v).is_err());
    }
}
