//! Fault injection without root (issue 9, item 7): every failpoint of the
//! store and of the file sink is made to fail on a real sled directory, and
//! each failure must end in a clear error or a recovery. No receipted record
//! is lost, no ack is released before every sink's durable offset passed its
//! record, and the store reopens.
//!
//! | failpoint                 | where                                               |
//! |---------------------------|-----------------------------------------------------|
//! | `store::append`           | `Store::append_runs` and `append_keyed`, before each log value's insert |
//! | `store::flush`            | `Store::flush`, before sled's flush                 |
//! | `store::fsync`            | `FileSync::sync`, before the fsyncs of `full`       |
//! | `store::commit_offset`    | `Store::commit_offset`, before the offset (and DLQ) transaction |
//! | `store::witness`          | `Store::write_witness`                              |
//! | `store::truncate::floor`  | `Store::truncate_below`, before the floor is raised |
//! | `store::truncate::remove` | `Store::truncate_below`, after the floor is durable, before the removal |
//! | `sink::file::write`       | the file sink's commit, before its write            |
//! | `sink::file::fsync`       | the file sink's commit, before its fsync            |
//!
//! An injected store failure is an I/O error from sled's call, and goes
//! through the same path as a real one (the store is poisoned). sled itself
//! stays healthy, so what it held when the outbox stopped is written when
//! its last handle drops: a "maybe appended" record that reached sled is
//! then on disk, and delivered after the reopen. The tests assert exactly
//! that outcome.
//!
//! fail's registry is global: every test holds a [`fail::FailScenario`],
//! whose lock runs them one at a time and whose drop clears every point.
//! Built only with `--features failpoints` (`required-features`), so no
//! production build carries a failpoint.

mod common;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use common::*;
use outbox::sink::{BoxFuture, DeliveryContext, DeliveryError, DeliveryResult, FileSink, Sink};
use outbox::{
    DeliveryId, DispatchErrorKind, Error, Outbox, OutboxConfig, Receipt, Record, Seq, SinkName,
    StoreError,
};
use parking_lot::Mutex;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;
use uuid::Uuid;

/// Holds fail's scenario lock for one test and clears every point at drop.
fn scenario() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}

fn name(s: &str) -> SinkName {
    SinkName::new(s).unwrap()
}

/// `(seq, delivery id, payload)` of each successful delivery, in order.
type Got = Vec<(u64, String, String)>;

fn got(sink: &TestSink) -> Got {
    sink.seen
        .lock()
        .iter()
        .filter(|s| s.ok)
        .map(|s| {
            (
                s.seq,
                s.id.clone(),
                String::from_utf8(s.payload.clone()).unwrap(),
            )
        })
        .collect()
}

/// What a sink must have got for these receipts and payloads.
fn want(receipts: &[Receipt], payloads: &[&str]) -> Got {
    assert_eq!(receipts.len(), payloads.len());
    receipts
        .iter()
        .zip(payloads)
        .map(|(r, p)| (r.seq.0, r.delivery_id.to_string(), p.to_string()))
        .collect()
}

/// The delivery id of `seq` in `log`, for records whose dispatch failed and
/// so has no receipt.
fn id_of(log: Uuid, seq: u64) -> String {
    DeliveryId {
        log_id: log,
        seq: Seq(seq),
    }
    .to_string()
}

/// The [`Error`] of a failed call: itself, or a failed dispatch's.
/// A failed call's error that may hold a [`StoreError`]: an [`Error`] or a
/// [`outbox::DispatchError`].
trait StoreFailure: std::fmt::Debug {
    fn store_error(&self) -> Option<&StoreError>;
}

impl StoreFailure for Error {
    fn store_error(&self) -> Option<&StoreError> {
        match self {
            Error::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl<T> StoreFailure for outbox::DispatchError<T> {
    fn store_error(&self) -> Option<&StoreError> {
        match self.kind() {
            DispatchErrorKind::Store(e) => Some(e),
            _ => None,
        }
    }
}

/// The reason inside a [`StoreError::Poisoned`], or a panic naming the
/// error.
fn poisoned(e: &impl StoreFailure) -> &str {
    match e.store_error() {
        Some(StoreError::Poisoned(why)) => why,
        _ => panic!("expected StoreError::Poisoned, got {e:?}"),
    }
}

/// The message inside a [`StoreError::Io`], or a panic naming the error.
fn io(e: &impl StoreFailure) -> String {
    match e.store_error() {
        Some(StoreError::Io(io)) => io.to_string(),
        _ => panic!("expected StoreError::Io, got {e:?}"),
    }
}

/// Stops the outbox (the drain is short: after a failure some records can
/// never be published) and returns the shutdown's result and every token
/// released that had not been received yet.
async fn close(
    ob: Outbox<u32>,
    acks: &mut UnboundedReceiver<u32>,
) -> (outbox::Result<outbox::ShutdownReport>, Vec<u32>) {
    let r = ob.shutdown(Duration::from_millis(500)).await;
    let mut rest = Vec::new();
    while let Some(t) = acks.recv().await {
        rest.push(t);
    }
    (r, rest)
}

/// Waits for `n` tokens, or panics after 10 s.
async fn acks_n(rx: &mut UnboundedReceiver<u32>, n: usize) -> Vec<u32> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(t)) => out.push(t),
            other => panic!("waited for {n} acks, got {out:?} then {other:?}"),
        }
    }
    out.sort();
    out
}

