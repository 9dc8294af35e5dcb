//! Swarm testing: each seed draws its own fault profile for a whole world — SMTP clients, two
//! full MTA hosts booted as `mta run` (one relaying for the other), a DNS host and scripted
//! peers — runs a safety phase with the faults and a liveness phase with them healed, and
//! checks the oracle: every transmission carries a unique token and is counted wherever it
//! ends up.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use mta::env::{Env, Fs, FsFile, Net, Signal};
use mta::queue::{Config, Paths};

use crate::damage;
use crate::deliver::{image, root, World};
use crate::env::{SimEnv, TURMOIL};
use crate::fixture::mailbox_files;
use crate::fs::{Clock, Faults, Fired, Image, Persist};
use crate::host::{Event, MtaHost};
use crate::oracle::{self, Excuses, Found, Sent};
use crate::pop3_reader;
pub use crate::profile::{shrink as shrink_profile, Profile};
use crate::receive::{EPOCH_MS, PORT};
use crate::remote_world::{dns_host, peer_host, PeerLog};
use crate::world::Disk;

/// When the faults are over (partitions end by 150 s, full disks by 250 s, jumps by 100 s,
/// crashes and I/O errors come early): an operator flushes then, and every 150 s after.
pub const HEAL_SECS: u64 = 250;
/// Simulated time per seed with operator flushes: everything must be delivered by then.
pub const SIMULATED_SECS: u64 = 700;
/// The longest a seed runs: with flushes, [`SIMULATED_SECS`]; on the natural schedule, past
/// three more remote passes after the faults heal (a scripted peer failure, a partition and
/// a drop may each cost one), counted from the message's age then, which a clock jump adds to.
/// A seed stops earlier once every client is done and both queues are empty.
pub fn run_secs(p: &Profile) -> u64 {
    if p.flush {
        return SIMULATED_SECS;
    }
    let start = HEAL_SECS + p.jump.map_or(0, |(_, j)| j);
    let mut age = start;
    for _ in 0..3 {
        age = mta::send::schedule::next_pass(0, age, mta::queue::Channel::Remote);
    }
    HEAL_SECS + age - start + 60
}
/// turmoil's tick: coarse enough to be fast, fine against the 10 s and 30 s timeouts.
const TICK_MS: u64 = 1000;

/// What one seed did and found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub acked: usize,
    /// Messages a mail reader took out of fred's mailbox (and still gone at the end).
    pub read: usize,
    /// Transmissions in all (acknowledged or not).
    pub sent: usize,
    pub local_delivered: usize,
    pub remote_delivered: usize,
    /// Second copies the oracle allowed (the sender could not know of the first).
    pub duplicates_remote: usize,
    pub crashes: usize,
    /// Restarts by the supervisor (a process that could not start).
    pub restarts: usize,
    /// Storage faults that actually fired on the MTA's disk.
    pub fired: Fired,
    /// Seconds the MTA's disk was full.
    pub full_secs: u64,
    /// What latent corruption did (a lost sector of a queue file), if it struck.
    pub damage: Option<String>,
    pub violations: Vec<String>,
    pub trace_hash: u64,
    /// Messages delivered on the first MTA from authenticated clients over TLS (`with
    /// ESMTPSA`), and on the second from the first over TLS (`by relay.example with ESMTPS`).
    pub over_tls: (usize, usize),
}

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// Transmissions so far, shared with the client tasks.
type Ledger = Arc<Mutex<Vec<Sent>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn body(token: &str) -> String {
    format!(
        "Subject: swarm {token}\r\n\r\n{}\r\n",
        oracle::token_line(token)
    )
}

/// A body over the receiver's 256 KiB streaming threshold.
fn big_body(token: &str) -> String {
    let line = format!("{}\r\n", "b".repeat(78));
    format!("{}{}", body(token), line.repeat(300 * 1024 / line.len()))
}

/// The simulated MTAs' certificate and key when a profile has `tls` (a throwaway self-signed
/// pair for `heaven.af.mil`, fixed so that every run writes the same bytes to the disk).
const SERVERCERT: &str = include_str!("../../fixtures/tls/servercert.pem");

