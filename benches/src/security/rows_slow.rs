//! Sizes, time and connections: long lines, big messages, many recipients, slow clients,
//! connection floods; and SMTP smuggling into and out of the server.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::client::{tally, Client};
use super::fixture::{body, start_data, transaction, Ctx, Dest, On, Outcome};
use super::rows_protocol::{session, PLAIN, RELAY};
use super::{Expect, SecError, CONCURRENCY, DATABYTES, PER_IP};

const FROM: &str = "attacker@example.net";
const FRED: &str = "fred@heaven.af.mil";

fn one_cmd(ctx: &mut Ctx, input: String, line: Vec<u8>, class: u8) -> Result<(), SecError> {
    ctx.row(
        "long lines",
        input,
        Expect::Class(class),
        On::Main,
        move |ctx| {
            let mut c = session(ctx, PLAIN)?;
            c.cmd(&format!("MAIL FROM:<{FROM}>"));
            let mut w = c.w.try_clone()?;
            let r = std::thread::scope(|s| {
                s.spawn(move || {
                    let _ = w.write_all(&line);
                });
                c.reply()
            });
            let next = c.cmd("NOOP");
            Ok(Outcome::reply(r).check(next.starts_with("250"), format!("next command: {next}")))
        },
    )
}

/// A message to fred whose text is `text` (CRLF lines, dot-stuffed); acknowledged ones must
/// be delivered once, refused ones never.
fn message_row(ctx: &mut Ctx, input: String, text: String, class: u8) -> Result<(), SecError> {
    ctx.row(
        "long lines",
        input,
        Expect::Class(class),
        On::Main,
        move |ctx| {
            let mut c = session(ctx, PLAIN)?;
            let t = ctx.token();
            let data = body(&t, &text);
            drop(text);
            let mut w = c.w.try_clone()?;
            let r = std::thread::scope(|s| {
                if let Some(refused) = start_data(&mut c, FROM, &[FRED]) {
                    return refused;
                }
                s.spawn(move || {
                    let _ = w.write_all(data.as_bytes());
                });
                c.reply()
            });
            ctx.sent(
                &t,
                r.starts_with("250"),
                1,
                Dest::Local(ctx.maildir("fred")),
            );
            Ok(Outcome::reply(r))
        },
    )
}

/// Text of `n` bytes after CRLF → LF, in lines of 999 characters.
fn filler(n: usize) -> String {
    let line = format!("{}\r\n", "y".repeat(999));
    let mut s = line.repeat(n / 1000);
    let rest = n % 1000;
    if rest > 0 {
        s.push_str(&"y".repeat(rest - 1));
        s.push_str("\r\n");
    }
    s
}

pub fn long_lines(ctx: &mut Ctx) -> Result<(), SecError> {
    let big = ctx.sizes.long_line;
    one_cmd(
        ctx,
        "NOOP + 600 bytes (command over 512)".into(),
        format!("NOOP {}\r\n", "n".repeat(600)).into_bytes(),
        2,
    )?;
    let addr = format!("RCPT TO:<{}@heaven.af.mil>\r\n", "r".repeat(600));
    one_cmd(
        ctx,
        "RCPT TO with a 600-byte local part".into(),
        addr.into_bytes(),
        5,
    )?;
    let l64 = format!("RCPT TO:<{}>\r\n", "x".repeat(64 << 10));
    one_cmd(
        ctx,
        "RCPT TO with a 64 KiB address".into(),
        l64.into_bytes(),
        5,
    )?;
    let lbig = format!("NOOP {}\r\n", "z".repeat(big));
    one_cmd(
        ctx,
        format!("command line of {big} bytes"),
        lbig.into_bytes(),
        5,
    )?;
    no_line_end(ctx, big)?;
    message_row(
        ctx,
        "text line of 1001 bytes".into(),
        format!("{}\r\n", "y".repeat(1001)),
        2,
    )?;
    message_row(
        ctx,
        format!("text line of {big} bytes"),
        format!("{}\r\n", "y".repeat(big)),
        2,
    )?;
    exact_databytes(ctx)?;
    let huge = ctx.sizes.huge;
    message_row(
        ctx,
        format!("DATA of {huge} bytes (databytes {DATABYTES})"),
        filler(huge),
        5,
    )?;
    ctx.row(
        "long lines",
        format!("MAIL FROM:<a@example.net> SIZE={}", DATABYTES + 1),
        Expect::Class(5),
        On::Main,
        |ctx| {
            let mut c = session(ctx, PLAIN)?;
            Ok(Outcome::reply(c.cmd(&format!(
                "MAIL FROM:<{FROM}> SIZE={}",
                DATABYTES + 1
            ))))
        },
    )?;
    many_rcpts(ctx)?;
    null_sender(ctx)
}

