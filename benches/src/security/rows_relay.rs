//! Relay tricks and path traversal: one RCPT per row from an ordinary client (or the
//! relaying one), and a whole message whenever the recipient is meant to be taken.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::client::Client;
use super::fixture::{Ctx, Dest, On, Outcome};
use super::{Expect, SecError};

const PLAIN: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const RELAY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const DENIED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
const SENDER: &str = "attacker@example.net";

/// Where a recipient that should be taken must arrive.
#[derive(Clone, Copy)]
enum To {
    Refused,
    Fred,
    Joe,
    Remote,
}

fn dest(ctx: &Ctx, to: To) -> Option<Dest> {
    match to {
        To::Refused => None,
        To::Fred => Some(Dest::Local(ctx.maildir("fred"))),
        To::Joe => Some(Dest::Local(ctx.maildir("joe"))),
        To::Remote => Some(Dest::Remote),
    }
}

/// One row: RCPT TO:<rcpt> from `src`; a whole message follows when the RCPT is meant to be
/// taken, so its delivery (exactly once) is checked too.
fn rcpt(ctx: &mut Ctx, cat: &'static str, rcpt: &str, src: IpAddr, to: To) -> Result<(), SecError> {
    let expect = match to {
        To::Refused => Expect::Class(5),
        _ => Expect::Class(2),
    };
    let who = match src {
        PLAIN => String::new(),
        RELAY => "from 127.0.0.2 (RELAYCLIENT, via the [::] listener): ".into(),
        ip => format!("from {ip}: "),
    };
    let input = format!("{who}RCPT TO:<{rcpt}>");
    let rcpt = rcpt.to_string();
    ctx.row(cat, input, expect, On::Main, move |ctx| {
        let port = ctx.main.addr.port();
        let server = std::net::SocketAddr::new(if src.is_ipv6() { src } else { PLAIN }, port);
        let (mut c, greeting) = Client::open(server, Some(src))?;
        if !greeting.starts_with("220") {
            return Ok(Outcome::reply(greeting));
        }
        c.cmd("HELO attacker.example");
        let Some(dest) = dest(ctx, to) else {
            c.cmd(&format!("MAIL FROM:<{SENDER}>"));
            return Ok(Outcome::reply(c.cmd(&format!("RCPT TO:<{rcpt}>"))));
        };
        let out = Outcome::reply(ctx.message(&mut c, SENDER, &[&rcpt], dest, ""));
        if !matches!(to, To::Joe) {
            return Ok(out);
        }
        let found = named_like(&ctx.main.root, "pwned", 6);
        Ok(out.check(found.is_empty(), format!("files named *pwned*: {found:?}")))
    })
}

/// Relay tricks: none of these may be taken from an ordinary client unless local.
pub fn run(ctx: &mut Ctx) -> Result<(), SecError> {
    const C: &str = "relay";
    let refused = [
        "victim%far.example@heaven.af.mil",
        "victim%far.example",
        "far.example!victim",
        "far.example!victim@heaven.af.mil",
        "@heaven.af.mil:victim@far.example",
        "@heaven.af.mil,@virt.example:victim@far.example",
        "\"victim@far.example\"@heaven.af.mil",
        "\"victim%far.example\"@heaven.af.mil",
        "victim\\@far.example@heaven.af.mil",
        "victim@[1.2.3.4]",
        "victim@[127.0.0.1]",
        "victim@[IPv6:::1]",
        "victim@127.0.0.1",
        "victim@far.example@heaven.af.mil",
        "victim@heaven.af.mil@far.example",
        "fred@heaven.af.mil@heaven.af.mil",
        "victim",
        "victim@far.example",
        "victim@FAR.EXAMPLE",
        "victim@far.example.",
        "victim@heaven.af.mil.far.example",
        "victim@heaven.af.mil.",
        "fred%heaven.af.mil@heaven.af.mil",
        "sales%far.example@virt.example",
        "victim!far.example@virt.example",
    ];
    for r in refused {
        rcpt(ctx, C, r, PLAIN, To::Refused)?;
    }
    rcpt(ctx, C, "@far.example:fred@heaven.af.mil", PLAIN, To::Fred)?;
    rcpt(ctx, C, "fred", PLAIN, To::Fred)?;
    rcpt(ctx, C, "fred@HEAVEN.AF.MIL", PLAIN, To::Fred)?;
    rcpt(ctx, C, "FRED@Heaven.Af.Mil", PLAIN, To::Fred)?;
    rcpt(ctx, C, "sales@virt.example", PLAIN, To::Fred)?;
    rcpt(ctx, C, "postmaster@heaven.af.mil", PLAIN, To::Fred)?;
    rcpt(ctx, C, "bill@far.example", RELAY, To::Remote)?;
    rcpt(ctx, C, "bill%far.example@heaven.af.mil", RELAY, To::Remote)?;
    rcpt(ctx, C, "victim@far.example", DENIED, To::Refused)?;
    if std::net::TcpListener::bind("[::1]:0").is_ok() && ctx.main.listen.starts_with('[') {
        rcpt(
            ctx,
            C,
            "victim@far.example",
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            To::Refused,
        )?;
    }
    Ok(())
}

/// Path traversal and hostile bytes in local parts: fred has no `.qmail-default` (unknown
/// extensions are refused at RCPT), joe has one (any extension lands in joe's Maildir).
pub fn paths(ctx: &mut Ctx) -> Result<(), SecError> {
    const C: &str = "paths";
    let long = "a".repeat(200);
    let too_long = "b".repeat(1000);
    let refused = [
        "fred-../../etc/passwd@heaven.af.mil".to_string(),
        "../etc@heaven.af.mil".into(),
        "fred/../joe@heaven.af.mil".into(),
        "/etc/passwd@heaven.af.mil".into(),
        ".qmail@heaven.af.mil".into(),
        ".fred@heaven.af.mil".into(),
        "fred-.@heaven.af.mil".into(),
        "fred-x/y@heaven.af.mil".into(),
        "fred-.qmail-../x@heaven.af.mil".into(),
        format!("fred-{long}@heaven.af.mil"),
        format!("joe-{too_long}@heaven.af.mil"),
        "fred\0@heaven.af.mil".into(),
        "joe-a\0b@heaven.af.mil".into(),
        "joe-a\x01b@heaven.af.mil".into(),
        "joe-\x1b[31mred@heaven.af.mil".into(),
    ];
    for r in &refused {
        rcpt(ctx, C, r, PLAIN, To::Refused)?;
    }
    let joe = [
        "joe-../../../tmp/pwned@heaven.af.mil".to_string(),
        "joe-..@heaven.af.mil".into(),
        "joe-.qmail-../pwned@heaven.af.mil".into(),
        "joe-x/../../pwned@heaven.af.mil".into(),
        "JOE-../PWNED@HEAVEN.AF.MIL".into(),
        format!("joe-{long}@heaven.af.mil"),
    ];
    for r in &joe {
        rcpt(ctx, C, r, PLAIN, To::Joe)?;
    }
    Ok(())
}

/// Paths under `dir` (to `depth` levels) whose name contains `what`, case-insensitively; and
/// the same for /tmp itself.
fn named_like(dir: &std::path::Path, what: &str, depth: usize) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), depth), ("/tmp".into(), 1)];
    while let Some((d, left)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name()
                .to_string_lossy()
                .to_lowercase()
                .contains(what)
            {
                found.push(p.clone());
            }
            let real_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if real_dir && left > 1 {
                stack.push((p, left - 1));
            }
        }
    }
    found
}
