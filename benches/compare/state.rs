//! The engine's state over time: latency at an offered load, restart with a
//! backlog, disk use, and peak RSS with a backlog.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use outbox::{Outbox, Record};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::engine::{NoopSink, engine_cfg, open_one, pump, sink_cfg};
use crate::{PAYLOAD, payload, pct};

// ------------------------------------------------------------- latency

/// Offered load of 10k records/s for `secs` seconds, one `dispatch` per
/// record from its own task at its scheduled time.
pub(crate) async fn latency(total: u64) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (ob, mut acks) = Outbox::<(u64, Instant)>::builder(dir.path())
        .sink("s", NoopSink::new(), sink_cfg())
        .open()
        .await
        .unwrap();
    let ob = Arc::new(ob);

    let (lat_tx, mut lat_rx) = mpsc::unbounded_channel::<u64>();
    let ack_task = tokio::spawn(async move {
        let mut v = Vec::with_capacity(total as usize);
        while (v.len() as u64) < total {
            match acks.recv().await {
                Some((_, at)) => v.push(at.elapsed().as_micros() as u64),
                None => break,
            }
        }
        v
    });
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        tick.tick().await;
        let ob = ob.clone();
        let tx = lat_tx.clone();
        tokio::spawn(async move {
            let at = Instant::now();
            ob.dispatch(Record::new(payload(i)), vec![(i, at)])
                .await
                .unwrap();
            let _ = tx.send(at.elapsed().as_micros() as u64);
        });
    }
    drop(lat_tx);
    let mut durable = Vec::with_capacity(total as usize);
    while let Some(l) = lat_rx.recv().await {
        durable.push(l);
    }
    let offered = total as f64 / start.elapsed().as_secs_f64();
    let mut acked = ack_task.await.unwrap();
    durable.sort_unstable();
    acked.sort_unstable();
    outbox::Outbox::clone(&ob)
        .shutdown(Duration::from_secs(10))
        .await
        .unwrap();
    json!({
        "offered_records_per_sec": offered.round(),
        "records": total,
        "dispatch_to_durable_ms": {"p50": pct(&durable, 0.5), "p99": pct(&durable, 0.99), "p999": pct(&durable, 0.999)},
        "dispatch_to_ack_ms": {"p50": pct(&acked, 0.5), "p99": pct(&acked, 0.99), "p999": pct(&acked, 0.999)},
    })
}

// ------------------------------------------------------------- f. restart

/// Leaves `pending` records undelivered for sink `s` in `dir`.
pub(crate) async fn fill_pending(dir: &Path, pending: u64) {
    let (gated, _gate) = {
        let (tx, rx) = watch::channel(false);
        let mut s = NoopSink::new();
        s.gate = Some(rx);
        (s, tx)
    };
    let (ob, _acks) = Outbox::<u64>::builder(dir)
        .config(engine_cfg())
        .sink("s", gated, sink_cfg())
        .open()
        .await
        .unwrap();
    let ob = Arc::new(ob);
    pump(&ob, pending).await;
    let ob = Arc::try_unwrap(ob).ok().unwrap();
    stop_undrained(ob, dir).await;
}

/// Drops the outbox without draining and waits for its directory's lock to
/// go (sled flushes on drop: an undrained stop, not a crash).
async fn stop_undrained<T: Send + 'static>(ob: Outbox<T>, dir: &Path) {
    drop(ob);
    while outbox::inspect::is_locked(dir) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Time from the start of `open` to the first redelivered record.
async fn time_to_first(dir: &Path) -> (f64, f64) {
    let sink = NoopSink::new();
    let mut first = sink.first.subscribe();
    let start = Instant::now();
    let (ob, _acks) = Outbox::<u64>::builder(dir)
        .config(engine_cfg())
        .sink("s", sink.clone(), sink_cfg())
        .open()
        .await
        .unwrap();
    let opened = start.elapsed().as_secs_f64();
    let _ = first.wait_for(|f| f.is_some()).await;
    let t = first.borrow().unwrap().duration_since(start).as_secs_f64();
    stop_undrained(ob, dir).await;
    (opened, t)
}

pub(crate) async fn restart(pending: u64, passed: u64) -> Value {
    let dir = tempfile::tempdir().unwrap();
    fill_pending(dir.path(), pending).await;
    let (open1, first1) = time_to_first(dir.path()).await;

    // A second directory that first passed `passed` records through one
    // session, then left `pending` behind.
    let dir2 = tempfile::tempdir().unwrap();
    {
        let (ob, mut acks) = open_one(dir2.path(), NoopSink::new()).await;
        let ob = Arc::new(ob);
        pump(&ob, passed).await;
        let mut acked = 0;
        while acked < passed && acks.recv().await.is_some() {
            acked += 1;
        }
        Arc::try_unwrap(ob)
            .ok()
            .unwrap()
            .shutdown(Duration::from_secs(30))
            .await
            .unwrap();
    }
    fill_pending(dir2.path(), pending).await;
    let (open2, first2) = time_to_first(dir2.path()).await;
    json!({
        "pending": pending,
        "open_s": open1,
        "first_redelivery_s": first1,
        "after_passed": passed,
        "open_after_passed_s": open2,
        "first_redelivery_after_passed_s": first2,
    })
}

