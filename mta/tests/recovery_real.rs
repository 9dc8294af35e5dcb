//! A restarted server takes mail while it is still recovering its queue (qmail-smtpd never
//! waits for qmail-send): `mta run` listens before the recovery ends, and a message accepted
//! meanwhile is made durable in `todo/`, then delivered once the queue manager runs.
//!
//! The recovery is held without timing luck: it reads every `todo/` entry, and one of them is
//! a FIFO that blocks it until the test writes into it.

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const MTA: &str = env!("CARGO_BIN_EXE_mta");

#[test]
fn mail_is_taken_while_the_queue_recovers() {
    let root = common::installation(MTA, &["fred"]);
    let r = root.path().to_path_buf();
    let fifo = r.join("queue/todo/0.stuck");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // The recovery runs as whoever owns the queue (the queue user under root).
    let owner = std::fs::metadata(r.join("queue")).unwrap();
    std::os::unix::fs::chown(&fifo, Some(owner.uid()), Some(owner.gid())).unwrap();
    let (srv, log) = common::spawn_logged(MTA, root);

    let (mut s, mut rd) = common::connect(srv.addr);
    assert!(common::reply(&mut rd).starts_with("220"));
    for (cmd, want) in [
        ("HELO client.example\r\n", "250"),
        ("MAIL FROM:<joe@client.example>\r\n", "250"),
        ("RCPT TO:<fred@heaven.af.mil>\r\n", "250"),
        ("DATA\r\n", "354"),
        (
            "Subject: during recovery\r\n\r\ntaken early\r\n.\r\n",
            "250",
        ),
    ] {
        s.write_all(cmd.as_bytes()).unwrap();
        let got = common::reply(&mut rd);
        assert!(got.starts_with(want), "{cmd:?}: {got:?}");
    }
    // Acknowledged while the recovery is still held: the message waits durably in todo/.
    let new = r.join("home/fred/Maildir/new");
    assert_eq!(
        std::fs::read_dir(&new).unwrap().count(),
        0,
        "nothing delivered yet"
    );
    assert_eq!(std::fs::read_dir(r.join("queue/todo")).unwrap().count(), 2);

    // Release the recovery: the FIFO gives garbage, which is set aside, not delivered.
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    w.write_all(b"not a queue file").unwrap();
    drop(w);
    common::eventually("the early message is delivered", 30, || {
        std::fs::read_dir(&new).unwrap().count() == 1
    });
    let got = std::fs::read_dir(&new)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(std::fs::read_to_string(got)
        .unwrap()
        .contains("taken early"));
    assert!(r.join("queue/corrupt/0.stuck").exists());
    common::eventually("the queue manager logs the delivery", 10, || {
        common::log_has(&log, "delivery 1: success")
    });
}

#[test]
fn a_server_whose_recovery_keeps_failing_still_stops_when_told() {
    let root = common::installation(MTA, &["fred"]);
    let r = root.path().to_path_buf();
    // The log cannot be listed (the server is not root when it recovers): recovery fails
    // and is tried again every few seconds, while the server listens.
    let log_dir = r.join("queue/log");
    std::fs::set_permissions(&log_dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    let (mut child, _) = common::spawn_with(MTA, &r, &[], "info");
    common::eventually("a failed recovery is logged", 30, || {
        common::log_has(&r.join("stderr"), "queue recovery failed")
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut status = None;
    common::eventually("the server exits after SIGTERM", 30, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(0), "a clean stop");
    std::fs::set_permissions(&log_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}
