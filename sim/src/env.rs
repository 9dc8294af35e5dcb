//! The simulated environment: [`SimFs`], turmoil's network, a shared simulated clock and a
//! seeded RNG. Inside a turmoil host the clock follows turmoil's simulated time. Outside one
//! it is advanced by hand, or, while [`SimEnv::anchor`]ed in a tokio runtime with paused time,
//! follows that runtime's clock, which jumps to the next timer whenever every task waits: a
//! week of a queue manager's life passes in a moment, with no network at all.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use std::collections::BTreeMap;

use mta::env::{Env, Exit, HelperPipe, Listener, Net, Program, Signal, Signals, Udp};

/// The simulated hosts' system accounts besides root, with their uid (= gid). The simulated
/// disk gives everything one owner ([`crate::fs::OWNER`]), so the queue user is that one.
pub const ACCOUNTS: &[(&str, u32)] = &[("mtaq", crate::fs::OWNER)];

use crate::fs::{Clock, SimFs};

#[derive(Clone)]
pub struct SimEnv {
    fs: SimFs,
    net: Arc<SimNet>,
    clock: Clock,
    /// Unix ms at turmoil time zero, when running inside turmoil.
    epoch_ms: Option<u64>,
    rng: Arc<Mutex<ChaCha8Rng>>,
    /// The process's user: 0 (root, as a production server starts) unless set; shared by
    /// the clones of one process (giving root up is for all of them).
    uid: Arc<std::sync::atomic::AtomicU32>,
    /// While set: tokio's (paused) instant and the clock's ms at that instant.
    anchor: Arc<Mutex<Option<(tokio::time::Instant, u64)>>>,
    programs: Arc<Mutex<BTreeMap<String, ProgramFn>>>,
    /// Every program run, in order (for checks).
    pub runs: Arc<Mutex<Vec<Program>>>,
    /// What each program run read on standard input, in order.
    pub stdins: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Every local delivery's user and home, in order (for checks).
    pub deliveries_as: Arc<Mutex<Vec<(mta::env::Creds, std::path::PathBuf)>>>,
    process: Process,
}

/// What the world sees of a simulated process: the signals it is sent and what it prints.
#[derive(Clone, Default)]
pub struct Process(Arc<Mutex<ProcState>>);

