//! Every on-disk format released must keep opening: `tests/fixtures/v1` was
//! written by outbox 0.1 and `tests/fixtures/v2` by this format's first
//! release, each committed as it was left.
//!
//! Regenerate only when a new format version is released, into a new folder
//! (`cargo test --test format_fixture -- --ignored write_fixture_v2` wrote
//! v2).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::process::copy_dir;
use common::*;
use outbox::codec::{Attempt, BatchHeader, BatchKind, DlqEntry, FormatVersion, LogEntry};
use outbox::store::{Store, StoreOptions, Verified};
use outbox::{DeliveryId, Outbox, Seq, SinkConfig, SinkName, Start};
use uuid::Uuid;

fn fixture(v: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(v)
}

/// Copies fixture `v` into `dir` and inspects the copy: it is of `format`,
/// verifies, and its log holds seqs 0 to `end`, the next seq.
fn inspect_copy(
    dir: &Path,
    v: &str,
    format: FormatVersion,
    end: u64,
) -> (PathBuf, Store, Verified) {
    let data = dir.join(v);
    copy_dir(&fixture(v), &data);
    let store = Store::inspect(&data, 8 << 20).unwrap();
    assert_eq!(store.format(), format);
    let v = store.verify().unwrap();
    assert_eq!(
        (v.extent.first, v.extent.end, v.next),
        (Some(Seq(0)), Seq(end), Seq(end))
    );
    (data, store, v)
}

/// Each sink's offset, by name.
fn offsets(v: &Verified) -> Vec<(String, u64)> {
    v.offsets
        .iter()
        .map(|(n, o)| (n.to_string(), o.0))
        .collect()
}

fn payloads(store: &Store) -> Vec<(u64, String, String)> {
    let mut out = Vec::new();
    for b in store.iter_batches(Seq(0)) {
        let b = b.unwrap();
        for (i, e) in b.entries.iter().enumerate() {
            let seq = Seq(b.first.0 + i as u64);
            out.push((
                seq.0,
                String::from_utf8(e.record.payload.clone()).unwrap(),
                e.delivery_id(seq, store.log_id()).to_string(),
            ));
        }
    }
    out
}

/// The v1 directory holds: 5 records `r0`..`r4` in two batches; sink `file`
/// at offset 3 and sink `hook` at 5 with seq 1 parked in its DLQ.
#[tokio::test]
async fn version_1_fixture_opens_with_its_contents_and_is_upgraded() {
    let d = tempfile::tempdir().unwrap();
    let (data, store, v) = inspect_copy(d.path(), "v1", FormatVersion::V1, 5);
    let log_id = store.log_id();
    let want: Vec<(u64, String, String)> = (0..5)
        .map(|i| (i, format!("r{i}"), format!("msg_{}_{i}", log_id.simple())))
        .collect();
    assert_eq!(payloads(&store), want);
    assert_eq!(
        offsets(&v),
        vec![("file".to_string(), 3), ("hook".to_string(), 5)]
    );
    let members: Vec<(String, bool)> = v
        .members
        .iter()
        .map(|m| (m.name.clone(), m.orphaned_at_ms.is_some()))
        .collect();
    assert_eq!(
        members,
        vec![("file".to_string(), false), ("hook".to_string(), false)],
        "version 1's configured sinks become members"
    );
    let dlq = store.dlq_list(None).unwrap();
    assert_eq!(
        dlq.iter()
            .map(|e| (
                e.sink.as_str(),
                e.seq,
                e.record.payload.as_slice(),
                e.history.len()
            ))
            .collect::<Vec<_>>(),
        vec![("hook", 1, &b"r1"[..], 0)]
    );
    drop(store);

    // The engine replays from it (`file` gets r3 and r4 with their ids) and
    // upgrades it to the current format.
    let file = TestSink::new(Behaviour::Ok);
    let (ob, _) = Outbox::<()>::builder(&data)
        .sink("file", file.clone(), fast())
        .sink("hook", TestSink::new(Behaviour::Ok), fast())
        .open()
        .await
        .unwrap();
    eventually("replayed", || file.delivered().len() == 2).await;
    assert_eq!(file.delivered(), vec![b"r3".to_vec(), b"r4".to_vec()]);
    assert_eq!(
        file.delivered_ids(),
        vec![
            format!("msg_{}_3", log_id.simple()),
            format!("msg_{}_4", log_id.simple())
        ]
    );
    let hook = SinkName::new("hook").unwrap();
    assert_eq!(ob.dlq_list(Some(&hook)).unwrap().len(), 1);
    ob.close(Duration::from_secs(5)).await.unwrap();
    let store = Store::inspect(&data, 8 << 20).unwrap();
    assert_eq!(store.format(), FormatVersion::V2, "upgraded at the open");
    assert!(store.verify().is_ok());
}

const AT: u64 = 1_700_000_000_000;

