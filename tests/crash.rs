//! Library-level crash test: a child process embeds the library, dispatches
//! records with ack tokens and writes every receipt and every released
//! token to files (fsynced); the parent SIGKILLs it at random moments and
//! restarts it on the same data directory.
//!
//! After every kill, before the restart could repair anything: every
//! released token's record is in both sinks' durable output (two file
//! sinks, one of which fails transiently now and then). At the end, after
//! a clean drain: every receipted record is in both outputs, intact, and
//! every open succeeded.
//!
//! The child is this test binary itself, re-run with `--ignored --exact
//! crash_child` and `OUTBOX_CRASH_DIR` set.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use outbox::sink::{BoxFuture, DeliveryContext, DeliveryError, DeliveryResult, FileSink, Sink};
use outbox::{Outbox, Record, SinkConfig, SyncPolicy};
use rand::Rng;

use common::numbered;
use common::process::{
    append_file, append_synced, child_env, kill_count, sigkill_after, spawn_child_test,
};
use common::sinks::Stuck;

/// A file sink that fails transiently on about one delivery in ten.
struct Flaky(FileSink);

impl Sink for Flaky {
    fn deliver<'a>(
        &'a self,
        record: &'a Record,
        ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        if rand::rng().random_ratio(1, 10) {
            return Box::pin(async { Err(DeliveryError::transient("flaky: try again")) });
        }
        self.0.deliver(record, ctx)
    }
    fn commit(&self) -> BoxFuture<'_, DeliveryResult> {
        self.0.commit()
    }
    fn kind(&self) -> &'static str {
        "flaky-file"
    }
}

fn sink_cfg() -> SinkConfig {
    SinkConfig {
        retry_max: 1000,
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        batch_max: 32,
        ..SinkConfig::default()
    }
}

/// The child: runs until killed (or, with `OUTBOX_CRASH_DRAIN`, drains and
/// exits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of crash_loop; run by it, not on its own"]
async fn crash_child() {
    let (dir, start, drain) = child_env("OUTBOX_CRASH");
    let sync = match std::env::var("OUTBOX_CRASH_SYNC").as_deref() {
        Ok("always") => SyncPolicy::Always,
        _ => SyncPolicy::Full,
    };
    let a = FileSink::open(dir.join("a.ndjson")).await.unwrap();
    let b = FileSink::open(dir.join("b.ndjson")).await.unwrap();
    let opened = Outbox::<u64>::builder(dir.join("data"))
        .sync(sync)
        .sink("a", a, sink_cfg())
        .sink("b", Flaky(b), sink_cfg())
        .open()
        .await;
    let (ob, mut acks) = match opened {
        Ok(x) => x,
        Err(e) => {
            // The parent counts this as a failed open.
            eprintln!("OPEN FAILED: {e}");
            std::process::exit(70);
        }
    };
    let mut acked = append_file(&dir.join("acked.log"));
    let ack_task = tokio::spawn(async move {
        while let Some(t) = acks.recv().await {
            append_synced(&mut acked, &format!("{t}\n"));
        }
    });
    if drain {
        let report = ob.shutdown(Duration::from_secs(60)).await.unwrap();
        assert!(report.drained, "{report:?}");
        ack_task.await.unwrap();
        return;
    }
    let mut receipts = append_file(&dir.join("receipts.log"));
    let mut next = start;
    loop {
        let n = rand::rng().random_range(1..=20u64);
        let items = (next..next + n)
            .map(|id| {
                let payload = format!("{{\"id\":{id},\"pad\":\"{}\"}}", "z".repeat(64));
                (Record::new(payload.into_bytes()), vec![id])
            })
            .collect();
        ob.dispatch_many(items).await.unwrap();
        let lines: String = (next..next + n).map(|id| format!("{id}\n")).collect();
        append_synced(&mut receipts, &lines);
        next += n;
        // Paced so the sinks keep up and most tokens are released (and
        // checked) before the next kill, rather than a growing backlog.
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(1..8))).await;
    }
}

/// Whole lines of `path` parsed as u64s; a torn last line (a kill in the
/// middle of a write) is left out.
fn ids_file(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    whole.lines().map(|l| l.parse().unwrap()).collect()
}

/// The ids in a sink's output, with how often each appears. Every line must
/// be an intact record; right after a kill the last line may be torn (the
/// file sink cuts it at its next open, and its record was never committed),
/// so `torn_tail_ok` leaves an unterminated last line out.
fn output(path: &Path, torn_tail_ok: bool) -> BTreeMap<u64, u64> {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    if torn_tail_ok {
        text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
    }
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "{}:{}: not an intact record ({e}): {line:?}",
                path.display(),
                i + 1
            )
        });
        assert_eq!(v["pad"].as_str().map(str::len), Some(64), "{line}");
        *out.entry(v["id"].as_u64().unwrap()).or_default() += 1;
    }
    out
}

fn spawn_child(dir: &Path, start: u64, drain: bool, sync: &str) -> std::process::Child {
    let env = [
        ("DIR", dir.display().to_string()),
        ("START", start.to_string()),
        ("SYNC", sync.to_string()),
    ];
    spawn_child_test("crash_child", "OUTBOX_CRASH", &env, drain)
}

#[test]
fn crash_loop_never_acks_early_and_loses_no_receipted_record() {
    crash_loop("full");
}

/// `always` promises the same across a process crash (not a power cut):
/// sled's flush has handed every receipted byte to the kernel.
#[test]
fn crash_loop_under_sync_always_loses_no_receipted_record() {
    crash_loop("always");
}

