//! ipme on a real host: in a network namespace of its own with an extra address on `lo`, and a
//! DNS server of the test's own that answers only from its zone, a domain whose best MX is
//! that address is this host. `mta run` (which accepts mail for the domain, as a backup MX
//! would) must bounce the message at once (#5.4.6) instead of sending it to itself. Needs
//! root, as CI runs.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, MX};
use hickory_proto::rr::{Name, RData, Record, RecordType};

const MTA: &str = env!("CARGO_BIN_EXE_mta");
/// The extra address of this host (only in the test's namespace).
const EXTRA: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

fn fqdn(n: &str) -> Name {
    let mut x = Name::from_ascii(n).unwrap();
    x.set_fqdn(true);
    x
}

/// The zone: `loop.example MX 10 mx.loop.example`, `mx.loop.example A 10.77.0.1`; any other
/// name is NXDOMAIN. Nothing is forwarded anywhere.
fn answer(q: &Message) -> Option<Message> {
    let query = q.queries.first()?;
    let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.add_query(query.clone());
    let name = query
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let data = match (name.as_str(), query.query_type()) {
        ("loop.example", RecordType::MX) => Some(RData::MX(MX::new(10, fqdn("mx.loop.example")))),
        ("mx.loop.example", RecordType::A) => Some(RData::A(A(EXTRA))),
        ("loop.example" | "mx.loop.example", _) => None,
        _ => {
            r.metadata.response_code = ResponseCode::NXDomain;
            None
        }
    };
    if let Some(d) = data {
        r.answers
            .push(Record::from_rdata(query.name().clone(), 300, d));
    }
    Some(r)
}

fn serve_dns(sock: UdpSocket) {
    let mut buf = [0u8; 4096];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        let reply = Message::from_vec(&buf[..n])
            .ok()
            .and_then(|q| answer(&q))
            .and_then(|r| r.to_vec().ok());
        if let Some(bytes) = reply {
            let _ = sock.send_to(&bytes, from);
        }
    }
}

fn sh(cmd: &mut Command) {
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?}: {st}");
}

/// `mta init` with user joe, accepting mail for loop.example too.
fn install(root: &Path) {
    sh(Command::new(MTA)
        .args(["init", "--me", "heaven.af.mil", "--user", "joe", "--root"])
        .arg(root)
        .stdout(Stdio::null()));
    let rcpthosts = root.join("control/rcpthosts");
    let mut hosts = std::fs::read_to_string(&rcpthosts).unwrap_or_default();
    hosts.push_str("loop.example\n");
    std::fs::write(rcpthosts, hosts).unwrap();
}

/// Everything in a network namespace of this thread's own: processes started from this
/// thread and sockets it opens live there.
fn in_own_network(root: &Path) {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("a network namespace (the test runs as root, as CI does)");
    sh(Command::new("ip").args(["link", "set", "lo", "up"]));
    sh(Command::new("ip").args(["addr", "add", &format!("{EXTRA}/32"), "dev", "lo"]));
    let dns = UdpSocket::bind("127.0.0.1:53").unwrap();
    std::thread::spawn(move || serve_dns(dns));
    install(root);
    let log = root.join("stderr");
    let mut cmd = Command::new(MTA);
    cmd.args([
        "run",
        "--listen",
        "0.0.0.0:25",
        "--nameserver",
        "127.0.0.1",
        "--root",
    ])
    .arg(root)
    .env("MTA_LOG", "mta::send=info")
    .stderr(std::fs::File::create(&log).unwrap());
    let (mut child, _) = common::spawn_listening(cmd);
    let mut inject = Command::new(MTA)
        .args([
            "inject",
            "-f",
            "joe@heaven.af.mil",
            "someone@loop.example",
            "--root",
        ])
        .arg(root)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    inject
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: round and round\n\nx\n")
        .unwrap();
    assert!(inject.wait().unwrap().success());
    let new = root.join("home/joe/Maildir/new");
    common::eventually("joe gets the bounce", 60, || {
        std::fs::read_dir(&new).is_ok_and(|d| d.count() == 1)
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_mx_on_one_of_our_own_addresses_bounces_at_once() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_path_buf();
    std::thread::spawn(move || in_own_network(&r))
        .join()
        .expect("the namespace thread");
    let new = root.path().join("home/joe/Maildir/new");
    let entry = std::fs::read_dir(&new).unwrap().next().unwrap().unwrap();
    let bounce = std::fs::read_to_string(entry.path()).unwrap();
    assert!(
        bounce.contains("<someone@loop.example>:")
            && bounce.contains("listed as a best-preference MX")
            && bounce.contains("(#5.4.6)"),
        "{bounce}"
    );
    let log = std::fs::read_to_string(root.path().join("stderr")).unwrap();
    let remote = log
        .lines()
        .filter(|l| l.contains("starting delivery") && l.contains(" to remote "))
        .count();
    assert_eq!(
        remote, 1,
        "one attempt, no message sent to ourselves:\n{log}"
    );
    // The injection and its bounce are the only new messages: nothing arrived over SMTP.
    assert_eq!(log.matches("new msg").count(), 2, "{log}");
}

#[test]
fn a_bad_moreipme_stops_the_start_naming_file_and_line() {
    let root = tempfile::tempdir().unwrap();
    install(root.path());
    std::fs::write(
        root.path().join("control/moreipme"),
        "10.1.2.3\nnot-an-ip\n",
    )
    .unwrap();
    let out = Command::new(MTA)
        .args(["run", "--listen", "127.0.0.1:0", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(111));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("control/moreipme line 2: not an address"),
        "{err}"
    );
}
