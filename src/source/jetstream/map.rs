//! Message to record, as pure code: the record's headers, the payload check,
//! the fleet-wide delivery id and the idempotency key.
//!
//! Invariants:
//! - the delivery id of a message depends only on its stream (name and
//!   creation time) and its stream sequence, so every daemon of a fleet
//!   derives the same id for the same message, whichever of them appends it
//!   and however often it is redelivered;
//! - the idempotency key likewise depends only on the stream and sequence;
//! - a stream deleted and created again under the same name numbers its
//!   messages from 1 again: its creation time keeps their keys and ids apart
//!   from the old stream's, so a new message is never taken for an old one
//!   (not appended, or dropped by a receiver as a duplicate);
//! - the payload is kept byte for byte; headers come in a fixed order
//!   (`nats-subject` first, then the message's headers by name, each name's
//!   values in the order they came).

use uuid::Uuid;

use crate::types::{DeliveryId, Record, Seq};

/// The namespace of the version-5 UUIDs that stand in for a log id in the
/// delivery ids of JetStream records: `log_id = UUIDv5(NAMESPACE,
/// "jetstream:<stream name>:<stream creation time, ns since the epoch>")`. Fixed forever: changing it would change
/// every JetStream delivery id and defeat receivers' deduplication across
/// an upgrade. (A random v4 UUID, drawn once for this purpose.)
pub const NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b7e_94d3_4c0a_8e55_1d2a_b7c9_03f4);

/// The record header that carries the message's NATS subject.
pub const SUBJECT_HEADER: &str = "nats-subject";

/// What to check a payload for before it is appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validate {
    /// One JSON value, as for stdin and HTTP ingest. The default.
    #[default]
    Json,
    /// Any bytes.
    None,
}

/// Why a message is refused; it is then terminated (`AckKind::Term`).
/// Non-exhaustive: a later release may refuse for other reasons.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// `validate = "json"` and the payload is not one JSON value.
    #[error("stream sequence {seq}: payload is not valid JSON ({reason})")]
    NotJson {
        /// Its stream sequence.
        seq: u64,
        /// serde_json's message.
        reason: String,
    },
}

/// The parts of a JetStream message that become a record.
#[derive(Clone, Debug)]
pub struct Incoming<'a> {
    /// The message's stream sequence.
    pub stream_seq: u64,
    /// Its subject.
    pub subject: &'a str,
    /// Its headers as (name, value) pairs, in any order.
    pub headers: Vec<(String, String)>,
    /// Its payload.
    pub payload: &'a [u8],
}

/// The record for a message.
///
/// # Errors
/// [`Invalid`] when `validate` refuses the payload.
pub fn to_record(m: Incoming<'_>, validate: Validate) -> Result<Record, Invalid> {
    if validate == Validate::Json
        && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(m.payload)
    {
        return Err(Invalid::NotJson {
            seq: m.stream_seq,
            reason: e.to_string(),
        });
    }
    let mut headers = m.headers;
    // Stable by name only: a name's values keep their order.
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut r = Record::new(m.payload.to_vec()).with_header(SUBJECT_HEADER, m.subject);
    r.headers.extend(headers);
    Ok(r)
}

/// One incarnation of a stream: its name and its creation time, as every
/// server of the cluster reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamId {
    /// The stream's name.
    pub name: String,
    /// When it was created, in nanoseconds since the Unix epoch.
    pub created_ns: i128,
}

impl StreamId {
    /// The log id that stands for this stream in its records' delivery ids.
    pub fn log_id(&self) -> Uuid {
        Uuid::new_v5(
            &NAMESPACE,
            format!("jetstream:{}:{}", self.name, self.created_ns).as_bytes(),
        )
    }

    /// The fleet-wide delivery id of the message at `stream_seq`.
    pub fn delivery_id(&self, stream_seq: u64) -> DeliveryId {
        DeliveryId {
            log_id: self.log_id(),
            seq: Seq(stream_seq),
        }
    }

    /// The key under which the message at `stream_seq` is appended at most
    /// once.
    pub fn idempotency_key(&self, stream_seq: u64) -> String {
        format!("jetstream:{}:{}:{stream_seq}", self.name, self.created_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(payload: &[u8]) -> Incoming<'_> {
        Incoming {
            stream_seq: 9,
            subject: "orders.eu",
            headers: vec![
                ("X-B".into(), "2".into()),
                ("X-A".into(), "1".into()),
                ("X-B".into(), "3".into()),
            ],
            payload,
        }
    }

    #[test]
    fn subject_and_headers_become_record_headers_in_a_fixed_order() {
        let r = to_record(msg(b"{\"a\":1}"), Validate::Json).unwrap();
        assert_eq!(r.payload, b"{\"a\":1}");
        let h: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            h,
            [
                ("nats-subject", "orders.eu"),
                ("X-A", "1"),
                ("X-B", "2"),
                ("X-B", "3")
            ]
        );
    }

    #[test]
    fn json_validation_refuses_what_is_not_one_value_and_none_takes_anything() {
        for bad in [&b"{"[..], b"", b"{} {}", b"\xff", b"nope"] {
            let e = to_record(msg(bad), Validate::Json).unwrap_err();
            assert!(matches!(&e, Invalid::NotJson { seq: 9, .. }), "{e}");
            assert!(e.to_string().contains("stream sequence 9"), "{e}");
            let r = to_record(msg(bad), Validate::None).unwrap();
            assert_eq!(r.payload, bad);
        }
        for good in [&b"1"[..], b" [1,2] ", b"\"s\"", b"{\"a\":\n1}"] {
            assert_eq!(to_record(msg(good), Validate::Json).unwrap().payload, good);
        }
    }

    #[test]
    fn ids_depend_only_on_stream_and_sequence() {
        let orders = StreamId {
            name: "ORDERS".into(),
            created_ns: 1_700_000_000_123_456_789,
        };
        let a = orders.delivery_id(42);
        assert_eq!(a, orders.clone().delivery_id(42));
        assert_eq!(a.seq, Seq(42));
        assert_eq!(a.log_id.get_version_num(), 5);
        // Another stream, or the same name created again: other ids.
        let other = StreamId {
            name: "ORDERS2".into(),
            ..orders.clone()
        };
        let again = StreamId {
            created_ns: orders.created_ns + 1,
            ..orders.clone()
        };
        assert_ne!(a.log_id, other.log_id());
        assert_ne!(a.log_id, again.log_id());
        assert_ne!(orders.idempotency_key(42), again.idempotency_key(42));
        // Pinned: a change here changes every JetStream delivery id. The
        // expected value was computed independently (Python's uuid.uuid5
        // over the same namespace and name).
        let s = a.to_string();
        assert_eq!(s, "msg_869a8693a59059e181f14c675037bddd_42");
        assert_eq!(DeliveryId::parse(&s), Some(a));
        assert_eq!(
            orders.idempotency_key(42),
            "jetstream:ORDERS:1700000000123456789:42"
        );
    }
}
