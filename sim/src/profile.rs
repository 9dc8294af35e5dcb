//! A swarm seed's fault profile: which faults are on, when and how often (BUGGIFY style),
//! printed as one line of text that parses back exactly, and shrunk one fault at a time.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::fs::Persist;
use crate::remote_world::Peer;

/// The faults one seed runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Crash the MTA after this many fs operations of boot 1, 2, ... (then run clean).
    pub crashes: Vec<u64>,
    /// How each crash persists pending operations.
    pub persist: Vec<Persist>,
    /// Partition MTA ↔ peer from `.0` for `.1` seconds.
    pub partition: Option<(u64, u64)>,
    /// The fs operation of the first boot that fails with EIO.
    pub eio_at: Option<u64>,
    /// Fs operations of the first boot at which an fsync fails (Linux semantics).
    pub fsync_fail: Vec<u64>,
    /// Reads of the first boot that fail with EIO.
    pub read_eio: Vec<u64>,
    /// The MTA's disk is full from `.0` for `.1` seconds.
    pub full: Option<(u64, u64)>,
    /// At `.0` seconds the MTA's wall clock jumps `.1` seconds forward.
    pub jump: Option<(u64, u64)>,
    /// At this second the MTA's machine reboots (whatever it is doing), keeping a random
    /// POSIX-legal subset of what was not yet durable.
    pub reboot: Option<u64>,
    /// A mail reader moves fred's new messages to cur/ and deletes what it read, every 30 s.
    pub reader: bool,
    /// Every third message is over the receiver's 256 KiB streaming threshold.
    pub big: bool,
    /// At the first crash or reboot, one sector of a synced queue file is lost.
    pub corrupt: bool,
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
    /// An operator flushes (SIGALRM) when the faults heal; without, only the natural retry
    /// schedule brings the mail through.
    pub flush: bool,
    /// Both MTAs have certificates: clients send over STARTTLS and authenticate (AUTH PLAIN;
    /// a fault mid-handshake is a TLS failure), and the relaying between the MTAs runs over
    /// STARTTLS too.
    pub tls: bool,
    /// The mail reader (`reader`) is a POP3 client of `mta run --listen-pop3` instead.
    pub pop3: bool,
    /// A mini-qmail host (no queue) sends two messages to fred over QMQP.
    pub mini: bool,
}

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

fn span(s: Option<(u64, u64)>) -> String {
    s.map_or("-".into(), |(a, b)| format!("{a}+{b}"))
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "crashes={};persist={};partition={};eio={};fsyncfail={};readeio={};full={};jump={};reboot={};reader={};big={};corrupt={};peer={};latency={};pause={};inject={};clients={};messages={};remote={};flush={};tls={};pop3={};mini={}",
            list(&self.crashes),
            list(&self.persist),
            span(self.partition),
            self.eio_at.map_or("-".into(), |e| e.to_string()),
            list(&self.fsync_fail),
            list(&self.read_eio),
            span(self.full),
            span(self.jump),
            self.reboot.map_or("-".into(), |r| r.to_string()),
            u8::from(self.reader),
            u8::from(self.big),
            u8::from(self.corrupt),
            list(&self.peer),
            self.latency_ms,
            self.client_pause,
            self.injects,
            self.clients,
            self.messages,
            self.remote_pct,
            u8::from(self.flush),
            u8::from(self.tls),
            u8::from(self.pop3),
            u8::from(self.mini),
        )
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            crashes: vec![],
            persist: vec![],
            partition: None,
            eio_at: None,
            fsync_fail: vec![],
            read_eio: vec![],
            full: None,
            jump: None,
            reboot: None,
            reader: false,
            big: false,
            corrupt: false,
            peer: vec![Peer::Accept],
            latency_ms: 0,
            client_pause: 0,
            injects: 0,
            clients: 1,
            messages: 2,
            remote_pct: 0,
            flush: true,
            tls: false,
            pop3: false,
            mini: false,
        }
    }
}

fn items<T: std::str::FromStr>(v: &str) -> Result<Vec<T>, String> {
    v.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().map_err(|_| format!("bad item {x:?}")))
        .collect()
}

