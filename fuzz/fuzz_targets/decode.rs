//! Every on-disk key and value decoder in `outbox::codec`, fed arbitrary
//! bytes. Each must return Ok or Err, never panic (debug assertions and
//! overflow checks are on under cargo-fuzz), and whatever decodes must
//! re-encode to exactly the bytes it came from: the format has one encoding
//! per value, so a decoder that accepts two spellings of one value is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outbox::codec::{self, BATCH_HEADER_LEN, BatchHeader};
use outbox::{Error, Seq};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    // The next byte splits the rest into a key and a value.
    let (key, value) = match rest.split_first() {
        Some((&k, tail)) => tail.split_at((k as usize).min(tail.len())),
        None => (&[][..], &[][..]),
    };
    match which % 11 {
        0 => {
            if let Ok((first, header, entries)) = ok(codec::decode_batch(key, value)) {
                assert_eq!(codec::log_key(first), key);
                assert_eq!(header.count as usize, entries.len());
                assert_eq!(codec::encode_batch(header, &entries), value);
            }
        }
        1 => {
            if let Ok((first, header)) = ok(codec::decode_batch_header(key, value)) {
                assert_eq!(codec::log_key(first), key);
                assert!(header.count > 0);
                assert!(first.0.checked_add(u64::from(header.count)).is_some());
                // `encode_batch` sizes its buffer from `header.bytes`, so it
                // is not fed a hostile header; spell the 21 bytes out here.
                let mut again = vec![1u8];
                again.extend_from_slice(&header.count.to_be_bytes());
                again.extend_from_slice(&header.bytes.to_be_bytes());
                again.extend_from_slice(&header.appended_at_ms.to_be_bytes());
                assert_eq!(&again[..], &value[..BATCH_HEADER_LEN]);
            }
        }
        2 => {
            if let Ok(seq) = ok(codec::decode_log_key(key)) {
                assert_eq!(codec::log_key(seq), key);
            }
        }
        3 => {
            if let Ok(v) = ok(codec::decode_offset(key, value)) {
                assert_eq!(codec::encode_offset(&v), value);
            }
        }
        4 => {
            if let Ok(name) = ok(codec::decode_offset_key(key)) {
                assert_eq!(name.as_str().as_bytes(), key);
            }
        }
        5 => {
            if let Ok((sink, seq)) = ok(codec::decode_dlq_key(key)) {
                assert_eq!(codec::dlq_key(&sink, seq), key);
                assert!(key.starts_with(&codec::dlq_prefix(&sink)));
            }
        }
        6 => {
            if let Ok(e) = ok(codec::decode_dlq(key, value)) {
                assert_eq!(codec::encode_dlq(&e), value);
                let (sink, seq) = codec::decode_dlq_key(key).expect("key decoded once");
                assert_eq!((sink.as_str(), seq), (e.sink.as_str(), Seq(e.seq)));
            }
        }
        7 => {
            if let Ok(v) = ok(codec::decode_meta_u64(key, value)) {
                assert_eq!(codec::encode_meta_u64(v), value);
            }
        }
        8 => {
            if let Ok(id) = ok(codec::decode_log_id(value)) {
                assert_eq!(codec::encode_log_id(id), value);
            }
        }
        9 => {
            if let Ok(names) = ok(codec::decode_sink_list(value)) {
                let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                assert_eq!(codec::encode_sink_list(&names), value);
            }
        }
        _ => {
            // Rendering a key for an error message never panics either.
            for tree in ["log", "offsets", "dlq", "meta"] {
                let _ = codec::render_key(tree, key);
            }
            // A well-formed header with an arbitrary body.
            let mut v = codec::encode_batch(
                BatchHeader {
                    count: 1 + u32::from(which) % 4,
                    bytes: key.len() as u64,
                    appended_at_ms: 0,
                },
                &[],
            );
            v.truncate(BATCH_HEADER_LEN);
            v.extend_from_slice(value);
            let _ = ok(codec::decode_batch(&codec::log_key(Seq(u64::MAX - 2)), &v));
        }
    }
});

/// Every decode error must be `Corrupted`, naming a known tree.
fn ok<T>(r: outbox::Result<T>) -> outbox::Result<T> {
    if let Err(e) = &r {
        match e {
            Error::Corrupted { tree, .. } => {
                assert!(["log", "offsets", "dlq", "meta"].contains(tree), "{e}");
                assert_eq!(e.exit_code(), 3);
            }
            other => panic!("a decoder returned a non-corruption error: {other}"),
        }
    }
    r
}
