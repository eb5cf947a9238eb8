//! What every writer checks before it trusts a store: the log's chain,
//! membership against offsets, and the witness.
//!
//! [`Store::verify`] reads every log value's header (checksum included), the
//! offsets, the membership list and the DLQ count, and refuses, with
//! [`Error::Corrupted`] naming the range, the sink or the tree:
//! - a gap or overlap in the log's chain;
//! - a member (configured or orphan) whose offset is gone;
//! - an offset past the log's end, or below its first value (truncation
//!   never removes what a member has not passed, so those records are lost);
//! - anything below what the witness says was durable (log end, offsets,
//!   DLQ entries), or another log id.
//!
//! It writes nothing; the engine's open applies what follows from it.

use std::collections::BTreeMap;

use super::chain::{Break, ChainWalk, LogExtent};
use super::{Store, missing_range, witness};
use crate::codec::{FormatVersion, Member, tree};
use crate::error::{StoreError as Error, StoreResult as Result};
use crate::types::{Seq, SinkName};

/// Extra reads of each log value during [`Store::verify`], so that sled's
/// cache evicts behind the walk. sled 0.34's LRU has 256 shards, and a
/// shard applies its queued accesses, evicting what is over its share of
/// `cache_bytes`, only once 64 have queued; one pass over the log touches
/// each leaf a few times, so no shard fills, nothing is evicted, and the
/// whole log stays in memory (a 1M-record backlog: 320-380 MiB peak RSS
/// with a 64 MiB cache). With 8 extra reads per value the shards fill as
/// the walk passes: 94-124 MiB. The walk itself is unchanged (one
/// iterator; a walk restarted in chunks sees a damaged tree differently,
/// see docs/performance.md), and a read only adds accesses.
const TOUCHES: usize = 8;

/// What [`Store::verify`] found in a sound store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The log's chain: its first value and its end.
    pub extent: LogExtent,
    /// The next seq to assign: the end, or the reservation if higher (the
    /// seqs in between were reserved and never receipted, and get a hole).
    pub next: Seq,
    /// Every member, orphans included.
    pub members: Vec<Member>,
    /// Every member's offset.
    pub offsets: BTreeMap<SinkName, Seq>,
    /// Orphans of a version-1 directory (where orphans did not hold back
    /// truncation) whose offset is below the first record: they resume
    /// there, as version 1 did.
    pub legacy_raise: Vec<(SinkName, Seq)>,
    /// Entries in the DLQ.
    pub dlq: u64,
    /// The holes and lost markers in the log: seq ranges with no record.
    pub markers: Vec<(Seq, Seq)>,
}

impl Store {
    /// Verifies the chain, membership, offsets and witness. Reads every log
    /// value once.
    ///
    /// # Errors
    /// [`Error::Corrupted`] describing the first problem found.
    pub fn verify(&self) -> Result<Verified> {
        let floor = self.seq_floor()?;
        let reserved = self.seq_reserved()?;
        let mut walk = ChainWalk::default();
        let mut markers = Vec::new();
        for kv in self.log.iter() {
            let (k, v) = kv.map_err(Error::from_sled)?;
            for _ in 0..TOUCHES {
                // Only the cache accesses matter; what it reads, the
                // iterator has just read.
                let _ = self.log.get(&k);
            }
            let (first, header) = crate::codec::decode_batch_header(&k, &v)
                .map_err(|e| self.unreadable_value(&k, &v, e))?;
            if header.kind != crate::codec::BatchKind::Records {
                markers.push((first, Seq(first.0 + u64::from(header.count))));
            }
            walk.push(first, header.count).map_err(|b| match b {
                Break::Gap { from, to } => missing_range(from, to),
                Break::Overlap { at, prev_end } => Error::Corrupted {
                    tree: tree::LOG,
                    key: format!("seq {at}"),
                    reason: format!(
                        "the value starts before the previous one ends ({prev_end}): two values claim the same seqs"
                    ),
                },
            })?;
        }
        let extent = walk.finish(floor);
        let members = self.members()?;
        let stored: BTreeMap<SinkName, Seq> = self
            .offsets()?
            .into_iter()
            .map(|(n, o)| (n, Seq(o.offset)))
            .collect();
        for m in &members {
            if !stored.keys().any(|n| n.as_str() == m.name) {
                return Err(Error::Corrupted {
                    tree: tree::OFFSETS,
                    key: format!("`{}`", m.name),
                    reason: format!(
                        "missing: sink `{}` is a member of this store ({}) but its committed offset is gone, so where it stands is unknown; sled's db file is damaged (see `outbox salvage` in docs/operations.md)",
                        m.name,
                        if m.orphaned_at_ms.is_some() {
                            "an orphan still holding its backlog"
                        } else {
                            "configured at the last open"
                        }
                    ),
                });
            }
        }
        let low = extent.first.unwrap_or(extent.end);
        let legacy = self.format() == FormatVersion::V1;
        let mut legacy_raise = Vec::new();
        for (name, &o) in &stored {
            let orphan = members
                .iter()
                .find(|m| m.name == name.as_str())
                .is_none_or(|m| m.orphaned_at_ms.is_some());
            if o > extent.end {
                return Err(Error::Corrupted {
                    tree: tree::OFFSETS,
                    key: format!("`{name}`"),
                    reason: format!("offset {o} is past the log's end {}", extent.end),
                });
            }
            if o < low {
                if legacy && orphan {
                    legacy_raise.push((name.clone(), low));
                    continue;
                }
                return Err(Error::Corrupted {
                    tree: tree::LOG,
                    key: format!("seqs {o}..{low}"),
                    reason: format!(
                        "missing: sink `{name}` had not passed these records, and only what every member passed is truncated; sled's db file is damaged"
                    ),
                });
            }
        }
        let dlq = self.dlq.len() as u64;
        if let Some(w) = witness::read(&self.path)? {
            let now = witness::Witness {
                log_id: self.log_id,
                next_seq: extent.end.0,
                offsets: stored.iter().map(|(n, o)| (n.to_string(), o.0)).collect(),
                dlq,
            };
            witness::verify(&w, &now)?;
        }
        let mut members = members;
        for name in stored.keys() {
            if !members.iter().any(|m| m.name == name.as_str()) {
                // An offset written just before a crash, before its
                // membership: keep its backlog, as an orphan.
                members.push(Member {
                    name: name.to_string(),
                    orphaned_at_ms: Some(super::now_ms()),
                });
            }
        }
        Ok(Verified {
            extent,
            next: extent.end.max(reserved),
            members,
            offsets: stored,
            legacy_raise,
            dlq,
            markers,
        })
    }

    /// The log's first value and end, read from its first and last values
    /// only (no chain walk).
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the first or last value does not decode.
    pub fn extent(&self) -> Result<LogExtent> {
        let floor = self.seq_floor()?;
        let first = match self.log.first().map_err(Error::from_sled)? {
            Some((k, _)) => Some(crate::codec::decode_log_key(&k)?),
            None => None,
        };
        let end = match self.log.last().map_err(Error::from_sled)? {
            Some((k, v)) => {
                let (first, h) = crate::codec::decode_batch_header(&k, &v)?;
                Seq(first.0 + u64::from(h.count))
            }
            None => floor,
        };
        Ok(LogExtent { first, end })
    }
}
