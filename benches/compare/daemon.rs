//! The real binary under test: `outbox run` with a TOML config written
//! here, fed NDJSON on stdin, its stdout counted, its stderr kept for the
//! report, its peak RSS read from `/proc/PID/status`.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::PAYLOAD;
// `bin_path`: `target/release/outbox` under `cargo bench`,
// `target/debug/outbox` under `cargo test`.
use crate::process::{bin_path, proc_status_kib};

/// Bytes of one NDJSON line: the 256-byte payload and its `\n`.
pub(crate) const LINE: u64 = PAYLOAD as u64 + 1;

/// The signing secret of every webhook sink (the receivers do not check
/// signatures; signing is part of what a delivery costs).
pub(crate) const SECRET_ENV: &str = "OUTBOX_BENCH_WEBHOOK_SECRET";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Record `i` as one JSON object of exactly 256 bytes,
/// `{"i":"NNNNNNNNNN","p":"xx…"}`, so a receiver finds its index at a fixed
/// place.
pub(crate) fn record(i: u64) -> Vec<u8> {
    let mut p = format!("{{\"i\":\"{i:010}\",\"p\":\"").into_bytes();
    p.resize(PAYLOAD - 2, b'x');
    p.extend_from_slice(b"\"}");
    p
}

/// The index of a payload made by [`record`], if it is one.
pub(crate) fn index_of(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload.get(6..16)?).ok()?.parse().ok()
}

/// Records `from..to` as NDJSON.
pub(crate) fn ndjson(from: u64, to: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(((to - from) * LINE) as usize);
    for i in from..to {
        out.extend_from_slice(&record(i));
        out.push(b'\n');
    }
    out
}

/// A directory holding the daemon's config, data directory and output.
pub(crate) struct Setup {
    pub(crate) dir: tempfile::TempDir,
}

impl Setup {
    pub(crate) fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes `outbox.toml`: `data_dir` inside the directory, `sync`, the
    /// drain timeout, log level `warn`, then `rest` (tables: `[ingest]`,
    /// `[source]`, `[[sinks]]`).
    pub(crate) fn write(&self, sync: &str, drain_secs: u64, rest: &str) {
        let toml = format!(
            "data_dir = {:?}\nsync = {sync:?}\ndrain_timeout_secs = {drain_secs}\n[log]\nlevel = \"warn\"\n{rest}",
            self.path("data")
        );
        std::fs::write(self.path("outbox.toml"), toml).unwrap();
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// What goes to the daemon's stdin.
pub(crate) enum Feed {
    /// Nothing; stdin is closed at once (a daemon with another source).
    None,
    /// Records `0..n`, then EOF, which makes `outbox run` drain and exit.
    Eof(u64),
    /// Records `0..n`, then stdin stays open until [`Daemon::close_stdin`].
    Hold(u64),
}

/// A running `outbox run --config`.
pub(crate) struct Daemon {
    child: Child,
    feeder: Option<JoinHandle<Option<ChildStdin>>>,
    stdout_bytes: Arc<AtomicU64>,
    stderr: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts the binary on `setup`'s config.
    pub(crate) fn start(setup: &Setup, feed: Feed) -> Daemon {
        let mut child = Command::new(bin_path())
            .arg("run")
            .arg("--config")
            .arg(setup.path("outbox.toml"))
            .env_remove("RUST_LOG")
            .env(SECRET_ENV, SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin_path()));
        let stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            let (n, hold) = match feed {
                Feed::None => return None,
                Feed::Eof(n) => (n, false),
                Feed::Hold(n) => (n, true),
            };
            let mut w = BufWriter::with_capacity(1 << 20, stdin);
            let mut i = 0;
            while i < n {
                let end = (i + 4096).min(n);
                if w.write_all(&ndjson(i, end)).is_err() {
                    return None;
                }
                i = end;
            }
            let stdin = w.into_inner().ok()?;
            hold.then_some(stdin)
        });
        let stdout_bytes = Arc::new(AtomicU64::new(0));
        {
            let mut out = child.stdout.take().unwrap();
            let count = stdout_bytes.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    count.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        {
            let err = child.stderr.take().unwrap();
            let keep = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    keep.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        Daemon {
            child,
            feeder: Some(feeder),
            stdout_bytes,
            stderr,
            lines,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address announced as `outbox: WHAT listening on http://ADDR`.
    ///
    /// # Panics
    /// When the daemon exits or stays silent for 30 s first.
    pub(crate) fn listening(&self, what: &str) -> SocketAddr {
        let prefix = format!("outbox: {what} listening on http://");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(a) = l.strip_prefix(&prefix) {
                        return a.trim().parse().unwrap();
                    }
                }
                Err(_) => panic!("no {what} listener announced: {}", self.stderr()),
            }
        }
    }

    /// Bytes the daemon has written to stdout so far.
    pub(crate) fn stdout_bytes(&self) -> u64 {
        self.stdout_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Closes stdin after a [`Feed::Hold`], once everything was written.
    pub(crate) fn close_stdin(&mut self) {
        if let Some(f) = self.feeder.take() {
            drop(f.join());
        }
    }

    /// Waits for the exit (at most `limit`; then SIGKILL and panic).
    pub(crate) fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.close_stdin();
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("outbox did not exit in {limit:?}: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGTERM, then [`Daemon::wait`].
    pub(crate) fn stop(&mut self) -> ExitStatus {
        // SAFETY: a plain kill(2) of our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.wait(Duration::from_secs(60))
    }

    /// The daemon's peak RSS so far (`VmHWM`), in KiB.
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        vm_hwm_kib(self.pid())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmHWM` of a process, in KiB (0 once it has gone).
pub(crate) fn vm_hwm_kib(pid: u32) -> u64 {
    proc_status_kib(&pid.to_string(), "VmHWM").unwrap_or(0)
}

/// Waits until `done` holds, polling every millisecond, at most `limit`.
/// Returns whether it held.
pub(crate) fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// The size of a file, 0 when it does not exist yet.
pub(crate) fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}
