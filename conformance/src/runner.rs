//! Running the catalogue against a server: one fresh connection per dialogue, a deadline per
//! entry, an outcome per entry, totals per level.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::catalogue::{Codes, Entry, Expect, Level, Step};
use crate::play::{Mailbox, Player, Reply, Vars};
use crate::profile::Profile;
use crate::tls::Io;

/// What an entry came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Passed although the profile lists it as a deviation: the listing is stale.
    PassListed,
    Fail(String),
    /// Failed, and the profile explains why (the reason).
    Deviation(String),
    /// Not run: the reason (extension not advertised, no delivery access, slow).
    NotApplicable(String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::PassListed => "pass*",
            Outcome::Fail(_) => "FAIL",
            Outcome::Deviation(_) => "deviation",
            Outcome::NotApplicable(_) => "n/a",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Result1 {
    pub id: String,
    pub area: String,
    pub citation: String,
    pub level: Level,
    pub says: String,
    pub outcome: Outcome,
}

/// What the runner can do besides talking SMTP.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub mailbox: Option<Mailbox>,
    pub slow: bool,
    /// Time allowed per entry (plus any IDLE it asks for).
    pub timeout: Duration,
    pub only: Option<String>,
}

/// What the runner learnt of the server before the entries.
#[derive(Debug, Clone, Default)]
pub struct Server {
    /// EHLO keywords in the clear.
    pub keywords: Vec<String>,
    /// EHLO keywords inside TLS, when STARTTLS is offered and the handshake works.
    pub tls_keywords: Option<Vec<String>>,
}

fn expect(codes: &str) -> Step {
    Step::Expect(Expect {
        codes: Codes {
            negate: false,
            any: codes.split('/').map(str::to_string).collect(),
        },
        keywords: Vec::new(),
        shape: Vec::new(),
        texts: Vec::new(),
    })
}

/// The steps that take a fresh connection past the greeting, and into TLS when `tls`.
fn prelude(client: &str, tls: bool) -> Vec<Step> {
    let mut p = vec![expect("220")];
    if tls {
        p.extend([
            Step::Send(format!("EHLO {client}")),
            expect("250"),
            Step::Send("STARTTLS".into()),
            expect("220"),
            Step::Tls,
        ]);
    }
    p
}

/// The server's EHLO reply on one probe connection (inside TLS with `tls`).
pub async fn probe(
    stream: Box<dyn Io>,
    vars: &Vars,
    profile: &Profile,
    timeout: Duration,
    tls: bool,
) -> Result<Reply, String> {
    let mut p = Player::new(stream, vars, profile, None, Instant::now() + timeout);
    p.play(&prelude(&vars.client, tls)).await?;
    p.play(&[Step::Send(format!("EHLO {}", vars.client))])
        .await?;
    let r = p.reply().await?;
    let _ = p.play(&[Step::Send("QUIT".into())]).await;
    Ok(r)
}

fn applies(e: &Entry, kws: &[String], vars: &Vars, o: &Options) -> Option<String> {
    if let Some(x) = e.ext.iter().find(|x| !kws.contains(x)) {
        return Some(format!("{x} not advertised"));
    }
    for n in &e.needs {
        match n.as_str() {
            "delivery" if o.mailbox.is_none() => return Some("needs delivery access".into()),
            "size-limit" if vars.sizemax == 0 => return Some("no SIZE limit advertised".into()),
            "credentials" if vars.user.is_empty() => {
                return Some("needs credentials (--auth-user)".into())
            }
            "delivery" | "size-limit" | "credentials" => {}
            _ => return Some(format!("needs {n}")),
        }
    }
    (e.slow && !o.slow).then(|| "slow (run with --slow)".to_string())
}