#[derive(Default)]
struct ProcState {
    signals: Option<tokio::sync::mpsc::UnboundedSender<Signal>>,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Process {
    fn st(&self) -> std::sync::MutexGuard<'_, ProcState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Send a signal (`kill -HUP`); false when the process is not listening for signals.
    pub fn kill(&self, s: Signal) -> bool {
        self.st()
            .signals
            .as_ref()
            .is_some_and(|tx| tx.send(s).is_ok())
    }
    /// Lines printed on standard output so far.
    pub fn stdout(&self) -> Vec<String> {
        self.st().stdout.clone()
    }
    /// Lines printed on standard error so far.
    pub fn stderr(&self) -> Vec<String> {
        self.st().stderr.clone()
    }
}

/// A scripted program of the simulated host.
pub type ProgramFn = Arc<dyn Fn(&Program) -> Exit + Send + Sync>;

impl SimEnv {
    /// An env outside turmoil: the clock moves only when told (or by `sleep`).
    pub fn manual(fs: SimFs, clock: Clock, seed: u64) -> Self {
        SimEnv {
            fs,
            net: Arc::new(SimNet { offline: false }),
            clock,
            epoch_ms: None,
            rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))),
            anchor: Arc::new(Mutex::new(None)),
            uid: Arc::new(0.into()),
            programs: Arc::new(Mutex::new(BTreeMap::new())),
            runs: Arc::new(Mutex::new(Vec::new())),
            deliveries_as: Arc::new(Mutex::new(Vec::new())),
            stdins: Arc::new(Mutex::new(Vec::new())),
            process: Process::default(),
        }
    }

    /// An env outside turmoil with no network: nothing listens, nothing answers. Its clock
    /// follows a paused tokio runtime while [`SimEnv::anchor`]ed.
    pub fn offline(fs: SimFs, clock: Clock, seed: u64) -> Self {
        SimEnv {
            net: Arc::new(SimNet { offline: true }),
            ..Self::manual(fs, clock, seed)
        }
    }

    /// From now on the clock follows the current tokio runtime's clock (which must be
    /// paused, so that time moves only when every task waits), until [`SimEnv::unanchor`].
    pub fn anchor(&self) {
        *self.anchor.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((tokio::time::Instant::now(), self.clock.now_ms()));
    }
    /// Back to a clock moved by hand; call it inside the runtime, so the clock keeps the
    /// simulated time reached.
    pub fn unanchor(&self) {
        self.sync_clock();
        *self.anchor.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
    fn anchored(&self) -> bool {
        self.anchor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// A helper process on this machine (`serve` on its end of a pipe), keeping this one's
    /// user; returns this process's end of the pipe.
    fn start_helper<F, Fut>(&self, serve: F) -> HelperPipe
    where
        F: FnOnce(SimEnv, HelperPipe) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let helper = self.clone().with_uid(self.uid());
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (from, to) = tokio::io::split(theirs);
        let pipe = HelperPipe {
            from: Box::new(from),
            to: Box::new(to),
        };
        tokio::spawn(serve(helper, pipe));
        let (from, to) = tokio::io::split(ours);
        HelperPipe {
            from: Box::new(from),
            to: Box::new(to),
        }
    }

    /// The same machine, for a process running as `uid`.
    pub fn with_uid(self, uid: u32) -> Self {
        SimEnv {
            uid: Arc::new(uid.into()),
            ..self
        }
    }

    /// This env's process as the world sees it (the same for every clone).
    pub fn with_process(self, process: Process) -> Self {
        SimEnv { process, ..self }
    }
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Script what `command` does when a .qmail line runs it.
    pub fn set_program(&self, command: &str, f: impl Fn(&Program) -> Exit + Send + Sync + 'static) {
        self.programs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(command.to_string(), Arc::new(f));
    }
    /// An env for a turmoil host: time is `epoch_ms` plus turmoil's simulated elapsed time.
    pub fn turmoil(fs: SimFs, clock: Clock, epoch_ms: u64, seed: u64) -> Self {
        SimEnv {
            epoch_ms: Some(epoch_ms),
            ..Self::manual(fs, clock, seed)
        }
    }
    pub fn sim_fs(&self) -> &SimFs {
        &self.fs
    }
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
    fn sync_clock(&self) {
        if let (Some(e), Some(el)) = (self.epoch_ms, turmoil::sim_elapsed()) {
            self.clock
                .set_ms(e + el.as_millis() as u64 + self.clock.skew_ms());
        } else if let Some((at, ms)) = *self.anchor.lock().unwrap_or_else(|e| e.into_inner()) {
            self.clock.set_ms(ms + at.elapsed().as_millis() as u64);
        }
    }
}

