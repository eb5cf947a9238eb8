//! The dispatch API's failures: what comes back when nothing was appended
//! (`DispatchError`), and `try_dispatch*`, which never waits for room.

mod common;

use std::time::Duration;

use common::*;
use outbox::{DispatchError, DispatchErrorKind, Error, OutboxConfig, Record, Seq};

/// A token type without `Debug`, `Clone` or `PartialEq`.
struct Opaque(u32);

fn small_records() -> OutboxConfig {
    OutboxConfig {
        max_record_bytes: 64,
        ..OutboxConfig::default()
    }
}

#[tokio::test]
async fn an_oversize_record_comes_back_byte_identical_with_its_tokens() {
    let d = dir();
    let sink = TestSink::new(Behaviour::Ok);
    let (ob, _acks) = open_with::<u32>(d.path(), small_records(), &[("s", &sink)])
        .await
        .unwrap();
    let ok = rec("small").with_header("h", "v");
    let big = Record::new(vec![0xAB; 100]).with_header("content-type", "application/x");
    let e = ob
        .dispatch_many(vec![(ok.clone(), vec![1, 2]), (big.clone(), vec![3])])
        .await
        .unwrap_err();
    assert!(matches!(e.kind(), DispatchErrorKind::Rejected(_)), "{e}");
    assert!(e.to_string().contains("record 1 is"), "{e}");
    assert!(!e.is_transient() && !e.is_corruption());
    let back = e
        .into_items()
        .expect("nothing appended: the items come back");
    assert_eq!(back, vec![(ok, vec![1, 2]), (big.clone(), vec![3])]);

    let e = ob.dispatch(big.clone(), vec![4]).await.unwrap_err();
    assert_eq!(e.into_items(), Some(vec![(big, vec![4])]));
    // Nothing was appended: the next record takes seq 0.
    let r = ob.dispatch(rec("next"), vec![]).await.unwrap();
    assert_eq!(r.seq, Seq(0));
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(sink.delivered(), vec![b"next".to_vec()]);
}

#[tokio::test]
async fn after_shutdown_the_items_come_back_with_shutting_down() {
    let d = dir();
    let sink = TestSink::new(Behaviour::Ok);
    let (ob, mut acks) = open_outbox::<u32>(d.path(), &[("s", &sink)]).await;
    ob.clone().shutdown(Duration::from_secs(5)).await.unwrap();
    let e = ob.dispatch(rec("late"), vec![7]).await.unwrap_err();
    assert!(matches!(e.kind(), DispatchErrorKind::ShuttingDown), "{e}");
    assert_eq!(e.into_items(), Some(vec![(rec("late"), vec![7])]));
    let e = ob
        .dispatch_once("k", vec![(rec("a"), vec![8]), (rec("b"), vec![])])
        .await
        .unwrap_err();
    assert!(matches!(e.kind(), DispatchErrorKind::ShuttingDown), "{e}");
    assert_eq!(
        e.into_items(),
        Some(vec![(rec("a"), vec![8]), (rec("b"), vec![])])
    );
    assert_eq!(acks.recv().await, None, "no token was released");
    assert!(sink.delivered().is_empty());
}