fn parse_span(v: &str) -> Result<Option<(u64, u64)>, String> {
    if v == "-" {
        return Ok(None);
    }
    let (a, b) = v.split_once('+').ok_or(format!("bad span {v:?}"))?;
    let n = |x: &str| x.parse::<u64>().map_err(|_| format!("bad span {v:?}"));
    Ok(Some((n(a)?, n(b)?)))
}

impl std::str::FromStr for Profile {
    type Err = String;
    /// The form [`Profile`]'s Display writes (what a failure line prints). Keys left out
    /// keep their defaults.
    fn from_str(s: &str) -> Result<Profile, String> {
        let mut p = Profile::default();
        for part in s.split(';') {
            let (k, v) = part.split_once('=').ok_or(format!("bad part {part:?}"))?;
            let num = || {
                v.parse::<u64>()
                    .map_err(|_| format!("bad number in {part:?}"))
            };
            match k {
                "crashes" => p.crashes = items(v)?,
                "persist" => p.persist = items(v)?,
                "partition" => p.partition = parse_span(v)?,
                "eio" if v == "-" => p.eio_at = None,
                "eio" => p.eio_at = Some(num()?),
                "fsyncfail" => p.fsync_fail = items(v)?,
                "readeio" => p.read_eio = items(v)?,
                "full" => p.full = parse_span(v)?,
                "jump" => p.jump = parse_span(v)?,
                "reboot" if v == "-" => p.reboot = None,
                "reboot" => p.reboot = Some(num()?),
                "reader" => p.reader = num()? != 0,
                "big" => p.big = num()? != 0,
                "corrupt" => p.corrupt = num()? != 0,
                "peer" => p.peer = items(v)?,
                "latency" => p.latency_ms = num()?,
                "pause" => p.client_pause = num()?,
                "inject" => p.injects = num()? as usize,
                "clients" => p.clients = num()? as usize,
                "messages" => p.messages = num()? as usize,
                "remote" => p.remote_pct = num()? as u32,
                "flush" => p.flush = num()? != 0,
                "tls" => p.tls = num()? != 0,
                "pop3" => p.pop3 = num()? != 0,
                "mini" => p.mini = num()? != 0,
                _ => return Err(format!("unknown key {k:?}")),
            }
        }
        Ok(p)
    }
}

/// What a scripted peer does on its first connection: temporary and permanent refusals at
/// each stage, drops, slowness.
fn draw_peer<R: Rng>(r: &mut R) -> Peer {
    let steps = [
        Peer::Greeting(421),
        Peer::Mail(451),
        Peer::Rcpt(450),
        Peer::Data(451),
        Peer::AfterDot(451),
        Peer::Mail(553),
        Peer::Rcpt(550),
        Peer::Data(554),
        Peer::AfterDot(554),
        Peer::DropAfterDot,
        Peer::Slow(40),
        Peer::Slow(2),
        Peer::Ehlo(502),
        Peer::AcceptThenCrash,
        Peer::DropAfter(r.random_range(0..7)),
    ];
    steps[r.random_range(0..steps.len())]
}

fn some<R: Rng, T>(r: &mut R, p: f64, f: impl FnOnce(&mut R) -> T) -> Option<T> {
    r.random_bool(p).then(|| f(r))
}

