//! A simulated POSIX filesystem with a crash model.
//!
//! The state is a *durable image* plus the list of *pending* operations applied to the live view
//! since they were last made durable. `fsync` of a file makes its pending data operations
//! durable; `fsync` of a directory makes the pending entry operations of that directory durable
//! (as on Linux, where `link`/`rename`/`unlink` survive a crash only after the directory fsync).
//!
//! A crash keeps the durable image plus any subset of the pending operations that POSIX allows
//! to have reached the disk ([`Persist`]): none, all, all but one (a later operation persisted
//! while an earlier one did not, as ALICE explores), or all with the last write torn in half.
//! Inodes exist apart from names, so a file's data can be durable while its name is not, and
//! the other way round. The fs can also freeze itself right after its N-th mutating operation
//! (every later call fails), which is how a host is stopped at an exact crash point.

use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use mta::env::{Fs, FsFile, Metadata};

type Ino = u64;
const ROOT: Ino = 1;

#[derive(Clone, Debug)]
enum Node {
    File {
        data: Vec<u8>,
        mtime: u64,
    },
    Dir {
        entries: BTreeMap<String, Ino>,
        mtime: u64,
    },
}

/// A whole filesystem state.
#[derive(Clone, Debug)]
pub struct Image {
    nodes: BTreeMap<Ino, Node>,
    next_ino: Ino,
}

impl Default for Image {
    fn default() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT,
            Node::Dir {
                entries: BTreeMap::new(),
                mtime: 0,
            },
        );
        Image {
            nodes,
            next_ino: ROOT + 1,
        }
    }
}

/// An operation not yet durable.
#[derive(Clone, Debug)]
enum Op {
    Write {
        ino: Ino,
        off: u64,
        data: Vec<u8>,
    },
    SetLen {
        ino: Ino,
        len: u64,
    },
    /// Bind `name` in `dir` to `ino` (create, mkdir, link).
    Add {
        dir: Ino,
        name: String,
        ino: Ino,
    },
    Remove {
        dir: Ino,
        name: String,
    },
    Rename {
        from: (Ino, String),
        to: (Ino, String),
        ino: Ino,
    },
}

impl Op {
    fn is_data_of(&self, i: Ino) -> bool {
        matches!(self, Op::Write { ino, .. } | Op::SetLen { ino, .. } if *ino == i)
    }
    fn touches_dir(&self, d: Ino) -> bool {
        match self {
            Op::Add { dir, .. } | Op::Remove { dir, .. } => *dir == d,
            Op::Rename { from, to, .. } => from.0 == d || to.0 == d,
            _ => false,
        }
    }
}

impl Image {
    /// Apply an operation; one whose precondition no longer holds (its source name is gone)
    /// does nothing, as on a disk where the earlier operation never landed.
    fn apply(&mut self, op: &Op, now: u64) {
        match op {
            Op::Write { ino, off, data } => {
                if let Some(Node::File { data: d, mtime }) = self.nodes.get_mut(ino) {
                    let end = *off as usize + data.len();
                    if d.len() < end {
                        d.resize(end, 0);
                    }
                    d[*off as usize..end].copy_from_slice(data);
                    *mtime = now;
                }
            }
            Op::SetLen { ino, len } => {
                if let Some(Node::File { data, mtime }) = self.nodes.get_mut(ino) {
                    data.resize(*len as usize, 0);
                    *mtime = now;
                }
            }
            Op::Add { dir, name, ino } => {
                if let Some(Node::Dir { entries, mtime }) = self.nodes.get_mut(dir) {
                    entries.insert(name.clone(), *ino);
                    *mtime = now;
                }
            }
            Op::Remove { dir, name } => {
                if let Some(Node::Dir { entries, mtime }) = self.nodes.get_mut(dir) {
                    entries.remove(name);
                    *mtime = now;
                }
            }
            Op::Rename { from, to, ino } => {
                if let Some(Node::Dir { entries, .. }) = self.nodes.get_mut(&from.0) {
                    if entries.get(&from.1) == Some(ino) {
                        entries.remove(&from.1);
                    }
                }
                if let Some(Node::Dir { entries, .. }) = self.nodes.get_mut(&to.0) {
                    entries.insert(to.1.clone(), *ino);
                }
            }
        }
    }

