//! Out of file descriptors is bad input, not a crash: `mta run` under a small `ulimit -n` is
//! flooded with connections until accept fails with EMFILE; sessions it has keep working, the
//! process keeps running, and once the flood goes away new clients are served again.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command};
use std::time::Duration;

const MTA: &str = env!("CARGO_BIN_EXE_mta");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mta run` with at most `fds` open files, its stderr into `log`; returns it and its address.
fn spawn_limited(root: &std::path::Path, fds: u32, log: &std::path::Path) -> (Killed, SocketAddr) {
    let script = format!("ulimit -n {fds} && exec \"$0\" run --listen 127.0.0.1:0 --root \"$1\"");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script, MTA]).arg(root);
    cmd.stderr(std::fs::File::create(log).unwrap());
    let (child, addr) = common::spawn_listening(cmd);
    (Killed(child), addr)
}

/// A whole transaction on a connection that has had its greeting; the final reply.
fn transaction(s: &mut TcpStream, token: &str) -> String {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let msg = format!(
        "HELO t\r\nMAIL FROM:<t@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n\
         Subject: {token}\r\n\r\n{token}\r\n.\r\n"
    );
    s.write_all(msg.as_bytes()).unwrap();
    let mut last = String::new();
    for _ in 0..5 {
        last.clear();
        r.read_line(&mut last).unwrap();
    }
    last
}

/// Wait for the server's greeting on this connection.
fn greeted(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = [0u8; 256];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && buf.starts_with(b"220"))
}

/// Wait until the log says `what`.
fn wait_for_log(log: &std::path::Path, what: &str) {
    common::eventually(what, 60, || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(what)
    });
}

#[test]
fn running_out_of_file_descriptors_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mta");
    common::init(MTA, &root, "example.org", "alice");
    std::fs::write(root.join("control/concurrencyincoming"), "500\n").unwrap();
    // Every flood connection comes from 127.0.0.1: no per-address limit here.
    std::fs::write(root.join("control/concurrencyperip"), "0\n").unwrap();
    let log = dir.path().join("stderr");
    let (mut mta, addr) = spawn_limited(&root, 48, &log);
    let mut first = TcpStream::connect(addr).unwrap();
    assert!(greeted(&mut first));
    let flood: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    // The event: accept fails for want of descriptors (EMFILE).
    wait_for_log(&log, "Too many open files");
    assert!(mta.0.try_wait().unwrap().is_none(), "mta run exited");
    // A session it already has still gets an answer: accepted, or a temporary refusal.
    let reply = transaction(&mut first, "during-flood");
    assert!(
        reply.starts_with("250") || reply.starts_with('4'),
        "{reply:?}"
    );
    drop(flood);
    // The flood is gone: once the server has closed its side of those sessions, a new client
    // is served again (until then a temporary refusal is the right answer).
    let mut served = None;
    common::eventually("a new client after the flood gets a greeting", 60, || {
        let mut s = TcpStream::connect(addr).unwrap();
        served = greeted(&mut s).then_some(s);
        served.is_some()
    });
    let mut s = served.unwrap();
    let reply = transaction(&mut s, "after-flood");
    assert!(reply.starts_with("250"), "{reply:?}");
    assert!(mta.0.try_wait().unwrap().is_none(), "mta run exited");
    // And the mail arrives.
    let new = root.join("home/alice/Maildir/new");
    common::eventually("delivered", 60, || {
        std::fs::read_dir(&new).unwrap().any(|e| {
            let m = std::fs::read(e.unwrap().path()).unwrap_or_default();
            String::from_utf8_lossy(&m).contains("after-flood")
        })
    });
}