/// A long command with no line end, then the client closes: the server closes too.
fn no_line_end(ctx: &mut Ctx, big: usize) -> Result<(), SecError> {
    let nolf = format!("HELO {}", "h".repeat(big));
    ctx.row(
        "long lines",
        format!("{big} bytes with no line end, then the client closes"),
        Expect::Closed,
        On::Main,
        move |ctx| {
            let mut c = session(ctx, PLAIN)?;
            c.send(nolf.as_bytes());
            c.shutdown_write();
            let r = c.drain(3);
            Ok(Outcome::reply(r.join(" ‖ ")).check(
                r.last().is_some_and(|l| l == "closed"),
                "server closed its side",
            ))
        },
    )
}

/// Messages of exactly databytes and one byte more (counted after CRLF → LF).
fn exact_databytes(ctx: &mut Ctx) -> Result<(), SecError> {
    for (extra, class) in [(0usize, 2u8), (1, 5)] {
        let input = format!(
            "message of databytes{} bytes",
            if extra == 0 { "" } else { " + 1" }
        );
        ctx.row(
            "long lines",
            input,
            Expect::Class(class),
            On::Main,
            move |ctx| {
                let mut c = session(ctx, PLAIN)?;
                let t = ctx.token();
                let head = format!("Subject: {t}\r\n\r\n{t}\r\n");
                let have = head.len() - 3; // three CRLF become LF
                let text = filler(DATABYTES + extra - have);
                let data = format!("{head}{text}.\r\n");
                let r = transaction(&mut c, FROM, &[FRED], &data);
                ctx.sent(
                    &t,
                    r.starts_with("250"),
                    1,
                    Dest::Local(ctx.maildir("fred")),
                );
                Ok(Outcome::reply(r))
            },
        )?;
    }
    Ok(())
}

fn many_rcpts(ctx: &mut Ctx) -> Result<(), SecError> {
    let n = ctx.sizes.rcpts;
    let input = format!("one message to {n} recipients (joe-r1 … joe-r{n})");
    ctx.row(
        "long lines",
        input,
        Expect::Class(2),
        On::Main,
        move |ctx| {
            let mut c = session(ctx, PLAIN)?;
            c.cmd(&format!("MAIL FROM:<{FROM}>"));
            let replies: Vec<String> = (1..=n)
                .map(|i| c.cmd(&format!("RCPT TO:<joe-r{i}@heaven.af.mil>")))
                .collect();
            let taken = replies.iter().filter(|r| r.starts_with("250")).count();
            let t = ctx.token();
            c.cmd("DATA");
            let r = c.cmd_raw(body(&t, "").as_bytes());
            ctx.sent(
                &t,
                r.starts_with("250"),
                taken,
                Dest::Local(ctx.maildir("joe")),
            );
            Ok(
                Outcome::reply(format!("{r} [RCPT: {}]", tally(&replies))).check(
                    taken >= 100,
                    format!("{taken} recipients taken (RFC 2821: at least 100)"),
                ),
            )
        },
    )
}

fn null_sender(ctx: &mut Ctx) -> Result<(), SecError> {
    let input = "MAIL FROM:<>, RCPT fred, RCPT joe-x (second recipient), DATA";
    ctx.row("long lines", input, Expect::Class(5), On::Main, |ctx| {
        let mut c = session(ctx, PLAIN)?;
        c.cmd("MAIL FROM:<>");
        let first = c.cmd(&format!("RCPT TO:<{FRED}>"));
        let second = c.cmd("RCPT TO:<joe-x@heaven.af.mil>");
        let t = ctx.token();
        c.cmd("DATA");
        let r = c.cmd_raw(body(&t, "").as_bytes());
        ctx.sent(
            &t,
            r.starts_with("250"),
            1,
            Dest::Local(ctx.maildir("fred")),
        );
        let note = format!("first RCPT {first}; the message to fred alone: {r}");
        Ok(Outcome::reply(second).check(first.starts_with("250") && r.starts_with("250"), note))
    })
}

