//! The RFC 5321 requirement catalogue (`fixtures/rfc5321/catalogue/*.txt`).
//!
//! One file per area; the file's stem is the area. An entry:
//!
//! ```text
//! [ehlo.reply-250] 4.1.1.1 MUST ext:SIZE needs:delivery slow
//! One-line statement of the requirement.
//! S: 220
//! C: EHLO ${client}
//! S: 250 +PIPELINING | 250-${domain}
//! ---
//! (a second dialogue, on a fresh connection)
//! ```
//!
//! The header holds the id, the section (bare = RFC 5321, `RFC1870/6` = another RFC), the level
//! and optional flags: `ext:KEYWORD` (only if the server advertises it in EHLO), `needs:delivery`
//! (reads the delivered message), `needs:size-limit` (a numeric SIZE), `needs:credentials` (a
//! user and password, `--auth-user`), `slow` (minutes long), and `tls`: the dialogue starts
//! after the greeting, inside TLS when the server offers STARTTLS (its `ext:` keywords are
//! then those of the EHLO reply inside TLS), in the clear when it does not.
//!
//! Steps:
//! - `C: text` sends text and CRLF; `R: bytes` / `R*N: bytes` sends raw bytes (escapes
//!   `\r \n \t \\ \0 \xNN`), N times;
//! - `S: codes [+KEY] [-KEY] [| text] [| @tag text]` reads one whole reply (all its lines).
//!   `codes` is `250`, `2xx`, `503/554`, `!500/501` (none of) or `any`; `+KEY`/`-KEY`: an
//!   EHLO keyword present/absent; `=form`, `=unique`, `=single`, `=short`: see
//!   [`Expect::shape`]; `| text`: for text profiles, the reply (lines joined by `\n`)
//!   starts with text; `@tag` limits a text to profiles with that tag;
//! - `CLOSE`: the server closes the connection; `IDLE n`: it stays silent and open n seconds;
//! - `TLS`: a TLS handshake as the client (after the server's `220` to STARTTLS); the steps
//!   after it run inside TLS;
//! - `M: check`: a check on the delivered message (see [`MailCheck`]);
//! - `LOOP n` ... `END` repeats the lines between.
//!
//! Variables: `${domain}`, `${rcpt}`, `${sender}`, `${client}`, `${ip}`, `${token}` (unique per
//! dialogue), `${sizemax}`/`${sizeover}` (the advertised SIZE and one more), `${x:N}` (N `x`),
//! `${user}`, `${authplain}` (base64 of NUL user NUL password, the configured credentials),
//! `${plain:USER:PASS}` (the same for these) and `${b64:TEXT}`.

use std::fmt;
use std::path::Path;

use crate::unescape;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Must,
    Should,
    May,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        match s {
            "MUST" => Some(Level::Must),
            "SHOULD" => Some(Level::Should),
            "MAY" => Some(Level::May),
            _ => None,
        }
    }
    pub const ALL: [Level; 3] = [Level::Must, Level::Should, Level::May];
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
            Level::May => "MAY",
        })
    }
}

/// Accepted reply codes: alternatives of three-character patterns (`x` matches any digit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codes {
    pub negate: bool,
    pub any: Vec<String>,
}

impl Codes {
    fn parse(s: &str) -> Option<Codes> {
        if s == "any" {
            return Some(Codes {
                negate: true,
                any: Vec::new(),
            });
        }
        let (negate, s) = match s.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let any: Vec<String> = s.split('/').map(str::to_string).collect();
        let ok = any.iter().all(|p| {
            p.len() == 3
                && p.bytes().enumerate().all(|(i, b)| {
                    b == b'x'
                        || (i == 0 && (b'2'..=b'5').contains(&b))
                        || (i > 0 && b.is_ascii_digit())
                })
        });
        ok.then_some(Codes { negate, any })
    }

    pub fn matches(&self, code: &str) -> bool {
        let hit = self.any.iter().any(|p| {
            p.bytes()
                .zip(code.bytes())
                .all(|(p, c)| p == b'x' || p == c)
        });
        hit != self.negate
    }
}

impl fmt::Display for Codes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negate && self.any.is_empty() {
            return f.write_str("any");
        }
        write!(
            f,
            "{}{}",
            if self.negate { "!" } else { "" },
            self.any.join("/")
        )
    }
}

/// One expected reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub codes: Codes,
    /// EHLO keywords that must be (true) or must not be (false) advertised.
    pub keywords: Vec<(String, bool)>,
    /// Checks of the reply's shape: `=form` (EHLO lines are keyword [params]), `=unique`
    /// (no keyword twice), `=single` (one line), `=short` (lines of at most 512 octets).
    pub shape: Vec<String>,
    /// Exact texts for text profiles: (tag or empty for all, text prefix).
    pub texts: Vec<(String, String)>,
}

