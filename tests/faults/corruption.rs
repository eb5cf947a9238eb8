//! Damaged data directories: bad values, flipped bytes, truncated files.
//! Each is reported (exit code 3 from the binary), never silently
//! recovered.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::process::{bin, copy_dir};
use crate::common::*;
use outbox::{Error, Outbox, Seq, SinkName, StoreError};

// ------------------------------------------------------------ corruption --

/// Fills a data directory: 50 records dead-lettered in the DLQ of sink `s`, its
/// offset at 50. Returns the directory.
async fn filled(root: &Path) -> PathBuf {
    filled_with(root, 50, 0, true).await
}

/// `n` records with `pad` extra payload bytes each. With `dead-letter`, sink `s`
/// dead-letters them all in its DLQ (its offset at `n`, the log then truncated);
/// without, it never delivers one (its offset at 0, every record needed).
async fn filled_with(root: &Path, n: usize, pad: usize, dead_letter: bool) -> PathBuf {
    let data = root.join("data");
    let (sink, gate) = TestSink::gated(if dead_letter {
        Behaviour::AlwaysPermanent
    } else {
        Behaviour::Ok
    });
    if dead_letter {
        gate.send(true).unwrap();
    }
    let (ob, _) = Outbox::<()>::builder(&data)
        .sink("s", sink, fast())
        .open()
        .await
        .unwrap();
    let padding = "x".repeat(pad);
    for i in 0..n {
        let r = rec(&format!("{{\"i\":{i},\"p\":\"{padding}\"}}"));
        ob.dispatch(r, vec![]).await.unwrap();
    }
    if dead_letter {
        eventually("dead-lettered", || ob.dlq_list(None).unwrap().len() == n).await;
        ob.shutdown(Duration::from_secs(5)).await.unwrap();
    } else {
        let report = ob.shutdown(Duration::from_millis(100)).await.unwrap();
        assert!(!report.drained);
    }
    drop(gate);
    data
}

/// What a store holds that still matters: the records at or after `s`'s
/// offset (those below it are done, and truncation may or may not have
/// removed them yet), the DLQ entries, and `s`'s offset.
fn contents(data: &Path) -> outbox::Result<(usize, usize, Option<u64>)> {
    let s = outbox::inspect::Admin::open(data)?;
    let off = s.offset(&SinkName::new("s").unwrap())?.map(|o| o.offset.0);
    let from = off.unwrap_or(0);
    let mut n = 0;
    for r in s.records(Seq(0)) {
        if r?.seq.0 >= from {
            n += 1;
        }
    }
    let dl = s.dead_letters().list(None)?.len();
    Ok((n, dl, off))
}

/// Opens a fresh copy of `pristine` whose `db` file was damaged by
/// `damage`; the outcome must be a corruption error (exit code 3) or the
/// undamaged contents `want`. Returns a line per silent loss.
fn check_damage(
    pristine: &Path,
    scratch: &Path,
    want: (usize, usize, Option<u64>),
    what: &str,
    damage: impl FnOnce(&mut Vec<u8>),
) -> Option<String> {
    copy_dir(pristine, scratch);
    let mut b = std::fs::read(scratch.join("db")).unwrap();
    damage(&mut b);
    std::fs::write(scratch.join("db"), &b).unwrap();
    match std::panic::catch_unwind(|| contents(scratch)) {
        Err(_) => Some(format!("{what}: open panicked")),
        Ok(Err(e)) if e.is_corruption() || e.is_locked() => None,
        Ok(Err(e)) => Some(format!(
            "{what}: error neither corruption nor locked (not exit code 3): {e}"
        )),
        Ok(Ok(c)) if c == want => None,
        // The issue asks that open *or* `outbox check` report it.
        Ok(Ok(_)) if check_reports_a_problem(scratch) => None,
        Ok(Ok(c)) => Some(format!(
            "{what}: opened without an error and `outbox check` found nothing, holding (records, DLQ entries, offset) = {c:?} of {want:?}"
        )),
    }
}

