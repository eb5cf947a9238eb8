//! The parent: runs each segment of a plan in a child process on one data
//! directory, SIGKILLs it at the planned point, and hands the journal and
//! the stopped store to the oracle.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::child::{ENV_DIR, ENV_DRAIN, ENV_OPS, ENV_RUN};
use crate::journal;
use crate::oracle::{Oracle, Stats};
use crate::plan::{self, IDLE_MS, Kill, Op, Segment};

/// The child test's name, as `--exact` wants it.
pub const CHILD: &str = "model_crash_child";

/// How long a child may take to run its segment, or to drain.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `ops` on a fresh data directory, checking after every run.
///
/// # Errors
/// The first property that does not hold, or a child that failed.
pub fn run(ops: &[Op]) -> Result<Stats, String> {
    let base = Path::new("/dev/shm");
    let tmp = if base.is_dir() {
        tempfile::tempdir_in(base)
    } else {
        tempfile::tempdir()
    }
    .map_err(|e| format!("tempdir: {e}"))?;
    let dir = tmp.path();
    let mut oracle = Oracle::default();
    for (r, seg) in plan::segments(ops).iter().enumerate() {
        let run = u32::try_from(r).map_err(|_| "too many runs")?;
        let before = journal::count(dir);
        let child = spawn(dir, run, seg)?;
        match seg.kill {
            Some(k) => kill_at(child, dir, run, before, k)?,
            None => wait_drained(child, dir, run)?,
        }
        let lines = journal::read(dir)?;
        oracle.after_run(run, &lines, &dir.join("data"), seg.kill.is_none())?;
    }
    Ok(oracle.stats)
}

fn spawn(dir: &Path, run: u32, seg: &Segment) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let stderr = std::fs::File::create(dir.join(format!("stderr.{run}")))
        .map_err(|e| format!("stderr file: {e}"))?;
    let mut c = Command::new(exe);
    c.args([
        CHILD,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ENV_DIR, dir)
    .env(ENV_RUN, run.to_string())
    .env(ENV_OPS, plan::encode(&seg.ops))
    .env_remove("RUST_LOG")
    .stdout(Stdio::null())
    .stderr(stderr);
    if seg.kill.is_none() {
        c.env(ENV_DRAIN, "1");
    }
    c.spawn().map_err(|e| format!("spawn run {run}: {e}"))
}

fn child_failed(dir: &Path, run: u32, what: &str) -> String {
    let err = std::fs::read_to_string(dir.join(format!("stderr.{run}"))).unwrap_or_default();
    format!("run {run}: {what}; its stderr:\n{err}")
}

/// Waits for the planned point, then SIGKILLs the child.
fn kill_at(
    mut child: Child,
    dir: &Path,
    run: u32,
    before: usize,
    kill: Kill,
) -> Result<(), String> {
    let start = Instant::now();
    let mut done_at: Option<Instant> = None;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(child_failed(
                dir,
                run,
                &format!("exited before its kill ({st})"),
            ));
        }
        let text = std::fs::read(dir.join(journal::FILE)).unwrap_or_default();
        let lines = text.iter().filter(|c| **c == b'\n').count();
        let lines = lines.saturating_sub(before);
        if done_at.is_none() && ops_done(&text, run) {
            done_at = Some(Instant::now());
        }
        let since_done = done_at.map(|t| t.elapsed());
        let now = match kill {
            Kill::AtLine(n) => {
                lines >= usize::from(n) || since_done.is_some_and(|d| d >= ms(IDLE_MS))
            }
            Kill::AfterMs(m) => since_done.is_some_and(|d| d >= ms(m)),
        };
        if now {
            break;
        }
        if start.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(child_failed(dir, run, "never finished its operations"));
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    child.kill().map_err(|e| format!("SIGKILL: {e}"))?;
    child.wait().map_err(|e| format!("wait: {e}"))?;
    Ok(())
}

fn ms(m: u8) -> Duration {
    Duration::from_millis(u64::from(m))
}

/// Whether the journal holds run `run`'s line for its last operation.
fn ops_done(journal: &[u8], run: u32) -> bool {
    let want = format!("{run} E");
    journal.split(|c| *c == b'\n').any(|l| l == want.as_bytes())
}

/// Waits for the last child's drained close.
fn wait_drained(mut child: Child, dir: &Path, run: u32) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(child_failed(dir, run, &format!("drain failed ({st})"))),
            Ok(None) if start.elapsed() > CHILD_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(child_failed(dir, run, "drain never finished"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    }
}