    fn lookup(&self, path: &Path) -> Option<Ino> {
        let mut cur = ROOT;
        for c in path.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(n) => match self.nodes.get(&cur)? {
                    Node::Dir { entries, .. } => cur = *entries.get(n.to_str()?)?,
                    Node::File { .. } => return None,
                },
                _ => return None,
            }
        }
        Some(cur)
    }

    /// Every file reachable from the root, with its path and bytes (sorted by path).
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), ROOT)];
        while let Some((p, ino)) = stack.pop() {
            match self.nodes.get(&ino) {
                Some(Node::Dir { entries, .. }) => {
                    for (n, i) in entries {
                        stack.push((format!("{p}/{n}"), *i));
                    }
                }
                Some(Node::File { data, .. }) => out.push((p, data.clone())),
                None => {}
            }
        }
        out.sort();
        out
    }
}

/// Which pending operations reach the disk in a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persist {
    /// Only what was made durable.
    Synced,
    /// Every operation issued.
    All,
    /// Every operation but the i-th pending one.
    AllBut(usize),
    /// Every operation, with the last pending write cut in half.
    TornLastWrite,
    /// Every operation but the i-th, with the last pending write cut in half.
    TornLastWriteBut(usize),
}

/// Faults the fs injects.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Freeze right after this many mutating operations (1-based).
    pub crash_after: Option<u64>,
    /// Total file bytes the disk holds; writes past it fail with ENOSPC.
    pub capacity: Option<u64>,
    /// The mutating operation with this number fails with EIO.
    pub eio_at: Option<u64>,
}

/// A simulated clock shared by the fs and the env: unix time in milliseconds.
#[derive(Clone, Debug)]
pub struct Clock(Arc<AtomicU64>, Arc<AtomicU64>);

impl Clock {
    pub fn new(unix_ms: u64) -> Self {
        Clock(
            Arc::new(AtomicU64::new(unix_ms)),
            Arc::new(AtomicU64::new(0)),
        )
    }
    /// The wall clock jumps forward by `d` (and stays ahead): a fault, not time passing.
    pub fn jump(&self, d: Duration) {
        self.1.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
    /// How far the clock has jumped in all.
    pub fn skew_ms(&self) -> u64 {
        self.1.load(Ordering::SeqCst)
    }
    pub fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    pub fn set_ms(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst)
    }
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
    pub fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.now_ms())
    }
}

struct State {
    live: Image,
    durable: Image,
    pending: Vec<Op>,
    ops: u64,
    frozen: bool,
    faults: Faults,
    locks: Vec<Ino>,
    trace: u64,
}

/// The simulated filesystem (a cheap handle; clones share state).
#[derive(Clone)]
pub struct SimFs {
    st: Arc<Mutex<State>>,
    clock: Clock,
}

fn crashed() -> io::Error {
    io::Error::other("simulated crash: the host is down")
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: not found", p.display()),
    )
}

impl SimFs {
    pub fn new(clock: Clock) -> Self {
        Self::from_image(Image::default(), clock)
    }

