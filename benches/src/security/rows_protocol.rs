//! Protocol abuse: injection, 8-bit bytes, long lines and big messages, pipelined floods,
//! odd commands, slow clients, connection floods and SMTP smuggling in both directions.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::client::{tally, Client};
use super::fixture::{body, Ctx, Dest, On, Outcome};
use super::{Expect, SecError};

pub const PLAIN: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
pub const RELAY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const FROM: &str = "attacker@example.net";
const FRED: &str = "fred@heaven.af.mil";

/// A session from 127.0.0.1 past the greeting and HELO.
pub fn session(ctx: &Ctx, src: IpAddr) -> Result<Client, SecError> {
    let (mut c, _) = Client::open(ctx.main.addr, Some(src))?;
    c.cmd("HELO attacker.example");
    Ok(c)
}

/// Send `raw`, then RSET; the replies that came before `250 flushed`.
fn probe(c: &mut Client, raw: &[u8]) -> Vec<String> {
    c.send(raw);
    c.send(b"RSET\r\n");
    let mut out = Vec::new();
    for _ in 0..20 {
        let r = c.reply();
        if r.starts_with("250 flushed") {
            break;
        }
        let end = r == "closed" || r.starts_with("reset") || r.starts_with("no reply");
        out.push(r);
        if end {
            break;
        }
    }
    out
}

/// The reply that matters (the last), then the ones before it.
fn last_first(replies: &[String]) -> String {
    match replies.split_last() {
        None => "no reply before RSET's".into(),
        Some((last, [])) => last.clone(),
        Some((last, before)) => format!("{last} (after: {})", before.join(" ‖ ")),
    }
}

/// Wait until the message carrying `token` is in `md`; its bytes.
fn delivered(ctx: &mut Ctx, md: &std::path::Path, token: &str) -> Option<Vec<u8>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        for sub in ["new", "cur"] {
            for e in std::fs::read_dir(md.join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                let data = std::fs::read(e.path()).unwrap_or_default();
                if super::fixture::tokens(&data).iter().any(|t| t == token) {
                    return Some(data);
                }
            }
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
        let _ = &ctx;
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A hostile line (with `MAIL` first when `mail`), then an ordinary message to fred whose
/// delivered bytes must contain none of `forbid`.
fn hostile(
    ctx: &mut Ctx,
    input: &str,
    raw: &[u8],
    mail: bool,
    expect: Expect,
    forbid: &'static [&'static [u8]],
) -> Result<(), SecError> {
    let raw = raw.to_vec();
    ctx.row("injection", input, expect, On::Main, move |ctx| {
        let mut c = session(ctx, PLAIN)?;
        if mail {
            c.cmd(&format!("MAIL FROM:<{FROM}>"));
        }
        let replies = probe(&mut c, &raw);
        let out = Outcome::reply(last_first(&replies));
        if !c.resync() {
            return Ok(out.check(true, "session closed by the server"));
        }
        let token = ctx.token();
        let r = super::fixture::transaction(&mut c, FROM, &[FRED], &body(&token, ""));
        ctx.sent(
            &token,
            r.starts_with("250"),
            1,
            Dest::Local(ctx.maildir("fred")),
        );
        let md = ctx.maildir("fred");
        let Some(msg) = delivered(ctx, &md, &token) else {
            return Ok(out.check(false, format!("follow-up message not delivered: {r}")));
        };
        let bad: Vec<_> = forbid.iter().filter(|f| contains(&msg, f)).collect();
        let note = format!("follow-up delivered, holds none of {}", show(forbid));
        Ok(out.check(bad.is_empty(), note))
    })
}

fn show(forbid: &[&[u8]]) -> String {
    forbid
        .iter()
        .map(|f| super::render::cell(&String::from_utf8_lossy(f), 30))
        .collect::<Vec<_>>()
        .join(", ")
}

const INJ: &[&[u8]] = &[b"\nX-Injected", b"\rX-Injected"];

