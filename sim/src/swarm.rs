//! Swarm testing: each seed draws its own fault profile (which faults are on, when, how
//! often) for a whole world — SMTP clients, the full MTA (receiver, queue manager, local and
//! remote delivery), a DNS host and a remote peer — then runs a safety phase with the faults
//! and a liveness phase with them healed, and checks the oracle.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use mta::env::{Env, Fs, FsFile, Net, Signal};
use mta::queue::{Config, Paths};

use crate::deliver::{image, root, World};
use crate::env::{SimEnv, SimNet};
use crate::fs::{Clock, Faults, Persist};
use crate::host::{Event, MtaHost};
use crate::receive::{EPOCH_MS, PORT};
use crate::remote_world::{dns_host, peer_host, Peer, PeerLog};
use crate::world::Disk;

/// When the faults are over (partitions end by 150 s, jumps by 100 s, crashes and I/O errors
/// come early): the liveness phase starts with a flush, as an operator would after an outage,
/// and flushes again every 150 s.
pub const HEAL_SECS: u64 = 250;
/// Simulated time per seed: everything must be delivered by then.
pub const SIMULATED_SECS: u64 = 700;
/// turmoil's tick: coarse enough to be fast, fine against the 10 s and 30 s timeouts.
const TICK_MS: u64 = 1000;

/// The faults one seed runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Crash the MTA after this many fs operations of boot 1, 2, ... (then run clean).
    pub crashes: Vec<u64>,
    /// How a crash persists pending operations.
    pub persist: Vec<Persist>,
    /// Partition MTA ↔ peer from `.0` for `.1` seconds.
    pub partition: Option<(u64, u64)>,
    /// The fs operation of the first boot that fails with EIO.
    pub eio_at: Option<u64>,
    /// At `.0` seconds the MTA's wall clock jumps `.1` seconds forward.
    pub jump: Option<(u64, u64)>,
    /// What the remote peer does on its 1st, 2nd, ... connection (the last repeats).
    pub peer: Vec<Peer>,
    /// Milliseconds of latency on every link (0: turmoil's default).
    pub latency_ms: u64,
    /// Seconds a client pauses before each SMTP command (a slow client).
    pub client_pause: u64,
    /// Messages injected locally on the MTA host (like `mta inject`), one every 20 s.
    pub injects: usize,
    pub clients: usize,
    pub messages: usize,
    /// Percent of messages addressed to the remote peer.
    pub remote_pct: u32,
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: Vec<String>| v.join(",");
        write!(
            f,
            "crashes={};persist={};partition={};eio={};jump={};peer={};latency={};pause={};inject={};clients={};messages={};remote={}",
            list(self.crashes.iter().map(|c| c.to_string()).collect()),
            list(self.persist.iter().map(|p| format!("{p:?}")).collect()),
            self.partition
                .map_or("-".into(), |(a, b)| format!("{a}+{b}")),
            self.eio_at.map_or("-".into(), |e| e.to_string()),
            self.jump.map_or("-".into(), |(a, b)| format!("{a}+{b}")),
            list(self.peer.iter().map(|p| p.to_string()).collect()),
            self.latency_ms,
            self.client_pause,
            self.injects,
            self.clients,
            self.messages,
            self.remote_pct
        )
    }
}

fn parse_persist(s: &str) -> Option<Persist> {
    Some(match s {
        "Synced" => Persist::Synced,
        "All" => Persist::All,
        "TornLastWrite" => Persist::TornLastWrite,
        _ => {
            let (k, n) = s.strip_suffix(')')?.split_once('(')?;
            let n = n.parse().ok()?;
            match k {
                "AllBut" => Persist::AllBut(n),
                "TornLastWriteBut" => Persist::TornLastWriteBut(n),
                _ => return None,
            }
        }
    })
}

