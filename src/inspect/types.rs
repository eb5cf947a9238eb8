//! The plain values an [`super::Inspector`] returns, and their one
//! conversion each from the stored form. Pure: no I/O.
//!
//! Invariant: no type here carries a sled or codec type, nor names one in a
//! public impl; each is built from the stored form only by its crate-private
//! constructor below.

use std::collections::BTreeMap;

use crate::codec;
use crate::store::LogExtent;
use crate::types::{Seq, SinkName};

/// One sink the store knows: it has an offset, and its backlog is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// The sink's name.
    pub name: String,
    /// `None` while the sink is configured; since when it has not been, in
    /// ms since the Unix epoch, once it is an orphan.
    pub orphaned_at_ms: Option<u64>,
}

impl Member {
    pub(super) fn new(m: codec::Member) -> Member {
        Member {
            name: m.name,
            orphaned_at_ms: m.orphaned_at_ms,
        }
    }
}

/// A sink's committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Offset {
    /// The sink.
    pub sink: SinkName,
    /// Every seq below this one is done for the sink: delivered, dropped,
    /// passed over, or dead-lettered.
    pub offset: Seq,
    /// When it was last written, ms since the Unix epoch.
    pub updated_at_ms: u64,
}

impl Offset {
    pub(super) fn new(sink: SinkName, o: codec::OffsetValue) -> Offset {
        Offset {
            sink,
            offset: Seq(o.offset),
            updated_at_ms: o.updated_at_ms,
        }
    }
}

/// What a log value holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchKind {
    /// Records.
    Records,
    /// Seqs reserved before a crash and never receipted: no record.
    Hole,
    /// Records that were lost to damage and written off by `outbox salvage`.
    Lost,
}

impl BatchKind {
    fn new(k: codec::BatchKind) -> BatchKind {
        match k {
            codec::BatchKind::Records => BatchKind::Records,
            codec::BatchKind::Hole => BatchKind::Hole,
            codec::BatchKind::Lost => BatchKind::Lost,
        }
    }
}

/// One log value, without its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchInfo {
    /// The first seq it covers (its key).
    pub first: Seq,
    /// How many seqs it covers.
    pub count: u32,
    /// What it holds.
    pub kind: BatchKind,
    /// Sum of the sizes of its records' payloads and headers (0 for a hole
    /// or lost marker).
    pub bytes: u64,
    /// When it was appended, ms since the Unix epoch.
    pub appended_at_ms: u64,
}

impl BatchInfo {
    pub(super) fn new(first: Seq, h: codec::BatchHeader) -> BatchInfo {
        BatchInfo {
            first,
            count: h.count,
            kind: BatchKind::new(h.kind),
            bytes: h.bytes,
            appended_at_ms: h.appended_at_ms,
        }
    }
}

/// What [`super::Inspector::verify`] found in a sound store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The log's chain: its first value and its end.
    pub extent: LogExtent,
    /// The next seq to assign: the end, or the reservation if higher.
    pub next: Seq,
    /// Every member, orphans included.
    pub members: Vec<Member>,
    /// Every member's offset.
    pub offsets: BTreeMap<SinkName, Seq>,
    /// Entries in the DLQ.
    pub dlq: u64,
    /// The holes and lost markers in the log: seq ranges with no record.
    pub markers: Vec<(Seq, Seq)>,
}

impl Verified {
    pub(super) fn new(v: crate::store::Verified) -> Verified {
        Verified {
            extent: v.extent,
            next: v.next,
            members: v.members.into_iter().map(Member::new).collect(),
            offsets: v.offsets,
            dlq: v.dlq,
            markers: v.markers,
        }
    }
}
