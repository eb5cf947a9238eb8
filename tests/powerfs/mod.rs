//! powerfs: a FUSE filesystem that loses, at a simulated power cut, every
//! write that was not made durable, in the model of LazyFS (the filesystem
//! Jepsen uses to test crash safety, github.com/dsrhaslab/lazyfs).
//!
//! It keeps the whole tree in memory twice: what the running system sees,
//! and what a disk would hold after a power cut. A cut freezes the process
//! under test (SIGSTOP), takes the durable image and fails every later
//! request with `EIO`; the test then kills the process (SIGKILL), and
//! [`PowerFs::remount`] unmounts and mounts a new filesystem holding the
//! image and nothing else. Because the mount goes away, the kernel's caches
//! of it go too, and the filesystem opens every file `direct_io` anyway.
//!
//! # What is durable
//!
//! | operation | durable when |
//! |-----------|--------------|
//! | `write`, `pwrite` | the file is fsynced (`fsync` or `fdatasync`) |
//! | size changes: a write past the end, `truncate`/`ftruncate`, `fallocate` (mode 0 grows the size, `PUNCH_HOLE` zeroes) | the file is fsynced |
//! | `sync_file_range` | never by itself: FUSE has no such request, the kernel only writes back its own page cache, which this filesystem never uses. sled's flush is a `sync_file_range`, so sled's flush alone makes nothing durable here. |
//! | `close` | never |
//! | create, `mkdir`, `rename`, `unlink`, `rmdir` | [`Names::Strict`]: the directory holding the name is fsynced (each of the two directories of a rename for its own side). [`Names::Immediate`]: at once. |
//!
//! Data is tracked in 4 KiB pages, as LazyFS's page cache does, so an
//! fsync copies only the pages written since the last one; a torn write
//! inside a page (which LazyFS can inject with `torn-op`) is not modelled:
//! a write is either all lost or, after an fsync, all kept.
//!
//! On names, LazyFS itself passes create, rename and unlink straight to the
//! underlying filesystem (`lfs_create`, `lfs_rename` and `lfs_unlink` in
//! `lazyfs/src/lazyfs.cpp` call `open`, `rename` and `unlink` at once), so
//! under LazyFS they survive a cut whatever was fsynced. [`Names::Strict`]
//! is the stricter, POSIX reading: ext4 and XFS do persist a new name
//! with the next fsync of the file in practice, but nothing promises it,
//! and a program that relies on it is one journal mode away from losing
//! the file. Permissions and timestamps are not modelled.
//!
//! A cut is taken either by the test ([`PowerFs::cut`]) at a moment of its
//! choosing, or by the filesystem itself at the Nth fsync of a file or
//! directory of a given name ([`PowerFs::arm`]): that sync does not take
//! effect and fails with `EIO`.
#![allow(dead_code)]

mod fuse;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use state::{Image, State};
pub use state::{Names, Trigger};

/// Why the filesystem cannot run here, or `None` when it can: `/dev/fuse`
/// must exist and open, and `fusermount3` (Debian's `fuse3`) must be on
/// the `PATH` for a mount that is not root's.
pub fn unavailable() -> Option<String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return Some(format!("/dev/fuse cannot be opened: {e}"));
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()));
    if !on_path {
        return Some("fusermount3 is not on the PATH (apt-get install fuse3)".into());
    }
    None
}

/// Fails the test when FUSE is missing. In CI (`CI=true`) that is a
/// failure like any other; outside CI it fails too, with the reason.
pub fn require() {
    if let Some(why) = unavailable() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        panic!(
            "the power-loss filesystem cannot run: {why}{}",
            if ci {
                " (CI=true: a skipped power-cut test is a failure; .ci/run installs fuse3)"
            } else {
                ""
            }
        );
    }
}

/// A mounted power-loss filesystem.
pub struct PowerFs {
    mountpoint: PathBuf,
    names: Names,
    shared: Arc<fuse::Shared>,
    session: Option<fuser::BackgroundSession>,
    /// Cuts taken so far.
    pub cuts: u64,
}

