//! Local injection (qmail-inject / sendmail): header fix-ups and recipient extraction (spec §9).
//!
//! Pure functions over bytes: the caller (the `mta inject` CLI) supplies the environment values
//! and the time, and hands the result to the queue.

use std::path::Path;

use crate::control::ControlDir;
use crate::date;
use crate::env::{unix_secs, Env};
use crate::queue::{self, MsgId, NewMessage, Paths};

/// Exit statuses of `mta inject` (qmail-inject's): permanent and temporary failure.
pub const EXIT_PERM: i32 = 100;
pub const EXIT_TEMP: i32 = 111;
/// Largest message accepted for injection.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Addresses longer than this are refused (permanent), as the queue would refuse them.
pub const MAX_ADDR: usize = crate::queue::MAX_ADDR;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    #[error("no recipients")]
    NoRecipients,
    #[error("address too long ({0} bytes; at most {MAX_ADDR})")]
    AddressTooLong(usize),
    #[error("invalid address {0:?}")]
    BadAddress(String),
    #[error("message too large (more than {0} bytes)")]
    TooLarge(usize),
}

/// Values qmail-inject takes from control files.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub defaulthost: String,
    pub defaultdomain: String,
    pub plusdomain: String,
    pub idhost: String,
}

/// Who is injecting, from the caller's environment (QMAILUSER, QMAILHOST, QMAILNAME, ...).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub user: Option<String>,
    pub host: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `-f`: envelope sender (`""` for the null sender).
    pub sender: Option<String>,
    /// `-t`: take recipients from To, Cc and Bcc.
    pub extract: bool,
    pub recipients: Vec<String>,
    pub message: &'a [u8],
    pub now: u64,
    /// A unique token for the Message-ID.
    pub unique: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub sender: String,
    pub recipients: Vec<String>,
    pub data: Vec<u8>,
}

/// Headers removed on injection.
const DROPPED: [&str; 3] = ["return-path", "bcc", "content-length"];
/// Headers whose bare addresses are qualified (`fred` → `fred@defaulthost`), as
/// qmail-inject does.
const ADDRESS_HEADERS: [&str; 11] = [
    "to",
    "cc",
    "from",
    "sender",
    "reply-to",
    "mail-followup-to",
    "resent-to",
    "resent-cc",
    "resent-from",
    "resent-sender",
    "resent-reply-to",
];
/// Headers whose addresses become recipients with `-t`.
const RECIPIENT_HEADERS: [&str; 3] = ["to", "cc", "bcc"];

/// One header field: its name and the whole raw text (name, value, continuation lines).
pub(crate) struct Field<'a> {
    pub(crate) name: String,
    raw: &'a [u8],
}

impl Field<'_> {
    fn value(&self) -> String {
        let s = String::from_utf8_lossy(self.raw);
        let v = s.split_once(':').map_or("", |(_, v)| v);
        v.replace(['\r', '\n'], " ")
    }
}

/// Split a message into header fields and the rest (starting after the blank separator line,
/// which is `sep`). A message whose first line is not a header has no header fields.
pub(crate) fn split_header(msg: &[u8]) -> (Vec<Field<'_>>, &[u8], &[u8]) {
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut at = 0;
    while at < msg.len() {
        let end = msg[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(msg.len(), |i| at + i + 1);
        let line = &msg[at..end];
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            return (fields, line, &msg[end..]);
        }
        if content[0] == b' ' || content[0] == b'\t' {
            match fields.last_mut() {
                Some(f) => {
                    let start = f.raw.as_ptr() as usize - msg.as_ptr() as usize;
                    f.raw = &msg[start..end];
                    at = end;
                    continue;
                }
                None => break,
            }
        }
        let name_len = content
            .iter()
            .position(|&b| b == b':')
            .filter(|&i| i > 0 && content[..i].iter().all(|&b| b > b' ' && b < 127));
        let Some(n) = name_len else { break };
        fields.push(Field {
            name: String::from_utf8_lossy(&content[..n]).to_ascii_lowercase(),
            raw: line,
        });
        at = end;
    }
    (fields, b"", &msg[at..])
}