/// Keep writing one byte of `bytes` per `gap` until a reply (or EOF) arrives.
fn trickle(c: &mut Client, bytes: &[u8], gap: Duration) -> String {
    c.w.set_read_timeout(Some(gap)).expect("timeout");
    for b in bytes {
        c.send(&[*b]);
        let r = c.reply();
        if !r.starts_with("no reply") {
            return r;
        }
    }
    c.w.set_read_timeout(Some(super::client::REPLY_WAIT))
        .expect("timeout");
    c.reply()
}

fn tmp_empty(ctx: &Ctx) -> bool {
    let tmp = ctx.main.root.join("queue/tmp");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
        if n == 0 {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn slow(ctx: &mut Ctx) -> Result<(), SecError> {
    ctx.row(
        "slow",
        "command trickled a byte a second",
        Expect::Class(4),
        On::Main,
        |ctx| {
            let mut c = session(ctx, PLAIN)?;
            Ok(Outcome::reply(trickle(
                &mut c,
                "NOOP ".repeat(20).as_bytes(),
                Duration::from_secs(1),
            )))
        },
    )?;
    ctx.row(
        "slow",
        "silent after the greeting",
        Expect::Class(4),
        On::Main,
        |ctx| {
            let (mut c, _) = Client::open(ctx.main.addr, Some(PLAIN))?;
            Ok(Outcome::reply(c.reply()))
        },
    )?;
    for (input, gap) in [
        ("DATA trickled a byte every 200 ms", 200u64),
        ("DATA: 300 KiB, then silence", 0),
    ] {
        ctx.row("slow", input, Expect::Class(4), On::Main, move |ctx| {
            let mut c = session(ctx, PLAIN)?;
            let t = ctx.token();
            start_data(&mut c, FROM, &[FRED]);
            let text = body(&t, &"slow\r\n".repeat(60_000));
            let r = if gap > 0 {
                trickle(&mut c, text.as_bytes(), Duration::from_millis(gap))
            } else {
                c.send(&text.as_bytes()[..300 << 10]);
                c.reply()
            };
            ctx.sent(
                &t,
                r.starts_with("250"),
                1,
                Dest::Local(ctx.maildir("fred")),
            );
            let clean = tmp_empty(ctx);
            Ok(Outcome::reply(r).check(clean, "queue/tmp empty afterwards"))
        })?;
    }
    per_ip(ctx)?;
    conn_floods(ctx)
}

fn per_ip(ctx: &mut Ctx) -> Result<(), SecError> {
    let input = format!("{} sessions from 127.0.0.3, then one more", PER_IP);
    ctx.row("connections", input, Expect::Class(4), On::Main, |ctx| {
        let src = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        let mut held = Vec::new();
        let mut greets = Vec::new();
        for _ in 0..PER_IP {
            let (c, g) = Client::open(ctx.main.addr, src)?;
            greets.push(g);
            held.push(c);
        }
        let (_c, extra) = Client::open(ctx.main.addr, src)?;
        let ok = greets.iter().all(|g| g.starts_with("220"));
        Ok(Outcome::reply(extra).check(ok, format!("the {PER_IP} before: {}", tally(&greets))))
    })
}

/// Open `n` connections (from `src(i)`) before reading any greeting, then read each.
fn many(ctx: &Ctx, n: usize, src: impl Fn(usize) -> IpAddr) -> Result<Vec<String>, SecError> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(Client::raw(ctx.main.addr, Some(src(i)))?);
    }
    Ok(conns.iter_mut().map(|c| c.reply()).collect())
}

/// Connections this process may hold at once (half the descriptor limit, at most `want`).
fn bounded(want: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|x| x.starts_with("Max open files"))
                .and_then(|x| {
                    x.split_whitespace()
                        .nth(3)
                        .and_then(|v| v.parse::<usize>().ok())
                })
        })
        .unwrap_or(1024);
    want.min(soft / 2 - 64)
}

