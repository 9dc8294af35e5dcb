//! Playing one catalogue dialogue over a byte stream, with a deadline: every wait is for a
//! reply, a close or a delivered file, never a fixed sleep.

use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use crate::catalogue::{Expect, MailCheck, Step};
use crate::profile::Profile;
use crate::tls::Io;

/// Values substituted into the dialogues.
#[derive(Debug, Clone)]
pub struct Vars {
    pub domain: String,
    pub rcpt: String,
    pub sender: String,
    pub client: String,
    /// The client's address as the server sees it.
    pub ip: String,
    pub token: String,
    /// The SIZE the server advertised (0: none).
    pub sizemax: u64,
    /// Credentials for AUTH (`needs:credentials`); empty: none.
    pub user: String,
    pub pass: String,
}

/// base64 of the SASL PLAIN message (RFC 4616): NUL user NUL password.
fn plain(user: &str, pass: &str) -> String {
    STANDARD.encode(format!("\0{user}\0{pass}"))
}

impl Vars {
    /// Replace `${name}` and `${x:N}`; unknown names are left as they are.
    pub fn subst(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let Some(j) = rest[i..].find('}') else {
                out.push_str(&rest[i..]);
                return out;
            };
            let name = &rest[i + 2..i + j];
            match self.value(name) {
                Some(v) => out.push_str(&v),
                None => out.push_str(&rest[i..=i + j]),
            }
            rest = &rest[i + j + 1..];
        }
        out.push_str(rest);
        out
    }

    fn value(&self, name: &str) -> Option<String> {
        if let Some(n) = name.strip_prefix("x:") {
            // A count, or the name of a numeric variable (`${x:sizeover}`).
            let n = n
                .parse::<usize>()
                .ok()
                .or_else(|| self.value(n)?.parse().ok())?;
            return Some("x".repeat(n));
        }
        if let Some(t) = name.strip_prefix("b64:") {
            return Some(STANDARD.encode(t));
        }
        if let Some((u, p)) = name.strip_prefix("plain:").and_then(|r| r.split_once(':')) {
            return Some(plain(u, p));
        }
        Some(match name {
            "domain" => self.domain.clone(),
            "rcpt" => self.rcpt.clone(),
            "sender" => self.sender.clone(),
            "client" => self.client.clone(),
            "ip" => self.ip.clone(),
            "token" => self.token.clone(),
            "sizemax" => self.sizemax.to_string(),
            "sizeover" => (self.sizemax + 1).to_string(),
            "user" => self.user.clone(),
            "authplain" => plain(&self.user, &self.pass),
            _ => return None,
        })
    }
}

/// Where delivered messages can be read (a Maildir), for `M:` checks.
#[derive(Debug, Clone)]
pub struct Mailbox(pub PathBuf);

