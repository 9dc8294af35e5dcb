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

/// An `mta run` that gave up root cannot act as the mailbox's owner: the login says so.
#[test]
fn listen_pop3_after_giving_up_root_refuses_logins_with_the_reason() {
    let root = common::installation(mta(), &["fred"]);
    if !root.path().join("control/queueuser").exists() {
        eprintln!("SKIP: not root, so mta run keeps its user and there is nothing to give up");
        return;
    }
    let checker = format!("{} /bin/true\n", scripts().join("checkpw.py").display());
    std::fs::write(root.path().join("control/checkpassword"), checker).unwrap();
    let args = ["--listen-pop3", "127.0.0.1:0"];
    let (child, addrs) = common::spawn_with(mta(), root.path(), &args, "mta=info");
    let _s = Pop3Server {
        children: vec![child],
        smtp: addrs[0],
        pop3: addrs[1],
        pop3s: None,
        root,
    };
    let (mut w, mut r) = common::connect(addrs[1]);
    let mut line = || {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        l
    };
    assert!(line().starts_with("+OK <"));
    w.write_all(b"USER fred\r\nPASS fred's secret\r\n").unwrap();
    assert_eq!(line(), "+OK\r\n");
    let refused = line();
    assert!(
        refused.starts_with("-ERR mta run runs as uid ") && refused.contains("not as root"),
        "{refused}"
    );
}
