//! Remote delivery in a turmoil world: the MTA host runs the queue manager with SMTP remote
//! delivery, a DNS host answers MX and A queries, and a peer host speaks SMTP by script
//! (accepting, or failing at a chosen stage, or dropping the connection after the final dot).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use mta::env::{Listener, Net};

use crate::deliver::{image, World};
use crate::dns_server::{serve_tcp, serve_udp, Zone};
use crate::env::TURMOIL;
use crate::fs::{Faults, Image, Persist};
use crate::host::MtaHost;
use crate::receive::EPOCH_MS;
use crate::world::Disk;

/// MX records of giant.example: an answer of about 50 KB (it must stay under 64 KiB).
pub const GIANT_MX: u16 = 700;

/// What the peer does, per connection (the last entry repeats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Accept,
    Greeting(u16),
    Mail(u16),
    Rcpt(u16),
    Data(u16),
    AfterDot(u16),
    /// Read the whole message, then close without a reply.
    DropAfterDot,
    /// Accept the connection and never say anything.
    Hang,
    /// Accept, but wait this many seconds before every reply.
    Slow(u64),
    /// Refuse EHLO with this code (the client must fall back to HELO), then accept.
    Ehlo(u16),
    /// Accept the message, then the peer host crashes (the driver restarts it).
    AcceptThenCrash,
    /// Close the connection after sending this many replies (any point of the dialogue).
    DropAfter(u16),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::str::FromStr for Peer {
    type Err = String;
    fn from_str(s: &str) -> Result<Peer, String> {
        let arg = |s: &str| -> Result<u64, String> {
            s.split_once('(')
                .and_then(|(_, r)| r.strip_suffix(')'))
                .and_then(|n| n.parse().ok())
                .ok_or(format!("bad peer step {s:?}"))
        };
        Ok(match s.split('(').next().unwrap_or("") {
            "Accept" => Peer::Accept,
            "DropAfterDot" => Peer::DropAfterDot,
            "Hang" => Peer::Hang,
            "Greeting" => Peer::Greeting(arg(s)? as u16),
            "Mail" => Peer::Mail(arg(s)? as u16),
            "Rcpt" => Peer::Rcpt(arg(s)? as u16),
            "Data" => Peer::Data(arg(s)? as u16),
            "AfterDot" => Peer::AfterDot(arg(s)? as u16),
            "Slow" => Peer::Slow(arg(s)?),
            "Ehlo" => Peer::Ehlo(arg(s)? as u16),
            "AcceptThenCrash" => Peer::AcceptThenCrash,
            "DropAfter" => Peer::DropAfter(arg(s)? as u16),
            _ => return Err(format!("bad peer step {s:?}")),
        })
    }
}

/// Messages the peer acknowledged (bodies), and connections it saw.
#[derive(Debug, Default)]
pub struct PeerLog {
    pub accepted: Vec<String>,
    /// Per accepted message (same order): when it took it, and whether its 250 left in time
    /// for the sender to see it (the oracle's test for an allowed duplicate).
    pub copies: Vec<PeerCopy>,
    pub connections: usize,
}

/// One message the peer took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCopy {
    /// Simulated milliseconds when the final dot arrived.
    pub at_ms: u64,
    /// The 250 was written before the sender's 30-second timeout (false: it never left,
    /// left too late, or the peer went down with it).
    pub told: bool,
}

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

impl PeerLog {
    fn took(&mut self, body: &[u8], told: bool) -> usize {
        self.accepted
            .push(String::from_utf8_lossy(body).into_owned());
        self.copies.push(PeerCopy {
            at_ms: now_ms(),
            told,
        });
        self.copies.len() - 1
    }
}

async fn w(r: &mut BufReader<turmoil::net::TcpStream>, delay: u64, c: u16) -> std::io::Result<()> {
    // DropAfter: the session's reply budget (u16::MAX for "never"), kept per task.
    let left = BUDGET.try_with(|b| b.get()).unwrap_or(u16::MAX);
    if left == 0 {
        return Err(std::io::ErrorKind::ConnectionAborted.into());
    }
    let _ = BUDGET.try_with(|b| b.set(left.saturating_sub(u16::from(left != u16::MAX))));
    if delay > 0 {
        tokio::time::sleep(Duration::from_secs(delay)).await;
    }
    r.get_mut()
        .write_all(format!("{c} scripted reply\r\n").as_bytes())
        .await
}

tokio::task_local! {
    static BUDGET: std::cell::Cell<u16>;
}

/// The message after DATA, up to the final dot (`None` if the connection closed first).
async fn read_data(r: &mut BufReader<turmoil::net::TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let mut l = Vec::new();
        if r.read_until(b'\n', &mut l).await? == 0 {
            return Ok(None);
        }
        if l == b".\r\n" {
            return Ok(Some(body));
        }
        body.extend_from_slice(&l);
    }
}