/// Extract addresses from an address-list header value: handles comments, quoted strings,
/// angle brackets, source routes and groups.
pub fn parse_address_list(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut item = String::new();
    let mut angle: Option<String> = None;
    let (mut depth, mut quoted, mut in_angle, mut esc) = (0u32, false, false, false);
    let mut flush = |item: &mut String, angle: &mut Option<String>| {
        let a = match angle.take() {
            Some(a) => a,
            None => {
                let s = item.trim();
                // `group: a, b;` — the group name is not an address.
                let s = s.rsplit_once(':').map_or(s, |(_, r)| r).trim();
                s.trim_end_matches(';').trim().to_string()
            }
        };
        // Strip a source route `@a,@b:user@host`.
        let a = if a.starts_with('@') {
            a.split_once(':').map_or("", |(_, r)| r).to_string()
        } else {
            a
        };
        if !a.is_empty() {
            out.push(a);
        }
        item.clear();
    };
    for c in v.chars() {
        if esc {
            esc = false;
            if in_angle {
                angle.get_or_insert_with(String::new).push(c);
            } else if depth == 0 {
                item.push(c);
            }
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => esc = true,
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted && !in_angle => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            '<' if !quoted => {
                in_angle = true;
                angle = Some(String::new());
            }
            '>' if !quoted && in_angle => in_angle = false,
            ',' if !quoted && !in_angle => flush(&mut item, &mut angle),
            ';' if !quoted && !in_angle => flush(&mut item, &mut angle),
            _ if in_angle => angle.get_or_insert_with(String::new).push(c),
            _ if quoted => {}
            _ => item.push(c),
        }
    }
    flush(&mut item, &mut angle);
    out.retain(|a| !a.chars().any(char::is_whitespace) || a.contains('@'));
    out.into_iter().map(|a| a.trim().to_string()).collect()
}

/// Qualify a bare address: `name` → `name@defaulthost`; a domain without a dot gets
/// `.defaultdomain`; a trailing `+` becomes `.plusdomain`.
pub fn qualify(addr: &str, d: &Defaults) -> String {
    let (local, domain) = match addr.rsplit_once('@') {
        Some((l, dom)) => (l, dom.to_string()),
        None => (addr, d.defaulthost.clone()),
    };
    let domain = if let Some(stem) = domain.strip_suffix('+') {
        format!("{stem}.{}", d.plusdomain)
    } else if !domain.contains('.') && !domain.starts_with('[') && !d.defaultdomain.is_empty() {
        format!("{domain}.{}", d.defaultdomain)
    } else {
        domain
    };
    format!("{local}@{domain}")
}

fn check(a: &str) -> Result<(), InjectError> {
    if a.len() > MAX_ADDR {
        return Err(InjectError::AddressTooLong(a.len()));
    }
    if a.bytes()
        .any(|b| b == 0 || b == b'\n' || b == b'\r' || b == b'<' || b == b'>')
    {
        return Err(InjectError::BadAddress(a.chars().take(80).collect()));
    }
    Ok(())
}

/// One `mta inject` call, apart from the environment.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub sender: Option<String>,
    pub extract: bool,
    pub recipients: Vec<String>,
    pub message: Vec<u8>,
    pub origin: Origin,
    /// Process and user id of the injector, for the log (qmail's `qp` and `uid`).
    pub pid: u64,
    pub uid: u32,
}

/// Why an injection failed, with the exit status to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: i32,
    pub message: String,
}

impl Failure {
    fn perm(m: impl ToString) -> Self {
        Failure {
            exit: EXIT_PERM,
            message: m.to_string(),
        }
    }
    fn temp(m: impl ToString) -> Self {
        Failure {
            exit: EXIT_TEMP,
            message: m.to_string(),
        }
    }
}

/// Inject a message into the installation at `root`: read the controls, fix up the header,
/// and commit durably to the queue. `Ok` only after the commit.
pub fn run<E: Env>(env: &E, root: &Path, inv: &Invocation) -> Result<MsgId, Failure> {
    let msg = message(env, root, inv)?;
    let paths = Paths::new(root.join("queue"));
    match queue::inject(env, &paths, &Default::default(), &[msg]) {
        Ok(ids) => Ok(ids[0]),
        Err(e) if e.is_permanent() => Err(Failure::perm(e)),
        Err(e) if e.is_disk_full() => {
            Err(Failure::temp(format!("qq write error or disk full: {e}")))
        }
        Err(e) => Err(Failure::temp(format!("qq trouble: {e}"))),
    }
}

