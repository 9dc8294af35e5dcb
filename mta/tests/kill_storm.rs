//! SIGKILL storm on a real host: `mta run` is killed with SIGKILL and restarted over and over
//! while a client sends; every message that got `250` must end up in the Maildir exactly once.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn mta() -> &'static str {
    env!("CARGO_BIN_EXE_mta")
}

fn start(root: &Path) -> (Child, std::net::SocketAddr) {
    common::spawn_run(mta(), root)
}

/// Send message `i`; true when the server said 250 after the data.
fn send(addr: std::net::SocketAddr, i: usize) -> bool {
    let Ok(s) = TcpStream::connect(addr) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    let next = |r: &mut BufReader<TcpStream>, line: &mut String| {
        line.clear();
        r.read_line(line).map(|n| n > 0).unwrap_or(false)
    };
    if !next(&mut r, &mut line) {
        return false;
    }
    let msg = "MAIL FROM:<storm@example.net>\r\nRCPT TO:<fred@heaven.af.mil>\r\nDATA\r\n";
    if w.write_all(msg.as_bytes()).is_err() {
        return false;
    }
    for _ in 0..3 {
        if !next(&mut r, &mut line) {
            return false;
        }
    }
    if !line.starts_with("354") {
        return false;
    }
    let body = format!("Subject: storm {i}\r\n\r\nmessage number {i}\r\n.\r\n");
    if w.write_all(body.as_bytes()).is_err() {
        return false;
    }
    next(&mut r, &mut line) && line.starts_with("250 ok")
}

#[test]
fn sigkill_storm_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let st = Command::new(mta())
        .args(["init", "--me", "heaven.af.mil", "--user", "fred", "--root"])
        .arg(root)
        .output()
        .unwrap();
    assert!(st.status.success());
    // The sender keeps going in its own thread; kills land in the middle of sessions.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let target: Arc<Mutex<Option<std::net::SocketAddr>>> = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let (t2, s2) = (target.clone(), stop.clone());
    let sender = std::thread::spawn(move || {
        let (mut acked, mut i) = (Vec::new(), 0);
        while !s2.load(Ordering::SeqCst) {
            let addr = *t2.lock().unwrap();
            match addr {
                Some(a) => {
                    if send(a, i) {
                        acked.push(i);
                    }
                    i += 1;
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        (acked, i)
    });
    for round in 0..10u64 {
        let (mut child, addr) = start(root);
        *target.lock().unwrap() = Some(addr);
        std::thread::sleep(Duration::from_millis(120 + 37 * round));
        child.kill().unwrap(); // SIGKILL, whatever the sender is doing
        child.wait().unwrap();
        *target.lock().unwrap() = None;
    }
    stop.store(true, Ordering::SeqCst);
    let (acked, i) = sender.join().unwrap();
    // A last, calm run delivers what is left.
    let (mut child, _) = start(root);
    let new = root.join("home/fred/Maildir/new");
    let deadline = Instant::now() + Duration::from_secs(30);
    let read = || -> Vec<String> {
        std::fs::read_dir(&new)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    };
    while read().len() < acked.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let got = read();
    child.kill().unwrap();
    child.wait().unwrap();
    println!(
        "{} sent, {} acknowledged, {} delivered",
        i,
        acked.len(),
        got.len()
    );
    assert!(acked.len() > 20, "the storm let enough through");
    for a in &acked {
        let n = got
            .iter()
            .filter(|m| m.contains(&format!("message number {a}\n")))
            .count();
        assert_eq!(n, 1, "message {a}: {n} copies");
    }
    // Anything else delivered was accepted but its 250 was lost to a kill: at most once each.
    for m in &got {
        assert!(m.contains("Subject: storm "), "invented: {m}");
    }
}
