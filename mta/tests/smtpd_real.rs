//! `mta run` on a real host: real TCP on loopback, a real SMTP client library, signals.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use conformance::{fixtures, Dialogue, Match};
use mta::env::real::RealEnv;
use mta::queue::{Paths, View};

use common::Server;

fn start(extra: &[(&str, &str)]) -> Server {
    let root = tempfile::tempdir().unwrap();
    let mta = env!("CARGO_BIN_EXE_mta");
    let st = Command::new(mta)
        .args([
            "init",
            "--me",
            "heaven.af.mil",
            "--user",
            "fred",
            "--user",
            "joe",
            "--root",
        ])
        .arg(root.path())
        .output()
        .unwrap();
    assert!(st.status.success());
    // The dialogues describe a server without TLS (as in the simulator): no STARTTLS offer.
    std::fs::remove_file(root.path().join("control/servercert.pem")).unwrap();
    let ctl = fixtures().join("smtp/control");
    for f in ["me", "rcpthosts", "locals", "badmailfrom", "databytes"] {
        std::fs::copy(ctl.join(f), root.path().join("control").join(f)).unwrap();
    }
    for (f, text) in extra {
        std::fs::write(root.path().join("control").join(f), text).unwrap();
    }
    let (child, addr) = common::spawn_run(mta, root.path());
    Server { child, addr, root }
}

fn signal(s: &Server, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn queued(root: &Path) -> View {
    View::load(&RealEnv::new(), &Paths::new(root.join("queue"))).unwrap()
}

/// Messages in the users' Maildirs.
fn delivered(root: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for user in ["fred", "joe"] {
        let d = root.join("home").join(user).join("Maildir/new");
        for e in std::fs::read_dir(d).unwrap() {
            v.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
        }
    }
    v.sort();
    v
}

/// Wait until the queue is empty (everything delivered), then return the Maildir messages.
fn settled(root: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let q = queued(root);
        if q.messages.is_empty() && q.todo.is_empty() {
            return delivered(root);
        }
        assert!(Instant::now() < deadline, "queue never emptied");
        std::thread::sleep(Duration::from_millis(20));
    }
}

use common::{connect, reply};

#[test]
fn every_conformance_dialogue_over_real_tcp() {
    let srv = start(&[]);
    play_all(&srv, "smtp");
    // simple-send, null-sender, pipelining and transparency each accepted one message;
    // pipelining's has two recipients (fred and joe): five deliveries.
    assert_eq!(settled(srv.root.path()).len(), 5);
}

/// The STARTTLS and AUTH dialogues (fixtures/smtp-tls), on a server with a certificate and a
/// password file.
#[test]
fn every_tls_dialogue_over_real_tcp() {
    let cert = std::fs::read_to_string(fixtures().join("tls/servercert.pem")).unwrap();
    let passwd = std::fs::read_to_string(fixtures().join("smtp-tls/passwd")).unwrap();
    let srv = start(&[("servercert.pem", &cert), ("passwd", &passwd)]);
    assert!(play_all(&srv, "smtp-tls") >= 4);
}

