//! The `decode` fuzz target's body (`fuzz/fuzz_targets/decode.rs`): every
//! on-disk key and value decoder of this module, fed arbitrary bytes. It
//! lives here because the codec is private; it is compiled only with the
//! `fuzzing` feature, which only the fuzz crate enables.
//!
//! Invariants it asserts: each decoder returns Ok or `Corrupted` (naming a
//! known tree), never panics (debug assertions and overflow checks are on
//! under cargo-fuzz), and whatever decodes as a version-2 value re-encodes
//! to exactly the bytes it came from: the format has one encoding per
//! value, so a decoder that accepts two spellings of one value is a bug.
//! (Version-1 values decode, and are re-encoded as version 2.)
//!
//! Random bytes almost never carry a valid CRC32C, so some arms seal an
//! arbitrary body with the right checksum first, to reach the decoders
//! behind it.

use super::{meta_key, tree};
use crate::error::{StoreError as Error, StoreResult as Result};
use crate::types::Seq;

/// Runs one input: its first byte picks the decoder, its second splits the
/// rest into a key and a value.
///
/// # Panics
/// When a decoder breaks one of the module's invariants: that is the
/// finding.
pub fn decode(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    // The next byte splits the rest into a key and a value.
    let (key, value) = match rest.split_first() {
        Some((&k, tail)) => tail.split_at((k as usize).min(tail.len())),
        None => (&[][..], &[][..]),
    };
    let v2 = value.first() == Some(&2);
    match which % 14 {
        0 => log(key, value),
        1 => {
            if let Ok((first, header)) = ok(super::decode_batch_header(key, value)) {
                assert_eq!(super::log_key(first), key);
                assert!(header.count > 0);
                assert!(first.0.checked_add(u64::from(header.count)).is_some());
            }
        }
        2 => {
            if let Ok(seq) = ok(super::decode_log_key(key)) {
                assert_eq!(super::log_key(seq), key);
            }
        }
        3 => offset(key, value, v2),
        4 => {
            if let Ok(name) = ok(super::decode_offset_key(key)) {
                assert_eq!(name.as_str().as_bytes(), key);
            }
        }
        5 => {
            if let Ok((sink, seq)) = ok(super::decode_dlq_key(key)) {
                assert_eq!(super::dlq_key(&sink, seq), key);
                assert!(key.starts_with(&super::dlq_prefix(&sink)));
            }
        }
        6 => dlq(key, value, v2),
        7 => meta(key, value, v2),
        8 => idem(key, value, v2),
        // The same decoders behind a valid checksum.
        9 => log(key, &seal(tree::LOG, key, value)),
        10 => offset(key, &seal(tree::OFFSETS, key, value), true),
        11 => dlq(key, &seal(tree::DLQ, key, value), true),
        12 => {
            let k = [
                meta_key::SEQ_FLOOR,
                meta_key::LOG_ID,
                meta_key::MEMBERS,
                meta_key::SINKS,
                meta_key::WRITE_INTENT,
            ][usize::from(which / 14) % 5];
            meta(k, &seal(tree::META, k, value), true);
        }
        _ => {
            idem(key, &seal(tree::IDEM, key, value), true);
            sink_state(key, value, v2);
            sink_state(key, &seal(tree::SINK_STATE, key, value), true);
            // Rendering a key for an error message never panics either.
            for t in ["log", "offsets", "dlq", "meta", "idem", "sink_state"] {
                let _ = super::render_key(t, key);
            }
        }
    }
}

/// `2`, `body`, and the checksum a writer would have put there.
fn seal(tree: &str, key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = vec![2u8];
    v.extend_from_slice(body);
    let crc = super::checksum(tree, key, &v);
    v.extend_from_slice(&crc.to_be_bytes());
    v
}

fn log(key: &[u8], value: &[u8]) {
    if let Ok((first, header, entries)) = ok(super::decode_batch(key, value)) {
        assert_eq!(super::log_key(first), key);
        if header.kind == super::BatchKind::Records {
            assert_eq!(header.count as usize, entries.len());
        } else {
            assert!(entries.is_empty());
        }
        if value.first() == Some(&2) {
            let again = super::encode_batch(first, header, &entries).expect("re-encodes");
            assert_eq!(again, value);
        }
    }
}

fn offset(key: &[u8], value: &[u8], v2: bool) {
    if let Ok(v) = ok(super::decode_offset(key, value))
        && v2
    {
        assert_eq!(super::encode_offset(key, &v).expect("re-encodes"), value);
    }
}

fn dlq(key: &[u8], value: &[u8], v2: bool) {
    if let Ok(e) = ok(super::decode_dlq(key, value)) {
        let (sink, seq) = super::decode_dlq_key(key).expect("key decoded once");
        assert_eq!((sink.as_str(), seq), (e.sink.as_str(), Seq(e.seq)));
        if v2 {
            assert_eq!(super::encode_dlq(key, &e).expect("re-encodes"), value);
        }
    }
}

fn meta(key: &[u8], value: &[u8], v2: bool) {
    match key {
        meta_key::LOG_ID => {
            if let Ok(id) = ok(super::decode_log_id(value))
                && v2
            {
                assert_eq!(super::encode_log_id(id).expect("re-encodes"), value);
            }
        }
        meta_key::MEMBERS => {
            if let Ok(m) = ok(super::decode_members(value))
                && v2
            {
                assert_eq!(super::encode_members(&m).expect("re-encodes"), value);
            }
        }
        meta_key::SINKS => {
            let _ = ok(super::decode_sink_list(value));
        }
        meta_key::WRITE_INTENT => {
            if let Ok(w) = ok(super::decode_write_intent(value))
                && v2
            {
                assert_eq!(super::encode_write_intent(&w).expect("re-encodes"), value);
            }
        }
        _ => {
            if let Ok(v) = ok(super::decode_meta_u64(key, value))
                && v2
            {
                assert_eq!(super::encode_meta_u64(key, v).expect("re-encodes"), value);
            }
        }
    }
}

fn idem(key: &[u8], value: &[u8], v2: bool) {
    if let Ok(v) = ok(super::decode_idem(key, value))
        && v2
    {
        assert_eq!(super::encode_idem(key, &v).expect("re-encodes"), value);
    }
}

/// A retry state and a pause: the same bytes through both decoders.
fn sink_state(key: &[u8], value: &[u8], v2: bool) {
    if let Ok(v) = ok(super::decode_retry(key, value))
        && v2
    {
        assert_eq!(super::encode_retry(key, &v).expect("re-encodes"), value);
    }
    if let Ok(v) = ok(super::decode_pause(key, value))
        && v2
    {
        assert_eq!(super::encode_pause(key, &v).expect("re-encodes"), value);
    }
    let prefix = key.get(..key.len().saturating_sub(8)).unwrap_or_default();
    if let Ok(seq) = ok(super::decode_retry_seq(prefix, key)) {
        assert_eq!(&key[prefix.len()..], seq.to_be_bytes());
    }
}

/// Every decode error must be `Corrupted`, naming a known tree.
fn ok<T>(r: Result<T>) -> Result<T> {
    if let Err(e) = &r {
        match e {
            Error::Corrupted { tree, .. } => {
                assert!(
                    ["log", "offsets", "dlq", "meta", "idem", "sink_state"].contains(tree),
                    "{e}"
                );
                assert!(e.is_corruption(), "{e}");
            }
            other => panic!("a decoder returned a non-corruption error: {other}"),
        }
    }
    r
}
