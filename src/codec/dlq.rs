//! DLQ keys and values.
//!
//! Key: `len: u8`, the sink name (`len` bytes), the seq `u64` BE, so the
//! entries of one sink sort together, in seq order. Value, version 2: `2`,
//! bincode [`DlqEntry`], CRC32C. Version 1 entries (no `origin_log`, no
//! history) still decode.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{FormatVersion, corrupt, decode_exact, encode_sealed, tree, unseal};
use crate::error::StoreResult as Result;
use crate::types::{DeliveryId, Record, Seq, SinkName};

/// How many attempts a DLQ entry keeps in its history.
pub const HISTORY_MAX: usize = 10;

/// One failed delivery attempt, as a DLQ entry remembers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the attempt began, ms since the Unix epoch.
    pub at_ms: u64,
    /// How long it took, in ms.
    pub latency_ms: u64,
    /// Whether the sink called the failure permanent.
    pub permanent: bool,
    /// What the sink said (for a webhook: the status and the start of the
    /// body, or the transport error).
    pub error: String,
}

/// A terminal failure, dead-lettered for one sink: its DLQ entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqEntry {
    /// The sink that failed.
    pub sink: String,
    /// The seq the record had in the log when it failed.
    pub seq: u64,
    /// The seq its delivery id derives from.
    pub origin: u64,
    /// The log id its delivery id derives from, when not this store's.
    #[serde(with = "super::opt_uuid")]
    pub origin_log: Option<Uuid>,
    /// The record.
    pub record: Record,
    /// The last error, as text.
    pub error: String,
    /// Delivery attempts made.
    pub attempts: u32,
    /// When it was dead-lettered, ms since the Unix epoch.
    pub failed_at_ms: u64,
    /// The last attempts (at most [`HISTORY_MAX`]), oldest first.
    pub history: Vec<Attempt>,
}

impl DlqEntry {
    /// The record's delivery id, given the store's log id.
    pub fn delivery_id(&self, log_id: Uuid) -> DeliveryId {
        DeliveryId {
            log_id: self.origin_log.unwrap_or(log_id),
            seq: Seq(self.origin),
        }
    }
}

#[derive(Deserialize)]
struct DlqEntryV1 {
    sink: String,
    seq: u64,
    origin: u64,
    record: Record,
    error: String,
    attempts: u32,
    failed_at_ms: u64,
}