/// Opens `dir` and waits until its sink delivered the `backlog`, then
/// `settle` more, and closes.
async fn drain(dir: &Path, backlog: u64, settle: Duration) {
    let sink = NoopSink::new();
    let delivered = sink.delivered.clone();
    let (ob, _a) = open_one(dir, sink).await;
    while delivered.load(Ordering::Relaxed) < backlog {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(settle).await;
    ob.shutdown(Duration::from_secs(10)).await.unwrap();
}

// ---------------------------------------------------------------- g. disk

pub(crate) fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            total += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

/// Disk against live bytes. Live bytes are what a sink still has to
/// deliver: lag times the stored size of a record.
pub(crate) async fn disk(backlog: u64, stream: u64) -> Value {
    let live_per_record = PAYLOAD as u64;
    // Steady state: records stream through while a sink keeps up; the
    // directory is sampled every 100 ms and every sample is held to the
    // target.
    let dir = tempfile::tempdir().unwrap();
    let (ob, mut acks) = open_one(dir.path(), NoopSink::new()).await;
    let ob = Arc::new(ob);
    let sampler = {
        let ob = ob.clone();
        let path = dir.path().to_path_buf();
        tokio::spawn(async move {
            let mut worst = (0.0f64, 0u64, 0u64);
            let mut max_disk = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let Ok(st) = ob.status() else { break };
                let live = st.sinks[0].lag * live_per_record;
                let disk = dir_size(&path);
                max_disk = max_disk.max(disk);
                let ratio = disk as f64 / (3.0 * live as f64 + 64.0 * 1048576.0);
                if ratio > worst.0 {
                    worst = (ratio, disk, live);
                }
                if ob.is_closing() {
                    break;
                }
            }
            (worst, max_disk)
        })
    };
    pump(&ob, stream).await;
    let mut acked = 0;
    while acked < stream && acks.recv().await.is_some() {
        acked += 1;
    }
    tokio::time::sleep(Duration::from_millis(600)).await; // a truncation pass
    let end_disk = dir_size(dir.path());
    outbox::Outbox::clone(&ob)
        .shutdown(Duration::from_secs(10))
        .await
        .unwrap();
    let ((worst_ratio, worst_disk, worst_live), max_disk) = sampler.await.unwrap();
    drop(ob);

    // A backlog, then drained, then compacted.
    let dir2 = tempfile::tempdir().unwrap();
    fill_pending(dir2.path(), backlog).await;
    let backlog_disk = dir_size(dir2.path());
    drain(dir2.path(), backlog, Duration::from_millis(800)).await;
    let drained_disk = dir_size(dir2.path());
    let out = tempfile::tempdir().unwrap();
    let compacted = out.path().join("c");
    {
        let store = outbox::inspect::Inspector::open(dir2.path()).unwrap();
        store.export_to(&compacted, &mut |_| {}).unwrap();
    }
    let compacted_disk = dir_size(&compacted);
    json!({
        "stream_records": stream,
        "steady_max_disk_bytes": max_disk,
        "steady_worst_sample": {"disk_bytes": worst_disk, "live_bytes": worst_live, "ratio_to_limit": worst_ratio},
        "steady_end_disk_bytes": end_disk,
        "backlog_records": backlog,
        "backlog_live_bytes": backlog * live_per_record,
        "backlog_disk_bytes": backlog_disk,
        "drained_disk_bytes": drained_disk,
        "compacted_disk_bytes": compacted_disk,
    })
}

// ----------------------------------------------------------------- h. RSS

/// Runs [`rss`] in a fresh process, so earlier phases do not count.
pub(crate) fn rss_in_child(backlog: u64) -> Value {
    let child = |args: &[&str]| -> Value {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(args)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&out.stderr)}))
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_string_lossy().to_string();
    let n = backlog.to_string();
    let fill = child(&["--rss-child", "fill", &path, &n]);
    let replay = child(&["--rss-child", "replay", &path, &n]);
    json!({
        "backlog_records": backlog,
        "fill_peak_rss_kib": fill["peak_rss_kib"],
        "fill_records_per_sec": fill["records_per_sec"],
        "replay_peak_rss_kib": replay["peak_rss_kib"],
        "peak_rss_kib": fill["peak_rss_kib"].as_u64().unwrap_or(u64::MAX).max(replay["peak_rss_kib"].as_u64().unwrap_or(u64::MAX)),
    })
}

/// One process's part of the RSS measure: `fill` builds a backlog of
/// `backlog` records in `dir` and exits; `replay` opens it, as a daemon
/// restarted with that backlog does, and delivers all of it.
///
/// `OUTBOX_BENCH_TRIM_MS=N` (an experiment knob; a recorded run sets none)
/// calls `malloc_trim` every N ms from a thread of its own, as the binary
/// does every second, to tell memory held free by glibc from memory in use.
pub(crate) async fn rss(mode: &str, dir: &Path, backlog: u64) -> Value {
    let started = Instant::now();
    if let Some(ms) = std::env::var("OUTBOX_BENCH_TRIM_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(ms));
                crate::malloc::trim_glibc_malloc();
            }
        });
    }
    if mode == "fill" {
        fill_pending(dir, backlog).await;
    } else {
        drain(dir, backlog, Duration::ZERO).await;
    }
    json!({"mode": mode, "peak_rss_kib": crate::daemon::vm_hwm_kib(std::process::id()), "records_per_sec": (backlog as f64 / started.elapsed().as_secs_f64()).round()})
}
