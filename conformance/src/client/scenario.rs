//! Client scenarios (`fixtures/rfc5321-client/*.txt`): how the scripted server answers an SMTP
//! client that relays a message into it, and what the client must then do.
//!
//! ```text
//! [client.rcpt-550-bounces] 6.1 MUST
//! A 5xx to RCPT is permanent: the client bounces the message to its sender, never retries.
//! rcpts: bad
//! reply: rcpt bad 550 no such user
//! expect: bounce bad
//! ```
//!
//! - `rcpts: PREFIX...`: the message goes to one recipient per prefix, `PREFIX-ID@DOMAIN`
//!   (default `ok`).
//! - `reply: STAGE [PREFIX] CODE [TEXT]`: the server's reply at STAGE (`greeting`, `ehlo`,
//!   `helo`, `mail`, `rcpt`, `data`, `end`) on the first attempt: the first connection, or
//!   for `rcpt` the first RCPT of a recipient whose local part starts with PREFIX. `\n` in
//!   TEXT makes a multiline reply (`250 a\nb` is `250-a`, `250 b`). `always` after the stage
//!   makes it apply to every attempt. Other replies accept; `421` also closes the connection.
//! - `ehlo: LINE...`: the keywords after the first line of the EHLO reply (default `8BITMIME`).
//! - `delay: SECONDS`: wait that long before every reply (a slow server).
//! - `expect: WHAT`: `delivered PREFIX` (every such recipient gets the message exactly once,
//!   intact), `bounce PREFIX` (the sender gets a bounce naming the recipient, and it gets no
//!   copy), `settled PREFIX` (delivered once after retries, or bounced), `retry` (the client connects again, the runner's kick permitting), `helo` (HELO
//!   after the refused EHLO), `no-mail` (the first connection carried no MAIL), `no-data` (no
//!   DATA), `quit` (every connection the server did not close ends with QUIT).
//!
//! Checked on every scenario: command lines and message lines end in CRLF only, command lines
//! of at most 512 octets and text lines of at most 1000 (RFC 5321 4.5.3.1), no command
//! before the greeting, and none before the previous reply without PIPELINING.

use std::path::Path;

use crate::catalogue::Level;

/// Where in the session a reply is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Greeting,
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    End,
}

impl Stage {
    fn parse(s: &str) -> Option<Stage> {
        Some(match s {
            "greeting" => Stage::Greeting,
            "ehlo" => Stage::Ehlo,
            "helo" => Stage::Helo,
            "mail" => Stage::Mail,
            "rcpt" => Stage::Rcpt,
            "data" => Stage::Data,
            "end" => Stage::End,
            _ => return None,
        })
    }
}

/// A scripted reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub stage: Stage,
    /// For `rcpt`: the recipients' prefix.
    pub who: Option<String>,
    pub code: u16,
    pub text: String,
    /// Every attempt, not only the first.
    pub always: bool,
}

/// What the client must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Delivered(String),
    Bounce(String),
    /// Delivered once (after retries) or bounced: either is the client's choice.
    Settled(String),
    Retry,
    Helo,
    NoMail,
    NoData,
    Quit,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub id: String,
    pub section: String,
    pub level: Level,
    pub says: String,
    pub rcpts: Vec<String>,
    pub rules: Vec<Rule>,
    pub ehlo: Vec<String>,
    pub delay: u64,
    pub expects: Vec<Expect>,
}

impl Scenario {
    /// "RFC 5321 §4.5.2" or "RFC 2920 §3.1".
    pub fn citation(&self) -> String {
        match self
            .section
            .strip_prefix("RFC")
            .and_then(|r| r.split_once('/'))
        {
            Some((rfc, sec)) => format!("RFC {rfc} §{sec}"),
            None => format!("RFC 5321 §{}", self.section),
        }
    }