/// Run one entry: each dialogue on a fresh stream from `connect` (stream, client address).
pub async fn run_entry<S, F, Fut>(
    e: &Entry,
    connect: &mut F,
    base: &Vars,
    server: &Server,
    profile: &Profile,
    o: &Options,
) -> Outcome
where
    S: Io + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<(S, String)>>,
{
    // A `tls` entry runs inside TLS where the server offers it.
    let tls = e.tls && server.tls_keywords.is_some();
    let kws = match (&server.tls_keywords, tls) {
        (Some(k), true) => k,
        _ => &server.keywords,
    };
    if let Some(why) = applies(e, kws, base, o) {
        return Outcome::NotApplicable(why);
    }
    let idle: u64 = e
        .dialogues
        .iter()
        .flatten()
        .map(|s| match s {
            crate::catalogue::Step::Idle(n) => *n,
            _ => 0,
        })
        .sum();
    let deadline = Instant::now() + o.timeout + Duration::from_secs(idle);
    let mut failure = None;
    for (i, d) in e.dialogues.iter().enumerate() {
        let conn = tokio::time::timeout_at(deadline, connect()).await;
        let (stream, ip) = match conn {
            Ok(Ok(c)) => c,
            Ok(Err(err)) => return Outcome::Fail(format!("connect: {err}")),
            Err(_) => return Outcome::Fail("connect: timed out".into()),
        };
        let mut vars = base.clone();
        vars.ip = ip;
        vars.token = format!("{}-{}-{}", e.id, i + 1, base.token);
        let mut p = Player::new(
            Box::new(stream),
            &vars,
            profile,
            o.mailbox.as_ref(),
            deadline,
        );
        let mut r = Ok(());
        if e.tls {
            r = p.play(&prelude(&vars.client, tls)).await;
        }
        if r.is_ok() {
            r = p.play(d).await;
        }
        // Leave politely where the dialogue did not end the session itself.
        let _ = tokio::time::timeout(Duration::from_millis(200), p_shutdown(&mut p)).await;
        if let Err(why) = r {
            let head = if e.dialogues.len() > 1 {
                format!("dialogue {}: ", i + 1)
            } else {
                String::new()
            };
            failure = Some(format!("{head}{why}\n    {}", p.t.lines.join("\n    ")));
            break;
        }
    }
    let listed = profile.deviations.get(&e.id);
    match (failure, listed) {
        (None, None) => Outcome::Pass,
        (None, Some(_)) => Outcome::PassListed,
        (Some(_), Some(why)) => Outcome::Deviation(why.clone()),
        (Some(f), None) => Outcome::Fail(f),
    }
}

async fn p_shutdown(p: &mut Player<'_>) {
    let _ = p.stream().shutdown().await;
}

/// Run every entry (filtered by `only`), in order.
pub async fn run_all<S, F, Fut>(
    entries: &[Entry],
    mut connect: F,
    base: &Vars,
    profile: &Profile,
    o: &Options,
) -> Result<Vec<Result1>, String>
where
    S: Io + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<(S, String)>>,
{
    let (s, _) = connect().await.map_err(|e| format!("connect: {e}"))?;
    let ehlo = probe(Box::new(s), base, profile, o.timeout, false).await?;
    let mut server = Server {
        keywords: ehlo.keywords(),
        tls_keywords: None,
    };
    if server.keywords.iter().any(|k| k == "STARTTLS") {
        let (s, _) = connect().await.map_err(|e| format!("connect: {e}"))?;
        // A failing handshake leaves the `tls` entries to run in the clear (and fail there
        // if they need what TLS gives).
        if let Ok(r) = probe(Box::new(s), base, profile, o.timeout, true).await {
            server.tls_keywords = Some(r.keywords());
        }
    }
    let mut vars = base.clone();
    vars.sizemax = ehlo.size().unwrap_or(0);
    let mut out = Vec::new();
    for e in entries {
        if o.only.as_ref().is_some_and(|x| !e.id.contains(x.as_str())) {
            continue;
        }
        let outcome = run_entry(e, &mut connect, &vars, &server, profile, o).await;
        out.push(Result1 {
            id: e.id.clone(),
            area: e.area.clone(),
            citation: e.citation(),
            level: e.level,
            says: e.says.clone(),
            outcome,
        });
    }
    Ok(out)
}

/// Counts per level and outcome label.
pub fn totals(rs: &[Result1]) -> BTreeMap<(Level, &'static str), usize> {
    let mut t = BTreeMap::new();
    for r in rs {
        *t.entry((r.level, r.outcome.label())).or_insert(0) += 1;
    }
    t
}

/// True when a MUST failed (deviations excepted): the run fails.
pub fn must_failed(rs: &[Result1]) -> bool {
    rs.iter()
        .any(|r| r.level == Level::Must && matches!(r.outcome, Outcome::Fail(_)))
}
