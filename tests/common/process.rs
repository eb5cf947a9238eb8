//! Processes and files around a test: the `outbox` binary, how many times a
//! crash test kills, copying a stopped data directory, waiting, this
//! process's memory, and external tools that CI must have. Self-contained:
//! the compare bench includes this file alone with `#[path]`.
// A crate that includes this file alone uses only part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The `outbox` binary cargo built for this test.
pub fn bin_path() -> &'static str {
    env!("CARGO_BIN_EXE_outbox")
}

/// A command for the `outbox` binary, without the caller's `RUST_LOG`.
pub fn bin() -> Command {
    let mut c = Command::new(bin_path());
    c.env_remove("RUST_LOG");
    c
}

/// Kills per run of a crash test: the number in the environment variable
/// `var` (for a long run), else `default`.
pub fn kill_count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Copies a data directory (its files and its folders, such as `blobs`)
/// to `to`, which is emptied first.
pub fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
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

/// Waits (blocking the thread) until `f` holds, or panics after `secs`
/// seconds with `what`.
pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether this run is CI's (`CI=true`), where a test that cannot run
/// fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The tool `name` if `name --version` runs, or `None` with a `SKIPPED`
/// line. Under `CI=true` a missing tool is a failure: `install` says how
/// to get it.
pub fn tool(name: &str, install: &str) -> Option<Command> {
    match Command::new(name).arg("--version").output() {
        Ok(o) if o.status.success() => Some(Command::new(name)),
        _ => {
            assert!(!in_ci(), "{name} is missing: {install} (.ci/run does)");
            eprintln!("SKIPPED: {name} not found ({install})");
            None
        }
    }
}

/// A `kB` field (`VmRSS`, `VmHWM`, ...) of `/proc/PID/status`, in KiB;
/// `pid` is a number or `self`. `None` once the process has gone.
pub fn proc_status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Resident set size of this process, in MiB.
pub fn rss_mib() -> u64 {
    proc_status_kib("self", "VmRSS").expect("VmRSS in /proc/self/status") / 1024
}

/// Samples this process's RSS every 20 ms until the returned closure is
/// called, which gives the peak in MiB.
pub fn watch_rss() -> impl FnOnce() -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_mib()));
    let t = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(rss_mib(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    move || {
        stop.store(true, Ordering::SeqCst);
        t.join().unwrap();
        peak.load(Ordering::SeqCst)
    }
}