/// `meta.seq_reserved` and `meta.seq_floor` of a closed store, and its
/// log's first seq and end.
fn inspect(dir: &Path) -> (u64, u64, Option<u64>, u64) {
    let s = outbox::inspect::Inspector::open(dir).unwrap();
    let e = s.extent().unwrap();
    (
        s.seq_reserved().unwrap().0,
        s.seq_floor().unwrap().0,
        e.first.map(|f| f.0),
        e.end.0,
    )
}

/// Waits until the truncator has removed every delivered value, so that
/// no truncation (with its own flush) runs while a fault is injected.
async fn settled(ob: &Outbox<u32>) {
    eventually("the truncator empties the log", || {
        ob.meta().unwrap().first_seq.is_none()
    })
    .await;
}

fn records(payloads: &[&str], tokens: std::ops::Range<u32>) -> Vec<(Record, Vec<u32>)> {
    payloads
        .iter()
        .zip(tokens)
        .map(|(p, t)| (rec(p), vec![t]))
        .collect()
}

/// Opens on the outbox's directory after a failure and checks the common
/// ending: the sinks get exactly `expect` (in order), and a new record gets
/// the seq `meta.seq_reserved` named, so no seq handed out before the
/// failure is ever given to another record. Returns the new record's
/// delivery and the reopened sinks' deliveries.
async fn reopen_and_check(dir: &Path, sinks: &[&str], expect: &Got) -> Got {
    assert_eq!(
        fail::list(),
        vec![],
        "every fault is cleared before the reopen"
    );
    let (reserved, ..) = inspect(dir);
    let fresh: Vec<TestSink> = sinks.iter().map(|_| TestSink::new(Behaviour::Ok)).collect();
    let named: Vec<(&str, &TestSink)> = sinks.iter().copied().zip(fresh.iter()).collect();
    let (ob, mut acks) = open_with(dir, OutboxConfig::default(), &named)
        .await
        .expect("the store reopens after the failure");
    let r = ob.dispatch(rec("after"), vec![99]).await.unwrap();
    assert_eq!(
        r.seq.0, reserved,
        "the first record after the reopen takes the reserved seq"
    );
    assert_eq!(acks_n(&mut acks, 1).await, vec![99]);
    let (shut, rest) = close(ob, &mut acks).await;
    assert!(shut.unwrap().drained);
    assert!(rest.is_empty(), "{rest:?}");
    let mut all = expect.clone();
    all.push((r.seq.0, r.delivery_id.to_string(), "after".into()));
    for (n, s) in sinks.iter().zip(&fresh) {
        assert_eq!(&got(s), &all, "sink `{n}` after the reopen");
    }
    all
}

/// Opens with sinks `a` and `b` and has both deliver r0..r2 (tokens 0..3)
/// and release their acks.
async fn three_delivered(
    dir: &Path,
    a: &TestSink,
    b: &TestSink,
) -> (Outbox<u32>, UnboundedReceiver<u32>, Vec<Receipt>) {
    let (ob, mut acks) = open_outbox(dir, &[("a", a), ("b", b)]).await;
    let first = ob
        .dispatch_many(records(&["r0", "r1", "r2"], 0..3))
        .await
        .unwrap();
    assert_eq!(acks_n(&mut acks, 3).await, vec![0, 1, 2]);
    (ob, acks, first)
}

// ------------------------------------------------------------ store::append

/// The insert of a log value fails: the dispatch gets the I/O error, the
/// store then refuses every write, even with the fault gone, and after the
/// reopen nothing of the failed record exists and its seq is never reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_log_insert_fails_the_dispatch_and_its_seq_is_never_reused() {
    let _fs = scenario();
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (TestSink::new(Behaviour::Ok), TestSink::new(Behaviour::Ok));
    let (ob, mut acks, first) = three_delivered(d.path(), &a, &b).await;
    settled(&ob).await;

    fail::cfg("store::append", "return(injected log insert failure)").unwrap();
    let e = ob.dispatch(rec("r3"), vec![3]).await.unwrap_err();
    assert_eq!(io(&e), "injected log insert failure");
    assert_eq!(e.to_string(), "I/O error: injected log insert failure");
    assert!(
        e.into_items().is_none(),
        "failed inside the appender: maybe appended, nothing comes back"
    );
    fail::remove("store::append");
    let e = ob.dispatch(rec("r4"), vec![4]).await.unwrap_err();
    assert_eq!(
        poisoned(&e),
        "I/O error: injected log insert failure",
        "the store refuses writes until reopened, fault gone or not"
    );
    assert_eq!(
        e.into_items(),
        Some(vec![(rec("r4"), vec![4])]),
        "refused before it was sent: the record and token come back"
    );
    assert!(!ob.is_healthy());
    let (shut, rest) = close(ob, &mut acks).await;
    assert!(poisoned(&shut.unwrap_err()).contains("injected log insert failure"));
    assert!(rest.is_empty(), "no token of a failed dispatch: {rest:?}");
    assert_eq!(got(&a), want(&first, &["r0", "r1", "r2"]));
    assert_eq!(got(&b), got(&a));

    let (reserved, _, first_seq, end) = inspect(d.path());
    assert_eq!(
        (first_seq, end),
        (None, 3),
        "nothing of r3 or r4 is in the log"
    );
    assert!(reserved > 3, "seq 3 was reserved before the failure");
    reopen_and_check(d.path(), &["a", "b"], &Vec::new()).await;
}