    /// The rule for this stage and attempt (`first`), and recipient prefix for RCPT.
    pub fn rule(&self, stage: Stage, first: bool, rcpt: Option<&str>) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            r.stage == stage
                && (first || r.always)
                && match (&r.who, rcpt) {
                    (Some(w), Some(local)) => local.starts_with(w.as_str()),
                    (None, _) => true,
                    (Some(_), None) => false,
                }
        })
    }

    /// Whether the runner must kick the MTA into retrying.
    pub fn expects_retry(&self) -> bool {
        self.expects
            .iter()
            .any(|e| matches!(e, Expect::Retry | Expect::Settled(_)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{file}:{line}: {why}")]
    Parse {
        file: String,
        line: usize,
        why: String,
    },
    #[error("duplicate scenario id {0}")]
    Duplicate(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn header(h: &str) -> Result<Scenario, String> {
    let (id, rest) = h
        .strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .ok_or("header needs [id]")?;
    let mut w = rest.split_whitespace();
    let section = w.next().ok_or("header needs a section")?.to_string();
    let level = match w.next() {
        Some("MUST") => Level::Must,
        Some("SHOULD") => Level::Should,
        Some("MAY") => Level::May,
        _ => return Err("header needs MUST, SHOULD or MAY".into()),
    };
    Ok(Scenario {
        id: id.to_string(),
        section,
        level,
        says: String::new(),
        rcpts: Vec::new(),
        rules: Vec::new(),
        ehlo: vec!["8BITMIME".into()],
        delay: 0,
        expects: Vec::new(),
    })
}

fn rule(s: &str) -> Result<Rule, String> {
    let mut w = s.split_whitespace().peekable();
    let stage = w
        .next()
        .and_then(Stage::parse)
        .ok_or("reply: needs a stage")?;
    let always = w.next_if_eq(&"always").is_some();
    let who = match w.peek() {
        Some(x) if !x.bytes().all(|b| b.is_ascii_digit()) => w.next().map(str::to_string),
        _ => None,
    };
    let code: u16 = w
        .next()
        .and_then(|c| c.parse().ok())
        .filter(|c| (200..600).contains(c))
        .ok_or("reply: needs a code 200-599")?;
    let text = w.collect::<Vec<_>>().join(" ");
    Ok(Rule {
        stage,
        who,
        code,
        text,
        always,
    })
}

fn expect(s: &str) -> Result<Expect, String> {
    let (what, arg) = s.split_once(' ').unwrap_or((s, ""));
    let arg = arg.trim().to_string();
    Ok(match (what, arg.is_empty()) {
        ("delivered", false) => Expect::Delivered(arg),
        ("bounce", false) => Expect::Bounce(arg),
        ("settled", false) => Expect::Settled(arg),
        ("retry", true) => Expect::Retry,
        ("helo", true) => Expect::Helo,
        ("no-mail", true) => Expect::NoMail,
        ("no-data", true) => Expect::NoData,
        ("quit", true) => Expect::Quit,
        _ => return Err(format!("unknown expectation {s:?}")),
    })
}

fn line(sc: &mut Scenario, l: &str) -> Result<(), String> {
    let (key, v) = l.split_once(':').ok_or("expected KEY: VALUE")?;
    let v = v.trim();
    match key {
        "rcpts" => sc.rcpts = v.split_whitespace().map(str::to_string).collect(),
        "reply" => sc.rules.push(rule(v)?),
        "ehlo" => sc.ehlo = v.split_whitespace().map(str::to_string).collect(),
        "delay" => sc.delay = v.parse().map_err(|_| "delay: seconds")?,
        "expect" => sc.expects.push(expect(v)?),
        _ => return Err(format!("unknown key {key:?}")),
    }
    Ok(())
}

/// Parse one scenario file.
pub fn parse(file: &str, text: &str) -> Result<Vec<Scenario>, ScenarioError> {
    let err = |line: usize, why: String| ScenarioError::Parse {
        file: file.to_string(),
        line,
        why,
    };
    let mut out: Vec<Scenario> = Vec::new();
    for (n, l) in text.lines().enumerate().map(|(n, l)| (n + 1, l.trim_end())) {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.starts_with('[') {
            out.push(header(l).map_err(|w| err(n, w))?);
            continue;
        }
        let sc = out
            .last_mut()
            .ok_or_else(|| err(n, "text before the first scenario".into()))?;
        if sc.says.is_empty() {
            sc.says = l.to_string();
        } else {
            line(sc, l).map_err(|w| err(n, w))?;
        }
    }
    for sc in &mut out {
        if sc.rcpts.is_empty() {
            sc.rcpts = vec!["ok".into()];
        }
        if sc.expects.is_empty() {
            return Err(err(0, format!("{}: no expectation", sc.id)));
        }
    }
    Ok(out)
}

/// Every `*.txt` of a directory, in file order; ids unique.
pub fn load(dir: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let mut all: Vec<Scenario> = Vec::new();
    for p in files {
        let text = std::fs::read_to_string(&p)?;
        all.extend(parse(&p.display().to_string(), &text)?);
    }
    let mut ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(ScenarioError::Duplicate(w[0].to_string()));
    }
    Ok(all)
}