/// A check on the delivered message (lines compared without their line ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailCheck {
    /// `M: first TEXT`: the first line starts with TEXT.
    First(String),
    /// `M: has TEXT` / `M: lacks TEXT`: a line equal to TEXT exists / does not.
    Has(String, bool),
    /// `M: atleast N PREFIX`: at least N header lines start with PREFIX (any case).
    AtLeast(usize, String),
    /// `M: above A :: B`: the first line starting with A comes before the first with B.
    Above(String, String),
    /// `M: field NAME TEXT`: some NAME header field (unfolded) contains TEXT.
    Field(String, String),
    /// `M: zone NAME`: the first (topmost) NAME field ends in a numeric zone `+hhmm`/`-hhmm`.
    Zone(String),
    /// `M: localzone NAME`: ... and that zone is not `-0000` (local time, not "unknown").
    LocalZone(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Send(String),
    Raw(Vec<u8>),
    Expect(Expect),
    Close,
    Idle(u64),
    Mail(MailCheck),
    /// The client's TLS handshake.
    Tls,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub area: String,
    pub section: String,
    pub level: Level,
    pub says: String,
    /// EHLO keywords the server must advertise for the entry to apply.
    pub ext: Vec<String>,
    /// Capabilities the runner must have: `delivery`, `size-limit`.
    pub needs: Vec<String>,
    pub slow: bool,
    /// Run inside TLS when the server offers STARTTLS (after the greeting either way).
    pub tls: bool,
    pub dialogues: Vec<Vec<Step>>,
}