/// A big dispatch is cut into several values written as one atomic run;
/// when the second value's insert fails, none of the run is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_insert_inside_an_atomic_run_writes_none_of_it() {
    let _fs = scenario();
    let d = tempfile::tempdir().unwrap();
    let a = TestSink::new(Behaviour::Ok);
    // Two 4-byte records per value: a dispatch of 6 spans three values.
    let cfg = OutboxConfig {
        max_value_bytes: 8,
        backlog_value_bytes: 8,
        ..OutboxConfig::default()
    };
    let (ob, mut acks) = open_with(d.path(), cfg, &[("a", &a)]).await.unwrap();
    let first = ob.dispatch(rec("p000"), vec![0]).await.unwrap();
    assert_eq!(acks_n(&mut acks, 1).await, vec![0]);
    settled(&ob).await;

    fail::cfg("store::append", "1*off->return").unwrap();
    let run = ["p001", "p002", "p003", "p004", "p005", "p006"];
    let e = ob.dispatch_many(records(&run, 1..7)).await.unwrap_err();
    assert_eq!(io(&e), "injected log insert failure");
    fail::remove("store::append");
    let (shut, rest) = close(ob, &mut acks).await;
    assert!(shut.is_err());
    assert!(rest.is_empty(), "{rest:?}");

    // The run's first value reached sled, under the run's intent.
    let (reserved, _, first_seq, end) = inspect(d.path());
    assert_eq!((first_seq, end), (Some(1), 3), "p001 and p002 were written");
    let intent = outbox::inspect::Inspector::open(d.path())
        .unwrap()
        .interrupted_write()
        .unwrap();
    assert_eq!(intent, Some(Seq(1)), "the intent names the run");
    reopen_and_check(d.path(), &["a"], &Vec::new()).await;
    assert_eq!(got(&a), want(&[first], &["p000"]));
    // The open undid the run: its reserved seqs are a hole now, never a
    // record (the reopen's check wrote one record above them).
    let s = outbox::inspect::Inspector::open(d.path()).unwrap();
    assert_eq!(s.interrupted_write().unwrap(), None);
    let records: Vec<_> = s.records(Seq(0)).map(|r| r.unwrap().seq.0).collect();
    assert!(
        records.iter().all(|&q| q == 0 || q >= reserved),
        "{records:?} (reserved {reserved})"
    );
}

/// Polls `f` once: a dispatch has then handed its request to the appender
/// and waits for the answer.
async fn queued<F: Future + Unpin>(f: &mut F) {
    let polled = futures::poll!(f);
    assert!(
        matches!(polled, Poll::Pending),
        "the dispatch answered at once"
    );
}

/// One group commit of plain values, the second insert failing: every
/// request of the group gets an error, but the first value reached sled and
/// is delivered after the reopen, with the ids of the seqs it was given;
/// so is the record written just before the group, and the seqs of the rest
/// are never reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partly_written_group_is_delivered_as_far_as_it_reached_sled() {
    let _fs = scenario();
    let d = tempfile::tempdir().unwrap();
    let (a, gate) = TestSink::gated(Behaviour::Ok);
    let cfg = OutboxConfig {
        max_value_bytes: 8,
        backlog_value_bytes: 8,
        ..OutboxConfig::default()
    };
    let (ob, mut acks) = open_with(d.path(), cfg, &[("a", &a)]).await.unwrap();
    let ob = Arc::new(ob);
    let log = ob.log_id();

    // Hold the appender inside the insert of r0's value, so the next six
    // dispatches queue up and are written as one group.
    let (hit_rx, go_tx) = hold_at("store::append");
    let held = {
        let ob = ob.clone();
        tokio::spawn(async move { ob.dispatch(rec("r000"), vec![0]).await })
    };
    tokio::task::spawn_blocking(move || hit_rx.recv().unwrap())
        .await
        .unwrap();
    let mut group: Vec<_> = (1..7u32)
        .map(|i| Box::pin(ob.dispatch(rec(&format!("r{i:03}")), vec![i])))
        .collect();
    for f in &mut group {
        queued(f).await;
    }
    // r0's value goes in (the callback returns); in the group, the first
    // value (r1, r2) is written and the second (r3, r4) fails.
    fail::cfg("store::append", "1*off->return").unwrap();
    go_tx.send(()).unwrap();
    // r0's value went in, but the appender does not wait for its flush:
    // whether that flush ran before the group poisoned the store decides
    // between a receipt and `Poisoned`. Either way r0 is in the log.
    match held.await.unwrap() {
        Ok(r0) => {
            assert_eq!(r0.delivery_id.to_string(), id_of(log, 0));
            println!("r0 was receipted: its flush ran before the poison");
        }
        Err(e) => {
            assert!(
                poisoned(&e).contains("I/O error: injected log insert failure"),
                "{e:?}"
            );
            println!("r0 got {e}");
        }
    }
    let mut errors = Vec::new();
    for f in group {
        errors.push(f.await.unwrap_err());
    }
    assert_eq!(io(&errors[0]), "injected log insert failure");
    for e in &errors[1..] {
        assert_eq!(poisoned(e), "I/O error: injected log insert failure");
    }
    fail::remove("store::append");
    let ob = Arc::into_inner(ob).unwrap();
    let (shut, rest) = close(ob, &mut acks).await;
    assert!(shut.is_err());
    drop(gate);
    assert!(
        rest.is_empty(),
        "the gated sink delivered nothing: {rest:?}"
    );
    assert!(got(&a).is_empty());

    let (_, _, first_seq, end) = inspect(d.path());
    assert_eq!(
        (first_seq, end),
        (Some(0), 3),
        "r0, and r1 and r2 of the group"
    );
    let expect = vec![
        (0, id_of(log, 0), "r000".to_string()),
        (1, id_of(log, 1), "r001".into()),
        (2, id_of(log, 2), "r002".into()),
    ];
    reopen_and_check(d.path(), &["a"], &expect).await;
}

