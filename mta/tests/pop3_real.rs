//! POP3 on a real host: `mta run --listen-pop3` serving mail it delivered to real clients
//! (Python's poplib, fetchmail), logins through a checkpassword program.
//! TLS: poplib uses STLS and POP3S, fetchmail STLS (the installation's self-signed certificate).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn mta() -> &'static str {
    env!("CARGO_BIN_EXE_mta")
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pop3")
}

/// A running `mta run` and POP3 server; killed when dropped.
struct Pop3Server {
    children: Vec<Child>,
    smtp: SocketAddr,
    pop3: SocketAddr,
    /// POP3 inside TLS (with `mta run --listen-pop3s`).
    pop3s: Option<SocketAddr>,
    root: tempfile::TempDir,
}

impl Drop for Pop3Server {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The address a process printed as `PREFIX ADDR` on its first line of output.
fn printed(child: &mut Child, prefix: &str) -> SocketAddr {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("unexpected output {line:?}"))
        .parse()
        .unwrap()
}

/// An installation for fred and joe whose logins go through tests/pop3/checkpw.py.
/// `separate`: as root `mta init` has `mta run` give up root (control/queueuser), so POP3 is
/// served by `mta pop3d`, which keeps it; otherwise `mta run --listen-pop3`, with root kept.
fn start(separate: bool) -> Pop3Server {
    let root = common::installation(mta(), &["fred", "joe"]);
    let checker = format!("{} /bin/true\n", scripts().join("checkpw.py").display());
    std::fs::write(root.path().join("control/checkpassword"), checker).unwrap();
    if !separate {
        let _ = std::fs::remove_file(root.path().join("control/queueuser"));
    }
    let pop3_args: &[&str] = if separate {
        &[]
    } else {
        &[
            "--listen-pop3",
            "127.0.0.1:0",
            "--listen-pop3s",
            "127.0.0.1:0",
        ]
    };
    let (child, addrs) = common::spawn_with(mta(), root.path(), pop3_args, "mta=info");
    let mut children = vec![child];
    let pop3 = if separate {
        let mut c = Command::new(mta())
            .args(["pop3d", "--listen", "127.0.0.1:0", "--root"])
            .arg(root.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let a = printed(&mut c, "mta: listening for POP3 on ");
        children.push(c);
        a
    } else {
        addrs[1]
    };
    Pop3Server {
        children,
        smtp: addrs[0],
        pop3,
        pop3s: addrs.get(2).copied(),
        root,
    }
}

fn inject(root: &Path, rcpt: &str, body: &[u8]) {
    let mut c = Command::new(mta())
        .args(["inject", "--root"])
        .arg(root)
        .arg(rcpt)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(body).unwrap();
    assert!(c.wait().unwrap().success());
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Two messages for fred, one small with a line that needs dot-stuffing, one of 3 MB.
fn deliver_two(s: &Pop3Server) -> PathBuf {
    inject(
        s.root.path(),
        "fred",
        b"Subject: pop me\n\nfirst line\n.leading dot survives\n",
    );
    let mut big = b"Subject: big\n\n".to_vec();
    for _ in 0..43_000 {
        big.extend_from_slice(&[b'x'; 70]);
        big.push(b'\n');
    }
    inject(s.root.path(), "fred", &big);
    let md = s.root.path().join("home/fred/Maildir");
    common::eventually("delivery to fred", 30, || names(&md.join("new")).len() == 2);
    md
}

fn python(port: u16, scenario: &str) {
    python_with(port, scenario, &[]);
}

fn python_with(port: u16, scenario: &str, more: &[String]) {
    let out = Command::new("python3")
        .arg(scripts().join("poplib_client.py"))
        .arg(port.to_string())
        .arg(scenario)
        .args(more)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("OK"),
        "{scenario}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn poplib_reads_deletes_at_quit_and_uidl_is_stable() {
    let s = start(false);
    let md = deliver_two(&s);
    python(s.pop3.port(), "bad-password");
    // STLS, then POP3S (the installation's self-signed control/servercert.pem).
    let pop3s = s.pop3s.unwrap().port().to_string();
    python_with(s.pop3.port(), "tls", &[pop3s]);
    python(s.pop3.port(), "read-and-delete");
    assert!(names(&md.join("new")).is_empty(), "new/ was emptied");
    let cur = names(&md.join("cur"));
    assert_eq!(cur.len(), 1, "{cur:?}");
    assert!(cur[0].ends_with(":2,"), "{cur:?}");
    let _ = s.smtp;
}

/// Install a Debian package unless its program is there; false (skip) when that fails.
fn have_or_install(program: &str, package: &str) -> bool {
    let found = || {
        Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if found() {
        return true;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: {program} is missing and only root can install {package}");
        return false;
    }
    let ok = Command::new("apt-get")
        .args(["install", "-y", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok || !found() {
        eprintln!("SKIP: cannot install {package}");
        return false;
    }
    true
}

#[test]
fn fetchmail_retrieves_and_deletes_what_mta_run_delivered() {
    if !have_or_install("fetchmail", "fetchmail") {
        return;
    }
    // The root installation's layout: `mta run` as the queue user, `mta pop3d` as root.
    let s = start(true);
    let md = deliver_two(&s);
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let rc = home.path().join("fetchmailrc");
    // STLS (the installation's self-signed certificate: not checked).
    let text = format!(
        "set no syslog\npoll 127.0.0.1 with protocol pop3 port {}:\n  user \"fred\" there \
         with password \"fred's secret\" is root here\n  sslproto TLS1.2+\n  no sslcertck\n  mda \"/bin/sh -c 'cat > {}/msg.$$'\"\n",
        s.pop3.port(),
        out.display()
    );
    std::fs::write(&rc, text).unwrap();
    std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let run = Command::new("fetchmail")
        .arg("-f")
        .arg(&rc)
        .args(["--nodetach", "-v"])
        .env("HOME", home.path())
        .env("FETCHMAILHOME", home.path())
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(run.status.code(), Some(0), "fetchmail: {log}");
    let got: Vec<String> = names(&out)
        .iter()
        .map(|n| std::fs::read_to_string(out.join(n)).unwrap())
        .collect();
    assert_eq!(got.len(), 2, "{log}");
    assert!(
        got.iter().any(|m| m.contains(".leading dot survives")),
        "{got:?}"
    );
    let big = got.iter().find(|m| m.contains("Subject: big")).unwrap();
    assert_eq!(big.matches(&"x".repeat(70)).count(), 43_000);
    assert!(!log.contains("not the expected length"), "{log}");
    assert!(log.contains("POP3> STLS"), "{log}");
    // fetchmail deletes what it retrieved: the mailbox is empty.
    assert!(names(&md.join("new")).is_empty() && names(&md.join("cur")).is_empty());
}

const UID: u32 = 4242;
const GID: u32 = 4343;

/// A root installation where fred is uid 4242 / gid 4343 (no account needed) and his home
/// and Maildir are his alone (mode 0700): `mta run --listen-pop3` gives root up for the queue
/// user. `None` (skip) when not root.
fn start_separated() -> Option<Pop3Server> {
    let root = common::installation(mta(), &["fred", "joe"]);
    let r = root.path();
    if !r.join("control/queueuser").exists() {
        eprintln!("SKIP: not root, so mta run keeps its user and there is nothing to give up");
        return None;
    }
    let checker = format!("{} /bin/true\n", scripts().join("checkpw.py").display());
    std::fs::write(r.join("control/checkpassword"), checker).unwrap();
    let fred = r.join("home/fred");
    let joe = r.join("home/joe");
    let assign = format!(
        "=fred:fred:{UID}:{GID}:{f}:::\n=joe:joe:{UID}1:{GID}1:{j}:::\n.\n",
        f = fred.display(),
        j = joe.display()
    );
    std::fs::write(r.join("users/assign"), assign).unwrap();
    for d in ["", "Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"] {
        std::os::unix::fs::chown(fred.join(d), Some(UID), Some(GID)).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o700);
        std::fs::set_permissions(fred.join(d), mode).unwrap();
    }
    let args = ["--listen-pop3", "127.0.0.1:0"];
    let (child, addrs) = common::spawn_with(mta(), r, &args, "mta=info");
    Some(Pop3Server {
        children: vec![child],
        smtp: addrs[0],
        pop3: addrs[1],
        pop3s: None,
        root,
    })
}

/// `(pid, status)` of every thread of the children of `parent` whose command line holds
/// `word`.
fn threads_of_child(parent: u32, word: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        if ppid != Some(parent) || !String::from_utf8_lossy(&cmd).contains(word) {
            continue;
        }
        let tasks = std::fs::read_dir(format!("/proc/{p}/task")).unwrap();
        for t in tasks.flatten() {
            let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            out.push((p, st));
        }
    }
    out
}

/// A status file's `Uid:` or `Gid:` line: real, effective, saved and filesystem ids.
fn ids(status: &str, which: &str) -> Vec<u32> {
    let line = status.lines().find(|l| l.starts_with(which)).unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect()
}

/// Privilege separation with POP3 (qmail-popup → checkpassword → qmail-pop3d): `mta run`
/// runs as the queue user, which cannot open fred's 0700 Maildir; its POP3 helper keeps
/// root, checks the password and works on the mailbox in a thread whose filesystem identity
/// is fred's (visible in /proc while the session is open). poplib reads and deletes; a wrong
/// password is refused; every file stays fred's, in a Maildir any reader understands.
#[test]
fn listen_pop3_after_giving_up_root_serves_each_mailbox_as_its_owner() {
    let Some(s) = start_separated() else { return };
    let pid = s.children[0].id();
    let md = deliver_two(&s);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(ids(&status, "Uid:").iter().all(|&u| u != 0 && u != UID));
    let helper = threads_of_child(pid, "pop3helper");
    assert!(!helper.is_empty(), "a POP3 helper runs");
    assert_eq!(
        ids(&helper[0].1, "Uid:"),
        vec![0; 4],
        "the helper keeps root"
    );

    // While a session is open, one helper thread acts as fred on the filesystem.
    let (mut w, mut r) = common::connect(s.pop3);
    let mut line = || {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        l
    };
    assert!(line().starts_with("+OK <"));
    w.write_all(b"USER fred\r\nPASS fred's secret\r\nSTAT\r\n")
        .unwrap();
    assert_eq!(line(), "+OK\r\n");
    assert!(line().starts_with("+OK"), "logged in");
    assert!(line().starts_with("+OK 2 "), "two messages");
    let as_fred: Vec<_> = threads_of_child(pid, "pop3helper")
        .into_iter()
        .filter(|(_, st)| ids(st, "Uid:")[3] == UID && ids(st, "Gid:")[3] == GID)
        .collect();
    assert_eq!(as_fred.len(), 1, "one thread works as fred");
    let groups = as_fred[0]
        .1
        .lines()
        .find(|l| l.starts_with("Groups:"))
        .unwrap();
    assert_eq!(groups.split_whitespace().nth(1), Some("4343"), "{groups}");
    w.write_all(b"QUIT\r\n").unwrap();
    assert!(line().starts_with("+OK"));
    common::eventually("the session's thread ends", 20, || {
        threads_of_child(pid, "pop3helper")
            .iter()
            .all(|(_, st)| ids(st, "Uid:")[3] != UID)
    });

    python(s.pop3.port(), "bad-password");
    python(s.pop3.port(), "read-and-delete");
    assert!(names(&md.join("new")).is_empty(), "new/ was emptied");
    let cur = names(&md.join("cur"));
    assert_eq!(cur.len(), 1, "{cur:?}");
    assert!(cur[0].ends_with(":2,"), "{cur:?}");
    use std::os::unix::fs::MetadataExt;
    for p in [md.clone(), md.join("cur"), md.join("cur").join(&cur[0])] {
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid()), (UID, GID), "{} is fred's", p.display());
    }
    let m = std::fs::metadata(&md).unwrap();
    assert_eq!(m.mode() & 0o777, 0o700);
    let log = std::fs::read_to_string(s.root.path().join("stderr")).unwrap();
    assert!(log.contains("fred logged in, 2 messages"), "{log}");

    // A dead helper stops the server (111) for its supervisor, as a dead lspawn does.
    let mut s = s;
    let helper = threads_of_child(pid, "pop3helper")[0].0;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = s.children[0].wait().unwrap();
    assert_eq!(status.code(), Some(111));
    let log = std::fs::read_to_string(s.root.path().join("stderr")).unwrap();
    assert!(
        log.contains("the POP3 helper stopped unexpectedly"),
        "{log}"
    );
}
