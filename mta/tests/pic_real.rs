//! The PIC scenarios of `fixtures/pic/` against the real binary: `mta init`, the scenario's
//! control files and files, each message through `mta inject` (with an empty environment, so
//! the header fix-ups match the simulator's), `mta run` until the queue is empty, then the
//! scenario's expectations checked by the conformance runner (`sim/tests/pic_data.rs` runs
//! the same scenarios in the simulator).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use conformance::pic::{self, Host, Scenario, RELAYED};

const MTA: &str = env!("CARGO_BIN_EXE_mta");

struct Real {
    root: PathBuf,
    log: PathBuf,
    relayed: Arc<Mutex<Vec<String>>>,
}

impl Host for Real {
    fn read(&self, path: &str) -> Option<String> {
        match path {
            RELAYED => Some(self.relayed.lock().unwrap().concat()),
            // Only a missing file is no file: anything unreadable fails what it is checked for.
            _ => match std::fs::read_to_string(self.root.join(path)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                r => Some(r.unwrap_or_else(|e| format!("<unreadable: {e}>"))),
            },
        }
    }
    fn log(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().map(String::from).collect()
    }
    fn queued(&self) -> usize {
        queued(&self.root)
    }
}

/// `mta queue stat`'s first figure (messages, including injections not yet taken in).
fn queued(root: &Path) -> usize {
    let out = Command::new(MTA)
        .args(["queue", "stat", "--root"])
        .arg(root)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("messages in queue: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(usize::MAX)
}

/// A relay on loopback that accepts every message and keeps it (dot-stuffing undone, LF
/// line ends, as a Maildir would hold it); returns its port.
fn relay(got: Arc<Mutex<Vec<String>>>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let got = got.clone();
            std::thread::spawn(move || session(s, &got));
        }
    });
    port
}

fn session(s: TcpStream, got: &Mutex<Vec<String>>) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let _ = w.write_all(b"220 relay.test\r\n");
    let mut line = String::new();
    while r.read_line(&mut line).unwrap_or(0) > 0 {
        let reply: &[u8] = match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
            Some("DATA") => {
                let _ = w.write_all(b"354 go\r\n");
                got.lock().unwrap().push(body(&mut r));
                b"250 taken\r\n"
            }
            Some("QUIT") => {
                let _ = w.write_all(b"221 bye\r\n");
                return;
            }
            _ => b"250 ok\r\n",
        };
        let _ = w.write_all(reply);
        line.clear();
    }
}

/// The message up to the line holding only a dot.
fn body(r: &mut BufReader<TcpStream>) -> String {
    let (mut text, mut line) = (String::new(), String::new());
    while r.read_line(&mut line).unwrap_or(0) > 0 && line != ".\r\n" {
        let l = line.strip_suffix("\r\n").unwrap_or(&line);
        text.push_str(l.strip_prefix('.').unwrap_or(l));
        text.push('\n');
        line.clear();
    }
    text
}

fn write_lines(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
}

fn inject(root: &Path, s: &Scenario, sender: &str, rcpts: &[String]) {
    let mut c = Command::new(MTA)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args(["inject", "-f", sender, "--root"])
        .arg(root)
        .args(rcpts)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(s.message.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success(), "{}: mta inject", s.name);
}

fn play(s: &Scenario) -> Vec<String> {
    let root = common::installation(MTA, &["fred", "joe", "john"]);
    let r = root.path().to_path_buf();
    let relayed = Arc::new(Mutex::new(Vec::new()));
    let route = match s.needs_relay() {
        true => format!("[127.0.0.1]:{}", relay(relayed.clone())),
        false => String::new(),
    };
    let (controls, files) = s.with_relay(&route);
    for (name, text) in &controls {
        write_lines(&r, &format!("control/{name}"), text);
    }
    for (path, text) in &files {
        write_lines(&r, path, text);
    }
    for i in &s.injects {
        inject(&r, s, &i.sender, &i.rcpts);
    }
    let (srv, log) = common::spawn_logged(MTA, root);
    common::eventually(&format!("{}: the queue empties", s.name), 60, || {
        queued(&r) == 0
    });
    let host = Real {
        root: r,
        log,
        relayed,
    };
    let bad = pic::check(s, &host);
    drop(srv);
    bad
}

#[test]
fn pic_scenarios_hold_against_the_real_binary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pic");
    let all = pic::load_all(&dir).unwrap();
    assert_eq!(all.len(), 13, "every scenario directory loaded");
    let bad: Vec<String> = all
        .iter()
        .flat_map(|s| play(s).into_iter().map(move |b| format!("{}: {b}", s.name)))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}
