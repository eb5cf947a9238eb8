//! Faults: each must end in a clear error or a recovery, never a panic, and
//! lose no acknowledged record.
//!
//! - a sink that panics (in `deliver` and in `commit`);
//! - a sink that hangs forever (drain timeout);
//! - a full disk (a small tmpfs, when running as root; skipped otherwise);
//! - damaged data directories: bad values, flipped bytes, truncated files;
//! - a read-only data directory;
//! - two processes opening the same directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use outbox::sink::{BoxFuture, DeliveryContext, DeliveryResult, Sink};
use outbox::{Error, Outbox, Record, Seq, SinkName};

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_outbox")
}

// ---------------------------------------------------------------- panics --

/// A sink whose `commit` panics the first `n` times, then works.
#[derive(Clone)]
struct PanicOnCommit {
    inner: TestSink,
    left: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Sink for PanicOnCommit {
    fn deliver<'a>(
        &'a self,
        record: &'a Record,
        ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        self.inner.deliver(record, ctx)
    }

    fn commit(&self) -> BoxFuture<'_, DeliveryResult> {
        Box::pin(async move {
            use std::sync::atomic::Ordering;
            if self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                panic!("test sink panics in commit");
            }
            Ok(())
        })
    }

    fn kind(&self) -> &'static str {
        "panic-on-commit"
    }
}

#[tokio::test]
async fn a_sink_that_panics_in_deliver_parks_the_record_and_loses_nothing() {
    let d = dir();
    let sink = TestSink::new(Behaviour::PanicOn(b"boom".to_vec()));
    let other = TestSink::new(Behaviour::Ok);
    let (ob, mut acks) = Outbox::<u32>::builder(d.path())
        .sink("p", sink.clone(), fast())
        .sink("o", other.clone(), fast())
        .open()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (i, p) in ["a", "boom", "c", "boom", "e"].iter().enumerate() {
        ids.push(ob.dispatch(rec(p), vec![i as u32]).await.unwrap());
    }
    let mut got = acks_n(&mut acks, 5).await;
    got.sort();
    assert_eq!(
        got,
        vec![0, 1, 2, 3, 4],
        "every token once, panics included"
    );
    assert_eq!(
        sink.delivered(),
        vec![b"a".to_vec(), b"c".to_vec(), b"e".to_vec()]
    );
    assert_eq!(other.delivered().len(), 5);
    let dl = ob.dlq_list(Some(&SinkName::new("p").unwrap())).unwrap();
    assert_eq!(
        dl.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![ids[1].seq.0, ids[3].seq.0]
    );
    assert!(dl.iter().all(|e| e.error.contains("sink panicked")));
    ob.close(Duration::from_secs(5)).await.unwrap();

    // After a restart with the sink fixed, a redrive delivers both, with
    // their original delivery ids.
    let fixed = TestSink::new(Behaviour::Ok);
    let (ob, _) = Outbox::<u32>::builder(d.path())
        .sink("p", fixed.clone(), fast())
        .sink("o", TestSink::new(Behaviour::Ok), fast())
        .open()
        .await
        .unwrap();
    assert_eq!(
        ob.dlq_redrive(&SinkName::new("p").unwrap(), None)
            .await
            .unwrap(),
        2
    );
    eventually("redriven", || fixed.delivered().len() == 2).await;
    assert_eq!(
        fixed.delivered_ids(),
        vec![
            ids[1].delivery_id.to_string(),
            ids[3].delivery_id.to_string()
        ]
    );
    ob.close(Duration::from_secs(5)).await.unwrap();
}

