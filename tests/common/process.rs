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

/// Re-runs this test binary as the child process of a crash test: only the
/// `#[ignore]`d test `name`, with `{prefix}_{key}` set for each of `env`
/// (and `{prefix}_DRAIN` when `drain`), `RUST_LOG=warn`, stdout discarded
/// and stderr piped (see [`sigkill_after`]).
pub fn spawn_child_test(
    name: &str,
    prefix: &str,
    env: &[(&str, String)],
    drain: bool,
) -> std::process::Child {
    let mut c = Command::new(std::env::current_exe().expect("the test binary's path"));
    c.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("RUST_LOG", "warn")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        c.env(format!("{prefix}_{k}"), v);
    }
    if drain {
        c.env(format!("{prefix}_DRAIN"), "1");
    }
    c.spawn().expect("spawn the child test")
}

/// `path` opened for appending, created if need be.
pub fn append_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for appending")
}

/// Appends one line and fsyncs it, as a crash test's child records what it
/// was told before it could be killed.
pub fn append_synced(f: &mut std::fs::File, line: &str) {
    use std::io::Write;
    f.write_all(line.as_bytes()).expect("append");
    f.sync_data().expect("fsync");
}

/// What [`spawn_child_test`] gave a child: `{prefix}_DIR`, `{prefix}_START`
/// (a number) and whether `{prefix}_DRAIN` is set.
pub fn child_env(prefix: &str) -> (std::path::PathBuf, u64, bool) {
    let var = |k: &str| std::env::var(format!("{prefix}_{k}"));
    let dir = var("DIR").expect("the child's directory");
    let start = var("START").map_or(0, |s| s.parse().expect("a number"));
    (dir.into(), start, var("DRAIN").is_ok())
}

/// Lets `child` run for `after`, then SIGKILLs it and returns its stderr.
/// A child that exited on its own before that fails the test.
pub fn sigkill_after(mut child: std::process::Child, after: Duration, what: &str) -> String {
    std::thread::sleep(after);
    if let Ok(Some(st)) = child.try_wait() {
        let out = child.wait_with_output().expect("the child's output");
        panic!(
            "{what}: the child exited early ({st:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    child.kill().expect("SIGKILL the child");
    let out = child.wait_with_output().expect("the child's output");
    String::from_utf8_lossy(&out.stderr).into_owned()
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