type Mounted = (Arc<fuse::Shared>, fuser::BackgroundSession);

fn mount(mountpoint: &Path, state: State) -> std::io::Result<Mounted> {
    let shared = Arc::new(fuse::Shared {
        state: Mutex::new(state),
        victim: Mutex::new(None),
        fired: Condvar::new(),
    });
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::FSName("powerfs".into()),
        fuser::MountOption::NoAtime,
    ];
    let session =
        fuser::spawn_mount(fuse::PowerFuse(shared.clone()), mountpoint, &cfg).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("mounting powerfs on {}: {e}", mountpoint.display()),
            )
        })?;
    Ok((shared, session))
}

impl PowerFs {
    /// Mounts an empty filesystem on `mountpoint` (an empty directory).
    ///
    /// # Errors
    /// The mount's error, with the mount point.
    pub fn mount(mountpoint: &Path, names: Names) -> std::io::Result<PowerFs> {
        Self::mount_state(mountpoint, names, State::new(names))
    }

    fn mount_state(mountpoint: &Path, names: Names, state: State) -> std::io::Result<PowerFs> {
        let (shared, session) = mount(mountpoint, state)?;
        Ok(PowerFs {
            mountpoint: mountpoint.to_path_buf(),
            names,
            shared,
            session: Some(session),
            cuts: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The process a cut freezes (SIGSTOP); `None` for none.
    pub fn set_victim(&self, pid: Option<u32>) {
        *self.shared.victim.lock() = pid.map(|p| p as i32);
    }

    /// Cuts the power at the `nth` sync, counted from now, of a file or
    /// directory named `name` (its last path component). Replaces any
    /// trigger already armed.
    pub fn arm(&self, name: &str, nth: u64) {
        self.shared.state.lock().trigger = Some(Trigger::new(name, nth));
    }

    /// Removes the armed trigger; true if it had not fired.
    pub fn disarm(&self) -> bool {
        self.shared.state.lock().trigger.take().is_some()
    }

    /// Waits up to `timeout` for an armed trigger to cut the power.
    pub fn wait_fired(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock();
        while st.cut.is_none() {
            if self.shared.fired.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
        st.cut.is_some()
    }

    /// Cuts the power now: freezes the victim, then keeps only what is
    /// durable. Every request after this fails with `EIO`.
    pub fn cut(&self) {
        self.shared.freeze_victim();
        self.shared.state.lock().cut();
    }

    pub fn is_cut(&self) -> bool {
        self.shared.state.lock().cut.is_some()
    }

    /// Syncs (fsync, fdatasync, fsyncdir) the filesystem has seen since it
    /// was mounted.
    pub fn syncs(&self) -> u64 {
        self.shared.state.lock().syncs
    }

    /// After a cut (taken now if none was): unmounts, and mounts a fresh
    /// filesystem that holds the durable image. The victim must be dead,
    /// or its open files keep the old mount busy.
    ///
    /// # Errors
    /// The unmount's or the mount's error.
    pub fn remount(&mut self) -> std::io::Result<()> {
        self.cut();
        let image: Image = self
            .shared
            .state
            .lock()
            .cut
            .clone()
            .expect("cut just above");
        self.unmount()?;
        // The victim was killed with the old mount; a new one is set later.
        let (shared, session) = mount(&self.mountpoint, State::from_image(image, self.names))?;
        self.shared = shared;
        self.session = Some(session);
        self.cuts += 1;
        Ok(())
    }

    fn unmount(&mut self) -> std::io::Result<()> {
        if let Some(s) = self.session.take() {
            s.umount_and_join().map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "unmounting powerfs at {} (a process still has a file open there?): {e}",
                        self.mountpoint.display()
                    ),
                )
            })?;
        }
        Ok(())
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            // A frozen victim may still hold files open: detach lazily so a
            // failed test does not leave the mount behind.
            let c = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes())
                .expect("no NUL in a temp path");
            // SAFETY: umount2(2) with a valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            drop(s);
        }
    }
}