async fn peer_session(
    s: turmoil::net::TcpStream,
    script: Peer,
    log: Arc<Mutex<PeerLog>>,
    crash: Arc<tokio::sync::Notify>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(s);
    let code = |stage: Peer| match (script, stage) {
        (Peer::Greeting(c), Peer::Greeting(_)) => c,
        (Peer::Mail(c), Peer::Mail(_)) => c,
        (Peer::Rcpt(c), Peer::Rcpt(_)) => c,
        (Peer::Data(c), Peer::Data(_)) => c,
        (Peer::AfterDot(c), Peer::AfterDot(_)) => c,
        (_, Peer::Data(_)) => 354,
        (_, Peer::Greeting(_)) => 220,
        _ => 250,
    };
    if script == Peer::Hang {
        return std::future::pending().await;
    }
    let delay = if let Peer::Slow(n) = script { n } else { 0 };
    w(&mut r, delay, code(Peer::Greeting(0))).await?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                let c = if let Peer::Ehlo(c) = script { c } else { 250 };
                w(&mut r, delay, c).await?
            }
            "HELO" => w(&mut r, delay, 250).await?,
            "MAIL" => w(&mut r, delay, code(Peer::Mail(0))).await?,
            "RCPT" => w(&mut r, delay, code(Peer::Rcpt(0))).await?,
            "DATA" => {
                let c = code(Peer::Data(0));
                w(&mut r, delay, c).await?;
                if c != 354 {
                    continue;
                }
                let Some(body) = read_data(&mut r).await? else {
                    return Ok(());
                };
                let lock = || log.lock().unwrap_or_else(|e| e.into_inner());
                if script == Peer::DropAfterDot {
                    // It took the message, but the reply never leaves: the sender cannot know.
                    lock().took(&body, false);
                    return Ok(());
                }
                let c = code(Peer::AfterDot(0));
                let copy = (c / 100 == 2).then(|| lock().took(&body, false));
                let dot = now_ms();
                w(&mut r, delay, c).await?;
                if let Some(i) = copy {
                    // Going down right after the reply: whether it got out is unknowable.
                    lock().copies[i].told =
                        script != Peer::AcceptThenCrash && now_ms() - dot < 30_000;
                }
                if script == Peer::AcceptThenCrash {
                    crash.notify_one();
                    return Ok(());
                }
            }
            "QUIT" => {
                w(&mut r, delay, 221).await?;
                return Ok(());
            }
            _ => w(&mut r, delay, 502).await?,
        }
    }
}

/// The peer host: scripts per connection, last one repeating.
pub async fn peer_host(scripts: Vec<Peer>, log: Arc<Mutex<PeerLog>>) -> turmoil::Result {
    let l = TURMOIL
        .listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 25))
        .await?;
    let crash = Arc::new(tokio::sync::Notify::new());
    loop {
        let (s, _) = tokio::select! {
            biased;
            // An AcceptThenCrash session took its message: the host goes down.
            _ = crash.notified() => return Ok(()),
            r = l.accept() => r?,
        };
        let n = {
            let mut g = log.lock().unwrap_or_else(|e| e.into_inner());
            g.connections += 1;
            g.connections
        };
        let script = scripts[(n - 1).min(scripts.len() - 1)];
        let log = log.clone();
        let crash = crash.clone();
        let budget = if let Peer::DropAfter(n) = script {
            n
        } else {
            u16::MAX
        };
        tokio::spawn(BUDGET.scope(std::cell::Cell::new(budget), async move {
            let _ = peer_session(s, script, log, crash).await;
        }));
    }
}

