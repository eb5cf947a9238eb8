//! The witness: what was durable, recorded outside sled.
//!
//! sled's recovery treats a checksum failure in its log as the torn tail of
//! a crash and silently drops everything after it; damage near the start of
//! its file leaves an empty database. Either would look like a smaller, or a
//! brand-new, outbox. The witness file (`outbox.witness`, next to sled's
//! files) records, after a successful flush, a lower bound of what that
//! flush made durable: the log id, the next seq and each sink's offset. On
//! open, a store that holds less than its witness is reported as corrupt
//! instead of being used.
//!
//! Invariants:
//! - every value in the witness is at most what is durable in sled, because
//!   it is read before the flush starts and written after it returns;
//! - the file is replaced atomically (write, fsync, rename, fsync the
//!   directory), so it is either the old witness or the new one;
//! - seqs and offsets only grow, so "recovered < witness" can only mean lost
//!   data; an offset the witness names must exist (forgetting a sink removes
//!   it from the witness, durably, before it removes the offset).
//!
//! Format, text: `outbox-witness 1`, then `log_id <32 hex>`, `next_seq <n>`,
//! `dlq <n>` (entries in the DLQ tree) and one `offset <sink> <n>` line per
//! sink. The DLQ count goes down only through purge and redrive, which lower
//! it in the file, durably, before they remove anything from sled (sled may
//! write a removal to disk at any moment, long before the next witness), so
//! it too stays a lower bound across a crash.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::{StoreError as Error, StoreResult as Result};

/// File name inside the data directory.
pub const FILE: &str = "outbox.witness";

/// What the witness records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Witness {
    /// The data directory's log id.
    pub log_id: Uuid,
    /// Every seq below this one was durable.
    pub next_seq: u64,
    /// Each sink's durable offset, at least.
    pub offsets: BTreeMap<String, u64>,
    /// DLQ entries, at least.
    pub dlq: u64,
}

impl Witness {
    /// The file's text.
    pub fn encode(&self) -> String {
        let mut s = format!(
            "outbox-witness 1\nlog_id {}\nnext_seq {}\ndlq {}\n",
            self.log_id.simple(),
            self.next_seq,
            self.dlq
        );
        for (sink, o) in &self.offsets {
            s.push_str(&format!("offset {sink} {o}\n"));
        }
        s
    }

    /// Parses the file's text; `None` when it is not a witness.
    pub fn decode(text: &str) -> Option<Witness> {
        let mut lines = text.lines();
        if lines.next()? != "outbox-witness 1" {
            return None;
        }
        let mut w = Witness::default();
        let mut have_id = false;
        for line in lines {
            let mut parts = line.split(' ');
            match (parts.next()?, parts.next(), parts.next(), parts.next()) {
                ("log_id", Some(id), None, None) => {
                    w.log_id = Uuid::try_parse(id).ok()?;
                    have_id = true;
                }
                ("next_seq", Some(n), None, None) => w.next_seq = n.parse().ok()?,
                ("dlq", Some(n), None, None) => w.dlq = n.parse().ok()?,
                ("offset", Some(sink), Some(n), None) => {
                    w.offsets.insert(sink.to_string(), n.parse().ok()?);
                }
                _ => return None,
            }
        }
        have_id.then_some(w)
    }
}