fn conn_floods(ctx: &mut Ctx) -> Result<(), SecError> {
    let n = bounded(ctx.sizes.connections);
    ctx.row(
        "connections",
        format!("{n} connections from 127.0.0.4"),
        Expect::Class(4),
        On::Main,
        move |ctx| {
            let g = many(ctx, n, |_| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)))?;
            let greeted = g.iter().filter(|x| x.starts_with("220")).count();
            let last = g.last().cloned().unwrap_or_default();
            Ok(Outcome::reply(format!("{last} [{}]", tally(&g)))
                .check(greeted <= PER_IP, format!("{greeted} greeted")))
        },
    )?;
    let input = format!("{n} connections from {n} addresses 127.5.x.y");
    ctx.row(
        "connections",
        input,
        Expect::Class(4),
        On::Main,
        move |ctx| {
            let g = many(ctx, n, |i| {
                IpAddr::V4(Ipv4Addr::new(127, 5, (i / 250) as u8, (i % 250 + 1) as u8))
            })?;
            let answered = g
                .iter()
                .all(|x| x.starts_with("220") || x.starts_with("421"));
            let last = g.last().cloned().unwrap_or_default();
            Ok(Outcome::reply(format!("{last} [{}]", tally(&g))).check(
                answered,
                format!("every one answered 220 or 421 (concurrencyincoming {CONCURRENCY})"),
            ))
        },
    )?;
    let input = format!("{n} connections opened and closed at once, some reset (SO_LINGER 0)");
    ctx.row(
        "connections",
        input,
        Expect::Class(2),
        On::Main,
        move |ctx| {
            for i in 0..n {
                let s = super::client::connect(
                    ctx.main.addr,
                    Some(IpAddr::V4(Ipv4Addr::new(127, 6, 0, (i % 250 + 1) as u8))),
                )?;
                if i % 2 == 0 {
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    let _ = (&s).write_all(b"MAIL FROM:<a@exa");
                }
            }
            // The server reaps the dead sessions as it notices them; until then a 421 (all
            // slots taken) is right. The row waits for a fresh client to be served again.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let (mut c, g) = Client::open(ctx.main.addr, Some(PLAIN))?;
                c.send(b"QUIT\r\n");
                if g.starts_with("220") || std::time::Instant::now() >= deadline {
                    return Ok(Outcome::reply(g));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        },
    )
}

/// Data with a smuggled second transaction to joe-smuggled after `end`; the real message is
/// for fred. Neither may be split off.
fn smuggle_in(ctx: &mut Ctx, input: &str, end: &str, class: u8) -> Result<(), SecError> {
    let end = end.to_string();
    ctx.row("smuggling", input, Expect::Class(class), On::Main, move |ctx| {
        let mut c = session(ctx, PLAIN)?;
        let (t1, t2) = (ctx.token(), ctx.token());
        let data = format!(
            "Subject: {t1}\r\n\r\n{t1}\r\n{end}MAIL FROM:<{FROM}>\r\nRCPT TO:<joe-smuggled@heaven.af.mil>\r\nDATA\r\nSubject: {t2}\r\n\r\n{t2}\r\n.\r\n"
        );
        let r = transaction(&mut c, FROM, &[FRED], &data);
        ctx.sent(&t1, r.starts_with("250"), 1, Dest::Local(ctx.maildir("fred")));
        ctx.sent(&t2, false, 1, Dest::Local(ctx.maildir("joe")));
        c.send(b"QUIT\r\n");
        let rest = c.drain(6);
        Ok(Outcome::reply(r).check(true, format!("then: {}", rest.join(" ‖ "))))
    })
}

