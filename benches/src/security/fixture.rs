//! Installations of the real `mta`, the recorder peer that plays the next hop, and the row
//! bookkeeping: unique tokens per message, exactly-once checks, liveness and /proc figures.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::client::Client;
use super::{Check, Config, Expect, Lost, Mem, Row, SecError, Sizes};

pub use super::recorder::Recorder;

/// A running `mta run`; killed when dropped.
pub struct Instance {
    pub child: Child,
    /// Where clients connect (IPv4 loopback, also for a `[::]` listener).
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub log: PathBuf,
    pub listen: String,
    mta: PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The source address of liveness probes: never used by a row, so per-IP limits and rules
/// of the rows do not touch it.
const PROBE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 250));

impl Instance {
    /// `mta run --listen LISTEN` on `root`, log lines appended to `root/log`.
    pub fn start(mta: &Path, root: &Path, listen: &str) -> Result<Instance, SecError> {
        let log = root.join("log");
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut child = Command::new(mta)
            .args(["run", "--listen", listen, "--root"])
            .arg(root)
            .env("MTA_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()?;
        let mut line = String::new();
        let out = child.stdout.take().expect("piped stdout");
        BufReader::new(out).read_line(&mut line)?;
        let Some(port) = line
            .trim()
            .strip_prefix("mta: listening on ")
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .map(|a| a.port())
        else {
            let _ = child.kill();
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(SecError::Mta {
                what: "run did not start".into(),
                detail: format!("{line:?} {tail}"),
            });
        };
        Ok(Instance {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            root: root.to_path_buf(),
            log,
            listen: listen.to_string(),
            mta: mta.to_path_buf(),
        })
    }

    /// Kill -9 and start again on the same installation (a fresh port).
    pub fn crash_and_restart(&mut self) -> Result<(), SecError> {
        self.child.kill()?;
        self.child.wait()?;
        let fresh = Instance::start(&self.mta, &self.root, &self.listen)?;
        *self = fresh;
        Ok(())
    }

    pub fn signal(&self, sig: &str) -> Result<(), SecError> {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()?
            .success();
        if !ok {
            return Err(SecError::Mta {
                what: format!("kill {sig}"),
                detail: "failed".into(),
            });
        }
        Ok(())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// VmRSS, VmHWM and the number of open descriptors, from /proc.
    pub fn mem(&self) -> Option<Mem> {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
        Some(Mem {
            rss_kb: field("VmRSS:")?,
            hwm_kb: field("VmHWM:")?,
            fds,
        })
    }

    /// Still running and greets a fresh client with 220 (a 421 while sessions of the row wind
    /// down is retried for up to 10 s).
    pub fn alive(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            let greeting = match Client::open(self.addr, Some(PROBE)) {
                Ok((mut c, g)) => {
                    c.send(b"QUIT\r\n");
                    g
                }
                Err(_) => return false,
            };
            if greeting.starts_with("220 ") {
                return true;
            }
            if !greeting.starts_with("421") || Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Where an acknowledged message must end up.
#[derive(Clone, Debug)]
pub enum Dest {
    /// A Maildir on this host.
    Local(PathBuf),
    /// The recorder peer (outbound relay).
    Remote,
}

struct Sent {
    token: String,
    acked: bool,
    copies: usize,
    dest: Dest,
}

/// Which server a row is judged on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum On {
    Main,
    Aux,
    /// No server is meant to run (a start that must fail, a CLI command).
    Nothing,
}

/// What a row's body reports.
pub struct Outcome {
    pub reply: String,
    pub check: Option<Check>,
}

impl Outcome {
    pub fn reply(reply: impl Into<String>) -> Outcome {
        Outcome {
            reply: reply.into(),
            check: None,
        }
    }

    pub fn check(mut self, ok: bool, note: impl Into<String>) -> Outcome {
        self.check = Some(Check {
            ok,
            note: note.into(),
        });
        self
    }
}

/// The run: the main installation, an auxiliary one when a row needs its own, the recorder,
/// and the rows so far.
pub struct Ctx {
    pub sizes: Sizes,
    pub mta: PathBuf,
    pub scratch: PathBuf,
    pub main: Instance,
    pub aux: Option<Instance>,
    pub rec: Recorder,
    rows: Vec<Row>,
    seq: usize,
    sent: Vec<Sent>,
    seen: HashMap<PathBuf, Vec<String>>,
}

/// How long acknowledged mail may take to arrive before the row says "lost".
const DELIVERY_WAIT: Duration = Duration::from_secs(90);

impl Ctx {
    pub fn start(cfg: &Config) -> Result<Ctx, SecError> {
        let rec = Recorder::start()?;
        let root = cfg.scratch.join("main");
        super::setup::main_install(&cfg.mta, &root, rec.addr)?;
        let listen = if std::net::TcpListener::bind("[::]:0").is_ok() {
            "[::]:0"
        } else {
            "127.0.0.1:0"
        };
        let main = Instance::start(&cfg.mta, &root, listen)?;
        Ok(Ctx {
            sizes: cfg.sizes.clone(),
            mta: cfg.mta.clone(),
            scratch: cfg.scratch.clone(),
            main,
            aux: None,
            rec,
            rows: Vec::new(),
            seq: 0,
            sent: Vec::new(),
            seen: HashMap::new(),
        })
    }

    pub fn finish(self) -> Vec<Row> {
        self.rows
    }

    pub fn maildir(&self, user: &str) -> PathBuf {
        self.main.root.join("home").join(user).join("Maildir")
    }

    /// A token no other message carries.
    pub fn token(&mut self) -> String {
        self.seq += 1;
        format!("SECTOK-{}-", self.seq)
    }

    pub fn last_token(&self) -> String {
        format!("SECTOK-{}-", self.seq)
    }

    /// Replace the check of the row recorded last (a property measured after its delivery).
    pub fn amend_check(&mut self, ok: bool, note: impl Into<String>) {
        if let Some(r) = self.rows.last_mut() {
            r.check = Some(Check {
                ok,
                note: note.into(),
            });
        }
    }

    /// Remember a message: acknowledged ones must arrive `copies` times, others never.
    pub fn sent(&mut self, token: &str, acked: bool, copies: usize, dest: Dest) {
        self.sent.push(Sent {
            token: token.to_string(),
            acked,
            copies,
            dest,
        });
    }

    /// Run one row and record it with the state of the server it was aimed at.
    pub fn row(
        &mut self,
        category: &'static str,
        input: impl Into<String>,
        expect: Expect,
        on: On,
        body: impl FnOnce(&mut Ctx) -> Result<Outcome, SecError>,
    ) -> Result<(), SecError> {
        let out = body(self)?;
        let lost = self.settle();
        let inst = match on {
            On::Main => Some(&mut self.main),
            On::Aux => self.aux.as_mut(),
            On::Nothing => None,
        };
        let (alive, mem) = match inst {
            Some(i) => (Some(i.alive()), i.mem()),
            None => (None, None),
        };
        let row = Row {
            category,
            input: input.into(),
            expect,
            reply: out.reply,
            alive,
            mem,
            lost,
            check: out.check,
            instance: match on {
                On::Main => "main",
                On::Aux => "aux",
                On::Nothing => "-",
            },
        };
        eprintln!(
            "{:3} {:8} {}: {} → {} {:?} {:?}",
            self.rows.len() + 1,
            row.verdict(),
            row.category,
            super::render::cell(&row.input, 80),
            super::render::cell(&row.reply, 100),
            row.lost,
            row.check
                .as_ref()
                .map(|c| super::render::cell(&c.note, 150))
        );
        self.rows.push(row);
        Ok(())
    }

    /// Wait for every acknowledged message of the row, then count all of them.
    fn settle(&mut self) -> Lost {
        let sent = std::mem::take(&mut self.sent);
        if sent.is_empty() {
            return Lost::None;
        }
        let deadline = Instant::now() + DELIVERY_WAIT;
        for s in sent.iter().filter(|s| s.acked) {
            while self.copies(&s.dest, &s.token) < s.copies && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let mut bad = Vec::new();
        for s in &sent {
            let want = if s.acked { s.copies } else { 0 };
            let got = self.copies(&s.dest, &s.token);
            if got != want {
                let what = if s.acked { "acknowledged" } else { "refused" };
                bad.push(format!("{what} {} arrived {got}× (want {want})", s.token));
            }
        }
        if !bad.is_empty() {
            return Lost::Bad(bad.join("; "));
        }
        let acked = sent.iter().filter(|s| s.acked).count();
        Lost::Ok {
            acked,
            refused: sent.len() - acked,
        }
    }

    /// Messages at `dest` carrying `token`.
    pub fn copies(&mut self, dest: &Dest, token: &str) -> usize {
        match dest {
            Dest::Remote => self.rec.copies(token),
            Dest::Local(md) => {
                self.scan(md);
                let prefix = md.as_os_str().len();
                self.seen
                    .iter()
                    .filter(|(p, toks)| {
                        p.as_os_str().len() > prefix
                            && p.starts_with(md)
                            && toks.iter().any(|t| t == token)
                    })
                    .count()
            }
        }
    }

    /// Read the Maildir files not read before and remember their tokens.
    fn scan(&mut self, md: &Path) {
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(md.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if self.seen.contains_key(&p) {
                    continue;
                }
                if let Ok(data) = std::fs::read(&p) {
                    self.seen.insert(p, tokens(&data));
                }
            }
        }
    }
}

/// Every `SECTOK-<n>-` in a message.
pub fn tokens(data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let pat = b"SECTOK-";
    let mut i = 0;
    while i + pat.len() <= data.len() {
        if &data[i..i + pat.len()] != pat {
            i += 1;
            continue;
        }
        let start = i + pat.len();
        let end = start
            + data[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
        if end > start && data.get(end) == Some(&b'-') {
            let t = String::from_utf8_lossy(&data[i..=end]).into_owned();
            if !out.contains(&t) {
                out.push(t);
            }
        }
        i = end.max(i + 1);
    }
    out
}

/// A message's body lines after the token: CRLF-terminated text, dot-stuffed by the caller.
pub fn body(token: &str, extra: &str) -> String {
    format!("Subject: {token}\r\n\r\n{token}\r\n{extra}.\r\n")
}

impl Ctx {
    /// One transaction on `c`: MAIL, each RCPT, DATA and a body carrying a fresh token. The
    /// reply returned is the first that is not a success, else the one after the dot. The
    /// token is expected `rcpts.len()` times at `dest` if the dot got 250, never otherwise.
    pub fn message(
        &mut self,
        c: &mut Client,
        from: &str,
        rcpts: &[&str],
        dest: Dest,
        extra: &str,
    ) -> String {
        let token = self.token();
        let reply = transaction(c, from, rcpts, &body(&token, extra));
        self.sent(&token, reply.starts_with("250"), rcpts.len(), dest);
        reply
    }
}

/// MAIL, RCPTs and DATA: `None` once the server said 354, else the reply that refused.
pub fn start_data(c: &mut Client, from: &str, rcpts: &[&str]) -> Option<String> {
    let r = c.cmd(&format!("MAIL FROM:<{from}>"));
    if !r.starts_with('2') {
        return Some(r);
    }
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        if !r.starts_with('2') {
            return Some(r);
        }
    }
    let r = c.cmd("DATA");
    (!r.starts_with("354")).then_some(r)
}

/// MAIL, RCPTs, DATA and `data` (which ends with the final dot): the first failing reply or
/// the reply to the dot.
pub fn transaction(c: &mut Client, from: &str, rcpts: &[&str], data: &str) -> String {
    match start_data(c, from, rcpts) {
        Some(refused) => refused,
        None => c.cmd_raw(data.as_bytes()),
    }
}
