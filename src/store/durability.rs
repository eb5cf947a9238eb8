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
//!   store is poisoned, nothing is reported durable again;
//! - once the flusher has stopped, a waiter whose flush never ran gets
//!   [`DispatchErrorKind::ShuttingDown`] at once instead of waiting forever;
//! - while a flush runs, `Durability::flushing_since` says since when,
//!   so a flush that never returns (a wedged disk, or sled waiting on
//!   itself) can be reported instead of only felt as silence.
//!
//! What "durable" means is the store's: [`Store::flush`] is sled's flush,
//! plus the fsyncs of the `full` policy when the store was opened with them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use super::{Since, Store};
use crate::error::{DispatchErrorKind, Result, StoreError};

/// A flush number to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

#[derive(Clone, Debug, Default)]
struct Done {
    flushed: u64,
    failed: Option<Arc<str>>,
    /// The flusher thread has exited; no further flush will run.
    stopped: bool,
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
    /// When the running flush started.
    flushing: Since,
}

/// The group-commit flusher of one store.
pub struct Durability {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// When the flusher thread flushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushMode {
    /// At least this long between two flushes (0 for group commit on demand).
    pub min_interval: Duration,
}

impl Durability {
    /// Starts the flusher thread for `store`.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the thread cannot be spawned: without it nothing
    /// would ever be reported durable, so the open fails instead.
    pub fn start(store: Arc<Store>, mode: FlushMode) -> Result<Durability> {
        let (done, _) = watch::channel(Done::default());
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                next: 1,
                requested: false,
                stop: false,
            }),
            wake: Condvar::new(),
            done,
            flushing: Since::default(),
        });
        let thread_inner = inner.clone();
        #[cfg(feature = "failpoints")]
        fail::fail_point!("store::flusher_spawn", |m| Err(StoreError::Io(
            std::io::Error::other(format!(
                "cannot start the flusher thread: {}",
                m.unwrap_or_else(|| "injected spawn failure".into())
            ))
        )
        .into()));
        let thread = std::thread::Builder::new()
            .name("outbox-flush".into())
            .spawn(move || {
                let stopped = StoppedGuard(thread_inner.clone());
                flusher(thread_inner, store, mode);
                drop(stopped);
            })
            .map_err(|e| {
                StoreError::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot start the flusher thread: {e}"),
                ))
            })?;
        Ok(Durability {
            inner,
            thread: Mutex::new(Some(thread)),
        })
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
    /// [`StoreError::Poisoned`] when a flush failed;
    /// [`DispatchErrorKind::ShuttingDown`] when the flusher stopped before
    /// flushing it.
    pub async fn wait(&self, ticket: Ticket) -> Result<()> {
        let mut rx = self.inner.done.subscribe();
        let done = rx
            .wait_for(|d| d.failed.is_some() || d.flushed >= ticket.0 || d.stopped)
            .await
            .map_err(|_| DispatchErrorKind::ShuttingDown)?;
        match &done.failed {
            Some(why) => Err(StoreError::Poisoned(why.to_string()).into()),
            None if done.flushed >= ticket.0 => Ok(()),
            None => Err(DispatchErrorKind::ShuttingDown.into()),
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

    /// When the flush that is running started ([`super::monotonic_ms`]),
    /// or `None` between flushes.
    pub(crate) fn flushing_since(&self) -> Option<u64> {
        self.inner.flushing.get()
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

/// Marks the flusher stopped when its thread exits, however it exits.
struct StoppedGuard(Arc<Inner>);

impl Drop for StoppedGuard {
    fn drop(&mut self) {
        self.0.done.send_modify(|d| d.stopped = true);
    }
}

/// How often the witness file is rewritten after a flush.
const WITNESS_EVERY: Duration = Duration::from_secs(1);

fn flusher(inner: Arc<Inner>, store: Arc<Store>, mode: FlushMode) {
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
        let flushed = {
            let _busy = inner.flushing.enter();
            store.flush()
        };
        match flushed {
            Ok(()) => {
                inner.done.send_modify(|d| d.flushed = n);
                if let Some(w) = witness {
                    // Read before this flush started, so all of it is durable.
                    if let Err(e) = store.write_witness(&w) {
                        // The witness is fsynced like everything else: a
                        // disk that fails it is not trusted further.
                        store.poison(&format!("witness file: {e}"));
                    }
                    last_witness = Instant::now();
                }
            }
            Err(e) => {
                // A flush refused because an earlier write failed carries
                // that failure's reason already: pass it on, not wrapped.
                let why: Arc<str> = match e {
                    StoreError::Poisoned(why) => why.into(),
                    other => other.to_string().into(),
                };
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
