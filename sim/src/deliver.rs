//! A world outside turmoil for local delivery and the retry schedule: an installation on a
//! simulated disk, `mta run` booted through `mta::daemon::run` like every simulated host, on
//! a paused clock that jumps to the next timer whenever everything waits, and with no
//! network (remote deliveries defer). What the MTA did is read from its log lines and disk.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mta::control::{ControlDir, Rewrite};
use mta::daemon::{self, Options};
use mta::env::{Env, Fs, Signal};
use mta::queue::{Config, Disabled, MsgId, MsgState, NewMessage, Paths, Queue, View};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::env::{Process, SimEnv};
pub use crate::fixture::{image, root};
use crate::fixture::{EPOCH_MS, PORT};
use crate::fs::{Clock, Image, SimFs};

/// A simulated machine with an installation, its MTA not running between runs.
pub struct World {
    pub env: SimEnv,
    pub paths: Paths,
}

/// What one run of `mta run` did.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// The exit status; `None` when the disk reached its crash point (the machine is down).
    pub exit: Option<i32>,
    pub stderr: Vec<String>,
    /// Every qmail-send log line, with the unix second it was written.
    pub lines: Vec<(u64, String)>,
    /// Messages left in the queue afterwards; `None` if the queue could not be read.
    pub queued: Option<usize>,
}

impl Run {
    /// The log lines alone.
    pub fn log(&self) -> Vec<String> {
        self.lines.iter().map(|(_, l)| l.clone()).collect()
    }
    fn count(&self, f: impl Fn(&str) -> bool) -> usize {
        self.lines.iter().filter(|(_, l)| f(l)).count()
    }
    pub fn delivered(&self) -> usize {
        self.count(|l| l.starts_with("delivery ") && l.contains(": success: "))
    }
    pub fn failed(&self) -> usize {
        self.count(|l| l.starts_with("delivery ") && l.contains(": failure: "))
    }
    pub fn bounces(&self) -> usize {
        self.count(|l| l.starts_with("bounce msg "))
    }
    pub fn discarded(&self) -> usize {
        self.count(|l| l.contains(": discarding bounce/"))
    }
    /// Deliveries started on a channel ("local" or "remote").
    pub fn attempts(&self, channel: &str) -> usize {
        let to = format!(" to {channel} ");
        self.count(|l| l.starts_with("starting delivery ") && l.contains(&to))
    }
    /// The times of each message's delivery passes on a channel, from the log: one entry per
    /// second in which deliveries of the message started.
    pub fn attempt_times(&self, channel: &str) -> BTreeMap<MsgId, Vec<u64>> {
        let to = format!(" to {channel} ");
        let mut out: BTreeMap<MsgId, Vec<u64>> = BTreeMap::new();
        for (t, l) in &self.lines {
            let Some(rest) = l.strip_prefix("starting delivery ") else {
                continue;
            };
            let (Some(id), true) = (msg_id_in(rest), rest.contains(&to)) else {
                continue;
            };
            let v = out.entry(id).or_default();
            if v.last() != Some(t) {
                v.push(*t);
            }
        }
        out
    }
    /// Whether `mta run` stopped when told to and left nothing queued.
    pub fn drained(&self) -> bool {
        self.exit == Some(0) && self.queued == Some(0)
    }
}

/// The id in "N: msg ID to ...".
fn msg_id_in(s: &str) -> Option<MsgId> {
    let (_, rest) = s.split_once(": msg ")?;
    rest.split(' ').next()?.parse().ok()
}

impl World {
    pub fn new(img: Image, seed: u64) -> World {
        let clock = Clock::new(EPOCH_MS);
        World {
            env: SimEnv::offline(SimFs::from_image(img, clock.clone()), clock, seed),
            paths: Paths::new(root().join("queue")),
        }
    }

    /// Inject like `mta inject` (through todo/).
    pub fn inject(&self, sender: &str, rcpts: &[&str], data: &str) {
        let m = NewMessage {
            sender: sender.into(),
            recipients: rcpts.iter().map(|s| s.to_string()).collect(),
            data: data.as_bytes().to_vec(),
            qp: 1,
            uid: 1000,
        };
        mta::queue::inject(&self.env, &self.paths, &Config::default(), &[m]).expect("inject");
    }

    /// Run `mta run` until the queue is empty or `limit` simulated seconds pass, then stop it
    /// with SIGTERM. A crash point of the disk ends the run at once.
    pub fn run(&self, limit: u64) -> Run {
        self.run_with(limit, Disabled::none())
    }