/// The message as the queue takes it: controls read, header fixed up, trace line on top.
pub fn message<E: Env>(env: &E, root: &Path, inv: &Invocation) -> Result<NewMessage, Failure> {
    let c = ControlDir::new(env.fs(), root);
    let defaults = (|| {
        let me = c.me()?;
        Ok::<_, crate::control::ControlError>(Defaults {
            defaulthost: c.line_or("defaulthost", &me)?,
            defaultdomain: c.line_or("defaultdomain", &me)?,
            plusdomain: c.line_or("plusdomain", &me)?,
            idhost: c.line_or("idhost", &me)?,
        })
    })()
    .map_err(|e| Failure::temp(format!("unable to read controls: {e}")))?;
    if inv.message.len() > MAX_MESSAGE {
        return Err(Failure::perm(InjectError::TooLarge(MAX_MESSAGE)));
    }
    let now = unix_secs(env.now());
    let req = Request {
        sender: inv.sender.clone(),
        extract: inv.extract,
        recipients: inv.recipients.clone(),
        message: &inv.message,
        now,
        unique: format!("{}.{:08x}", inv.pid, env.random_u64() as u32),
    };
    let p = prepare(&req, &defaults, &inv.origin).map_err(Failure::perm)?;
    let mut data =
        queue::trace_line(inv.pid, &format!("invoked by uid {}", inv.uid), now).into_bytes();
    data.extend_from_slice(&p.data);
    Ok(NewMessage {
        sender: p.sender,
        recipients: p.recipients,
        data,
        qp: inv.pid,
        uid: inv.uid,
    })
}