impl std::str::FromStr for Profile {
    type Err = String;
    /// The form [`Profile`]'s Display writes (what a failure line prints).
    fn from_str(s: &str) -> Result<Profile, String> {
        let mut p = Profile {
            crashes: vec![],
            persist: vec![],
            partition: None,
            eio_at: None,
            jump: None,
            peer: vec![Peer::Accept],
            latency_ms: 0,
            client_pause: 0,
            injects: 0,
            clients: 1,
            messages: 2,
            remote_pct: 0,
        };
        for part in s.split(';') {
            let (k, v) = part.split_once('=').ok_or(format!("bad part {part:?}"))?;
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("bad number in {part:?}"))
            };
            let items = || v.split(',').filter(|x| !x.is_empty());
            match k {
                "crashes" => p.crashes = items().map(num).collect::<Result<_, _>>()?,
                "persist" => {
                    p.persist = items()
                        .map(|x| parse_persist(x).ok_or(format!("bad persist {x:?}")))
                        .collect::<Result<_, _>>()?
                }
                "partition" if v == "-" => p.partition = None,
                "partition" => {
                    let (a, b) = v.split_once('+').ok_or(format!("bad partition {v:?}"))?;
                    p.partition = Some((num(a)?, num(b)?));
                }
                "peer" => p.peer = items().map(str::parse).collect::<Result<_, _>>()?,
                "latency" => p.latency_ms = num(v)?,
                "pause" => p.client_pause = num(v)?,
                "inject" => p.injects = num(v)? as usize,
                "jump" if v == "-" => p.jump = None,
                "jump" => {
                    let (a, b) = v.split_once('+').ok_or(format!("bad jump {v:?}"))?;
                    p.jump = Some((num(a)?, num(b)?));
                }
                "eio" if v == "-" => p.eio_at = None,
                "eio" => p.eio_at = Some(num(v)?),
                "clients" => p.clients = num(v)? as usize,
                "messages" => p.messages = num(v)? as usize,
                "remote" => p.remote_pct = num(v)? as u32,
                _ => return Err(format!("unknown key {k:?}")),
            }
        }
        Ok(p)
    }
}

impl Profile {
    /// The profile a seed draws (BUGGIFY style: each fault on or off, then its parameters).
    pub fn draw(seed: u64) -> Profile {
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x5a5a_5a5a);
        let n = if r.random_bool(0.7) {
            r.random_range(1..=3)
        } else {
            0
        };
        let crashes = (0..n).map(|_| r.random_range(3..120)).collect();
        let persist = (0..n)
            .map(|_| match r.random_range(0..4) {
                0 => Persist::Synced,
                1 => Persist::All,
                2 => Persist::AllBut(0),
                _ => Persist::TornLastWrite,
            })
            .collect();
        Profile {
            crashes,
            persist,
            partition: r
                .random_bool(0.4)
                .then(|| (r.random_range(0..60), r.random_range(5..90))),
            eio_at: r.random_bool(0.3).then(|| r.random_range(3..80)),
            peer: if r.random_bool(0.5) {
                let first = [
                    Peer::Greeting(421),
                    Peer::Mail(451),
                    Peer::Rcpt(450),
                    Peer::Data(451),
                    Peer::AfterDot(451),
                    Peer::DropAfterDot,
                    Peer::Slow(40),
                    Peer::Slow(2),
                    Peer::Ehlo(502),
                    Peer::AcceptThenCrash,
                    Peer::DropAfter(r.random_range(0..7)),
                ][r.random_range(0..11)];
                vec![first, Peer::Accept]
            } else {
                vec![Peer::Accept]
            },
            latency_ms: [0, 0, 20, 300][r.random_range(0..4)],
            client_pause: [0, 0, 0, 5][r.random_range(0..4)],
            injects: r.random_range(0..3),
            jump: r.random_bool(0.15).then(|| {
                (
                    r.random_range(0..100),
                    [60, 600, 3600, 86_400][r.random_range(0..4)],
                )
            }),
            clients: r.random_range(1..=3),
            messages: r.random_range(2..=6),
            remote_pct: [0, 30, 50, 100][r.random_range(0..4)],
        }
    }
}

