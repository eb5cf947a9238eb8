//! Per-sink delivery state besides the offset, in the `sink_state` tree
//! (layout in [`crate::codec`]'s `sink_state` module): the retries in
//! progress and the operator's pauses.
//!
//! Invariants:
//! - a retry state names a record at or above the sink's offset while the
//!   record is being retried; once the offset passes the record the state
//!   is stale, is never read again ([`Store::retry_states`] reads from the
//!   offset on) and is removed by the next [`Store::retry_clear_below`].
//!   The offset and the removal are separate writes: a crash between them
//!   leaves a stale state, which changes nothing;
//! - a pause is there from the flush after [`Store::set_paused`] until the
//!   flush after the resume; nothing else removes it but forgetting the
//!   sink.

use std::collections::BTreeMap;

use super::Store;
use crate::codec::{self, PauseState, RetryState, tree};
use crate::error::{StoreError as Error, StoreResult as Result};
use crate::types::{Seq, SinkName};

impl Store {
    fn sink_state(&self) -> Result<sled::Tree> {
        self.check_writable()?;
        let r = self.db.open_tree(tree::SINK_STATE);
        self.write_result(r)
    }

    /// The tree for reading, `None` when it was never created (an inspected
    /// store is never written, so it is not created here).
    fn sink_state_read(&self) -> Result<Option<sled::Tree>> {
        let exists = self
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == tree::SINK_STATE.as_bytes());
        if !exists {
            return Ok(None);
        }
        self.db
            .open_tree(tree::SINK_STATE)
            .map(Some)
            .map_err(Error::from_sled)
    }

    /// Records where the retries of `sink`'s record `seq` stand. Not durable
    /// until the next flush.
    ///
    /// # Errors
    /// [`Error::Poisoned`], [`Error::ValueRejected`] (too large), or
    /// [`Error::Io`] (and the store is poisoned).
    pub fn retry_put(&self, sink: &SinkName, seq: Seq, state: &RetryState) -> Result<()> {
        let t = self.sink_state()?;
        let key = codec::retry_key(sink, seq);
        let value = codec::encode_retry(&key, state)?;
        let r = t.insert(key, value).map(|_| ());
        self.write_result(r)
    }

    /// `sink`'s retry states from `from` on, by seq.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when a key or value does not decode.
    pub fn retry_states(&self, sink: &SinkName, from: Seq) -> Result<BTreeMap<Seq, RetryState>> {
        let mut out = BTreeMap::new();
        let Some(t) = self.sink_state_read()? else {
            return Ok(out);
        };
        let prefix = codec::retry_prefix(sink);
        let mut end = prefix.clone();
        end.extend_from_slice(&u64::MAX.to_be_bytes());
        for kv in t.range(codec::retry_key(sink, from)..=end) {
            let (k, v) = kv.map_err(Error::from_sled)?;
            let seq = codec::decode_retry_seq(&prefix, &k)?;
            out.insert(seq, codec::decode_retry(&k, &v)?);
        }
        Ok(out)
    }

    /// Removes `sink`'s retry states below `below` (the records its offset
    /// has passed). Returns whether any state at or above `below` remains.
    /// Not durable until the next flush.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Io`].
    pub fn retry_clear_below(&self, sink: &SinkName, below: Seq) -> Result<bool> {
        let t = self.sink_state()?;
        let prefix = codec::retry_prefix(sink);
        // One removal at a time, not a sled batch (whose pinned log can
        // hang, `store::intent`): a state below the offset is stale and
        // never read, so a crash between removals leaves only dead keys.
        let stale = t
            .range(prefix.clone()..codec::retry_key(sink, below))
            .keys()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::from_sled)?;
        for k in stale {
            let r = t.remove(k).map(|_| ());
            self.write_result(r)?;
        }
        Ok(t.scan_prefix(&prefix).next().is_some())
    }

    /// Pauses `sink` (`Some`) or lifts its pause (`None`). Not durable until
    /// the next flush.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Io`].
    pub fn set_paused(&self, sink: &SinkName, pause: Option<PauseState>) -> Result<()> {
        let t = self.sink_state()?;
        let key = codec::pause_key(sink);
        let r = match pause {
            Some(p) => {
                let value = codec::encode_pause(&key, &p)?;
                t.insert(key, value).map(|_| ())
            }
            None => t.remove(key).map(|_| ()),
        };
        self.write_result(r)
    }

    /// `sink`'s pause, if it is paused.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the value does not decode.
    pub fn paused(&self, sink: &SinkName) -> Result<Option<PauseState>> {
        let Some(t) = self.sink_state_read()? else {
            return Ok(None);
        };
        let key = codec::pause_key(sink);
        match t.get(&key).map_err(Error::from_sled)? {
            Some(v) => Ok(Some(codec::decode_pause(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// Raw iteration over the tree for `check`: every key and value,
    /// undecoded (none when the tree was never created).
    ///
    /// # Errors
    /// [`Error::Io`] when sled cannot list its trees.
    pub fn raw_sink_state(
        &self,
    ) -> Result<impl Iterator<Item = Result<(sled::IVec, sled::IVec)>> + use<>> {
        let t = self.sink_state_read()?;
        Ok(t.into_iter()
            .flat_map(|t| t.iter())
            .map(|kv| kv.map_err(Error::from_sled)))
    }

    /// Removes every state of `sink` (it is being forgotten). Not durable
    /// until the next flush.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Io`].
    pub fn sink_state_forget(&self, sink: &SinkName) -> Result<()> {
        self.set_paused(sink, None)?;
        self.retry_clear_below(sink, Seq(u64::MAX))?;
        // The state keyed at u64::MAX itself, should one exist.
        let t = self.sink_state()?;
        let r = t.remove(codec::retry_key(sink, Seq(u64::MAX))).map(|_| ());
        self.write_result(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    fn state(n: u32) -> RetryState {
        RetryState {
            attempts: n,
            counted: n,
            next_at_ms: 1000 + u64::from(n),
            history: Vec::new(),
        }
    }

    #[test]
    fn retry_states_are_kept_per_sink_from_the_offset_and_cleared_below_it() {
        let d = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            fsync: false,
            ..StoreOptions::default()
        };
        let (s, _) = Store::open(d.path().join("data"), &opts).unwrap();
        let (a, b) = (SinkName::new("a").unwrap(), SinkName::new("ab").unwrap());
        assert!(s.retry_states(&a, Seq(0)).unwrap().is_empty());
        for seq in [3, 5, 9] {
            s.retry_put(&a, Seq(seq), &state(seq as u32)).unwrap();
        }
        s.retry_put(&b, Seq(4), &state(1)).unwrap();
        let got: Vec<u64> = s
            .retry_states(&a, Seq(4))
            .unwrap()
            .keys()
            .map(|k| k.0)
            .collect();
        assert_eq!(got, vec![5, 9]);
        assert_eq!(s.retry_states(&a, Seq(0)).unwrap()[&Seq(3)], state(3));
        assert!(s.retry_clear_below(&a, Seq(9)).unwrap(), "9 remains");
        let got: Vec<u64> = s
            .retry_states(&a, Seq(0))
            .unwrap()
            .keys()
            .map(|k| k.0)
            .collect();
        assert_eq!(got, vec![9]);
        assert!(!s.retry_clear_below(&a, Seq(10)).unwrap());
        assert_eq!(
            s.retry_states(&b, Seq(0)).unwrap().len(),
            1,
            "another sink's"
        );

        assert_eq!(s.paused(&a).unwrap(), None);
        s.set_paused(&a, Some(PauseState { at_ms: 77 })).unwrap();
        assert_eq!(s.paused(&a).unwrap(), Some(PauseState { at_ms: 77 }));
        assert_eq!(s.paused(&b).unwrap(), None);
        s.sink_state_forget(&a).unwrap();
        assert_eq!(s.paused(&a).unwrap(), None);
        s.sink_state_forget(&b).unwrap();
        assert!(s.retry_states(&b, Seq(0)).unwrap().is_empty());
    }
}
