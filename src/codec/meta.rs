//! Offsets, `meta` values and idempotency keys.
//!
//! Every version-2 value here is `2`, a body, and a CRC32C:
//! - `offsets/<sink>`: bincode [`OffsetValue`] (16 bytes);
//! - `meta/log_id`: 16 bytes of UUID;
//! - `meta/created_at_ms`, `seq_floor`, `seq_reserved`: a `u64` BE;
//! - `meta/members`: bincode `Vec<Member>`;
//! - `meta/write_intent`: bincode [`WriteIntent`];
//! - `idem/<key>`: bincode [`IdemValue`].
//!
//! Version 1 had no checksum, and `meta/sinks` (a bincode `Vec<String>`)
//! instead of `members`; both still decode.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{corrupt, decode_sealed, encode_sealed, meta_key, tree, unseal};
use crate::error::StoreResult as Result;
use crate::types::SinkName;

/// A sink's committed offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetValue {
    /// Every seq below this one is done for the sink: delivered, dropped,
    /// passed over, or dead-lettered.
    pub offset: u64,
    /// When it was last written, ms since the Unix epoch.
    pub updated_at_ms: u64,
}

/// One sink the store knows: it has an offset, and its backlog is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The sink's name.
    pub name: String,
    /// `None` while the sink is configured; since when it has not been, in
    /// ms since the Unix epoch, once it is an orphan.
    pub orphaned_at_ms: Option<u64>,
}

/// What an idempotency key answers: the records it appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemValue {
    /// The seq of the first record.
    pub first: u64,
    /// How many records (consecutive seqs).
    pub count: u32,
    /// The first 16 bytes of the SHA-256 of the request's records, so a key
    /// reused for other content is told apart.
    pub digest: [u8; 16],
    /// When it was appended, ms since the Unix epoch.
    pub at_ms: u64,
}

/// A write of the log that must be whole or absent (`store::intent`): the
/// log values from `first` up, and the `idem` entries it adds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteIntent {
    /// The first seq the write covers; no value at or above it existed
    /// before the write began.
    pub first: u64,
    /// The raw keys of the `idem` entries the write adds (each key's entry
    /// and its time-index entry).
    pub idem_keys: Vec<Vec<u8>>,
}

/// Encodes a write intent.
///
/// # Errors
/// [`crate::StoreError::ValueRejected`] if it would be too large.
pub fn encode_write_intent(v: &WriteIntent) -> Result<Vec<u8>> {
    encode_sealed(tree::META, meta_key::WRITE_INTENT, v)
}

/// Decodes a write intent.
///
/// # Errors
/// [`crate::StoreError::Corrupted`] when it does not decode or fails its
/// checksum.
pub fn decode_write_intent(value: &[u8]) -> Result<WriteIntent> {
    decode_sealed(tree::META, meta_key::WRITE_INTENT, value).map(|(_, v)| v)
}

/// Encodes an offset value under `key` (the sink name).
///
/// # Errors
/// Never in practice (the value is 17 bytes); typed for uniformity.
pub fn encode_offset(key: &[u8], v: &OffsetValue) -> Result<Vec<u8>> {
    encode_sealed(tree::OFFSETS, key, v)
}

/// Decodes an offset value.
///
/// # Errors
/// [`crate::StoreError::Corrupted`] naming the sink when the value does not
/// decode.
pub fn decode_offset(key: &[u8], value: &[u8]) -> Result<OffsetValue> {
    decode_sealed(tree::OFFSETS, key, value).map(|(_, v)| v)
}

/// Reads an offsets key (the sink name).
///
/// # Errors
/// [`crate::StoreError::Corrupted`] when it is not a valid sink name.
pub fn decode_offset_key(key: &[u8]) -> Result<SinkName> {
    std::str::from_utf8(key)
        .ok()
        .and_then(|s| SinkName::new(s).ok())
        .ok_or_else(|| corrupt(tree::OFFSETS, key, "key is not a valid sink name"))
}

/// Encodes a u64 meta value (creation time, seq floor, reservation).
///
/// # Errors
/// Never in practice; typed for uniformity.
pub fn encode_meta_u64(key: &[u8], v: u64) -> Result<Vec<u8>> {
    encode_sealed(tree::META, key, &v)
}

/// Decodes a u64 meta value.
///
/// # Errors
/// [`crate::StoreError::Corrupted`] unless it is a version byte and eight bytes
/// (and, for version 2, a matching checksum).
pub fn decode_meta_u64(key: &[u8], value: &[u8]) -> Result<u64> {
    let (_, body) = unseal(tree::META, key, value)?;
    <[u8; 8]>::try_from(body)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(tree::META, key, "expected a version byte and a u64"))
}

/// Encodes the log id.
///
/// # Errors
/// Never in practice; typed for uniformity.
pub fn encode_log_id(id: Uuid) -> Result<Vec<u8>> {
    encode_sealed(tree::META, meta_key::LOG_ID, id.as_bytes())
}

