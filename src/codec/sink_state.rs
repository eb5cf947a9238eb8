//! Keys and values of the `sink_state` tree: a sink's delivery state that
//! is not its offset.
//!
//! Keys:
//! - `r`, name length (`u8`), the sink name, the seq (`u64` BE) →
//!   [`RetryState`]: a record the sink is retrying, so its attempt count
//!   and next-attempt time survive a restart; the entries of one sink sort
//!   together, in seq order;
//! - `p`, the sink name → [`PauseState`]: the sink is paused by an
//!   operator until resumed.
//!
//! Values, version 2: `2`, one bincode value, CRC32C.

use serde::{Deserialize, Serialize};

use super::{Attempt, corrupt, decode_sealed, encode_sealed, tree};
use crate::error::StoreResult as Result;
use crate::types::{Seq, SinkName};

const RETRY: u8 = b'r';
const PAUSE: u8 = b'p';

/// Where a record's retries stand for one sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryState {
    /// Attempts made so far.
    pub attempts: u32,
    /// Of those, the ones that count toward the retry schedule (or
    /// `retry_max`): made with the breaker closed.
    pub counted: u32,
    /// When the next attempt is due, ms since the Unix epoch.
    pub next_at_ms: u64,
    /// The last attempts (at most [`super::HISTORY_MAX`]), oldest first: what
    /// a DLQ entry keeps if the record is dead-lettered.
    pub history: Vec<Attempt>,
}

/// An operator's pause of a sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseState {
    /// When it was paused, ms since the Unix epoch.
    pub at_ms: u64,
}

/// The prefix of every retry state of `sink`.
pub fn retry_prefix(sink: &SinkName) -> Vec<u8> {
    let name = sink.as_str().as_bytes();
    let mut k = Vec::with_capacity(2 + name.len() + 8);
    k.push(RETRY);
    // SinkName is at most 64 bytes, so the length fits a byte.
    k.push(name.len() as u8);
    k.extend_from_slice(name);
    k
}

/// The key of `sink`'s retry state for `seq`.
pub fn retry_key(sink: &SinkName, seq: Seq) -> Vec<u8> {
    let mut k = retry_prefix(sink);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The seq of a retry state key under `prefix` ([`retry_prefix`]).
///
/// # Errors
/// [`crate::StoreError::Corrupted`] when the key is not the prefix and 8 bytes.
pub fn decode_retry_seq(prefix: &[u8], key: &[u8]) -> Result<Seq> {
    key.strip_prefix(prefix)
        .and_then(Seq::from_be_slice)
        .ok_or_else(|| {
            corrupt(
                tree::SINK_STATE,
                key,
                "retry key is not r<len><sink><8-byte seq>",
            )
        })
}

/// The key of `sink`'s pause.
pub fn pause_key(sink: &SinkName) -> Vec<u8> {
    let mut k = vec![PAUSE];
    k.extend_from_slice(sink.as_str().as_bytes());
    k
}

/// Encodes a retry state under `key`.
///
/// # Errors
/// [`crate::StoreError::ValueRejected`] when it would be too large to read
/// back.
pub fn encode_retry(key: &[u8], v: &RetryState) -> Result<Vec<u8>> {
    encode_sealed(tree::SINK_STATE, key, v)
}

/// Decodes a retry state.
///
/// # Errors
/// [`crate::StoreError::Corrupted`] when it fails its checksum or does not
/// decode.
pub fn decode_retry(key: &[u8], value: &[u8]) -> Result<RetryState> {
    decode_sealed(tree::SINK_STATE, key, value).map(|(_, v)| v)
}

/// Encodes a pause under `key`.
///
/// # Errors
/// Never in practice; typed for uniformity.
pub fn encode_pause(key: &[u8], v: &PauseState) -> Result<Vec<u8>> {
    encode_sealed(tree::SINK_STATE, key, v)
}

/// Decodes a pause.
///
/// # Errors
/// [`crate::StoreError::Corrupted`] when it fails its checksum or does not
/// decode.
pub fn decode_pause(key: &[u8], value: &[u8]) -> Result<PauseState> {
    decode_sealed(tree::SINK_STATE, key, value).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_and_pause_states_round_trip_and_name_their_key() {
        let web = SinkName::new("web").unwrap();
        let k = retry_key(&web, Seq(42));
        assert_eq!(k, b"r\x03web\0\0\0\0\0\0\0\x2a");
        assert_eq!(decode_retry_seq(&retry_prefix(&web), &k).unwrap(), Seq(42));
        assert!(decode_retry_seq(&retry_prefix(&web), &k[..k.len() - 1]).is_err());
        let s = RetryState {
            attempts: 3,
            counted: 2,
            next_at_ms: 1_700_000_000_000,
            history: vec![Attempt {
                at_ms: 5,
                latency_ms: 6,
                permanent: false,
                error: "503".into(),
            }],
        };
        let v = encode_retry(&k, &s).unwrap();
        assert_eq!(decode_retry(&k, &v).unwrap(), s);
        let other = retry_key(&web, Seq(43));
        assert!(decode_retry(&other, &v).is_err(), "another seq's value");
        let p = pause_key(&web);
        assert_eq!(p, b"pweb");
        let v = encode_pause(&p, &PauseState { at_ms: 7 }).unwrap();
        assert_eq!(decode_pause(&p, &v).unwrap(), PauseState { at_ms: 7 });
        let mut bad = v.clone();
        bad[1] ^= 1;
        assert!(decode_pause(&p, &bad).is_err());
    }
}
