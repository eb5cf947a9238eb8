//! Identifier types and the record itself.
//!
//! Each id has one encoding, defined here, with a round-trip test:
//! - [`Seq`] is a u64, stored big-endian so sled orders keys by seq.
//! - [`SinkName`] is 1 to 64 bytes of `[A-Za-z0-9_.-]`, so it is safe in
//!   keys, metric labels and file names.
//! - [`DeliveryId`] is `msg_<log id as 32 hex digits>_<seq>`: stable for a
//!   record across retries, restarts and redrives, and free of `.`.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ConfigError;

/// A log sequence number. Strictly increasing, never reused.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Seq(pub u64);

impl Seq {
    /// The key bytes: big-endian, so byte order is numeric order.
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Reads a key written by [`Seq::to_be_bytes`]; `None` unless exactly
    /// eight bytes.
    pub fn from_be_slice(bytes: &[u8]) -> Option<Seq> {
        let arr: [u8; 8] = bytes.try_into().ok()?;
        Some(Seq(u64::from_be_bytes(arr)))
    }

    /// The next seq.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A validated sink name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SinkName(String);

impl SinkName {
    /// Longest accepted name, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates a name.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when the name is empty, longer than
    /// [`SinkName::MAX_LEN`], or has a byte outside `[A-Za-z0-9_.-]`.
    pub fn new(name: impl Into<String>) -> Result<SinkName, ConfigError> {
        let name = name.into();
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(ConfigError::invalid(
                "sink name",
                format!("`{name}` must be 1 to {} bytes long", Self::MAX_LEN),
            ));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(ConfigError::invalid(
                "sink name",
                format!("`{name}` has the character {c:?}; use only A-Z a-z 0-9 _ - ."),
            ));
        }
        Ok(SinkName(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SinkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id a receiver deduplicates on. Derived from the log id and the seq the
/// record was first appended under, so it survives retries, restarts and
/// redrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId {
    /// The data directory's log id, minted when it was created.
    pub log_id: Uuid,
    /// The seq the record was first appended under.
    pub seq: Seq,
}

impl DeliveryId {
    /// Parses the form written by `Display`.
    pub fn parse(s: &str) -> Option<DeliveryId> {
        let rest = s.strip_prefix("msg_")?;
        let (hex, seq) = rest.split_once('_')?;
        if hex.len() != 32 {
            return None;
        }
        let log_id = Uuid::try_parse(hex).ok()?;
        let seq = seq.parse().ok()?;
        Some(DeliveryId {
            log_id,
            seq: Seq(seq),
        })
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "msg_{}_{}", self.log_id.simple(), self.seq.0)
    }
}

/// One record: payload bytes plus optional string headers.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Record {
    /// Header pairs, in the order given. A `content-type` header is used by
    /// the webhook sink.
    pub headers: Vec<(String, String)>,
    /// The payload, stored and delivered byte for byte.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// A delivery id given by the caller (see [`Record::with_delivery_id`]);
    /// stored with the log entry, not in the record's own encoding.
    #[serde(skip)]
    delivery_id: Option<DeliveryId>,
}

impl Record {
    /// A record with no headers.
    pub fn new(payload: impl Into<Vec<u8>>) -> Record {
        Record {
            headers: Vec::new(),
            payload: payload.into(),
            delivery_id: None,
        }
    }

    /// Delivers this record under `id` instead of an id derived from its
    /// seq. The id is kept through retries, restarts and redrives. Use it
    /// when the record already has a stable identity upstream (a broker's
    /// stream and sequence), so that every daemon of a fleet that delivers
    /// the same message uses the same id and receivers can deduplicate.
    pub fn with_delivery_id(mut self, id: DeliveryId) -> Record {
        self.delivery_id = Some(id);
        self
    }

    /// The id given with [`Record::with_delivery_id`], if any.
    pub fn delivery_id(&self) -> Option<DeliveryId> {
        self.delivery_id
    }

    pub(crate) fn take_delivery_id(&mut self) -> Option<DeliveryId> {
        self.delivery_id.take()
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Record {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The first header with this name, compared ASCII case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Bytes counted against byte limits: payload plus header text.
    pub fn size(&self) -> usize {
        self.payload.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// What `dispatch` returns once a record is durable under the sync policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The record's seq.
    pub seq: Seq,
    /// The record's delivery id.
    pub delivery_id: DeliveryId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_round_trips_and_orders_as_bytes() {
        for v in [0u64, 1, 255, 256, u64::MAX - 1, u64::MAX] {
            assert_eq!(Seq::from_be_slice(&Seq(v).to_be_bytes()), Some(Seq(v)));
        }
        assert!(Seq(255).to_be_bytes() < Seq(256).to_be_bytes());
        assert_eq!(Seq::from_be_slice(&[1, 2, 3]), None);
    }

    #[test]
    fn delivery_id_round_trips_and_has_no_dot() {
        let id = DeliveryId {
            log_id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            seq: Seq(42),
        };
        let s = id.to_string();
        assert_eq!(s, "msg_0123456789abcdef0123456789abcdef_42");
        assert!(!s.contains('.'));
        assert_eq!(DeliveryId::parse(&s), Some(id));
        assert_eq!(DeliveryId::parse("msg_zz_1"), None);
    }

    #[test]
    fn sink_names_are_validated() {
        assert_eq!(SinkName::new("file-1.a_b").unwrap().as_str(), "file-1.a_b");
        assert!(SinkName::new("").is_err());
        assert!(SinkName::new("a b").is_err());
        assert!(SinkName::new("a\0b").is_err());
        assert!(SinkName::new("x".repeat(65)).is_err());
        let err = SinkName::new("bad/name").unwrap_err().to_string();
        assert!(err.contains("bad/name"), "{err}");
    }
}
