//! Local delivery attacks: a user's links to what only root may read or write and a uid 0
//! entry must make deliveries defer, never happen as root.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::fixture::{transaction, Ctx, Dest, On, Outcome};
use super::rows_protocol::{session, PLAIN};
use super::{Expect, SecError};

const FROM: &str = "attacker@example.net";

fn deferrals(ctx: &Ctx) -> usize {
    ctx.main.log_text().matches(": deferral: ").count()
}

fn files_in(dir: &PathBuf) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.count())
        .unwrap_or(usize::MAX)
}

/// Accepted over SMTP, then the delivery must defer with `why` in the log and `untouched`
/// must stay empty.
fn deferred(
    ctx: &mut Ctx,
    input: &str,
    rcpt: &'static str,
    why: &'static str,
    untouched: PathBuf,
) -> Result<(), SecError> {
    ctx.row(
        "local delivery",
        input,
        Expect::Class(2),
        On::Main,
        move |ctx| {
            let before = deferrals(ctx);
            let mut c = session(ctx, PLAIN)?;
            let t = ctx.token();
            let r = transaction(&mut c, FROM, &[rcpt], &super::fixture::body(&t, ""));
            let deadline = Instant::now() + Duration::from_secs(60);
            while deferrals(ctx) <= before && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let log = ctx.main.log_text();
            let said = log.contains(why);
            let empty = files_in(&untouched) == 0;
            let thief = ctx
                .rec
                .txns()
                .iter()
                .any(|x| x.rcpts.iter().any(|r| r.contains("thief")));
            let ok = said && empty && !thief && deferrals(ctx) > before;
            let note = format!(
            "deferred: {}; log says {why:?}: {said}; {} empty: {empty}; nothing sent to thief: {}",
            deferrals(ctx) > before,
            untouched.strip_prefix(&ctx.main.root).unwrap_or(&untouched).display(),
            !thief
        );
            Ok(Outcome::reply(r).check(ok, note))
        },
    )
}

pub fn run(ctx: &mut Ctx) -> Result<(), SecError> {
    let root = ctx.main.root.clone();
    deferred(
        ctx,
        "fred's .qmail-peek is a symlink to a root-only file (holding &thief@far.example)",
        "fred-peek@heaven.af.mil",
        "Unable_to_read_.qmail-peek",
        root.join("vault/new"),
    )?;
    deferred(
        ctx,
        "fred's .qmail-steal delivers to ./vault/, a symlink to a root-only Maildir",
        "fred-steal@heaven.af.mil",
        "deferral",
        root.join("vault/new"),
    )?;
    deferred(
        ctx,
        "mallory's Maildir is a symlink to a root-only Maildir",
        "mallory@heaven.af.mil",
        "deferral",
        root.join("vault2/new"),
    )?;
    deferred(
        ctx,
        "users/assign entry toor with uid 0",
        "toor@heaven.af.mil",
        "Not_allowed_to_perform_deliveries_as_root",
        root.join("home/toor/Maildir/new"),
    )?;
    deferred(
        ctx,
        "fred's .qmail-gw is group-writable",
        "fred-gw@heaven.af.mil",
        "deferral",
        root.join("vault/new"),
    )?;
    program(ctx)
}

/// fred's `|program` line writes its uid: it must be fred's (65534), not root's.
fn program(ctx: &mut Ctx) -> Result<(), SecError> {
    let input = "fred's .qmail-prog runs |id -u > uid-of-program";
    ctx.row("local delivery", input, Expect::Class(2), On::Main, |ctx| {
        let out = ctx.main.root.join("home/fred/uid-of-program");
        let mut c = session(ctx, PLAIN)?;
        let t = ctx.token();
        let r = transaction(
            &mut c,
            FROM,
            &["fred-prog@heaven.af.mil"],
            &super::fixture::body(&t, ""),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut uid = String::new();
        while uid.is_empty() && Instant::now() < deadline {
            uid = std::fs::read_to_string(&out)
                .unwrap_or_default()
                .trim()
                .to_string();
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Dest::Remote;
        Ok(Outcome::reply(r).check(
            !uid.is_empty() && uid != "0",
            format!("the program ran as uid {uid:?}"),
        ))
    })
}
