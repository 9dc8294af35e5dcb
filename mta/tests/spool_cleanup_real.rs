//! A receiver killed with SIGKILL in the middle of a large DATA leaves its partial spool file
//! in `queue/tmp`; the next `mta run` removes it at recovery (nobody holds it any more).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;

const MTA: &str = env!("CARGO_BIN_EXE_mta");

fn tmp_bytes(root: &Path) -> u64 {
    std::fs::read_dir(root.join("queue/tmp"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn expect(r: &mut BufReader<TcpStream>, code: &str) {
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with(code), "wanted {code}, got {line:?}");
        if line.as_bytes().get(3) != Some(&b'-') {
            return;
        }
    }
}

#[test]
fn partial_spools_of_a_killed_receiver_are_removed_at_the_next_start() {
    let root = tempfile::tempdir().unwrap();
    common::init(MTA, root.path(), "heaven.af.mil", "fred");
    let (mut child, addr) = common::spawn_run(MTA, root.path());
    let s = TcpStream::connect(addr).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    expect(&mut r, "220");
    for (cmd, code) in [
        ("HELO t\r\n", "250"),
        ("MAIL FROM:<a@b.example>\r\n", "250"),
        ("RCPT TO:<fred@heaven.af.mil>\r\n", "250"),
        ("DATA\r\n", "354"),
    ] {
        w.write_all(cmd.as_bytes()).unwrap();
        expect(&mut r, code);
    }
    // Past the 256 KiB threshold the message streams into tmp/; the final dot never comes.
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..1000 {
        w.write_all(line.as_bytes()).unwrap();
    }
    w.flush().unwrap();
    common::eventually("the spool file grows in tmp/", 30, || {
        tmp_bytes(root.path()) > 512 * 1024
    });
    child.kill().unwrap();
    child.wait().unwrap();
    drop((r, w));
    assert!(
        tmp_bytes(root.path()) > 0,
        "the killed receiver left its spool"
    );
    // Recovery runs before the new server listens.
    let (mut again, _) = common::spawn_run(MTA, root.path());
    let left = std::fs::read_dir(root.path().join("queue/tmp"))
        .unwrap()
        .count();
    let _ = again.kill();
    let _ = again.wait();
    assert_eq!(left, 0, "tmp/ is empty after the restart");
}
