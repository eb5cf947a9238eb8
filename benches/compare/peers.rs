//! The systems a user would pick instead, measured beside outbox: the
//! transactional-outbox table in SQLite.
//!
//! Durability: WAL with `synchronous=FULL` fsyncs the WAL at every commit,
//! so a committed insert or delete survives a power loss, as outbox's
//! default `sync = "full"` does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior, params};

use crate::payload;

/// Records per producer transaction: as many as outbox's largest group
/// commit (`max_batch_records`), which favours SQLite.
const INSERT_BATCH: u64 = 1024;
/// Records a consumer pass reads, handles and deletes in one transaction:
/// a sink's `batch_max`.
const CONSUME_BATCH: i64 = 512;

fn open(path: &std::path::Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "FULL").unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c
}

/// One producer inserting `n` records in transactions of
/// [`INSERT_BATCH`], one consumer reading them in id order and deleting
/// each batch it has handled: from the first insert until the table is
/// empty again.
pub(crate) fn sqlite_outbox(n: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let mut producer = open(&path);
    producer
        .execute(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)",
            [],
        )
        .unwrap();
    let consumed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let consumer = {
        let (path, consumed) = (path.clone(), consumed.clone());
        std::thread::spawn(move || {
            let mut c = open(&path);
            let mut after = 0i64;
            while consumed.load(Ordering::Relaxed) < n {
                // IMMEDIATE: the write lock is taken (waiting under the busy
                // timeout) before the read, as a deferred read that later
                // deletes would fail with SQLITE_BUSY against the producer.
                let tx = c
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .unwrap();
                let mut last = None;
                let mut got = 0;
                {
                    let mut q = tx
                        .prepare_cached(
                            "SELECT id, payload FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
                        )
                        .unwrap();
                    let mut rows = q.query(params![after, CONSUME_BATCH]).unwrap();
                    while let Some(row) = rows.next().unwrap() {
                        let id: i64 = row.get(0).unwrap();
                        let p: Vec<u8> = row.get(1).unwrap();
                        std::hint::black_box(p);
                        last = Some(id);
                        got += 1;
                    }
                }
                match last {
                    Some(id) => {
                        tx.execute("DELETE FROM outbox WHERE id <= ?1", params![id])
                            .unwrap();
                        tx.commit().unwrap();
                        after = id;
                        consumed.fetch_add(got, Ordering::Relaxed);
                    }
                    None => {
                        drop(tx);
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            }
        })
    };
    let mut i = 0;
    while i < n {
        let end = (i + INSERT_BATCH).min(n);
        let tx = producer
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        {
            let mut ins = tx
                .prepare_cached("INSERT INTO outbox (id, payload) VALUES (?1, ?2)")
                .unwrap();
            for k in i..end {
                ins.execute(params![k as i64 + 1, payload(k)]).unwrap();
            }
        }
        tx.commit().unwrap();
        i = end;
    }
    consumer.join().unwrap();
    start.elapsed()
}