impl Mailbox {
    /// The delivered message containing `token`, once it is there (polled until `deadline`).
    async fn find(&self, token: &str, deadline: Instant) -> Option<String> {
        loop {
            for sub in ["new", "cur"] {
                let Ok(rd) = std::fs::read_dir(self.0.join(sub)) else {
                    continue;
                };
                for e in rd.flatten() {
                    if let Ok(b) = std::fs::read(e.path()) {
                        let text = String::from_utf8_lossy(&b).into_owned();
                        if text.contains(token) {
                            return Some(text);
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Delivery is asynchronous: look again shortly (bounded by the deadline).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A whole reply: its lines without line ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply(pub Vec<String>);

impl Reply {
    pub fn code(&self) -> &str {
        self.0.first().and_then(|l| l.get(..3)).unwrap_or("")
    }

    /// EHLO keywords: the first word of every line after the first, uppercased.
    pub fn keywords(&self) -> Vec<String> {
        self.0
            .iter()
            .skip(1)
            .filter_map(|l| l.get(4..)?.split_whitespace().next())
            .map(str::to_ascii_uppercase)
            .collect()
    }

    /// The SIZE parameter, if advertised with one.
    pub fn size(&self) -> Option<u64> {
        self.0.iter().skip(1).find_map(|l| {
            let mut w = l.get(4..)?.split_whitespace();
            w.next()
                .filter(|k| k.eq_ignore_ascii_case("SIZE"))
                .and(w.next()?.parse().ok())
        })
    }
}

/// What a dialogue saw, and (on failure) why it failed.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    pub lines: Vec<String>,
}

impl Transcript {
    fn push(&mut self, dir: &str, text: &str) {
        let mut t: String = text.chars().take(100).collect();
        if text.len() > 100 {
            t.push_str(&format!("... ({} bytes)", text.len()));
        }
        self.lines.push(format!("{dir} {t}"));
    }
}

pub struct Player<'a> {
    s: BufReader<Box<dyn Io>>,
    pub vars: &'a Vars,
    pub profile: &'a Profile,
    pub mailbox: Option<&'a Mailbox>,
    pub deadline: Instant,
    pub t: Transcript,
    mail: Option<String>,
}

impl<'a> Player<'a> {
    pub fn new(
        stream: Box<dyn Io>,
        vars: &'a Vars,
        profile: &'a Profile,
        mailbox: Option<&'a Mailbox>,
        deadline: Instant,
    ) -> Self {
        Player {
            s: BufReader::new(stream),
            vars,
            profile,
            mailbox,
            deadline,
            t: Transcript::default(),
            mail: None,
        }
    }

    pub fn stream(&mut self) -> &mut Box<dyn Io> {
        self.s.get_mut()
    }

    /// Play every step; `Err` says which failed and why.
    /// An expected 421 ends the dialogue early: the server is closing, the rest cannot happen.
    pub async fn play(&mut self, steps: &[Step]) -> Result<(), String> {
        for (i, st) in steps.iter().enumerate() {
            let closing = self
                .step(st)
                .await
                .map_err(|why| format!("step {}: {why}", i + 1))?;
            if closing {
                self.t
                    .lines
                    .push("(421: the rest of the dialogue is skipped)".into());
                break;
            }
        }
        Ok(())
    }

    /// Play one step; true when it was an accepted 421.
    async fn step(&mut self, st: &Step) -> Result<bool, String> {
        match st {
            Step::Send(t) => {
                let t = self.vars.subst(t);
                self.t.push("C:", &t);
                self.write(format!("{t}\r\n").as_bytes()).await?;
            }
            Step::Raw(b) => {
                // Variables in raw bytes: only when the bytes are text.
                let b = match std::str::from_utf8(b) {
                    Ok(s) => self.vars.subst(s).into_bytes(),
                    Err(_) => b.clone(),
                };
                self.t
                    .push("R:", &format!("{:?}", String::from_utf8_lossy(&b)));
                self.write(&b).await?;
            }
            Step::Expect(e) => {
                let r = self.reply().await?;
                self.check(e, &r)?;
                return Ok(r.code() == "421");
            }
            Step::Close => self.closed().await?,
            Step::Idle(n) => self.idle(*n).await?,
            Step::Mail(c) => self.mail_check(c).await?,
            Step::Tls => self.start_tls().await?,
        }
        Ok(false)
    }

    /// The client's handshake, right after the server's 220 to STARTTLS.
    async fn start_tls(&mut self) -> Result<(), String> {
        // Bytes already buffered came in the clear after the 220: not part of TLS.
        if !self.s.buffer().is_empty() {
            return Err("the server sent more after its 220 to STARTTLS".into());
        }
        let none: Box<dyn Io> = Box::new(tokio::io::duplex(1).0);
        let plain = std::mem::replace(&mut self.s, BufReader::new(none)).into_inner();
        let hs = crate::tls::handshake(plain, &self.vars.domain);
        let tls = match tokio::time::timeout_at(self.deadline, hs).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err(format!("TLS handshake: {e}")),
            Err(_) => return Err("TLS handshake timed out".into()),
        };
        self.s = BufReader::new(tls);
        self.t.lines.push("TLS".into());
        Ok(())
    }

    async fn write(&mut self, b: &[u8]) -> Result<(), String> {
        let w = self.s.get_mut().write_all(b);
        match tokio::time::timeout_at(self.deadline, w).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write: {e}")),
            Err(_) => Err("timed out writing".into()),
        }
    }

    /// One reply line, CRLF required; `None` at end of stream.
    async fn line(&mut self) -> Result<Option<String>, String> {
        let mut buf = Vec::new();
        let r = tokio::time::timeout_at(self.deadline, self.s.read_until(b'\n', &mut buf)).await;
        match r {
            Err(_) => Err("timed out waiting for a reply".into()),
            Ok(Err(e)) => Err(format!("read: {e}")),
            Ok(Ok(0)) => Ok(None),
            Ok(Ok(_)) if !buf.ends_with(b"\r\n") => Err(format!(
                "reply line not ended by CRLF: {:?}",
                String::from_utf8_lossy(&buf)
            )),
            Ok(Ok(_)) => Ok(Some(
                String::from_utf8_lossy(&buf[..buf.len() - 2]).into_owned(),
            )),
        }
    }

    /// Read a whole reply and check its form (RFC 5321 4.2: code, `-` on all lines but the
    /// last, the same code on every line).
    pub async fn reply(&mut self) -> Result<Reply, String> {
        let mut lines: Vec<String> = Vec::new();
        loop {
            let Some(l) = self.line().await? else {
                return Err(if lines.is_empty() {
                    "connection closed, expected a reply".into()
                } else {
                    "connection closed inside a multiline reply".into()
                });
            };
            self.t.push("S:", &l);
            let b = l.as_bytes();
            let well_formed = b.len() >= 3
                && b[..3].iter().all(u8::is_ascii_digit)
                && matches!(b.get(3), None | Some(b' ' | b'-'));
            if !well_formed {
                return Err(format!("malformed reply line {l:?}"));
            }
            if lines.first().is_some_and(|f| f.get(..3) != l.get(..3)) {
                return Err(format!("multiline reply changes code: {l:?}"));
            }
            let more = b.get(3) == Some(&b'-');
            lines.push(l);
            if !more {
                return Ok(Reply(lines));
            }
        }
    }

    fn check(&self, e: &Expect, r: &Reply) -> Result<(), String> {
        if !e.codes.matches(r.code()) {
            return Err(format!("expected {}, got {}", e.codes, r.0.join(" / ")));
        }
        let kws = r.keywords();
        for (k, present) in &e.keywords {
            if kws.contains(k) != *present {
                let what = if *present { "missing" } else { "present" };
                return Err(format!("EHLO keyword {k} {what}"));
            }
        }
        if let Some(s) = e.shape.iter().find(|s| !shape_ok(s, r)) {
            return Err(format!("reply fails ={s}: {}", r.0.join(" / ")));
        }
        if let Some(want) = self.profile.text(&e.texts) {
            let want = self.vars.subst(want).replace("\\n", "\n");
            let got = r.0.join("\n");
            if !got.starts_with(&want) {
                return Err(format!("expected text {want:?}, got {got:?}"));
            }
        }
        Ok(())
    }

    async fn closed(&mut self) -> Result<(), String> {
        match self.line().await {
            Ok(None) => {
                self.t.lines.push("closed".into());
                Ok(())
            }
            // A reset after QUIT is a close too.
            Err(e) if e.starts_with("read:") => Ok(()),
            Err(e) => Err(format!("expected the server to close: {e}")),
            Ok(Some(l)) => Err(format!("expected close, got {l:?}")),
        }
    }

    /// The server must neither say anything nor close for `secs` seconds.
    async fn idle(&mut self, secs: u64) -> Result<(), String> {
        let until = Instant::now() + Duration::from_secs(secs);
        let mut buf = Vec::new();
        match tokio::time::timeout_at(until, self.s.read_until(b'\n', &mut buf)).await {
            Err(_) => Ok(()),
            Ok(_) => Err(format!(
                "server spoke or closed within {secs} s: {:?}",
                String::from_utf8_lossy(&buf)
            )),
        }
    }

    async fn mail_check(&mut self, c: &MailCheck) -> Result<(), String> {
        if self.mail.is_none() {
            let mb = self.mailbox.ok_or("no mailbox access")?;
            let m = mb.find(&self.vars.token, self.deadline).await;
            self.mail = Some(m.ok_or("the message was not delivered in time")?);
        }
        let m = self.mail.as_deref().unwrap_or_default();
        let c = subst_check(self.vars, c);
        if mail_ok(m, &c) {
            Ok(())
        } else {
            Err(format!("delivered message fails {c:?}"))
        }
    }
}

/// ehlo-line = ehlo-keyword *( SP ehlo-param ); ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-").
fn ehlo_line_ok(l: &str) -> bool {
    let mut w = l.get(4..).unwrap_or("").split(' ');
    let k = w.next().unwrap_or("");
    let key = k.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    key && w.all(|p| !p.is_empty() && p.bytes().all(|b| (33..=126).contains(&b) && b != b'='))
}

fn shape_ok(s: &str, r: &Reply) -> bool {
    match s {
        "form" => r.0.iter().skip(1).all(|l| ehlo_line_ok(l)),
        "unique" => {
            let mut k = r.keywords();
            k.sort();
            k.windows(2).all(|w| w[0] != w[1])
        }
        "single" => r.0.len() == 1,
        "short" => r.0.iter().all(|l| l.len() <= 510),
        _ => false,
    }
}

fn subst_check(v: &Vars, c: &MailCheck) -> MailCheck {
    let s = |x: &String| v.subst(x);
    match c {
        MailCheck::First(a) => MailCheck::First(s(a)),
        MailCheck::Has(a, b) => MailCheck::Has(s(a), *b),
        MailCheck::AtLeast(n, a) => MailCheck::AtLeast(*n, s(a)),
        MailCheck::Above(a, b) => MailCheck::Above(s(a), s(b)),
        MailCheck::Field(a, b) => MailCheck::Field(s(a), s(b)),
        MailCheck::Zone(a) => MailCheck::Zone(s(a)),
        MailCheck::LocalZone(a) => MailCheck::LocalZone(s(a)),
    }
}

/// Every header field named `name`, top first, continuation lines unfolded.
fn fields(header: &[&str], name: &str) -> Vec<String> {
    let p = format!("{}:", name.to_ascii_lowercase());
    let mut out: Vec<String> = Vec::new();
    let mut inside = false;
    for l in header {
        if l.starts_with([' ', '\t']) {
            if let (true, Some(f)) = (inside, out.last_mut()) {
                f.push(' ');
                f.push_str(l.trim());
            }
            continue;
        }
        inside = l.to_ascii_lowercase().starts_with(&p);
        if inside {
            out.push(l.to_string());
        }
    }
    out
}

fn field(header: &[&str], name: &str) -> Option<String> {
    fields(header, name).into_iter().next()
}

/// The numeric zone ending a date field, after any trailing comment (`+0000 (UTC)`).
fn zone(f: &str) -> Option<&str> {
    let mut f = f.trim_end();
    while f.ends_with(')') {
        f = f[..f.rfind('(')?].trim_end();
    }
    let z = f.split_whitespace().last()?;
    let ok = z.len() == 5
        && (z.starts_with('+') || z.starts_with('-'))
        && z[1..].bytes().all(|b| b.is_ascii_digit());
    ok.then_some(z)
}

/// A line equals the expected text; a header field's name in any case (RFC 5322 2.2),
/// so `Return-path: <>` is `Return-Path: <>`.
fn same_line(line: &str, want: &str) -> bool {
    match (line.split_once(':'), want.split_once(':')) {
        (Some((ln, lv)), Some((wn, wv))) if !wn.contains(' ') => {
            ln.eq_ignore_ascii_case(wn) && lv == wv
        }
        _ => line == want,
    }
}

/// A line starts with the expected text, the field name in any case.
fn starts_line(line: &str, want: &str) -> bool {
    match want.split_once(':') {
        Some((wn, _)) if !wn.contains(' ') && line.len() >= want.len() => {
            line.is_char_boundary(want.len()) && same_line(&line[..want.len()], want)
        }
        _ => line.starts_with(want),
    }
}

/// Check a delivered message (line ends CRLF or LF).
pub fn mail_ok(m: &str, c: &MailCheck) -> bool {
    let lines: Vec<&str> = m.lines().collect();
    let header: Vec<&str> = lines
        .iter()
        .copied()
        .take_while(|l| !l.is_empty())
        .collect();
    let pos = |p: &str| lines.iter().position(|l| l.starts_with(p));
    match c {
        MailCheck::First(t) => lines.first().is_some_and(|l| starts_line(l, t)),
        MailCheck::Has(t, want) => lines.iter().any(|l| same_line(l, t)) == *want,
        MailCheck::AtLeast(n, p) => {
            let p = p.to_ascii_lowercase();
            let c = header
                .iter()
                .filter(|l| l.to_ascii_lowercase().starts_with(&p))
                .count();
            c >= *n
        }
        MailCheck::Above(a, b) => matches!((pos(a), pos(b)), (Some(x), Some(y)) if x < y),
        MailCheck::Field(n, t) => fields(&header, n).iter().any(|f| f.contains(t.as_str())),
        MailCheck::Zone(n) => field(&header, n).is_some_and(|f| zone(&f).is_some()),
        MailCheck::LocalZone(n) => {
            field(&header, n).is_some_and(|f| zone(&f).is_some_and(|z| z != "-0000"))
        }
    }
}
