//! QMTP and QMQP on a real host: `mta run --listen-qmtp/--listen-qmqp` against a reference
//! client written here from the protocol documents (netstrings by hand), and `mta inject` as a
//! mini-qmail client handing its mail over QMQP to a full host.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn mta() -> &'static str {
    env!("CARGO_BIN_EXE_mta")
}

struct Running {
    child: Child,
    addrs: Vec<SocketAddr>,
    root: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A full host for fred and joe with QMTP and QMQP; `controls` written first.
fn full_host(controls: &[(&str, &str)]) -> Running {
    let root = common::installation(mta(), &["fred", "joe"]);
    for (f, t) in controls {
        std::fs::write(root.path().join("control").join(f), t).unwrap();
    }
    let args = [
        "--listen-qmtp",
        "127.0.0.1:0",
        "--listen-qmqp",
        "127.0.0.1:0",
    ];
    let (child, addrs) = common::spawn_with(mta(), root.path(), &args, "mta=info");
    Running { child, addrs, root }
}

fn ns(b: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", b.len()).into_bytes();
    v.extend_from_slice(b);
    v.push(b',');
    v
}

/// Read one netstring's contents off the stream (byte by byte: the reference client).
fn read_ns(s: &mut TcpStream) -> String {
    let mut len = String::new();
    let mut b = [0u8; 1];
    loop {
        s.read_exact(&mut b).unwrap();
        if b[0] == b':' {
            break;
        }
        len.push(b[0] as char);
    }
    let mut data = vec![0u8; len.parse::<usize>().unwrap() + 1];
    s.read_exact(&mut data).unwrap();
    assert_eq!(data.pop(), Some(b','));
    String::from_utf8(data).unwrap()
}

fn connect(a: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn maildir(root: &Path, user: &str) -> Vec<String> {
    let d = root.join("home").join(user).join("Maildir/new");
    let mut v: Vec<String> = std::fs::read_dir(d)
        .map(|d| {
            d.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn wait_mail(root: &Path, user: &str, n: usize) -> Vec<String> {
    common::eventually(&format!("{n} messages for {user}"), 30, || {
        maildir(root, user).len() >= n
    });
    maildir(root, user)
}

#[test]
fn qmtp_packages_get_one_reply_per_recipient_and_are_delivered() {
    let h = full_host(&[]);
    let mut s = connect(h.addrs[1]);
    let rcpts = [
        ns(b"fred@heaven.af.mil"),
        ns(b"someone@elsewhere.example"),
        ns(b"joe@heaven.af.mil"),
    ]
    .concat();
    let mut wire = [
        ns(b"\nSubject: over qmtp\n\nhello\n"),
        ns(b"sender@example.org"),
        ns(&rcpts),
    ]
    .concat();
    // A second package on the same connection, CRLF convention.
    wire.extend(
        [
            ns(b"\r\nSubject: crlf\r\n\r\nline\r\n"),
            ns(b""),
            ns(&ns(b"fred@heaven.af.mil")),
        ]
        .concat(),
    );
    s.write_all(&wire).unwrap();
    let replies: Vec<String> = (0..4).map(|_| read_ns(&mut s)).collect();
    assert!(replies[0].starts_with("Kok "), "{replies:?}");
    assert!(replies[1].starts_with('D') && replies[1].contains("rcpthosts"));
    assert_eq!(replies[2], replies[0], "one message, one queue entry");
    assert!(replies[3].starts_with('K'), "{replies:?}");
    drop(s);
    let fred = wait_mail(h.root.path(), "fred", 2);
    let joe = wait_mail(h.root.path(), "joe", 1);
    assert!(joe[0].contains("Subject: over qmtp") && joe[0].contains("with QMTP;"));
    let crlf = fred.iter().find(|m| m.contains("Subject: crlf")).unwrap();
    assert!(crlf.contains("Subject: crlf\n\nline\n") && !crlf.contains('\r'));
    assert!(crlf.contains("Return-Path: <>"), "{crlf}");
}

#[test]
fn qmtp_broken_framing_closes_and_bad_convention_is_refused() {
    let h = full_host(&[]);
    let mut s = connect(h.addrs[1]);
    s.write_all(&[ns(b"xno convention"), ns(b"a@b"), ns(&ns(b"fred"))].concat())
        .unwrap();
    assert!(read_ns(&mut s).starts_with('D'));
    s.write_all(b"12x").unwrap();
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0, "closed");
}

fn qmqp_package(msg: &[u8], sender: &str, rcpts: &[&str]) -> Vec<u8> {
    let mut inner = [ns(msg), ns(sender.as_bytes())].concat();
    for r in rcpts {
        inner.extend(ns(r.as_bytes()));
    }
    ns(&inner)
}

#[test]
fn qmqp_serves_only_trusted_clients() {
    let open = full_host(&[("qmqp.rules", "127.0.0.1:allow\n:deny\n")]);
    let mut s = connect(open.addrs[2]);
    s.write_all(&qmqp_package(
        b"Subject: qmqp\n\nhi\n",
        "a@b.example",
        &["fred@heaven.af.mil"],
    ))
    .unwrap();
    assert!(read_ns(&mut s).starts_with('K'));
    assert!(wait_mail(open.root.path(), "fred", 1)[0].contains("with QMQP;"));
    // Without a rule allowing it, the connection is closed unanswered.
    let closed = full_host(&[]);
    let mut s = connect(closed.addrs[2]);
    let _ = s.write_all(&qmqp_package(b"x\n", "", &["fred"]));
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0);
}

/// `mta inject` on a mini-qmail installation (control/qmqpservers, no `mta run`).
fn mini_inject(root: &Path, rcpt: &str, body: &[u8]) -> (i32, String) {
    let mut c = Command::new(mta())
        .args(["inject", "--root"])
        .arg(root)
        .arg(rcpt)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(body).unwrap();
    let out = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), err)
}

/// A free port nobody listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn mini_qmail_hands_mail_to_the_first_answering_qmqp_server() {
    let hub = full_host(&[("qmqp.rules", "127.:allow\n:deny\n")]);
    let mini = common::installation(mta(), &[]);
    let dead = dead_port();
    let servers = format!("127.0.0.1:{dead}\n{}\n", hub.addrs[2]);
    std::fs::write(mini.path().join("control/qmqpservers"), servers).unwrap();
    let (code, err) = mini_inject(
        mini.path(),
        "joe@heaven.af.mil",
        b"Subject: mini\n\nvia qmqp\n",
    );
    assert_eq!(code, 0, "{err}");
    let joe = wait_mail(hub.root.path(), "joe", 1);
    assert!(
        joe[0].contains("Subject: mini") && joe[0].contains("Message-ID:"),
        "{}",
        joe[0]
    );
    assert!(
        !mini
            .path()
            .join("queue/todo")
            .read_dir()
            .unwrap()
            .any(|_| true),
        "no local queue"
    );
    // No server answers: qmail-qmqpc's 73 (connection refused).
    std::fs::write(
        mini.path().join("control/qmqpservers"),
        format!("127.0.0.1:{dead}\n"),
    )
    .unwrap();
    let (code, err) = mini_inject(mini.path(), "joe@heaven.af.mil", b"x\n");
    assert_eq!(code, 73, "{err}");
    assert!(err.contains("connection to mail server rejected"), "{err}");
    // A server that drops the connection (not trusted): 74.
    std::fs::write(mini.path().join("control/qmqp.rules"), "").unwrap();
    let hub2 = full_host(&[]);
    std::fs::write(
        mini.path().join("control/qmqpservers"),
        format!("{}\n", hub2.addrs[2]),
    )
    .unwrap();
    let (code, err) = mini_inject(mini.path(), "joe@heaven.af.mil", b"x\n");
    assert_eq!(code, 74, "{err}");
}

