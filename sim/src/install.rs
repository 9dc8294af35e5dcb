//! The installation scenario: `mta init` crashed anywhere. Once init reported success, the
//! whole installation must survive a crash; before that, running init again (with --force)
//! must complete it.

use std::path::Path;

use mta::env::{Env, Fs};
use mta::init::{self, InitOptions};
use mta::queue::Disabled;

use crate::crash::Scenario;
use crate::env::SimEnv;

const ROOT: &str = "/mta";

#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub acked: bool,
}

pub struct Install(pub Disabled);

impl Install {
    fn opts(&self, force: bool) -> InitOptions {
        InitOptions {
            me: "example.org".into(),
            users: vec!["fred".into(), "joe".into()],
            force,
            uid: 1000,
            gid: 1000,
            owners: Default::default(),
            queue_user: None,
            disabled: self.0,
        }
    }
}

/// Every file and directory of a complete installation, with file contents.
fn verify<E: Env>(env: &E) -> Vec<String> {
    let fs = env.fs();
    let root = Path::new(ROOT);
    let mut bad = Vec::new();
    let files = [
        ("control/me", "example.org\n"),
        ("control/locals", "example.org\n"),
        ("control/rcpthosts", "example.org\n"),
        ("control/defaultdelivery", "./Maildir/\n"),
        ("alias/.qmail-postmaster", "&fred\n"),
        ("alias/.qmail-mailer-daemon", "&fred\n"),
        ("alias/.qmail-root", "&fred\n"),
        ("alias/.qmail-abuse", "&fred\n"),
    ];
    for (f, want) in files {
        match fs.read(&root.join(f)) {
            Ok(b) if b == want.as_bytes() => {}
            Ok(b) => bad.push(format!("{f}: {:?}", String::from_utf8_lossy(&b))),
            Err(e) => bad.push(format!("{f}: {e}")),
        }
    }
    match fs.read(&root.join("users/assign")) {
        Ok(b) if b.ends_with(b"\n.\n") && b.starts_with(b"=fred:") => {}
        Ok(_) => bad.push("users/assign incomplete".into()),
        Err(e) => bad.push(format!("users/assign: {e}")),
    }
    for d in [
        "home/fred/Maildir/new",
        "home/fred/Maildir/cur",
        "home/fred/Maildir/tmp",
        "home/joe/Maildir/new",
        "queue/todo",
        "queue/tmp",
        "queue/log",
    ] {
        if !fs.metadata(&root.join(d)).is_ok_and(|m| m.is_dir) {
            bad.push(format!("{d} missing"));
        }
    }
    if fs.metadata(&root.join("queue/lock")).is_err() {
        bad.push("queue/lock missing".into());
    }
    bad
}

impl Scenario for Install {
    type Ledger = Ledger;
    fn name(&self) -> &'static str {
        "install"
    }
    fn run(&self, env: &SimEnv) -> Ledger {
        Ledger {
            acked: init::init(env, Path::new(ROOT), &self.opts(false)).is_ok(),
        }
    }
    fn finished(&self, l: &Ledger) -> bool {
        l.acked
    }
    fn recover(&self, _env: &SimEnv) {}
    fn check(&self, env: &SimEnv, l: &Ledger) -> Vec<String> {
        if l.acked {
            return verify(env)
                .into_iter()
                .map(|p| format!("after a successful init: {p}"))
                .collect();
        }
        // Not acknowledged: the administrator runs init again, which must complete it.
        if let Err(e) = init::init(env, Path::new(ROOT), &self.opts(true)) {
            return vec![format!("init --force after a crash failed: {e}")];
        }
        verify(env)
            .into_iter()
            .map(|p| format!("after init --force: {p}"))
            .collect()
    }
}

impl crate::crash::Acked for Ledger {
    fn acked_any(&self) -> bool {
        self.acked
    }
}
