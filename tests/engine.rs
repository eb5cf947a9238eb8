//! End-to-end tests of the engine on a real sled directory.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use outbox::{OnFull, Outbox, OutboxConfig, Record, Seq, SinkConfig, SinkName, Start};

fn name(s: &str) -> SinkName {
    SinkName::new(s).unwrap()
}

#[tokio::test]
async fn delivers_in_order_and_acks_each_token_once() {
    let d = dir();
    let a = TestSink::new(Behaviour::Ok);
    let b = TestSink::new(Behaviour::Ok);
    let (ob, mut acks) = open_outbox::<u32>(d.path(), &[("a", &a), ("b", &b)]).await;
    let mut receipts = Vec::new();
    for i in 0..100u32 {
        receipts.push(ob.dispatch(rec(&format!("r{i}")), vec![i]).await.unwrap());
    }
    let seqs: Vec<u64> = receipts.iter().map(|r| r.seq.0).collect();
    assert_eq!(seqs, (0..100).collect::<Vec<_>>());
    let report = ob.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.drained, "{report:?}");
    let want: Vec<Vec<u8>> = (0..100).map(|i| format!("r{i}").into_bytes()).collect();
    assert_eq!(a.delivered(), want);
    assert_eq!(b.delivered(), want);
    let ids: Vec<String> = receipts.iter().map(|r| r.delivery_id.to_string()).collect();
    assert_eq!(a.delivered_ids(), ids);
    let mut got = Vec::new();
    while let Some(t) = acks.recv().await {
        got.push(t);
    }
    got.sort();
    assert_eq!(
        got,
        (0..100).collect::<Vec<_>>(),
        "every token exactly once"
    );
}

