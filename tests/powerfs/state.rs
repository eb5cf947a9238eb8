//! The power-loss model, with no I/O: a namespace and file contents, each
//! kept twice, as the running system sees them (`live`) and as a disk would
//! hold them after a power cut (`durable`).
//!
//! Invariants:
//! - `durable` changes only in [`State::fsync`] and [`State::fsyncdir`] (and,
//!   under [`Names::Immediate`], in the namespace operations themselves);
//!   nothing else makes a byte or a name survive a cut;
//! - after [`State::cut`] every operation fails with `EIO`, so nothing the
//!   frozen process does after the cut can be answered as done;
//! - [`State::from_image`] of a cut's image has `live == durable`: a remount
//!   shows the durable state and nothing else.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};

/// An `errno` value.
pub type Errno = i32;
pub type Ino = u64;
pub const ROOT: Ino = 1;

/// When a namespace change (create, mkdir, rename, unlink, rmdir) becomes
/// durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Names {
    /// POSIX's promise: only once the directory holding the name is fsynced.
    Strict,
    /// LazyFS's behaviour: at once (LazyFS passes these calls through to
    /// the underlying filesystem and caches file data only).
    Immediate,
}

/// One file's bytes, live and durable, with the pages written since the
/// last fsync.
#[derive(Clone, Debug, Default)]
pub struct FileData {
    pub live: Vec<u8>,
    pub durable: Vec<u8>,
    dirty: std::collections::BTreeSet<u64>,
}

pub const PAGE: u64 = 4096;

impl FileData {
    fn from_durable(bytes: Vec<u8>) -> Self {
        FileData {
            live: bytes.clone(),
            durable: bytes,
            dirty: Default::default(),
        }
    }

    fn mark(&mut self, from: u64, to: u64) {
        if to > from {
            self.dirty.extend(from / PAGE..=(to - 1) / PAGE);
        }
    }

    /// fsync: the size and every page written since the last one.
    fn sync(&mut self) {
        let len = self.live.len();
        self.durable.resize(len, 0);
        for page in std::mem::take(&mut self.dirty) {
            let start = (page * PAGE) as usize;
            if start >= len {
                continue;
            }
            let end = (start + PAGE as usize).min(len);
            self.durable[start..end].copy_from_slice(&self.live[start..end]);
        }
    }
}

#[derive(Clone, Debug)]
pub enum Kind {
    File(FileData),
    Dir {
        live: BTreeMap<OsString, Ino>,
        durable: BTreeMap<OsString, Ino>,
    },
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    /// The name it was last given, for the fsync triggers.
    pub name: OsString,
}

/// What survives a cut: every node reachable from the root through durable
/// names, with its durable contents.
#[derive(Clone, Debug, Default)]
pub struct Image {
    pub nodes: HashMap<Ino, (Node, Vec<u8>)>,
    pub next_ino: Ino,
}

/// Counts fsyncs of files by name and fires once at the Nth.
#[derive(Clone, Debug)]
pub struct Trigger {
    pub name: OsString,
    /// Fires on this (1-based) sync of a file or directory of that name.
    pub nth: u64,
    seen: u64,
}

impl Trigger {
    pub fn new(name: impl Into<OsString>, nth: u64) -> Self {
        Trigger {
            name: name.into(),
            nth,
            seen: 0,
        }
    }
}

/// What [`State::fsync`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Synced {
    Done,
    /// The armed trigger fired: the state is cut, this sync did not happen.
    Cut,
}

pub struct State {
    pub nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    pub names: Names,
    pub trigger: Option<Trigger>,
    /// The image taken at the cut; `Some` means the power is off.
    pub cut: Option<Image>,
    /// Syncs that reached the model, for the report.
    pub syncs: u64,
}

const EIO: Errno = libc::EIO;

