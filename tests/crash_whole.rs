//! Crash test of whole requests: a request cut into many log values, with or
//! without an idempotency key, is all there after a SIGKILL or not at all
//! (`store::intent`).
//!
//! The child (this test binary re-run with `--ignored --exact whole_child`)
//! writes log values of at most 512 bytes, so a request of 2 to 120 records
//! of about 90 bytes is a run of up to 24 values, four senders at once, and every other request
//! carries an idempotency key. Before each dispatch a sender appends the
//! request (id, records, keyed) to its `pending-N.log`, after its receipts it appends the
//! id and first seq to `receipts.log`, both fsynced. Its sink writes
//! `seq request index` per delivered record. When it starts again it
//! re-sends each sender's last pending request if that was keyed and not receipted,
//! with the same key and records, as a client retrying would.
//!
//! The parent SIGKILLs it at random moments, then lets one run drain, and
//! checks from the sink's output:
//! - a request is delivered whole or not at all: never part of its records;
//! - a record has one seq: no request was appended twice (a key that
//!   survived without its records, or records without their key, would show
//!   here);
//! - every receipted request is delivered, at the seqs its receipt named.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use outbox::sink::{BoxFuture, DeliveryContext, DeliveryResult, Sink};
use outbox::{Outbox, OutboxConfig, Record, SinkConfig, SyncPolicy};
use rand::Rng;

use common::process::{
    append_file, append_synced, child_env, kill_count, sigkill_after, spawn_child_test,
};

/// Appends `seq request index` per delivered record, unsynced: a SIGKILL
/// leaves the page cache, so the line outlives the process.
struct Lines(parking_lot::Mutex<std::fs::File>);

impl Sink for Lines {
    fn deliver<'a>(
        &'a self,
        record: &'a Record,
        ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        let text = String::from_utf8_lossy(&record.payload);
        let mut words = text.split(' ');
        let (req, idx) = (words.next().unwrap(), words.next().unwrap());
        let line = format!("{} {req} {idx}\n", ctx.seq.0);
        self.0.lock().write_all(line.as_bytes()).unwrap();
        Box::pin(async { Ok(()) })
    }
    fn kind(&self) -> &'static str {
        "lines"
    }
}

/// Whole lines of `path`, split on spaces; a torn last line is left out.
fn rows(path: &Path) -> Vec<Vec<u64>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .map(|l| l.split(' ').map(|w| w.parse().unwrap()).collect())
        .collect()
}

/// The records of request `id`: `n` of them, about 90 bytes each.
fn request(id: u64, n: u64) -> Vec<(Record, Vec<u64>)> {
    (0..n)
        .map(|i| {
            let payload = format!("{id} {i} {}", "w".repeat(80));
            (Record::new(payload.into_bytes()), vec![id * 100 + i])
        })
        .collect()
}