#[tokio::test]
async fn a_dispatch_error_unwraps_and_converts_without_debug_tokens() {
    let d = dir();
    let sink = TestSink::new(Behaviour::Ok);
    let (ob, _acks) = open_with::<Opaque>(d.path(), small_records(), &[("s", &sink)])
        .await
        .unwrap();
    // `unwrap` needs `DispatchError<Opaque>: Debug`, which needs no
    // `Opaque: Debug`.
    let r = ob.dispatch(rec("a"), vec![Opaque(1)]).await.unwrap();
    assert_eq!(r.seq, Seq(0));
    let e = ob
        .dispatch(Record::new(vec![0; 100]), vec![Opaque(2), Opaque(3)])
        .await
        .unwrap_err();
    assert_eq!(
        format!("{e:?}"),
        format!(
            "DispatchError {{ kind: {:?}, items_returned: 1 }}",
            e.kind()
        )
    );
    let source = std::error::Error::source(&e).map(|s| s.to_string());
    assert_eq!(source, Some(e.to_string()));
    let tokens: Vec<u32> = e
        .into_items()
        .unwrap()
        .remove(0)
        .1
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(tokens, vec![2, 3]);

    async fn with_question_mark(ob: &outbox::Outbox<Opaque>) -> outbox::Result<Seq> {
        Ok(ob.dispatch(Record::new(vec![0; 100]), vec![]).await?.seq)
    }
    assert!(matches!(
        with_question_mark(&ob).await,
        Err(Error::Dispatch(DispatchErrorKind::Rejected(_)))
    ));
    let _: fn(DispatchError<Opaque>) -> Error = Error::from;
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

fn name(s: &str) -> outbox::SinkName {
    outbox::SinkName::new(s).unwrap()
}

#[tokio::test]
async fn try_dispatch_with_a_full_block_sink_answers_at_once_and_succeeds_once_it_drains() {
    let d = dir();
    let (slow, gate) = TestSink::gated(Behaviour::Ok);
    let cfg = outbox::SinkConfig {
        max_lag_records: Some(2),
        ..fast()
    };
    let (ob, mut acks) = outbox::Outbox::<u32>::builder(d.path())
        .sink("slow", slow.clone(), cfg)
        .open()
        .await
        .unwrap();
    ob.dispatch(rec("0"), vec![0]).await.unwrap();
    ob.dispatch(rec("1"), vec![1]).await.unwrap();
    assert_eq!(ob.full_sink(), Some(name("slow")));

    let started = std::time::Instant::now();
    let e = ob.try_dispatch(rec("2"), vec![2]).unwrap_err();
    let e2 = ob
        .try_dispatch_many(vec![(rec("2"), vec![2]), (rec("3"), vec![3])])
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(
        slow.delivered().is_empty(),
        "answered without sink progress"
    );
    assert!(
        matches!(e.kind(), DispatchErrorKind::Full { sink } if *sink == name("slow")),
        "{e}"
    );
    assert!(e.is_transient());
    assert!(e.to_string().contains("slow"), "{e}");
    assert_eq!(e.into_items(), Some(vec![(rec("2"), vec![2])]));
    assert!(matches!(e2.kind(), DispatchErrorKind::Full { .. }), "{e2}");
    assert_eq!(
        e2.into_items(),
        Some(vec![(rec("2"), vec![2]), (rec("3"), vec![3])])
    );

    gate.send(true).unwrap();
    eventually("the sink drains", || ob.full_sink().is_none()).await;
    let fut = ob.try_dispatch(rec("2"), vec![2]).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("durable")
        .unwrap();
    assert_eq!(r.seq, Seq(2), "nothing of the refused calls was appended");
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        slow.delivered(),
        vec![b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]
    );
    let mut got = Vec::new();
    while let Ok(t) = acks.try_recv() {
        got.push(t);
    }
    assert_eq!(
        got,
        vec![0, 1, 2],
        "each token once, none of a refused call"
    );
}

#[tokio::test]
async fn the_receipt_future_resolves_to_what_dispatch_gives() {
    let d = dir();
    // Held: a delivered record may be truncated away before `read_log`.
    let (sink, gate) = TestSink::gated(Behaviour::Ok);
    let (ob, _acks) = open_outbox::<u32>(d.path(), &[("s", &sink)]).await;
    let given = outbox::DeliveryId {
        log_id: uuid::Uuid::from_u128(7),
        seq: Seq(99),
    };
    let fut = ob
        .try_dispatch_many(vec![
            (rec("a"), vec![1]),
            (rec("b").with_delivery_id(given), vec![2]),
        ])
        .unwrap();
    let many = fut.await.unwrap();
    let one = ob.try_dispatch(rec("c"), vec![3]).unwrap().await.unwrap();
    let by_dispatch = ob.dispatch(rec("d"), vec![4]).await.unwrap();
    let log_id = ob.log_id();
    let id = |seq| outbox::DeliveryId {
        log_id,
        seq: Seq(seq),
    };
    assert_eq!(
        many.iter()
            .map(|r| (r.seq, r.delivery_id))
            .collect::<Vec<_>>(),
        vec![(Seq(0), id(0)), (Seq(1), given)]
    );
    assert_eq!((one.seq, one.delivery_id), (Seq(2), id(2)));
    assert_eq!((by_dispatch.seq, by_dispatch.delivery_id), (Seq(3), id(3)));
    let logged: Vec<_> = ob
        .read_log(Seq(0), 10)
        .unwrap()
        .into_iter()
        .map(|l| (l.seq, l.delivery_id))
        .collect();
    assert_eq!(
        logged,
        vec![
            (Seq(0), id(0)),
            (Seq(1), given),
            (Seq(2), id(2)),
            (Seq(3), id(3))
        ]
    );
    assert!(
        ob.try_dispatch_many(vec![])
            .unwrap()
            .await
            .unwrap()
            .is_empty()
    );
    gate.send(true).unwrap();
    assert!(ob.shutdown(Duration::from_secs(5)).await.unwrap().drained);
    assert_eq!(
        sink.delivered(),
        [&b"a"[..], b"b", b"c", b"d"],
        "delivered once the gate opened"
    );
}