/// Relay out through the recorder: the wire must hold CRLF line ends only and a single end
/// of data, with the hostile lines dot-stuffed.
fn smuggle_out(
    ctx: &mut Ctx,
    input: &str,
    text: &'static str,
    want: &'static str,
) -> Result<(), SecError> {
    ctx.row("smuggling", input, Expect::Class(2), On::Main, move |ctx| {
        let mut c = session(ctx, RELAY)?;
        let t = ctx.token();
        let data = format!("Subject: {t}\r\n\r\n{t}\r\n{text}.\r\n");
        let r = transaction(&mut c, FROM, &["bill@far.example"], &data);
        ctx.sent(&t, r.starts_with("250"), 1, Dest::Remote);
        Ok(Outcome::reply(r).check(true, want))
    })?;
    wire_check(ctx, want)
}

/// Judge the last relayed transaction's wire bytes (amends the row just recorded).
fn wire_check(ctx: &mut Ctx, want: &str) -> Result<(), SecError> {
    let token = ctx.last_token();
    let txns = ctx.rec.txns();
    let found = txns
        .iter()
        .find(|t| super::fixture::tokens(&t.data).contains(&token));
    let Some(w) = found.map(|t| t.data.clone()) else {
        ctx.amend_check(false, "nothing relayed");
        return Ok(());
    };
    let bare = w.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => w.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || w[i - 1] != b'\r',
        _ => false,
    });
    let ends = w.windows(5).filter(|x| x == b"\r\n.\r\n").count();
    let has = String::from_utf8_lossy(&w).contains(want);
    ctx.amend_check(
        !bare && ends == 1 && has,
        format!(
            "wire: no bare CR/LF: {}, one end of data: {}, holds {:?}: {has}",
            !bare,
            ends == 1,
            want
        ),
    );
    Ok(())
}

pub fn smuggling(ctx: &mut Ctx) -> Result<(), SecError> {
    smuggle_in(
        ctx,
        "in: text, \\n.\\n, smuggled MAIL/RCPT/DATA",
        "\n.\n",
        4,
    )?;
    smuggle_in(
        ctx,
        "in: text, \\r\\n.\\n, smuggled MAIL/RCPT/DATA",
        "\r\n.\n",
        4,
    )?;
    smuggle_in(
        ctx,
        "in: text, \\n.\\r\\n, smuggled MAIL/RCPT/DATA",
        "\n.\r\n",
        4,
    )?;
    smuggle_in(
        ctx,
        "in: text, \\r.\\r, smuggled MAIL/RCPT/DATA",
        "\r.\r",
        2,
    )?;
    smuggle_in(
        ctx,
        "in: text, \\r.\\r\\n, smuggled MAIL/RCPT/DATA",
        "\r.\r\n",
        2,
    )?;
    smuggle_in(
        ctx,
        "in: text, \\r\\n.\\r, smuggled MAIL/RCPT/DATA",
        "\r\n.\r",
        2,
    )?;
    smuggle_out(
        ctx,
        "out (relay to far.example): text with \\r.\\r and a bare CR",
        "a\r.\rMAIL FROM:<evil@x>\rb\r\n",
        "a\r\n..\r\nMAIL FROM:<evil@x>\r\nb\r\n",
    )?;
    smuggle_out(
        ctx,
        "out: lines starting with dots",
        "..\r\n...x\r\n",
        "\r\n..\r\n...x\r\n",
    )?;
    inject_out(ctx)
}

/// `mta inject` takes LF text: a line `.` in it must leave dot-stuffed.
fn inject_out(ctx: &mut Ctx) -> Result<(), SecError> {
    let want = "x\r\n..\r\nMAIL FROM:<evil@x>\r\n";
    ctx.row(
        "smuggling",
        "out: mta inject of text with \\n.\\n and a smuggled MAIL",
        Expect::Exit(0),
        On::Main,
        |ctx| {
            let t = ctx.token();
            let mut child = std::process::Command::new(&ctx.mta)
                .args(["inject", "-f", "fred@heaven.af.mil", "--root"])
                .arg(&ctx.main.root)
                .arg("bill@far.example")
                .stdin(std::process::Stdio::piped())
                .spawn()?;
            let text = format!("Subject: {t}\n\n{t}\nx\n.\nMAIL FROM:<evil@x>\n");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())?;
            let code = child.wait()?.code().unwrap_or(-1);
            ctx.sent(&t, code == 0, 1, Dest::Remote);
            Ok(Outcome::reply(format!("exit {code}")).check(true, want))
        },
    )?;
    wire_check(ctx, want)
}
