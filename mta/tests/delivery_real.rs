//! `mta run` delivering on a real host: SMTP in → Maildir, bounces, injection while running.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;

fn mta() -> &'static str {
    env!("CARGO_BIN_EXE_mta")
}

fn start() -> Server {
    start_as("heaven.af.mil", &["fred", "joe"], &[])
}

fn start_as(me: &str, users: &[&str], controls: &[(&str, String)]) -> Server {
    let root = tempfile::tempdir().unwrap();
    let mut init = Command::new(mta());
    init.args(["init", "--me", me, "--root"]).arg(root.path());
    for u in users {
        init.args(["--user", u]);
    }
    assert!(init.output().unwrap().status.success());
    for (f, text) in controls {
        std::fs::write(root.path().join("control").join(f), text).unwrap();
    }
    let (child, addr) = common::spawn_run(mta(), root.path());
    Server { child, addr, root }
}

/// `mta run` for fred and joe with the queue manager's log lines in a file (to wait for).
fn start_logged() -> (Server, PathBuf) {
    common::spawn_logged(mta(), common::installation(mta(), &["fred", "joe"]))
}

use common::log_has;

/// `mta inject ARGS` with `body` on stdin (as `user` when given); must succeed.
fn inject(root: &Path, args: &[&str], body: &[u8], user: Option<&str>) {
    let mut cmd = Command::new(mta());
    cmd.arg("inject")
        .args(args)
        .arg("--root")
        .arg(root)
        .stdin(Stdio::piped());
    if let Some(u) = user {
        cmd.env("USER", u);
    }
    let mut c = cmd.spawn().unwrap();
    c.stdin.take().unwrap().write_all(body).unwrap();
    assert!(c.wait().unwrap().success());
}

fn maildir(root: &Path, user: &str) -> Vec<String> {
    let d: PathBuf = root.join("home").join(user).join("Maildir/new");
    let mut v: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    v.sort();
    v
}

