//! The receiving MTA in a turmoil world: `smtpd` and the queue service on the simulated env,
//! SMTP clients over the simulated network, and crashes at exact filesystem operations.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use mta::control::{ControlDir, Rewrite};
use mta::env::{Env, Fs, FsFile, Net};
use mta::queue::{Config, Paths, Queue};

use crate::env::{SimEnv, TURMOIL};
use crate::fs::{Clock, Costs, Faults, Image, Persist, SimFs};
use crate::host::MtaHost;
use crate::world::Disk;

pub use crate::fixture::{installation, EPOCH_MS, PORT, ROOT};

/// Bytes a session holds before streaming to disk; tests lower it to exercise the spool path.
pub static SPOOL_THRESHOLD: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(mta::smtpd::SPOOL_THRESHOLD);

/// The bytes a client sends as message `i`.
pub fn body(i: usize) -> String {
    format!("Subject: message {i}\r\n\r\nbody of message {i}\r\n..dot line\r\n")
}

/// What a stored message for `body(i)` ends with (after CRLF → LF and unstuffing).
pub fn stored_tail(i: usize) -> Vec<u8> {
    format!("Subject: message {i}\n\nbody of message {i}\n.dot line\n").into_bytes()
}

async fn reply(r: &mut BufReader<turmoil::net::TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line).await?;
    Ok(line)
}

/// Send one message over SMTP: `Ok(Ok(()))` when the server said 250 after the data,
/// `Ok(Err(reply))` for any other reply.
async fn send(to: SocketAddr, i: usize) -> std::io::Result<Result<(), String>> {
    let mut r = BufReader::new(TURMOIL.connect(to).await?);
    let greeting = reply(&mut r).await?;
    if !greeting.starts_with("220") {
        return Ok(Err(greeting));
    }
    let cmds = "MAIL FROM:<client@example.net>\r\nRCPT TO:<fred@heaven.af.mil>\r\nDATA\r\n";
    r.get_mut().write_all(cmds.as_bytes()).await?;
    for want in ["250", "250", "354"] {
        let got = reply(&mut r).await?;
        if !got.starts_with(want) {
            return Ok(Err(got));
        }
    }
    r.get_mut()
        .write_all(format!("{}.\r\n", body(i)).as_bytes())
        .await?;
    let last = reply(&mut r).await?;
    let _ = r.get_mut().write_all(b"QUIT\r\n").await;
    Ok(if last.starts_with("250 ok") {
        Ok(())
    } else {
        Err(last)
    })
}

/// What happened in one crash-mid-receive run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Message numbers the client saw acknowledged.
    pub acked: Vec<usize>,
    /// Message numbers found in the queue at the end (a number may appear twice when a
    /// message was accepted but its 250 never reached the client, which then resent it).
    pub stored: Vec<usize>,
    /// Stored messages that match no message the client sent.
    pub corrupt: usize,
    pub boots: u32,
    pub trace_hash: u64,
    /// Mutating filesystem operations of the last boot (all of them in a crash-free run).
    pub ops: u64,
    /// Everything the last boot's filesystem counted (see [`Costs`]).
    pub costs: Costs,
    /// Damage the final recovery found in the middle of log segments (crashes and failed
    /// fsyncs alone must never leave any).
    pub damaged_bytes: u64,
    /// Replies the client saw after the data that were not `250`.
    pub refusals: Vec<String>,
}

/// Send `n` messages; the MTA crashes after filesystem operation `crash_after` of its first
/// boot (if given) and restarts from what `persist` says reached the disk.
pub fn run(n: usize, crash_after: Option<u64>, persist: Persist, seed: u64) -> Outcome {
    let faults = Faults {
        crash_after,
        ..Faults::default()
    };
    run_with(n, faults, persist, seed, |_, _| {})
}

/// [`run`] with any faults armed for the first boot; `during` sees each acknowledged count
/// (e.g. to heal a fault once the client has seen failures).
pub fn run_with(
    n: usize,
    faults: Faults,
    persist: Persist,
    seed: u64,
    during: impl Fn(&Disk, usize),
) -> Outcome {
    let world = Receive {
        image: installation(&[]),
        crash_at_end: false,
    };
    world.run(n, faults, persist, seed, during)
}

/// A receiving world: the disk it starts from, and whether the machine goes down once the
/// client is done (keeping only what was made durable), before the final check.
pub struct Receive {
    pub image: Image,
    pub crash_at_end: bool,
}

