//! Sink membership: which sinks the store keeps a backlog for.
//!
//! Every sink with an offset is a *member*. A member that is configured
//! holds back truncation and acks; one that is no longer configured (an
//! *orphan*) still holds back truncation, so a typo in the configuration
//! never deletes a backlog, but not acks. An orphan stays until the operator
//! forgets it, or until `orphan_retention` has passed since it was
//! orphaned. Membership is durable (`meta/members`), so a member whose
//! offset disappears is reported as lost data, never taken for a new sink.
//!
//! [`plan_membership`] is the pure decision made at each open; the store
//! methods below write its result.

use std::collections::BTreeMap;

use super::{Store, now_ms};
use crate::codec::{self, Member, meta_key};
use crate::config::Start;
use crate::error::{StoreError as Error, StoreResult as Result};
use crate::types::{Seq, SinkName};

/// Where a sink configured for the first time starts, with its name.
pub type SinkStart = (SinkName, Start);

/// What an open does to membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipPlan {
    /// The offset of each configured sink, in the order configured.
    pub offsets: Vec<Seq>,
    /// Offsets to write for sinks configured for the first time.
    pub new: Vec<(SinkName, Seq)>,
    /// Orphans whose retention has passed: forgotten at this open.
    pub expired: Vec<SinkName>,
    /// Orphans kept: name, offset, orphaned since (ms).
    pub orphans: Vec<(SinkName, Seq, u64)>,
    /// The membership list to store.
    pub members: Vec<Member>,
}

/// Decides membership at an open. `members` and `offsets` are what the
/// store holds (every member has an offset: [`Store::verify`] checks it);
/// `first` and `next` bound where a new sink can start.
pub fn plan_membership(
    configured: &[SinkStart],
    members: &[Member],
    offsets: &BTreeMap<SinkName, Seq>,
    first: Option<Seq>,
    next: Seq,
    now_ms: u64,
    retention_ms: u64,
) -> MembershipPlan {
    let mut plan = MembershipPlan {
        offsets: Vec::with_capacity(configured.len()),
        new: Vec::new(),
        expired: Vec::new(),
        orphans: Vec::new(),
        members: Vec::new(),
    };
    for (name, start) in configured {
        let off = match offsets.get(name) {
            Some(&o) => o,
            None => {
                let o = match start {
                    Start::Head => next,
                    Start::Earliest => first.unwrap_or(next),
                };
                plan.new.push((name.clone(), o));
                o
            }
        };
        plan.offsets.push(off);
        plan.members.push(Member {
            name: name.to_string(),
            orphaned_at_ms: None,
        });
    }
    for m in members {
        if configured.iter().any(|(n, _)| n.as_str() == m.name) {
            continue;
        }
        let Ok(name) = SinkName::new(m.name.clone()) else {
            continue;
        };
        let since = m.orphaned_at_ms.unwrap_or(now_ms);
        if now_ms.saturating_sub(since) >= retention_ms {
            plan.expired.push(name);
            continue;
        }
        let off = offsets.get(&name).copied().unwrap_or(next);
        plan.orphans.push((name, off, since));
        plan.members.push(Member {
            name: m.name.clone(),
            orphaned_at_ms: Some(since),
        });
    }
    plan
}

impl Store {
    /// The membership list: `meta/members`, or for a version-1 directory
    /// the sinks configured at its last open plus every other sink with an
    /// offset as an orphan (orphaned now), or, with neither, every sink with
    /// an offset as configured.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when a stored list or offset does not decode.
    pub fn members(&self) -> Result<Vec<Member>> {
        if let Some(v) = self.meta.get(meta_key::MEMBERS).map_err(Error::from_sled)? {
            return codec::decode_members(&v);
        }
        let offsets = self.offsets()?;
        let configured = match self.meta.get(meta_key::SINKS).map_err(Error::from_sled)? {
            Some(v) => Some(codec::decode_sink_list(&v)?),
            None => None,
        };
        let now = now_ms();
        let mut out: Vec<Member> = configured
            .iter()
            .flatten()
            .filter(|n| offsets.iter().any(|(o, _)| o == *n))
            .map(|n| Member {
                name: n.to_string(),
                orphaned_at_ms: None,
            })
            .collect();
        for (name, _) in &offsets {
            if !out.iter().any(|m| m.name == name.as_str()) {
                out.push(Member {
                    name: name.to_string(),
                    orphaned_at_ms: configured.as_ref().map(|_| now),
                });
            }
        }
        Ok(out)
    }

