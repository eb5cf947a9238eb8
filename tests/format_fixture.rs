//! The on-disk format of version 1 must keep opening: `tests/fixtures/v1`
//! is a data directory written by outbox 0.1, committed as it was left.
//!
//! Regenerate (only when a new format version is released, into a new
//! folder) with `cargo test --test format_fixture -- --ignored write_fixture`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use outbox::store::{Store, StoreOptions};
use outbox::{Outbox, Seq, SinkName};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The directory holds: 5 records `r0`..`r4` in two batches; sink `file`
/// at offset 3 and sink `hook` at 5 with seq 1 parked in its DLQ.
#[test]
#[ignore = "writes the fixture; run by hand for a new format version"]
fn write_fixture() {
    use outbox::codec::{BatchHeader, DlqEntry, LogEntry, encode_batch};
    let dir = fixture();
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir, &StoreOptions::default()).unwrap();
    for (first, range) in [(0u64, 0..3u64), (3, 3..5)] {
        let entries: Vec<LogEntry> = range
            .map(|i| LogEntry::new(rec(&format!("r{i}"))))
            .collect();
        let header = BatchHeader {
            count: entries.len() as u32,
            bytes: entries.iter().map(|e| e.record.size() as u64).sum(),
            appended_at_ms: 1_795_000_000_000,
        };
        store
            .append(Seq(first), encode_batch(header, &entries))
            .unwrap();
    }
    let file = SinkName::new("file").unwrap();
    let hook = SinkName::new("hook").unwrap();
    store.commit_offset(&file, Seq(3), &[]).unwrap();
    let parked = DlqEntry {
        sink: "hook".into(),
        seq: 1,
        origin: 1,
        record: rec("r1"),
        error: "permanent: HTTP 400".into(),
        attempts: 1,
        failed_at_ms: 1_795_000_000_001,
    };
    store.commit_offset(&hook, Seq(5), &[parked]).unwrap();
    store.set_configured_sinks(&[file, hook]).unwrap();
    store.flush().unwrap();
}

#[tokio::test]
async fn version_1_fixture_opens_with_its_contents() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("v1");
    copy_dir(&fixture(), &data);
    let store = Store::open(
        &data,
        &StoreOptions {
            create: false,
            cache_bytes: 8 << 20,
        },
    )
    .unwrap();
    let extent = store.extent().unwrap();
    assert_eq!(extent.next, Seq(5));
    let mut payloads = Vec::new();
    for b in store.iter_batches(Seq(0)) {
        for e in b.unwrap().entries {
            payloads.push(String::from_utf8(e.record.payload).unwrap());
        }
    }
    let first = extent.first.unwrap().0 as usize;
    let want: Vec<String> = (first..5).map(|i| format!("r{i}")).collect();
    assert_eq!(payloads, want);
    let offsets: Vec<(String, u64)> = store
        .offsets()
        .unwrap()
        .into_iter()
        .map(|(n, o)| (n.to_string(), o.next))
        .collect();
    assert_eq!(
        offsets,
        vec![("file".to_string(), 3), ("hook".to_string(), 5)]
    );
    let dlq = store.dlq_list(None).unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(
        (
            dlq[0].sink.as_str(),
            dlq[0].seq,
            dlq[0].record.payload.as_slice()
        ),
        ("hook", 1, &b"r1"[..])
    );
    let log_id = store.log_id();
    drop(store);

    // And the engine replays from it: `file` gets r3 and r4 with their ids.
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
    assert_eq!(
        ob.dlq_list(Some(&SinkName::new("hook").unwrap()))
            .unwrap()
            .len(),
        1
    );
    ob.close(Duration::from_secs(5)).await.unwrap();
}