impl Entry {
    /// "RFC 5321 §4.1.1.1" or "RFC 1870 §6".
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
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("{file}:{line}: {why}")]
    Parse {
        file: String,
        line: usize,
        why: String,
    },
    #[error("duplicate entry id {0}")]
    Duplicate(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn parse_header(area: &str, h: &str) -> Result<Entry, String> {
    let (id, rest) = h
        .strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .ok_or("header needs [id]")?;
    let mut words = rest.split_whitespace();
    let section = words.next().ok_or("header needs a section")?.to_string();
    let level = words
        .next()
        .and_then(Level::parse)
        .ok_or("header needs MUST, SHOULD or MAY")?;
    let mut e = Entry {
        id: id.to_string(),
        area: area.to_string(),
        section,
        level,
        says: String::new(),
        ext: Vec::new(),
        needs: Vec::new(),
        slow: false,
        tls: false,
        dialogues: vec![Vec::new()],
    };
    for w in words {
        if let Some(x) = w.strip_prefix("ext:") {
            e.ext.push(x.to_ascii_uppercase());
        } else if let Some(n) = w.strip_prefix("needs:") {
            e.needs.push(n.to_string());
        } else if w == "slow" {
            e.slow = true;
        } else if w == "tls" {
            e.tls = true;
        } else {
            return Err(format!("unknown flag {w:?}"));
        }
    }
    Ok(e)
}

fn parse_expect(s: &str) -> Result<Expect, String> {
    let mut parts = s.split(" | ");
    let head = parts.next().unwrap_or_default();
    let mut words = head.split_whitespace();
    let codes = words.next().ok_or("S: needs reply codes")?;
    let codes = Codes::parse(codes).ok_or_else(|| format!("bad reply codes {codes:?}"))?;
    let mut keywords = Vec::new();
    let mut shape = Vec::new();
    for w in words {
        match (
            w.strip_prefix('+'),
            w.strip_prefix('-'),
            w.strip_prefix('='),
        ) {
            (Some(k), _, _) => keywords.push((k.to_ascii_uppercase(), true)),
            (_, Some(k), _) => keywords.push((k.to_ascii_uppercase(), false)),
            (_, _, Some(s)) if ["form", "unique", "single", "short"].contains(&s) => {
                shape.push(s.to_string())
            }
            _ => return Err(format!("bad word {w:?} in S:")),
        }
    }
    let texts = parts
        .map(
            |p| match p.strip_prefix('@').and_then(|r| r.split_once(' ')) {
                Some((tag, t)) => (tag.to_string(), t.to_string()),
                None => (String::new(), p.to_string()),
            },
        )
        .collect();
    Ok(Expect {
        codes,
        keywords,
        shape,
        texts,
    })
}

fn parse_mail(s: &str) -> Result<MailCheck, String> {
    let (verb, arg) = s
        .split_once(' ')
        .ok_or("M: needs a check and an argument")?;
    let arg = arg.to_string();
    Ok(match verb {
        "first" => MailCheck::First(arg),
        "has" => MailCheck::Has(arg, true),
        "lacks" => MailCheck::Has(arg, false),
        "atleast" => {
            let (n, p) = arg.split_once(' ').ok_or("atleast N PREFIX")?;
            MailCheck::AtLeast(n.parse().map_err(|_| "bad count")?, p.to_string())
        }
        "above" => {
            let (a, b) = arg.split_once(" :: ").ok_or("above A :: B")?;
            MailCheck::Above(a.to_string(), b.to_string())
        }
        "field" => {
            let (n, t) = arg.split_once(' ').ok_or("field NAME TEXT")?;
            MailCheck::Field(n.to_string(), t.to_string())
        }
        "zone" => MailCheck::Zone(arg),
        "localzone" => MailCheck::LocalZone(arg),
        _ => return Err(format!("unknown mail check {verb:?}")),
    })
}

fn parse_step(line: &str) -> Result<Step, String> {
    let body = |s: &str| s.strip_prefix(' ').unwrap_or(s).to_string();
    if line == "CLOSE" {
        Ok(Step::Close)
    } else if line == "TLS" {
        Ok(Step::Tls)
    } else if let Some(n) = line.strip_prefix("IDLE ") {
        Ok(Step::Idle(n.parse().map_err(|_| "bad IDLE seconds")?))
    } else if let Some(t) = line.strip_prefix("C:") {
        Ok(Step::Send(body(t)))
    } else if let Some(t) = line.strip_prefix("S:") {
        parse_expect(&body(t)).map(Step::Expect)
    } else if let Some(t) = line.strip_prefix("M:") {
        parse_mail(&body(t)).map(Step::Mail)
    } else if let Some(rest) = line.strip_prefix('R') {
        let (count, t) = rest.split_once(':').ok_or("R needs ':'")?;
        let n = match count.strip_prefix('*') {
            Some(c) => c.parse::<usize>().map_err(|_| "bad repeat count")?,
            None if count.is_empty() => 1,
            None => return Err("bad R directive".into()),
        };
        Ok(Step::Raw(unescape(&body(t))?.repeat(n)))
    } else {
        Err(format!("unknown step {line:?}"))
    }
}

/// Expand `LOOP n` ... `END` blocks (not nested) into plain lines.
fn expand_loops(lines: Vec<(usize, &str)>) -> Result<Vec<(usize, &str)>, (usize, String)> {
    let mut out = Vec::new();
    let mut block: Option<(usize, Vec<(usize, &str)>)> = None;
    for (n, l) in lines {
        match (&mut block, l.strip_prefix("LOOP ")) {
            (None, Some(c)) => {
                let c = c
                    .trim()
                    .parse()
                    .map_err(|_| (n, "bad LOOP count".to_string()))?;
                block = Some((c, Vec::new()));
            }
            (Some(_), Some(_)) => return Err((n, "nested LOOP".into())),
            (Some(_), None) if l == "END" => {
                let (c, body) = block.take().unwrap_or_default();
                for _ in 0..c {
                    out.extend(body.iter().copied());
                }
            }
            (Some((_, body)), None) => body.push((n, l)),
            (None, None) => out.push((n, l)),
        }
    }
    match block {
        Some(_) => Err((0, "LOOP without END".into())),
        None => Ok(out),
    }
}

/// Parse one catalogue file; `area` is its stem.
pub fn parse(area: &str, file: &str, text: &str) -> Result<Vec<Entry>, CatalogueError> {
    let err = |line: usize, why: String| CatalogueError::Parse {
        file: file.to_string(),
        line,
        why,
    };
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.trim_end()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let lines = expand_loops(lines).map_err(|(n, w)| err(n, w))?;
    let mut entries: Vec<Entry> = Vec::new();
    for (n, l) in lines {
        if l.starts_with('[') {
            entries.push(parse_header(area, l).map_err(|w| err(n, w))?);
            continue;
        }
        let e = entries
            .last_mut()
            .ok_or_else(|| err(n, "text before the first entry".into()))?;
        if e.says.is_empty() {
            e.says = l.to_string();
        } else if l == "---" {
            e.dialogues.push(Vec::new());
        } else {
            let step = parse_step(l).map_err(|w| err(n, w))?;
            if let Some(d) = e.dialogues.last_mut() {
                d.push(step);
            }
        }
    }
    if let Some(e) = entries
        .iter()
        .find(|e| e.dialogues.iter().any(Vec::is_empty))
    {
        return Err(err(0, format!("{}: empty dialogue", e.id)));
    }
    Ok(entries)
}

/// Every `*.txt` file of a catalogue directory, in file then entry order; ids are unique.
pub fn load(dir: &Path) -> Result<Vec<Entry>, CatalogueError> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let mut all: Vec<Entry> = Vec::new();
    for p in files {
        let area = p
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&p)?;
        all.extend(parse(&area, &p.display().to_string(), &text)?);
    }
    let mut ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(CatalogueError::Duplicate(w[0].to_string()));
    }
    Ok(all)
}