/// The hostile lines: what the table shows, the bytes, whether MAIL comes first, and the
/// expected reply class.
#[rustfmt::skip]
fn injection_cases() -> Vec<(&'static str, Vec<u8>, bool, u8)> {
    let rows: [(&str, &[u8], bool, u8); 16] = [
        ("HELO a\\r\\nX-Injected: yes", b"HELO a\r\nX-Injected: yes\r\n", false, 5),
        ("HELO a\\rX-Injected: yes (bare CR)", b"HELO a\rX-Injected: yes\r\n", false, 2),
        ("HELO a\\nX-Injected: yes (bare LF)", b"HELO a\nX-Injected: yes\r\n", false, 5),
        ("HELO with NUL: HELO a\\0b", b"HELO a\0b\r\n", false, 2),
        ("HELO \\xff\\xfe\\x80 (8-bit, invalid UTF-8)", b"HELO \xff\xfe\x80\r\n", false, 2),
        ("EHLO with 2000 bytes of \\x01", &[b'x'; 0], false, 2),
        ("MAIL FROM:<a@example.net>\\r\\nRCPT TO:<victim@far.example>", b"MAIL FROM:<a@example.net>\r\nRCPT TO:<victim@far.example>\r\n", false, 5),
        ("MAIL FROM:<a@example.net\\r\\nX-Injected: yes>", b"MAIL FROM:<a@example.net\r\nX-Injected: yes>\r\n", false, 5),
        ("MAIL FROM:<a@example.net> SIZE=1\\rX-Injected: yes", b"MAIL FROM:<a@example.net> SIZE=1\rX-Injected: yes\r\n", false, 2),
        ("RCPT TO:<fred@heaven.af.mil\\r\\nX-Injected: yes>", b"RCPT TO:<fred@heaven.af.mil\r\nX-Injected: yes>\r\n", true, 5),
        ("RCPT TO:<fred\\n@heaven.af.mil>", b"RCPT TO:<fred\n@heaven.af.mil>\r\n", true, 5),
        ("RCPT TO:<fr\\xe9d@heaven.af.mil> (8-bit local part)", b"RCPT TO:<fr\xe9d@heaven.af.mil>\r\n", true, 5),
        ("RCPT TO:<j\\xc3\\xb6e@heaven.af.mil> (UTF-8 local part)", "RCPT TO:<jöe@heaven.af.mil>\r\n".as_bytes(), true, 5),
        ("\\xff\\xfeHELO x (8-bit verb)", b"\xff\xfeHELO x\r\n", false, 5),
        ("NO\\0OP (NUL in verb)", b"NO\0OP\r\n", false, 5),
        ("MAIL FROM:<\\xc3\\x28@example.net> (invalid UTF-8 sender)", b"MAIL FROM:<\xc3\x28@example.net>\r\n", false, 5),
    ];
    rows.into_iter().map(|(i, r, m, c)| (i, r.to_vec(), m, c)).collect()
}

pub fn injection(ctx: &mut Ctx) -> Result<(), SecError> {
    for (input, mut raw, mail, class) in injection_cases() {
        if raw.is_empty() {
            raw = [b"EHLO ".to_vec(), vec![1u8; 2000], b"\r\n".to_vec()].concat();
        }
        hostile(ctx, input, &raw, mail, Expect::Class(class), INJ)?;
    }
    sender_with_cr(ctx)?;
    eight_bit_body(ctx)
}

/// A bare CR inside the envelope sender: it must not turn into a header line of its own in
/// the delivered message (Return-Path).
fn sender_with_cr(ctx: &mut Ctx) -> Result<(), SecError> {
    let input = "whole message from MAIL FROM:<a@example.net\\rX-Injected: yes>";
    ctx.row("injection", input, Expect::Class(5), On::Main, |ctx| {
        let mut c = session(ctx, PLAIN)?;
        let token = ctx.token();
        let from = "a@example.net\rX-Injected: yes";
        let r = super::fixture::transaction(&mut c, from, &[FRED], &body(&token, ""));
        let acked = r.starts_with("250");
        ctx.sent(&token, acked, 1, Dest::Local(ctx.maildir("fred")));
        if !acked {
            return Ok(Outcome::reply(r));
        }
        let md = ctx.maildir("fred");
        let msg = delivered(ctx, &md, &token).unwrap_or_default();
        let bad = INJ.iter().any(|f| contains(&msg, f));
        Ok(Outcome::reply(r).check(!bad, "delivered message holds no injected header line"))
    })
}

fn eight_bit_body(ctx: &mut Ctx) -> Result<(), SecError> {
    let input = "EHLO, message body with 8-bit and invalid UTF-8 bytes (\\xff\\xfe\\xc3\\x28)";
    ctx.row("injection", input, Expect::Class(2), On::Main, |ctx| {
        let (mut c, _) = Client::open(ctx.main.addr, Some(PLAIN))?;
        c.cmd("EHLO attacker.example");
        let token = ctx.token();
        let data = format!("Subject: {token}\r\n\r\n{token}\r\n");
        let mut raw = data.into_bytes();
        raw.extend_from_slice(b"bytes \xff\xfe\xc3\x28 end\r\n.\r\n");
        let mut r = c.cmd(&format!("MAIL FROM:<{FROM}> BODY=8BITMIME"));
        if r.starts_with('2') {
            c.cmd(&format!("RCPT TO:<{FRED}>"));
            c.cmd("DATA");
            r = c.cmd_raw(&raw);
        }
        ctx.sent(
            &token,
            r.starts_with("250"),
            1,
            Dest::Local(ctx.maildir("fred")),
        );
        let md = ctx.maildir("fred");
        let msg = delivered(ctx, &md, &token).unwrap_or_default();
        let exact = contains(&msg, b"bytes \xff\xfe\xc3\x28 end\n");
        Ok(Outcome::reply(r).check(exact, "8-bit bytes delivered unchanged"))
    })
}