fn wait_for(root: &Path, user: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = maildir(root, user);
        if v.len() >= n {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{user} has {} of {n} messages",
            v.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn smtp_to_maildir_and_bounces_on_a_real_host() {
    use lettre::{Message, SmtpTransport, Transport};
    let srv = start();
    let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(srv.addr.port())
        .build();
    let m = Message::builder()
        .from("Joe <joe@heaven.af.mil>".parse().unwrap())
        .to("fred@heaven.af.mil".parse().unwrap())
        .subject("to fred")
        .body("hello fred\n".to_string())
        .unwrap();
    mailer.send(&m).unwrap();
    let m = Message::builder()
        .from("joe@heaven.af.mil".parse().unwrap())
        .to("nobody@heaven.af.mil".parse().unwrap())
        .subject("to nobody")
        .body("lost\n".to_string())
        .unwrap();
    mailer.send(&m).unwrap();
    let fred = wait_for(srv.root.path(), "fred", 1);
    assert!(
        fred[0].starts_with(
            "Return-Path: <joe@heaven.af.mil>\nDelivered-To: fred@heaven.af.mil\nReceived: (qmail "
        ),
        "{}",
        fred[0]
    );
    assert!(fred[0].contains("hello fred"));
    let joe = wait_for(srv.root.path(), "joe", 1);
    assert!(
        joe[0].contains("<nobody@heaven.af.mil>:\nSorry, no mailbox here by that name. (#5.1.1)"),
        "{}",
        joe[0]
    );
    assert!(joe[0].starts_with("Return-Path: <>\n"));
}

#[test]
fn injection_while_running_is_delivered_and_flush_reaches_the_server() {
    let srv = start();
    inject(
        srv.root.path(),
        &["-f", "joe@heaven.af.mil", "fred"],
        b"Subject: injected\n\nbody\n",
        None,
    );
    let fred = wait_for(srv.root.path(), "fred", 1);
    assert!(fred[0].contains("Subject: injected"));
    let st = Command::new(mta())
        .args(["queue", "flush", "--root"])
        .arg(srv.root.path())
        .status()
        .unwrap();
    assert!(st.success());
    // The server is still there after SIGALRM.
    assert!(std::net::TcpStream::connect(srv.addr).is_ok());
}

#[test]
fn flush_without_a_running_server_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    Command::new(mta())
        .args(["init", "--me", "x.org", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    std::fs::write(root.path().join("queue/lock"), "1\n").unwrap();
    let o = Command::new(mta())
        .args(["queue", "flush", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(111));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no mta run is running"));
}

#[test]
fn remote_delivery_to_a_second_server_and_a_remote_bounce() {
    use lettre::{Message, SmtpTransport, Transport};
    let far = start_as("far.example", &["bill"], &[]);
    let route = format!(
        "far.example:[127.0.0.1]:{p}\n:[127.0.0.1]:{p}\n",
        p = far.addr.port()
    );
    let near = start_as(
        "heaven.af.mil",
        &["joe"],
        &[
            ("smtproutes", route),
            ("smtp.rules", "127.0.0.1:allow,RELAYCLIENT=\"\"\n".into()),
        ],
    );
    let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(near.addr.port())
        .build();
    let m = Message::builder()
        .from("joe@heaven.af.mil".parse().unwrap())
        .to("bill@far.example".parse().unwrap())
        .subject("relayed")
        .body("across two servers\n".to_string())
        .unwrap();
    mailer.send(&m).unwrap();
    let bill = wait_for(far.root.path(), "bill", 1);
    assert!(bill[0].contains("across two servers"));
    assert_eq!(
        bill[0].matches("Received: from").count(),
        2,
        "both hops: {}",
        bill[0]
    );
    assert!(
        bill[0].starts_with("Return-Path: <joe@heaven.af.mil>\nDelivered-To: bill@far.example\n")
    );
    // The far server refuses a domain outside its rcpthosts (553): a permanent failure.
    let m = Message::builder()
        .from("joe@heaven.af.mil".parse().unwrap())
        .to("ghost@elsewhere.example".parse().unwrap())
        .subject("refused")
        .body("nowhere\n".to_string())
        .unwrap();
    mailer.send(&m).unwrap();
    let joe = wait_for(near.root.path(), "joe", 1);
    assert!(joe[0].contains("<ghost@elsewhere.example>:\n127.0.0.1 does not like recipient.\nRemote host said: 553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"), "{}", joe[0]);
}

#[test]
fn pic_local2local_and_rem2local_through_the_cli() {
    let srv = start_as(
        "heaven.af.mil",
        &["fred", "joe"],
        &[("defaultdelivery", "./Mailbox\n".into())],
    );
    inject(
        srv.root.path(),
        &["fred"],
        b"Subject: PIC\n\nFrom joe, hello.\n",
        Some("joe"),
    );
    // rem2local: bill@irs.gov over SMTP to joe.
    let s = std::net::TcpStream::connect(srv.addr).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    w.write_all(
        b"HELO irs.gov\r\nMAIL FROM:<bill@irs.gov>\r\nRCPT TO:<joe@heaven.af.mil>\r\nDATA\r\n",
    )
    .unwrap();
    for _ in 0..4 {
        line.clear();
        r.read_line(&mut line).unwrap();
    }
    assert!(line.starts_with("354"), "{line}");
    w.write_all(b"Subject: rem2local\r\n\r\nhi joe\r\n.\r\nQUIT\r\n")
        .unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("250 ok"), "{line}");
    let mbox = |u: &str| {
        std::fs::read_to_string(srv.root.path().join("home").join(u).join("Mailbox"))
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while (mbox("fred").is_empty() || mbox("joe").is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let f = mbox("fred");
    assert!(f.starts_with("From joe@heaven.af.mil "), "{f}");
    assert!(f.contains("\nReturn-Path: <joe@heaven.af.mil>\nDelivered-To: fred@heaven.af.mil\nReceived: (qmail "), "{f}");
    assert!(f.contains("invoked by uid"));
    assert!(
        f.contains("\n>From joe, hello.\n\n"),
        "mboxrd quoting and the final blank line: {f}"
    );
    let j = mbox("joe");
    assert!(j.starts_with("From bill@irs.gov "), "{j}");
    assert!(
        j.contains("Received: (qmail ") && j.contains("invoked from network"),
        "{j}"
    );
    assert!(
        j.contains(
            "Received: from unknown (HELO irs.gov) (127.0.0.1)\n  by heaven.af.mil with SMTP; "
        ),
        "{j}"
    );
}

#[test]
fn sighup_rereads_virtualdomains_for_new_mail() {
    let root = tempfile::tempdir().unwrap();
    common::init(mta(), root.path(), "heaven.af.mil", "fred");
    // The queue manager's log lines, to see when it has reread the control files.
    let log = root.path().join("stderr");
    let mut cmd = Command::new(mta());
    cmd.args(["run", "--listen", "127.0.0.1:0", "--root"])
        .arg(root.path())
        .env("MTA_LOG", "mta::send=info")
        .stderr(std::fs::File::create(&log).unwrap());
    let (child, addr) = common::spawn_listening(cmd);
    let srv = Server { child, addr, root };
    std::fs::write(
        srv.root.path().join("home/fred/.qmail-default"),
        "./Maildir/\n",
    )
    .unwrap();
    std::fs::write(
        srv.root.path().join("control/virtualdomains"),
        "tommy.gov:fred\n",
    )
    .unwrap();
    let st = Command::new("kill")
        .args(["-HUP", &srv.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    common::eventually("the queue manager rereads its controls", 30, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("control files reread")
    });
    inject(
        srv.root.path(),
        &["-f", "joe@heaven.af.mil", "dude@tommy.gov"],
        b"Subject: virtual\n\nhi\n",
        None,
    );
    let fred = wait_for(srv.root.path(), "fred", 1);
    assert!(
        fred[0].contains("Delivered-To: fred-dude@tommy.gov\n"),
        "{}",
        fred[0]
    );
}

#[test]
fn writable_home_defers_until_fixed_and_flushed() {
    use std::os::unix::fs::PermissionsExt;
    let (srv, log) = start_logged();
    let home = srv.root.path().join("home/fred");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
    inject(
        srv.root.path(),
        &["-f", "joe@heaven.af.mil", "fred"],
        b"Subject: perms\n\nx\n",
        None,
    );
    common::eventually("the delivery is deferred", 30, || {
        log_has(&log, "deferral: Uh-oh:_home_directory_is_writable.")
    });
    assert!(
        maildir(srv.root.path(), "fred").is_empty(),
        "a group/world-writable home is refused"
    );
    let o = Command::new(mta())
        .args(["queue", "list", "--root"])
        .arg(srv.root.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("fred@heaven.af.mil\tpending"));
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let st = Command::new(mta())
        .args(["queue", "flush", "--root"])
        .arg(srv.root.path())
        .status()
        .unwrap();
    assert!(st.success());
    let fred = wait_for(srv.root.path(), "fred", 1);
    assert!(fred[0].contains("Subject: perms"));
}

/// Peak resident memory of a process in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    st.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn program_output_is_capped_while_read_and_both_streams_drain() {
    let (srv, log) = start_logged();
    // A megabyte on stderr first (a server reading stdout to its end first would wait
    // forever), then 200 MB on stdout: only the first 1000 bytes are kept for the report.
    std::fs::write(
        srv.root.path().join("home/fred/.qmail"),
        "|head -c 1000000 /dev/zero >&2; head -c 200000000 /dev/zero; echo done\n./Maildir/\n",
    )
    .unwrap();
    inject(
        srv.root.path(),
        &["-f", "joe@heaven.af.mil", "fred"],
        b"Subject: chatty\n\nx\n",
        None,
    );
    let fred = wait_for(srv.root.path(), "fred", 1);
    assert!(fred[0].contains("Subject: chatty"));
    common::eventually("the delivery is logged", 30, || {
        log_has(&log, ": success: ")
    });
    let peak = peak_rss_kib(srv.child.id());
    assert!(peak < 64 * 1024, "mta run peaked at {peak} KiB");
}

#[test]
fn an_executable_dotqmail_with_a_program_line_is_not_run() {
    use std::os::unix::fs::PermissionsExt;
    let (srv, log) = start_logged();
    let dq = srv.root.path().join("home/fred/.qmail");
    std::fs::write(&dq, "|touch ran\n./Maildir/\n").unwrap();
    std::fs::set_permissions(&dq, std::fs::Permissions::from_mode(0o755)).unwrap();
    inject(
        srv.root.path(),
        &["-f", "joe@heaven.af.mil", "fred"],
        b"Subject: x bit\n\nx\n",
        None,
    );
    common::eventually("the delivery is deferred", 30, || {
        log_has(
            &log,
            "deferral: Uh-oh:_.qmail_has_prog_delivery_but_has_x_bit_set._(#4.7.0)",
        )
    });
    assert!(!srv.root.path().join("home/fred/ran").exists());
    assert!(maildir(srv.root.path(), "fred").is_empty());
}