impl Profile {
    /// The profile a seed draws (each fault on or off, then its parameters).
    pub fn draw(seed: u64) -> Profile {
        Profile::draw_from(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5a5a_5a5a))
    }

    /// The profile a source of choices draws: a seeded generator for the swarm, a fuzzer's
    /// bytes for the structure-aware fuzz target (`crate::fuzz`).
    pub fn draw_from<R: Rng>(mut r: &mut R) -> Profile {
        let n = if r.random_bool(0.7) {
            r.random_range(1..=3)
        } else {
            0
        };
        let crashes = (0..n).map(|_| r.random_range(3..120)).collect();
        let persist = (0..n).map(|_| Persist::draw(&mut r)).collect();
        let several = |r: &mut R, k: usize, hi: u64| -> Vec<u64> {
            let mut v: Vec<u64> = (0..r.random_range(1..=k))
                .map(|_| r.random_range(3..hi))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        Profile {
            crashes,
            persist,
            partition: some(&mut r, 0.4, |r| {
                (r.random_range(0..60), r.random_range(5..90))
            }),
            eio_at: some(&mut r, 0.3, |r| r.random_range(3..80)),
            fsync_fail: some(&mut r, 0.3, |r| several(r, 4, 200)).unwrap_or_default(),
            read_eio: some(&mut r, 0.2, |r| several(r, 3, 300)).unwrap_or_default(),
            full: some(&mut r, 0.2, |r| {
                (r.random_range(0..150), r.random_range(10..100))
            }),
            peer: match some(&mut r, 0.5, draw_peer) {
                Some(first) => vec![first, Peer::Accept],
                None => vec![Peer::Accept],
            },
            latency_ms: [0, 0, 20, 300][r.random_range(0..4)],
            client_pause: [0, 0, 0, 5][r.random_range(0..4)],
            injects: r.random_range(0..3),
            jump: some(&mut r, 0.15, |r| {
                (
                    r.random_range(0..100),
                    [60, 600, 3600, 86_400][r.random_range(0..4)],
                )
            }),
            clients: r.random_range(1..=3),
            messages: r.random_range(2..=6),
            remote_pct: [0, 30, 50, 100][r.random_range(0..4)],
            flush: r.random_bool(0.8),
            reboot: some(&mut r, 0.2, |r| r.random_range(5..200)),
            reader: r.random_bool(0.3),
            big: r.random_bool(0.1),
            corrupt: r.random_bool(0.15),
            // Drawn last: every other field keeps the value it had before TLS existed.
            tls: r.random_bool(0.3),
            // After tls: every other field keeps its value.
            pop3: r.random_bool(0.5),
            mini: r.random_bool(0.3),
        }
    }

    /// Profiles with one fault or one piece of load less (shrinking's next candidates).
    pub fn smaller(&self) -> Vec<Profile> {
        let mut v = Vec::new();
        let with = |f: &dyn Fn(&mut Profile)| {
            let mut c = self.clone();
            f(&mut c);
            c
        };
        for i in 0..self.crashes.len() {
            v.push(with(&|c| {
                c.crashes.remove(i);
                if i < c.persist.len() {
                    c.persist.remove(i);
                }
            }));
        }
        for i in 0..self.fsync_fail.len() {
            v.push(with(&|c| {
                c.fsync_fail.remove(i);
            }));
        }
        for i in 0..self.read_eio.len() {
            v.push(with(&|c| {
                c.read_eio.remove(i);
            }));
        }
        let d = Profile::default();
        let fields: [(bool, &Edit); 18] = [
            (self.corrupt, &|c| c.corrupt = false),
            (self.reboot.is_some(), &|c| c.reboot = None),
            (self.reader, &|c| c.reader = false),
            (self.big, &|c| c.big = false),
            (self.partition.is_some(), &|c| c.partition = None),
            (self.eio_at.is_some(), &|c| c.eio_at = None),
            (self.full.is_some(), &|c| c.full = None),
            (self.jump.is_some(), &|c| c.jump = None),
            (self.latency_ms + self.client_pause > 0, &|c| {
                c.latency_ms = 0;
                c.client_pause = 0
            }),
            (self.injects > 0, &|c| c.injects = 0),
            (self.peer != d.peer, &|c| c.peer = vec![Peer::Accept]),
            (self.clients > 1, &|c| c.clients -= 1),
            (self.messages > 1, &|c| c.messages -= 1),
            (self.remote_pct > 0, &|c| c.remote_pct = 0),
            (!self.flush, &|c| c.flush = true),
            (self.tls, &|c| c.tls = false),
            (self.pop3, &|c| c.pop3 = false),
            (self.mini, &|c| c.mini = false),
        ];
        for (applies, f) in fields {
            if applies {
                v.push(with(f));
            }
        }
        v
    }
}

/// A change to a profile (one shrinking step).
type Edit = dyn Fn(&mut Profile);

/// Shrink a failing run: remove faults and load one at a time while it still fails, until
/// nothing more can go. Returns the minimal profile and how many runs it took.
pub fn shrink(start: &Profile, fails: impl Fn(&Profile) -> bool) -> (Profile, usize) {
    let mut p = start.clone();
    let mut runs = 0;
    loop {
        let mut smaller = None;
        for c in p.smaller() {
            runs += 1;
            if fails(&c) {
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