/// The DNS host: far.example's and irs.gov's MX is the peer; bigbang.af.mil is the host
/// "relay" when the world has one.
pub async fn dns_host() -> turmoil::Result {
    let mut z = Zone::default();
    let peer = turmoil::lookup("peer");
    z.mx("far.example", 10, "mx.far.example")
        .ip("mx.far.example", peer);
    z.mx("irs.gov", 10, "mx.irs.gov").ip("mx.irs.gov", peer);
    let peer2 = turmoil::lookup("peer2");
    // Two MX hosts by preference; equal preferences; ourselves as best MX; no MX at all.
    z.mx("multi.example", 10, "mx1.multi.example")
        .ip("mx1.multi.example", peer);
    z.mx("multi.example", 20, "mx2.multi.example")
        .ip("mx2.multi.example", peer2);
    z.mx("equal.example", 10, "a.equal.example")
        .ip("a.equal.example", peer);
    z.mx("equal.example", 10, "b.equal.example")
        .ip("b.equal.example", peer2);
    z.mx("self.example", 10, "mx.self.example")
        .ip("mx.self.example", turmoil::lookup("mta"));
    z.mx("self.example", 20, "backup.self.example")
        .ip("backup.self.example", peer2);
    z.mx("selfonly.example", 10, "mx.selfonly.example")
        .ip("mx.selfonly.example", turmoil::lookup("mta"));
    z.ip("fallback.example", peer);
    z.fail("broken.example", crate::dns_server::Answer::ServFail);
    // An answer far over 512 bytes: only the TCP retry gets it whole; the best MX is last.
    for i in 0..GIANT_MX {
        z.mx(
            "giant.example",
            100 + i,
            &format!("mx{i}.a-long-name-for-a-big-answer.giant.example"),
        );
    }
    z.mx("giant.example", 1, "best.giant.example")
        .ip("best.giant.example", peer);
    z.fail("silent.example", crate::dns_server::Answer::Silent);
    // relay.example is served by a second, real MTA (in worlds that have one).
    z.mx("relay.example", 10, "mx.relay.example")
        .ip("mx.relay.example", turmoil::lookup("mta2"));
    // The relay host of nullclient setups (an address nobody answers on when absent).
    z.ip("bigbang.af.mil", turmoil::lookup("relay"));
    let z = Arc::new(z);
    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 53);
    let udp = TURMOIL.bind_udp(any).await?;
    let tcp = TURMOIL.listen(any).await?;
    tokio::spawn(serve_udp(udp, z.clone()));
    serve_tcp(tcp, z).await;
    Ok(())
}

/// One run: joe@heaven.af.mil sends to bill@far.example; returns the peer's log and the
/// final state of the MTA's disk.
pub struct Run {
    pub peer: Arc<Mutex<PeerLog>>,
    /// A second peer that always accepts (second MX, equal-preference MX).
    pub peer2: Arc<Mutex<PeerLog>>,
    pub disk: Disk,
    /// The MTA's qmail-format log lines.
    pub lines: Arc<Mutex<Vec<String>>>,
}

pub fn installation() -> Image {
    let img = image(&[], &[]);
    let w = World::new(img, 0);
    w.inject(
        "joe@heaven.af.mil",
        &["bill@far.example"],
        "Subject: remote\n\nover the wire\n.dot\n",
    );
    w.env.sim_fs().crash_image(&Persist::All)
}

pub fn run(scripts: Vec<Peer>, faults: Faults, persist: Persist, secs: u64, seed: u64) -> Run {
    run_world(installation(), scripts, None, faults, persist, secs, seed)
}

