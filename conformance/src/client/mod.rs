//! The client side of the suite: a scripted SMTP server that an MTA relays into, and the
//! judge of what that client did (scenarios in `fixtures/rfc5321-client/`).
//!
//! For each scenario the runner makes the server answer as the scenario says, asks the
//! caller to hand the MTA one message (`inject`), waits for the events the scenario expects
//! (deliveries, bounces, retries; `kick` asks the MTA to retry now), then judges.

pub mod scenario;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::runner::{Outcome, Result1};
use scenario::{Expect, Scenario};
use server::{unstuff, Active, Conn, Shared, Txn};

/// The message a scenario asks the MTA to send.
#[derive(Debug, Clone)]
pub struct Injection {
    pub sender: String,
    pub rcpts: Vec<String>,
    /// The message, LF line ends (as `mta inject` or `sendmail` take it).
    pub message: String,
}

/// The lines every message carries: dot-stuffing and transparency are checked on them.
pub const BODY: &[&str] = &[
    "first line",
    ".leading dot",
    "..two dots",
    ".",
    "after a lone dot",
    " . space dot",
    "last line",
];

fn injection(sc: &Scenario, n: usize, run: &str, domain: &str) -> Injection {
    let addr = |p: &str| format!("{p}-{n}-{run}@{domain}");
    let mut message = format!("Subject: conform {} {run}\n\n", sc.id);
    for l in BODY {
        message.push_str(l);
        message.push('\n');
    }
    Injection {
        sender: addr("sender"),
        rcpts: sc.rcpts.iter().map(|p| addr(p)).collect(),
        message,
    }
}

/// What one scenario's connections came to.
struct Seen<'a> {
    conns: Vec<&'a Conn>,
    inj: &'a Injection,
}

impl Seen<'_> {
    fn txns(&self) -> impl Iterator<Item = &Txn> {
        self.conns.iter().flat_map(|c| c.txns.iter())
    }

    /// Accepted copies of the message for `rcpt`.
    fn copies(&self, rcpt: &str) -> usize {
        self.txns()
            .filter(|t| t.accepted && t.sender == self.inj.sender)
            .filter(|t| t.rcpts.iter().any(|r| r.eq_ignore_ascii_case(rcpt)))
            .count()
    }

    /// An accepted bounce to the sender that names `rcpt`.
    fn bounced(&self, rcpt: &str) -> bool {
        self.txns().any(|t| {
            t.accepted
                && t.sender.is_empty()
                && t.rcpts
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(&self.inj.sender))
                && String::from_utf8_lossy(&t.data)
                    .to_ascii_lowercase()
                    .contains(&rcpt.to_ascii_lowercase())
        })
    }

    fn rcpts(&self, prefix: &str) -> Vec<&String> {
        let p = format!("{prefix}-");
        self.inj
            .rcpts
            .iter()
            .filter(|r| r.starts_with(&p))
            .collect()
    }

    /// True once every delivery and bounce the scenario expects has happened.
    fn complete(&self, sc: &Scenario) -> bool {
        sc.expects.iter().all(|e| match e {
            Expect::Delivered(p) => self.rcpts(p).iter().all(|r| self.copies(r) > 0),
            Expect::Bounce(p) => self.rcpts(p).iter().all(|r| self.bounced(r)),
            Expect::Settled(p) => self
                .rcpts(p)
                .iter()
                .all(|r| self.copies(r) > 0 || self.bounced(r)),
            Expect::Retry => self.conns.len() >= 2,
            _ => true,
        }) && !self.conns.is_empty()
    }
}

/// A connection that carried another scenario's message (a late retry of an earlier one):
/// not this scenario's to judge.
fn foreign(c: &Conn, inj: &Injection) -> bool {
    c.txns
        .iter()
        .any(|t| !t.sender.is_empty() && t.sender != inj.sender)
}

