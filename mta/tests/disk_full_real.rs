//! A real full disk: `mta run` on a small tmpfs is filled up through SMTP, answers 4xx while
//! full and keeps serving, takes mail again once space is freed, and in the end delivers every
//! acknowledged message exactly once. Needs root (to mount the tmpfs), as CI runs.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MTA: &str = env!("CARGO_BIN_EXE_mta");

/// A tmpfs mounted for the test; unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs (the test runs as root, as CI does)");
        Tmpfs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn reply(r: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return all;
        }
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

/// One SMTP transaction; returns the reply to the final dot.
fn send(addr: SocketAddr, token: &str, size: usize) -> String {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    assert!(reply(&mut r).starts_with("220"), "greeting while full");
    for (cmd, want) in [
        ("HELO t\r\n", "250"),
        ("MAIL FROM:<t@example.net>\r\n", "250"),
        ("RCPT TO:<alice@example.org>\r\n", "250"),
        ("DATA\r\n", "354"),
    ] {
        w.write_all(cmd.as_bytes()).unwrap();
        let got = reply(&mut r);
        assert!(got.starts_with(want), "{cmd:?}: {got:?}");
    }
    let line = "x".repeat(998);
    let mut body = format!("Subject: {token}\r\n\r\n{token}\r\n");
    while body.len() < size {
        body.push_str(&line);
        body.push_str("\r\n");
    }
    w.write_all(body.as_bytes()).unwrap();
    w.write_all(b".\r\nQUIT\r\n").unwrap();
    reply(&mut r)
}

fn kill(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Messages in the Maildir holding `token` on a line of its own.
fn copies(maildir: &Path, token: &str) -> usize {
    let want = format!("\n{token}\n");
    ["new", "cur"]
        .iter()
        .flat_map(|d| std::fs::read_dir(maildir.join(d)).unwrap())
        .filter(|e| {
            let m = std::fs::read(e.as_ref().unwrap().path()).unwrap();
            String::from_utf8_lossy(&m).contains(&want)
        })
        .count()
}

#[test]
fn full_tmpfs_answers_4xx_keeps_serving_and_loses_nothing() {
    let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if uid.ok() != Some(0) {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let fs = Tmpfs::mount("32m");
    let root = fs.path.join("mta");
    common::init(MTA, &root, "example.org", "alice");
    let home = root.join("home/alice");
    // A group-writable home makes qmail-local defer: the mail stays queued and fills the disk.
    let chmod = |mode: &str| Command::new("chmod").arg(mode).arg(&home).status().unwrap();
    chmod("775");
    std::fs::write(fs.path.join("filler"), vec![7u8; 20 << 20]).unwrap();
    let (mut child, addr) = common::spawn_run(MTA, &root);
    let (mut acked, mut refused) = (Vec::new(), 0);
    // Fill the disk: messages under and over the 256 KiB streaming threshold.
    for i in 0..400 {
        let token = format!("full-test-{i}");
        let got = send(addr, &token, if i % 3 == 2 { 300 << 10 } else { 200 << 10 });
        if got.starts_with("250") {
            acked.push(token);
            refused = 0;
        } else {
            assert!(
                got.starts_with('4'),
                "a temporary refusal while full: {got:?}"
            );
            refused += 1;
            if refused == 6 {
                break;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "mta run exited");
    }
    assert_eq!(refused, 6, "the disk filled up");
    assert!(acked.len() > 20, "{} accepted before full", acked.len());
    // Space returns (more than the queue holds, so deliveries fit): mail is taken at once.
    std::fs::remove_file(fs.path.join("filler")).unwrap();
    for i in 0..5 {
        let token = format!("after-{i}");
        let got = send(addr, &token, 100 << 10);
        assert!(got.starts_with("250"), "after freeing space: {got:?}");
        acked.push(token);
    }
    assert!(child.try_wait().unwrap().is_none(), "mta run exited");
    // Deliveries may proceed: every acknowledged message arrives exactly once.
    chmod("755");
    kill(child.id(), "-ALRM");
    let maildir = home.join("Maildir");
    common::eventually("every acknowledged message delivered", 120, || {
        acked.iter().all(|t| copies(&maildir, t) > 0)
    });
    for t in &acked {
        assert_eq!(copies(&maildir, t), 1, "{t}");
    }
    kill(child.id(), "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
