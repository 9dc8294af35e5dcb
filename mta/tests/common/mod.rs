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
    let mut cmd = Command::new(mta);
    cmd.args(["run", "--listen", "127.0.0.1:0", "--root"])
        .arg(root);
    cmd.stderr(Stdio::null());
    spawn_listening(cmd)
}

/// Start a command that runs `mta run` and wait for its `mta: listening on ADDR` line.
pub fn spawn_listening(mut cmd: Command) -> (Child, SocketAddr) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
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

/// `mta init --me ME --user USER --root ROOT`, which must succeed.
pub fn init(mta: &str, root: &Path, me: &str, user: &str) {
    let ok = Command::new(mta)
        .args(["init", "--me", me, "--user", user, "--root"])
        .arg(root)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mta init");
}

/// Wait (up to `secs`) for `done` to hold, looking again every few milliseconds: the test
/// waits for the event it needs, never for a fixed time.
pub fn eventually(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {secs} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `mta init --me heaven.af.mil` with `users` on a fresh directory, which must succeed.
pub fn installation(mta: &str, users: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(mta);
    cmd.args(["init", "--me", "heaven.af.mil", "--root"])
        .arg(root.path())
        .stdout(Stdio::null());
    for u in users {
        cmd.args(["--user", u]);
    }
    assert!(cmd.status().unwrap().success(), "mta init");
    root
}

/// Start `mta run` on `root` with the queue manager's log lines in `root/stderr` (to wait
/// for); returns the server and that file.
pub fn spawn_logged(mta: &str, root: tempfile::TempDir) -> (Server, std::path::PathBuf) {
    let log = root.path().join("stderr");
    let mut cmd = Command::new(mta);
    cmd.args(["run", "--listen", "127.0.0.1:0", "--root"])
        .arg(root.path())
        .env("MTA_LOG", "mta::send=info")
        .stderr(std::fs::File::create(&log).unwrap());
    let (child, addr) = spawn_listening(cmd);
    (Server { child, addr, root }, log)
}

/// Whether the log file holds `what` yet.
pub fn log_has(log: &Path, what: &str) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(what)
}

/// Read one full reply (all continuation lines); what there was if the connection ends.
pub fn reply(r: &mut BufReader<std::net::TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 {
            return all;
        }
        all.push_str(&l);
        if l.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

/// A connection with a 20 s read timeout and a reader on it.
pub fn connect(addr: SocketAddr) -> (std::net::TcpStream, BufReader<std::net::TcpStream>) {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

/// Start `mta run --listen 127.0.0.1:0 ARGS --root ROOT` (ARGS adding `--listen-X
/// 127.0.0.1:0` listeners), its log in `root/stderr`; returns the process and every address
/// it printed (SMTP first, then the others in the order of `mta: listening for X on ADDR`),
/// once all accept connections.
pub fn spawn_with(mta: &str, root: &Path, args: &[&str], log: &str) -> (Child, Vec<SocketAddr>) {
    let extra = args.iter().filter(|a| a.starts_with("--listen-")).count();
    let mut child = Command::new(mta)
        .args(["run", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--root")
        .arg(root)
        .env("MTA_LOG", log)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(root.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut addrs = Vec::new();
    for _ in 0..=extra {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let a = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                let err = std::fs::read_to_string(root.join("stderr")).unwrap_or_default();
                panic!("unexpected output {line:?}; stderr: {err}")
            });
        addrs.push(a);
    }
    (child, addrs)
}

/// Whether `cmd` is on this host, installing `package` from the distribution if it is not
/// and we are root; false (with a message) when the test must skip.
pub fn have(cmd: &str, package: &str) -> bool {
    static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let found = || {
        Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if found() {
        return true;
    }
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIP: {cmd} is not installed and installing {package} needs root");
        return false;
    }
    let _one_at_a_time = APT.lock().unwrap_or_else(|e| e.into_inner());
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-q", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok || !found() {
        eprintln!("SKIP: could not install {package} (apt-get install failed)");
        return false;
    }
    true
}

/// A system account the test creates with `useradd` (home `home`, created and owned by it,
/// with an empty Maildir) and removes with `userdel` when dropped. `None` (skip) when not
/// root or useradd is missing.
pub struct SystemUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: std::path::PathBuf,
}

impl SystemUser {
    pub fn create(name: &str, home: &Path) -> Option<SystemUser> {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIP: creating a system account needs root");
            return None;
        }
        let ok = Command::new("useradd")
            .args([
                "--create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--home-dir",
            ])
            .arg(home)
            .arg(name)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIP: useradd {name} failed");
            return None;
        }
        let pw = nix::unistd::User::from_name(name).ok().flatten()?;
        let u = SystemUser {
            name: name.to_string(),
            uid: pw.uid.as_raw(),
            gid: pw.gid.as_raw(),
            home: home.to_path_buf(),
        };
        for d in ["Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"] {
            std::fs::create_dir(home.join(d)).unwrap();
            std::os::unix::fs::chown(home.join(d), Some(u.uid), Some(u.gid)).unwrap();
        }
        Some(u)
    }
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .arg(&self.name)
            .stderr(Stdio::null())
            .status();
    }
}