// ------------------------------------------------------------- store::flush

/// The flush of a sink's offset fails: its ack is not released, the store
/// refuses writes, and it reopens with every receipted record delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_flush_releases_no_ack_and_refuses_writes() {
    let _fs = scenario();
    let d = tempfile::tempdir().unwrap();
    let a = TestSink::new(Behaviour::Ok);
    let (b, gate) = TestSink::gated(Behaviour::Ok);
    let (ob, mut acks) = open_outbox(d.path(), &[("a", &a), ("b", &b)]).await;
    let receipts = ob
        .dispatch_many(records(&["r0", "r1", "r2"], 0..3))
        .await
        .unwrap();
    eventually("a commits durably", || {
        ob.status().unwrap().sinks[0].offset == 3
    })
    .await;

    fail::cfg("store::flush", "return(injected flush failure)").unwrap();
    gate.send(true).unwrap();
    eventually("b delivers and its flush fails", || {
        got(&b).len() == 3 && !ob.is_healthy()
    })
    .await;
    assert_eq!(
        acks.try_recv(),
        Err(TryRecvError::Empty),
        "b's offset never became durable: no ack"
    );
    assert_eq!(ob.status().unwrap().sinks[1].offset, 0);
    let e = ob.dispatch(rec("r3"), vec![3]).await.unwrap_err();
    assert_eq!(poisoned(&e), "flush: injected flush failure");
    fail::remove("store::flush");
    let e = ob.dispatch(rec("r4"), vec![4]).await.unwrap_err();
    assert_eq!(poisoned(&e), "flush: injected flush failure");
    let (shut, rest) = close(ob, &mut acks).await;
    assert!(shut.is_err());
    assert!(rest.is_empty(), "{rest:?}");
    let expect = want(&receipts, &["r0", "r1", "r2"]);
    assert_eq!(got(&a), expect);
    assert_eq!(got(&b), expect);

    // b's offset was in sled when the flush failed; sled wrote it when the
    // store was dropped, so b does not get r0..r2 again.
    reopen_and_check(d.path(), &["a", "b"], &Vec::new()).await;
}

/// Opens with one sink `a`, delivers r0 and waits until the log is empty,
/// then makes `point` fail once with "injected `what` failure": r1's
/// dispatch gets `Poisoned` with the I/O error, r2's names `what` though
/// the one-shot fault is spent, and r1, which had reached sled, is
/// delivered with its id after the reopen.
async fn a_failed_sync_poisons_once(point: &str, what: &str) {
    let d = tempfile::tempdir().unwrap();
    let a = TestSink::new(Behaviour::Ok);
    let (ob, mut acks) = open_outbox(d.path(), &[("a", &a)]).await;
    let log = ob.log_id();
    let r0 = ob.dispatch(rec("r0"), vec![0]).await.unwrap();
    assert_eq!(acks_n(&mut acks, 1).await, vec![0]);
    settled(&ob).await;

    fail::cfg(point, &format!("1*return(injected {what} failure)")).unwrap();
    let e = ob.dispatch(rec("r1"), vec![1]).await.unwrap_err();
    assert_eq!(poisoned(&e), format!("I/O error: injected {what} failure"));
    let e = ob.dispatch(rec("r2"), vec![2]).await.unwrap_err();
    assert_eq!(
        poisoned(&e),
        format!("{what}: injected {what} failure"),
        "the one-shot fault is spent, and still the store refuses"
    );
    assert!(!ob.is_healthy());
    fail::remove(point);
    let (shut, rest) = close(ob, &mut acks).await;
    assert!(shut.is_err());
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(got(&a), want(&[r0], &["r0"]), "r1 was never published");

    reopen_and_check(d.path(), &["a"], &vec![(1, id_of(log, 1), "r1".into())]).await;
}