#[tokio::test]
async fn ack_waits_for_the_slow_sink() {
    let d = dir();
    let fast_sink = TestSink::new(Behaviour::Ok);
    let (slow, gate) = TestSink::gated(Behaviour::Ok);
    let (ob, mut acks) =
        open_outbox::<&'static str>(d.path(), &[("fast", &fast_sink), ("slow", &slow)]).await;
    ob.dispatch(rec("x"), vec!["tok"]).await.unwrap();
    eventually("fast sink delivers", || fast_sink.delivered().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(acks.try_recv().is_err(), "ack must wait for the slow sink");
    assert_eq!(ob.status().unwrap().sinks[1].offset, 0);
    gate.send(true).unwrap();
    let t = tokio::time::timeout(Duration::from_secs(5), acks.recv())
        .await
        .unwrap();
    assert_eq!(t, Some("tok"));
    let st = ob.status().unwrap();
    assert_eq!(
        st.sinks.iter().map(|s| s.offset).collect::<Vec<_>>(),
        vec![1, 1]
    );
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(acks.recv().await, None, "released exactly once");
}

#[tokio::test]
async fn permanent_and_transient_take_separate_paths() {
    let d = dir();
    let perm = TestSink::new(Behaviour::AlwaysPermanent);
    let flaky = TestSink::new(Behaviour::FailFirst(2));
    let down = TestSink::new(Behaviour::AlwaysTransient);
    let (ob, mut acks) = open_outbox::<u8>(
        d.path(),
        &[("perm", &perm), ("flaky", &flaky), ("down", &down)],
    )
    .await;
    let r = ob.dispatch(rec("one"), vec![1]).await.unwrap();
    let t = tokio::time::timeout(Duration::from_secs(5), acks.recv())
        .await
        .unwrap();
    assert_eq!(
        t,
        Some(1),
        "acked once every sink delivered or dead-lettered"
    );
    assert_eq!(perm.attempts(), 1, "permanent: one attempt");
    assert_eq!(flaky.attempts(), 3, "two transient failures then success");
    assert_eq!(flaky.delivered(), vec![b"one".to_vec()]);
    assert_eq!(down.attempts(), 4, "first attempt plus retry_max = 3");
    let dl = ob.dlq_list(None).unwrap();
    assert_eq!(dl.len(), 2);
    let by: Vec<(&str, u32)> = dl.iter().map(|e| (e.sink.as_str(), e.attempts)).collect();
    assert!(by.contains(&("perm", 1)), "{by:?}");
    assert!(by.contains(&("down", 4)), "{by:?}");
    for e in &dl {
        assert_eq!(e.seq, r.seq);
        assert_eq!(e.record.payload, b"one");
    }
    assert!(dl.iter().any(|e| e.error.contains("rejected: 400")));
    assert!(ob.dlq_list(Some(&name("flaky"))).unwrap().is_empty());
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn dlq_survives_reopen_and_redrive_reaches_only_that_sink() {
    let d = dir();
    let perm = TestSink::new(Behaviour::AlwaysPermanent);
    let other = TestSink::new(Behaviour::Ok);
    let (ob, _) = open_outbox::<()>(d.path(), &[("hook", &perm), ("file", &other)]).await;
    let r = ob.dispatch(rec("bad-then-good"), vec![]).await.unwrap();
    eventually("dead-lettered", || {
        ob.dlq_list(None).map(|l| l.len() == 1).unwrap_or(false)
    })
    .await;
    ob.shutdown(Duration::from_secs(5)).await.unwrap();

    let fixed = TestSink::new(Behaviour::Ok);
    let other2 = TestSink::new(Behaviour::Ok);
    let (ob, _) = open_outbox::<()>(d.path(), &[("hook", &fixed), ("file", &other2)]).await;
    let dl = ob.dlq_list(Some(&name("hook"))).unwrap();
    assert_eq!(dl.len(), 1, "DLQ survives a reopen");
    assert_eq!(dl[0].delivery_id, r.delivery_id);
    assert_eq!(dl[0].error, "permanent: rejected: 400");
    let moved = ob.dlq_redrive(&name("hook"), None).await.unwrap();
    assert_eq!(moved, 1);
    eventually("redelivered", || fixed.delivered().len() == 1).await;
    assert_eq!(
        fixed.delivered_ids(),
        vec![r.delivery_id.to_string()],
        "same delivery id"
    );
    assert!(
        ob.dlq_list(None).unwrap().is_empty(),
        "removed from the DLQ"
    );
    let st = ob.status().unwrap();
    let head = st.head;
    eventually("other sink passes the redriven record", || {
        ob.status().unwrap().sinks.iter().all(|s| s.offset == head)
    })
    .await;
    assert!(
        other2.delivered().is_empty(),
        "the other sink skips records aimed elsewhere"
    );
    assert!(matches!(
        ob.dlq_redrive(&name("nope"), None).await,
        Err(outbox::Error::Config(outbox::ConfigError::UnknownSink(_)))
    ));
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn drop_sink_never_blocks_and_block_sink_backpressures() {
    let d = dir();
    let (lossy, lossy_gate) = TestSink::gated(Behaviour::Ok);
    let cfg = SinkConfig {
        on_full: OnFull::Drop,
        max_lag_records: Some(10),
        ..fast()
    };
    let (ob, mut acks) = Outbox::<u32>::builder(d.path())
        .sink("lossy", lossy.clone(), cfg)
        .open()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for i in 0..200u32 {
        tokio::time::timeout(
            Duration::from_secs(2),
            ob.dispatch(rec(&format!("{i}")), vec![i]),
        )
        .await
        .expect("a Drop sink never blocks dispatch")
        .unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    lossy_gate.send(true).unwrap();
    let report = ob.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.drained, "{report:?}");
    let st_dropped = lossy.delivered().len();
    assert!(
        st_dropped < 200,
        "some records were skipped: delivered {st_dropped}"
    );
    let mut n = 0;
    while acks.recv().await.is_some() {
        n += 1;
    }
    assert_eq!(n, 200, "delivered or dropped, every token is released once");

    // Block: with a gated sink and max lag 5, the sixth dispatch waits.
    let cfg = SinkConfig {
        max_lag_records: Some(5),
        ..fast()
    };
    let fill = (0..5).map(|i| rec(&format!("{i}"))).collect();
    waits_until_slow_catches_up(
        cfg,
        fill,
        "6",
        "dispatch must wait while the Block sink is full",
        "room after the sink catches up",
    )
    .await;
}

#[tokio::test]
async fn seqs_stay_monotonic_after_full_truncation() {
    let d = dir();
    let cfg = OutboxConfig {
        truncate_every: Duration::from_millis(10),
        ..OutboxConfig::default()
    };
    let sink = TestSink::new(Behaviour::Ok);
    let (ob, _) = open_with::<()>(d.path(), cfg.clone(), &[("s", &sink)])
        .await
        .unwrap();
    for i in 0..30 {
        ob.dispatch(rec(&format!("{i}")), vec![]).await.unwrap();
    }
    eventually("delivered", || sink.delivered().len() == 30).await;
    // Wait until truncation empties the log.
    let path = d.path().to_path_buf();
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
    {
        // One more session so the truncator sees the final commit.
        let (ob, _) = open_with::<()>(&path, cfg.clone(), &[("s", &TestSink::new(Behaviour::Ok))])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        ob.shutdown(Duration::from_secs(1)).await.unwrap();
    }
    let store = outbox::inspect::Inspector::open(&path).unwrap();
    let extent = store.extent().unwrap();
    assert_eq!(extent.first, None, "the whole log was truncated");
    assert_eq!(extent.end, Seq(30));
    drop(store);
    let (ob, _) = open_with::<()>(&path, cfg, &[("s", &TestSink::new(Behaviour::Ok))])
        .await
        .unwrap();
    let r = ob.dispatch(rec("next"), vec![]).await.unwrap();
    assert_eq!(r.seq, Seq(30), "a seq is never reused");
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn concurrent_dispatchers_share_group_commits() {
    let d = dir();
    let sink = TestSink::new(Behaviour::Ok);
    let (ob, mut acks) = open_outbox::<u64>(d.path(), &[("s", &sink)]).await;
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let ob = ob.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..100u64 {
                let id = t * 1000 + i;
                let r = ob.dispatch(rec(&id.to_string()), vec![id]).await.unwrap();
                seqs.push(r.seq.0);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let s = t.await.unwrap();
        assert!(
            s.windows(2).all(|w| w[0] < w[1]),
            "one task's seqs increase"
        );
        all.extend(s);
    }
    all.sort();
    assert_eq!(all, (0..800).collect::<Vec<_>>(), "unique and contiguous");
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
    let mut got = HashSet::new();
    while let Some(t) = acks.recv().await {
        assert!(got.insert(t));
    }
    assert_eq!(got.len(), 800);
    assert_eq!(sink.delivered().len(), 800);
}

#[tokio::test]
async fn a_panicking_sink_is_reported_and_delivery_goes_on() {
    let d = dir();
    let sink = TestSink::new(Behaviour::PanicOn(b"boom".to_vec()));
    let (ob, mut acks) = open_outbox::<u8>(d.path(), &[("p", &sink)]).await;
    ob.dispatch(rec("a"), vec![1]).await.unwrap();
    ob.dispatch(rec("boom"), vec![2]).await.unwrap();
    ob.dispatch(rec("c"), vec![3]).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            tokio::time::timeout(Duration::from_secs(5), acks.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(got, vec![1, 2, 3]);
    assert_eq!(sink.delivered(), vec![b"a".to_vec(), b"c".to_vec()]);
    let dl = ob.dlq_list(None).unwrap();
    assert_eq!(dl.len(), 1);
    assert!(dl[0].error.contains("sink panicked"), "{}", dl[0].error);
    assert_eq!(dl[0].attempts, 4);
    assert_eq!(ob.status().unwrap().sinks[0].dead_lettered, 1);
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn orphans_hold_nothing_back_and_new_sinks_start_where_told() {
    let d = dir();
    let (ob, _) = open_outbox::<()>(d.path(), &[("old", &TestSink::new(Behaviour::Ok))]).await;
    for i in 0..5 {
        ob.dispatch(rec(&format!("{i}")), vec![]).await.unwrap();
    }
    ob.shutdown(Duration::from_secs(5)).await.unwrap();

    let head_sink = TestSink::new(Behaviour::Ok);
    let early = TestSink::new(Behaviour::Ok);
    let (ob, mut acks) = Outbox::<u8>::builder(d.path())
        .sink("new", head_sink.clone(), fast())
        .sink(
            "early",
            early.clone(),
            SinkConfig {
                start: Start::Earliest,
                ..fast()
            },
        )
        .open()
        .await
        .unwrap();
    let st = ob.status().unwrap();
    let orphans: Vec<(&str, u64)> = st
        .orphans
        .iter()
        .map(|o| (o.name.as_str(), o.offset))
        .collect();
    assert_eq!(orphans, vec![("old", 5)]);
    assert_eq!(st.sinks[0].offset, 5, "head");
    ob.dispatch(rec("fresh"), vec![9]).await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), acks.recv())
            .await
            .unwrap(),
        Some(9)
    );
    assert_eq!(head_sink.delivered(), vec![b"fresh".to_vec()]);
    // "old" had passed seqs 0..5 (and holds back only what it has not
    // passed), so the log may have been truncated: earliest replays what is
    // left, and "fresh" in any case.
    let got = early.delivered();
    assert_eq!(got.last().unwrap(), b"fresh");
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn shutdown_with_a_hung_sink_stops_at_the_timeout_and_keeps_the_rest() {
    let d = dir();
    let (hung, _gate) = TestSink::gated(Behaviour::Ok);
    let (ob, mut acks) = open_outbox::<u8>(d.path(), &[("hung", &hung)]).await;
    ob.dispatch(rec("1"), vec![1]).await.unwrap();
    ob.dispatch(rec("2"), vec![2]).await.unwrap();
    let started = std::time::Instant::now();
    // Shut down through a second handle: the one kept refuses dispatches.
    let report = ob
        .clone()
        .shutdown(Duration::from_millis(300))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!report.drained);
    assert_eq!(report.pending, vec![(name("hung"), 2)]);
    assert_eq!(acks.recv().await, None, "pending tokens are never released");
    assert!(matches!(
        ob.dispatch(rec("x"), vec![])
            .await
            .map_err(outbox::DispatchError::into_kind),
        Err(outbox::DispatchErrorKind::ShuttingDown)
    ));
    drop(ob);

    let sink = TestSink::new(Behaviour::Ok);
    let (ob, _) = open_outbox::<u8>(d.path(), &[("hung", &sink)]).await;
    eventually("left-overs replayed", || sink.delivered().len() == 2).await;
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn file_sink_writes_lines_and_cuts_a_torn_tail() {
    let d = dir();
    let out = d.path().join("out.ndjson");
    std::fs::write(&out, b"{\"old\":1}\n{\"torn\":").unwrap();
    let file = outbox::sink::FileSink::open(&out).await.unwrap();
    let (ob, _) = Outbox::<()>::builder(d.path().join("data"))
        .sink("file", file, fast())
        .open()
        .await
        .unwrap();
    ob.dispatch_many(vec![(rec("{\"a\":1}"), vec![]), (rec("{\"b\":2}"), vec![])])
        .await
        .unwrap();
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "{\"old\":1}\n{\"a\":1}\n{\"b\":2}\n"
    );
}

#[tokio::test]
async fn config_errors_name_the_parameter_and_touch_nothing() {
    let d = dir();
    let path = d.path().join("never");
    let err = Outbox::<()>::builder(&path)
        .sink("dup", TestSink::new(Behaviour::Ok), fast())
        .sink("dup", TestSink::new(Behaviour::Ok), fast())
        .open()
        .await
        .err()
        .unwrap();
    assert!(err.is_config(), "{err}");
    assert!(
        err.to_string().contains("sinks[1].name") && err.to_string().contains("duplicate"),
        "{err}"
    );
    let err = Outbox::<()>::builder(&path)
        .sink("bad name", TestSink::new(Behaviour::Ok), fast())
        .open()
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("sinks[0].name"), "{err}");
    assert!(!path.exists(), "nothing opened on a config error");
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let d = dir();
    let (ob, _) = Outbox::<()>::builder(d.path()).open().await.unwrap();
    let err = Outbox::<()>::builder(d.path()).open().await.err().unwrap();
    assert!(
        matches!(err, outbox::Error::Store(outbox::StoreError::Locked { .. })),
        "{err}"
    );
    assert!(err.is_locked(), "{err}");
    assert!(err.to_string().contains("locked"), "{err}");
    ob.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn oversized_records_are_rejected_before_append() {
    let d = dir();
    let cfg = OutboxConfig {
        max_record_bytes: 10,
        ..OutboxConfig::default()
    };
    let (ob, _) = Outbox::<()>::builder(d.path())
        .config(cfg)
        .open()
        .await
        .unwrap();
    let err = ob
        .dispatch_many(vec![
            (rec("ok"), vec![]),
            (Record::new(vec![b'x'; 11]), vec![]),
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("record 1 is 11 bytes"), "{err}");
    let r = ob.dispatch(rec("ok"), vec![]).await.unwrap();
    assert_eq!(r.seq, Seq(0), "the rejected request appended nothing");
    ob.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[derive(Default)]
struct SizeHook {
    last: parking_lot::Mutex<Option<(u64, u64)>>,
}

impl outbox::MetricsHook for SizeHook {
    fn log_size(&self, records: u64, bytes: u64) {
        *self.last.lock() = Some((records, bytes));
    }
}

#[tokio::test]
async fn log_size_is_reported_and_read_log_returns_records() {
    let d = dir();
    let (gated, gate) = TestSink::gated(Behaviour::Ok);
    let (ob, _) = open_outbox::<()>(d.path(), &[("s", &gated)]).await;
    ob.dispatch_many((0..5).map(|i| (rec(&format!("r{i}")), vec![])).collect())
        .await
        .unwrap();
    ob.shutdown(Duration::from_secs(1)).await.unwrap();
    drop(gate);

    // Reopen: 5 left over, 3 more; records are the span from the first
    // batch to the head, bytes that times the mean record size.
    let hook = std::sync::Arc::new(SizeHook::default());
    let (gated, gate) = TestSink::gated(Behaviour::Ok);
    let (ob, _) = Outbox::<()>::builder(d.path())
        .config(OutboxConfig {
            truncate_every: Duration::from_millis(10),
            ..OutboxConfig::default()
        })
        .metrics(hook.clone())
        .sink("s", gated.clone(), fast())
        .open()
        .await
        .unwrap();
    ob.dispatch_many((5..8).map(|i| (rec(&format!("r{i}")), vec![])).collect())
        .await
        .unwrap();
    eventually("8 records counted", || *hook.last.lock() == Some((8, 16))).await;
    let got = ob.read_log(Seq(3), 3).unwrap();
    let seqs: Vec<u64> = got.iter().map(|r| r.seq.0).collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    assert_eq!(got[0].record.payload, b"r3");
    assert_eq!(got[0].delivery_id.seq, Seq(3));
    let meta = ob.meta().unwrap();
    assert_eq!((meta.first_seq, meta.next_seq), (Some(Seq(0)), Seq(8)));
    gate.send(true).unwrap();
    eventually("truncated to nothing", || *hook.last.lock() == Some((0, 0))).await;
    assert_eq!(gated.delivered().len(), 8);
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn every_sync_policy_delivers_and_acks() {
    use outbox::SyncPolicy;
    for policy in [
        SyncPolicy::Always,
        SyncPolicy::Full,
        SyncPolicy::Interval(Duration::from_millis(20)),
    ] {
        let d = dir();
        let sink = TestSink::new(Behaviour::Ok);
        let (ob, mut acks) = Outbox::<u32>::builder(d.path())
            .sync(policy)
            .sink("s", sink.clone(), fast())
            .open()
            .await
            .unwrap();
        let receipts = ob
            .dispatch_many(numbered(50, |i| format!("{i}")))
            .await
            .unwrap();
        assert_eq!(receipts.last().unwrap().seq, Seq(49), "{policy:?}");
        let mut got = Vec::new();
        while got.len() < 50 {
            got.push(
                tokio::time::timeout(Duration::from_secs(5), acks.recv())
                    .await
                    .unwrap_or_else(|_| panic!("{policy:?}: acks stalled at {}", got.len()))
                    .unwrap(),
            );
        }
        got.sort();
        assert_eq!(got, (0..50).collect::<Vec<_>>(), "{policy:?}");
        assert_eq!(sink.delivered().len(), 50, "{policy:?}");
        ob.shutdown(Duration::from_secs(5)).await.unwrap();
        // Durable under every policy once closed: a reopen sees all of it.
        let store = outbox::inspect::Inspector::open(d.path()).unwrap();
        assert_eq!(store.extent().unwrap().end, Seq(50), "{policy:?}");
        assert_eq!(
            store.offset(&name("s")).unwrap().unwrap().offset,
            Seq(50),
            "{policy:?}"
        );
    }
}

/// A gated sink `slow` under `cfg` is full once `fill` is dispatched: a
/// dispatch of `next` waits (`why`) until the gate opens, then gets room
/// (`room`) and the next seq, and `slow` delivers every record.
async fn waits_until_slow_catches_up(
    cfg: SinkConfig,
    fill: Vec<Record>,
    next: &str,
    why: &str,
    room: &str,
) {
    let d = dir();
    let (slow, gate) = TestSink::gated(Behaviour::Ok);
    let (ob, _) = Outbox::<()>::builder(d.path())
        .sink("slow", slow.clone(), cfg)
        .open()
        .await
        .unwrap();
    let n = fill.len();
    for r in fill {
        ob.dispatch(r, vec![]).await.unwrap();
    }
    assert_eq!(ob.full_sink(), Some(name("slow")));
    let blocked =
        tokio::time::timeout(Duration::from_millis(200), ob.dispatch(rec(next), vec![])).await;
    assert!(blocked.is_err(), "{why}");
    gate.send(true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), ob.dispatch(rec(next), vec![]))
        .await
        .expect(room)
        .unwrap();
    assert_eq!(r.seq, Seq(n as u64));
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(slow.delivered().len(), n + 1);
}

#[tokio::test]
async fn a_byte_limit_blocks_dispatch_until_the_sink_catches_up() {
    let cfg = SinkConfig {
        max_lag_records: None,
        max_lag_bytes: Some(1000),
        ..fast()
    };
    // 4 records of 300 bytes: 1200 bytes of lag, over the 1000-byte limit.
    let fill = (0..4).map(|_| Record::new(vec![b'x'; 300])).collect();
    waits_until_slow_catches_up(
        cfg,
        fill,
        "more",
        "dispatch waits while the byte lag is at the limit",
        "room once the sink caught up",
    )
    .await;
}

#[tokio::test]
async fn a_backlog_switches_to_small_log_values() {
    let d = dir();
    let (stuck, _gate) = TestSink::gated(Behaviour::Ok);
    let cfg = OutboxConfig {
        max_value_bytes: 64 << 10,
        backlog_value_bytes: 1000,
        backlog_records: 100,
        ..OutboxConfig::default()
    };
    let (ob, _) = open_with::<()>(d.path(), cfg, &[("s", &stuck)])
        .await
        .unwrap();
    // 100-byte records, 50 per request: 5,000 bytes a request.
    for k in 0..10 {
        ob.dispatch_many(
            (0..50)
                .map(|_| (Record::new(vec![k as u8; 100]), vec![]))
                .collect(),
        )
        .await
        .unwrap();
    }
    abandon(ob, d.path()).await;
    use outbox::inspect::BatchInfo;
    let store = outbox::inspect::Inspector::open(d.path()).unwrap();
    let headers: Vec<BatchInfo> = store.batches().map(|h| h.unwrap()).collect();
    let total: u32 = headers.iter().map(|h| h.count).sum();
    assert_eq!(total, 500);
    // Until the lag is over 100 records (it is exactly 100 when seq 100 is
    // written), whole requests in large values; after, requests cut into
    // values of at most 1000 bytes.
    let (early, late): (Vec<&BatchInfo>, Vec<_>) = headers.iter().partition(|h| h.first.0 <= 100);
    assert!(early.iter().all(|h| h.bytes >= 5_000), "{early:?}");
    assert!(!late.is_empty());
    assert!(late.iter().all(|h| h.bytes <= 1_000), "{late:?}");
}

#[tokio::test]
async fn an_orphan_keeps_its_backlog_until_it_returns_or_is_forgotten() {
    let d = dir();
    let cfg = OutboxConfig {
        truncate_every: Duration::from_millis(5),
        ..OutboxConfig::default()
    };
    let open = |sinks: Vec<(&'static str, TestSink)>| {
        let mut b = Outbox::<()>::builder(d.path()).config(cfg.clone());
        for (n, s) in sinks {
            b = b.sink(n, s, fast());
        }
        b.open()
    };
    let (ob, _) = open(vec![
        ("a", TestSink::new(Behaviour::Ok)),
        ("b", TestSink::new(Behaviour::Ok)),
    ])
    .await
    .unwrap();
    ob.dispatch_many((0..10).map(|i| (rec(&format!("{i}")), vec![])).collect())
        .await
        .unwrap();
    eventually("both passed 10", || {
        ob.status().unwrap().sinks.iter().all(|s| s.offset == 10)
    })
    .await;
    ob.shutdown(Duration::from_secs(5)).await.unwrap();

    // `b` is left out of the configuration for a session (a typo, say) while
    // `a` moves on: `b`'s backlog is kept, not truncated.
    let (ob, _) = open(vec![("a", TestSink::new(Behaviour::Ok))])
        .await
        .unwrap();
    ob.dispatch_many((10..25).map(|i| (rec(&format!("{i}")), vec![])).collect())
        .await
        .unwrap();
    eventually("a passed 25", || ob.status().unwrap().sinks[0].offset == 25).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let st = ob.status().unwrap();
    assert_eq!(st.orphans.len(), 1);
    assert_eq!(
        (st.orphans[0].name.as_str(), st.orphans[0].offset),
        ("b", 10)
    );
    let first = ob.meta().unwrap().first_seq.unwrap().0;
    assert!(
        first <= 10,
        "the log was truncated past the orphan: first {first}"
    );
    ob.shutdown(Duration::from_secs(5)).await.unwrap();

    // `b` comes back and gets everything it missed, in order.
    let b = TestSink::new(Behaviour::Ok);
    let (ob, _) = open(vec![("a", TestSink::new(Behaviour::Ok)), ("b", b.clone())])
        .await
        .unwrap();
    let want: Vec<Vec<u8>> = (10..25).map(|i| format!("{i}").into_bytes()).collect();
    eventually("b caught up", || b.delivered() == want).await;
    assert!(ob.status().unwrap().orphans.is_empty());
    ob.shutdown(Duration::from_secs(5)).await.unwrap();

    // Left out again, then forgotten by the operator: the log is truncated.
    let (ob, _) = open(vec![("a", TestSink::new(Behaviour::Ok))])
        .await
        .unwrap();
    ob.dispatch(rec("25"), vec![]).await.unwrap();
    let e = ob.forget_orphan(&name("a")).await.unwrap_err();
    assert!(e.to_string().contains("configured"), "{e}");
    assert!(matches!(
        ob.forget_orphan(&name("zz")).await,
        Err(outbox::Error::Config(outbox::ConfigError::UnknownSink(_)))
    ));
    assert_eq!(ob.forget_orphan(&name("b")).await.unwrap(), Seq(25));
    assert!(ob.status().unwrap().orphans.is_empty());
    eventually("truncated", || {
        ob.meta().unwrap().first_seq.is_none_or(|f| f.0 >= 26)
    })
    .await;
    ob.shutdown(Duration::from_secs(5)).await.unwrap();

    // Forgetting is durable: `b` configured again is a new sink, at the head.
    let b = TestSink::new(Behaviour::Ok);
    let (ob, _) = open(vec![("a", TestSink::new(Behaviour::Ok)), ("b", b.clone())])
        .await
        .unwrap();
    assert_eq!(ob.status().unwrap().sinks[1].offset, 26);
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(b.delivered().is_empty());
}

/// After shutdown, the DLQ commands answer `ShuttingDown` at once: a purge
/// once waited forever on the flusher thread that had exited.
#[tokio::test]
async fn dlq_commands_after_shutdown_fail_at_once_and_change_nothing() {
    let d = dir();
    let perm = TestSink::new(Behaviour::AlwaysPermanent);
    let (ob, _) = open_outbox::<()>(d.path(), &[("hook", &perm)]).await;
    let r = ob.dispatch(rec("dead-lettered"), vec![]).await.unwrap();
    eventually("dead-lettered", || {
        ob.dlq_list(None).map(|l| l.len() == 1).unwrap_or(false)
    })
    .await;
    ob.clone().shutdown(Duration::from_secs(5)).await.unwrap();
    let purge = tokio::time::timeout(Duration::from_secs(5), ob.dlq_purge(&name("hook"), None))
        .await
        .expect("purge after shutdown returns instead of hanging");
    assert!(
        matches!(
            purge,
            Err(outbox::Error::Dispatch(
                outbox::DispatchErrorKind::ShuttingDown
            ))
        ),
        "{purge:?}"
    );
    let redrive = tokio::time::timeout(Duration::from_secs(5), ob.dlq_redrive(&name("hook"), None))
        .await
        .expect("redrive after shutdown returns");
    assert!(
        matches!(
            redrive,
            Err(outbox::Error::Dispatch(
                outbox::DispatchErrorKind::ShuttingDown
            ))
        ),
        "{redrive:?}"
    );
    abandon(ob, d.path()).await;
    let (ob, _) = open_outbox::<()>(d.path(), &[("hook", &TestSink::new(Behaviour::Ok))]).await;
    let dl = ob.dlq_list(None).unwrap();
    assert_eq!(dl.len(), 1, "the entry is still dead-lettered");
    assert_eq!(dl[0].delivery_id, r.delivery_id);
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}
