//! Sinks that panic (in `deliver` and in `commit`) or hang forever (cut off
//! at the drain timeout).

use std::time::Duration;

use crate::common::*;
use outbox::sink::{BoxFuture, DeliveryContext, DeliveryResult, Sink};
use outbox::{Outbox, Record, SinkName};

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
async fn a_sink_that_panics_in_deliver_dead_letters_the_record_and_loses_nothing() {
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
        vec![ids[1].seq, ids[3].seq]
    );
    assert!(dl.iter().all(|e| e.error.contains("sink panicked")));
    ob.shutdown(Duration::from_secs(5)).await.unwrap();

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
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
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
        st.sinks[0].offset,
        st.head,
        sink.inner.delivered()
    );
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
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
            .dispatch_many(numbered(5, |i| format!("h{i}")))
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
            ob.shutdown(Duration::from_millis(300)),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("in_commit={in_commit}: shutdown(300 ms) still running after 10 s")
        })
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
        ob.shutdown(Duration::from_secs(5)).await.unwrap();
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