    /// Boot from a disk image (everything in it is durable).
    pub fn from_image(img: Image, clock: Clock) -> Self {
        SimFs {
            st: Arc::new(Mutex::new(State {
                live: img.clone(),
                durable: img,
                pending: Vec::new(),
                ops: 0,
                frozen: false,
                faults: Faults::default(),
                locks: Vec::new(),
                trace: 0xcbf2_9ce4_8422_2325,
            })),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_faults(&self, f: Faults) {
        self.lock().faults = f;
    }
    /// Mutating operations so far (the crash points of a run).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }
    pub fn is_frozen(&self) -> bool {
        self.lock().frozen
    }
    pub fn pending_count(&self) -> usize {
        self.lock().pending.len()
    }
    /// FNV-1a over every operation, for the determinism self-check.
    pub fn trace_hash(&self) -> u64 {
        self.lock().trace
    }
    /// The live view (what processes currently see).
    pub fn live_image(&self) -> Image {
        self.lock().live.clone()
    }

    /// The disk after a crash now, keeping the pending operations `p` selects.
    pub fn crash_image(&self, p: &Persist) -> Image {
        let st = self.lock();
        let now = self.clock.now_ms() / 1000;
        let mut img = st.durable.clone();
        let last_write = st
            .pending
            .iter()
            .rposition(|o| matches!(o, Op::Write { data, .. } if data.len() > 1));
        for (i, op) in st.pending.iter().enumerate() {
            match p {
                Persist::Synced => break,
                Persist::AllBut(j) | Persist::TornLastWriteBut(j) if *j == i => continue,
                Persist::TornLastWrite | Persist::TornLastWriteBut(_) if Some(i) == last_write => {
                    if let Op::Write { ino, off, data } = op {
                        let half = Op::Write {
                            ino: *ino,
                            off: *off,
                            data: data[..data.len() / 2].to_vec(),
                        };
                        img.apply(&half, now);
                    }
                }
                _ => img.apply(op, now),
            }
        }
        img
    }

    /// Every distinct crash persistence choice for the current pending list.
    pub fn persist_choices(&self) -> Vec<Persist> {
        let st = self.lock();
        let mut v = vec![Persist::Synced];
        if !st.pending.is_empty() {
            v.push(Persist::All);
            if st.pending.len() > 1 {
                v.extend((0..st.pending.len()).map(Persist::AllBut));
            }
            let last = st
                .pending
                .iter()
                .rposition(|o| matches!(o, Op::Write { data, .. } if data.len() > 1));
            if let Some(last) = last {
                v.push(Persist::TornLastWrite);
                v.extend(
                    (0..st.pending.len())
                        .filter(|&i| i != last)
                        .map(Persist::TornLastWriteBut),
                );
            }
        }
        v
    }

    fn hash(st: &mut State, tag: &str, path: &Path, n: u64) {
        let mut h = st.trace;
        for b in tag
            .bytes()
            .chain(path.as_os_str().as_encoded_bytes().iter().copied())
            .chain(n.to_le_bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        st.trace = h;
    }

    /// Count a mutating operation, applying faults; `Ok` means go ahead.
    fn begin(&self, st: &mut State, tag: &str, path: &Path, n: u64) -> io::Result<()> {
        if st.frozen {
            return Err(crashed());
        }
        st.ops += 1;
        Self::hash(st, tag, path, n);
        if st.faults.eio_at == Some(st.ops) {
            return Err(io::Error::other("simulated I/O error (EIO)"));
        }
        Ok(())
    }

    /// After a mutating operation: freeze if this was the crash point.
    fn end(st: &mut State) {
        if st.faults.crash_after == Some(st.ops) {
            st.frozen = true;
        }
    }

    fn check_alive(st: &State) -> io::Result<()> {
        if st.frozen {
            Err(crashed())
        } else {
            Ok(())
        }
    }

    fn parent_of(st: &State, path: &Path) -> io::Result<(Ino, String)> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad path"))?;
        let parent = path.parent().unwrap_or(Path::new("/"));
        match st
            .live
            .lookup(parent)
            .and_then(|i| st.live.nodes.get(&i).map(|n| (i, n)))
        {
            Some((i, Node::Dir { .. })) => Ok((i, name.to_string())),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{}: not a directory", parent.display()),
            )),
            None => Err(not_found(parent)),
        }
    }

    fn push(&self, st: &mut State, op: Op) {
        let now = self.clock.now_ms() / 1000;
        st.live.apply(&op, now);
        st.pending.push(op);
    }

    fn file_bytes(img: &Image) -> u64 {
        img.nodes
            .values()
            .map(|n| match n {
                Node::File { data, .. } => data.len() as u64,
                Node::Dir { .. } => 0,
            })
            .sum()
    }

    fn new_node(&self, st: &mut State, node: Node) -> Ino {
        let ino = st.live.next_ino.max(st.durable.next_ino);
        st.live.next_ino = ino + 1;
        st.durable.next_ino = ino + 1;
        // The inode itself exists on both sides; only its name is pending.
        st.live.nodes.insert(ino, node.clone());
        st.durable.nodes.insert(ino, node);
        ino
    }

    fn create(&self, path: &Path, dir: bool) -> io::Result<Ino> {
        let mut st = self.lock();
        self.begin(&mut st, if dir { "mkdir" } else { "create" }, path, 0)?;
        let (parent, name) = Self::parent_of(&st, path)?;
        if let Some(Node::Dir { entries, .. }) = st.live.nodes.get(&parent) {
            if entries.contains_key(&name) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: exists", path.display()),
                ));
            }
        }
        let mtime = self.clock.now_ms() / 1000;
        let node = if dir {
            Node::Dir {
                entries: BTreeMap::new(),
                mtime,
            }
        } else {
            Node::File {
                data: Vec::new(),
                mtime,
            }
        };
        let ino = self.new_node(&mut st, node);
        self.push(
            &mut st,
            Op::Add {
                dir: parent,
                name,
                ino,
            },
        );
        Self::end(&mut st);
        Ok(ino)
    }
}

pub struct SimFile {
    fs: SimFs,
    ino: Ino,
}