/// What one seed did and found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub acked: usize,
    pub local_delivered: usize,
    pub remote_delivered: usize,
    pub duplicates_remote: usize,
    pub crashes: usize,
    /// Restarts after the MTA exited on its own (a failed queue log).
    pub restarts: usize,
    /// Local copies beyond the first: accepted but unacknowledged, then resent by the client.
    pub unacked_kept: usize,
    pub violations: Vec<String>,
    pub trace_hash: u64,
}

fn body(client: usize, i: usize) -> String {
    format!("Subject: swarm {client}-{i}\r\n\r\nswarm message {client}-{i}\r\n")
}

/// Send one message; `sent` counts the attempts whose final dot went out (each may have been
/// accepted even if its reply never came back).
async fn send(
    to: SocketAddr,
    rcpt: &str,
    data: &str,
    sent: &Mutex<usize>,
    pause: u64,
) -> std::io::Result<bool> {
    let mut r = BufReader::new(SimNet.connect(to).await?);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    if !line.starts_with("220") {
        return Ok(false);
    }
    let cmds = [
        "MAIL FROM:<client@example.net>\r\n".to_string(),
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
        return Ok(false);
    }
    r.get_mut()
        .write_all(format!("{data}.\r\n").as_bytes())
        .await?;
    *sent.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    line.clear();
    r.read_line(&mut line).await?;
    Ok(line.starts_with("250 ok"))
}

/// Run one seed with the profile it draws.
pub fn run(seed: u64) -> (Profile, Outcome) {
    let p = Profile::draw(seed);
    let o = run_profile(seed, &p);
    (p, o)
}

