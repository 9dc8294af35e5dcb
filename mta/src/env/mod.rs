//! The environment the MTA runs in: clock, filesystem, network, randomness.
//!
//! Every source of nondeterminism goes through these traits so that the same MTA code runs on a
//! real host ([`real::RealEnv`]) and inside the deterministic simulator (crate `sim`). The
//! filesystem trait is deliberately small and POSIX-shaped: exactly the calls the queue and the
//! deliveries make, so a crash model can reason about each one.

mod privsep;
pub mod real;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};

/// Everything nondeterministic, bundled. Cheap to clone (handles to shared state).
pub trait Env: Clone + Send + Sync + 'static {
    type Fs: Fs;
    type Net: Net;
    fn fs(&self) -> &Self::Fs;
    fn net(&self) -> &Self::Net;
    /// Wall-clock time.
    fn now(&self) -> SystemTime;
    /// A timer on the environment's clock.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;
    /// Uniformly random 64 bits (seeded in the simulator).
    fn random_u64(&self) -> u64;
    /// Run a program (`/bin/sh -c command` on a real host; scripted in the simulator), its
    /// standard input read from `input` a piece at a time.
    fn run_program(
        &self,
        p: Program,
        input: &mut dyn Input,
    ) -> impl Future<Output = io::Result<Exit>> + Send;

    /// Start receiving this process's signals. Called once, inside the runtime.
    fn signals(&self) -> io::Result<Signals>;
    /// A line for the operator on standard output (`mta: listening on ADDR`).
    fn stdout(&self, line: &str);
    /// A line for the operator on standard error.
    fn stderr(&self, line: &str);
    /// This process's id (`mta queue flush` finds the queue manager by it).
    fn pid(&self) -> u32;
    /// Every address of this host's interfaces, IPv4 and IPv6 (qmail's ipme).
    fn local_addresses(&self) -> io::Result<Vec<std::net::IpAddr>>;
    /// The user id this process runs as (0: it may deliver for anyone but root).
    fn uid(&self) -> u32;
    /// Run a local delivery as `who` in `home` (qmail-lspawn starting qmail-local as the
    /// recipient). `f` gets the directory to name paths inside home with: on a real host
    /// started as root it runs on a thread of its own whose working directory is `home` and
    /// whose filesystem identity is `who` (files it creates are theirs; it can touch only what
    /// they may), and gets `.`; otherwise, and in the simulator (which records `who`), it
    /// runs in place and gets `home`.
    fn run_as<T, Fut, F>(
        &self,
        who: Creds,
        home: &std::path::Path,
        f: F,
    ) -> impl Future<Output = io::Result<T>> + Send + use<Self, T, Fut, F>
    where
        T: Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
        F: FnOnce(std::path::PathBuf) -> Fut + Send + 'static;
    /// Start the local-delivery helper (qmail-lspawn): a process that keeps this one's
    /// privileges and serves [`crate::local::lspawn::serve`] on the other end of the returned
    /// pipe, so that this process can then give its privileges up ([`Env::drop_privileges`])
    /// and still have mail delivered as each recipient. On a real host, this binary run as
    /// `mta lspawn`; in the simulator, a task with an identity of its own.
    fn spawn_lspawn(&self, root: &Path) -> io::Result<HelperPipe>;
    /// Start the POP3 helper (where qmail-popup runs checkpassword, which starts qmail-pop3d
    /// as the user): like [`Env::spawn_lspawn`], a process keeping this one's privileges that
    /// serves [`crate::pop3d::helper::serve`] on the other end of the pipe, checking POP3
    /// logins and working on each mailbox as its owner. On a real host `mta pop3helper`; in
    /// the simulator, a task with an identity of its own.
    fn spawn_pop3_helper(&self, root: &Path) -> io::Result<HelperPipe>;
    /// Become `account` for good, the whole process: its uid and gid and no supplementary
    /// groups (qmail's daemons run as qmaild, qmails and qmailr). Refuses root's account.
    fn drop_privileges(&self, account: &str) -> io::Result<Creds>;
    /// Run blocking filesystem work (an fsync) off the threads that serve the network: on a
    /// blocking-thread pool on a real host, in place in the simulator.
    fn blocking<T, F>(&self, f: F) -> impl Future<Output = T> + Send + use<Self, T, F>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static;
    /// Run `f` to completion where it may block in fsync without stalling the network side
    /// (a runtime of `threads` threads of its own on a real host). The runtime is made before
    /// this returns (out of descriptors: an error now, not a worker that never runs); the
    /// future gives `None` if `f` panicked.
    fn spawn_worker<T, F>(
        &self,
        threads: usize,
        f: F,
    ) -> io::Result<impl Future<Output = Option<T>> + Send + use<Self, T, F>>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static;
}

/// The two ends of the local-delivery helper's pipe, as this process sees them.
pub struct HelperPipe {
    pub from: Box<dyn AsyncRead + Send + Unpin>,
    pub to: Box<dyn AsyncWrite + Send + Unpin>,
}

/// The signals `mta run` reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Reread the control files.
    Hup,
    /// Finish the sessions in progress and exit.
    Term,
    /// As `Term`.
    Int,
    /// Make every pending delivery due now.
    Alrm,
}

/// The signals a process receives, in order.
pub type Signals = tokio::sync::mpsc::UnboundedReceiver<Signal>;

/// Whom a local delivery runs as: the recipient's user and group ids from `users/assign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
}