/// Decodes the log id.
///
/// # Errors
/// [`crate::StoreError::Corrupted`] unless it is a version byte and 16 bytes.
pub fn decode_log_id(value: &[u8]) -> Result<Uuid> {
    let key = meta_key::LOG_ID;
    let (_, body) = unseal(tree::META, key, value)?;
    <[u8; 16]>::try_from(body)
        .map(Uuid::from_bytes)
        .map_err(|_| corrupt(tree::META, key, "expected a version byte and 16 bytes"))
}

/// Decodes the version-1 list of configured sinks (`meta/sinks`).
///
/// # Errors
/// [`crate::StoreError::Corrupted`] when it does not decode or holds an invalid
/// name.
pub fn decode_sink_list(value: &[u8]) -> Result<Vec<SinkName>> {
    let key = meta_key::SINKS;
    let (_, names): (_, Vec<String>) = decode_sealed(tree::META, key, value)?;
    names
        .into_iter()
        .map(|n| {
            SinkName::new(n.clone())
                .map_err(|_| corrupt(tree::META, key, format!("invalid sink name {n:?}")))
        })
        .collect()
}

/// Encodes the membership list.
///
/// # Errors
/// [`crate::StoreError::ValueRejected`] if it would be too large (it cannot:
/// names are at most 64 bytes).
pub fn encode_members(members: &[Member]) -> Result<Vec<u8>> {
    encode_sealed(tree::META, meta_key::MEMBERS, members)
}

/// Decodes the membership list.
///
/// # Errors
/// [`crate::StoreError::Corrupted`] when it does not decode, fails its
/// checksum, or holds an invalid or repeated name.
pub fn decode_members(value: &[u8]) -> Result<Vec<Member>> {
    let key = meta_key::MEMBERS;
    let (_, members): (_, Vec<Member>) = decode_sealed(tree::META, key, value)?;
    let mut seen = std::collections::HashSet::new();
    for m in &members {
        if SinkName::new(m.name.clone()).is_err() || !seen.insert(m.name.as_str()) {
            return Err(corrupt(
                tree::META,
                key,
                format!("invalid or repeated sink name {:?}", m.name),
            ));
        }
    }
    Ok(members)
}

/// Encodes an idempotency record under `key`.
///
/// # Errors
/// Never in practice; typed for uniformity.
pub fn encode_idem(key: &[u8], v: &IdemValue) -> Result<Vec<u8>> {
    encode_sealed(tree::IDEM, key, v)
}

/// Decodes an idempotency record.
///
/// # Errors
/// [`crate::StoreError::Corrupted`] when it does not decode or fails its
/// checksum.
pub fn decode_idem(key: &[u8], value: &[u8]) -> Result<IdemValue> {
    decode_sealed(tree::IDEM, key, value).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_meta_members_and_idem_round_trip() {
        let o = OffsetValue {
            offset: 99,
            updated_at_ms: 5,
        };
        let v = encode_offset(b"s", &o).unwrap();
        assert_eq!(decode_offset(b"s", &v).unwrap(), o);
        assert!(decode_offset(b"t", &v).is_err(), "another sink's value");
        let v = encode_meta_u64(meta_key::SEQ_FLOOR, 123).unwrap();
        assert_eq!(decode_meta_u64(meta_key::SEQ_FLOOR, &v).unwrap(), 123);
        assert!(decode_meta_u64(meta_key::SEQ_RESERVED, &v).is_err());
        let id = Uuid::new_v4();
        assert_eq!(decode_log_id(&encode_log_id(id).unwrap()).unwrap(), id);
        assert!(decode_log_id(&[2, 1, 2, 3, 0, 0, 0, 0]).is_err());
        let members = vec![
            Member {
                name: "a".into(),
                orphaned_at_ms: None,
            },
            Member {
                name: "web-1".into(),
                orphaned_at_ms: Some(17),
            },
        ];
        assert_eq!(
            decode_members(&encode_members(&members).unwrap()).unwrap(),
            members
        );
        let twice = vec![members[0].clone(), members[0].clone()];
        assert!(decode_members(&encode_members(&twice).unwrap()).is_err());
        let idem = IdemValue {
            first: 5,
            count: 3,
            digest: [7; 16],
            at_ms: 9,
        };
        assert_eq!(
            decode_idem(b"k", &encode_idem(b"k", &idem).unwrap()).unwrap(),
            idem
        );
    }

    #[test]
    fn version_1_meta_values_still_decode() {
        let mut v = vec![1u8];
        v.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(decode_meta_u64(meta_key::SEQ_FLOOR, &v).unwrap(), 42);
        let mut v = vec![1u8];
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&3u64.to_be_bytes()); // next
        v.extend_from_slice(&4u64.to_be_bytes()); // updated_at_ms
        assert!(decode_offset(b"s", &v).is_err(), "trailing bytes");
        let mut v = vec![1u8];
        v.extend_from_slice(&3u64.to_be_bytes());
        v.extend_from_slice(&4u64.to_be_bytes());
        assert_eq!(decode_offset(b"s", &v).unwrap().offset, 3);
    }
}
