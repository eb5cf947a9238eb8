//! Writes `tests/fixtures/v2`, the fixture of the second on-disk format
//! (`tests/format_fixture.rs` checks that it keeps opening). It needs the
//! store's writers and the private encoder, so it lives in the crate, as an
//! ignored test run by hand for a new format version:
//! `cargo test --lib -- --ignored write_fixture_v2`.
//!
//! Invariant: what it writes is what `tests/format_fixture.rs` documents
//! and asserts; it never runs in a normal `cargo test`.

use std::path::Path;

use uuid::Uuid;

use crate::codec::{self, Attempt, BatchHeader, BatchKind, DlqEntry, LogEntry};
use crate::store::{Store, StoreOptions};
use crate::types::{DeliveryId, Record, Seq, SinkName};

const AT: u64 = 1_700_000_000_000;

fn given_id() -> DeliveryId {
    DeliveryId {
        log_id: Uuid::from_u128(0xabcdef),
        seq: Seq(777),
    }
}

fn rec(payload: &str) -> Record {
    Record::new(payload.as_bytes().to_vec())
}

#[test]
#[ignore = "writes the fixture; run by hand for a new format version"]
fn write_fixture_v2() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2");
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
    let v = codec::encode_batch(Seq(0), BatchHeader::records(&entries, AT), &entries).unwrap();
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
    let v = codec::encode_batch(Seq(10), BatchHeader::records(&redriven, AT), &redriven).unwrap();
    store.append_runs(vec![(Seq(10), v)], &[]).unwrap();
    let file = SinkName::new("file").unwrap();
    let hook = SinkName::new("hook").unwrap();
    let old = SinkName::new("old").unwrap();
    store.commit_offset(&file, Seq(10), &[]).unwrap();
    store.commit_offset(&old, Seq(0), &[]).unwrap();
    let dead_letter = DlqEntry {
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
    store.commit_offset(&hook, Seq(4), &[dead_letter]).unwrap();
    store
        .set_members(&[
            codec::Member {
                name: "file".into(),
                orphaned_at_ms: None,
            },
            codec::Member {
                name: "hook".into(),
                orphaned_at_ms: None,
            },
            codec::Member {
                name: "old".into(),
                orphaned_at_ms: Some(AT),
            },
        ])
        .unwrap();
    store.reserve_seqs(Seq(11)).unwrap();
    store.flush().unwrap();
}