/// The group commit of a dispatch fails: the dispatcher gets `Poisoned`,
/// and the record, which had reached sled, is delivered after the reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_group_commit_fails_the_dispatch_and_the_record_is_delivered_after_reopen() {
    let _fs = scenario();
    a_failed_sync_poisons_once("store::flush", "flush").await;
}

// ------------------------------------------------------------- store::fsync

/// An fsync of the `full` policy fails: the dispatch gets `Poisoned`, the
/// fsync is never retried as if it had worked (the next dispatch is refused
/// though the fault is spent), and the record is delivered after the
/// reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_fsync_poisons_and_is_never_retried() {
    let _fs = scenario();
    a_failed_sync_poisons_once("store::fsync", "fsync").await;
}

// ----------------------------------------------------- store::commit_offset

/// The offset transaction fails after a sink delivered: the workers stop,
/// no ack is released, and after the reopen the records are delivered
/// again with the same delivery ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_offset_commit_redelivers_with_the_same_ids() {
    let _fs = scenario();
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (TestSink::new(Behaviour::Ok), TestSink::new(Behaviour::Ok));
    let (ob, mut acks, first) = three_delivered(d.path(), &a, &b).await;

    fail::cfg("store::commit_offset", "return(injected offset failure)").unwrap();
    let second = ob
        .dispatch_many(records(&["r3", "r4", "r5"], 3..6))
        .await
        .expect("appending is not the offset transaction");
    eventually("a sink delivers and its commit fails", || {
        (got(&a).len() == 6 || got(&b).len() == 6) && !ob.is_healthy()
    })
    .await;
    let st = ob.status().unwrap();
    assert_eq!((st.sinks[0].offset, st.sinks[1].offset), (3, 3));
    let e = ob.dispatch(rec("r6"), vec![6]).await.unwrap_err();
    assert_eq!(poisoned(&e), "I/O error: injected offset failure");
    fail::remove("store::commit_offset");
    let (shut, rest) = close(ob, &mut acks).await;
    assert!(shut.is_err());
    assert!(rest.is_empty(), "no ack past the durable offsets: {rest:?}");

    let again = want(&second, &["r3", "r4", "r5"]);
    reopen_and_check(d.path(), &["a", "b"], &again).await;
    let all = [want(&first, &["r0", "r1", "r2"]), again.clone()].concat();
    for s in [&a, &b] {
        let g = got(s);
        assert!(
            g == want(&first, &["r0", "r1", "r2"]) || g == all,
            "before the failure a sink got r0..r2, and r3..r5 at most once: {g:?}"
        );
    }
}

/// The offset and the DLQ entries of a run go in one transaction; when it
/// fails neither is written, and after the reopen the record is dead-lettered
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_offset_and_dlq_transaction_writes_neither() {
    let _fs = scenario();
    let d = tempfile::tempdir().unwrap();
    let p = TestSink::new(Behaviour::AlwaysPermanent);
    let (ob, mut acks) = open_outbox(d.path(), &[("p", &p)]).await;
    fail::cfg("store::commit_offset", "return").unwrap();
    let r0 = ob.dispatch(rec("r0"), vec![0]).await.unwrap();
    eventually("p rejects r0 and the commit fails", || {
        p.attempts() == 1 && !ob.is_healthy()
    })
    .await;
    assert!(ob.dlq_list(None).unwrap().is_empty());
    let e = ob.dispatch(rec("r1"), vec![1]).await.unwrap_err();
    assert_eq!(
        poisoned(&e),
        "I/O error: injected offset transaction failure"
    );
    let (shut, rest) = close(ob, &mut acks).await;
    assert!(shut.is_err());
    assert!(rest.is_empty(), "{rest:?}");
    fail::remove("store::commit_offset");

    let p2 = TestSink::new(Behaviour::AlwaysPermanent);
    let (ob, mut acks) = open_outbox(d.path(), &[("p", &p2)]).await;
    eventually(
        "r0 is dead-lettered again, and p passes the hole after it",
        || {
            let st = ob.status().unwrap();
            st.sinks[0].offset == st.head
        },
    )
    .await;
    let dlq = ob.dlq_list(None).unwrap();
    let dead_lettered: Vec<(&str, u64, u64, &[u8], u32)> = dlq
        .iter()
        .map(|e| {
            (
                e.sink.as_str(),
                e.seq.0,
                e.delivery_id.seq.0,
                e.record.payload.as_slice(),
                e.attempts,
            )
        })
        .collect();
    assert_eq!(
        dead_lettered,
        vec![("p", r0.seq.0, r0.seq.0, &b"r0"[..], 1)]
    );
    let seen: Vec<(u64, String, bool)> = p2
        .seen
        .lock()
        .iter()
        .map(|s| (s.seq, s.id.clone(), s.ok))
        .collect();
    assert_eq!(seen, vec![(0, r0.delivery_id.to_string(), false)]);
    let (shut, rest) = close(ob, &mut acks).await;
    assert!(shut.unwrap().drained);
    assert!(rest.is_empty());
}

// ----------------------------------------------------------- store::witness