    /// Stores the membership list, and marks the directory as this build's
    /// format (a version-1 directory's `meta/sinks` is replaced). Not
    /// durable until the next flush.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Io`].
    pub fn set_members(&self, members: &[Member]) -> Result<()> {
        self.check_writable()?;
        let value = codec::encode_members(members)?;
        let r = self.meta.insert(meta_key::MEMBERS, value).map(|_| ());
        self.write_result(r)?;
        if self.meta.contains_key(meta_key::SINKS).unwrap_or(false) {
            let r = self.meta.remove(meta_key::SINKS).map(|_| ());
            self.write_result(r)?;
        }
        let current = [codec::DIR_FORMAT];
        let r = self
            .meta
            .insert(meta_key::FORMAT_VERSION, &current[..])
            .map(|_| ());
        self.write_result(r)
    }

    /// Forgets a member: its offset and membership go, so its backlog no
    /// longer holds back truncation. The witness drops it first, durably, so
    /// a crash in between leaves an offset the witness does not require,
    /// never a required one that is missing. Returns the offset it had.
    ///
    /// # Errors
    /// [`crate::ConfigError::UnknownSink`] when `sink` is not a member;
    /// store errors.
    pub fn forget(&self, sink: &SinkName) -> crate::Result<Seq> {
        self.check_writable()?;
        let mut members = self.members()?;
        let Some(i) = members.iter().position(|m| m.name == sink.as_str()) else {
            return Err(crate::ConfigError::UnknownSink(sink.to_string()).into());
        };
        let offset = self
            .offset(sink)?
            .map(|o| Seq(o.offset))
            .unwrap_or_default();
        {
            let _g = self.offset_lock.lock();
            let mut f = self.witness_file.lock();
            self.written.lock().offsets.remove(sink.as_str());
            // The file as it is, less the offset: what was written since it
            // is not durable yet, so it must not go into the file.
            if let Some(mut w) = f.on_disk.clone() {
                w.offsets.remove(sink.as_str());
                self.write_witness_file(&w).map_err(|e| {
                    Error::Io(std::io::Error::new(
                        e.kind(),
                        format!("forgetting `{sink}`: could not update the witness file: {e}"),
                    ))
                })?;
                f.on_disk = Some(w);
            }
        }
        members.remove(i);
        self.set_members(&members)?;
        let r = self.offsets.remove(sink.as_str().as_bytes()).map(|_| ());
        self.write_result(r)?;
        self.flush()?;
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> SinkName {
        SinkName::new(s).unwrap()
    }

    fn member(name: &str, orphaned: Option<u64>) -> Member {
        Member {
            name: name.into(),
            orphaned_at_ms: orphaned,
        }
    }

    const DAY: u64 = 86_400_000;

    #[test]
    fn new_sinks_start_at_the_head_or_the_first_record() {
        let p = plan_membership(
            &[
                (n("a"), Start::Head),
                (n("b"), Start::Earliest),
                (n("c"), Start::Head),
            ],
            &[member("c", None)],
            &[(n("c"), Seq(40))].into(),
            Some(Seq(10)),
            Seq(50),
            1_000,
            7 * DAY,
        );
        assert_eq!(p.offsets, vec![Seq(50), Seq(10), Seq(40)]);
        assert_eq!(p.new, vec![(n("a"), Seq(50)), (n("b"), Seq(10))]);
        assert!(p.orphans.is_empty() && p.expired.is_empty());
        assert_eq!(
            p.members,
            vec![member("a", None), member("b", None), member("c", None)]
        );
    }

    #[test]
    fn an_unconfigured_member_becomes_an_orphan_and_expires_after_its_retention() {
        let offsets = [(n("old"), Seq(5)), (n("web"), Seq(9))].into();
        let now = 100 * DAY;
        // `web` configured, a retention of 7 days, members as stored at `at`.
        let plan = |members: &[Member], at: u64| {
            plan_membership(
                &[(n("web"), Start::Head)],
                members,
                &offsets,
                Some(Seq(5)),
                Seq(20),
                at,
                7 * DAY,
            )
        };
        let p = plan(&[member("web", None), member("old", None)], now);
        assert_eq!(p.orphans, vec![(n("old"), Seq(5), now)], "orphaned now");
        assert_eq!(p.members[1], member("old", Some(now)));
        // Six days later it is still kept, with the same start.
        let p = plan(&p.members, now + 6 * DAY);
        assert_eq!(p.orphans, vec![(n("old"), Seq(5), now)]);
        assert!(p.expired.is_empty());
        // A day later it is forgotten.
        let p = plan(&p.members, now + 7 * DAY);
        assert_eq!(p.expired, vec![n("old")]);
        assert_eq!(p.members, vec![member("web", None)]);
    }

    #[test]
    fn a_returning_orphan_keeps_its_offset() {
        let p = plan_membership(
            &[(n("old"), Start::Head)],
            &[member("old", Some(3))],
            &[(n("old"), Seq(7))].into(),
            Some(Seq(7)),
            Seq(99),
            10,
            7 * DAY,
        );
        assert_eq!(p.offsets, vec![Seq(7)]);
        assert!(p.new.is_empty());
        assert_eq!(p.members, vec![member("old", None)]);
    }
}