/// Write `bytes` on a thread of its own while reading `n` replies here (a flood's replies
/// could otherwise fill both socket buffers and stall both sides).
fn flood(c: &mut Client, bytes: &[u8], n: usize) -> Vec<String> {
    let mut w = c.w.try_clone().expect("clone socket");
    std::thread::scope(|s| {
        s.spawn(move || {
            let _ = w.write_all(bytes);
        });
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let r = c.reply();
            let end = r == "closed" || r.starts_with("reset") || r.starts_with("no reply");
            out.push(r);
            if end {
                break;
            }
        }
        out
    })
}

/// A row of `n` copies of `cmd` in one write: every reply must be of the expected class.
fn flood_row(ctx: &mut Ctx, cmd: &str, prefix: &str, class: u8) -> Result<(), SecError> {
    let n = ctx.sizes.flood;
    let input = format!("{prefix}{n} × {cmd} in one write");
    let cmd = format!("{cmd}\r\n");
    let prefix = prefix.to_string();
    ctx.row("flood", input, Expect::Class(class), On::Main, move |ctx| {
        let mut c = session(ctx, PLAIN)?;
        if !prefix.is_empty() {
            c.cmd(&format!("MAIL FROM:<{FROM}>"));
        }
        let replies = flood(&mut c, cmd.repeat(n).as_bytes(), n);
        let all = replies.len() == n && replies.iter().all(|r| r.as_bytes()[0] == b'0' + class);
        let first = replies.first().cloned().unwrap_or_default();
        Ok(Outcome::reply(format!("{first} [{}]", tally(&replies)))
            .check(all, format!("{} replies, all {class}xx", replies.len())))
    })
}

pub fn floods(ctx: &mut Ctx) -> Result<(), SecError> {
    flood_row(ctx, "NOOP", "", 2)?;
    flood_row(ctx, "RSET", "", 2)?;
    flood_row(ctx, "XYZZY", "", 5)?;
    flood_row(ctx, "VRFY fred", "", 2)?;
    flood_row(ctx, "MAIL FROM:<a@example.net>", "", 2)?;
    flood_row(ctx, "RCPT TO:<victim@far.example>", "MAIL, then ", 5)?;
    flood_row(ctx, "DATA", "", 5)?;
    pipelined_messages(ctx)?;
    before_greeting(ctx)?;
    starttls_injection(ctx)?;
    let odd: [(&str, &[u8], u8); 10] = [
        ("VRFY fred", b"VRFY fred\r\n", 2),
        ("EXPN postmaster", b"EXPN postmaster\r\n", 5),
        ("HELP", b"HELP\r\n", 2),
        (
            "AUTH PLAIN AGZyZWQAc2VjcmV0",
            b"AUTH PLAIN AGZyZWQAc2VjcmV0\r\n",
            5,
        ),
        (
            "BDAT 10 LAST + 10 bytes",
            b"BDAT 10 LAST\r\n0123456789\r\n",
            5,
        ),
        (
            "GET / HTTP/1.1 (an HTTP request)",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            5,
        ),
        (
            "TLS ClientHello bytes",
            b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00\r\n",
            5,
        ),
        ("empty line", b"\r\n", 5),
        (
            "MAIL FROM:<> then DATA without RCPT",
            b"MAIL FROM:<>\r\nDATA\r\n",
            5,
        ),
        ("RCPT before MAIL", b"RCPT TO:<fred@heaven.af.mil>\r\n", 5),
    ];
    for (input, raw, class) in odd {
        ctx.row(
            "commands",
            input,
            Expect::Class(class),
            On::Main,
            move |ctx| {
                let mut c = session(ctx, PLAIN)?;
                Ok(Outcome::reply(last_first(&probe(&mut c, raw))))
            },
        )?;
    }
    garbage(ctx)?;
    half_close(ctx)
}