/// What `write_fixture_v2` writes: records `a0..a3` (seq 0..4, `a2` with a
/// caller-given delivery id), a hole over seqs 4..10, a redriven record
/// `a1` at seq 10 aimed at `hook` with its origin 1; sink `file` at 10, sink
/// `hook` at 4 with seq 1 parked (with a history of two attempts); an orphan
/// `old` at 0 since `AT`; the seq floor 0 and the reservation 11.
fn given_id() -> DeliveryId {
    DeliveryId {
        log_id: Uuid::from_u128(0xabcdef),
        seq: Seq(777),
    }
}

#[test]
#[ignore = "writes the fixture; run by hand for a new format version"]
fn write_fixture_v2() {
    let dir = fixture("v2");
    let _ = std::fs::remove_dir_all(&dir);
    let opts = StoreOptions::default();
    let (store, _) = Store::open(&dir, &opts).unwrap();
    let entries: Vec<LogEntry> = (0..4)
        .map(|i| {
            let r = rec(&format!("a{i}"));
            LogEntry::new(if i == 2 {
                r.with_delivery_id(given_id())
            } else {
                r
            })
        })
        .collect();
    let v =
        outbox::codec::encode_batch(Seq(0), BatchHeader::records(&entries, AT), &entries).unwrap();
    store.append_runs(vec![(Seq(0), v)], &[]).unwrap();
    store
        .write_marker(BatchKind::Hole, Seq(4), Seq(10))
        .unwrap();
    let redriven = vec![LogEntry {
        record: rec("a1"),
        target: Some("hook".into()),
        origin: Some(1),
        origin_log: None,
    }];
    let v = outbox::codec::encode_batch(Seq(10), BatchHeader::records(&redriven, AT), &redriven)
        .unwrap();
    store.append_runs(vec![(Seq(10), v)], &[]).unwrap();
    let file = SinkName::new("file").unwrap();
    let hook = SinkName::new("hook").unwrap();
    let old = SinkName::new("old").unwrap();
    store.commit_offset(&file, Seq(10), &[]).unwrap();
    store.commit_offset(&old, Seq(0), &[]).unwrap();
    let parked = DlqEntry {
        sink: "hook".into(),
        seq: 1,
        origin: 1,
        origin_log: None,
        record: rec("a1"),
        error: "permanent: HTTP 400".into(),
        attempts: 2,
        failed_at_ms: AT + 1,
        history: vec![
            Attempt {
                at_ms: AT,
                latency_ms: 3,
                permanent: false,
                error: "transient: HTTP 503".into(),
            },
            Attempt {
                at_ms: AT + 1,
                latency_ms: 2,
                permanent: true,
                error: "permanent: HTTP 400".into(),
            },
        ],
    };
    store.commit_offset(&hook, Seq(4), &[parked]).unwrap();
    store
        .set_members(&[
            outbox::codec::Member {
                name: "file".into(),
                orphaned_at_ms: None,
            },
            outbox::codec::Member {
                name: "hook".into(),
                orphaned_at_ms: None,
            },
            outbox::codec::Member {
                name: "old".into(),
                orphaned_at_ms: Some(AT),
            },
        ])
        .unwrap();
    store.reserve_seqs(Seq(11)).unwrap();
    store.flush().unwrap();
}

#[tokio::test]
async fn version_2_fixture_opens_with_its_contents() {
    let d = tempfile::tempdir().unwrap();
    let (data, store, v) = inspect_copy(d.path(), "v2", FormatVersion::V2, 11);
    let log_id = store.log_id();
    let id = |s: u64| format!("msg_{}_{s}", log_id.simple());
    assert_eq!(
        payloads(&store),
        vec![
            (0, "a0".to_string(), id(0)),
            (1, "a1".to_string(), id(1)),
            (2, "a2".to_string(), given_id().to_string()),
            (3, "a3".to_string(), id(3)),
            (10, "a1".to_string(), id(1)),
        ]
    );
    assert_eq!(
        offsets(&v),
        vec![("file".into(), 10), ("hook".into(), 4), ("old".into(), 0)]
    );
    assert_eq!(v.members[2].orphaned_at_ms, Some(AT));
    let dlq = store.dlq_list(None).unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].history.len(), 2);
    assert_eq!(dlq[0].history[0].error, "transient: HTTP 503");
    drop(store);

    // `hook` resumes at 4: the hole is passed over, and only the redriven
    // record at 10 is delivered to it, under its first id. The orphan `old`
    // was orphaned at AT (2023): its retention has passed, so it is forgotten.
    let hook = TestSink::new(Behaviour::Ok);
    let (ob, _) = Outbox::<()>::builder(&data)
        .sink("file", TestSink::new(Behaviour::Ok), fast())
        .sink(
            "hook",
            hook.clone(),
            SinkConfig {
                start: Start::Head,
                ..fast()
            },
        )
        .open()
        .await
        .unwrap();
    eventually("redriven record delivered", || hook.delivered().len() == 1).await;
    assert_eq!(hook.delivered(), vec![b"a1".to_vec()]);
    assert_eq!(hook.delivered_ids(), vec![id(1)]);
    let st = ob.status().unwrap();
    assert!(
        st.orphans.is_empty(),
        "`old` was orphaned in 2023: forgotten: {:?}",
        st.orphans
    );
    ob.close(Duration::from_secs(5)).await.unwrap();
}