/// A program run for delivery (`|command` in a .qmail file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub command: String,
    /// Working directory (the user's home; `.` inside [`Env::run_as`] on a real host).
    pub dir: std::path::PathBuf,
    /// The program's user and group (no supplementary groups); `None`: this process's.
    pub creds: Option<Creds>,
    /// Environment variables (qmail-command's SENDER, RECIPIENT, ...).
    pub vars: Vec<(String, String)>,
    /// What the program reads on descriptor 3 (checkpassword's `user\0password\0...`).
    pub fd3: Option<Secret>,
}

/// Bytes that must never be printed (a password): `Debug` shows only their length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// A program's standard input, a piece at a time (an empty piece is the end): a message is
/// streamed from the queue, never held whole.
pub trait Input: Send {
    fn next_piece(&mut self) -> io::Result<Vec<u8>>;
}

impl Input for &[u8] {
    fn next_piece(&mut self) -> io::Result<Vec<u8>> {
        let n = self.len().min(64 * 1024);
        let (piece, rest) = self.split_at(n);
        *self = rest;
        Ok(piece.to_vec())
    }
}

/// How a program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    /// The start of what it wrote to stdout and stderr.
    pub output: Vec<u8>,
}

/// Output kept from a program (the delivery report quotes it).
pub const MAX_PROGRAM_OUTPUT: usize = 1000;

/// Unix seconds of a wall-clock time (0 for times before the epoch).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// File metadata the MTA looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    pub len: u64,
    pub is_dir: bool,
    pub mtime: SystemTime,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    pub gid: u32,
}

/// The filesystem calls the MTA makes. Paths are absolute or relative to the process cwd.
///
/// Durability contract (Linux): file data is durable after [`FsFile::sync`]; a directory entry
/// created, removed or renamed is durable only after [`Fs::sync_dir`] of the directory holding it.
pub trait Fs: Send + Sync + 'static {
    type File: FsFile;
    type Lock: Send + 'static;

    /// Create a new file for writing; fails with `AlreadyExists` if the name exists (O_EXCL).
    fn create_new(&self, path: &Path) -> io::Result<Self::File>;
    /// Open an existing file for reading and writing.
    fn open_rw(&self, path: &Path) -> io::Result<Self::File>;
    /// Open `name` in directory `dir` for reading, for a privileged process reading a file an
    /// unprivileged one names: neither `dir` nor `name` may be a symbolic link, only a regular
    /// file opens (never blocking on a FIFO), and it must be on `dir`'s device. Returns what
    /// the open file and the open directory are (not what their names were a moment before).
    /// A file system with symbolic links or special files must override this.
    fn open_read_in(&self, dir: &Path, name: &str) -> io::Result<(Self::File, Metadata, Metadata)> {
        let f = self.open_rw(&dir.join(name))?;
        Ok((f, self.metadata(&dir.join(name))?, self.metadata(dir)?))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Create a directory; fails with `AlreadyExists` if it exists.
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Atomically rename (replacing `to` if it exists).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Make a hard link; fails with `AlreadyExists` if `to` exists.
    fn link(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Remove a file.
    fn unlink(&self, path: &Path) -> io::Result<()>;
    /// Make the directory's entries durable (fsync on the directory).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Names in a directory, sorted bytewise (never in hash order).
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn metadata(&self, path: &Path) -> io::Result<Metadata>;
    /// Take an exclusive advisory lock on an existing file without blocking:
    /// `WouldBlock` if another holder has it. Released when the guard drops.
    fn try_lock(&self, path: &Path) -> io::Result<Self::Lock>;
}

/// An open file. Positioned IO only, so no hidden cursor state.
pub trait FsFile: Send + 'static {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many (0 at end of file).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    fn size(&mut self) -> io::Result<u64>;
    /// Make data and size durable (fsync).
    fn sync(&mut self) -> io::Result<()>;
}

/// Create every missing directory of `path` (like `mkdir -p`), returning the ones created,
/// outermost first, so the caller can make them durable.
pub fn mkdir_all<F: Fs>(fs: &F, path: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let mut missing = Vec::new();
    let mut p = Some(path);
    while let Some(dir) = p {
        if dir.as_os_str().is_empty() {
            break;
        }
        match fs.metadata(dir) {
            Ok(m) if m.is_dir => break,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", dir.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(dir.to_path_buf()),
            Err(e) => return Err(e),
        }
        p = dir.parent();
    }
    missing.reverse();
    for d in &missing {
        match fs.mkdir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(missing)
}

/// Write a whole new file durably: create exclusively, write, fsync the file. The caller makes
/// the directory entry durable (usually after a rename, batched over many files).
pub fn write_new_synced<F: Fs>(fs: &F, path: &Path, data: &[u8], sync: bool) -> io::Result<()> {
    let mut f = fs.create_new(path)?;
    f.write_at(0, data)?;
    if sync {
        f.sync()?;
    }
    Ok(())
}

/// TCP and UDP.
pub trait Net: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    type Listener: Listener<Stream = Self::Stream>;
    type Udp: Udp;
    fn listen(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    fn bind_udp(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Udp>> + Send;
}

pub trait Listener: Send + Sync + 'static {
    type Stream;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

pub trait Udp: Send + Sync + 'static {
    fn send_to(&self, buf: &[u8], to: SocketAddr)
        -> impl Future<Output = io::Result<usize>> + Send;
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}