/// STARTTLS (offered: `mta init` makes a certificate), then a command in the clear: the
/// server says 220 and then speaks only TLS, so the injected RSET is never answered
/// (CVE-2011-0411); the plain-text bytes fail the handshake and the connection closes.
fn starttls_injection(ctx: &mut Ctx) -> Result<(), SecError> {
    let input = "STARTTLS, then RSET in the clear (command injection, CVE-2011-0411)";
    ctx.row("commands", input, Expect::Closed, On::Main, move |ctx| {
        let mut c = session(ctx, PLAIN)?;
        let replies = probe(&mut c, b"STARTTLS\r\n");
        let ok = replies
            .first()
            .is_some_and(|r| r.starts_with("220 ready to start TLS"));
        let reply = last_first(&replies);
        Ok(if ok {
            Outcome::reply(reply)
        } else {
            Outcome::reply(format!("no 220 to STARTTLS: {reply}"))
        })
    })
}

/// Many whole messages (MAIL, RCPT, DATA, text, dot) in one write: each must be
/// acknowledged and delivered once.
fn pipelined_messages(ctx: &mut Ctx) -> Result<(), SecError> {
    let m = ctx.sizes.messages;
    let input = format!("{m} whole messages (MAIL/RCPT/DATA/text/.) in one write");
    ctx.row("flood", input, Expect::Class(2), On::Main, move |ctx| {
        let mut c = session(ctx, PLAIN)?;
        let mut bytes = Vec::new();
        let mut toks = Vec::new();
        for _ in 0..m {
            let t = ctx.token();
            let msg = format!(
                "MAIL FROM:<{FROM}>\r\nRCPT TO:<{FRED}>\r\nDATA\r\n{}",
                body(&t, "")
            );
            bytes.extend_from_slice(msg.as_bytes());
            toks.push(t);
        }
        let replies = flood(&mut c, &bytes, 4 * m);
        let md = Dest::Local(ctx.maildir("fred"));
        for (i, t) in toks.iter().enumerate() {
            let ok = replies.get(4 * i + 3).is_some_and(|r| r.starts_with("250"));
            ctx.sent(t, ok, 1, md.clone());
        }
        let dots: Vec<String> = replies.iter().skip(3).step_by(4).cloned().collect();
        Ok(
            Outcome::reply(dots.last().cloned().unwrap_or_default()).check(
                dots.len() == m,
                format!("replies to the dots: {}", tally(&dots)),
            ),
        )
    })
}

fn before_greeting(ctx: &mut Ctx) -> Result<(), SecError> {
    let input = "HELO, MAIL, RCPT, DATA, message written before the greeting is read";
    ctx.row("commands", input, Expect::Class(2), On::Main, |ctx| {
        let mut c = Client::raw(ctx.main.addr, Some(PLAIN))?;
        let t = ctx.token();
        let all = format!(
            "HELO early\r\nMAIL FROM:<{FROM}>\r\nRCPT TO:<{FRED}>\r\nDATA\r\n{}",
            body(&t, "")
        );
        c.send(all.as_bytes());
        let replies: Vec<String> = (0..6).map(|_| c.reply()).collect();
        ctx.sent(
            &t,
            replies[5].starts_with("250"),
            1,
            Dest::Local(ctx.maildir("fred")),
        );
        Ok(Outcome::reply(replies[5].clone()).check(
            replies[0].starts_with("220"),
            format!("first: {}", replies[0]),
        ))
    })
}

/// 64 KiB of pseudo-random bytes (a fixed LCG, so every run sends the same), then a CRLF:
/// only CRLF ends a command line (RFC 5321 2.3.8), so the server answers once per CRLF.
fn garbage(ctx: &mut Ctx) -> Result<(), SecError> {
    let input = "64 KiB of pseudo-random binary bytes, then CRLF";
    ctx.row("commands", input, Expect::Class(5), On::Main, |ctx| {
        let mut c = session(ctx, PLAIN)?;
        let mut x: u32 = 12345;
        let mut bytes: Vec<u8> = (0..65536)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        bytes.extend_from_slice(b"\r\n");
        let n = bytes.windows(2).filter(|w| w == b"\r\n").count();
        let replies = flood(&mut c, &bytes, n);
        let first = replies.first().cloned().unwrap_or_default();
        Ok(Outcome::reply(format!("{first} [{}]", tally(&replies))))
    })
}

fn half_close(ctx: &mut Ctx) -> Result<(), SecError> {
    let input = "NOOP, QUIT, then the client shuts its sending side";
    ctx.row("commands", input, Expect::Class(2), On::Main, |ctx| {
        let mut c = session(ctx, PLAIN)?;
        c.send(b"NOOP\r\nQUIT\r\n");
        c.shutdown_write();
        let r = c.drain(5);
        Ok(Outcome::reply(r.join(" ‖ "))
            .check(r.last().is_some_and(|l| l == "closed"), "then closed"))
    })
}

pub use super::rows_slow::{long_lines, slow, smuggling};