/// Why the scenario failed (empty: it passed).
fn judge(sc: &Scenario, s: &Seen) -> Vec<String> {
    let mut why: Vec<String> = s.conns.iter().flat_map(|c| c.breaches.clone()).collect();
    let first = s.conns.first();
    for e in &sc.expects {
        let bad = match e {
            Expect::Delivered(p) => s.rcpts(p).into_iter().find_map(|r| match s.copies(r) {
                1 => None,
                n => Some(format!("{r}: {n} accepted copies, expected exactly one")),
            }),
            Expect::Bounce(p) => s.rcpts(p).into_iter().find_map(|r| {
                if s.copies(r) > 0 {
                    Some(format!("{r}: delivered although refused"))
                } else if !s.bounced(r) {
                    Some(format!("{r}: no bounce to the sender"))
                } else {
                    None
                }
            }),
            Expect::Settled(p) => s.rcpts(p).into_iter().find_map(|r| {
                let n = s.copies(r);
                match (n, s.bounced(r)) {
                    (1, false) | (0, true) => None,
                    _ => Some(format!("{r}: {n} copies, bounced: {}", s.bounced(r))),
                }
            }),
            Expect::Retry => (s.conns.len() < 2).then(|| "the client did not connect again".into()),
            Expect::Helo => (!s.conns.iter().any(|c| c.helo_after_refused_ehlo))
                .then(|| "no HELO after the refused EHLO".into()),
            Expect::NoMail => first
                .filter(|c| {
                    c.commands
                        .iter()
                        .any(|l| l.to_ascii_uppercase().starts_with("MAIL"))
                })
                .map(|_| "MAIL sent on the refused connection".into()),
            Expect::NoData => first
                .filter(|c| c.commands.iter().any(|l| l.eq_ignore_ascii_case("DATA")))
                .map(|_| "DATA sent although no recipient was accepted".into()),
            Expect::Quit => s
                .conns
                .iter()
                .find(|c| !c.server_closed && !c.quit)
                .map(|_| "a connection ended without QUIT".into()),
        };
        why.extend(bad);
    }
    for t in s.txns().filter(|t| t.sender == s.inj.sender && t.accepted) {
        let lines = unstuff(&t.data);
        if !lines.windows(BODY.len()).any(|w| w == BODY) {
            why.push("the message arrived altered (dot-stuffing or line ends)".into());
        }
    }
    if s.conns.is_empty() {
        why.push("the client never connected".into());
    }
    why.dedup();
    why
}

/// How the runner reaches the MTA under test.
pub struct Hooks<I, K> {
    /// Hand the MTA the message (it must relay it to the server's domain).
    pub inject: I,
    /// Ask the MTA to retry deferred mail now (may do nothing; retries then take longer).
    pub kick: K,
}

/// Play one scenario: the `n`th of the run `run`.
pub async fn play<I, K>(
    shared: &Arc<Shared>,
    sc: &Scenario,
    n: usize,
    (run, domain): (&str, &str),
    hooks: &mut Hooks<I, K>,
    timeout: Duration,
) -> Result1
where
    I: FnMut(&Injection) -> Result<(), String>,
    K: FnMut(),
{
    let inj = injection(sc, n, run, domain);
    let start = shared.lock().conns.len();
    shared.lock().active = Some(Active {
        sc: sc.clone(),
        conns: 0,
        rcpts: Default::default(),
    });
    let outcome = match (hooks.inject)(&inj) {
        Err(e) => Outcome::Fail(format!("could not hand the MTA the message: {e}")),
        Ok(()) => wait(shared, sc, &inj, start, hooks, timeout).await,
    };
    shared.lock().active = None;
    Result1 {
        id: sc.id.clone(),
        area: "client".into(),
        citation: sc.citation(),
        level: sc.level,
        says: sc.says.clone(),
        outcome,
    }
}

async fn wait<I, K: FnMut()>(
    shared: &Arc<Shared>,
    sc: &Scenario,
    inj: &Injection,
    start: usize,
    hooks: &mut Hooks<I, K>,
    timeout: Duration,
) -> Outcome {
    let deadline = Instant::now() + timeout + Duration::from_secs(sc.delay * 12);
    let mut kicked = Instant::now();
    loop {
        let changed = shared.changed.notified();
        let done = {
            let st = shared.lock();
            let seen = Seen {
                conns: st.conns[start..]
                    .iter()
                    .filter(|c| c.scenario.as_deref() == Some(&sc.id))
                    .filter(|c| !foreign(c, inj))
                    .collect(),
                inj,
            };
            let over = Instant::now() >= deadline;
            if (st.open == 0 && seen.complete(sc)) || over {
                let why = judge(sc, &seen);
                Some(match (why.is_empty(), over && !seen.complete(sc)) {
                    (true, false) => Outcome::Pass,
                    (_, true) => Outcome::Fail(format!(
                        "not within {} s: {}",
                        timeout.as_secs(),
                        why.join("; ")
                    )),
                    (false, false) => Outcome::Fail(why.join("; ")),
                })
            } else {
                None
            }
        };
        if let Some(o) = done {
            return o;
        }
        // A deferred message is retried on the MTA's schedule; the kick makes it now.
        if sc.expects_retry() && kicked.elapsed() >= Duration::from_secs(1) {
            (hooks.kick)();
            kicked = Instant::now();
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), changed).await;
    }
}

/// Play every scenario in order against the server on `listener`'s address.
pub async fn play_all<I, K>(
    listener: tokio::net::TcpListener,
    scenarios: &[Scenario],
    domain: &str,
    mut hooks: Hooks<I, K>,
    timeout: Duration,
) -> Vec<Result1>
where
    I: FnMut(&Injection) -> Result<(), String>,
    K: FnMut(),
{
    let shared = Arc::new(Shared::default());
    let srv = tokio::spawn(server::serve(listener, shared.clone(), domain.to_string()));
    let run = crate::run_token();
    let mut out = Vec::new();
    for (n, sc) in scenarios.iter().enumerate() {
        out.push(play(&shared, sc, n + 1, (&run, domain), &mut hooks, timeout).await);
    }
    srv.abort();
    out
}