/// The witness path of a data directory.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Reads the witness, if there is one.
///
/// # Errors
/// [`Error::StoreCorrupt`] when the file exists but is not a witness.
pub fn read(dir: &Path) -> Result<Option<Witness>> {
    match std::fs::read_to_string(path(dir)) {
        Ok(text) => Witness::decode(&text).map(Some).ok_or_else(|| Error::StoreCorrupt {
            path: dir.to_path_buf(),
            reason: format!("{FILE} is damaged (not a witness file); move it away only if you know the store is intact"),
            source: None,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io(e)),
    }
}

/// Replaces the witness atomically.
///
/// # Errors
/// The I/O error of writing, syncing or renaming.
pub fn write(dir: &Path, w: &Witness) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(w.encode().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path(dir))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Compares what sled recovered with the witness.
///
/// # Errors
/// [`Error::Corrupted`] naming the tree and key where sled holds less than
/// was durable.
pub fn verify(w: &Witness, now: &Witness) -> Result<()> {
    let (log_id, next_seq, offsets) = (now.log_id, now.next_seq, &now.offsets);
    if w.log_id != log_id {
        return Err(Error::Corrupted {
            tree: "meta",
            key: "`log_id`".into(),
            reason: format!(
                "is {}, but {FILE} says {}: these sled files are not the ones this directory held",
                log_id.simple(),
                w.log_id.simple()
            ),
        });
    }
    if next_seq < w.next_seq {
        return Err(Error::Corrupted {
            tree: "log",
            key: format!("seq {next_seq}"),
            reason: format!(
                "sled recovered the log only up to seq {next_seq}, but seqs up to {} were durable ({FILE}); sled's db file is damaged and dropped what followed the damage",
                w.next_seq
            ),
        });
    }
    if now.dlq < w.dlq {
        return Err(Error::Corrupted {
            tree: "dlq",
            key: "(all)".into(),
            reason: format!(
                "holds {} entries, but {} were durable ({FILE}); sled's db file is damaged",
                now.dlq, w.dlq
            ),
        });
    }
    for (sink, o) in &w.offsets {
        match offsets.get(sink) {
            Some(got) if got < o => {
                return Err(Error::Corrupted {
                    tree: "offsets",
                    key: format!("`{sink}`"),
                    reason: format!(
                        "is {got}, but {o} was durable ({FILE}); sled's db file is damaged"
                    ),
                });
            }
            Some(_) => {}
            None => {
                return Err(Error::Corrupted {
                    tree: "offsets",
                    key: format!("`{sink}`"),
                    reason: format!(
                        "missing, but offset {o} was durable ({FILE}) and the sink was never forgotten; sled's db file is damaged"
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w() -> Witness {
        Witness {
            log_id: Uuid::from_u128(7),
            next_seq: 100,
            offsets: [("a".to_string(), 90), ("web".to_string(), 100)].into(),
            dlq: 3,
        }
    }

    fn now(id: u128, next: u64, offsets: &[(&str, u64)], dlq: u64) -> Witness {
        Witness {
            log_id: Uuid::from_u128(id),
            next_seq: next,
            offsets: offsets.iter().map(|(s, o)| (s.to_string(), *o)).collect(),
            dlq,
        }
    }

    #[test]
    fn round_trips_and_rejects_junk() {
        assert_eq!(Witness::decode(&w().encode()), Some(w()));
        assert_eq!(Witness::decode(""), None);
        assert_eq!(
            Witness::decode("outbox-witness 1\nnext_seq 3\n"),
            None,
            "no log id"
        );
        assert_eq!(Witness::decode("outbox-witness 1\nlog_id zz\n"), None);
        assert_eq!(Witness::decode("outbox-witness 2\n"), None);
    }

    #[test]
    fn writes_atomically_and_reads_back() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()).unwrap(), None);
        write(d.path(), &w()).unwrap();
        assert_eq!(read(d.path()).unwrap(), Some(w()));
        std::fs::write(path(d.path()), "garbage").unwrap();
        assert!(matches!(read(d.path()), Err(Error::StoreCorrupt { .. })));
    }

    #[test]
    fn less_than_the_witness_is_corruption() {
        let ok = [("a", 95), ("web", 100)];
        assert!(verify(&w(), &now(7, 100, &ok, 3)).is_ok());
        assert!(verify(&w(), &now(7, 250, &ok, 9)).is_ok(), "more is fine");
        let e = verify(&w(), &now(7, 40, &ok, 3)).unwrap_err().to_string();
        assert!(
            e.contains("tree `log`") && e.contains("up to seq 40") && e.contains("100"),
            "{e}"
        );
        let e = verify(&w(), &now(7, 100, &[("a", 10)], 3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tree `offsets`") && e.contains("`a`"), "{e}");
        let e = verify(&w(), &now(7, 100, &ok, 1)).unwrap_err().to_string();
        assert!(
            e.contains("tree `dlq`") && e.contains("holds 1 entries, but 3"),
            "{e}"
        );
        assert!(
            verify(&w(), &now(8, 100, &ok, 3))
                .unwrap_err()
                .is_corruption()
        );
        let e = verify(&w(), &now(7, 100, &[("web", 100)], 3))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`a`") && e.contains("missing") && e.contains("90"),
            "a lost offset is named: {e}"
        );
    }
}