/// fred's password (`secret`) in the MTA's `control/passwd` when a profile has `tls`: an
/// Argon2id hash with the smallest parameters, so checking it costs the swarm nothing.
const PASSWD: &str =
    "fred:$argon2id$v=19$m=8,t=1,p=1$c3dhcm1zYWx0c3dhcm1zYWx0$a96CS6PwCmhywU9pNog5Fy8PHzz80wEeDzMAxFyuHa8\n";

/// One SMTP transmission (over STARTTLS when the profile says so): the ledger gets its token
/// as soon as the dot is on its way (it may be accepted though the reply never comes back),
/// marked acked on `250`.
async fn send(
    to: SocketAddr,
    what: (&str, &str, &str),
    ledger: &Ledger,
    (pause, tls): (u64, bool),
) -> std::io::Result<()> {
    let mut r = BufReader::new(TURMOIL.connect(to).await?);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    if !line.starts_with("220") {
        return Ok(());
    }
    if !tls {
        return transact(r, what, ledger, pause).await;
    }
    match starttls(r).await? {
        Some(t) => transact(t, what, ledger, pause).await,
        None => Ok(()),
    }
}

/// A whole reply (its continuation lines too).
async fn reply<S: AsyncRead + Unpin>(r: &mut BufReader<S>) -> std::io::Result<String> {
    let mut all = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        all.push_str(&l);
        if l.as_bytes().get(3) != Some(&b'-') {
            return Ok(all);
        }
    }
}

/// EHLO, STARTTLS, the handshake (no certificate check: the swarm tests delivery, not
/// trust), EHLO again, AUTH as fred. `None` when the server would not.
async fn starttls(
    mut r: BufReader<turmoil::net::TcpStream>,
) -> std::io::Result<Option<BufReader<tokio_rustls::client::TlsStream<turmoil::net::TcpStream>>>> {
    for (cmd, want) in [("EHLO client.example\r\n", "250"), ("STARTTLS\r\n", "220")] {
        r.get_mut().write_all(cmd.as_bytes()).await?;
        if !reply(&mut r).await?.starts_with(want) {
            return Ok(None);
        }
    }
    let connector = tokio_rustls::TlsConnector::from(mta::tls::client_config(None));
    let name = "heaven.af.mil".try_into().expect("a DNS name");
    let mut t = BufReader::new(connector.connect(name, r.into_inner()).await?);
    // "\0fred\0secret"
    for (cmd, want) in [
        ("EHLO client.example\r\n", "250"),
        ("AUTH PLAIN AGZyZWQAc2VjcmV0\r\n", "235"),
    ] {
        t.get_mut().write_all(cmd.as_bytes()).await?;
        if !reply(&mut t).await?.starts_with(want) {
            return Ok(None);
        }
    }
    Ok(Some(t))
}

/// MAIL, RCPT, DATA and the message on a session that has been greeted.
async fn transact<S: AsyncRead + AsyncWrite + Unpin>(
    mut r: BufReader<S>,
    (rcpt, token, data): (&str, &str, &str),
    ledger: &Ledger,
    pause: u64,
) -> std::io::Result<()> {
    let mut line = String::new();
    let cmds = [
        "MAIL FROM:<fred@heaven.af.mil>\r\n".to_string(),
        format!("RCPT TO:<{rcpt}>\r\n"),
        "DATA\r\n".to_string(),
    ];
    if pause > 0 {
        // A slow client: one command at a time, with a pause before each.
        for cmd in &cmds {
            tokio::time::sleep(Duration::from_secs(pause)).await;
            r.get_mut().write_all(cmd.as_bytes()).await?;
        }
    } else {
        r.get_mut().write_all(cmds.concat().as_bytes()).await?;
    }
    for _ in 0..3 {
        line.clear();
        r.read_line(&mut line).await?;
    }
    if !line.starts_with("354") {
        return Ok(());
    }
    let i = {
        let mut l = lock(ledger);
        l.push(Sent {
            at_ms: now_ms(),
            token: token.to_string(),
            acked: false,
        });
        l.len() - 1
    };
    r.get_mut()
        .write_all(format!("{data}.\r\n").as_bytes())
        .await?;
    line.clear();
    r.read_line(&mut line).await?;
    if line.starts_with("250 ok") {
        lock(ledger)[i].acked = true;
    }
    Ok(())
}

