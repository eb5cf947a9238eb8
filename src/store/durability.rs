//! Group commit: one flusher thread, many waiters.
//!
//! A writer makes its sled writes, then calls [`Durability::request`] and
//! awaits the [`Ticket`]. Flushes are numbered; a ticket names the first flush
//! that *starts* after the request, so the writes made before the request are
//! covered by it. Any number of writers that request while a flush runs share
//! the next one: that is the group commit.
//!
//! Invariants:
//! - flush `n` starts only after every ticket `n` was handed out, and
//!   completes before flush `n + 1` starts;
//! - a waiter is woken only when a flush numbered at least its ticket has
//!   returned Ok;
//! - after a failed flush every current and later waiter gets the error: the
//!   store is poisoned, nothing is reported durable again.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use super::Store;
use crate::error::{Error, Result};

/// A flush number to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

#[derive(Clone, Debug, Default)]
struct Done {
    flushed: u64,
    failed: Option<Arc<str>>,
}

struct State {
    next: u64,
    requested: bool,
    stop: bool,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
    done: watch::Sender<Done>,
}

/// The group-commit flusher of one store.
pub struct Durability {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// How the flusher thread makes writes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushMode {
    /// At least this long between two flushes (0 for group commit on demand).
    pub min_interval: Duration,
    /// Also fsync sled's files after its flush.
    pub fsync: bool,
}

impl Durability {
    /// Starts the flusher thread for `store`.
    pub fn start(store: Arc<Store>, mode: FlushMode) -> Durability {
        let (done, _) = watch::channel(Done::default());
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                next: 1,
                requested: false,
                stop: false,
            }),
            wake: Condvar::new(),
            done,
        });
        let thread_inner = inner.clone();
        let thread = std::thread::Builder::new()
            .name("outbox-flush".into())
            .spawn(move || flusher(thread_inner, store, mode))
            .ok();
        Durability {
            inner,
            thread: Mutex::new(thread),
        }
    }

    /// Asks for a flush that covers every write made before this call.
    pub fn request(&self) -> Ticket {
        let mut s = self.inner.state.lock();
        s.requested = true;
        let t = Ticket(s.next);
        drop(s);
        self.inner.wake.notify_one();
        t
    }

    /// Waits until the flush named by `ticket` has completed.
    ///
    /// # Errors
    /// [`Error::Poisoned`] when a flush failed.
    pub async fn wait(&self, ticket: Ticket) -> Result<()> {
        let mut rx = self.inner.done.subscribe();
        let done = rx
            .wait_for(|d| d.failed.is_some() || d.flushed >= ticket.0)
            .await
            .map_err(|_| Error::ShuttingDown)?;
        match &done.failed {
            Some(why) => Err(Error::Poisoned(why.to_string())),
            None => Ok(()),
        }
    }

    /// Requests a flush and waits for it.
    ///
    /// # Errors
    /// As [`Durability::wait`].
    pub async fn sync(&self) -> Result<()> {
        let t = self.request();
        self.wait(t).await
    }

    /// Whether `ticket` is already durable, without waiting.
    pub fn is_done(&self, ticket: Ticket) -> bool {
        self.inner.done.borrow().flushed >= ticket.0
    }

    /// Stops the flusher thread after a last flush of whatever is pending.
    pub fn stop(&self) {
        self.inner.state.lock().stop = true;
        self.inner.wake.notify_one();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Durability {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How often the witness file is rewritten after a flush.
const WITNESS_EVERY: Duration = Duration::from_secs(1);

fn flusher(inner: Arc<Inner>, store: Arc<Store>, mode: FlushMode) {
    let files = if mode.fsync {
        Some(SyncFiles::new(store.path().to_path_buf()))
    } else {
        None
    };
    let mut last = Instant::now() - mode.min_interval;
    let mut last_witness = Instant::now();
    loop {
        let n = {
            let mut s = inner.state.lock();
            while !s.requested && !s.stop {
                inner.wake.wait(&mut s);
            }
            if !s.requested && s.stop {
                drop(s);
                // A last flush, and a witness of everything it covers.
                let w = store.written();
                if store.flush().is_ok() {
                    let _ = store.write_witness(&w);
                }
                return;
            }
            let wait = mode.min_interval.saturating_sub(last.elapsed());
            if !wait.is_zero() && !s.stop {
                // Interval policy: let requests gather until the interval is
                // up. New requests keep getting this flush's number.
                drop(s);
                std::thread::sleep(wait);
                s = inner.state.lock();
            }
            s.requested = false;
            let n = s.next;
            s.next += 1;
            n
        };
        last = Instant::now();
        let witness = (last_witness.elapsed() >= WITNESS_EVERY).then(|| store.written());
        let result = store.flush().and_then(|()| match &files {
            Some(f) => f.sync().map_err(|e| {
                store.poison(&format!("fsync: {e}"));
                Error::Io(e)
            }),
            None => Ok(()),
        });
        match result {
            Ok(()) => {
                inner.done.send_modify(|d| d.flushed = n);
                if let Some(w) = witness {
                    // Read before this flush started, so all of it is durable.
                    if let Err(e) = store.write_witness(&w) {
                        tracing::warn!(error = %e, "could not write the witness file");
                    }
                    last_witness = Instant::now();
                }
            }
            Err(e) => {
                let why: Arc<str> = e.to_string().into();
                inner.done.send_modify(|d| d.failed = Some(why));
                // Wake anyone who requests later too: they see `failed`.
                let mut s = inner.state.lock();
                while !s.stop {
                    s.requested = false;
                    inner.wake.wait(&mut s);
                }
                return;
            }
        }
    }
}

/// fsync of sled's files for [`crate::SyncPolicy::Full`]: the `db` file, any
/// blob files, and the directories that name them.
struct SyncFiles {
    dir: PathBuf,
}

impl SyncFiles {
    fn new(dir: PathBuf) -> Self {
        SyncFiles { dir }
    }

    fn sync(&self) -> std::io::Result<()> {
        File::open(self.dir.join("db"))?.sync_all()?;
        let blobs = self.dir.join("blobs");
        if let Ok(rd) = std::fs::read_dir(&blobs) {
            for e in rd.flatten() {
                if let Ok(f) = File::open(e.path()) {
                    f.sync_all()?;
                }
            }
            File::open(&blobs)?.sync_all()?;
        }
        File::open(&self.dir)?.sync_all()
    }
}