/// A world with a given disk; `relay` adds a second scripted peer host named "relay".
pub fn run_world(
    img: Image,
    scripts: Vec<Peer>,
    relay: Option<Arc<Mutex<PeerLog>>>,
    faults: Faults,
    persist: Persist,
    secs: u64,
    seed: u64,
) -> Run {
    let clock = crate::fs::Clock::new(EPOCH_MS);
    let disk = Disk::with_image(img, clock);
    disk.arm(faults);
    let mut sim = turmoil::Builder::new()
        .epoch(std::time::UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .tick_duration(Duration::from_millis(100))
        .simulation_duration(Duration::from_secs(secs + 60))
        .rng_seed(seed)
        .build();
    let peer = Arc::new(Mutex::new(PeerLog::default()));
    let p = peer.clone();
    let sc = scripts.clone();
    sim.host("peer", move || peer_host(sc.clone(), p.clone()));
    if let Some(rl) = relay {
        sim.host("relay", move || peer_host(vec![Peer::Accept], rl.clone()));
    }
    let peer2 = Arc::new(Mutex::new(PeerLog::default()));
    let p2 = peer2.clone();
    sim.host("peer2", move || peer_host(vec![Peer::Accept], p2.clone()));
    sim.host("dns", dns_host);
    let host = MtaHost::new("mta", disk.clone(), seed, true);
    host.install(&mut sim);
    let lines = host.lines.clone();
    // Only hosts here (no client to finish): run for the given simulated time.
    while sim.elapsed() < Duration::from_secs(secs) {
        if let Err(e) = sim.step() {
            panic!("simulation failed: {e}");
        }
        host.tend(&mut sim, || persist.clone());
    }
    Run {
        peer,
        peer2,
        disk,
        lines,
    }
}

impl Run {
    /// A world on the MTA's final disk, to inspect it.
    pub fn world(&self) -> World {
        let img = self
            .disk
            .live()
            .map_or_else(|| self.disk.image(), |fs| fs.live_image());
        World::new(img, 0)
    }
}

/// Totals of crash-mid-delivery-remote.
#[derive(Debug, Clone, Default)]
pub struct CrashReport {
    pub crash_points: u64,
    pub runs: usize,
    /// Copies the peer got beyond the first: only possible when the crash fell between the
    /// peer's 250 and our durable outcome (SMTP cannot avoid these).
    pub duplicates: usize,
    pub violations: Vec<String>,
}

/// Crash the MTA host after every filesystem operation of a remote delivery; after the
/// restart the message must reach the peer (no loss) and nothing may bounce.
pub fn crash_mid_delivery_remote(seed: u64) -> CrashReport {
    let mut rep = CrashReport::default();
    let clean = run(
        vec![Peer::Accept],
        Faults::default(),
        Persist::Synced,
        60,
        seed,
    );
    rep.crash_points = clean.disk.live().map_or(0, |f| f.ops());
    for k in 1..=rep.crash_points {
        for p in [
            Persist::Synced,
            Persist::All,
            Persist::AllBut(0),
            Persist::TornLastWrite,
        ] {
            let f = Faults {
                crash_after: Some(k),
                ..Faults::default()
            };
            let r = run(vec![Peer::Accept], f, p.clone(), 900, seed ^ k);
            rep.runs += 1;
            let w = r.world();
            let pending = w.recover().map_or(1, |m| m.len());
            let accepted = r
                .peer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .accepted
                .len();
            let bounced = !w.maildir("home/joe/Maildir").is_empty();
            rep.duplicates += accepted.saturating_sub(1);
            if accepted == 0 || pending > 0 || bounced {
                rep.violations.push(format!(
                    "seed={seed} crash_after={k} persist={p:?}: peer got {accepted}, {pending} queued, bounced={bounced}"
                ));
            }
        }
    }
    rep
}

/// What became of one message from joe to `rcpt`, the peer following `peer`'s script, after
/// `secs` simulated seconds.
#[derive(Debug, Clone)]
pub struct OneMessage {
    /// Copies the peer and the second peer accepted.
    pub peer: usize,
    pub peer2: usize,
    /// The sender's mailbox (bounces end up there).
    pub bounces: String,
    pub queued: bool,
}

pub fn deliver_one(rcpt: &str, peer: Vec<Peer>, secs: u64, seed: u64) -> OneMessage {
    let w = World::new(image(&[], &[]), 0);
    w.inject("joe@heaven.af.mil", &[rcpt], "Subject: one\n\nx\n");
    let img = w.env.sim_fs().crash_image(&Persist::All);
    let r = run_world(
        img,
        peer,
        None,
        Faults::default(),
        Persist::Synced,
        secs,
        seed,
    );
    let w = r.world();
    let count =
        |l: &Arc<Mutex<PeerLog>>| l.lock().unwrap_or_else(|e| e.into_inner()).accepted.len();
    OneMessage {
        peer: count(&r.peer),
        peer2: count(&r.peer2),
        bounces: w.maildir("home/joe/Maildir").concat(),
        queued: w.recover().is_none_or(|m| !m.is_empty()),
    }
}

/// dns-failures: SERVFAIL and silence defer (no bounce, still queued); NXDOMAIN bounces.
pub fn dns_failures(seed: u64) -> Vec<String> {
    let mut bad = Vec::new();
    for rcpt in ["bill@broken.example", "bill@silent.example"] {
        let o = deliver_one(rcpt, vec![Peer::Accept], 120, seed);
        let (acc, bounced, queued) = (o.peer + o.peer2, !o.bounces.is_empty(), o.queued);
        if acc != 0 || bounced || !queued {
            bad.push(format!(
                "{rcpt}: accepted {acc}, bounced {bounced}, queued {queued}: should defer"
            ));
        }
    }
    let o = deliver_one("bill@nowhere.example", vec![Peer::Accept], 120, seed);
    let (acc, bounced, queued) = (o.peer + o.peer2, !o.bounces.is_empty(), o.queued);
    if acc != 0 || !bounced || queued {
        bad.push(format!(
            "bill@nowhere.example: bounced {bounced}, queued {queued}: NXDOMAIN should bounce"
        ));
    }
    bad
}

/// huge-mx: an MX answer of about 50 KB (truncated on UDP) is fetched whole over TCP and the
/// message reaches the best MX, which only the whole answer names.
pub fn huge_mx(seed: u64) -> Vec<String> {
    let o = deliver_one("bill@giant.example", vec![Peer::Accept], 60, seed);
    let (acc, bounced, queued) = (o.peer + o.peer2, !o.bounces.is_empty(), o.queued);
    if acc == 1 && !bounced && !queued {
        Vec::new()
    } else {
        vec![format!(
            "bill@giant.example: accepted {acc}, bounced {bounced}, queued {queued}"
        )]
    }
}
