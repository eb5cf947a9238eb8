//! The oldest record a sink has not passed, for the alerting signal
//! `oldest_pending`.

use super::Store;
use crate::codec::{self, BatchKind};
use crate::error::{StoreError as Error, StoreResult as Result};
use crate::types::Seq;

/// A log value holding records: the seqs it covers and its append time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordsAt {
    /// Its first seq.
    pub first: Seq,
    /// One past its last seq.
    pub end: Seq,
    /// When it was appended, ms since the Unix epoch.
    pub appended_at_ms: u64,
}

impl Store {
    /// The first value holding records that covers `from` or follows it
    /// (holes and lost markers are passed over), reading headers only.
    /// `None` when no such value is in the log.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when a header does not decode.
    pub fn records_at(&self, from: Seq) -> Result<Option<RecordsAt>> {
        for kv in self.log.iter_from(from) {
            let (k, v) = kv.map_err(Error::from_sled)?;
            let (first, h) = codec::decode_batch_header(&k, &v)?;
            let end = Seq(first.0 + u64::from(h.count));
            if end <= from || h.kind != BatchKind::Records {
                continue;
            }
            return Ok(Some(RecordsAt {
                first,
                end,
                appended_at_ms: h.appended_at_ms,
            }));
        }
        Ok(None)
    }
}
