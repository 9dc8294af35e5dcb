//! The Maildir `mta run` delivers to and serves over POP3 stays Dovecot's too (Debian's
//! dovecot-imapd, configured privately on a loopback port): mail delivered by `mta`, some
//! of it read and deleted over mta's POP3 (moved to `cur/` as `NAME:2,`), is read by Dovecot
//! over IMAP; after Dovecot marked it seen (renamed to `NAME:2,S`, its index files beside),
//! mta's POP3 lists the same messages under the same UIDLs.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const MTA: &str = env!("CARGO_BIN_EXE_mta");
const UID: u32 = 4242;
const GID: u32 = 4343;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pop3/maildir_clients.py")
}

/// Run a client scenario; its lines before `OK`, sorted.
fn client(scenario: &str, port: u16, more: &[&str]) -> Vec<String> {
    let out = Command::new("python3")
        .arg(script())
        .arg(scenario)
        .arg(port.to_string())
        .args(more)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.ends_with("OK\n"),
        "{scenario}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| *l != "OK")
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

fn inject(root: &Path, subject: &str) {
    let mut c = Command::new(MTA)
        .args(["inject", "fred", "--root"])
        .arg(root)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let msg = format!("Subject: {subject}\n\nx\n");
    c.stdin.take().unwrap().write_all(msg.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success());
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// Dovecot on its own: a master process, killed when dropped.
struct Dovecot(Child);

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start Dovecot (IMAP only, on `port` of loopback) for fred (uid 4242, password `secret`,
/// home `home`), with every file of its own under `dir`.
fn dovecot(dir: &Path, home: &Path, port: u16) -> Dovecot {
    for d in ["run", "state"] {
        std::fs::create_dir(dir.join(d)).unwrap();
    }
    let users = dir.join("users");
    let line = format!("fred:{{PLAIN}}secret:{UID}:{GID}::{}::\n", home.display());
    std::fs::write(&users, line).unwrap();
    let d = dir.display();
    let conf = format!(
        "base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/log\n\
         mail_location = maildir:~/Maildir\nfirst_valid_uid = 1\nssl = no\n\
         protocols = imap\nlisten = 127.0.0.1\ndisable_plaintext_auth = no\n\
         service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    \
         port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
         passdb {{\n  driver = passwd-file\n  args = {u}\n}}\n\
         userdb {{\n  driver = passwd-file\n  args = {u}\n}}\n",
        u = users.display()
    );
    std::fs::write(dir.join("dovecot.conf"), conf).unwrap();
    let child = Command::new("dovecot")
        .arg("-c")
        .arg(dir.join("dovecot.conf"))
        .arg("-F")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dv = Dovecot(child);
    common::eventually("Dovecot accepting IMAP", 30, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    dv
}

/// A free loopback port (Dovecot takes a fixed one from its configuration).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn dovecot_reads_what_mta_delivered_and_pop3_left_and_mta_reads_dovecots_flags() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIP: needs root (Dovecot's user switch, fred's own Maildir)");
        return;
    }
    if !common::have("dovecot", "dovecot-imapd") || !common::have("doveadm", "dovecot-core") {
        return;
    }
    let root = common::installation(MTA, &["fred"]);
    let r = root.path();
    let checker = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pop3/checkpw.py");
    std::fs::write(
        r.join("control/checkpassword"),
        format!("{} /bin/true\n", checker.display()),
    )
    .unwrap();
    let fred = r.join("home/fred");
    let assign = format!("=fred:fred:{UID}:{GID}:{}:::\n.\n", fred.display());
    std::fs::write(r.join("users/assign"), assign).unwrap();
    for d in ["", "Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"] {
        std::os::unix::fs::chown(fred.join(d), Some(UID), Some(GID)).unwrap();
        std::fs::set_permissions(fred.join(d), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let (mut child, addrs) =
        common::spawn_with(MTA, r, &["--listen-pop3", "127.0.0.1:0"], "mta=info");
    let pop3 = addrs[1].port();
    let md = fred.join("Maildir");
    inject(r, "first");
    inject(r, "second");
    common::eventually("two deliveries", 30, || count(&md.join("new")) == 2);
    let kept = client("pop-delete", pop3, &["first"]);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].starts_with("second "));
    inject(r, "third");
    common::eventually("the third delivery", 30, || count(&md.join("new")) == 1);

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let dv = dovecot(dir.path(), &fred, port);
    let seen = client("imap-read", port, &[]);
    let subjects: Vec<&str> = seen.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(subjects, ["second", "third"], "{seen:?}");
    drop(dv);
    let cur: Vec<String> = std::fs::read_dir(md.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cur.len(), 2, "{cur:?}");
    assert!(
        cur.iter().all(|n| n.ends_with(":2,S")),
        "Dovecot marked them seen: {cur:?}"
    );

    // Back in mta's POP3: the same two messages, the second under the UIDL it had.
    let after = client("pop-list", pop3, &[]);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.contains(&kept[0]), "{after:?} vs {kept:?}");
    assert!(after.iter().any(|l| l.starts_with("third ")));
    let _ = child.kill();
    let _ = child.wait();
}
