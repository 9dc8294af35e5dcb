//! `mta run` listens only once it has recovered its queue, and a queue it cannot recover
//! stops the start: exit 111 with the reason on stderr, for the supervisor to try again
//! (mail is never acknowledged by a server that could not queue it).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

const MTA: &str = env!("CARGO_BIN_EXE_mta");

#[test]
fn a_queue_that_cannot_be_recovered_stops_the_start_with_111() {
    let root = common::installation(MTA, &["fred"]);
    let r = root.path().to_path_buf();
    // The log cannot be listed (the server is not root when it recovers).
    let log_dir = r.join("queue/log");
    std::fs::set_permissions(&log_dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = Command::new(MTA)
        .args(["run", "--listen", "127.0.0.1:0", "--root"])
        .arg(&r)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    std::fs::set_permissions(&log_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(111), "{stderr}");
    assert!(!stdout.contains("listening"), "it never listened: {stdout}");
    assert!(stderr.contains("cannot open the queue"), "{stderr}");
    // Once the trouble is gone it starts and serves.
    let (srv, _log) = common::spawn_logged(MTA, root);
    let (_s, mut rd) = common::connect(srv.addr);
    assert!(common::reply(&mut rd).starts_with("220"));
}