    /// [`World::run`] with fsyncs `off` (the audit that each one is needed).
    pub fn run_with(&self, limit: u64, off: Disabled) -> Run {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(Notify::new());
        let env = self.env.clone().with_process(Process::default());
        let opts = Options {
            root: root(),
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT),
            listen_tls: None,
            nameservers: Some(Vec::new()),
            local_ips: Vec::new(),
            log_sink: Some(sink(&env, &lines, &ended)),
            fsync_off: off,
            listeners: Default::default(),
        };
        let exit = rt.block_on(async {
            env.anchor();
            let exit = drive(&env, opts, limit, &ended).await;
            // Inside the runtime: its paused clock says where simulated time ended.
            env.unanchor();
            exit
        });
        let lines = std::mem::take(&mut *lines.lock().unwrap_or_else(|e| e.into_inner()));
        Run {
            exit,
            stderr: env.process().stderr(),
            lines,
            queued: exit.and_then(|_| self.queued()),
        }
    }

    /// Messages in the queue (and committed injections not yet taken in), read as
    /// `mta queue stat` reads them; `None` if the queue cannot be read.
    pub fn queued(&self) -> Option<usize> {
        let v = View::load(&self.env, &self.paths).ok()?;
        Some(v.messages.len() + v.todo.len())
    }

    /// Open the queue as `mta run` does at start (recovery included) and list what is in it;
    /// `None` if it cannot be opened.
    pub fn recover(&self) -> Option<Vec<MsgState>> {
        let rw = Rewrite::load(&ControlDir::new(self.env.fs(), &root())).ok()?;
        let cfg = Config::default();
        let (q, _) = Queue::open(self.env.clone(), self.paths.clone(), cfg, &rw).ok()?;
        Some(q.messages().cloned().collect())
    }

    pub fn read(&self, p: &str) -> Option<String> {
        self.env
            .fs()
            .read(&root().join(p))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// A mail reader takes everything in a Maildir's new/: moved to cur/ with flags.
    pub fn read_new(&self, dir: &str) {
        let (new, cur) = (root().join(dir).join("new"), root().join(dir).join("cur"));
        let fs = self.env.fs();
        for n in fs.list_dir(&new).unwrap_or_default() {
            let _ = fs.rename(&new.join(&n), &cur.join(format!("{n}:2,S")));
        }
    }

    /// Every message of a Maildir, new/ then cur/ (contents, by name order).
    pub fn mailbox(&self, dir: &str) -> Vec<String> {
        let mut v = self.maildir(dir);
        let cur = root().join(dir).join("cur");
        let fs = self.env.fs();
        for n in fs.list_dir(&cur).unwrap_or_default() {
            v.push(
                String::from_utf8_lossy(&fs.read(&cur.join(n)).unwrap_or_default()).into_owned(),
            );
        }
        v
    }

    /// Files in a Maildir's new/ (contents, by name order).
    pub fn maildir(&self, dir: &str) -> Vec<String> {
        let d = root().join(dir).join("new");
        let fs = self.env.fs();
        fs.list_dir(&d)
            .unwrap_or_default()
            .iter()
            .map(|n| String::from_utf8_lossy(&fs.read(&d.join(n)).unwrap()).into_owned())
            .collect()
    }
}

/// Every log line with its time; a finished message wakes the driver.
fn sink(
    env: &SimEnv,
    lines: &Arc<Mutex<Vec<(u64, String)>>>,
    ended: &Arc<Notify>,
) -> mta::send::log::Sink {
    let (env, lines, ended) = (env.clone(), lines.clone(), ended.clone());
    Arc::new(move |l: &str| {
        let t = mta::env::unix_secs(env.now());
        lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((t, l.to_string()));
        if l.starts_with("end msg ") {
            ended.notify_one();
        }
    })
}

/// Boot `mta run` and watch it: every simulated minute for a crash of the disk, and just
/// after a message ends for an empty queue; stop it then or at the deadline. `None`: crashed.
async fn drive(env: &SimEnv, opts: Options, limit: u64, ended: &Notify) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(limit);
    let mut daemon = std::pin::pin!(daemon::run(env.clone(), opts));
    // The first look comes after the first todo/ poll: an idle queue never logs an end.
    let mut look = true;
    loop {
        // A millisecond after an event: once the MTA has done all it does at that instant.
        let step = if look { 1 } else { 60_000 };
        let wake = (Instant::now() + Duration::from_millis(step)).min(deadline);
        tokio::select! {
            code = &mut daemon => return Some(code),
            () = ended.notified() => look = true,
            () = tokio::time::sleep_until(wake) => {
                if env.sim_fs().is_frozen() {
                    return None;
                }
                if Instant::now() >= deadline || (look && queue_empty(env)) {
                    break;
                }
                look = false;
            }
        }
    }
    env.process().kill(Signal::Term);
    Some(daemon.await)
}

/// Whether the queue holds nothing, judged on a copy of what the MTA sees (so that looking
/// adds no filesystem operations to the run).
fn queue_empty(env: &SimEnv) -> bool {
    let clock = Clock::new(env.clock().now_ms());
    let copy = SimEnv::manual(
        SimFs::from_image(env.sim_fs().live_image(), clock.clone()),
        clock,
        0,
    );
    View::load(&copy, &Paths::new(root().join("queue")))
        .is_ok_and(|v| v.messages.is_empty() && v.todo.is_empty())
}

/// Log lines with message ids replaced by `[id]` (ids depend on the seed).
pub fn redact_ids(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| {
            l.split(' ')
                .map(|w| {
                    let bare = w.trim_end_matches(':');
                    if bare.parse::<mta::queue::MsgId>().is_ok() {
                        w.replace(bare, "[id]")
                    } else {
                        w.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