/// A second `mta run` (a.example, no local users) whose remote deliveries follow `controls`.
fn sending_host(controls: &[(&str, String)]) -> Running {
    let root = tempfile::tempdir().unwrap();
    common::init(mta(), root.path(), "a.example", "alice");
    for (f, t) in controls {
        std::fs::write(root.path().join("control").join(f), t).unwrap();
    }
    let (child, addrs) = common::spawn_with(mta(), root.path(), &[], "mta=info");
    Running { child, addrs, root }
}

#[test]
fn qmtproutes_deliver_over_qmtp_between_two_mta_runs_and_fall_back_to_smtp() {
    let hub = full_host(&[]);
    let qmtp = hub.addrs[1];
    let a = sending_host(&[(
        "qmtproutes",
        format!("heaven.af.mil:[{}]:{}\n", qmtp.ip(), qmtp.port()),
    )]);
    mini_inject(
        a.root.path(),
        "fred@heaven.af.mil",
        b"Subject: by qmtp\n\n.dot\n",
    );
    let fred = wait_mail(hub.root.path(), "fred", 1);
    assert!(
        fred[0].contains("with QMTP;") && fred[0].contains("\n.dot\n"),
        "{}",
        fred[0]
    );
    // No QMTP server at the route: the message goes by SMTP (smtproutes) instead.
    let smtp = hub.addrs[0];
    let dead = dead_port();
    let b = sending_host(&[
        ("qmtproutes", format!("heaven.af.mil:[127.0.0.1]:{dead}\n")),
        (
            "smtproutes",
            format!("heaven.af.mil:[{}]:{}\n", smtp.ip(), smtp.port()),
        ),
    ]);
    mini_inject(
        b.root.path(),
        "joe@heaven.af.mil",
        b"Subject: fell back\n\nx\n",
    );
    let joe = wait_mail(hub.root.path(), "joe", 1);
    let fell = &joe[0];
    assert!(
        fell.contains("Subject: fell back") && fell.contains("SMTP") && !fell.contains("QMTP"),
        "{fell}"
    );
}