impl State {
    pub fn new(names: Names) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                kind: Kind::Dir {
                    live: BTreeMap::new(),
                    durable: BTreeMap::new(),
                },
                mode: 0o755,
                name: "/".into(),
            },
        );
        State {
            nodes,
            next_ino: ROOT + 1,
            names,
            trigger: None,
            cut: None,
            syncs: 0,
        }
    }

    /// The state a remount shows after a cut: `image`, live and durable.
    pub fn from_image(image: Image, names: Names) -> Self {
        let nodes = image
            .nodes
            .into_iter()
            .map(|(ino, (mut node, bytes))| {
                if let Kind::File(_) = node.kind {
                    node.kind = Kind::File(FileData::from_durable(bytes));
                }
                (ino, node)
            })
            .collect();
        State {
            nodes,
            next_ino: image.next_ino,
            names,
            trigger: None,
            cut: None,
            syncs: 0,
        }
    }

    fn alive(&self) -> Result<(), Errno> {
        if self.cut.is_some() { Err(EIO) } else { Ok(()) }
    }

    /// The power cut: takes the durable image and fails everything after.
    /// A second cut keeps the first image.
    pub fn cut(&mut self) -> &Image {
        if self.cut.is_none() {
            let image = self.image();
            self.cut = Some(image);
        }
        self.cut.as_ref().expect("set above")
    }

    fn image(&self) -> Image {
        let mut out = HashMap::new();
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if out.contains_key(&ino) {
                continue; // a second durable name of the same file
            }
            let Some(node) = self.nodes.get(&ino) else {
                continue;
            };
            let (kind, bytes) = match &node.kind {
                Kind::File(f) => (Kind::File(FileData::default()), f.durable.clone()),
                Kind::Dir { durable, .. } => {
                    stack.extend(durable.values().copied());
                    (
                        Kind::Dir {
                            live: durable.clone(),
                            durable: durable.clone(),
                        },
                        Vec::new(),
                    )
                }
            };
            let node = Node {
                kind,
                mode: node.mode,
                name: node.name.clone(),
            };
            out.insert(ino, (node, bytes));
        }
        Image {
            nodes: out,
            next_ino: self.next_ino,
        }
    }

    pub fn node(&self, ino: Ino) -> Result<&Node, Errno> {
        self.alive()?;
        self.nodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn file_mut(&mut self, ino: Ino) -> Result<&mut FileData, Errno> {
        self.alive()?;
        match self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(Kind::File(f)) => Ok(f),
            Some(Kind::Dir { .. }) => Err(libc::EISDIR),
            None => Err(libc::ENOENT),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Result<&mut BTreeMap<OsString, Ino>, Errno> {
        self.alive()?;
        match self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(Kind::Dir { live, .. }) => Ok(live),
            Some(Kind::File(_)) => Err(libc::ENOTDIR),
            None => Err(libc::ENOENT),
        }
    }

    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Ino, Errno> {
        match &self.node(parent)?.kind {
            Kind::Dir { live, .. } => live.get(name).copied().ok_or(libc::ENOENT),
            Kind::File(_) => Err(libc::ENOTDIR),
        }
    }

    pub fn entries(&self, dir: Ino) -> Result<Vec<(OsString, Ino)>, Errno> {
        match &self.node(dir)?.kind {
            Kind::Dir { live, .. } => Ok(live.iter().map(|(k, v)| (k.clone(), *v)).collect()),
            Kind::File(_) => Err(libc::ENOTDIR),
        }
    }

    /// Under [`Names::Immediate`], a namespace change is durable at once.
    fn names_changed(&mut self, dir: Ino) {
        if self.names != Names::Immediate {
            return;
        }
        if let Some(Node {
            kind: Kind::Dir { live, durable },
            ..
        }) = self.nodes.get_mut(&dir)
        {
            *durable = live.clone();
        }
    }

    fn make(&mut self, parent: Ino, name: &OsStr, kind: Kind, mode: u32) -> Result<Ino, Errno> {
        let ino = self.next_ino;
        let dir = self.dir_mut(parent)?;
        if dir.contains_key(name) {
            return Err(libc::EEXIST);
        }
        dir.insert(name.to_owned(), ino);
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                kind,
                mode,
                name: name.to_owned(),
            },
        );
        self.names_changed(parent);
        Ok(ino)
    }

    pub fn create(&mut self, parent: Ino, name: &OsStr, mode: u32) -> Result<Ino, Errno> {
        self.make(parent, name, Kind::File(FileData::default()), mode)
    }

    pub fn mkdir(&mut self, parent: Ino, name: &OsStr, mode: u32) -> Result<Ino, Errno> {
        let kind = Kind::Dir {
            live: BTreeMap::new(),
            durable: BTreeMap::new(),
        };
        self.make(parent, name, kind, mode)
    }

    /// unlink and rmdir. The node itself stays (open handles, and a
    /// durable name that may still point at it) until the next cut.
    pub fn remove(&mut self, parent: Ino, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        match (&self.node(ino)?.kind, want_dir) {
            (Kind::Dir { live, .. }, true) if !live.is_empty() => return Err(libc::ENOTEMPTY),
            (Kind::Dir { .. }, false) => return Err(libc::EISDIR),
            (Kind::File(_), true) => return Err(libc::ENOTDIR),
            _ => {}
        }
        self.dir_mut(parent)?.remove(name);
        self.names_changed(parent);
        Ok(())
    }

    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        to_parent: Ino,
        to_name: &OsStr,
    ) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        let is_dir = matches!(self.node(ino)?.kind, Kind::Dir { .. });
        if let Ok(old) = self.lookup(to_parent, to_name) {
            if old == ino {
                return Ok(());
            }
            match (&self.node(old)?.kind, is_dir) {
                (Kind::Dir { live, .. }, true) if !live.is_empty() => {
                    return Err(libc::ENOTEMPTY);
                }
                (Kind::Dir { .. }, false) => return Err(libc::EISDIR),
                (Kind::File(_), true) => return Err(libc::ENOTDIR),
                _ => {}
            }
        }
        self.dir_mut(to_parent)?; // exists and is a directory
        self.dir_mut(parent)?.remove(name);
        self.dir_mut(to_parent)?.insert(to_name.to_owned(), ino);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.name = to_name.to_owned();
        }
        self.names_changed(parent);
        self.names_changed(to_parent);
        Ok(())
    }

    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<&[u8], Errno> {
        match &self.node(ino)?.kind {
            Kind::File(f) => {
                let start = (offset as usize).min(f.live.len());
                let end = (start + size as usize).min(f.live.len());
                Ok(&f.live[start..end])
            }
            Kind::Dir { .. } => Err(libc::EISDIR),
        }
    }

    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let f = self.file_mut(ino)?;
        let end = offset as usize + data.len();
        if f.live.len() < end {
            f.live.resize(end, 0);
        }
        f.live[offset as usize..end].copy_from_slice(data);
        f.mark(offset, end as u64);
        Ok(data.len() as u32)
    }

    /// truncate and ftruncate: volatile, like any write.
    pub fn set_len(&mut self, ino: Ino, len: u64) -> Result<(), Errno> {
        let f = self.file_mut(ino)?;
        let old = f.live.len() as u64;
        f.live.resize(len as usize, 0);
        // Growth writes zeros; a shrink is carried by the size at fsync.
        f.mark(old.min(len), old.max(len));
        Ok(())
    }

    /// fallocate: mode 0 extends the size (zeros), `KEEP_SIZE` changes
    /// nothing visible, `PUNCH_HOLE | KEEP_SIZE` writes zeros; all volatile.
    pub fn fallocate(&mut self, ino: Ino, offset: u64, len: u64, mode: i32) -> Result<(), Errno> {
        let f = self.file_mut(ino)?;
        let end = offset + len;
        const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        match mode {
            0 => {
                if (f.live.len() as u64) < end {
                    let old = f.live.len() as u64;
                    f.live.resize(end as usize, 0);
                    f.mark(old, end);
                }
            }
            KEEP => {}
            PUNCH => {
                let stop = end.min(f.live.len() as u64);
                if offset < stop {
                    f.live[offset as usize..stop as usize].fill(0);
                    f.mark(offset, stop);
                }
            }
            _ => return Err(libc::EOPNOTSUPP),
        }
        Ok(())
    }

    /// Counts the sync against the trigger; cuts instead when it fires.
    fn count_sync(&mut self, ino: Ino) -> Result<Synced, Errno> {
        self.alive()?;
        self.syncs += 1;
        let name = &self.nodes.get(&ino).ok_or(libc::ENOENT)?.name;
        let fire = match &mut self.trigger {
            Some(t) if &t.name == name => {
                t.seen += 1;
                t.seen >= t.nth
            }
            _ => false,
        };
        if fire {
            self.trigger = None;
            self.cut();
            return Ok(Synced::Cut);
        }
        Ok(Synced::Done)
    }

    /// fsync and fdatasync of a file: its bytes and size become durable
    /// (fdatasync must make the size durable too, since the data cannot be
    /// read back without it; this model keeps no other file metadata).
    pub fn fsync(&mut self, ino: Ino) -> Result<Synced, Errno> {
        if self.count_sync(ino)? == Synced::Cut {
            return Ok(Synced::Cut);
        }
        self.file_mut(ino)?.sync();
        Ok(Synced::Done)
    }

    /// fsync of a directory: the names in it become durable (the names,
    /// not the contents of the files they name).
    pub fn fsyncdir(&mut self, ino: Ino) -> Result<Synced, Errno> {
        if self.count_sync(ino)? == Synced::Cut {
            return Ok(Synced::Cut);
        }
        match self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(Kind::Dir { live, durable }) => *durable = live.clone(),
            Some(Kind::File(_)) => return Err(libc::ENOTDIR),
            None => return Err(libc::ENOENT),
        }
        Ok(Synced::Done)
    }

    /// Permissions are not part of the model: they change at once and stay.
    pub fn chmod(&mut self, ino: Ino, mode: u32) -> Result<(), Errno> {
        self.alive()?;
        let n = self.nodes.get_mut(&ino).ok_or(libc::ENOENT)?;
        n.mode = mode & 0o7777;
        Ok(())
    }
}
