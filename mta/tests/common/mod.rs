//! Helpers shared by the tests that run the `mta` binary (each test crate uses a subset).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `mta run` on its own installation; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub root: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `mta run --listen 127.0.0.1:0` on `root`; returns the process and the address it
/// printed once it accepts connections.
pub fn spawn_run(mta: &str, root: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(mta)
        .args(["run", "--listen", "127.0.0.1:0", "--root"])
        .arg(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("mta: listening on ")
        .unwrap_or_else(|| panic!("unexpected output {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}
