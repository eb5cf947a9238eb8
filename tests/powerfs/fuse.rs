//! The FUSE side of the power-loss filesystem: each request becomes one
//! call on [`State`] under one lock, so a cut (which takes that lock) falls
//! between two requests, never inside one.
//!
//! Every file is opened with `FOPEN_DIRECT_IO` and every attribute and name
//! is given a time-to-live of zero: the kernel keeps no page of ours and no
//! size, so every read and write reaches [`State`], and a remount cannot
//! show a page that the cut dropped.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::{Condvar, Mutex};

use super::state::{Ino, Kind, Node, State, Synced};

/// What the filesystem and the test share.
pub struct Shared {
    pub state: Mutex<State>,
    /// The process under test, frozen (SIGSTOP) when a trigger fires.
    pub victim: Mutex<Option<i32>>,
    /// Signalled when a trigger has cut the power.
    pub fired: Condvar,
}

impl Shared {
    /// Freezes the victim. The image is taken under the state's lock, and
    /// every request after it fails, so whether the victim stops a moment
    /// before or after the image changes nothing that can survive.
    pub fn freeze_victim(&self) {
        if let Some(pid) = *self.victim.lock() {
            // SAFETY: kill(2) with a pid the test spawned.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        }
    }
}

pub struct PowerFuse(pub Arc<Shared>);

const TTL: Duration = Duration::ZERO;
const GEN: Generation = Generation(0);

fn err(e: i32) -> Errno {
    Errno::from_i32(e)
}

fn attr(ino: Ino, node: &Node) -> FileAttr {
    let (kind, size, nlink) = match &node.kind {
        Kind::File(f) => (FileType::RegularFile, f.live.len() as u64, 1),
        Kind::Dir { .. } => (FileType::Directory, 0, 2),
    };
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let t: SystemTime = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind,
        perm: node.mode as u16,
        nlink,
        uid,
        gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl PowerFuse {
    fn entry(&self, r: Result<Ino, i32>, reply: ReplyEntry) {
        let st = self.0.state.lock();
        match r.and_then(|ino| st.node(ino).map(|n| attr(ino, n))) {
            Ok(a) => reply.entry(&TTL, &a, GEN),
            Err(e) => reply.error(err(e)),
        }
    }

    fn sync(&self, r: Result<Synced, i32>, reply: ReplyEmpty) {
        match r {
            Ok(Synced::Done) => reply.ok(),
            Ok(Synced::Cut) => {
                self.0.freeze_victim();
                reply.error(Errno::EIO);
                self.0.fired.notify_all();
            }
            Err(e) => reply.error(err(e)),
        }
    }
}

impl Filesystem for PowerFuse {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self.0.state.lock().lookup(parent.0, name);
        self.entry(r, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = self.0.state.lock();
        match st.node(ino.0) {
            Ok(n) => reply.attr(&TTL, &attr(ino.0, n)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.0.state.lock();
        let r = (|| {
            if let Some(len) = size {
                st.set_len(ino.0, len)?;
            }
            if let Some(m) = mode {
                st.chmod(ino.0, m)?;
            }
            st.node(ino.0).map(|n| attr(ino.0, n))
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let r = self
            .0
            .state
            .lock()
            .create(parent.0, name, mode & !umask & 0o7777);
        self.entry(r, reply);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self
            .0
            .state
            .lock()
            .mkdir(parent.0, name, mode & !umask & 0o7777);
        self.entry(r, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.0.state.lock().remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.0.state.lock().remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        match self
            .0
            .state
            .lock()
            .rename(parent.0, name, newparent.0, newname)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.0.state.lock().node(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(err(e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.0.state.lock();
        let r = match st.lookup(parent.0, name) {
            Ok(_) if flags & libc::O_EXCL != 0 => Err(libc::EEXIST),
            Ok(ino) if flags & libc::O_TRUNC != 0 => st.set_len(ino, 0).map(|()| ino),
            Ok(ino) => Ok(ino),
            Err(libc::ENOENT) => st.create(parent.0, name, mode & !umask & 0o7777),
            Err(e) => Err(e),
        };
        match r.and_then(|ino| st.node(ino).map(|n| attr(ino, n))) {
            Ok(a) => reply.created(&TTL, &a, GEN, FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(err(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.0.state.lock().read(ino.0, offset, size) {
            Ok(data) => reply.data(data),
            Err(e) => reply.error(err(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.0.state.lock().write(ino.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(err(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.0.state.lock().fsync(ino.0);
        self.sync(r, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.0.state.lock().entries(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.0.state.lock();
        let entries = match st.entries(ino.0) {
            Ok(e) => e,
            Err(e) => return reply.error(err(e)),
        };
        let mut all = vec![
            (".".into(), ino.0, FileType::Directory),
            ("..".into(), ino.0, FileType::Directory),
        ];
        for (name, child) in entries {
            let kind = match st.node(child).map(|n| &n.kind) {
                Ok(Kind::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((name, child, kind));
        }
        for (i, (name, child, kind)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.0.state.lock().fsyncdir(ino.0);
        self.sync(r, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // 16 GiB, nearly free: the model has no capacity.
        reply.statfs(1 << 22, 1 << 22, 1 << 22, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        match self.0.state.lock().node(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.0.state.lock().fallocate(ino.0, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }
}