/// The witness file cannot be written after a flush: that flush stands, the
/// store refuses further writes, and every receipted record is delivered
/// after the reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_witness_write_poisons_after_the_flush_it_follows() {
    let _fs = scenario();
    let d = tempfile::tempdir().unwrap();
    let (a, gate) = TestSink::gated(Behaviour::Ok);
    let (ob, mut acks) = open_outbox(d.path(), &[("a", &a)]).await;
    let receipts = ob
        .dispatch_many(records(&["r0", "r1", "r2"], 0..3))
        .await
        .unwrap();

    fail::cfg("store::witness", "return(injected witness failure)").unwrap();
    // The flusher rewrites the witness after a flush at most once a second;
    // an empty purge asks for a flush and writes nothing.
    let mut flushes = 0;
    let refused = loop {
        match ob.dlq_purge(&name("a"), None).await {
            Ok(0) => flushes += 1,
            Ok(n) => panic!("purged {n} entries of an empty DLQ"),
            Err(e) => break e,
        }
        assert!(flushes < 200, "the witness was not rewritten in 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(poisoned(&refused), "witness file: injected witness failure");
    let e = ob.dispatch(rec("r3"), vec![3]).await.unwrap_err();
    assert_eq!(poisoned(&e), "witness file: injected witness failure");
    gate.send(true).unwrap();
    eventually("a delivers, and its commit is refused", || {
        got(&a).len() == 3
    })
    .await;
    let (shut, rest) = close(ob, &mut acks).await;
    assert!(shut.is_err());
    assert!(rest.is_empty(), "{rest:?}");
    fail::remove("store::witness");

    let expect = want(&receipts, &["r0", "r1", "r2"]);
    assert_eq!(got(&a), expect);
    reopen_and_check(d.path(), &["a"], &expect).await;
}

// ---------------------------------------------------------- store::truncate

/// Truncation fails at `point`: the store refuses writes, the delivered
/// records stay in the log (with the floor raised or not), and the store
/// reopens with nothing redelivered and truncation done.
async fn truncation_fails_at(point: &str, floor_after: u64) {
    let d = tempfile::tempdir().unwrap();
    let a = TestSink::new(Behaviour::Ok);
    let (ob, mut acks) = open_outbox(d.path(), &[("a", &a)]).await;
    fail::cfg(point, "return(injected truncation failure)").unwrap();
    // One request, one value, one commit: truncation runs only after the
    // offset past all three is durable, and their acks are released.
    let receipts = ob
        .dispatch_many(records(&["r0", "r1", "r2"], 0..3))
        .await
        .unwrap();
    assert_eq!(acks_n(&mut acks, 3).await, vec![0, 1, 2]);
    eventually("truncation fails", || !ob.is_healthy()).await;
    let e = ob.dispatch(rec("r3"), vec![3]).await.unwrap_err();
    assert_eq!(poisoned(&e), "I/O error: injected truncation failure");
    let (shut, rest) = close(ob, &mut acks).await;
    assert!(shut.is_err());
    assert!(rest.is_empty(), "{rest:?}");
    fail::remove(point);
    assert_eq!(got(&a), want(&receipts, &["r0", "r1", "r2"]));

    let (_, floor, first, end) = inspect(d.path());
    assert_eq!(
        (floor, first, end),
        (floor_after, Some(0), 3),
        "the delivered value is still in the log"
    );
    reopen_and_check(d.path(), &["a"], &Vec::new()).await;

    let a2 = TestSink::new(Behaviour::Ok);
    let (ob, mut acks) = open_outbox(d.path(), &[("a", &a2)]).await;
    eventually("truncation resumes and empties the log", || {
        ob.meta().unwrap().first_seq.is_none()
    })
    .await;
    let (shut, _) = close(ob, &mut acks).await;
    assert!(shut.unwrap().drained);
    assert!(got(&a2).is_empty(), "nothing is delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_truncation_failing_before_its_floor_keeps_the_log() {
    let _fs = scenario();
    truncation_fails_at("store::truncate::floor", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_truncation_failing_after_its_floor_keeps_the_log_and_the_floor() {
    let _fs = scenario();
    truncation_fails_at("store::truncate::remove", 3).await;
}

// --------------------------------------------------------------- at open

/// Each write an open makes fails in turn (the fsync of `full`, the hole
/// for reserved seqs, a new sink's offset, the last flush): the open
/// returns the I/O error, and the next open succeeds and delivers every
/// receipted record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_write_at_open_fails_the_open_and_the_next_open_succeeds() {
    let _fs = scenario();
    let d = tempfile::tempdir().unwrap();
    let (a, _gate) = TestSink::gated(Behaviour::Ok);
    let (ob, _acks) = open_outbox(d.path(), &[("a", &a)]).await;
    let receipts = ob
        .dispatch_many(records(&["r0", "r1", "r2"], 0..3))
        .await
        .unwrap();
    // No shutdown: the reservation beyond seq 3 stays, so the next open
    // writes a hole for it.
    abandon(ob, d.path()).await;

    let dir = d.path().display().to_string();
    let b = TestSink::new(Behaviour::Ok);
    for (point, says) in [
        (
            "store::fsync",
            format!("fsync of {dir}: injected fsync failure"),
        ),
        ("store::append", "injected log insert failure".into()),
        (
            "store::commit_offset",
            "injected offset transaction failure".into(),
        ),
        ("store::flush", "injected flush failure".into()),
    ] {
        fail::cfg(point, "return").unwrap();
        let a = TestSink::new(Behaviour::Ok);
        let e = open_with::<u32>(d.path(), OutboxConfig::default(), &[("a", &a), ("b", &b)])
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(io(&e), says, "open with {point} failing");
        fail::remove(point);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while outbox::inspect::is_locked(d.path()) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    reopen_and_check(d.path(), &["a"], &want(&receipts, &["r0", "r1", "r2"])).await;
}

// --------------------------------------------------------- sink::file::*

/// A sink that records each successful delivery and hands everything to
/// the sink it wraps.
struct Recorded<S> {
    inner: S,
    seen: Arc<Mutex<Got>>,
}

impl<S: Sink> Sink for Recorded<S> {
    fn deliver<'a>(
        &'a self,
        record: &'a Record,
        ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        Box::pin(async move {
            let r = self.inner.deliver(record, ctx).await;
            if r.is_ok() {
                self.seen.lock().push((
                    ctx.seq.0,
                    ctx.delivery_id.to_string(),
                    String::from_utf8(record.payload.clone()).unwrap(),
                ));
            }
            r
        })
    }
    fn commit(&self) -> BoxFuture<'_, DeliveryResult> {
        self.inner.commit()
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

fn lines(n: std::ops::Range<u32>) -> String {
    n.map(|i| format!("r{i}\n")).collect()
}

/// The file sink alone: a failed commit answers a transient error naming
/// the file, cuts the file back to its last good commit and forgets what
/// was delivered since, so the redelivery writes each line once.
async fn file_commit_fails_at(point: &str, says: &str) {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("out.ndjson");
    let sink = FileSink::open(&path).await.unwrap();
    let sink_name = name("file");
    let deliver = |i: u32| {
        let r = rec(&format!("r{i}"));
        let sink = &sink;
        let sink_name = &sink_name;
        async move {
            let ctx = DeliveryContext {
                sink: sink_name,
                seq: Seq(i.into()),
                delivery_id: DeliveryId {
                    log_id: Uuid::nil(),
                    seq: Seq(i.into()),
                },
                attempt: 1,
            };
            sink.deliver(&r, &ctx).await.unwrap();
        }
    };
    for i in 0..2 {
        deliver(i).await;
    }
    sink.commit().await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), lines(0..2));

    fail::cfg(point, "return").unwrap();
    for i in 2..4 {
        deliver(i).await;
    }
    let e = sink.commit().await.unwrap_err();
    assert_eq!(
        e,
        DeliveryError::transient(format!("file {}: {says}", path.display()))
    );
    assert!(e.is_transient(), "the worker delivers the run again");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        lines(0..2),
        "cut back to the last good commit"
    );
    fail::remove(point);
    sink.commit().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        lines(0..2),
        "what was delivered since the last good commit is forgotten"
    );
    for i in 2..4 {
        deliver(i).await;
    }
    sink.commit().await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), lines(0..4));
}

