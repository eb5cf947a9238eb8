//! Every on-disk format released must keep opening: `tests/fixtures/v1` was
//! written by outbox 0.1 and `tests/fixtures/v2` by this format's first
//! release, each committed as it was left.
//!
//! Regenerate only when a new format version is released, into a new folder
//! (`cargo test --lib -- --ignored write_fixture_v2` wrote v2: the writer
//! lives inside the crate, since it needs the private encoder).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::process::copy_dir;
use common::*;
use outbox::inspect::{Inspector, Verified};
use outbox::{DeliveryId, Outbox, Seq, SinkConfig, SinkName, Start};
use uuid::Uuid;

fn fixture(v: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(v)
}

/// Copies fixture `v` into `dir` and inspects the copy: it is of `format`,
/// verifies, and its log holds seqs 0 to `end`, the next seq.
fn inspect_copy(dir: &Path, v: &str, format: u8, end: u64) -> (PathBuf, Inspector, Verified) {
    let data = dir.join(v);
    copy_dir(&fixture(v), &data);
    let store = Inspector::open(&data).unwrap();
    assert_eq!(store.format_version(), format);
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

fn payloads(store: &Inspector) -> Vec<(u64, String, String)> {
    store
        .records(Seq(0))
        .map(|r| {
            let r = r.unwrap();
            (
                r.seq.0,
                String::from_utf8(r.record.payload).unwrap(),
                r.delivery_id.to_string(),
            )
        })
        .collect()
}

/// The v1 directory holds: 5 records `r0`..`r4` in two batches; sink `file`
/// at offset 3 and sink `hook` at 5 with seq 1 dead-lettered in its DLQ.
#[tokio::test]
async fn version_1_fixture_opens_with_its_contents_and_is_upgraded() {
    let d = tempfile::tempdir().unwrap();
    let (data, store, v) = inspect_copy(d.path(), "v1", 1, 5);
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
    let dlq = store.dead_letters().list(None).unwrap();
    assert_eq!(
        dlq.iter()
            .map(|e| (
                e.sink.as_str(),
                e.seq.0,
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
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
    let store = Inspector::open(&data).unwrap();
    assert_eq!(
        (store.format_version(), outbox::inspect::CURRENT_FORMAT),
        (3, 3),
        "upgraded at the open"
    );
    assert!(store.verify().is_ok());
}

/// What `tests/fixtures/v2` holds (written by `write_fixture_v2` in
/// `src/fixture_v2.rs`): records `a0..a3` (seq 0..4, `a2` with a
/// caller-given delivery id), a hole over seqs 4..10, a redriven record `a1`
/// at seq 10 aimed at `hook` with its origin 1; sink `file` at 10, sink
/// `hook` at 4 with seq 1 dead-lettered (with a history of two attempts); an orphan
/// `old` at 0 since `AT`; the seq floor 0 and the reservation 11.
const AT: u64 = 1_700_000_000_000;

/// The delivery id `a2` was given.
fn given_id() -> DeliveryId {
    DeliveryId {
        log_id: Uuid::from_u128(0xabcdef),
        seq: Seq(777),
    }
}

#[tokio::test]
async fn version_2_fixture_opens_with_its_contents() {
    let d = tempfile::tempdir().unwrap();
    let (data, store, v) = inspect_copy(d.path(), "v2", 2, 11);
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
    let dlq = store.dead_letters().list(None).unwrap();
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
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
}