/// A panic in `Sink::commit` must not silently stop the sink's delivery:
/// the records after it must still be delivered and acknowledged.
/// Regression: the panic used to end the worker task, silently.
#[tokio::test]
async fn a_sink_that_panics_in_commit_does_not_stop_delivery() {
    let d = dir();
    let sink = PanicOnCommit {
        inner: TestSink::new(Behaviour::Ok),
        left: std::sync::Arc::new(1.into()),
    };
    let (ob, mut acks) = Outbox::<u32>::builder(d.path())
        .sink("p", sink.clone(), fast())
        .open()
        .await
        .unwrap();
    ob.dispatch(rec("first"), vec![1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    ob.dispatch(rec("second"), vec![2]).await.unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got.len() < 2 {
        match tokio::time::timeout_at(deadline, acks.recv()).await {
            Ok(Some(t)) => got.push(t),
            _ => break,
        }
    }
    let st = ob.status().unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![1, 2],
        "after a panic in commit, the sink's worker stopped: committed {} of head {}, delivered {:?}",
        st.sinks[0].committed,
        st.head,
        sink.inner.delivered()
    );
    ob.close(Duration::from_secs(5)).await.unwrap();
}

// ----------------------------------------------------------------- hangs --

/// A sink whose every call (deliver, or commit) never returns.
struct Hang {
    in_commit: bool,
    calls: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Sink for Hang {
    fn deliver<'a>(
        &'a self,
        _record: &'a Record,
        _ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let hang = !self.in_commit;
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok(())
        })
    }

    fn commit(&self) -> BoxFuture<'_, DeliveryResult> {
        let hang = self.in_commit;
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok(())
        })
    }

    fn kind(&self) -> &'static str {
        "hang"
    }
}