/// The file sink under the engine: while its commits fail nothing is
/// acknowledged and its offset stays; once the fault clears every record is
/// in the file once, with its ids, and acknowledged.
async fn file_sink_recovers_at(point: &str) {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("out.ndjson");
    let seen = Arc::new(Mutex::new(Got::new()));
    let sink = Recorded {
        inner: FileSink::open(&path).await.unwrap(),
        seen: seen.clone(),
    };
    let (ob, mut acks) = Outbox::<u32>::builder(d.path().join("data"))
        .sink("file", sink, fast())
        .open()
        .await
        .unwrap();
    let before = ob
        .dispatch_many(records(&["r0", "r1"], 0..2))
        .await
        .unwrap();
    assert_eq!(acks_n(&mut acks, 2).await, vec![0, 1]);

    fail::cfg(point, "return").unwrap();
    let during = ob
        .dispatch_many(records(&["r2", "r3", "r4"], 2..5))
        .await
        .unwrap();
    eventually("three failed commits", || {
        ob.status().unwrap().sinks[0].retries >= 3
    })
    .await;
    assert_eq!(ob.status().unwrap().sinks[0].offset, 2);
    assert_eq!(acks.try_recv(), Err(TryRecvError::Empty));
    assert!(
        ob.is_healthy(),
        "a sink's failure does not poison the store"
    );
    fail::remove(point);
    assert_eq!(acks_n(&mut acks, 3).await, vec![2, 3, 4]);
    let retries = ob.status().unwrap().sinks[0].retries;
    let (shut, rest) = close(ob, &mut acks).await;
    assert!(shut.unwrap().drained);
    assert!(rest.is_empty());

    assert_eq!(std::fs::read_to_string(&path).unwrap(), lines(0..5));
    let all = [
        want(&before, &["r0", "r1"]),
        want(&during, &["r2", "r3", "r4"]),
    ]
    .concat();
    let seen = seen.lock().clone();
    let mut first = Got::new();
    for s in &seen {
        assert!(all.contains(s), "a delivery with another id or seq: {s:?}");
        if !first.contains(s) {
            first.push(s.clone());
        }
    }
    assert_eq!(first, all);
    println!(
        "{point}: {} records, {retries} failed commits, {} deliveries",
        all.len(),
        seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_file_write_is_cut_back_and_redelivered_once() {
    let _fs = scenario();
    file_commit_fails_at("sink::file::write", "injected file write failure").await;
    file_sink_recovers_at("sink::file::write").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_file_fsync_is_cut_back_and_redelivered_once() {
    let _fs = scenario();
    file_commit_fails_at("sink::file::fsync", "injected file fsync failure").await;
    file_sink_recovers_at("sink::file::fsync").await;
}

/// A flusher thread that cannot be started fails the open with a clear
/// error at once (it once was discarded, and every dispatch then waited
/// forever); nothing is left locked, and the next open works.
#[tokio::test]
async fn a_flusher_that_cannot_start_fails_the_open_instead_of_hanging() {
    let _fs = scenario();
    let d = tempfile::tempdir().unwrap();
    let sink = TestSink::new(Behaviour::Ok);
    fail::cfg(
        "store::flusher_spawn",
        "return(Resource temporarily unavailable)",
    )
    .unwrap();
    let opened = tokio::time::timeout(
        Duration::from_secs(10),
        open_with::<u32>(d.path(), OutboxConfig::default(), &[("s", &sink)]),
    )
    .await
    .expect("the open returns instead of hanging");
    match opened {
        Err(Error::Store(StoreError::Io(e))) => assert!(
            e.to_string()
                .contains("cannot start the flusher thread: Resource temporarily unavailable"),
            "{e}"
        ),
        Err(e) => panic!("expected an I/O error naming the flusher, got {e}"),
        Ok(_) => panic!("the open succeeded without a flusher"),
    }
    fail::remove("store::flusher_spawn");
    let (ob, mut acks) = open_with(d.path(), OutboxConfig::default(), &[("s", &sink)])
        .await
        .expect("the next open works");
    let r = ob.dispatch(rec("after"), vec![1]).await.unwrap();
    assert_eq!(acks_n(&mut acks, 1).await, vec![1]);
    assert_eq!(sink.delivered_ids(), vec![r.delivery_id.to_string()]);
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Holds each hit of the failpoint `point` until the returned sender sends
/// (or drops), and returns a receiver that gets one message per hit.
fn hold_at(point: &str) -> (std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<()>) {
    let (hit_tx, hit_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (hit_tx, go_rx) = (Mutex::new(hit_tx), Mutex::new(go_rx));
    fail::cfg_callback(point, move || {
        let _ = hit_tx.lock().send(());
        let _ = go_rx.lock().recv();
    })
    .unwrap();
    (hit_rx, go_tx)
}

/// A write path held inside one operation is reported by `stalled` (and
/// only past the limit it is asked about), names what is held, and clears
/// once the operation returns; the record then goes through with its ack.
async fn a_held_write_path_is_reported_as_stalled(point: &str, what: &str, past_the_limit: bool) {
    let _fs = scenario();
    let d = tempfile::tempdir().unwrap();
    let a = TestSink::new(Behaviour::Ok);
    let (ob, mut acks) = open_outbox::<u32>(d.path(), &[("a", &a)]).await;
    let ob = Arc::new(ob);
    ob.dispatch(rec("before"), vec![0]).await.unwrap();
    assert_eq!(acks_n(&mut acks, 1).await, vec![0]);
    settled(&ob).await;
    assert_eq!(
        ob.stalled(Duration::from_millis(100)),
        None,
        "nothing is in progress"
    );

    let (hit, go) = hold_at(point);
    let held = {
        let ob = ob.clone();
        tokio::spawn(async move { ob.dispatch(rec("held"), vec![1]).await })
    };
    tokio::task::spawn_blocking(move || hit.recv().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let why = ob
        .stalled(Duration::from_millis(200))
        .expect("held for 300 ms: stalled past 200 ms");
    assert!(why.contains(what), "{why}");
    assert!(why.contains("nothing accepted is lost"), "{why}");
    assert_eq!(
        ob.stalled(Duration::from_secs(3600)),
        None,
        "not past an hour"
    );
    assert!(ob.is_healthy(), "30 s have not passed: {why}");
    if past_the_limit {
        tokio::time::sleep(Outbox::<u32>::STALL_AFTER).await;
        assert!(!ob.is_healthy(), "held for over 30 s");
    }

    // No new hit waits from here on, and every waiting one returns.
    fail::remove(point);
    drop(go);
    let r = held.await.unwrap().unwrap();
    assert_eq!(r.seq, Seq(1));
    assert_eq!(acks_n(&mut acks, 1).await, vec![1]);
    eventually("the stall clears", || ob.stalled(Duration::ZERO).is_none()).await;
    assert!(ob.is_healthy());
    assert_eq!(a.delivered(), vec![b"before".to_vec(), b"held".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_that_does_not_return_is_reported_as_stalled() {
    a_held_write_path_is_reported_as_stalled(
        "store::append",
        "the appender has been in one write to the log",
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flush_that_does_not_return_is_reported_as_stalled() {
    a_held_write_path_is_reported_as_stalled(
        "store::flush",
        "the group commit's flush has been running",
        false,
    )
    .await;
}
