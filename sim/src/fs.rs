//! A simulated POSIX filesystem with a crash model.
//!
//! The state is a *durable image* plus the list of *pending* operations applied to the live view
//! since they were last made durable. `fsync` of a file makes its pending data operations
//! durable; `fsync` of a directory makes the pending entry operations of that directory durable
//! (as on Linux, where `link`/`rename`/`unlink` survive a crash only after the directory fsync).
//! An fsync can fail as on Linux: the operations it covered are then dropped without reaching
//! the disk while the page cache (the live view) keeps serving them.
//!
//! A crash keeps the durable image plus any subset of the pending operations that POSIX allows
//! to have reached the disk ([`Persist`]): none, all, all but one (a later operation persisted
//! while an earlier one did not, as ALICE explores), all with the last write torn in half, all
//! with every write torn by sector, or a seeded random subset. Inodes exist apart from names, so
//! a file's data can be durable while its name is not, and the other way round. The fs can also
//! freeze itself right after its N-th mutating operation (every later call fails), which is how
//! a host is stopped at an exact crash point, run out of space, fail reads, and an [`Image`]
//! can be damaged in place (latent sector errors) before the next boot.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Component, Path};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use mta::env::{Fs, FsFile, Metadata};

type Ino = u64;
const ROOT: Ino = 1;

/// Capacity a directory takes (one block), so `mkdir` fails before the disk is quite full.
pub const DIR_BYTES: u64 = 4096;
/// The unit a disk writes atomically: torn writes and latent errors happen per sector.
pub const SECTOR: u64 = 512;

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
    /// Bind `name` in `dir` to `ino` (create, mkdir; link, whose source name is `from`).
    Add {
        dir: Ino,
        name: String,
        ino: Ino,
        from: Option<(Ino, String)>,
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

/// A write split at sector boundaries (absolute file offsets): the pieces a crash can tear.
fn sector_pieces(ino: Ino, off: u64, data: &[u8]) -> Vec<Op> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let pos = off + at as u64;
        let end = ((pos / SECTOR + 1) * SECTOR - off).min(data.len() as u64) as usize;
        out.push(Op::Write {
            ino,
            off: pos,
            data: data[at..end].to_vec(),
        });
        at = end;
    }
    out
}

/// Bytes in use by what is reachable from the root, and which inodes that is.
#[derive(Clone, Debug)]
struct Usage {
    bytes: u64,
    reachable: BTreeSet<Ino>,
}