impl Env for SimEnv {
    type Fs = SimFs;
    type Net = SimNet;
    fn fs(&self) -> &SimFs {
        self.sync_clock();
        &self.fs
    }
    fn net(&self) -> &SimNet {
        &self.net
    }
    fn now(&self) -> SystemTime {
        self.sync_clock();
        self.clock.now()
    }
    fn sleep(&self, d: Duration) -> impl std::future::Future<Output = ()> + Send {
        let manual = self.epoch_ms.is_none() && !self.anchored();
        let clock = self.clock.clone();
        async move {
            if manual {
                // Let every other ready task run first: work takes no simulated time, so
                // time moves only when everything else is waiting.
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
                clock.advance(d);
            } else {
                tokio::time::sleep(d).await;
            }
        }
    }
    fn random_u64(&self) -> u64 {
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_u64()
    }
    fn run_program(
        &self,
        p: Program,
        input: &mut dyn mta::env::Input,
    ) -> impl std::future::Future<Output = io::Result<Exit>> + Send {
        // A script reads its input whole (it is never large in the simulator); input that
        // cannot be read fails the run, as on a real host.
        let result = read_input(input).map(|stdin| {
            self.stdins
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(stdin);
            let f = self
                .programs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&p.command)
                .cloned();
            let exit = match f {
                Some(f) => f(&p),
                None => Exit {
                    code: Some(127),
                    output: format!("sh: {}: not found", p.command).into_bytes(),
                },
            };
            self.runs.lock().unwrap_or_else(|e| e.into_inner()).push(p);
            exit
        });
        async move { result }
    }
    fn signals(&self) -> io::Result<Signals> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.process.st().signals = Some(tx);
        Ok(rx)
    }
    fn stdout(&self, line: &str) {
        self.process.st().stdout.push(line.to_string());
    }
    fn stderr(&self, line: &str) {
        self.process.st().stderr.push(line.to_string());
    }
    fn pid(&self) -> u32 {
        1000
    }
    fn uid(&self) -> u32 {
        self.uid.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn spawn_lspawn(&self, root: &std::path::Path) -> io::Result<HelperPipe> {
        let root = root.to_path_buf();
        Ok(self.start_helper(|env, pipe| async move {
            if let Err(e) = mta::local::lspawn::serve(env, root, pipe).await {
                tracing::error!("simulated lspawn: {e}");
            }
        }))
    }
    fn spawn_pop3_helper(&self, root: &std::path::Path) -> io::Result<HelperPipe> {
        let root = root.to_path_buf();
        Ok(self.start_helper(|env, pipe| async move {
            if let Err(e) = mta::pop3d::helper::serve(env, root, pipe).await {
                tracing::error!("simulated POP3 helper: {e}");
            }
        }))
    }
    fn blocking<T, F>(&self, f: F) -> impl std::future::Future<Output = T> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        // One thread and a simulated disk: in place, in order.
        std::future::ready(f())
    }
    fn drop_privileges(&self, account: &str) -> io::Result<mta::env::Creds> {
        let who = ACCOUNTS
            .iter()
            .find(|(name, _)| *name == account)
            .map(|&(_, id)| mta::env::Creds { uid: id, gid: id })
            .ok_or_else(|| io::Error::other(format!("no account named {account:?}")))?;
        self.uid.store(who.uid, std::sync::atomic::Ordering::SeqCst);
        Ok(who)
    }
    fn run_as<T, Fut, F>(
        &self,
        who: mta::env::Creds,
        home: &std::path::Path,
        f: F,
    ) -> impl std::future::Future<Output = io::Result<T>> + Send + use<T, Fut, F>
    where
        T: Send + 'static,
        Fut: std::future::Future<Output = T> + Send + 'static,
        F: FnOnce(std::path::PathBuf) -> Fut + Send + 'static,
    {
        self.deliveries_as
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((who, home.to_path_buf()));
        let home = home.to_path_buf();
        async move { Ok(f(home).await) }
    }
    fn local_addresses(&self) -> io::Result<Vec<std::net::IpAddr>> {
        // A turmoil host's own address; the world passes it in `Options::local_ips`.
        Ok(Vec::new())
    }
    fn spawn_worker<T, F>(
        &self,
        _threads: usize,
        f: F,
    ) -> io::Result<impl std::future::Future<Output = Option<T>> + Send + use<T, F>>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let h = tokio::spawn(f);
        Ok(async move { h.await.ok() })
    }
}

/// turmoil's simulated TCP and UDP, or (offline) no network: listening works but nobody
/// connects, connecting and sending fail at once.
pub struct SimNet {
    offline: bool,
}

/// turmoil's network, for peers and clients that are not an MTA host.
pub const TURMOIL: SimNet = SimNet { offline: false };
pub struct SimListener(Option<turmoil::net::TcpListener>, SocketAddr);
pub struct SimUdp(turmoil::net::UdpSocket);

impl Net for SimNet {
    type Stream = turmoil::net::TcpStream;
    type Listener = SimListener;
    type Udp = SimUdp;
    async fn listen(&self, addr: SocketAddr) -> io::Result<SimListener> {
        if self.offline {
            return Ok(SimListener(None, addr));
        }
        let l = turmoil::net::TcpListener::bind(addr).await?;
        Ok(SimListener(Some(l), addr))
    }
    async fn connect(&self, addr: SocketAddr) -> io::Result<turmoil::net::TcpStream> {
        if self.offline {
            return Err(unreachable());
        }
        turmoil::net::TcpStream::connect(addr).await
    }
    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<SimUdp> {
        if self.offline {
            return Err(unreachable());
        }
        turmoil::net::UdpSocket::bind(addr).await.map(SimUdp)
    }
}

impl Listener for SimListener {
    type Stream = turmoil::net::TcpStream;
    async fn accept(&self) -> io::Result<(turmoil::net::TcpStream, SocketAddr)> {
        match &self.0 {
            Some(l) => l.accept().await,
            None => std::future::pending().await,
        }
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.as_ref().map_or(Ok(self.1), |l| l.local_addr())
    }
}

impl Udp for SimUdp {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.send_to(buf, to).await
    }
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.recv_from(buf).await
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

fn unreachable() -> io::Error {
    io::Error::new(io::ErrorKind::NetworkUnreachable, "Network is unreachable")
}

/// A program's whole standard input.
fn read_input(input: &mut dyn mta::env::Input) -> io::Result<Vec<u8>> {
    let mut all = Vec::new();
    loop {
        let piece = input.next_piece()?;
        if piece.is_empty() {
            return Ok(all);
        }
        all.extend_from_slice(&piece);
    }
}