/// `outbox check` on `dir` exits 3 and names a problem.
fn check_reports_a_problem(dir: &Path) -> bool {
    // sled's threads may hold the lock a moment after the open above.
    for _ in 0..100 {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_outbox"))
            .args(["check", "--data-dir", dir.to_str().unwrap()])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        let err = String::from_utf8_lossy(&o.stderr);
        if err.contains("is locked") {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        return o.status.code() == Some(3) && (out.contains("problem") || err.contains("corrupt"));
    }
    false
}

/// Damages fresh copies of a filled store's `db` file: 40 flips spread over
/// what sled wrote and three truncations, each on a copy of the directory
/// exactly as the outbox left it (before any reopen: a reopen writes a sled
/// snapshot, which changes what sled can detect). Each must open with a
/// corruption error (exit code 3) or with everything that still matters.
/// Returns one line per copy that lost data silently.
///
/// sled's recovery treats a checksum failure in its log as the torn tail of
/// a crash and silently drops everything after it; the store's witness file
/// (what was durable: log head, offsets, DLQ count) is what turns that into
/// an error.
async fn silent_losses(n: usize, pad: usize, dead_letter: bool) -> Vec<String> {
    let d = dir();
    let data = filled_with(d.path(), n, pad, dead_letter).await;
    let pristine = d.path().join("pristine");
    copy_dir(&data, &pristine);
    let scratch = d.path().join("scratch");
    copy_dir(&pristine, &scratch);
    let want = contents(&scratch).unwrap();
    if dead_letter {
        assert_eq!(want, (0, n, Some(n as u64)));
    } else {
        assert_eq!(want, (n, 0, Some(0)));
    }
    let db = std::fs::read(pristine.join("db")).unwrap();
    // Damage only the part sled has written: segments are preallocated.
    let len = db.iter().rposition(|b| *b != 0).unwrap() + 1;
    let mut lost = Vec::new();
    for k in 0..40 {
        let pos = k * len / 40;
        lost.extend(check_damage(
            &pristine,
            &scratch,
            want,
            &format!("byte {pos} flipped"),
            |b| b[pos] ^= 0x5a,
        ));
    }
    for keep in [len / 4, len / 2, len - len / 8] {
        lost.extend(check_damage(
            &pristine,
            &scratch,
            want,
            &format!("cut to {keep} of {len} bytes"),
            |b| b.truncate(keep),
        ));
    }
    lost
}

/// One segment and several, every record dead-lettered (offset and DLQ matter)
/// or, in one segment, every record pending (the whole log matters): all
/// damage is reported.
#[tokio::test]
async fn damaged_sled_files_are_reported_not_silently_recovered() {
    for (n, pad, dead_letter) in [(50usize, 0usize, true), (300, 40_000, true), (50, 0, false)] {
        let lost = silent_losses(n, pad, dead_letter).await;
        assert!(
            lost.is_empty(),
            "{n} records (dead-lettered: {dead_letter}): {} of 43 damaged copies lost data silently:\n{}",
            lost.len(),
            lost.join("\n")
        );
    }
}

/// Pending records in a log of several segments: damage that drops records
/// from the middle while the log's head survives in a later segment is not
/// caught at open by the witness (it records the head, offsets and DLQ
/// count, not every batch); `outbox check` finds a hole it leaves, and open
/// refuses an offset below the first record. None of the 43 copies may lose
/// a record without an error (the open's chain walk reads through sled's
/// iterators, which stop where the damaged tree does; see `Store::verify`).
#[tokio::test]
async fn damage_in_the_middle_of_a_long_pending_log_is_reported() {
    let lost = silent_losses(300, 40_000, false).await;
    assert!(
        lost.is_empty(),
        "{} of 43 damaged copies lost pending records silently:\n{}",
        lost.len(),
        lost.join("\n")
    );
}

/// A value that does not decode stops the open with `Corrupted` naming the
/// tree and key, exit code 3, and the binary exits 3 with that message.
#[tokio::test]
async fn undecodable_values_stop_the_open_with_exit_code_3() {
    for (tree, key, value) in [
        ("offsets", b"s".to_vec(), vec![1u8, 0, 0]),
        ("log", Seq(49).to_be_bytes().to_vec(), vec![1u8, 0, 0, 0, 0]),
        ("meta", b"log_id".to_vec(), vec![1u8, 2, 3]),
        ("meta", b"format_version".to_vec(), vec![9u8]),
    ] {
        let d = dir();
        let data = filled(d.path()).await;
        {
            let db = raw_sled(&data);
            let t = if tree == "log" {
                crate::common::log_tree_for(&db, 49)
            } else {
                db.open_tree(tree).unwrap()
            };
            t.insert(&key, value).unwrap();
            db.flush().unwrap();
        }
        // The raw sled handle above, unlike a closed outbox, may hold the
        // lock for a moment after it is dropped (sled's thread pool).
        let err = loop {
            match Outbox::<()>::builder(&data)
                .sink("s", TestSink::new(Behaviour::Ok), fast())
                .open()
                .await
            {
                Err(Error::Store(StoreError::Locked { .. })) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => break e,
                Ok(_) => panic!("{tree}: opened a directory with a bad value"),
            }
        };
        assert!(err.is_corruption(), "{tree}: {err}");
        let msg = err.to_string();
        if key == b"format_version" {
            assert!(
                matches!(
                    err,
                    Error::Store(StoreError::UnknownFormat { found: 9, .. })
                ),
                "{msg}"
            );
        } else {
            assert!(
                matches!(err, Error::Store(StoreError::Corrupted { .. })),
                "{msg}"
            );
            assert!(msg.contains(&format!("tree `{tree}`")), "{msg}");
        }
        let out = bin()
            .args(["dump", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{tree}: dump: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