impl Image {
    /// Apply an operation; one whose target is gone does nothing. A rename whose source name
    /// is gone still binds the new name (see [`Image::holds`] for the strict check).
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
            Op::Add { dir, name, ino, .. } => {
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

    /// Whether `op` can happen on this image: a link or rename needs its source name, which
    /// is missing when the operation that made it never reached the disk.
    fn holds(&self, op: &Op) -> bool {
        let bound = |(d, n): &(Ino, String), ino: &Ino| matches!(self.nodes.get(d), Some(Node::Dir { entries, .. }) if entries.get(n) == Some(ino));
        match op {
            Op::Add {
                from: Some(src),
                ino,
                ..
            } => bound(src, ino),
            Op::Rename { from, ino, .. } => bound(from, ino),
            _ => true,
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

    fn file_len(&self, ino: Ino) -> u64 {
        match self.nodes.get(&ino) {
            Some(Node::File { data, .. }) => data.len() as u64,
            _ => 0,
        }
    }

    /// Every path reachable from the root with its inode (each directory is entered once, so
    /// a hard-linked directory cannot loop).
    fn walk(&self) -> Vec<(String, Ino)> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![(String::new(), ROOT)];
        while let Some((p, ino)) = stack.pop() {
            if let Some(Node::Dir { entries, .. }) = self.nodes.get(&ino) {
                if !seen.insert(ino) {
                    continue;
                }
                stack.extend(entries.iter().map(|(n, i)| (format!("{p}/{n}"), *i)));
            }
            out.push((p, ino));
        }
        out
    }

    fn usage(&self) -> Usage {
        let reachable: BTreeSet<Ino> = self.walk().into_iter().map(|(_, i)| i).collect();
        let bytes = reachable
            .iter()
            .map(|i| match self.nodes.get(i) {
                Some(Node::File { data, .. }) => data.len() as u64,
                Some(Node::Dir { .. }) => DIR_BYTES,
                None => 0,
            })
            .sum();
        Usage { bytes, reachable }
    }

    /// Capacity in use: bytes of files that still have a name, plus [`DIR_BYTES`] per directory.
    pub fn used_bytes(&self) -> u64 {
        self.usage().bytes
    }

    /// Every file reachable from the root, with its path and bytes (sorted by path).
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<_> = self
            .walk()
            .into_iter()
            .filter_map(|(p, i)| match self.nodes.get(&i) {
                Some(Node::File { data, .. }) => Some((p, data.clone())),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// Every file reachable from the root with its size (sorted by path).
    pub fn file_sizes(&self) -> Vec<(String, u64)> {
        let mut out: Vec<_> = self
            .walk()
            .into_iter()
            .filter_map(|(p, i)| match self.nodes.get(&i) {
                Some(Node::File { data, .. }) => Some((p, data.len() as u64)),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    fn file_mut(&mut self, path: &Path) -> Option<&mut Vec<u8>> {
        let ino = self.lookup(path)?;
        match self.nodes.get_mut(&ino)? {
            Node::File { data, .. } => Some(data),
            Node::Dir { .. } => None,
        }
    }

    /// Flip bit `bit` (0..8) of byte `byte` of a file: silent media corruption. False if the
    /// file or byte does not exist.
    pub fn flip_bit(&mut self, path: impl AsRef<Path>, byte: u64, bit: u8) -> bool {
        let b = self
            .file_mut(path.as_ref())
            .and_then(|d| d.get_mut(usize::try_from(byte).ok()?));
        match b {
            Some(b) if bit < 8 => {
                *b ^= 1 << bit;
                true
            }
            _ => false,
        }
    }

    /// Zero sector `sector` of a file (a lost sector; the file keeps its length). True if that
    /// changed a byte.
    pub fn zero_sector(&mut self, path: impl AsRef<Path>, sector: u64) -> bool {
        let Some(d) = self.file_mut(path.as_ref()) else {
            return false;
        };
        let len = d.len() as u64;
        let start = sector.saturating_mul(SECTOR);
        if start >= len {
            return false;
        }
        let s = &mut d[start as usize..(start + SECTOR).min(len) as usize];
        let changed = s.iter().any(|&b| b != 0);
        s.fill(0);
        changed
    }

    /// Damage one non-empty file whose path `filter` accepts, chosen by `seed`: zero one of its
    /// sectors or flip one bit. Says what it did; `None` if no file qualified.
    pub fn corrupt(&mut self, seed: u64, filter: impl Fn(&str) -> bool) -> Option<String> {
        let files: Vec<_> = self
            .file_sizes()
            .into_iter()
            .filter(|(p, n)| *n > 0 && filter(p))
            .collect();
        if files.is_empty() {
            return None;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (path, size) = &files[rng.random_range(0..files.len())];
        let sector = rng.random_range(0..size.div_ceil(SECTOR));
        // A sector already zero would not be damage: flip a bit in it instead.
        if rng.random_bool(0.5) && self.zero_sector(path, sector) {
            return Some(format!("zeroed sector {sector} of {path}"));
        }
        let start = sector * SECTOR;
        let byte = rng.random_range(start..(start + SECTOR).min(*size));
        let bit = rng.random_range(0..8u8);
        self.flip_bit(path, byte, bit);
        Some(format!("flipped bit {bit} of byte {byte} of {path}"))
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
    /// Every operation, every write torn by sector: each 512-byte sector of each pending write
    /// lands or not, drawn from the seed.
    Sectors(u64),
    /// Each pending operation lands or not, drawn from the seed (a link or rename only if its
    /// source name is there); a write that lands is torn by sector half the time.
    Subset(u64),
}

impl Persist {
    /// A random choice that does not depend on what is pending (an `AllBut` index past the
    /// end means `All`), for profiles drawn before the run.
    pub fn draw<R: Rng + ?Sized>(r: &mut R) -> Persist {
        match r.random_range(0..6) {
            0 => Persist::Synced,
            1 => Persist::All,
            2 => Persist::AllBut(r.random_range(0..8)),
            3 => Persist::TornLastWrite,
            4 => Persist::Sectors(r.random()),
            _ => Persist::Subset(r.random()),
        }
    }
}

impl fmt::Display for Persist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Persist::Synced => f.write_str("Synced"),
            Persist::All => f.write_str("All"),
            Persist::AllBut(i) => write!(f, "AllBut({i})"),
            Persist::TornLastWrite => f.write_str("TornLastWrite"),
            Persist::TornLastWriteBut(i) => write!(f, "TornLastWriteBut({i})"),
            Persist::Sectors(s) => write!(f, "Sectors({s})"),
            Persist::Subset(s) => write!(f, "Subset({s})"),
        }
    }
}

impl FromStr for Persist {
    type Err = String;
    /// The form `Display` writes, so a printed failure replays exactly.
    fn from_str(s: &str) -> Result<Persist, String> {
        let bad = || format!("bad persist choice {s:?}");
        Ok(match s {
            "Synced" => Persist::Synced,
            "All" => Persist::All,
            "TornLastWrite" => Persist::TornLastWrite,
            _ => {
                let (k, n) = s
                    .strip_suffix(')')
                    .and_then(|x| x.split_once('('))
                    .ok_or_else(bad)?;
                let n: u64 = n.parse().map_err(|_| bad())?;
                let i = || usize::try_from(n).map_err(|_| bad());
                match k {
                    "AllBut" => Persist::AllBut(i()?),
                    "TornLastWriteBut" => Persist::TornLastWriteBut(i()?),
                    "Sectors" => Persist::Sectors(n),
                    "Subset" => Persist::Subset(n),
                    _ => return Err(bad()),
                }
            }
        })
    }
}

/// Faults the fs injects. Mutating operations and reads are numbered separately from 1.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Freeze right after this many mutating operations (1-based).
    pub crash_after: Option<u64>,
    /// Capacity of the disk ([`Image::used_bytes`]); writes past it, and creating names on a
    /// full disk, fail with ENOSPC.
    pub capacity: Option<u64>,
    /// The mutating operation with this number fails with EIO.
    pub eio_at: Option<u64>,
    /// A file or directory fsync that is one of these mutating operations fails with EIO and
    /// loses what it covered (Linux semantics: a retry does not bring it back).
    pub fsync_fail_at: BTreeSet<u64>,
    /// These reads (`read`, `read_at`, counted apart from mutating operations) fail with EIO.
    pub read_eio_at: BTreeSet<u64>,
}

/// Faults that actually fired (not merely armed), per class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fired {
    pub fsync: u64,
    pub read: u64,
    pub enospc: u64,
    pub eio: u64,
}

impl std::ops::AddAssign for Fired {
    fn add_assign(&mut self, o: Fired) {
        self.fsync += o.fsync;
        self.read += o.read;
        self.enospc += o.enospc;
        self.eio += o.eio;
    }
}

/// The simulated filesystem has no owners: everything belongs to this user and group (the
/// installation's, as `mta init` leaves it), so the alias user is uid 1000 too.
pub const OWNER: u32 = 1000;

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

/// Work done on the filesystem, in units that do not depend on the machine (the
/// deterministic cost gate compares them with committed baselines).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Costs {
    /// File fsyncs (`fsync` on a file).
    pub fsyncs: u64,
    /// Directory fsyncs.
    pub dir_fsyncs: u64,
    /// Mutating operations (create, write, rename, link, unlink, truncate, fsyncs).
    pub ops: u64,
    pub bytes_written: u64,
    /// Reads (`read` of a whole file or `read_at`) and the bytes they returned.
    pub reads: u64,
    pub bytes_read: u64,
    /// Directory entries listed.
    pub listed: u64,
}

impl std::ops::Sub for Costs {
    type Output = Costs;
    fn sub(self, o: Costs) -> Costs {
        Costs {
            fsyncs: self.fsyncs - o.fsyncs,
            dir_fsyncs: self.dir_fsyncs - o.dir_fsyncs,
            ops: self.ops - o.ops,
            bytes_written: self.bytes_written - o.bytes_written,
            reads: self.reads - o.reads,
            bytes_read: self.bytes_read - o.bytes_read,
            listed: self.listed - o.listed,
        }
    }
}

struct State {
    live: Image,
    durable: Image,
    pending: Vec<Op>,
    ops: u64,
    reads: u64,
    /// Directory entries returned by `list_dir` so far (work that grows with a directory).
    listed: u64,
    frozen: bool,
    faults: Faults,
    fired: Fired,
    /// Usage of the live view; `None` after an entry operation until asked again.
    usage: Option<Usage>,
    locks: Vec<Ino>,
    trace: u64,
    /// Fsyncs and bytes so far (operations, reads and listings are counted above).
    fsyncs: u64,
    dir_fsyncs: u64,
    bytes_written: u64,
    bytes_read: u64,
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

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated {what} (EIO)"))
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: not found", p.display()),
    )
}

/// FNV-1a over `parts`, each preceded by its length so that boundaries count.
fn fnv(mut h: u64, parts: &[&[u8]]) -> u64 {
    for p in parts {
        for b in (p.len() as u64).to_le_bytes().iter().chain(p.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_encoded_bytes()
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
                reads: 0,
                listed: 0,
                frozen: false,
                faults: Faults::default(),
                fired: Fired::default(),
                usage: None,
                locks: Vec::new(),
                trace: 0xcbf2_9ce4_8422_2325,
                fsyncs: 0,
                dir_fsyncs: 0,
                bytes_written: 0,
                bytes_read: 0,
            })),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> u64 {
        self.clock.now_ms() / 1000
    }

    pub fn set_faults(&self, f: Faults) {
        self.lock().faults = f;
    }
    /// Change the capacity at run time (fill the disk, or give the space back).
    pub fn set_capacity(&self, cap: Option<u64>) {
        self.lock().faults.capacity = cap;
    }
    /// Capacity in use in the live view (see [`Image::used_bytes`]).
    pub fn used_bytes(&self) -> u64 {
        Self::used(&mut self.lock())
    }
    /// Faults that fired so far.
    pub fn fired(&self) -> Fired {
        self.lock().fired
    }
    /// True if both handles are the same filesystem (not two boots of one disk).
    pub fn same_as(&self, o: &SimFs) -> bool {
        Arc::ptr_eq(&self.st, &o.st)
    }
    /// Mutating operations so far (the crash points of a run).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }
    /// Reads so far (what [`Faults::read_eio_at`] counts).
    pub fn reads(&self) -> u64 {
        self.lock().reads
    }
    /// Everything counted so far (subtract two of these for the cost of what ran between).
    pub fn costs(&self) -> Costs {
        let st = self.lock();
        Costs {
            fsyncs: st.fsyncs,
            dir_fsyncs: st.dir_fsyncs,
            ops: st.ops,
            bytes_written: st.bytes_written,
            reads: st.reads,
            bytes_read: st.bytes_read,
            listed: st.listed,
        }
    }
    /// Directory entries listed so far.
    pub fn listed(&self) -> u64 {
        self.lock().listed
    }
    pub fn is_frozen(&self) -> bool {
        self.lock().frozen
    }
    pub fn pending_count(&self) -> usize {
        self.lock().pending.len()
    }
    /// FNV-1a over every mutating operation, its names and the bytes written, for the
    /// determinism self-check.
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
        let mut img = st.durable.clone();
        match *p {
            Persist::Sectors(seed) => seeded_crash(&mut img, &st.pending, seed, false, self.now()),
            Persist::Subset(seed) => seeded_crash(&mut img, &st.pending, seed, true, self.now()),
            _ => enumerated_crash(&mut img, &st.pending, p, self.now()),
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
            if let Some(last) = last_write(&st.pending) {
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

    /// `n` seeded `Sectors` and `n` seeded `Subset` choices derived from `seed`, to add to
    /// [`SimFs::persist_choices`] (none when nothing is pending: they would all be `Synced`).
    pub fn seeded_choices(&self, seed: u64, n: usize) -> Vec<Persist> {
        if self.lock().pending.is_empty() {
            return Vec::new();
        }
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .flat_map(|_| [Persist::Sectors(r.random()), Persist::Subset(r.random())])
            .collect()
    }

    /// Run one mutating operation: count it (the crash points), fold it into the trace, inject
    /// EIO, and freeze afterwards if it is the crash point, whether or not it succeeded.
    fn mutate<T>(
        &self,
        tag: &str,
        parts: &[&[u8]],
        f: impl FnOnce(&mut State) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut st = self.lock();
        Self::check_alive(&st)?;
        st.ops += 1;
        match tag {
            "fsync" => st.fsyncs += 1,
            "fsyncdir" => st.dir_fsyncs += 1,
            "write" => st.bytes_written += parts.last().map_or(0, |b| b.len() as u64),
            _ => {}
        }
        st.trace = fnv(fnv(st.trace, &[tag.as_bytes()]), parts);
        let r = if st.faults.eio_at == Some(st.ops) {
            st.fired.eio += 1;
            Err(eio("I/O error"))
        } else {
            f(&mut st)
        };
        if st.faults.crash_after == Some(st.ops) {
            st.frozen = true;
        }
        r
    }

    /// Count a read, failing it if it is one the faults pick.
    fn begin_read(st: &mut State) -> io::Result<()> {
        Self::check_alive(st)?;
        st.reads += 1;
        if st.faults.read_eio_at.contains(&st.reads) {
            st.fired.read += 1;
            return Err(eio("read error"));
        }
        Ok(())
    }

    fn check_alive(st: &State) -> io::Result<()> {
        if st.frozen {
            Err(crashed())
        } else {
            Ok(())
        }
    }

    fn used(st: &mut State) -> u64 {
        let live = &st.live;
        st.usage.get_or_insert_with(|| live.usage()).bytes
    }

    /// ENOSPC unless `need` more bytes fit under the capacity.
    fn need_space(st: &mut State, need: u64) -> io::Result<()> {
        let Some(cap) = st.faults.capacity else {
            return Ok(());
        };
        if Self::used(st) + need <= cap {
            return Ok(());
        }
        st.fired.enospc += 1;
        Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "No space left on device (simulated)",
        ))
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

    /// Apply to the live view and queue; keeps the usage cache current for data operations
    /// (the common case) and drops it for entry operations, which change what is reachable.
    fn push(&self, st: &mut State, op: Op) {
        let now = self.now();
        match (&op, st.usage.as_mut()) {
            (Op::Write { ino, .. } | Op::SetLen { ino, .. }, Some(u)) => {
                let before = st.live.file_len(*ino);
                st.live.apply(&op, now);
                if u.reachable.contains(ino) {
                    u.bytes = u.bytes - before + st.live.file_len(*ino);
                }
            }
            (Op::Write { .. } | Op::SetLen { .. }, None) => st.live.apply(&op, now),
            _ => {
                st.live.apply(&op, now);
                st.usage = None;
            }
        }
        st.pending.push(op);
    }

    /// Make the pending operations `mine` selects durable. At an injected fsync failure they
    /// are dropped instead: Linux marks the pages clean after reporting the error, so the data
    /// never reaches the disk while the page cache (the live view) keeps serving it.
    fn flush(&self, st: &mut State, mine: impl Fn(&Op) -> bool) -> io::Result<()> {
        let (ours, rest): (Vec<Op>, Vec<Op>) =
            std::mem::take(&mut st.pending).into_iter().partition(mine);
        st.pending = rest;
        if st.faults.fsync_fail_at.contains(&st.ops) {
            st.fired.fsync += 1;
            return Err(eio("fsync failure"));
        }
        let now = self.now();
        for op in &ours {
            st.durable.apply(op, now);
        }
        Ok(())
    }

    fn new_node(st: &mut State, node: Node) -> Ino {
        let ino = st.live.next_ino.max(st.durable.next_ino);
        st.live.next_ino = ino + 1;
        st.durable.next_ino = ino + 1;
        // The inode itself exists on both sides; only its name is pending.
        st.live.nodes.insert(ino, node.clone());
        st.durable.nodes.insert(ino, node);
        ino
    }

    fn create(&self, path: &Path, dir: bool) -> io::Result<Ino> {
        let tag = if dir { "mkdir" } else { "create" };
        self.mutate(tag, &[path_bytes(path)], |st| {
            let (parent, name) = Self::parent_of(st, path)?;
            if let Some(Node::Dir { entries, .. }) = st.live.nodes.get(&parent) {
                if entries.contains_key(&name) {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{}: exists", path.display()),
                    ));
                }
            }
            // A new name needs room in the directory; a directory needs a whole block.
            Self::need_space(st, if dir { DIR_BYTES } else { 1 })?;
            let mtime = self.now();
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
            let ino = Self::new_node(st, node);
            let op = Op::Add {
                dir: parent,
                name,
                ino,
                from: None,
            };
            self.push(st, op);
            Ok(ino)
        })
    }
}

