//! Operations under attack: a full disk, kill -9 mid-DATA and after a 250, bad control files
//! at start and on SIGHUP, and CLI output into a closed pipe.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::fixture::{body, transaction, Ctx, Dest, Instance, On, Outcome};
use super::rows_protocol::{session, PLAIN, RELAY};
use super::{Expect, SecError, DATABYTES};

const FROM: &str = "attacker@example.net";
const FRED: &str = "fred@heaven.af.mil";

pub fn run(ctx: &mut Ctx) -> Result<(), SecError> {
    disk_full(ctx)?;
    kill9(ctx)?;
    bad_controls(ctx)?;
    sighup(ctx)?;
    closed_pipes(ctx)
}

/// A tmpfs mounted under the scratch directory (needs root).
fn mount(dir: &Path, size: &str) -> bool {
    std::fs::create_dir_all(dir).is_ok()
        && Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Fill the file system holding `path` until ENOSPC.
fn fill(path: &Path) -> Result<(), SecError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![7u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let small = [7u8; 512];
    while f.write_all(&small).is_ok() {}
    Ok(())
}

fn aux_message(ctx: &mut Ctx, size: usize) -> Result<String, SecError> {
    let aux = ctx.aux.as_ref().expect("aux server");
    let (mut c, _) = super::client::Client::open(aux.addr, Some(PLAIN))?;
    let md = aux.root.join("home/fred/Maildir");
    let t = ctx.token();
    let text = "f".repeat(998) + "\r\n";
    let r = transaction(&mut c, FROM, &[FRED], &body(&t, &text.repeat(size / 1000)));
    ctx.sent(&t, r.starts_with("250"), 1, Dest::Local(md));
    Ok(r)
}

fn disk_full(ctx: &mut Ctx) -> Result<(), SecError> {
    let dir = ctx.scratch.join("tmpfs");
    if !mount(&dir, "24m") {
        return ctx.row(
            "disk full",
            "mount a 24 MiB tmpfs (needs root)",
            Expect::Class(4),
            On::Nothing,
            |_| Ok(Outcome::reply("not run").check(false, "cannot mount a tmpfs: run as root")),
        );
    }
    let root = dir.join("mta");
    super::setup::init(&ctx.mta, &root, &["fred"])?;
    ctx.aux = Some(Instance::start(&ctx.mta, &root, "127.0.0.1:0")?);
    fill(&dir.join("filler"))?;
    for (input, size) in [
        ("1 KiB message", 1usize << 10),
        ("300 KiB message (streamed to queue/tmp)", 300 << 10),
        ("3 MiB message", 3 << 20),
    ] {
        ctx.row("disk full", input, Expect::Class(4), On::Aux, move |ctx| {
            let r = aux_message(ctx, size)?;
            let tmp = root_tmp(ctx);
            Ok(Outcome::reply(r).check(tmp == 0, format!("files left in queue/tmp: {tmp}")))
        })?;
    }
    std::fs::remove_file(dir.join("filler"))?;
    ctx.row(
        "disk full",
        "space freed: 100 KiB message",
        Expect::Class(2),
        On::Aux,
        |ctx| Ok(Outcome::reply(aux_message(ctx, 100 << 10)?)),
    )?;
    ctx.aux = None;
    let _ = Command::new("umount").arg("-l").arg(&dir).status();
    Ok(())
}

fn root_tmp(ctx: &Ctx) -> usize {
    let aux = ctx.aux.as_ref().expect("aux server");
    std::fs::read_dir(aux.root.join("queue/tmp")).map_or(0, |d| d.count())
}

fn wait_for(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn kill9(ctx: &mut Ctx) -> Result<(), SecError> {
    let input = "kill -9 after 300 KiB of DATA (in queue/tmp), then restart";
    ctx.row("crash", input, Expect::Closed, On::Main, |ctx| {
        let mut c = session(ctx, PLAIN)?;
        let t = ctx.token();
        super::fixture::start_data(&mut c, FROM, &[FRED]);
        let text = body(
            &t,
            &"k".repeat(998)
                .repeat(400)
                .replace(&"k".repeat(998), &("k".repeat(998) + "\r\n")),
        );
        c.send(&text.as_bytes()[..300 << 10]);
        let tmp = ctx.main.root.join("queue/tmp");
        let spooled = wait_for(30, || {
            std::fs::read_dir(&tmp).is_ok_and(|mut d| d.next().is_some())
        });
        ctx.main.crash_and_restart()?;
        let r = c.reply();
        ctx.sent(&t, false, 1, Dest::Local(ctx.maildir("fred")));
        let clean = wait_for(30, || std::fs::read_dir(&tmp).map_or(0, |d| d.count()) == 0);
        let note = format!(
            "partial message was in queue/tmp: {spooled}; queue/tmp empty after restart: {clean}"
        );
        Ok(Outcome::reply(r).check(spooled && clean, note))
    })?;
    ctx.row(
        "crash",
        "kill -9 right after the 250 to the dot, then restart",
        Expect::Class(2),
        On::Main,
        |ctx| {
            let mut c = session(ctx, PLAIN)?;
            let t = ctx.token();
            let r = transaction(&mut c, FROM, &[FRED], &body(&t, ""));
            ctx.main.crash_and_restart()?;
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

/// Start `mta run` on a fresh installation with one bad control file; it must exit 111
/// naming the file and line.
fn bad_controls(ctx: &mut Ctx) -> Result<(), SecError> {
    let cases: [(&str, &str, &str); 13] = [
        ("databytes", "abc\n", "control/databytes line 1"),
        ("databytes", "-1\n", "control/databytes line 1"),
        ("databytes", "1e6\n", "control/databytes line 1"),
        ("timeoutsmtpd", "soon\n", "control/timeoutsmtpd line 1"),
        (
            "concurrencyperip",
            "-5\n",
            "control/concurrencyperip line 1",
        ),
        (
            "concurrencyincoming",
            "99999999999999999999999\n",
            "control/concurrencyincoming line 1",
        ),
        ("dataminrate", "1.5\n", "control/dataminrate line 1"),
        (
            "nullsenderonercpt",
            "2\n",
            "control/nullsenderonercpt line 1",
        ),
        ("realrcptto", "yes\n", "control/realrcptto line 1"),
        (
            "smtp.rules",
            "127.0.0.1:allow\n10.:allow,DATABYTES=\"lots\"\n",
            "control/smtp.rules line 2",
        ),
        (
            "smtp.rules",
            ":allow\nthis is not a rule\n",
            "control/smtp.rules line 2",
        ),
        (
            "virtualdomains",
            "virt.example:fred\nnocolon\n",
            "control/virtualdomains line 2",
        ),
        (
            "smtproutes",
            "far.example:relay.example:port\n",
            "control/smtproutes line 1",
        ),
    ];
    for (i, (file, text, want)) in cases.into_iter().enumerate() {
        let input = format!("start with control/{file} = {:?}", text.trim_end());
        ctx.row(
            "control files",
            input,
            Expect::Exit(111),
            On::Nothing,
            move |ctx| {
                let root = ctx.scratch.join(format!("bad{i}"));
                super::setup::init(&ctx.mta, &root, &["fred"])?;
                std::fs::write(root.join("control").join(file), text)?;
                let (code, err) = run_to_exit(&ctx.mta, &root)?;
                let line = err.lines().next().unwrap_or_default().to_string();
                Ok(Outcome::reply(format!("exit {code}: {line}"))
                    .check(err.contains(want), format!("names {want:?}")))
            },
        )?;
    }
    Ok(())
}

fn run_to_exit(mta: &Path, root: &Path) -> Result<(i32, String), SecError> {
    let err_path = root.join("stderr");
    let mut child = Command::new(mta)
        .args(["run", "--listen", "127.0.0.1:0", "--root"])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()?;
    let mut code = None;
    wait_for(20, || {
        code = child.try_wait().ok().flatten();
        code.is_some()
    });
    let Some(status) = code else {
        let _ = child.kill();
        let _ = child.wait();
        return Ok((-1, "still running after 20 s".into()));
    };
    Ok((
        status.code().unwrap_or(-1),
        std::fs::read_to_string(err_path)?,
    ))
}

/// A bad file on SIGHUP: the complaint is logged, the old settings stay.
fn sighup(ctx: &mut Ctx) -> Result<(), SecError> {
    let too_big = format!("MAIL FROM:<{FROM}> SIZE={}", DATABYTES + 1);
    let cases: [(&str, &str, String, u8, bool); 2] = [
        ("databytes", "abc\n", too_big, 5, false),
        (
            "smtp.rules",
            "127.0.0.2:allow,RELAYCLIENT=\"\"\n10.:allow,DATABYTES=\"lots\"\n",
            "RCPT TO:<bill@far.example>".into(),
            2,
            true,
        ),
    ];
    for (file, bad, probe, class, relay) in cases {
        let input = format!(
            "SIGHUP with control/{file} = {:?}, then {probe}",
            bad.trim_end()
        );
        ctx.row(
            "control files",
            input,
            Expect::Class(class),
            On::Main,
            move |ctx| {
                let path = ctx.main.root.join("control").join(file);
                let good = std::fs::read_to_string(&path)?;
                let before = ctx
                    .main
                    .log_text()
                    .matches("keeping the old settings")
                    .count();
                std::fs::write(&path, bad)?;
                ctx.main.signal("-HUP")?;
                let complained = wait_for(20, || {
                    ctx.main
                        .log_text()
                        .matches("keeping the old settings")
                        .count()
                        > before
                });
                let mut c = session(ctx, if relay { RELAY } else { PLAIN })?;
                if relay {
                    c.cmd(&format!("MAIL FROM:<{FROM}>"));
                }
                let r = c.cmd(&probe);
                std::fs::write(&path, good)?;
                ctx.main.signal("-HUP")?;
                Ok(Outcome::reply(r).check(complained, "stderr: \"... keeping the old settings\""))
            },
        )?;
    }
    Ok(())
}

fn closed_pipes(ctx: &mut Ctx) -> Result<(), SecError> {
    let mta = ctx.mta.display().to_string();
    let root = ctx.main.root.display().to_string();
    for args in ["queue stat", "queue list"] {
        let cmd = format!("set -o pipefail; {mta} {args} --root {root} | head -1 >/dev/null");
        let input = format!("mta {args} | head -1");
        ctx.row("cli", input, Expect::Exit(0), On::Nothing, move |_| {
            let o = Command::new("bash").args(["-c", &cmd]).output()?;
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            let code = o.status.code().unwrap_or(-1);
            Ok(Outcome::reply(format!("exit {code}")).check(
                !err.contains("panicked"),
                format!("stderr: {:?}", err.trim()),
            ))
        })?;
    }
    for args in [&["queue", "stat"][..], &["queue", "list"], &["--help"]] {
        let input = format!(
            "mta {} with stdout a pipe whose reader is gone",
            args.join(" ")
        );
        let root = PathBuf::from(&root);
        ctx.row("cli", input, Expect::Exit(0), On::Nothing, move |ctx| {
            let (reader, writer) = std::io::pipe()?;
            drop(reader);
            let o = Command::new(&ctx.mta)
                .args(args)
                .arg("--root")
                .arg(&root)
                .stdout(writer)
                .output()?;
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            let code = o
                .status
                .code()
                .map_or(format!("signal {:?}", o.status), |c| c.to_string());
            Ok(Outcome::reply(format!("exit {code}")).check(
                !err.contains("panicked"),
                format!("stderr: {:?}", err.trim()),
            ))
        })?;
    }
    Ok(())
}