/// Play every dialogue of `fixtures/DIR` against the server over real TCP; how many.
fn play_all(srv: &Server, dir: &str) -> usize {
    let dialogues = Dialogue::load_dir(&fixtures().join(dir)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for d in &dialogues {
        rt.block_on(async {
            let s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
            if let Err(e) = conformance::run(s, d, Match::Text, Duration::from_secs(20)).await {
                panic!("{e}");
            }
        });
    }
    dialogues.len()
}

#[test]
fn lettre_client_sends_and_the_message_is_durably_queued() {
    use lettre::{Message, SmtpTransport, Transport};
    let srv = start(&[]);
    let mailer = SmtpTransport::builder_dangerous(srv.addr.ip().to_string())
        .port(srv.addr.port())
        .build();
    for i in 0..3 {
        let m = Message::builder()
            .from("Joe <joe@example.net>".parse().unwrap())
            .to("Fred <fred@heaven.af.mil>".parse().unwrap())
            .subject(format!("lettre {i}"))
            .body(format!("line one\n.leading dot\nmessage {i}\n"))
            .unwrap();
        let r = mailer.send(&m).unwrap();
        assert_eq!(r.code().to_string(), "250");
    }
    let v = settled(srv.root.path());
    assert_eq!(v.len(), 3);
    for m in &v {
        assert!(
            m.starts_with("Return-Path: <joe@example.net>\nDelivered-To: fred@heaven.af.mil\n"),
            "{m}"
        );
        assert!(m.contains("\n.leading dot\n"), "{m}");
    }
}

#[test]
fn concurrency_limit_answers_421() {
    let srv = start(&[("concurrencyincoming", "1\n")]);
    let (_a, mut ra) = connect(srv.addr);
    assert!(reply(&mut ra).starts_with("220 "));
    let (_b, mut rb) = connect(srv.addr);
    assert_eq!(
        reply(&mut rb),
        "421 too many sessions, try again later (#4.3.2)\r\n"
    );
}

#[test]
fn idle_client_times_out_with_451() {
    let srv = start(&[("timeoutsmtpd", "1\n")]);
    let (_s, mut r) = connect(srv.addr);
    assert!(reply(&mut r).starts_with("220 "));
    let t = Instant::now();
    assert_eq!(reply(&mut r), "451 timeout (#4.4.2)\r\n");
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert_eq!(reply(&mut r), "", "closed after the timeout");
}

#[test]
fn sighup_rereads_control_files() {
    let srv = start(&[]);
    let (_s, mut r) = connect(srv.addr);
    assert_eq!(reply(&mut r), "220 heaven.af.mil ESMTP\r\n");
    std::fs::write(
        srv.root.path().join("control/smtpgreeting"),
        "gate.heaven.af.mil\n",
    )
    .unwrap();
    signal(&srv, "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_s, mut r) = connect(srv.addr);
        let g = reply(&mut r);
        if g == "220 gate.heaven.af.mil ESMTP\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "greeting never changed: {g}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rules_set_relayclient_and_deny() {
    let srv = start(&[("smtp.rules", "127.0.0.1:allow,RELAYCLIENT=\"\"\n:deny\n")]);
    let (mut s, mut r) = connect(srv.addr);
    reply(&mut r);
    s.write_all(b"MAIL FROM:<joe@heaven.af.mil>\r\nRCPT TO:<bill@irs.gov>\r\n")
        .unwrap();
    assert_eq!(reply(&mut r), "250 ok\r\n");
    assert_eq!(
        reply(&mut r),
        "250 ok\r\n",
        "relaying allowed for 127.0.0.1"
    );
    drop(s);
    let srv = start(&[("smtp.rules", "127.0.0.:deny\n")]);
    let (_s, mut r) = connect(srv.addr);
    assert!(reply(&mut r).starts_with("554 "));
}

fn send_one(addr: SocketAddr) -> String {
    let (mut s, mut r) = connect(addr);
    reply(&mut r);
    s.write_all(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<fred@heaven.af.mil>\r\nDATA\r\n")
        .unwrap();
    for _ in 0..3 {
        reply(&mut r);
    }
    s.write_all(b"Subject: f\r\n\r\nbody\r\n.\r\n").unwrap();
    reply(&mut r)
}

#[test]
fn content_filters_pass_reject_or_defer() {
    let srv = start(&[("smtpfilters", "cat >/dev/null\ngrep -q body\n")]);
    assert!(send_one(srv.addr).starts_with("250 ok "));
    let srv = start(&[("smtpfilters", "cat >/dev/null; exit 1\n")]);
    assert_eq!(
        send_one(srv.addr),
        "554 message rejected by spam filter\r\n"
    );
    assert!(queued(srv.root.path()).messages.is_empty());
    let srv = start(&[("smtpfilters", "exit 3\n")]);
    assert_eq!(
        send_one(srv.addr),
        "451 mail server temporarily rejected message (#4.3.0)\r\n"
    );
    let srv = start(&[("smtpfilters", "/nonexistent/filter\n")]);
    assert!(send_one(srv.addr).starts_with("451 "));
}

#[test]
fn sigterm_finishes_the_session_in_progress_then_exits() {
    let mut srv = start(&[]);
    let (mut s, mut r) = connect(srv.addr);
    reply(&mut r);
    s.write_all(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<fred@heaven.af.mil>\r\nDATA\r\n")
        .unwrap();
    for _ in 0..3 {
        reply(&mut r);
    }
    signal(&srv, "TERM");
    std::thread::sleep(Duration::from_millis(200));
    // New connections are refused once the listener is closed...
    assert!(TcpStream::connect(srv.addr).is_err());
    // ...but the session in progress completes.
    s.write_all(b"Subject: t\r\n\r\nlate\r\n.\r\nQUIT\r\n")
        .unwrap();
    assert!(reply(&mut r).starts_with("250 ok "));
    assert!(reply(&mut r).starts_with("221 "));
    let status = srv.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // Accepted: delivered before the exit, or waiting in the queue for the next start.
    let q = queued(srv.root.path());
    assert_eq!(
        q.messages.len() + q.todo.len() + delivered(srv.root.path()).len(),
        1
    );
    let mut rest = String::new();
    let _ = r.read_to_string(&mut rest);
}

#[test]
fn second_instance_on_the_same_queue_refuses_to_start() {
    let srv = start(&[]);
    let o = Command::new(env!("CARGO_BIN_EXE_mta"))
        .args(["run", "--listen", "127.0.0.1:0", "--root"])
        .arg(srv.root.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(111));
    assert!(String::from_utf8_lossy(&o.stderr).contains("another queue manager"));
}

fn send_big(addr: SocketAddr, lines: usize) -> String {
    let (mut s, mut r) = connect(addr);
    reply(&mut r);
    s.write_all(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<fred@heaven.af.mil>\r\nDATA\r\n")
        .unwrap();
    for _ in 0..3 {
        reply(&mut r);
    }
    s.write_all(b"Subject: big\r\n\r\n").unwrap();
    let line = format!("{}\r\n", "0123456789".repeat(10));
    let block = line.repeat(1000);
    for _ in 0..lines / 1000 {
        s.write_all(block.as_bytes()).unwrap();
    }
    s.write_all(b".\r\n").unwrap();
    reply(&mut r)
}

#[test]
fn large_messages_are_streamed_to_disk_and_queued_whole() {
    // 5 MB, far past the in-memory threshold; no databytes limit.
    let srv = start(&[("databytes", "0\n")]);
    let r = send_big(srv.addr, 50_000);
    assert!(r.starts_with("250 ok "), "{r}");
    let v = settled(srv.root.path());
    assert_eq!(v.len(), 1);
    // Return-Path, Delivered-To, Received line, header, then 50,000 lines of 100 characters.
    let size = v[0].len();
    assert!(size > 5_050_000 && size < 5_051_000, "{size}");
    assert!(v[0].ends_with(&format!("{}\n", "0123456789".repeat(10))));
    // Nothing left behind in tmp/ or todo/.
    assert_eq!(
        std::fs::read_dir(srv.root.path().join("queue/tmp"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(srv.root.path().join("queue/todo"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn filters_see_all_of_a_spooled_message() {
    // The filter rejects messages over 3 MB: only possible if it reads the spooled part.
    let srv = start(&[
        ("databytes", "0\n"),
        ("smtpfilters", "test $(wc -c) -lt 3000000 || exit 1\n"),
    ]);
    assert!(send_big(srv.addr, 10_000).starts_with("250 ok "));
    assert_eq!(
        send_big(srv.addr, 40_000),
        "554 message rejected by spam filter\r\n"
    );
    assert_eq!(
        std::fs::read_dir(srv.root.path().join("queue/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn rules_set_databytes_per_client() {
    let srv = start(&[("smtp.rules", "127.0.0.1:allow,DATABYTES=\"20\"\n")]);
    let (mut s, mut r) = connect(srv.addr);
    reply(&mut r);
    s.write_all(b"EHLO c\r\n").unwrap();
    assert!(reply(&mut r).ends_with("250 SIZE 20\r\n"));
    s.write_all(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<fred@heaven.af.mil>\r\nDATA\r\n")
        .unwrap();
    for _ in 0..3 {
        reply(&mut r);
    }
    s.write_all(b"this line is longer than twenty bytes\r\n.\r\n")
        .unwrap();
    assert_eq!(
        reply(&mut r),
        "552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
    );
}