/// A DLQ key: one byte of name length, the name, then the BE seq.
pub fn dlq_key(sink: &SinkName, seq: Seq) -> Vec<u8> {
    let mut k = dlq_prefix(sink);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The key prefix of every DLQ entry of `sink`.
pub fn dlq_prefix(sink: &SinkName) -> Vec<u8> {
    let name = sink.as_str().as_bytes();
    let mut k = Vec::with_capacity(1 + name.len() + 8);
    // SinkName is at most 64 bytes, so the length fits a byte.
    k.push(name.len() as u8);
    k.extend_from_slice(name);
    k
}

/// Reads a DLQ key.
///
/// # Errors
/// [`Error::Corrupted`](crate::StoreError::Corrupted) when the layout or the
/// name is wrong.
pub fn decode_dlq_key(key: &[u8]) -> Result<(SinkName, Seq)> {
    parse_dlq_key(key)
        .ok_or_else(|| corrupt(tree::DLQ, key, "key is not <len><sink name><8-byte seq>"))
}

/// The parse behind [`decode_dlq_key`], without building an error: the
/// error's rendering ([`super::render_key`]) parses DLQ keys too.
pub(super) fn parse_dlq_key(key: &[u8]) -> Option<(SinkName, Seq)> {
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

/// Encodes a DLQ value for `key` (which must be `dlq_key(sink, seq)` of the
/// entry).
///
/// # Errors
/// [`crate::StoreError::ValueRejected`] when the value would be too large to
/// read back.
pub fn encode_dlq(key: &[u8], v: &DlqEntry) -> Result<Vec<u8>> {
    encode_sealed(tree::DLQ, key, v)
}

/// Decodes a DLQ value and checks it against its key.
///
/// # Errors
/// [`crate::StoreError::Corrupted`] when it does not decode, fails its checksum
/// or disagrees with the key.
pub fn decode_dlq(key: &[u8], value: &[u8]) -> Result<DlqEntry> {
    let (sink, seq) = decode_dlq_key(key)?;
    let (version, body) = unseal(tree::DLQ, key, value)?;
    let entry = match version {
        FormatVersion::V1 => {
            let e: DlqEntryV1 = decode_exact(tree::DLQ, key, body)?;
            DlqEntry {
                sink: e.sink,
                seq: e.seq,
                origin: e.origin,
                origin_log: None,
                record: e.record,
                error: e.error,
                attempts: e.attempts,
                failed_at_ms: e.failed_at_ms,
                history: Vec::new(),
            }
        }
        FormatVersion::V2 => decode_exact(tree::DLQ, key, body)?,
    };
    if entry.sink != sink.as_str() || entry.seq != seq.0 {
        return Err(corrupt(
            tree::DLQ,
            key,
            "value names another sink or seq than its key",
        ));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> DlqEntry {
        DlqEntry {
            sink: "web".into(),
            seq: 12,
            origin: 4,
            origin_log: Some(Uuid::from_u128(3)),
            record: Record::new(b"x".to_vec()).with_header("event-type", "a.b"),
            error: "HTTP 400".into(),
            attempts: 2,
            failed_at_ms: 77,
            history: vec![
                Attempt {
                    at_ms: 70,
                    latency_ms: 3,
                    permanent: false,
                    error: "HTTP 503".into(),
                },
                Attempt {
                    at_ms: 75,
                    latency_ms: 2,
                    permanent: true,
                    error: "HTTP 400".into(),
                },
            ],
        }
    }

    #[test]
    fn dlq_round_trips_and_is_checked_against_its_key() {
        let sink = SinkName::new("web").unwrap();
        let key = dlq_key(&sink, Seq(12));
        assert!(key.starts_with(&dlq_prefix(&sink)));
        assert_eq!(decode_dlq_key(&key).unwrap(), (sink.clone(), Seq(12)));
        let v = encode_dlq(&key, &entry()).unwrap();
        assert_eq!(decode_dlq(&key, &v).unwrap(), entry());
        assert_eq!(
            entry().delivery_id(Uuid::from_u128(1)).to_string(),
            format!("msg_{}_4", Uuid::from_u128(3).simple())
        );
        let other = dlq_key(&sink, Seq(13));
        let e = decode_dlq(&other, &v).unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains("web/seq 13"), "{e}");
        assert!(decode_dlq_key(b"\x05ab").is_err());
    }

    #[test]
    fn version_1_entries_still_decode() {
        #[derive(Serialize)]
        struct V1<'a> {
            sink: &'a str,
            seq: u64,
            origin: u64,
            record: Record,
            error: &'a str,
            attempts: u32,
            failed_at_ms: u64,
        }
        let mut v = vec![1u8];
        let old = V1 {
            sink: "web",
            seq: 12,
            origin: 4,
            record: Record::new(b"x".to_vec()),
            error: "HTTP 400",
            attempts: 1,
            failed_at_ms: 77,
        };
        bincode::serde::encode_into_std_write(&old, &mut v, super::super::BINCODE).unwrap();
        let key = dlq_key(&SinkName::new("web").unwrap(), Seq(12));
        let e = decode_dlq(&key, &v).unwrap();
        assert_eq!((e.origin, e.origin_log, e.attempts), (4, None, 1));
        assert!(e.history.is_empty());
    }

    /// A DLQ key that does not decode must give `Corrupted`, like any bad key.
    /// Regression: `decode_dlq_key` built its error with `render_key`, which
    /// called `decode_dlq_key` on the same key again, recursing until the stack
    /// overflowed and the process aborted (found by the `decode` fuzz target).
    /// Moved here from `tests/faults/corruption.rs` when the codec became
    /// private.
    #[test]
    fn a_bad_dlq_key_is_an_error_not_a_stack_overflow() {
        let err = decode_dlq_key(b"").unwrap_err();
        assert!(err.is_corruption(), "{err}");
        let err = decode_dlq_key(&[3, b'a', b'b']).unwrap_err();
        assert!(err.to_string().contains("tree `dlq`"), "{err}");
    }
}
