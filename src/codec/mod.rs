//! The versioned encoding of every stored key and value.
//!
//! Everything that reaches disk passes through this module, so a format
//! change touches one folder. Invariants:
//! - every value starts with a format-version byte ([`FormatVersion`]);
//! - every version-2 value ends with a CRC32C over the tree's name, the key,
//!   the version byte and the body, so a value that was damaged, cut short,
//!   or written under another key or into another tree is reported, never
//!   used ([`Error::Corrupted`] naming the tree and the key);
//! - keys are big-endian, so sled's byte order is numeric order;
//! - decoding never panics and never trusts a length: bincode runs with a
//!   size limit ([`MAX_VALUE_BYTES`]), and encoding refuses a value larger
//!   than that limit, so nothing is written that could not be read back;
//! - version-1 values (no checksum) still decode; everything written now is
//!   version 2.
//!
//! The byte-level layout is written out in `docs/design.md`.

mod dlq;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
mod log;
mod meta;
mod sink_state;

use serde::Serialize;

use crate::error::{StoreError as Error, StoreResult as Result};
use crate::types::Seq;

pub use dlq::{
    Attempt, DlqEntry, HISTORY_MAX, decode_dlq, decode_dlq_key, dlq_key, dlq_prefix, encode_dlq,
};
pub use log::{
    BatchHeader, BatchKind, LogEntry, decode_batch, decode_batch_header, decode_log_key,
    encode_batch, log_key,
};
pub use meta::{
    IdemValue, Member, OffsetValue, WriteIntent, decode_idem, decode_log_id, decode_members,
    decode_meta_u64, decode_offset, decode_offset_key, decode_sink_list, decode_write_intent,
    encode_idem, encode_log_id, encode_members, encode_meta_u64, encode_offset,
    encode_write_intent,
};
pub use sink_state::{
    PauseState, RetryState, decode_pause, decode_retry, decode_retry_seq, encode_pause,
    encode_retry, pause_key, retry_key, retry_prefix,
};

/// The largest value bincode may decode, a guard against hostile lengths;
/// encoding refuses anything larger.
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

/// Bytes of the checksum at the end of a version-2 value.
pub const CHECKSUM_LEN: usize = 4;

/// The on-disk format version, the first byte of every value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum FormatVersion {
    /// The first format: no checksums.
    V1 = 1,
    /// Every value checksummed; log values carry a kind; see `docs/design.md`.
    V2 = 2,
}

impl FormatVersion {
    /// What this build writes.
    pub const CURRENT: FormatVersion = FormatVersion::V2;
}

/// The directory's format, `meta/format_version`: 1 and 2 are the value
/// formats of [`FormatVersion`] with the log in one tree; 3 is version-2
/// values with the log in generations (`store::log_trees`), which a build
/// that reads only the tree `log` must refuse rather than misread.
pub const DIR_FORMAT: u8 = 3;

/// The value format of a directory of format `dir` (see [`DIR_FORMAT`]).
pub fn value_format(dir: u8) -> Option<FormatVersion> {
    match dir {
        DIR_FORMAT => Some(FormatVersion::V2),
        other => FormatVersion::try_from(other).ok(),
    }
}

impl TryFrom<u8> for FormatVersion {
    type Error = u8;
    fn try_from(v: u8) -> std::result::Result<Self, u8> {
        match v {
            1 => Ok(FormatVersion::V1),
            2 => Ok(FormatVersion::V2),
            other => Err(other),
        }
    }
}

/// Tree names, as sled knows them.
pub mod tree {
    /// Records, one value per batch.
    pub const LOG: &str = "log";
    /// Each sink's committed offset.
    pub const OFFSETS: &str = "offsets";
    /// Terminal failures.
    pub const DLQ: &str = "dlq";
    /// Format version, log id, creation time, seq floor and reservation,
    /// sink membership.
    pub const META: &str = "meta";
    /// Idempotency keys of recent dispatches.
    pub const IDEM: &str = "idem";
    /// Per-sink delivery state besides the offset: retries in progress and
    /// operator pauses.
    pub const SINK_STATE: &str = "sink_state";
}

/// Keys of the `meta` tree.
pub mod meta_key {
    /// One byte: the format version of the directory.
    pub const FORMAT_VERSION: &[u8] = b"format_version";
    /// Version byte + 16 bytes of uuid.
    pub const LOG_ID: &[u8] = b"log_id";
    /// Version byte + u64 BE milliseconds since the Unix epoch.
    pub const CREATED_AT: &[u8] = b"created_at_ms";
    /// Version byte + u64 BE: no seq below this is ever assigned again.
    pub const SEQ_FLOOR: &[u8] = b"seq_floor";
    /// Version byte + u64 BE: every seq ever receipted is below this one, so
    /// after a crash the next seq starts here.
    pub const SEQ_RESERVED: &[u8] = b"seq_reserved";
    /// Version 1 only: bincode `Vec<String>`, the sinks configured at the
    /// last open. Replaced by [`MEMBERS`] when a directory is upgraded.
    pub const SINKS: &[u8] = b"sinks";
    /// Version byte + bincode `Vec<Member>`: every sink with an offset, and
    /// since when it is orphaned (not configured), if it is.
    pub const MEMBERS: &[u8] = b"members";
    /// Version byte + bincode `WriteIntent`: a write of the log that must
    /// be whole or absent is under way, or was cut by a crash
    /// (`store::intent`). Absent between writes.
    pub const WRITE_INTENT: &[u8] = b"write_intent";
}