/// Apply qmail-inject's fix-ups and work out the envelope.
pub fn prepare(req: &Request<'_>, d: &Defaults, o: &Origin) -> Result<Prepared, InjectError> {
    let (fields, sep, body) = split_header(req.message);
    let user = o.user.clone().unwrap_or_else(|| "anonymous".into());
    let host = o.host.clone().unwrap_or_else(|| d.defaulthost.clone());
    let from_addr = format!("{user}@{host}");
    let sender = match &req.sender {
        Some(s) if s.is_empty() => String::new(),
        Some(s) => qualify(s, d),
        None => from_addr.clone(),
    };
    check(&sender)?;

    let mut rcpts: Vec<String> = Vec::new();
    for r in &req.recipients {
        check(r)?;
        rcpts.push(qualify(r, d));
    }
    if req.extract {
        for f in fields
            .iter()
            .filter(|f| RECIPIENT_HEADERS.contains(&f.name.as_str()))
        {
            for a in parse_address_list(&f.value()) {
                check(&a)?;
                rcpts.push(qualify(&a, d));
            }
        }
    }
    rcpts.iter().try_for_each(|r| check(r))?;
    if rcpts.is_empty() {
        return Err(InjectError::NoRecipients);
    }

    let has = |n: &str| fields.iter().any(|f| f.name == n);
    let mut data = Vec::with_capacity(req.message.len() + 200);
    for f in fields
        .iter()
        .filter(|f| !DROPPED.contains(&f.name.as_str()))
    {
        match std::str::from_utf8(f.raw) {
            Ok(raw) if ADDRESS_HEADERS.contains(&f.name.as_str()) => {
                let (name, value) = raw.split_once(':').unwrap_or((raw, ""));
                let value = crate::addrlist::rewrite(value, &|a| qualify(a, d));
                data.extend_from_slice(format!("{name}:{value}").as_bytes());
            }
            _ => data.extend_from_slice(f.raw),
        }
        if !f.raw.ends_with(b"\n") {
            data.push(b'\n');
        }
    }
    if !has("date") {
        data.extend_from_slice(format!("Date: {}\n", date::rfc822(req.now)).as_bytes());
    }
    if !has("message-id") {
        let id = format!("Message-ID: <{}.{}@{}>\n", req.now, req.unique, d.idhost);
        data.extend_from_slice(id.as_bytes());
    }
    if !has("from") {
        let line = match &o.name {
            Some(n) => format!("From: {n} <{from_addr}>\n"),
            None => format!("From: {from_addr}\n"),
        };
        data.extend_from_slice(line.as_bytes());
    }
    data.extend_from_slice(if sep.is_empty() { b"\n" } else { sep });
    data.extend_from_slice(body);
    Ok(Prepared {
        sender,
        recipients: rcpts,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Defaults {
        Defaults {
            defaulthost: "heaven.af.mil".into(),
            defaultdomain: "af.mil".into(),
            plusdomain: "af.mil".into(),
            idhost: "heaven.af.mil".into(),
        }
    }
    fn req(msg: &[u8]) -> Request<'_> {
        Request {
            sender: None,
            extract: false,
            recipients: vec!["fred".into()],
            message: msg,
            now: 1_795_311_725,
            unique: "u1".into(),
        }
    }
    fn o() -> Origin {
        Origin {
            user: Some("joe".into()),
            ..Origin::default()
        }
    }
    fn text(p: &Prepared) -> String {
        String::from_utf8_lossy(&p.data).into_owned()
    }

    #[test]
    fn bare_addresses_in_to_and_cc_are_qualified() {
        let msg = b"To: fred, Joe <joe@heaven>\nCc: bill (B)\nSubject: fred\n\nfred\n";
        let p = prepare(&req(msg), &d(), &o()).unwrap();
        assert!(text(&p).starts_with(
            "To: fred@heaven.af.mil, Joe <joe@heaven.af.mil>\nCc: bill@heaven.af.mil (B)\n\
             Subject: fred\n"
        ));
        assert!(text(&p).ends_with("\n\nfred\n"));
    }

    #[test]
    fn adds_missing_headers_and_qualifies() {
        let p = prepare(&req(b"Subject: hi\n\nbody\n"), &d(), &o()).unwrap();
        assert_eq!(p.sender, "joe@heaven.af.mil");
        assert_eq!(p.recipients, vec!["fred@heaven.af.mil"]);
        assert_eq!(
            text(&p),
            "Subject: hi\nDate: 22 Nov 2026 01:42:05 -0000\n\
             Message-ID: <1795311725.u1@heaven.af.mil>\nFrom: joe@heaven.af.mil\n\nbody\n"
        );
    }

    #[test]
    fn keeps_present_headers_and_drops_bcc_return_path_content_length() {
        let m = b"From: a@b.c\nDate: x\nMessage-ID: <1@x>\nBcc: secret@x.y,\n  other@x.y\n\
Return-Path: <z@z>\nContent-Length: 3\nTo: t@x.y\n\nbody";
        let p = prepare(&req(m), &d(), &o()).unwrap();
        assert_eq!(
            text(&p),
            "From: a@b.c\nDate: x\nMessage-ID: <1@x>\nTo: t@x.y\n\nbody"
        );
    }

    #[test]
    fn extracts_recipients_with_t() {
        let m = b"To: Fred <fred>, \"Doe, J\" <jd@x.org>\nCc: grp: a@b.org, (c) c@d.org;\n\
Bcc: hidden@e.org\nSubject: s\n\nb\n";
        let mut r = req(m);
        r.extract = true;
        r.recipients.clear();
        let p = prepare(&r, &d(), &o()).unwrap();
        assert_eq!(
            p.recipients,
            vec![
                "fred@heaven.af.mil",
                "jd@x.org",
                "a@b.org",
                "c@d.org",
                "hidden@e.org"
            ]
        );
        assert!(!text(&p).contains("hidden@e.org"));
    }

    #[test]
    fn no_recipients_and_long_addresses_are_refused() {
        let mut r = req(b"x\n");
        r.recipients.clear();
        assert_eq!(prepare(&r, &d(), &o()), Err(InjectError::NoRecipients));
        let mut r = req(b"x\n");
        r.recipients = vec![format!("{}@x.org", "a".repeat(1001))];
        assert!(matches!(
            prepare(&r, &d(), &o()),
            Err(InjectError::AddressTooLong(_))
        ));
        let mut r = req(b"x\n");
        r.sender = Some(format!("{}@x.org", "a".repeat(1001)));
        assert!(matches!(
            prepare(&r, &d(), &o()),
            Err(InjectError::AddressTooLong(_))
        ));
    }

    #[test]
    fn body_is_byte_exact_with_nul_8bit_and_no_final_newline() {
        let m = b"Subject: bin\n\n\0\xff\xfe line\r\nno newline at end\0";
        let p = prepare(&req(m), &d(), &o()).unwrap();
        assert!(p
            .data
            .ends_with(b"\n\n\0\xff\xfe line\r\nno newline at end\0"));
    }

    #[test]
    fn message_without_headers_gets_a_header_block() {
        let p = prepare(&req(b"just a body line\nmore"), &d(), &o()).unwrap();
        assert!(text(&p).starts_with("Date: "));
        assert!(text(&p).ends_with("\n\njust a body line\nmore"));
        let p = prepare(&req(b""), &d(), &o()).unwrap();
        assert!(text(&p).ends_with("From: joe@heaven.af.mil\n\n"));
    }

    #[test]
    fn null_sender_and_qualification_rules() {
        let mut r = req(b"x\n");
        r.sender = Some(String::new());
        r.recipients = vec!["a@b".into(), "c@d+".into(), "e@[1.2.3.4]".into()];
        let p = prepare(&r, &d(), &o()).unwrap();
        assert_eq!(p.sender, "");
        assert_eq!(
            p.recipients,
            vec!["a@b.af.mil", "c@d.af.mil", "e@[1.2.3.4]"]
        );
    }

    #[test]
    fn header_without_final_newline() {
        let p = prepare(&req(b"Subject: only"), &d(), &o()).unwrap();
        assert!(text(&p).starts_with("Subject: only\nDate: "));
        assert!(text(&p).ends_with("\n\n"));
    }
}