fn crash_loop(sync: &str) {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut checked_acks = 0;
    for round in 0..kill_count("OUTBOX_CRASH_KILLS", 12) as u64 {
        let child = spawn_child(dir, round * 1_000_000, false, sync);
        let run = Duration::from_millis(rng.random_range(150..600));
        sigkill_after(child, run, &format!("round {round}"));
        kills += 1;
        // Before any restart: every released token is durable in both.
        let acked = ids_file(&dir.join("acked.log"));
        let a = output(&dir.join("a.ndjson"), true);
        let b = output(&dir.join("b.ndjson"), true);
        let early: Vec<&u64> = acked
            .iter()
            .filter(|id| !a.contains_key(id) || !b.contains_key(id))
            .collect();
        assert!(
            early.is_empty(),
            "round {round}: tokens released for records not in every sink's output: {early:?}"
        );
        checked_acks = acked.len();
    }
    // A clean drain; then every receipted record is in both outputs.
    let child = spawn_child(dir, u64::MAX / 2, true, sync);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "drain run failed: {stderr}");
    assert!(!stderr.contains("OPEN FAILED"), "{stderr}");
    let receipted: BTreeSet<u64> = ids_file(&dir.join("receipts.log")).into_iter().collect();
    let acked = ids_file(&dir.join("acked.log"));
    let a = output(&dir.join("a.ndjson"), false);
    let b = output(&dir.join("b.ndjson"), false);
    let lost: Vec<&u64> = receipted
        .iter()
        .filter(|id| !a.contains_key(id) || !b.contains_key(id))
        .collect();
    assert!(lost.is_empty(), "receipted but never delivered: {lost:?}");
    let acked_set: BTreeSet<u64> = acked.iter().copied().collect();
    assert_eq!(acked_set.len(), acked.len(), "a token was released twice");
    assert!(
        receipted.len() > 100,
        "only {} records receipted",
        receipted.len()
    );
    let dups: u64 = a.values().chain(b.values()).map(|n| n - 1).sum();
    println!(
        "crash-lib ({sync}): kills={kills} receipted={} acked={} (checked after kills: {checked_acks}) lost=0 duplicates={dups}",
        receipted.len(),
        acked.len()
    );
}

// ------------------------------------------- replay with the same ids --

/// Records what it delivers: (seq, delivery id, payload).
#[derive(Clone, Default)]
struct Collect(std::sync::Arc<std::sync::Mutex<Vec<(u64, String, String)>>>);

impl Sink for Collect {
    fn deliver<'a>(
        &'a self,
        record: &'a Record,
        ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        self.0.lock().unwrap().push((
            ctx.seq.0,
            ctx.delivery_id.to_string(),
            String::from_utf8_lossy(&record.payload).into_owned(),
        ));
        Box::pin(std::future::ready(Ok(())))
    }
    fn kind(&self) -> &'static str {
        "collect"
    }
}

/// The child of `replay_after_sigkill_keeps_delivery_ids`: dispatches 50
/// records to a sink that never delivers, writes each receipt (fsynced),
/// then waits to be killed.
#[tokio::test]
#[ignore = "the child process of replay_after_sigkill_keeps_delivery_ids"]
async fn replay_child() {
    let dir = PathBuf::from(std::env::var("OUTBOX_CRASH_DIR").expect("OUTBOX_CRASH_DIR"));
    let (ob, _acks) = Outbox::<u32>::builder(dir.join("data"))
        .sink("web", Stuck, sink_cfg())
        .open()
        .await
        .unwrap();
    let receipts = ob
        .dispatch_many(numbered(50, |i| format!("e{i}")))
        .await
        .unwrap();
    let mut f = append_file(&dir.join("receipts.log"));
    let lines: String = receipts
        .iter()
        .map(|r| format!("{} {}\n", r.seq.0, r.delivery_id))
        .collect();
    append_synced(&mut f, &lines);
    std::future::pending::<()>().await;
}

/// A real crash with records pending: SIGKILL, then a reopen in this
/// process replays every receipted record, in order, under the delivery id
/// of its receipt; new records get seqs above every receipted one.
#[tokio::test]
async fn replay_after_sigkill_keeps_delivery_ids() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut child = spawn_child_test(
        "replay_child",
        "OUTBOX_CRASH",
        &[("DIR", dir.display().to_string())],
        false,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let receipts: Vec<(u64, String)> = loop {
        let text = std::fs::read_to_string(dir.join("receipts.log")).unwrap_or_default();
        if text.lines().count() == 50 && text.ends_with('\n') {
            break text
                .lines()
                .map(|l| {
                    let (s, id) = l.split_once(' ').unwrap();
                    (s.parse().unwrap(), id.to_string())
                })
                .collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child wrote no receipts"
        );
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the child exited ({st:?}) before it was killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let sink = Collect::default();
    let (ob, mut acks) = Outbox::<u32>::builder(dir.join("data"))
        .sink("web", sink.clone(), sink_cfg())
        .open()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sink.0.lock().unwrap().len() < 50 {
        assert!(std::time::Instant::now() < deadline, "replay stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = sink.0.lock().unwrap().clone();
    let want: Vec<(u64, String, String)> = receipts
        .iter()
        .enumerate()
        .map(|(i, (seq, id))| (*seq, id.clone(), format!("e{i}")))
        .collect();
    assert_eq!(got, want, "same seqs, ids and payloads, in order");
    // The crashed process's tokens are gone with it: nothing is released
    // for them in this one.
    assert!(acks.try_recv().is_err());
    let next = ob
        .dispatch(Record::new(b"after".to_vec()), vec![])
        .await
        .unwrap();
    assert!(
        next.seq.0 >= 50,
        "a seq at or above a receipted one: {next:?}"
    );
    let report = ob.shutdown(Duration::from_secs(10)).await.unwrap();
    assert!(report.drained && report.corrupt.is_empty(), "{report:?}");
}
