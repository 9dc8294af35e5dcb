//! The PIC scenarios of `fixtures/pic/` against the real binary: `mta init`, the scenario's
//! control files and files, each message through `mta inject` (with an empty environment, so
//! the header fix-ups match the simulator's), `mta run` until the queue is empty, then the
//! scenario's expectations checked by the conformance runner (`sim/tests/pic_data.rs` runs
//! the same scenarios in the simulator).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use conformance::pic::{self, Host, Scenario};

const MTA: &str = env!("CARGO_BIN_EXE_mta");

struct Real {
    root: PathBuf,
    log: PathBuf,
}

impl Host for Real {
    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(path)).ok()
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
    for (name, text) in &s.controls {
        write_lines(&r, &format!("control/{name}"), text);
    }
    for (path, text) in &s.files {
        write_lines(&r, path, text);
    }
    for i in &s.injects {
        inject(&r, s, &i.sender, &i.rcpts);
    }
    let (srv, log) = common::spawn_logged(MTA, root);
    common::eventually(&format!("{}: the queue empties", s.name), 60, || {
        queued(&r) == 0
    });
    let host = Real { root: r, log };
    let bad = pic::check(s, &host);
    drop(srv);
    bad
}

#[test]
fn pic_scenarios_hold_against_the_real_binary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pic");
    let all = pic::load_all(&dir).unwrap();
    assert!(all.len() >= 10, "{} scenarios", all.len());
    let bad: Vec<String> = all
        .iter()
        .flat_map(|s| play(s).into_iter().map(move |b| format!("{}: {b}", s.name)))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}