async fn send(ob: &Outbox<u64>, id: u64, n: u64, keyed: bool) -> u64 {
    let receipts = if keyed {
        ob.dispatch_once(&format!("k{id}"), request(id, n))
            .await
            .unwrap()
            .receipts
    } else {
        ob.dispatch_many(request(id, n)).await.unwrap()
    };
    assert_eq!(receipts.len() as u64, n);
    receipts[0].seq.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of whole_requests_survive_sigkill; run by it, not on its own"]
async fn whole_child() {
    let (dir, start, drain) = child_env("OUTBOX_WHOLE");
    let cfg = OutboxConfig {
        max_value_bytes: 512,
        backlog_value_bytes: 512,
        sync: SyncPolicy::Full,
        ..OutboxConfig::default()
    };
    if dir.join("data").exists() {
        let s = outbox::inspect::Inspector::open(dir.join("data")).unwrap();
        if let Some(from) = s.interrupted_write().unwrap() {
            eprintln!("INTERRUPTED WRITE from seq {}", from.0);
        }
    }
    let sink = Lines(parking_lot::Mutex::new(append_file(&dir.join("out.txt"))));
    let sink_cfg = SinkConfig {
        batch_max: 16,
        ..SinkConfig::default()
    };
    let (ob, _acks) = Outbox::<u64>::builder(dir.join("data"))
        .config(cfg)
        .sink("a", sink, sink_cfg)
        .open()
        .await
        .unwrap_or_else(|e| panic!("OPEN FAILED: {e}"));
    let ob = std::sync::Arc::new(ob);
    let receipts = std::sync::Arc::new(parking_lot::Mutex::new(append_file(
        &dir.join("receipts.log"),
    )));
    let done: BTreeSet<u64> = rows(&dir.join("receipts.log"))
        .iter()
        .map(|r| r[0])
        .collect();
    for k in 0..SENDERS {
        if let Some(last) = rows(&dir.join(format!("pending-{k}.log"))).last()
            && last[2] == 1
            && !done.contains(&last[0])
        {
            // A client retrying the request it never got an answer for.
            let first = send(&ob, last[0], last[1], true).await;
            append_synced(&mut receipts.lock(), &format!("{} {first}\n", last[0]));
        }
    }
    if drain {
        let ob = std::sync::Arc::into_inner(ob).unwrap();
        let report = ob.shutdown(Duration::from_secs(60)).await.unwrap();
        assert!(report.drained, "{report:?}");
        return;
    }
    // Several senders, so the appender writes runs most of the time and a
    // kill often lands inside one.
    let mut tasks = Vec::new();
    for k in 0..SENDERS {
        let (ob, receipts) = (ob.clone(), receipts.clone());
        let mut pending = append_file(&dir.join(format!("pending-{k}.log")));
        tasks.push(tokio::spawn(async move {
            for id in (start + k..).step_by(SENDERS as usize) {
                let n = rand::rng().random_range(2..=120u64);
                let keyed = id % 2 == 1;
                append_synced(&mut pending, &format!("{id} {n} {}\n", u8::from(keyed)));
                let first = send(&ob, id, n, keyed).await;
                append_synced(&mut receipts.lock(), &format!("{id} {first}\n"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Concurrent senders in the child, each with its own `pending-N.log`.
const SENDERS: u64 = 4;

fn spawn_child(dir: &Path, start: u64, drain: bool) -> std::process::Child {
    let env = [
        ("DIR", dir.display().to_string()),
        ("START", start.to_string()),
    ];
    spawn_child_test("whole_child", "OUTBOX_WHOLE", &env, drain)
}

#[test]
fn whole_requests_survive_sigkill() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut rng = rand::rng();
    let rounds = kill_count("OUTBOX_WHOLE_KILLS", 10) as u64;
    let mut undone = 0;
    for round in 0..rounds {
        let child = spawn_child(dir, round * 1_000_000, false);
        let run = Duration::from_millis(rng.random_range(200..700));
        let stderr = sigkill_after(child, run, &format!("round {round}"));
        undone += stderr.matches("INTERRUPTED WRITE").count();
    }
    let child = spawn_child(dir, u64::MAX / 2, true);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "drain run failed: {stderr}");
    undone += stderr.matches("INTERRUPTED WRITE").count();

    let sizes: BTreeMap<u64, u64> = (0..SENDERS)
        .flat_map(|k| rows(&dir.join(format!("pending-{k}.log"))))
        .map(|r| (r[0], r[1]))
        .collect();
    let receipted: BTreeMap<u64, u64> = rows(&dir.join("receipts.log"))
        .iter()
        .map(|r| (r[0], r[1]))
        .collect();
    // (request, index) → every seq it was delivered under.
    let mut seqs: BTreeMap<(u64, u64), BTreeSet<u64>> = BTreeMap::new();
    for r in rows(&dir.join("out.txt")) {
        seqs.entry((r[1], r[2])).or_default().insert(r[0]);
    }
    let mut delivered: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for ((req, idx), s) in &seqs {
        assert_eq!(
            s.len(),
            1,
            "request {req} record {idx} was appended more than once: seqs {s:?}"
        );
        delivered.entry(*req).or_default().insert(*idx);
    }
    for (req, idxs) in &delivered {
        let n = sizes[req];
        assert_eq!(
            idxs.len() as u64,
            n,
            "request {req}: {} of its {n} records delivered, a request is whole or absent",
            idxs.len()
        );
    }
    for (req, first) in &receipted {
        assert!(
            delivered.contains_key(req),
            "request {req} was receipted and never delivered"
        );
        for i in 0..sizes[req] {
            let s = &seqs[&(*req, i)];
            assert!(
                s.contains(&(first + i)),
                "request {req} record {i}: receipted at seq {}, delivered at {s:?}",
                first + i
            );
        }
    }
    assert!(receipted.len() > 100, "only {} requests", receipted.len());
    let lost_unreceipted = sizes.len() - delivered.len();
    println!(
        "crash-whole: kills={rounds} requests={} receipted={} delivered={} not delivered (never receipted)={lost_unreceipted} writes undone at open={undone}",
        sizes.len(),
        receipted.len(),
        delivered.len()
    );
}