impl FsFile for SimFile {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let fs = self.fs.clone();
        let mut st = fs.lock();
        fs.begin(&mut st, "write", Path::new(""), buf.len() as u64)?;
        if let Some(cap) = st.faults.capacity {
            let cur = match st.live.nodes.get(&self.ino) {
                Some(Node::File { data, .. }) => data.len() as u64,
                _ => 0,
            };
            let grow = (offset + buf.len() as u64).saturating_sub(cur);
            if SimFs::file_bytes(&st.live) + grow > cap {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "No space left on device (simulated)",
                ));
            }
        }
        fs.push(
            &mut st,
            Op::Write {
                ino: self.ino,
                off: offset,
                data: buf.to_vec(),
            },
        );
        SimFs::end(&mut st);
        Ok(())
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let st = self.fs.lock();
        SimFs::check_alive(&st)?;
        match st.live.nodes.get(&self.ino) {
            Some(Node::File { data, .. }) => {
                let start = (offset as usize).min(data.len());
                let n = buf.len().min(data.len() - start);
                buf[..n].copy_from_slice(&data[start..start + n]);
                Ok(n)
            }
            _ => Err(io::Error::other("stale file handle")),
        }
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let fs = self.fs.clone();
        let mut st = fs.lock();
        fs.begin(&mut st, "setlen", Path::new(""), len)?;
        fs.push(&mut st, Op::SetLen { ino: self.ino, len });
        SimFs::end(&mut st);
        Ok(())
    }
    fn size(&mut self) -> io::Result<u64> {
        let st = self.fs.lock();
        SimFs::check_alive(&st)?;
        match st.live.nodes.get(&self.ino) {
            Some(Node::File { data, .. }) => Ok(data.len() as u64),
            _ => Err(io::Error::other("stale file handle")),
        }
    }
    fn sync(&mut self) -> io::Result<()> {
        let fs = self.fs.clone();
        let mut st = fs.lock();
        fs.begin(&mut st, "fsync", Path::new(""), self.ino)?;
        let now = fs.clock.now_ms() / 1000;
        let ino = self.ino;
        let (mine, rest): (Vec<Op>, Vec<Op>) = std::mem::take(&mut st.pending)
            .into_iter()
            .partition(|o| o.is_data_of(ino));
        for op in &mine {
            st.durable.apply(op, now);
        }
        st.pending = rest;
        SimFs::end(&mut st);
        Ok(())
    }
}

/// Held lock on a file; released on drop.
pub struct SimLock {
    fs: SimFs,
    ino: Ino,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let ino = self.ino;
        self.fs.lock().locks.retain(|&i| i != ino);
    }
}

impl Fs for SimFs {
    type File = SimFile;
    type Lock = SimLock;