/// Encodes a version-2 value: version byte, `body`, checksum.
fn seal(tree: &str, key: &[u8], mut out: Vec<u8>) -> Result<Vec<u8>> {
    debug_assert_eq!(out.first(), Some(&(FormatVersion::V2 as u8)));
    if out.len() + CHECKSUM_LEN > MAX_VALUE_BYTES {
        return Err(Error::ValueRejected(format!(
            "a {} value of {} bytes is over the {MAX_VALUE_BYTES}-byte limit every reader enforces; nothing was written",
            tree,
            out.len()
        )));
    }
    let crc = checksum(tree, key, &out);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// The CRC32C a version-2 value ends with: over the tree's name, the key's
/// length (`u32` BE) and bytes, and the value up to the checksum (version
/// byte and body).
pub fn checksum(tree: &str, key: &[u8], versioned_body: &[u8]) -> u32 {
    let crc = crc32c::crc32c(tree.as_bytes());
    let crc = crc32c::crc32c_append(crc, &(key.len() as u32).to_be_bytes());
    let crc = crc32c::crc32c_append(crc, key);
    crc32c::crc32c_append(crc, versioned_body)
}

/// Checks the version (and, for version 2, the checksum) of a value and
/// returns its version and body: the bytes between the version byte and the
/// checksum.
fn unseal<'a>(
    tree: &'static str,
    key: &[u8],
    value: &'a [u8],
) -> Result<(FormatVersion, &'a [u8])> {
    let Some(&v) = value.first() else {
        return Err(corrupt(tree, key, "empty value"));
    };
    let version = FormatVersion::try_from(v)
        .map_err(|v| corrupt(tree, key, format!("unknown format version byte {v}")))?;
    match version {
        FormatVersion::V1 => Ok((version, value.get(1..).unwrap_or_default())),
        FormatVersion::V2 => {
            let Some(split) = value.len().checked_sub(CHECKSUM_LEN).filter(|s| *s >= 1) else {
                return Err(corrupt(tree, key, "value shorter than its checksum"));
            };
            let (sealed, stored) = value.split_at(split);
            let stored = u32::from_be_bytes(stored.try_into().unwrap_or_default());
            let actual = checksum(tree, key, sealed);
            if stored != actual {
                return Err(corrupt(
                    tree,
                    key,
                    format!("checksum mismatch (stored {stored:08x}, computed {actual:08x})"),
                ));
            }
            Ok((version, sealed.get(1..).unwrap_or_default()))
        }
    }
}

/// A version-2 value whose body is one bincode value.
fn encode_sealed<T: Serialize + ?Sized>(tree: &str, key: &[u8], v: &T) -> Result<Vec<u8>> {
    let mut out = vec![FormatVersion::V2 as u8];
    bincode::serde::encode_into_std_write(v, &mut out, BINCODE)
        .map_err(|e| Error::ValueRejected(format!("a {tree} value does not encode: {e}")))?;
    seal(tree, key, out)
}

/// Decodes a value whose body is exactly one bincode value of type `T`.
fn decode_sealed<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    value: &[u8],
) -> Result<(FormatVersion, T)> {
    let (version, body) = unseal(tree, key, value)?;
    Ok((version, decode_exact(tree, key, body)?))
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
    if tree == tree::LOG
        && let Some(s) = Seq::from_be_slice(key)
    {
        return format!("seq {s}");
    }
    if tree == tree::DLQ
        && let Some((sink, seq)) = dlq::parse_dlq_key(key)
    {
        return format!("{sink}/seq {seq}");
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

/// `Option<Uuid>` as `Option<[u8; 16]>`: a tag byte and 16 fixed bytes in
/// bincode, rather than uuid's length-prefixed byte string.
mod opt_uuid {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(v: &Option<Uuid>, s: S) -> Result<S::Ok, S::Error> {
        v.map(|u| *u.as_bytes()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uuid>, D::Error> {
        Ok(Option::<[u8; 16]>::deserialize(d)?.map(Uuid::from_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_detect_every_single_bit_flip_and_a_wrong_key_or_tree() {
        let v = encode_sealed(tree::OFFSETS, b"web", &(7u64, 9u64)).unwrap();
        assert_eq!(v[0], 2);
        assert!(unseal(tree::OFFSETS, b"web", &v).is_ok());
        for i in 0..v.len() {
            for bit in 0..8 {
                let mut bad = v.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    unseal(tree::OFFSETS, b"web", &bad).is_err(),
                    "byte {i} bit {bit}"
                );
            }
        }
        let e = unseal(tree::OFFSETS, b"wed", &v).unwrap_err().to_string();
        assert!(
            e.contains("checksum mismatch") && e.contains("`wed`"),
            "{e}"
        );
        assert!(unseal(tree::DLQ, b"web", &v).is_err(), "another tree");
        for n in 0..v.len() {
            assert!(
                unseal(tree::OFFSETS, b"web", &v[..n]).is_err(),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn encoding_refuses_what_decoding_would_refuse() {
        let big = vec![0u8; MAX_VALUE_BYTES];
        let e = encode_sealed(tree::DLQ, b"k", serde_bytes::Bytes::new(&big)).unwrap_err();
        assert!(matches!(e, Error::ValueRejected(_)), "{e}");
        assert!(e.to_string().contains("nothing was written"), "{e}");
    }

    #[test]
    fn keys_render_for_humans() {
        assert_eq!(render_key("log", &Seq(5).to_be_bytes()), "seq 5");
        assert_eq!(render_key("offsets", b"file"), "`file`");
        assert_eq!(render_key("meta", &[0, 1]), "0x0001");
        let k = dlq_key(&crate::types::SinkName::new("a").unwrap(), Seq(2));
        assert_eq!(render_key("dlq", &k), "a/seq 2");
    }
}