/// A client sends its messages one after another, each until it is acknowledged; every
/// attempt is a new transmission with its own token.
async fn client(c: usize, rcpts: Vec<String>, p: Profile, ledger: Ledger) -> turmoil::Result {
    let to = SocketAddr::new(turmoil::lookup("mta"), PORT);
    let pause = p.client_pause;
    for (i, rcpt) in rcpts.iter().enumerate() {
        for k in 0.. {
            let token = format!("c{c}m{i}t{k}");
            let data = if p.big && i % 3 == 2 {
                big_body(&token)
            } else {
                body(&token)
            };
            let limit = Duration::from_secs(20 + 4 * pause);
            let what = (rcpt.as_str(), token.as_str(), data.as_str());
            let how = (pause, p.tls);
            let _ = tokio::time::timeout(limit, send(to, what, &ledger, how)).await;
            if lock(&ledger).iter().any(|s| s.token == token && s.acked) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    Ok(())
}

/// `mta inject` as a process of its own on the MTA host: each message is written step by
/// step (a file in tmp/, its bytes, its link into todo/, the todo/ fsync), a second apart,
/// while the queue manager runs; acknowledged when every step succeeded on the same boot.
async fn injector(disk: Disk, n: usize, seed: u64, ledger: Ledger) -> turmoil::Result {
    for i in 0..n {
        tokio::time::sleep(Duration::from_secs(20)).await;
        let token = format!("inject{i}");
        let acked = inject_steps(&disk, &token, seed ^ i as u64).await;
        let at_ms = now_ms();
        lock(&ledger).push(Sent {
            token,
            acked,
            at_ms,
        });
    }
    Ok(())
}

async fn inject_steps(disk: &Disk, token: &str, seed: u64) -> bool {
    use mta::queue::spool::{self, Spool};
    let Some(fs) = disk.live().filter(|f| !f.is_frozen()) else {
        return false;
    };
    // The process dies with its machine: every step must still find the same boot.
    let alive = || {
        disk.live()
            .is_some_and(|l| l.same_as(&fs) && !l.is_frozen())
    };
    let env = SimEnv::manual(fs.clone(), disk.clock().clone(), seed);
    let (paths, cfg) = (Paths::new(root().join("queue")), Config::default());
    let pause = || tokio::time::sleep(Duration::from_secs(1));
    let Ok(mut sp) = Spool::create(&env, &paths, &cfg) else {
        return false;
    };
    pause().await;
    if !alive()
        || sp
            .write(body(token).replace("\r\n", "\n").as_bytes())
            .is_err()
    {
        return false;
    }
    pause().await;
    let rcpts = ["fred".to_string()];
    if !alive() || sp.finish("joe@heaven.af.mil", &rcpts, 1, 1000).is_err() {
        return false;
    }
    pause().await;
    alive() && spool::sync_todo(&env, &paths, &cfg).is_ok() && alive()
}

fn recipients(r: &mut ChaCha8Rng, p: &Profile) -> Vec<String> {
    (0..p.messages)
        .map(|_| {
            if r.random_range(0..100) >= p.remote_pct {
                "fred@heaven.af.mil"
            } else if r.random_range(0..3) == 0 {
                "bill@relay.example"
            } else {
                "bill@far.example"
            }
            .to_string()
        })
        .collect()
}

/// The world of one seed and what the driver tracks while it runs.
struct Swarm<'a> {
    sim: turmoil::Sim<'a>,
    p: Profile,
    seed: u64,
    host: MtaHost,
    host2: MtaHost,
    peer: Arc<Mutex<PeerLog>>,
    peer2: Arc<Mutex<PeerLog>>,
    ledger: Ledger,
    excuses: Excuses,
    lines_seen: usize,
    partitioned: bool,
    jumped: bool,
    reboots: usize,
    /// Messages the mail reader deleted: file name (without flags), contents, when.
    read: Vec<(String, String, u64)>,
    /// The POP3 reader's deletions and findings (a `pop3` profile).
    pop3_reads: pop3_reader::Shared,
    /// What latent corruption did, once it struck.
    damage: Option<String>,
    full_secs: u64,
    violations: Vec<String>,
}

/// The MTA's control files: rcpthosts, and what the POP3 reader and the mini-qmail host need.
fn controls(p: &Profile) -> Vec<(&'static str, &'static str)> {
    let mut controls = vec![("rcpthosts", "heaven.af.mil\nfar.example\nrelay.example\n")];
    if p.tls {
        controls.push(("servercert.pem", SERVERCERT));
        controls.push(("passwd", PASSWD));
    }
    if p.reader && p.pop3 {
        controls.push(("checkpassword", pop3_reader::CHECKER));
    }
    if p.mini {
        controls.push(("qmqp.rules", crate::mini_qmail::RULES));
    }
    controls
}

/// POP3 (with its reader) and QMQP on the MTA, as the profile asks.
fn optional_servers(
    p: &Profile,
    host: &mut MtaHost,
    sim: &mut turmoil::Sim<'_>,
) -> pop3_reader::Shared {
    let reads = pop3_reader::Shared::default();
    if p.reader && p.pop3 {
        host.listeners.pop3 = Some(SocketAddr::from(([0, 0, 0, 0], pop3_reader::PORT)));
        host.setup = Some(pop3_reader::setup());
        let (d, r) = (host.disk.clone(), reads.clone());
        sim.client("pop3reader", pop3_reader::reader(d, r));
    }
    if p.mini {
        let port = crate::mini_qmail::PORT;
        host.listeners.qmqp = Some(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    reads
}

fn boot_faults(p: &Profile) -> Faults {
    Faults {
        crash_after: p.crashes.first().copied(),
        eio_at: p.eio_at,
        fsync_fail_at: p.fsync_fail.iter().copied().collect(),
        read_eio_at: p.read_eio.iter().copied().collect(),
        ..Faults::default()
    }
}

impl<'a> Swarm<'a> {
    fn build(seed: u64, p: &Profile) -> Swarm<'a> {
        let img = image(&controls(p), &[]);
        let disk = Disk::with_image(img, Clock::new(EPOCH_MS));
        disk.arm(boot_faults(p));
        let mut sim = turmoil::Builder::new()
            .epoch(std::time::UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
            .tick_duration(Duration::from_millis(TICK_MS))
            .simulation_duration(Duration::from_secs(400_000))
            .rng_seed(seed)
            .build();
        if p.latency_ms > 0 {
            sim.set_max_message_latency(Duration::from_millis(p.latency_ms));
        }
        let peer: Arc<Mutex<PeerLog>> = Arc::default();
        let peer2: Arc<Mutex<PeerLog>> = Arc::default();
        let (pl, p2, script) = (Arc::clone(&peer), peer2.clone(), p.peer.clone());
        sim.host("peer", move || peer_host(script.clone(), pl.clone()));
        sim.host("peer2", move || {
            peer_host(vec![crate::remote_world::Peer::Accept], p2.clone())
        });
        sim.host("dns", dns_host);
        let mut host = MtaHost::new("mta", disk, seed, true);
        let pop3_reads = optional_servers(p, &mut host, &mut sim);
        host.install(&mut sim);
        // A second MTA: relay.example's MX, delivering to its own user bill.
        let disk2 = Disk::with_image(relay_image(p.tls), Clock::new(EPOCH_MS));
        let host2 = MtaHost::new("mta2", disk2, seed ^ 0x2222, true);
        host2.install(&mut sim);
        let ledger = Ledger::default();
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        for c in 0..p.clients {
            let (rcpts, l) = (recipients(&mut r, p), ledger.clone());
            sim.client(format!("client{c}"), client(c, rcpts, p.clone(), l));
        }
        if p.mini {
            let mini = crate::mini_qmail::host(2, seed ^ 0x3131, ledger.clone());
            sim.client("mini", mini);
        }
        if p.injects > 0 {
            let (d, l) = (host.disk.clone(), ledger.clone());
            sim.client("injector", injector(d, p.injects, seed ^ 0x1a1a, l));
        }
        Swarm {
            sim,
            p: p.clone(),
            seed,
            host,
            host2,
            peer,
            peer2,
            ledger,
            excuses: Excuses::default(),
            lines_seen: 0,
            partitioned: false,
            jumped: false,
            reboots: 0,
            read: Vec::new(),
            pop3_reads,
            damage: None,
            full_secs: 0,
            violations: Vec::new(),
        }
    }

    /// Time-driven faults: clock jump, partition, a full disk.
    fn faults(&mut self, t: u64) {
        let disk = &self.host.disk;
        if let Some((at, secs)) = self.p.jump.filter(|&(at, _)| !self.jumped && t >= at) {
            let _ = at;
            disk.clock().jump(Duration::from_secs(secs));
            self.jumped = true;
        }
        if let Some((s, len)) = self.p.partition {
            if !self.partitioned && t >= s && t < s + len {
                self.sim.partition("mta", "peer");
                self.partitioned = true;
                self.excuses.windows.push((s * 1000, (s + len) * 1000));
            } else if self.partitioned && t >= s + len {
                self.sim.repair("mta", "peer");
                self.partitioned = false;
            }
        }
        if let (Some((s, len)), Some(fs)) = (self.p.full, disk.live()) {
            if t == s {
                fs.set_capacity(Some(fs.used_bytes()));
            } else if t == s + len {
                fs.set_capacity(None);
            }
            if t >= s && t < s + len {
                self.full_secs += 1;
            }
        }
    }

    /// The machine reboots at the drawn second, whatever it is doing (an SMTP transfer being
    /// streamed to tmp/, a delivery), keeping a random subset of what was not durable.
    fn reboot(&mut self, t_ms: u64, t: u64) {
        if self.p.reboot != Some(t) || self.host.disk.frozen() {
            return;
        }
        self.sim.crash("mta");
        self.host.disk.crash(&Persist::Subset(self.seed ^ t));
        self.sim.bounce("mta");
        self.excuses.points.push(t_ms);
        self.reboots += 1;
        self.corrupt();
    }

    /// Latent corruption, once, while the machine is down after its first crash or reboot:
    /// the oracle forgives exactly the transmissions the damaged records were about.
    fn corrupt(&mut self) {
        if !self.p.corrupt || self.damage.is_some() {
            return;
        }
        let seed = self.seed ^ 0xc0;
        let d = self
            .host
            .disk
            .damage(|img| damage::corrupt_queue(img, seed));
        let d = d.unwrap_or_default();
        self.excuses.damaged.extend(d.lost.iter().cloned());
        self.excuses.again.extend(d.again.iter().cloned());
        self.damage = Some(d.what);
    }

    /// A mail reader, every 30 s: deletes what it read last time (fred's cur/), then moves
    /// new messages to cur/ (`NAME:2,S`), as an IMAP client would.
    fn read_mail(&mut self, t_ms: u64, t: u64) {
        let live = self.host.disk.live().filter(|f| !f.is_frozen());
        let fs_reader = self.p.reader && !self.p.pop3;
        let (true, Some(fs)) = (fs_reader && t.is_multiple_of(30), live) else {
            return;
        };
        let dir = root().join("home/fred/Maildir");
        for name in fs.list_dir(&dir.join("cur")).unwrap_or_default() {
            let p = dir.join("cur").join(&name);
            let Ok(m) = fs.read(&p) else { continue };
            if fs.unlink(&p).is_ok() {
                let base = name.split(':').next().unwrap_or(&name).to_string();
                let text = String::from_utf8_lossy(&m).into_owned();
                self.read.push((base, text, t_ms));
            }
        }
        for name in fs.list_dir(&dir.join("new")).unwrap_or_default() {
            let to = dir.join("cur").join(format!("{name}:2,S"));
            let _ = fs.rename(&dir.join("new").join(&name), &to);
        }
        // Like a careful IMAP server, it makes its changes durable before going on.
        let _ = fs.sync_dir(&dir.join("cur"));
        let _ = fs.sync_dir(&dir.join("new"));
    }

    /// Crash, restart and "not recorded" moments: when the MTA could lose track of a delivery.
    fn tend_hosts(&mut self, t_ms: u64, crashes: &mut usize) -> bool {
        let how = self
            .p
            .persist
            .get(*crashes)
            .cloned()
            .unwrap_or(Persist::Synced);
        match self.host.tend(&mut self.sim, || how) {
            Event::Crashed => {
                *crashes += 1;
                self.corrupt();
                self.excuses.points.push(t_ms);
                self.host.disk.arm(Faults {
                    crash_after: self.p.crashes.get(*crashes).copied(),
                    ..Faults::default()
                });
            }
            Event::Exited(code) => {
                self.violations
                    .push(format!("the MTA exited with {code} at {t_ms} ms"));
                return false;
            }
            Event::Nothing | Event::Restarted => {}
        }
        if let Event::Exited(code) = self.host2.tend(&mut self.sim, || Persist::Synced) {
            self.violations
                .push(format!("the second MTA exited with {code} at {t_ms} ms"));
            return false;
        }
        let lines = lock(&self.host.lines);
        if lines[self.lines_seen..]
            .iter()
            .any(|l| l.contains(": not recorded: "))
        {
            self.excuses.points.push(t_ms);
        }
        self.lines_seen = lines.len();
        true
    }

    /// Safety phase with the faults, then liveness with them healed (with or without
    /// operator flushes) until the end.
    fn drive(&mut self) -> usize {
        let (mut crashes, mut flushed, mut clients_done) = (0, u64::MAX, false);
        while self.sim.elapsed() < Duration::from_secs(self.end_secs()) {
            match self.sim.step() {
                Ok(done) => clients_done |= done,
                Err(e) => {
                    self.violations.push(format!("simulation: {e}"));
                    break;
                }
            }
            let t_ms = self.sim.elapsed().as_millis() as u64;
            let t = t_ms / 1000;
            self.faults(t);
            let due = t >= HEAL_SECS && (t - HEAL_SECS).is_multiple_of(150);
            if self.p.flush && due && flushed != t {
                self.host.kill(Signal::Alrm);
                self.host2.kill(Signal::Alrm);
                flushed = t;
            }
            self.reboot(t_ms, t);
            self.read_mail(t_ms, t);
            if !self.sim.is_host_running("peer") {
                // The peer crashed after accepting a message: it comes back.
                self.sim.bounce("peer");
            }
            if !self.tend_hosts(t_ms, &mut crashes) {
                break;
            }
            if t >= HEAL_SECS && clients_done && t.is_multiple_of(10) && self.settled() {
                break;
            }
        }
        crashes
    }

    /// When the run ends: [`run_secs`], or later after a late crash or reboot. A restarted MTA
    /// keeps each message's retry schedule (it does not try everything at once), so the run
    /// lasts until the next pass of even the oldest possible message after the last restart.
    fn end_secs(&self) -> u64 {
        let last = self.excuses.points.iter().max().map_or(0, |ms| ms / 1000);
        let after = mta::send::schedule::next_pass(0, last, mta::queue::Channel::Remote) + 60;
        run_secs(&self.p).max(if last == 0 { 0 } else { after })
    }

    /// Both queues are empty on disk (log and todo/): nothing more can happen. What is only in
    /// the page cache does not count (a batch whose fsync failed shows there). Read from a
    /// copy, so the check never takes a fault meant for the MTA.
    fn settled(&self) -> bool {
        [&self.host, &self.host2].iter().all(|h| {
            let Some(fs) = h.disk.live() else {
                return false;
            };
            let durable = fs.crash_image(&Persist::Synced);
            let copy = crate::fs::SimFs::from_image(durable, h.disk.clock().clone());
            let env = SimEnv::manual(copy, h.disk.clock().clone(), 0);
            mta::queue::View::load(&env, &Paths::new(root().join("queue")))
                .is_ok_and(|v| v.messages.is_empty() && v.todo.is_empty())
        })
    }
}

/// The disk as it would come back after a power cut at the end: only what was made durable
/// counts as delivered (or as still queued).
fn final_image(disk: &Disk) -> Image {
    disk.live()
        .map_or_else(|| disk.image(), |f| f.crash_image(&Persist::Synced))
}

/// The reader's deletions that held: one whose removal never reached the disk (a failed
/// fsync) left the message in the mailbox, where it is counted already.
fn still_read(read: &[(String, String, u64)], img: &Image) -> Vec<(String, u64)> {
    let base = |p: &str| {
        let n = p.rsplit('/').next().unwrap_or(p);
        n.split(':').next().unwrap_or(n).to_string()
    };
    let names: Vec<String> = mailbox_files(img).iter().map(|(p, _)| base(p)).collect();
    read.iter()
        .filter(|(b, _, _)| !names.contains(b))
        .map(|(_, m, t)| (m.clone(), *t))
        .collect()
}

/// Every message in every Maildir of an image.
fn mailboxes(img: &Image) -> Vec<String> {
    mailbox_files(img)
        .into_iter()
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

/// Liveness at the end: both queues empty, nothing left in todo/ or tmp/ once a recovery has
/// run past the 36-hour cutoff for interrupted injections.
fn quiescent(name: &str, img: Image) -> Vec<String> {
    let mut bad = Vec::new();
    let w = World::new(img, 0);
    w.env.clock().advance(Duration::from_secs(10 * 86_400));
    match w.recover() {
        Some(msgs) => {
            let left: Vec<String> = msgs
                .iter()
                .map(|x| format!("{} born {} [{:?}]", x.id(), x.env.birth, x.rcpts))
                .collect();
            if !left.is_empty() {
                bad.push(format!(
                    "{name}: queue not empty at the end: {}",
                    left.join("; ")
                ));
            }
        }
        None => bad.push(format!("{name}: the final disk does not open")),
    }
    for d in ["queue/todo", "queue/tmp"] {
        let left = w.env.fs().list_dir(&root().join(d)).unwrap_or_default();
        if !left.is_empty() {
            bad.push(format!("{name}: {d} not empty at the end: {left:?}"));
        }
    }
    bad
}

/// FNV-1a over strings, for the determinism hash.
fn fnv(h: u64, s: &str) -> u64 {
    s.bytes()
        .fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// `MTA_SIM_LOG=1`: what a replay needs to see: the oracle's inputs and the MTA's log.
fn debug_dump(w: &Swarm<'_>, sent: &[Sent], p: &Profile) {
    eprintln!("ran {:?} of {} s", w.sim.elapsed(), run_secs(p));
    eprintln!("excuses {:?}", w.excuses);
    sent.iter().for_each(|s| eprintln!("sent {s:?}"));
    lock(&w.host.lines)
        .iter()
        .for_each(|l| eprintln!("mta: {l}"));
    w.host
        .stderr()
        .iter()
        .for_each(|l| eprintln!("mta stderr: {l}"));
}

/// Run one seed with the profile it draws.
pub fn run(seed: u64) -> (Profile, Outcome) {
    let p = Profile::draw(seed);
    let o = run_profile(seed, &p);
    (p, o)
}

/// Run one seed with an explicit fault profile (replays and shrinking).
pub fn run_profile(seed: u64, p: &Profile) -> Outcome {
    let mut w = Swarm::build(seed, p);
    let crashes = w.drive();
    {
        let mut r = lock(&w.pop3_reads);
        let got = std::mem::take(&mut r.got);
        w.read
            .extend(got.into_iter().map(|(uid, (m, t))| (uid, m, t)));
        w.violations.append(&mut r.violations);
    }
    let sent = lock(&w.ledger).clone();
    if std::env::var_os("MTA_SIM_LOG").is_some() {
        debug_dump(&w, &sent, p);
    }
    let peer = lock(&w.peer);
    let found = Found {
        mailboxes: mailboxes(&final_image(&w.host.disk)),
        read: still_read(&w.read, &final_image(&w.host.disk)),
        peer: peer
            .accepted
            .iter()
            .cloned()
            .zip(peer.copies.iter().cloned())
            .collect(),
        others: mailboxes(&final_image(&w.host2.disk))
            .into_iter()
            .chain(lock(&w.peer2).accepted.iter().cloned())
            .collect(),
    };
    let (mut violations, dups) = oracle::check(&sent, &found, &w.excuses);
    violations.extend(oracle::invented(&sent, &found));
    violations.extend(quiescent("mta", final_image(&w.host.disk)));
    violations.extend(quiescent("mta2", final_image(&w.host2.disk)));
    violations.splice(0..0, w.violations.drain(..));
    for h in [&w.host, &w.host2] {
        if !h.died_serving().is_empty() {
            violations.push(format!(
                "{} exited while serving: {:?}",
                h.name,
                h.died_serving()
            ));
        }
    }
    let disk_hash = w.host.disk.live().map_or(0, |f| f.trace_hash());
    let net = sent.iter().map(|s| format!("{}{}", s.token, s.acked));
    let trace_hash = found
        .peer
        .iter()
        .map(|(m, _)| m.clone())
        .chain(net)
        .fold(disk_hash, |h, s| fnv(h, &s));
    Outcome {
        acked: sent.iter().filter(|s| s.acked).count(),
        read: found.read.len(),
        sent: sent.len(),
        local_delivered: found.mailboxes.len(),
        remote_delivered: found.peer.len() + found.others.len(),
        duplicates_remote: dups,
        crashes: crashes + w.reboots,
        restarts: w.host.restarts() + w.host2.restarts(),
        fired: w.host.disk.fired(),
        full_secs: w.full_secs,
        damage: w.damage.clone(),
        violations,
        trace_hash,
        over_tls: (
            with(&final_image(&w.host.disk), "with ESMTPSA"),
            with(&final_image(&w.host2.disk), "by relay.example with ESMTPS"),
        ),
    }
}

/// Mailbox files whose text holds `what` (a Received line's protocol, RFC 3848).
fn with(img: &Image, what: &str) -> usize {
    let what = what.as_bytes();
    mailbox_files(img)
        .iter()
        .filter(|(_, b)| b.windows(what.len()).any(|w| w == what))
        .count()
}

/// Shrink a failing run to a minimal profile; returns it and how many runs it took.
pub fn shrink(seed: u64, start: &Profile, fails: impl Fn(&Outcome) -> bool) -> (Profile, usize) {
    shrink_profile(start, |p| fails(&run_profile(seed, p)))
}

/// The second MTA's disk: relay.example, user bill.
fn relay_image(tls: bool) -> crate::fs::Image {
    let clock = Clock::new(EPOCH_MS);
    let env = SimEnv::manual(crate::fs::SimFs::new(clock.clone()), clock, 0);
    let o = mta::init::InitOptions {
        me: "relay.example".into(),
        users: vec!["bill".into()],
        force: false,
        uid: 1000,
        gid: 1000,
        owners: Default::default(),
        queue_user: None,
        disabled: Default::default(),
    };
    mta::init::init(&env, &root(), &o).expect("init");
    let mut controls = vec![("timeoutconnect", "10"), ("timeoutremote", "30")];
    if tls {
        controls.push(("servercert.pem", SERVERCERT));
    }
    for (name, text) in controls {
        let p = root().join("control").join(name);
        let mut f = env.fs().create_new(&p).expect("control file");
        f.write_at(0, text.as_bytes()).expect("write");
    }
    env.sim_fs().crash_image(&Persist::All)
}
