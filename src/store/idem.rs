//! Idempotency keys: what a dispatch made under a key appended, so a retry
//! of the same dispatch appends nothing and gets the same receipts.
//!
//! Keys of the `idem` tree:
//! - `k` + the caller's key → [`IdemValue`] (the first seq, the count, a
//!   digest of the content, the time);
//! - `t` + the time (ms, `u64` BE) + the caller's key → an empty sealed
//!   value: the time index that pruning walks in order.
//!
//! Invariant: an entry is written in the same whole-or-absent write as the
//! records it names ([`Store::append_keyed`], `store::intent`), so after
//! any crash a key is there exactly when its records are: a retry never
//! finds records without their key (and appends them twice) nor a key
//! without its records.

use super::Store;
use crate::codec::{self, IdemValue, tree};
use crate::error::{StoreError as Error, StoreResult as Result};

const BY_KEY: u8 = b'k';
const BY_TIME: u8 = b't';

fn key_entry(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(BY_KEY);
    k.extend_from_slice(key);
    k
}

fn time_entry(at_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.push(BY_TIME);
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The raw entries of one key: its `k` entry, the encoded value, and its
/// `t` (time index) entry.
pub(super) fn entries(key: &[u8], v: &IdemValue) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let k = key_entry(key);
    let value = codec::encode_idem(&k, v)?;
    Ok((k, value, time_entry(v.at_ms, key)))
}

impl Store {
    /// What `key` appended, if it is known.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when the entry does not decode.
    pub fn idem_get(&self, key: &[u8]) -> Result<Option<IdemValue>> {
        let k = key_entry(key);
        match self.idem.get(&k).map_err(Error::from_sled)? {
            Some(v) => Ok(Some(codec::decode_idem(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// Removes up to `max` keys recorded before `before_ms`. Returns how many.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Io`].
    pub fn idem_prune(&self, before_ms: u64, max: usize) -> Result<usize> {
        self.check_writable()?;
        let end = time_entry(before_ms, &[]);
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for k in self.idem.range(vec![BY_TIME]..end).keys().take(max) {
            let k = k.map_err(Error::from_sled)?;
            let Some(user) = k.get(9..) else {
                return Err(Error::Corrupted {
                    tree: tree::IDEM,
                    key: codec::render_key(tree::IDEM, &k),
                    reason: "time index entry shorter than its time".into(),
                });
            };
            batch.remove(key_entry(user));
            batch.remove(k.to_vec());
            n += 1;
        }
        if n > 0 {
            let r = self.idem.apply_batch(batch);
            self.write_result(r)?;
        }
        Ok(n)
    }
}