async fn hung_sink_is_cut_off_and_replayed(in_commit: bool) {
    {
        let d = dir();
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let ok = TestSink::new(Behaviour::Ok);
        let (ob, mut acks) = Outbox::<u32>::builder(d.path())
            .sink(
                "hung",
                Hang {
                    in_commit,
                    calls: calls.clone(),
                },
                fast(),
            )
            .sink("ok", ok.clone(), fast())
            .open()
            .await
            .unwrap();
        let receipts = ob
            .dispatch_many(
                (0..5u32)
                    .map(|i| (rec(&format!("h{i}")), vec![i]))
                    .collect(),
            )
            .await
            .unwrap();
        eventually("the good sink delivers", || ok.delivered().len() == 5).await;
        eventually("the hung sink was called", || {
            calls.load(std::sync::atomic::Ordering::SeqCst) > 0
        })
        .await;
        let started = std::time::Instant::now();
        let report = tokio::time::timeout(
            Duration::from_secs(10),
            ob.close(Duration::from_millis(300)),
        )
        .await
        .unwrap_or_else(|_| panic!("in_commit={in_commit}: close(300 ms) still running after 10 s"))
        .unwrap();
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "in_commit={in_commit}: shutdown took {took:?}"
        );
        assert!(!report.drained, "in_commit={in_commit}");
        assert_eq!(
            report.pending,
            vec![
                (SinkName::new("hung").unwrap(), 5),
                (SinkName::new("ok").unwrap(), 0)
            ],
            "in_commit={in_commit}"
        );
        assert!(
            drain_acks(&mut acks).await.is_empty(),
            "in_commit={in_commit}: no token may be released while a sink holds its record"
        );

        // The next start replays all five to the (now working) sink.
        let fixed = TestSink::new(Behaviour::Ok);
        let (ob, _) = Outbox::<u32>::builder(d.path())
            .sink("hung", fixed.clone(), fast())
            .sink("ok", TestSink::new(Behaviour::Ok), fast())
            .open()
            .await
            .unwrap();
        eventually("replayed", || fixed.delivered().len() == 5).await;
        let want: Vec<String> = receipts.iter().map(|r| r.delivery_id.to_string()).collect();
        assert_eq!(fixed.delivered_ids(), want, "in_commit={in_commit}");
        ob.close(Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test]
async fn a_sink_hung_in_deliver_is_cut_off_at_the_drain_timeout_and_replayed() {
    hung_sink_is_cut_off_and_replayed(false).await;
}

/// The same with a sink whose `commit` (a file sink's fsync on a dead NFS
/// mount, say) never returns. Regression: shutdown used to wait for it
/// forever.
#[tokio::test]
async fn a_sink_hung_in_commit_is_cut_off_at_the_drain_timeout_and_replayed() {
    hung_sink_is_cut_off_and_replayed(true).await;
}

// -------------------------------------------------------- lock lingering --

/// `close()` documents that it returns once the data
/// directory is released, "so it can be opened again at once". Four
/// directories at a time, so the machine is busy as it is in CI.
/// Regression: sled's thread pool could still hold the `db` file's lock
/// for a moment after they returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_releases_the_directory_at_once() {
    let mut tasks = Vec::new();
    for t in 0..4u32 {
        tasks.push(tokio::spawn(async move {
            let d = dir();
            let mut locked = Vec::new();
            for round in 0..50u32 {
                let (ob, _) = loop {
                    match Outbox::<()>::builder(d.path())
                        .sink("s", TestSink::new(Behaviour::Ok), fast())
                        .open()
                        .await
                    {
                        Ok(x) => break x,
                        Err(Error::Locked { .. }) => {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        Err(e) => panic!("{e}"),
                    }
                };
                ob.dispatch_many(
                    (0..20)
                        .map(|i| (rec(&format!("{t}-{round}-{i}")), vec![]))
                        .collect(),
                )
                .await
                .unwrap();
                if round % 2 == 0 {
                    ob.close(Duration::from_secs(5)).await.unwrap();
                } else {
                    // An undrained close: the records stay pending.
                    ob.close(Duration::ZERO).await.unwrap();
                }
                match outbox::store::Store::open(d.path(), &Default::default()) {
                    Ok(s) => drop(s),
                    Err(Error::Locked { .. }) => locked.push(round),
                    Err(e) => panic!("round {round}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            locked
        }));
    }
    let mut locked = Vec::new();
    for t in tasks {
        locked.extend(t.await.unwrap());
    }
    assert!(
        locked.is_empty(),
        "of 200 opens right after close(), {} found the directory locked (rounds {locked:?})",
        locked.len()
    );
}

// ------------------------------------------------------------ corruption --

/// Fills a data directory: 50 records parked in the DLQ of sink `s`, its
/// offset at 50. Returns the directory.
async fn filled(root: &Path) -> PathBuf {
    filled_with(root, 50, 0, true).await
}

/// `n` records with `pad` extra payload bytes each. With `park`, sink `s`
/// parks them all in its DLQ (its offset at `n`, the log then truncated);
/// without, it never delivers one (its offset at 0, every record needed).
async fn filled_with(root: &Path, n: usize, pad: usize, park: bool) -> PathBuf {
    let data = root.join("data");
    let (sink, gate) = TestSink::gated(if park {
        Behaviour::AlwaysPermanent
    } else {
        Behaviour::Ok
    });
    if park {
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
    if park {
        eventually("parked", || ob.dlq_list(None).unwrap().len() == n).await;
        ob.close(Duration::from_secs(5)).await.unwrap();
    } else {
        let report = ob.close(Duration::from_millis(100)).await.unwrap();
        assert!(!report.drained);
    }
    drop(gate);
    data
}

/// What a store holds that still matters: the records at or after `s`'s
/// offset (those below it are done, and truncation may or may not have
/// removed them yet), the DLQ entries, and `s`'s offset.
fn contents(data: &Path) -> outbox::Result<(usize, usize, Option<u64>)> {
    let (s, _) = outbox::store::Store::open(
        data,
        &outbox::store::StoreOptions {
            create: false,
            ..Default::default()
        },
    )?;
    let off = s.offset(&SinkName::new("s").unwrap())?.map(|o| o.next);
    let from = off.unwrap_or(0);
    let mut n = 0;
    for b in s.iter_batches(Seq(0)) {
        let b = b?;
        n += (0..b.entries.len() as u64)
            .filter(|i| b.first.0 + i >= from)
            .count();
    }
    let dl = s.dlq_list(None)?.len();
    Ok((n, dl, off))
}

/// Copies a data directory (its files and its `blobs` folder).
fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
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
        Ok(Err(e)) if e.exit_code() == 3 => None,
        Ok(Err(e)) => Some(format!(
            "{what}: error with exit code {}: {e}",
            e.exit_code()
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
async fn silent_losses(n: usize, pad: usize, park: bool) -> Vec<String> {
    let d = dir();
    let data = filled_with(d.path(), n, pad, park).await;
    let pristine = d.path().join("pristine");
    copy_dir(&data, &pristine);
    let scratch = d.path().join("scratch");
    copy_dir(&pristine, &scratch);
    let want = contents(&scratch).unwrap();
    if park {
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

/// One segment and several, every record parked (offset and DLQ matter)
/// or, in one segment, every record pending (the whole log matters): all
/// damage is reported.
#[tokio::test]
async fn damaged_sled_files_are_reported_not_silently_recovered() {
    for (n, pad, park) in [(50usize, 0usize, true), (300, 40_000, true), (50, 0, false)] {
        let lost = silent_losses(n, pad, park).await;
        assert!(
            lost.is_empty(),
            "{n} records (parked: {park}): {} of 43 damaged copies lost data silently:\n{}",
            lost.len(),
            lost.join("\n")
        );
    }
}

/// Pending records in a log of several segments: damage that drops records
/// from the middle while the log's head survives in a later segment is not
/// caught at open by the witness (it records the head, offsets and DLQ
/// count, not every batch); `outbox check` finds a hole it leaves, and open
/// refuses an offset below the first record. Left: 2 of 43 copies, where a
/// second open of the damaged files sees a shorter log than the first did.
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
            db.open_tree(tree).unwrap().insert(&key, value).unwrap();
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
                Err(Error::Locked { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => break e,
                Ok(_) => panic!("{tree}: opened a directory with a bad value"),
            }
        };
        assert_eq!(err.exit_code(), 3, "{tree}: {err}");
        let msg = err.to_string();
        if key == b"format_version" {
            assert!(
                matches!(err, Error::UnknownFormat { found: 9, .. }),
                "{msg}"
            );
        } else {
            assert!(matches!(err, Error::Corrupted { .. }), "{msg}");
            assert!(msg.contains(&format!("tree `{tree}`")), "{msg}");
        }
        let out = Command::new(bin())
            .args(["dump", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{tree}: dump: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A DLQ key that does not decode must give `Corrupted`, like any bad key.
/// Regression: `decode_dlq_key` built its error with `render_key`, which
/// called `decode_dlq_key` on the same key again, recursing until the stack
/// overflowed and the process aborted (found by the `decode` fuzz target).
#[test]
fn a_bad_dlq_key_is_an_error_not_a_stack_overflow() {
    let err = outbox::codec::decode_dlq_key(b"").unwrap_err();
    assert_eq!(err.exit_code(), 3);
    let err = outbox::codec::decode_dlq_key(&[3, b'a', b'b']).unwrap_err();
    assert!(err.to_string().contains("tree `dlq`"), "{err}");
}

// ------------------------------------------------------------ disk full --

/// A small tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    /// `None` (with a message) when not root or when mounting fails, outside
    /// CI. Under `CI=true` that is a failure: CI runs as root, and a test
    /// that did not run must not pass.
    fn mount(size: &str) -> Option<Tmpfs> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                !ci,
                "CI=true: this test needs root to mount a tmpfs, and must not be skipped"
            );
            println!("NOT RUN: mounting a tmpfs needs root (this test did not test anything)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status();
        match st {
            Ok(s) if s.success() => Some(Tmpfs { _dir: dir, path }),
            other => {
                assert!(
                    !ci,
                    "CI=true: cannot mount a tmpfs ({other:?}); the test must not be skipped"
                );
                println!("NOT RUN: cannot mount a tmpfs here ({other:?})");
                None
            }
        }
    }

    fn remount(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(st.success(), "remount {opts}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Opens `data` with one sink `s`.
async fn reopen<T: Send + 'static>(
    data: &Path,
    sink: TestSink,
) -> (Outbox<T>, tokio::sync::mpsc::UnboundedReceiver<T>) {
    Outbox::<T>::builder(data)
        .sink("s", sink, fast())
        .open()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_full_disk_fails_dispatch_loses_nothing_and_recovers_once_space_is_freed() {
    let Some(fs) = Tmpfs::mount("24m") else {
        return;
    };
    let data = fs.path.join("data");
    // Space to free later.
    let ballast = fs.path.join("ballast");
    std::fs::write(&ballast, vec![7u8; 10 << 20]).unwrap();

    // Nothing is delivered while the disk fills, so nothing is truncated.
    let (held, gate) = TestSink::gated(Behaviour::Ok);
    let (ob, mut acks) = reopen::<u32>(&data, held.clone()).await;
    let payload = "y".repeat(32 << 10);
    let mut receipted = Vec::new();
    let mut failure = None;
    for i in 0..2000u32 {
        let r = Record::new(format!("{{\"i\":{i},\"p\":\"{payload}\"}}").into_bytes());
        match ob.dispatch(r, vec![i]).await {
            Ok(rc) => receipted.push((i, rc)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let err = failure.expect("24 MiB filled up without a dispatch error");
    assert!(
        matches!(err, Error::Io(_) | Error::Poisoned(_)),
        "a full disk is an I/O error: {err}"
    );
    assert!(receipted.len() > 10, "only {} receipted", receipted.len());
    // The store refuses writes until it is reopened.
    assert!(
        ob.dispatch(Record::new(b"{}".to_vec()), vec![9999])
            .await
            .is_err()
    );
    println!(
        "disk full after {} receipts of 32 KiB: {err}",
        receipted.len()
    );
    // Stopped without a drain (the store is poisoned, so nothing more is
    // flushed by outbox; sled's own drop may still try).
    abandon(ob, &data).await;
    drop(gate);
    assert!(
        drain_acks(&mut acks).await.is_empty(),
        "nothing was delivered, so no token may be released"
    );

    // Free space, reopen: every receipted record is there, in order, with
    // its delivery id; new dispatches work and are acknowledged.
    std::fs::remove_file(&ballast).unwrap();
    let sink = TestSink::new(Behaviour::Ok);
    let (ob, mut acks) = reopen::<u32>(&data, sink.clone()).await;
    eventually("replayed", || sink.delivered().len() >= receipted.len()).await;
    let ids: Vec<String> = sink.delivered_ids();
    let want: Vec<String> = receipted
        .iter()
        .map(|(_, r)| r.delivery_id.to_string())
        .collect();
    assert_eq!(
        &ids[..want.len()],
        &want[..],
        "every receipted record, in order"
    );
    let r = ob
        .dispatch(Record::new(b"{\"after\":1}".to_vec()), vec![100_000])
        .await
        .unwrap();
    assert!(
        r.seq.0 > receipted.last().unwrap().1.seq.0,
        "a seq above every receipted one: {r:?}"
    );
    assert_eq!(acks_n(&mut acks, 1).await, vec![100_000]);
    ob.close(Duration::from_secs(5)).await.unwrap();
}

// ------------------------------------------------------------ read-only --

#[tokio::test]
async fn a_read_only_data_directory_is_a_clear_error_and_loses_nothing() {
    let Some(fs) = Tmpfs::mount("16m") else {
        return;
    };
    let data = fs.path.join("data");
    let (ob, _) = reopen::<()>(&data, TestSink::new(Behaviour::AlwaysTransient)).await;
    let receipts = ob
        .dispatch_many(
            (0..10)
                .map(|i| (rec(&format!("{{\"ro\":{i}}}")), vec![]))
                .collect(),
        )
        .await
        .unwrap();
    abandon(ob, &data).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    fs.remount("ro");

    let err = Outbox::<()>::builder(&data)
        .sink("s", TestSink::new(Behaviour::Ok), fast())
        .open()
        .await
        .err()
        .expect("opened a read-only data directory for writing");
    let msg = err.to_string();
    assert!(matches!(err, Error::Io(_)), "{msg}");
    assert!(msg.to_lowercase().contains("read-only"), "{msg}");
    assert_eq!(err.exit_code(), 1);
    let out = Command::new(bin())
        .args(["run", "--sink", "f=stdout", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.to_lowercase().contains("read-only"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    fs.remount("rw");
    let sink = TestSink::new(Behaviour::Ok);
    let (ob, _) = reopen::<()>(&data, sink.clone()).await;
    eventually("replayed", || sink.delivered().len() == 10).await;
    let want: Vec<String> = receipts.iter().map(|r| r.delivery_id.to_string()).collect();
    assert_eq!(sink.delivered_ids(), want);
    ob.close(Duration::from_secs(5)).await.unwrap();
}

// ------------------------------------------------------ two processes --

#[tokio::test]
async fn a_second_process_on_the_same_directory_is_refused_with_exit_code_3() {
    let d = dir();
    let data = d.path().join("data");
    let out1 = d.path().join("one.ndjson");
    let mut first = Command::new(bin())
        .args(["run", "--data-dir"])
        .arg(&data)
        .arg("--sink")
        .arg(format!("f=file:{}", out1.display()))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first process holds the directory.
    let mut held = false;
    for _ in 0..500 {
        if data.join("db").exists() {
            match outbox::store::Store::open(&data, &Default::default()) {
                Err(Error::Locked { .. }) => {
                    held = true;
                    break;
                }
                Ok(s) => drop(s),
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(held, "the first process never took the directory");

    let second = Command::new(bin())
        .args(["run", "--sink", "g=stdout", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("locked"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let err = Outbox::<()>::builder(&data).open().await.err().unwrap();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert_eq!(err.exit_code(), 3);

    // The first one is unharmed: it takes a record, drains and exits 0.
    use std::io::Write;
    let mut stdin = first.stdin.take().unwrap();
    stdin.write_all(b"{\"from\":\"first\"}\n").unwrap();
    drop(stdin);
    let st = first.wait().unwrap();
    assert!(st.success(), "{st:?}");
    assert_eq!(
        std::fs::read_to_string(&out1).unwrap(),
        "{\"from\":\"first\"}\n"
    );
}

/// A drain timeout with one sink that finished and one that did not: the
/// shutdown must return its report. Regression: `Outbox::shutdown` awaited
/// the workers' `JoinHandle`s through `&mut` inside the drain timeout, then,
/// when it timed out, awaited every handle again, including those that had
/// completed, and tokio panicked with "JoinHandle polled after completion".
/// The daemon hit it on SIGTERM whenever one sink drained and another did
/// not within `drain_timeout` (found by the kill -9 test's final drain).
#[tokio::test]
async fn a_drain_timeout_after_one_sink_finished_returns_a_report() {
    let d = dir();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (ob, _) = Outbox::<()>::builder(d.path())
        .sink("ok", TestSink::new(Behaviour::Ok), fast())
        .sink(
            "hung",
            Hang {
                in_commit: false,
                calls: calls.clone(),
            },
            fast(),
        )
        .open()
        .await
        .unwrap();
    ob.dispatch(rec("x"), vec![]).await.unwrap();
    eventually("the hung sink was called", || {
        calls.load(std::sync::atomic::Ordering::SeqCst) > 0
    })
    .await;
    let report = tokio::spawn(async move { ob.shutdown(Duration::from_millis(300)).await })
        .await
        .expect("shutdown panicked")
        .unwrap();
    assert!(!report.drained);
    assert_eq!(
        report.pending,
        vec![
            (SinkName::new("ok").unwrap(), 0),
            (SinkName::new("hung").unwrap(), 1)
        ]
    );
}
