//! Issue 9 ("security as qmail means it") against the real `mta` binary: client rules on
//! both listener families, relay through rewriting, control-file errors, closed pipes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Server;

fn mta() -> &'static str {
    env!("CARGO_BIN_EXE_mta")
}

/// A fresh installation for heaven.af.mil (users fred and joe) with extra control files.
fn install(controls: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    common::init(mta(), root.path(), "heaven.af.mil", "fred");
    for (f, text) in controls {
        std::fs::write(root.path().join("control").join(f), text).unwrap();
    }
    root
}

/// `mta run --listen LISTEN` on a fresh installation, stderr kept in `root/stderr`.
fn start_on(listen: &str, controls: &[(&str, &str)]) -> Server {
    let root = install(controls);
    let mut cmd = Command::new(mta());
    cmd.args(["run", "--listen", listen, "--root"])
        .arg(root.path())
        .stderr(std::fs::File::create(root.path().join("stderr")).unwrap());
    let (child, addr) = common::spawn_listening(cmd);
    Server { child, addr, root }
}

fn reply(r: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap() == 0 {
            return all;
        }
        all.push_str(&l);
        if l.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

fn connect(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

/// Send commands one at a time; the replies after the greeting.
fn dialogue(addr: SocketAddr, cmds: &[&str]) -> Vec<String> {
    let (mut s, mut r) = connect(addr);
    let mut out = vec![reply(&mut r)];
    for c in cmds {
        s.write_all(format!("{c}\r\n").as_bytes()).unwrap();
        out.push(reply(&mut r));
    }
    out
}

/// True when this host can listen on the IPv6 wildcard (dual stack).
fn ipv6_wildcard_available() -> bool {
    std::net::TcpListener::bind("[::]:0").is_ok()
}

/// The rules on a listener: an allow entry for 127.0.0.1 lets the client relay, a deny
/// entry for 127. refuses it. Clients always connect over IPv4 to 127.0.0.1.
fn rules_apply_to_ipv4_clients_on(listen: &str) {
    let allow = "127.0.0.1:allow,RELAYCLIENT=\"\"\n:allow\n";
    let srv = start_on(listen, &[("smtp.rules", allow)]);
    let to = SocketAddr::from(([127, 0, 0, 1], srv.addr.port()));
    let r = dialogue(to, &["MAIL FROM:<a@example.net>", "RCPT TO:<bill@irs.gov>"]);
    assert!(r[0].starts_with("220 "), "{r:?}");
    assert_eq!(
        r[2], "250 ok\r\n",
        "allow entry grants relaying on {listen}"
    );
    let srv = start_on(listen, &[("smtp.rules", "127.:deny\n:allow\n")]);
    let to = SocketAddr::from(([127, 0, 0, 1], srv.addr.port()));
    let (_s, mut r) = connect(to);
    assert!(reply(&mut r).starts_with("554 "), "deny entry on {listen}");
}

#[test]
fn rules_match_ipv4_clients_on_an_ipv4_listener() {
    rules_apply_to_ipv4_clients_on("127.0.0.1:0");
}

#[test]
fn rules_match_ipv4_mapped_clients_on_an_ipv6_listener() {
    // Skipping would hide a hole; only an explicit opt-out may skip.
    if !ipv6_wildcard_available() {
        assert!(
            std::env::var_os("MTA_TEST_NO_IPV6").is_some(),
            "cannot listen on [::] here: this test needs IPv6 (set MTA_TEST_NO_IPV6=1 to skip)"
        );
        eprintln!("SKIPPED: [::] unavailable and MTA_TEST_NO_IPV6 set");
        return;
    }
    rules_apply_to_ipv4_clients_on("[::]:0");
}