/// One package as a reference QMTP server (written here from the protocol document) read
/// it: the message, the sender, the recipients.
#[derive(Debug, Clone)]
struct Package {
    message: String,
    sender: String,
    rcpts: Vec<String>,
}

/// The recipients inside the recipient-list netstring.
fn split_ns(mut b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(colon) = b.iter().position(|&c| c == b':') {
        let n: usize = std::str::from_utf8(&b[..colon]).unwrap().parse().unwrap();
        let data = &b[colon + 1..colon + 1 + n];
        assert_eq!(b[colon + 1 + n], b',');
        out.push(String::from_utf8(data.to_vec()).unwrap());
        b = &b[colon + 2 + n..];
    }
    out
}

/// A reference QMTP server on a free port: for the `n`th connection (from 0), reads one
/// package, reports it, then sends what `answer(n, &package)` gives (`None`: closes without
/// a reply, as a server that died after taking the package).
fn reference_qmtp(
    answer: impl Fn(usize, &Package) -> Option<Vec<String>> + Send + 'static,
) -> (SocketAddr, std::sync::mpsc::Receiver<Package>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, s) in l.incoming().enumerate() {
            let Ok(mut s) = s else { return };
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let message = read_ns(&mut s);
            let sender = read_ns(&mut s);
            let rcpts = split_ns(read_ns(&mut s).as_bytes());
            let p = Package {
                message,
                sender,
                rcpts,
            };
            let replies = answer(n, &p);
            if tx.send(p).is_err() {
                return;
            }
            for r in replies.unwrap_or_default() {
                let _ = s.write_all(&ns(r.as_bytes()));
            }
        }
    });
    (addr, rx)
}

fn qmtproute(to: SocketAddr) -> (&'static str, String) {
    (
        "qmtproutes",
        format!("heaven.af.mil:[{}]:{}\n", to.ip(), to.port()),
    )
}

fn log_of(r: &Running) -> String {
    std::fs::read_to_string(r.root.path().join("stderr")).unwrap_or_default()
}