/// The last pending write that can be torn in half.
fn last_write(pending: &[Op]) -> Option<usize> {
    pending
        .iter()
        .rposition(|o| matches!(o, Op::Write { data, .. } if data.len() > 1))
}

/// The crash images [`SimFs::persist_choices`] enumerates.
fn enumerated_crash(img: &mut Image, pending: &[Op], p: &Persist, now: u64) {
    let last = last_write(pending);
    for (i, op) in pending.iter().enumerate() {
        match p {
            Persist::Synced => break,
            Persist::AllBut(j) | Persist::TornLastWriteBut(j) if *j == i => continue,
            Persist::TornLastWrite | Persist::TornLastWriteBut(_) if Some(i) == last => {
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
}

/// Seeded crash: with `subset` each pending operation lands or not and a write that lands is
/// torn by sector half the time; without, every operation lands and every write is torn by
/// sector. A link or rename whose source name is missing does not happen.
fn seeded_crash(img: &mut Image, pending: &[Op], seed: u64, subset: bool, now: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for op in pending {
        if (subset && !rng.random_bool(0.5)) || !img.holds(op) {
            continue;
        }
        match op {
            Op::Write { ino, off, data } if !subset || rng.random_bool(0.5) => {
                for piece in sector_pieces(*ino, *off, data) {
                    if rng.random_bool(0.5) {
                        img.apply(&piece, now);
                    }
                }
            }
            _ => img.apply(op, now),
        }
    }
}

pub struct SimFile {
    fs: SimFs,
    ino: Ino,
}

impl FsFile for SimFile {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let (fs, ino) = (&self.fs, self.ino);
        let parts: [&[u8]; 3] = [&ino.to_le_bytes(), &offset.to_le_bytes(), buf];
        fs.mutate("write", &parts, |st| {
            let grow = (offset + buf.len() as u64).saturating_sub(st.live.file_len(ino));
            // Overwriting allocated blocks needs no space, even on a full disk.
            if grow > 0 {
                SimFs::need_space(st, grow)?;
            }
            let op = Op::Write {
                ino,
                off: offset,
                data: buf.to_vec(),
            };
            fs.push(st, op);
            Ok(())
        })
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.fs.lock();
        SimFs::begin_read(&mut st)?;
        match st.live.nodes.get(&self.ino) {
            Some(Node::File { data, .. }) => {
                let start = (offset as usize).min(data.len());
                let n = buf.len().min(data.len() - start);
                buf[..n].copy_from_slice(&data[start..start + n]);
                st.bytes_read += n as u64;
                Ok(n)
            }
            _ => Err(io::Error::other("stale file handle")),
        }
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let (fs, ino) = (&self.fs, self.ino);
        fs.mutate("setlen", &[&ino.to_le_bytes(), &len.to_le_bytes()], |st| {
            fs.push(st, Op::SetLen { ino, len });
            Ok(())
        })
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
        let (fs, ino) = (&self.fs, self.ino);
        fs.mutate("fsync", &[&ino.to_le_bytes()], |st| {
            fs.flush(st, |o| o.is_data_of(ino))
        })
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
        let mut st = self.lock();
        Self::begin_read(&mut st)?;
        match st.live.lookup(path).and_then(|i| st.live.nodes.get(&i)) {
            Some(Node::File { data, .. }) => {
                let data = data.clone();
                st.bytes_read += data.len() as u64;
                Ok(data)
            }
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
        self.mutate("rename", &[path_bytes(from), path_bytes(to)], |st| {
            let src = Self::parent_of(st, from)?;
            let dst = Self::parent_of(st, to)?;
            let ino = st.live.lookup(from).ok_or_else(|| not_found(from))?;
            Self::need_space(st, 1)?;
            // One operation, durable once either directory is fsynced (one journal transaction).
            let op = Op::Rename {
                from: src,
                to: dst,
                ino,
            };
            self.push(st, op);
            Ok(())
        })
    }
    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.mutate("link", &[path_bytes(from), path_bytes(to)], |st| {
            let ino = st.live.lookup(from).ok_or_else(|| not_found(from))?;
            let src = Self::parent_of(st, from)?;
            let (dir, name) = Self::parent_of(st, to)?;
            if st.live.lookup(to).is_some() {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists"));
            }
            Self::need_space(st, 1)?;
            let op = Op::Add {
                dir,
                name,
                ino,
                from: Some(src),
            };
            self.push(st, op);
            Ok(())
        })
    }
    fn unlink(&self, path: &Path) -> io::Result<()> {
        self.mutate("unlink", &[path_bytes(path)], |st| {
            let ino = st.live.lookup(path).ok_or_else(|| not_found(path))?;
            if matches!(st.live.nodes.get(&ino), Some(Node::Dir { .. })) {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "is a directory",
                ));
            }
            let (dir, name) = Self::parent_of(st, path)?;
            self.push(st, Op::Remove { dir, name });
            Ok(())
        })
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.mutate("fsyncdir", &[path_bytes(path)], |st| {
            let d = st.live.lookup(path).ok_or_else(|| not_found(path))?;
            self.flush(st, |o| o.touches_dir(d))
        })
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut st = self.lock();
        Self::check_alive(&st)?;
        let names = match st.live.lookup(path).and_then(|i| st.live.nodes.get(&i)) {
            // BTreeMap keys: already sorted bytewise.
            Some(Node::Dir { entries, .. }) => Ok(entries.keys().cloned().collect::<Vec<_>>()),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )),
            None => Err(not_found(path)),
        }?;
        st.listed += names.len() as u64;
        Ok(names)
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
                uid: OWNER,
                gid: OWNER,
            }),
            Some(Node::Dir { mtime, .. }) => Ok(Metadata {
                len: 0,
                is_dir: true,
                mtime: t(*mtime),
                mode: 0o755,
                uid: OWNER,
                gid: OWNER,
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
        let mut f = fs.create_new(Path::new("/a")).unwrap();
        fs.set_capacity(Some(fs.used_bytes() + 4));
        f.write_at(0, b"1234").unwrap();
        let e = f.write_at(4, b"5").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        let e = fs.rename(Path::new("/a"), Path::new("/b")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        fs.set_capacity(Some(fs.used_bytes() + 1));
        fs.rename(Path::new("/a"), Path::new("/b")).unwrap();
        assert_eq!(fs.list_dir(Path::new("/")).unwrap(), vec!["b"]);
        assert_eq!(fs.read(Path::new("/b")).unwrap(), b"1234");
    }

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    fn file(img: &Image, path: &str) -> Vec<u8> {
        let f = img.files().into_iter().find(|(n, _)| n == path);
        f.unwrap_or_else(|| panic!("{path} missing")).1
    }

    fn names(img: &Image) -> Vec<String> {
        img.files().into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn failed_fsync_loses_data_for_good_while_reads_still_see_it() {
        let fs = fs();
        let mut f = fs.create_new(p("/a")).unwrap(); // op 1
        fs.sync_dir(p("/")).unwrap(); // 2
        f.write_at(0, b"old").unwrap(); // 3
        f.sync().unwrap(); // 4
        f.write_at(0, b"new!").unwrap(); // 5
        fs.set_faults(Faults {
            fsync_fail_at: [6].into(),
            ..Faults::default()
        });
        assert!(f.sync().is_err()); // 6
        assert_eq!(fs.fired().fsync, 1);
        assert_eq!(fs.read(p("/a")).unwrap(), b"new!");
        // Not even "everything pending reached the disk" brings it back.
        assert_eq!(file(&fs.crash_image(&Persist::All), "/a"), b"old");
        f.write_at(4, b"more").unwrap(); // 7
        f.sync().unwrap(); // 8: succeeds, for what came after the failure only
        assert_eq!(file(&fs.crash_image(&Persist::Synced), "/a"), b"old\0more");
        assert_eq!(fs.read(p("/a")).unwrap(), b"new!more");
        assert_eq!(fs.fired().fsync, 1);
    }

    #[test]
    fn failed_dir_fsync_loses_the_names_it_covered() {
        let fs = fs();
        fs.set_faults(Faults {
            fsync_fail_at: [2].into(),
            ..Faults::default()
        });
        fs.create_new(p("/a")).unwrap();
        assert!(fs.sync_dir(p("/")).is_err());
        assert_eq!(fs.list_dir(p("/")).unwrap(), vec!["a"]);
        assert!(fs.crash_image(&Persist::All).files().is_empty());
        fs.create_new(p("/b")).unwrap();
        fs.sync_dir(p("/")).unwrap();
        assert_eq!(names(&fs.crash_image(&Persist::Synced)), vec!["/b"]);
        assert_eq!(fs.list_dir(p("/")).unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn crash_point_on_a_failing_operation_still_freezes() {
        let fs = fs();
        fs.set_faults(Faults {
            crash_after: Some(2),
            eio_at: Some(1),
            ..Faults::default()
        });
        assert!(fs.mkdir(p("/a")).is_err());
        assert_eq!(fs.fired().eio, 1);
        assert!(!fs.is_frozen());
        assert_eq!(
            fs.unlink(p("/nope")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(fs.is_frozen());
    }

    #[test]
    fn unlinking_frees_space() {
        let fs = fs();
        let mut a = fs.create_new(p("/a")).unwrap();
        let mut b = fs.create_new(p("/b")).unwrap();
        let base = fs.used_bytes();
        assert_eq!(base, DIR_BYTES);
        fs.set_capacity(Some(base + 10));
        a.write_at(0, &[1; 8]).unwrap();
        assert_eq!(fs.used_bytes(), base + 8);
        let e = b.write_at(0, &[2; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        // `a` is still open, but a file without a name takes no space.
        fs.unlink(p("/a")).unwrap();
        assert_eq!(fs.used_bytes(), base);
        b.write_at(0, &[2; 8]).unwrap();
        b.write_at(0, &[3; 8]).unwrap(); // an overwrite needs no room
        assert_eq!(fs.fired().enospc, 1);
        // A second name does not count twice.
        fs.link(p("/b"), p("/c")).unwrap();
        assert_eq!(fs.used_bytes(), base + 8);
        assert_eq!(fs.live_image().used_bytes(), fs.used_bytes());
        fs.mkdir(p("/d")).unwrap_err();
        fs.set_capacity(None);
        fs.mkdir(p("/d")).unwrap();
        b.set_len(2).unwrap();
        assert_eq!(fs.used_bytes(), 2 * DIR_BYTES + 2);
        assert_eq!(fs.live_image().used_bytes(), fs.used_bytes());
    }

    #[test]
    fn names_and_directories_need_space() {
        let fs = fs();
        let mut a = fs.create_new(p("/a")).unwrap();
        fs.set_capacity(Some(fs.used_bytes() + 100));
        // 100 bytes free: a name fits, a directory block does not.
        let full = io::ErrorKind::StorageFull;
        assert_eq!(fs.mkdir(p("/d")).unwrap_err().kind(), full);
        fs.create_new(p("/b")).unwrap();
        a.write_at(0, &[0; 100]).unwrap();
        let tries = [
            fs.create_new(p("/c")).map(|_| ()),
            fs.mkdir(p("/d")),
            fs.link(p("/a"), p("/l")),
            fs.rename(p("/a"), p("/r")),
        ];
        for e in tries {
            assert_eq!(e.unwrap_err().kind(), full);
        }
        assert_eq!(fs.fired().enospc, 5);
        assert_eq!(fs.list_dir(p("/")).unwrap(), vec!["a", "b"]);
        // Removing a name always works; freeing the data makes room again.
        fs.unlink(p("/a")).unwrap();
        fs.rename(p("/b"), p("/r")).unwrap();
        fs.create_new(p("/c")).unwrap();
        assert_eq!(fs.list_dir(p("/")).unwrap(), vec!["c", "r"]);
    }

    #[test]
    fn read_error_hits_the_chosen_read_only() {
        let fs = fs();
        let mut f = fs.create_new(p("/a")).unwrap();
        f.write_at(0, b"abc").unwrap();
        let ops = fs.ops();
        fs.set_faults(Faults {
            read_eio_at: [2].into(),
            ..Faults::default()
        });
        assert_eq!(fs.read(p("/a")).unwrap(), b"abc");
        let mut buf = [0; 3];
        assert!(f.read_at(0, &mut buf).is_err());
        assert_eq!(buf, [0; 3]);
        assert_eq!(f.read_at(0, &mut buf).unwrap(), 3);
        assert_eq!(&buf, b"abc");
        assert!(fs.read(p("/a")).is_ok());
        assert_eq!((fs.reads(), fs.ops(), fs.fired().read), (4, ops, 1));
    }

    /// A disk holding `/q/m` (`len` bytes of 0xff) and an empty `/e`.
    fn image(len: usize) -> Image {
        let fs = fs();
        fs.mkdir(p("/q")).unwrap();
        let mut f = fs.create_new(p("/q/m")).unwrap();
        f.write_at(0, &vec![0xff; len]).unwrap();
        fs.create_new(p("/e")).unwrap();
        fs.crash_image(&Persist::All)
    }

    #[test]
    fn flip_bit_and_zero_sector_change_exactly_their_bytes() {
        let mut img = image(1200);
        let mut want = vec![0xff; 1200];
        assert!(img.flip_bit("/q/m", 5, 3));
        want[5] = 0xf7;
        assert_eq!(file(&img, "/q/m"), want);
        assert!(img.zero_sector("/q/m", 2));
        want[1024..].fill(0);
        assert_eq!(file(&img, "/q/m"), want);
        assert!(img.zero_sector("/q/m", 0));
        want[..512].fill(0);
        assert_eq!(file(&img, "/q/m"), want);
        assert!(!img.zero_sector("/q/m", 0), "already zero");
        assert!(!img.zero_sector("/q/m", 3), "past the end");
        assert!(!img.flip_bit("/q/m", 1200, 0));
        assert!(!img.flip_bit("/q/m", 0, 8));
        assert!(!img.flip_bit("/nope", 0, 0));
        assert!(!img.flip_bit("/q", 0, 0));
        assert_eq!(file(&img, "/q/m"), want);
        let sizes = vec![("/e".to_string(), 0), ("/q/m".to_string(), 1200)];
        assert_eq!(img.file_sizes(), sizes);
    }

    #[test]
    fn corrupt_damages_one_matching_file_reproducibly() {
        let clean = image(1200);
        let in_q = |p: &str| p.starts_with("/q/");
        let mut kinds = BTreeSet::new();
        for seed in 0..40 {
            let (mut a, mut b) = (clean.clone(), clean.clone());
            let what = a.corrupt(seed, in_q).unwrap();
            assert_eq!(b.corrupt(seed, in_q).as_ref(), Some(&what));
            assert_eq!(a.files(), b.files());
            let changed = file(&a, "/q/m").iter().filter(|&&x| x != 0xff).count();
            if what.starts_with("zeroed") {
                assert!(changed == 512 || changed == 176, "{what}: {changed}");
            } else {
                assert_eq!(changed, 1, "{what}");
            }
            assert_eq!(file(&a, "/e"), b"");
            kinds.insert(what.split(' ').next().unwrap().to_string());
        }
        assert_eq!(kinds.len(), 2, "both kinds of damage: {kinds:?}");
        assert_eq!(clean.clone().corrupt(1, |p| p.starts_with("/x")), None);
        assert_eq!(clean.clone().corrupt(1, |p| p == "/e"), None);
    }

    /// For each byte range: whether it holds `fill` (landed) or zeros/nothing (did not).
    fn landed(data: &[u8], ranges: &[(usize, usize)], fill: u8) -> Vec<bool> {
        let ranges = ranges.iter().map(|&(s, e)| match data.get(s..e) {
            Some(r) if r.iter().all(|&x| x == fill) => true,
            Some(r) if r.iter().all(|&x| x == 0) => false,
            None if data.len() <= s => false,
            _ => panic!("range {s}..{e} torn inside a sector"),
        });
        ranges.collect()
    }

    #[test]
    fn sector_tears_keep_and_drop_whole_sectors_per_seed() {
        let fs = fs();
        let mut a = fs.create_new(p("/a")).unwrap();
        let mut b = fs.create_new(p("/b")).unwrap();
        fs.sync_dir(p("/")).unwrap();
        a.write_at(0, &[0xaa; 2048]).unwrap();
        b.write_at(100, &[0xbb; 1024]).unwrap();
        let a_secs = [(0, 512), (512, 1024), (1024, 1536), (1536, 2048)];
        let b_secs = [(100, 512), (512, 1024), (1024, 1124)];
        let (mut holes, mut both, mut distinct) = (false, false, BTreeSet::new());
        for seed in 0..32 {
            let img = fs.crash_image(&Persist::Sectors(seed));
            assert_eq!(img.files(), fs.crash_image(&Persist::Sectors(seed)).files());
            let ka = landed(&file(&img, "/a"), &a_secs, 0xaa);
            let kb = landed(&file(&img, "/b"), &b_secs, 0xbb);
            let torn = |k: &[bool]| k.contains(&true) && k.contains(&false);
            // Not a prefix: a later sector landed after an earlier one did not.
            holes |= ka.windows(2).any(|w| !w[0] && w[1]);
            both |= torn(&ka) && torn(&kb);
            distinct.insert((ka, kb));
        }
        assert!(holes && both);
        assert!(distinct.len() > 8, "{distinct:?}");
    }

    #[test]
    fn subset_never_applies_a_link_or_rename_whose_source_is_gone() {
        let fs = fs();
        fs.create_new(p("/t")).unwrap();
        fs.rename(p("/t"), p("/u")).unwrap();
        fs.rename(p("/u"), p("/f")).unwrap();
        fs.create_new(p("/a")).unwrap();
        fs.link(p("/a"), p("/b")).unwrap();
        let mut chains = BTreeSet::new();
        for seed in 0..200 {
            let n = names(&fs.crash_image(&Persist::Subset(seed)));
            assert_eq!(n, names(&fs.crash_image(&Persist::Subset(seed))));
            let in_chain = |x: &&String| ["/t", "/u", "/f"].contains(&x.as_str());
            let chain: Vec<String> = n.iter().filter(in_chain).cloned().collect();
            assert!(chain.len() <= 1, "seed {seed}: {n:?}");
            let has = |x: &str| n.iter().any(|y| y == x);
            assert!(!has("/b") || has("/a"), "seed {seed}: {n:?}");
            chains.insert(chain);
        }
        // Each prefix of the chain happened for some seed: none, /t, /u, /f.
        assert_eq!(chains.len(), 4, "{chains:?}");
    }

    #[test]
    fn seeded_choices_are_reproducible_and_only_when_pending() {
        let fs = fs();
        assert!(fs.seeded_choices(7, 3).is_empty());
        fs.create_new(p("/a")).unwrap();
        let c = fs.seeded_choices(7, 3);
        assert_eq!(c.len(), 6);
        assert_eq!(c, fs.seeded_choices(7, 3));
        assert_ne!(c, fs.seeded_choices(8, 3));
        assert!(matches!(c[0], Persist::Sectors(_)) && matches!(c[1], Persist::Subset(_)));
    }

    #[test]
    fn persist_text_round_trips() {
        let all = [
            Persist::Synced,
            Persist::All,
            Persist::AllBut(3),
            Persist::TornLastWrite,
            Persist::TornLastWriteBut(2),
            Persist::Sectors(1234),
            Persist::Subset(u64::MAX),
        ];
        for x in all {
            let s = x.to_string();
            // Debug and Display agree, so older failure lines parse too.
            assert_eq!(s, format!("{x:?}"));
            assert_eq!(s.parse::<Persist>(), Ok(x));
        }
        assert_eq!(Persist::Subset(99).to_string(), "Subset(99)");
        let mut r = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..50 {
            let x = Persist::draw(&mut r);
            assert_eq!(x.to_string().parse::<Persist>(), Ok(x));
        }
        for bad in [
            "",
            "Sync",
            "AllBut(",
            "AllBut(x)",
            "Subset(1)x",
            "Nope(1)",
            "All(1)",
        ] {
            assert!(bad.parse::<Persist>().is_err(), "{bad}");
        }
    }

    #[test]
    fn trace_hash_covers_bytes_and_names() {
        let run = |data: &[u8], to: &str| {
            let fs = fs();
            let mut f = fs.create_new(p("/a")).unwrap();
            f.write_at(0, data).unwrap();
            fs.rename(p("/a"), p(to)).unwrap();
            fs.trace_hash()
        };
        assert_eq!(run(b"aaaa", "/b"), run(b"aaaa", "/b"));
        assert_ne!(run(b"aaaa", "/b"), run(b"aaab", "/b"));
        assert_ne!(run(b"aaaa", "/b"), run(b"aaaa", "/c"));
    }
}