/// The SMTP client: sends messages 0..n one after another, each until it is acknowledged,
/// recording acknowledgements and refusals.
async fn client(
    n: usize,
    acked: Arc<Mutex<Vec<usize>>>,
    refusals: Arc<Mutex<Vec<String>>>,
) -> turmoil::Result {
    let to = SocketAddr::new(turmoil::lookup("mta"), PORT);
    for i in 0..n {
        loop {
            let r = tokio::time::timeout(Duration::from_secs(5), send(to, i)).await;
            match r {
                Ok(Ok(Ok(()))) => {
                    acked.lock().unwrap_or_else(|e| e.into_inner()).push(i);
                    break;
                }
                Ok(Ok(Err(reply))) => refusals
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(reply.trim_end().to_string()),
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}
impl Receive {
    /// Send `n` messages with `faults` armed for the first boot.
    pub fn run(
        self,
        n: usize,
        faults: Faults,
        persist: Persist,
        seed: u64,
        during: impl Fn(&Disk, usize),
    ) -> Outcome {
        let clock = Clock::new(EPOCH_MS);
        let disk = Disk::with_image(self.image, clock.clone());
        disk.arm(faults);
        let mut sim = turmoil::Builder::new()
            .epoch(std::time::UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
            .simulation_duration(Duration::from_secs(600))
            .rng_seed(seed)
            .build();
        let host = MtaHost::new("mta", disk.clone(), seed, false);
        host.install(&mut sim);
        let acked = Arc::new(Mutex::new(Vec::new()));
        let refusals = Arc::new(Mutex::new(Vec::new()));
        sim.client("client", client(n, acked.clone(), refusals.clone()));
        loop {
            let done = sim.step().expect("simulation step");
            during(
                &disk,
                refusals.lock().unwrap_or_else(|e| e.into_inner()).len(),
            );
            host.tend(&mut sim, || persist.clone());
            if done {
                break;
            }
        }
        // The crash may have come in the last step, with no reboot after it: then the disk image
        // is what the next boot would find.
        let (image, trace_hash, costs) = match disk.live() {
            Some(fs) if self.crash_at_end => (
                fs.crash_image(&Persist::Synced),
                fs.trace_hash(),
                fs.costs(),
            ),
            Some(fs) => (fs.live_image(), fs.trace_hash(), fs.costs()),
            None => (disk.image(), 0, Costs::default()),
        };
        drop(sim);
        let (stored, corrupt, damaged_bytes) = what_survived(image, clock, n);
        let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let refusals = refusals.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Outcome {
            refusals,
            acked,
            stored,
            corrupt,
            boots: disk.boots(),
            trace_hash,
            ops: costs.ops,
            costs,
            damaged_bytes,
        }
    }
}

/// Recover the final disk: the message numbers found in the queue and in fred's Maildir,
/// how many stored messages match nothing sent, and the damage recovery reported.
fn what_survived(image: Image, clock: Clock, n: usize) -> (Vec<usize>, usize, u64) {
    let fred = crate::fixture::mailbox_files(&image)
        .into_iter()
        .filter(|(p, _)| p.contains("/home/fred/"))
        .map(|(_, b)| b);
    let env = SimEnv::manual(SimFs::from_image(image, clock.clone()), clock, 0);
    let rw = Rewrite::load(&ControlDir::new(env.fs(), Path::new(ROOT))).expect("controls");
    let paths = Paths::new(Path::new(ROOT).join("queue"));
    let (mut q, rec) =
        Queue::open(env.clone(), paths, Config::default(), &rw).expect("final recovery");
    let ids: Vec<_> = q.messages().map(|m| m.id()).collect();
    let mut found: Vec<Vec<u8>> = ids
        .into_iter()
        .map(|id| q.read_data(id).expect("readable"))
        .collect();
    found.extend(fred);
    let mut stored = Vec::new();
    let mut corrupt = 0;
    for data in found {
        let data = strip_delivery_headers(&data);
        match (0..n).find(|&i| data.ends_with(&stored_tail(i))) {
            Some(i) if data.starts_with(b"Received: (qmail ") => stored.push(i),
            _ => corrupt += 1,
        }
    }
    stored.sort_unstable();
    (stored, corrupt, rec.damaged_bytes)
}

/// Fail each fsync of a run in turn (Linux semantics: the data it covered may be gone from
/// the disk while reads still return it), let the client finish, then take the machine down
/// keeping only what was made durable: every acknowledged message must survive. Local
/// delivery defers (fred's .qmail runs a missing program), so the mail stays in the queue.
pub fn failed_fsyncs(n: usize, seed: u64) -> Campaign {
    let image = || {
        let fs = SimFs::from_image(installation(&[]), Clock::new(EPOCH_MS));
        let p = Path::new(ROOT).join("home/fred/.qmail");
        let mut f = fs.create_new(&p).expect(".qmail");
        f.write_at(0, b"|deferme\n").expect("write");
        fs.crash_image(&Persist::All)
    };
    let world = |k: Option<u64>| {
        Receive {
            image: image(),
            crash_at_end: true,
        }
        .run(
            n,
            Faults {
                fsync_fail_at: k.into_iter().collect(),
                ..Faults::default()
            },
            Persist::Synced,
            seed,
            |_, _| {},
        )
    };
    let clean = world(None);
    let mut c = Campaign {
        crash_points: clean.ops,
        ..Campaign::default()
    };
    for k in 1..=clean.ops {
        let o = world(Some(k));
        c.runs += 1;
        c.acked += o.acked.len();
        c.unacked_kept += o.stored.len().saturating_sub(o.acked.len());
        let lost: Vec<_> = o.acked.iter().filter(|i| !o.stored.contains(i)).collect();
        if !lost.is_empty() || o.corrupt > 0 || o.acked.len() != n || o.damaged_bytes > 0 {
            c.violations.push(format!(
                "seed={seed} fsync_fail_at={k}: lost {lost:?}, corrupt {}, acked {}/{n}, {} damaged log bytes",
                o.corrupt,
                o.acked.len(),
                o.damaged_bytes
            ));
        }
    }
    c
}

/// A delivered message starts with qmail-local's Return-Path and Delivered-To lines.
fn strip_delivery_headers(data: &[u8]) -> &[u8] {
    let mut rest = data;
    for h in [&b"Return-Path: "[..], b"Delivered-To: "] {
        if rest.starts_with(h) {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |p| p + 1);
            rest = &rest[end..];
        }
    }
    rest
}

/// Totals of a crash-mid-receive enumeration.
#[derive(Debug, Clone, Default)]
pub struct Campaign {
    pub crash_points: u64,
    pub runs: usize,
    pub acked: usize,
    /// Messages kept although their 250 never reached the client (complete, counted).
    pub unacked_kept: usize,
    pub violations: Vec<String>,
}

/// Crash the receiving MTA after every filesystem operation of a clean run (sending `n`
/// messages), under four persistence choices each; check every acknowledged message survives.
pub fn crash_mid_receive(n: usize, spool_threshold: usize, seed: u64) -> Campaign {
    SPOOL_THRESHOLD.store(spool_threshold, std::sync::atomic::Ordering::Relaxed);
    let mut c = Campaign::default();
    let clean = run(n, None, Persist::Synced, seed);
    c.crash_points = clean.ops;
    for k in 1..=clean.ops {
        for p in [
            Persist::Synced,
            Persist::All,
            Persist::AllBut(0),
            Persist::TornLastWrite,
        ] {
            let o = run(n, Some(k), p.clone(), seed ^ k);
            c.runs += 1;
            c.acked += o.acked.len();
            c.unacked_kept += o.stored.len().saturating_sub(o.acked.len());
            let lost: Vec<_> = o.acked.iter().filter(|i| !o.stored.contains(i)).collect();
            if !lost.is_empty() || o.corrupt > 0 || o.acked.len() != n {
                c.violations.push(format!(
                    "seed={seed} crash_after={k} persist={p:?}: lost {lost:?}, corrupt {}, acked {}/{n}",
                    o.corrupt,
                    o.acked.len()
                ));
            }
        }
    }
    SPOOL_THRESHOLD.store(
        mta::smtpd::SPOOL_THRESHOLD,
        std::sync::atomic::Ordering::Relaxed,
    );
    c
}

/// disk-full: the disk holds the installation and nothing more; SMTP clients get 451 with
/// nothing half-queued; once space is back, every message goes through exactly once.
pub fn disk_full(seed: u64) -> Vec<String> {
    let installed = installation(&[]).used_bytes();
    let o = run_with(
        3,
        Faults {
            capacity: Some(installed + 16),
            ..Faults::default()
        },
        Persist::Synced,
        seed,
        |disk, refusals| {
            if refusals >= 3 {
                if let Some(fs) = disk.live() {
                    fs.set_faults(Faults::default());
                }
            }
        },
    );
    let mut bad = Vec::new();
    if o.refusals.len() < 3
        || o.refusals
            .iter()
            .any(|r| r != "451 qq write error or disk full (#4.3.0)")
    {
        bad.push(format!("refusals while full: {:?}", o.refusals));
    }
    if o.acked != vec![0, 1, 2] || o.stored != vec![0, 1, 2] || o.corrupt != 0 {
        bad.push(format!(
            "acked {:?}, stored {:?}, corrupt {}",
            o.acked, o.stored, o.corrupt
        ));
    }
    bad
}