/// Run one seed with an explicit fault profile (replays and shrinking).
pub fn run_profile(seed: u64, p: &Profile) -> Outcome {
    let p = p.clone();
    let clock = Clock::new(EPOCH_MS);
    // Clients relay to far.example: allow relaying for everyone in this world.
    let img = image(
        &[(
            "rcpthosts",
            "heaven.af.mil\nfar.example\nrelay.example\n",
        )],
        &[],
    );
    let disk = Disk::with_image(img, clock);
    disk.arm(Faults {
        crash_after: p.crashes.first().copied(),
        eio_at: p.eio_at,
        ..Faults::default()
    });
    let mut sim = turmoil::Builder::new()
        .epoch(std::time::UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .tick_duration(Duration::from_millis(TICK_MS))
        .simulation_duration(Duration::from_secs(400_000))
        .rng_seed(seed)
        .build();
    if p.latency_ms > 0 {
        sim.set_max_message_latency(Duration::from_millis(p.latency_ms));
    }
    let peer = Arc::new(Mutex::new(PeerLog::default()));
    let pl = peer.clone();
    let script = if p.peer.is_empty() {
        vec![Peer::Accept]
    } else {
        p.peer.clone()
    };
    sim.host("peer", move || peer_host(script.clone(), pl.clone()));
    let p2 = Arc::new(Mutex::new(PeerLog::default()));
    sim.host("peer2", move || peer_host(vec![Peer::Accept], p2.clone()));
    sim.host("dns", dns_host);
    let host = MtaHost::new("mta", disk.clone(), seed, true);
    host.install(&mut sim);
    // A second, real MTA: relay.example's MX, delivering to its own user bill.
    let disk2 = Disk::with_image(relay_image(), Clock::new(EPOCH_MS));
    let host2 = MtaHost::new("mta2", disk2.clone(), seed ^ 0x2222, true);
    host2.install(&mut sim);
    let acked = Arc::new(Mutex::new(Vec::<(String, String, Arc<Mutex<usize>>)>::new()));
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    for c in 0..p.clients {
        let rcpts: Vec<String> = (0..p.messages)
            .map(|_| {
                if r.random_range(0..100) < p.remote_pct {
                    if r.random_range(0..3) == 0 {
                        "bill@relay.example".to_string()
                    } else {
                        "bill@far.example".to_string()
                    }
                } else {
                    "fred@heaven.af.mil".to_string()
                }
            })
            .collect();
        let a = acked.clone();
        let pause = p.client_pause;
        sim.client(format!("client{c}"), async move {
            let to = SocketAddr::new(turmoil::lookup("mta"), PORT);
            for (i, rcpt) in rcpts.iter().enumerate() {
                let data = body(c, i);
                let sent = Arc::new(Mutex::new(0));
                loop {
                    let ok = tokio::time::timeout(
                        Duration::from_secs(20 + 4 * pause),
                        send(to, rcpt, &data, &sent, pause),
                    )
                    .await;
                    if let Ok(Ok(true)) = ok {
                        a.lock().unwrap_or_else(|e| e.into_inner()).push((
                            rcpt.clone(),
                            data.clone(),
                            sent.clone(),
                        ));
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
            }
            Ok(())
        });
    }
    let mut out = Outcome::default();
    let (mut boot_crashes, mut partitioned) = (0usize, false);
    let mut jumped = false;
    let (mut injected, mut injected_ok) = (0usize, Vec::<String>::new());
    // Injections that failed may still have committed (like a lost 250): never invented.
    let mut attempted = Vec::<String>::new();
    // Safety phase (faults on), then at HEAL_SECS a flush, then liveness until the end.
    let end = Duration::from_secs(SIMULATED_SECS);
    let mut flushed = 0;
    while sim.elapsed() < end {
        if let Err(e) = sim.step() {
            out.violations.push(format!("simulation: {e}"));
            break;
        }
        let t = sim.elapsed().as_secs();
        if let Some((at, secs)) = p.jump {
            if !jumped && t >= at {
                disk.clock().jump(Duration::from_secs(secs));
                jumped = true;
            }
        }
        if let Some((s, len)) = p.partition {
            if !partitioned && t >= s && t < s + len {
                sim.partition("mta", "peer");
                partitioned = true;
            } else if partitioned && t >= s + len {
                sim.repair("mta", "peer");
                partitioned = false;
            }
        }
        // Flush at the heal point and every 150 s after (SIGALRM, as an operator would): a
        // scripted peer failure that only happens after a flush is retried too.
        if t >= HEAL_SECS && (t - HEAL_SECS).is_multiple_of(150) && flushed != t {
            host.kill(Signal::Alrm);
            host2.kill(Signal::Alrm);
            flushed = t;
        }
        // Local injection on the MTA host (`mta inject`): acknowledged when it returns Ok.
        if injected < p.injects && t >= 20 * (injected as u64 + 1) {
            let data = format!("Subject: local {injected}\n\ninjected message {injected}\n");
            if let Some(fs) = disk.live().filter(|f| !f.is_frozen()) {
                let env = SimEnv::manual(fs, disk.clock().clone(), seed ^ 0x1a1a ^ injected as u64);
                let m = mta::queue::NewMessage {
                    sender: "joe@heaven.af.mil".into(),
                    recipients: vec!["fred".into()],
                    data: data.clone().into_bytes(),
                    qp: 1,
                    uid: 1000,
                };
                let paths = Paths::new(root().join("queue"));
                attempted.push(data.clone());
                if mta::queue::inject(&env, &paths, &Config::default(), &[m]).is_ok() {
                    injected_ok.push(data);
                }
            }
            injected += 1;
        }
        if !sim.is_host_running("peer") {
            // The peer crashed after accepting a message: it comes back.
            sim.bounce("peer");
        }
        let how = p.persist.get(boot_crashes).cloned();
        match host.tend(&mut sim, || how.unwrap_or(Persist::Synced)) {
            Event::Crashed => {
                boot_crashes += 1;
                disk.arm(Faults {
                    crash_after: p.crashes.get(boot_crashes).copied(),
                    ..Faults::default()
                });
            }
            Event::Exited(code) => {
                out.violations.push(format!("the MTA exited with {code} at {t} s"));
                break;
            }
            Event::Nothing | Event::Restarted => {}
        }
        if let Event::Exited(code) = host2.tend(&mut sim, || Persist::Synced) {
            out.violations.push(format!("the second MTA exited with {code} at {t} s"));
            break;
        }
    }
    out.crashes = boot_crashes;
    out.restarts = host.restarts() + host2.restarts();
    // The oracle.
    let w = World::new(
        disk.live().map_or_else(|| disk.image(), |f| f.live_image()),
        0,
    );
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    out.acked = acked.len();
    let local = w.maildir("home/fred/Maildir");
    let remote = peer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .accepted
        .clone();
    let w2 = World::new(
        disk2
            .live()
            .map_or_else(|| disk2.image(), |f| f.live_image()),
        0,
    );
    let relayed = w2.maildir("home/bill/Maildir");
    if let Some((m, _, _)) = w2.manager_with(None, mta::queue::Disabled::none()) {
        if m.queue().messages().next().is_some() {
            out.violations
                .push("the second MTA's queue is not empty at the end".into());
        }
    }
    out.local_delivered = local.len();
    out.remote_delivered = remote.len() + relayed.len();
    let unstuffed = |s: &str| s.replace("\r\n", "\n");
    for (rcpt, data, sent) in &acked {
        let text = unstuffed(data);
        let sent = *sent.lock().unwrap_or_else(|e| e.into_inner());
        if rcpt.ends_with("@heaven.af.mil") {
            // Exactly once per queued message: more copies only if the client sent it more
            // than once (an earlier copy was accepted but its 250 was lost).
            let n = local.iter().filter(|m| m.ends_with(&text)).count();
            if n == 0 || n > sent {
                out.violations.push(format!(
                    "local message {:?}: {n} copies for {sent} sent (0: lost or still queued)",
                    text.lines().next().unwrap_or("")
                ));
            }
            out.unacked_kept += n.saturating_sub(1);
        } else if rcpt.ends_with("@relay.example") {
            let n = relayed.iter().filter(|m| m.ends_with(&text)).count();
            if n == 0 {
                out.violations.push(format!(
                    "relayed message {:?} not delivered by the second MTA",
                    text.lines().next().unwrap_or("")
                ));
            }
            out.duplicates_remote += n.saturating_sub(1);
        } else {
            let n = remote
                .iter()
                .filter(|m| m.replace("\r\n", "\n").ends_with(&text))
                .count();
            if n == 0 {
                out.violations.push(format!(
                    "remote message {:?} not delivered by the end (lost or still queued)",
                    text.lines().next().unwrap_or("")
                ));
            }
            out.duplicates_remote += n.saturating_sub(1);
        }
    }
    for m in &local {
        if !m.contains("swarm message ") && !attempted.iter().any(|d| m.ends_with(d.as_str())) {
            out.violations.push("an invented local message".into());
        }
    }
    for data in &injected_ok {
        let n = local.iter().filter(|m| m.ends_with(data.as_str())).count();
        if n != 1 {
            out.violations.push(format!(
                "locally injected {:?}: {n} copies",
                data.lines().next().unwrap_or("")
            ));
        }
    }
    out.acked += injected_ok.len();
    // No orphans at quiescence: nothing waiting in todo/, and nothing in tmp/ once a recovery
    // has run after the 36-hour cutoff for interrupted injections.
    let later = World::new(
        disk.live().map_or_else(|| disk.image(), |f| f.live_image()),
        0,
    );
    // Far enough past any clock jump too.
    later.env.clock().advance(Duration::from_secs(10 * 86_400));
    drop(later.manager_with(None, mta::queue::Disabled::none()));
    for d in ["queue/todo", "queue/tmp"] {
        let left = later.env.fs().list_dir(&root().join(d)).unwrap_or_default();
        if !left.is_empty() {
            out.violations
                .push(format!("{d} not empty at the end: {left:?}"));
        }
    }
    match w.manager_with(None, mta::queue::Disabled::none()) {
        Some((m, _, _)) if m.queue().messages().next().is_some() => {
            let left: Vec<String> = m
                .queue()
                .messages()
                .map(|x| {
                    let st: Vec<String> = x
                        .rcpts
                        .iter()
                        .map(|r| format!("{}={:?}", r.rcpt.addr, r.status))
                        .collect();
                    format!(
                        "{} born {} from <{}> [{}]",
                        x.id(),
                        x.env.birth,
                        x.env.sender,
                        st.join(", ")
                    )
                })
                .collect();
            out.violations.push(format!(
                "queue not empty after the liveness phase: {}",
                left.join("; ")
            ))
        }
        Some(_) => {}
        None => out.violations.push("the final disk does not open".into()),
    }
    out.trace_hash = disk.live().map_or(0, |f| f.trace_hash())
        ^ (out.local_delivered as u64) << 40
        ^ (out.remote_delivered as u64) << 48;
    out
}

/// Shrink a failing run: remove faults and load one at a time while it still fails, until
/// nothing more can go. Returns the minimal profile and how many runs it took.
pub fn shrink(seed: u64, start: &Profile, fails: impl Fn(&Outcome) -> bool) -> (Profile, usize) {
    let mut p = start.clone();
    let mut runs = 0;
    loop {
        let mut candidates = Vec::new();
        for i in 0..p.crashes.len() {
            let mut c = p.clone();
            c.crashes.remove(i);
            if i < c.persist.len() {
                c.persist.remove(i);
            }
            candidates.push(c);
        }
        if p.partition.is_some() {
            candidates.push(Profile {
                partition: None,
                ..p.clone()
            });
        }
        if p.eio_at.is_some() {
            candidates.push(Profile {
                eio_at: None,
                ..p.clone()
            });
        }
        if p.jump.is_some() {
            candidates.push(Profile {
                jump: None,
                ..p.clone()
            });
        }
        if p.latency_ms > 0 || p.client_pause > 0 {
            candidates.push(Profile {
                latency_ms: 0,
                client_pause: 0,
                ..p.clone()
            });
        }
        if p.injects > 0 {
            candidates.push(Profile {
                injects: 0,
                ..p.clone()
            });
        }
        if p.peer != [Peer::Accept] {
            candidates.push(Profile {
                peer: vec![Peer::Accept],
                ..p.clone()
            });
        }
        if p.clients > 1 {
            candidates.push(Profile {
                clients: p.clients - 1,
                ..p.clone()
            });
        }
        if p.messages > 1 {
            candidates.push(Profile {
                messages: p.messages - 1,
                ..p.clone()
            });
        }
        if p.remote_pct > 0 {
            candidates.push(Profile {
                remote_pct: 0,
                ..p.clone()
            });
        }
        let mut smaller = None;
        for c in candidates {
            runs += 1;
            if fails(&run_profile(seed, &c)) {
                smaller = Some(c);
                break;
            }
        }
        match smaller {
            Some(c) => p = c,
            None => return (p, runs),
        }
    }
}

/// The second MTA's disk: relay.example, user bill.
fn relay_image() -> crate::fs::Image {
    let clock = Clock::new(EPOCH_MS);
    let env = SimEnv::manual(crate::fs::SimFs::new(clock.clone()), clock, 0);
    let o = mta::init::InitOptions {
        me: "relay.example".into(),
        users: vec!["bill".into()],
        force: false,
        uid: 1000,
        gid: 1000,
        disabled: Default::default(),
    };
    mta::init::init(&env, &root(), &o).expect("init");
    for (name, text) in [("timeoutconnect", "10"), ("timeoutremote", "30")] {
        let p = root().join("control").join(name);
        let mut f = env.fs().create_new(&p).expect("control file");
        f.write_at(0, text.as_bytes()).expect("write");
    }
    env.sim_fs().crash_image(&Persist::All)
}