/// qmail-qmtpc's way: one package carries every recipient of the message at the route's
/// host, and each gets its own reply: K delivered, D bounced, Z retried.
#[test]
fn one_qmtp_package_carries_all_recipients_at_a_host_with_a_reply_each() {
    let (at, packages) = reference_qmtp(|_, p| {
        let r = |a: &String| match a.split('@').next() {
            Some("fred") => "Kthanks".to_string(),
            Some("joe") => "Dno such user".to_string(),
            _ => "Zlater".to_string(),
        };
        Some(p.rcpts.iter().map(r).collect())
    });
    let a = sending_host(&[qmtproute(at)]);
    let rcpts = "fred@heaven.af.mil joe@heaven.af.mil bob@heaven.af.mil";
    let mut c = Command::new(mta())
        .args(["inject", "-f", "alice@a.example", "--root"])
        .arg(a.root.path())
        .args(rcpts.split(' '))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(b"Subject: three\n\nx\n")
        .unwrap();
    assert!(c.wait().unwrap().success());
    let p = packages.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(p.rcpts, rcpts.split(' ').collect::<Vec<_>>());
    assert_eq!(p.sender, "alice@a.example");
    assert!(p.message.starts_with('\n') && p.message.contains("Subject: three"));
    common::eventually("three outcomes", 30, || {
        let l = log_of(&a);
        l.contains(": success: 127.0.0.1_accepted_message_over_QMTP./Remote_host_said:_thanks")
            && l.contains(": failure: Remote_host_127.0.0.1_said_over_QMTP:_no_such_user")
            && l.contains(": deferral: Remote_host_127.0.0.1_said_over_QMTP:_later")
    });
    // The bounce goes to alice (local); no second package for the same attempt.
    assert!(packages.try_recv().is_err());
}

/// Against the real QMTP server: one package for fred and joe, queued there as one message
/// (one `new msg`) and delivered to both.
#[test]
fn two_recipients_at_a_real_qmtp_server_share_one_package() {
    let hub = full_host(&[]);
    let a = sending_host(&[qmtproute(hub.addrs[1])]);
    let mut c = Command::new(mta())
        .args(["inject", "--root"])
        .arg(a.root.path())
        .args(["fred@heaven.af.mil", "joe@heaven.af.mil"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(b"Subject: both\n\nx\n")
        .unwrap();
    assert!(c.wait().unwrap().success());
    let fred = wait_mail(hub.root.path(), "fred", 1);
    let joe = wait_mail(hub.root.path(), "joe", 1);
    assert!(fred[0].contains("with QMTP;") && joe[0].contains("with QMTP;"));
    let hub_log = log_of(&hub);
    assert_eq!(hub_log.matches("new msg ").count(), 1, "{hub_log}");
    common::eventually("both outcomes at the sender", 30, || {
        log_of(&a)
            .matches(": success: 127.0.0.1_accepted_message_over_QMTP")
            .count()
            == 2
    });
}

/// A QMTP server that took the package and died before replying may have queued the
/// message: the delivery is deferred and retried over QMTP, never sent again over SMTP
/// (which would make a second copy); SMTP is only for a route whose connection fails.
#[test]
fn a_qmtp_delivery_cut_off_after_the_package_is_retried_over_qmtp_not_smtp() {
    let hub = full_host(&[]);
    let smtp = hub.addrs[0];
    let (at, packages) = reference_qmtp(|n, p| (n > 0).then(|| vec!["Kok".into(); p.rcpts.len()]));
    let a = sending_host(&[
        qmtproute(at),
        (
            "smtproutes",
            format!("heaven.af.mil:[{}]:{}\n", smtp.ip(), smtp.port()),
        ),
    ]);
    mini_inject(a.root.path(), "fred@heaven.af.mil", b"Subject: once\n\nx\n");
    let first = packages.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(first.rcpts, ["fred@heaven.af.mil"]);
    common::eventually("the deferral", 30, || {
        log_of(&a).contains(": deferral: Connected_to_127.0.0.1_over_QMTP_but_the_connection_died.")
    });
    // Retry now (SIGALRM, `mta queue flush`): the same route, over QMTP again.
    let ok = Command::new(mta())
        .args(["queue", "flush", "--root"])
        .arg(a.root.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "mta queue flush");
    let again = packages.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(again.message, first.message);
    common::eventually("delivered on the retry", 30, || {
        log_of(&a).contains(": success: 127.0.0.1_accepted_message_over_QMTP")
    });
    assert!(
        maildir(hub.root.path(), "fred").is_empty(),
        "no copy over SMTP"
    );
    assert!(!log_of(&hub).contains("new msg"), "{}", log_of(&hub));
}