#[tokio::test]
async fn a_dropped_receipt_future_still_appends_delivers_and_acks() {
    let d = dir();
    let sink = TestSink::new(Behaviour::Ok);
    let (ob, mut acks) = open_outbox::<u32>(d.path(), &[("s", &sink)]).await;
    drop(ob.try_dispatch(rec("dropped"), vec![5]).unwrap());
    assert_eq!(acks.recv().await, Some(5));
    assert_eq!(sink.delivered(), vec![b"dropped".to_vec()]);
    let r = ob.dispatch(rec("next"), vec![]).await.unwrap();
    assert_eq!(r.seq, Seq(1));
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn try_dispatch_after_shutdown_hands_the_items_back() {
    let d = dir();
    let sink = TestSink::new(Behaviour::Ok);
    let (ob, _acks) = open_outbox::<u32>(d.path(), &[("s", &sink)]).await;
    ob.clone().shutdown(Duration::from_secs(5)).await.unwrap();
    let e = ob.try_dispatch(rec("late"), vec![1]).unwrap_err();
    assert!(matches!(e.kind(), DispatchErrorKind::ShuttingDown), "{e}");
    assert_eq!(e.into_items(), Some(vec![(rec("late"), vec![1])]));
    let e = ob
        .try_dispatch_once("k", vec![(rec("x"), vec![2])])
        .unwrap_err();
    assert!(matches!(e.kind(), DispatchErrorKind::ShuttingDown), "{e}");
    assert_eq!(e.into_items(), Some(vec![(rec("x"), vec![2])]));
}

#[tokio::test]
async fn try_dispatch_once_resolves_duplicates_and_hands_a_reused_key_back() {
    let d = dir();
    let sink = TestSink::new(Behaviour::Ok);
    let (ob, _acks) = open_outbox::<u32>(d.path(), &[("s", &sink)]).await;
    let first = ob
        .try_dispatch_once("k", vec![(rec("a"), vec![])])
        .unwrap()
        .await
        .unwrap();
    assert!(!first.duplicate);
    let again = ob
        .try_dispatch_once("k", vec![(rec("a"), vec![])])
        .unwrap()
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.receipts, first.receipts);
    // A reused key is found by the appender: the future hands it back.
    let e = ob
        .try_dispatch_once("k", vec![(rec("other"), vec![9])])
        .unwrap()
        .await
        .unwrap_err();
    assert!(matches!(e.kind(), DispatchErrorKind::KeyReused(_)), "{e}");
    assert_eq!(e.into_items(), Some(vec![(rec("other"), vec![9])]));
    // A bad key is refused at once.
    let e = ob
        .try_dispatch_once("", vec![(rec("y"), vec![1])])
        .unwrap_err();
    assert!(matches!(e.kind(), DispatchErrorKind::Rejected(_)), "{e}");
    assert_eq!(e.into_items(), Some(vec![(rec("y"), vec![1])]));
    assert_eq!(ob.status().unwrap().head, 1, "one record appended");
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}