    fn create_new(&self, path: &Path) -> io::Result<SimFile> {
        let ino = self.create(path, false)?;
        Ok(SimFile {
            fs: self.clone(),
            ino,
        })
    }
    fn open_rw(&self, path: &Path) -> io::Result<SimFile> {
        let st = self.lock();
        Self::check_alive(&st)?;
        match st.live.lookup(path) {
            Some(ino) if matches!(st.live.nodes.get(&ino), Some(Node::File { .. })) => {
                Ok(SimFile {
                    fs: self.clone(),
                    ino,
                })
            }
            Some(_) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            )),
            None => Err(not_found(path)),
        }
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.lock();
        Self::check_alive(&st)?;
        match st.live.lookup(path).and_then(|i| st.live.nodes.get(&i)) {
            Some(Node::File { data, .. }) => Ok(data.clone()),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            )),
            None => Err(not_found(path)),
        }
    }
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        self.create(path, true).map(|_| ())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        self.begin(&mut st, "rename", from, 0)?;
        let src = Self::parent_of(&st, from)?;
        let dst = Self::parent_of(&st, to)?;
        let ino = st.live.lookup(from).ok_or_else(|| not_found(from))?;
        // One operation, durable once either directory is fsynced (one journal transaction).
        let op = Op::Rename {
            from: src,
            to: dst,
            ino,
        };
        self.push(&mut st, op);
        Self::end(&mut st);
        Ok(())
    }
    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        self.begin(&mut st, "link", from, 0)?;
        let ino = st.live.lookup(from).ok_or_else(|| not_found(from))?;
        let (dir, name) = Self::parent_of(&st, to)?;
        if st.live.lookup(to).is_some() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists"));
        }
        self.push(&mut st, Op::Add { dir, name, ino });
        Self::end(&mut st);
        Ok(())
    }
    fn unlink(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        self.begin(&mut st, "unlink", path, 0)?;
        let ino = st.live.lookup(path).ok_or_else(|| not_found(path))?;
        if matches!(st.live.nodes.get(&ino), Some(Node::Dir { .. })) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ));
        }
        let (dir, name) = Self::parent_of(&st, path)?;
        self.push(&mut st, Op::Remove { dir, name });
        Self::end(&mut st);
        Ok(())
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        self.begin(&mut st, "fsyncdir", path, 0)?;
        let d = st.live.lookup(path).ok_or_else(|| not_found(path))?;
        let now = self.clock.now_ms() / 1000;
        let (mine, rest): (Vec<Op>, Vec<Op>) = std::mem::take(&mut st.pending)
            .into_iter()
            .partition(|o| o.touches_dir(d));
        for op in &mine {
            st.durable.apply(op, now);
        }
        st.pending = rest;
        Self::end(&mut st);
        Ok(())
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        Self::check_alive(&st)?;
        match st.live.lookup(path).and_then(|i| st.live.nodes.get(&i)) {
            // BTreeMap keys: already sorted bytewise.
            Some(Node::Dir { entries, .. }) => Ok(entries.keys().cloned().collect()),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )),
            None => Err(not_found(path)),
        }
    }
    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        let st = self.lock();
        Self::check_alive(&st)?;
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        match st.live.lookup(path).and_then(|i| st.live.nodes.get(&i)) {
            Some(Node::File { data, mtime }) => Ok(Metadata {
                len: data.len() as u64,
                is_dir: false,
                mtime: t(*mtime),
                mode: 0o600,
            }),
            Some(Node::Dir { mtime, .. }) => Ok(Metadata {
                len: 0,
                is_dir: true,
                mtime: t(*mtime),
                mode: 0o755,
            }),
            None => Err(not_found(path)),
        }
    }
    fn try_lock(&self, path: &Path) -> io::Result<SimLock> {
        let mut st = self.lock();
        Self::check_alive(&st)?;
        let ino = st.live.lookup(path).ok_or_else(|| not_found(path))?;
        if st.locks.contains(&ino) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "locked"));
        }
        st.locks.push(ino);
        Ok(SimLock {
            fs: self.clone(),
            ino,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs() -> SimFs {
        SimFs::new(Clock::new(1_000_000))
    }

    #[test]
    fn unsynced_name_is_lost_synced_name_survives() {
        let fs = fs();
        fs.mkdir(Path::new("/d")).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        let mut f = fs.create_new(Path::new("/d/a")).unwrap();
        f.write_at(0, b"hello").unwrap();
        f.sync().unwrap();
        // Data durable, name not.
        let img = fs.crash_image(&Persist::Synced);
        assert!(img.files().is_empty());
        fs.sync_dir(Path::new("/d")).unwrap();
        let img = fs.crash_image(&Persist::Synced);
        assert_eq!(img.files(), vec![("/d/a".to_string(), b"hello".to_vec())]);
    }

    #[test]
    fn name_without_data_sync_gives_empty_file() {
        let fs = fs();
        let mut f = fs.create_new(Path::new("/a")).unwrap();
        f.write_at(0, b"data").unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        assert_eq!(fs.crash_image(&Persist::Synced).files()[0].1, b"");
        assert_eq!(fs.crash_image(&Persist::All).files()[0].1, b"data");
        assert_eq!(fs.crash_image(&Persist::TornLastWrite).files()[0].1, b"da");
    }

    #[test]
    fn later_write_can_persist_without_earlier_one() {
        let fs = fs();
        let mut f = fs.create_new(Path::new("/a")).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        f.write_at(0, b"aa").unwrap();
        f.write_at(2, b"bb").unwrap();
        let choices = fs.persist_choices();
        assert!(choices.contains(&Persist::AllBut(0)));
        assert_eq!(fs.crash_image(&Persist::AllBut(0)).files()[0].1, b"\0\0bb");
    }

    #[test]
    fn crash_after_n_freezes_everything() {
        let fs = fs();
        fs.set_faults(Faults {
            crash_after: Some(2),
            ..Faults::default()
        });
        fs.mkdir(Path::new("/a")).unwrap();
        fs.mkdir(Path::new("/b")).unwrap();
        assert!(fs.is_frozen());
        assert!(fs.mkdir(Path::new("/c")).is_err());
        assert!(fs.list_dir(Path::new("/")).is_err());
        assert_eq!(fs.ops(), 2);
    }

    #[test]
    fn rename_moves_and_capacity_is_enforced() {
        let fs = fs();
        fs.set_faults(Faults {
            capacity: Some(4),
            ..Faults::default()
        });
        let mut f = fs.create_new(Path::new("/a")).unwrap();
        f.write_at(0, b"1234").unwrap();
        let e = f.write_at(4, b"5").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        fs.rename(Path::new("/a"), Path::new("/b")).unwrap();
        assert_eq!(fs.list_dir(Path::new("/")).unwrap(), vec!["b"]);
        assert_eq!(fs.read(Path::new("/b")).unwrap(), b"1234");
    }
}
