//! Privilege separation on a real host, as root (CI runs as root): local deliveries run as
//! the recipient's uid and gid from `users/assign`, with no supplementary groups; files they
//! write belong to the user; a user's symlink cannot make the delivery write where the user
//! could not; an entry with uid 0 is refused.

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Server;

const MTA: &str = env!("CARGO_BIN_EXE_mta");
const UID: u32 = 4242;
const GID: u32 = 4343;

fn inject(root: &Path, rcpt: &str, subject: &str) {
    let mut c = Command::new(MTA)
        .args(["inject", "-f", "joe@heaven.af.mil", rcpt, "--root"])
        .arg(root)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let msg = format!("Subject: {subject}\n\nx\n");
    c.stdin.take().unwrap().write_all(msg.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success());
}

/// An installation where fred is uid 4242 / gid 4343 (no such account needed) and joe's
/// entry says uid 0; `mta run` with its log lines in a file.
fn start() -> (Server, PathBuf) {
    assert_eq!(
        nix::unistd::getuid().as_raw(),
        0,
        "runs as root, as CI does"
    );
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let ok = Command::new(MTA)
        .args([
            "init",
            "--me",
            "heaven.af.mil",
            "--user",
            "fred",
            "--user",
            "joe",
            "--root",
        ])
        .arg(r)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let fred = r.join("home/fred");
    let joe = r.join("home/joe");
    let assign = format!(
        "=fred:fred:{UID}:{GID}:{f}:::\n+fred-:fred:{UID}:{GID}:{f}:-::\n=joe:joe:0:0:{j}:::\n.\n",
        f = fred.display(),
        j = joe.display()
    );
    std::fs::write(r.join("users/assign"), assign).unwrap();
    for d in ["", "Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"] {
        std::os::unix::fs::chown(fred.join(d), Some(UID), Some(GID)).unwrap();
    }
    common::spawn_logged(MTA, root)
}

use common::log_has;

#[test]
fn programs_and_files_are_the_recipients_and_root_is_refused() {
    let (srv, log) = start();
    let r = srv.root.path();
    let fred = r.join("home/fred");
    std::fs::write(
        fred.join(".qmail"),
        "|echo \"$(id -u) $(id -g) $(id -G)\" > ids\n./Maildir/\n",
    )
    .unwrap();
    inject(r, "fred", "ids");
    common::eventually("fred's delivery", 30, || {
        log_has(&log, "delivery 1: success:")
    });
    let ids = std::fs::read_to_string(fred.join("ids")).unwrap();
    assert_eq!(ids.trim(), format!("{UID} {GID} {GID}"), "uid, gid, groups");
    assert_eq!(std::fs::metadata(fred.join("ids")).unwrap().uid(), UID);
    let new: Vec<_> = std::fs::read_dir(fred.join("Maildir/new"))
        .unwrap()
        .collect();
    assert_eq!(new.len(), 1);
    let m = new[0].as_ref().unwrap().metadata().unwrap();
    assert_eq!((m.uid(), m.gid()), (UID, GID), "the message file is fred's");

    inject(r, "joe", "as root");
    common::eventually("joe's delivery is refused", 30, || {
        log_has(&log, "Not_allowed_to_perform_deliveries_as_root.")
    });
    let joe_new = r.join("home/joe/Maildir/new");
    assert_eq!(std::fs::read_dir(joe_new).unwrap().count(), 0);
}

#[test]
fn a_symlink_in_a_home_cannot_reach_what_the_user_cannot() {
    let (srv, log) = start();
    let r = srv.root.path();
    // A Maildir only root may write, and fred's link to it.
    let vault = r.join("vault");
    for d in ["", "new", "cur", "tmp"] {
        std::fs::create_dir_all(vault.join(d)).unwrap();
    }
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o700)).unwrap();
    let fred = r.join("home/fred");
    std::os::unix::fs::symlink(&vault, fred.join("vault")).unwrap();
    std::fs::write(fred.join(".qmail-steal"), "./vault/\n").unwrap();
    // And a .qmail file that is a link to a file only root may read.
    let secret = r.join("secret");
    std::fs::write(&secret, "&thief@elsewhere.example\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&secret, fred.join(".qmail-peek")).unwrap();
    inject(r, "fred-steal", "steal");
    inject(r, "fred-peek", "peek");
    common::eventually("both deliveries deferred", 30, || {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        l.matches(": deferral: ").count() >= 2
    });
    assert_eq!(std::fs::read_dir(vault.join("new")).unwrap().count(), 0);
    let l = std::fs::read_to_string(&log).unwrap();
    assert!(l.contains("Unable_to_read_.qmail-peek."), "{l}");
    assert!(!l.contains("thief"), "{l}");
}

/// A root `mta init` hands the alias files to the alias account: mail to postmaster is
/// delivered (through `&fred`), not deferred for ever as unreadable.
#[test]
fn postmaster_mail_is_delivered_after_a_root_init() {
    assert_eq!(
        nix::unistd::getuid().as_raw(),
        0,
        "runs as root, as CI does"
    );
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let ok = Command::new(MTA)
        .args(["init", "--me", "heaven.af.mil", "--user", "fred", "--root"])
        .arg(r)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let pm = std::fs::metadata(r.join("alias/.qmail-postmaster")).unwrap();
    let dir = std::fs::metadata(r.join("alias")).unwrap();
    assert_eq!(
        (pm.uid(), pm.gid()),
        (dir.uid(), dir.gid()),
        "alias files' owner"
    );
    let (child, addr) = common::spawn_run(MTA, r);
    let _srv = Server { child, addr, root };
    let r = _srv.root.path();
    inject(r, "postmaster", "to postmaster");
    let new = r.join("home/fred/Maildir/new");
    common::eventually("postmaster's mail in fred's Maildir", 30, || {
        std::fs::read_dir(&new).unwrap().count() == 1
    });
}

/// A process's real, effective, saved and filesystem uids (the `Uid:` line of its status).
fn uids(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect()
}

/// The children of `pid` whose command line holds `word`.
fn children_with(pid: u32, word: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // pid (comm) state ppid ...: the comm may hold spaces, so split after its ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        if ppid == Some(pid) && String::from_utf8_lossy(&cmd).contains(word) {
            out.push(p);
        }
    }
    out
}

/// Started as root, `mta run` becomes the queue user named by `mta init` for good; only its
/// local-delivery helper keeps root. The queue belongs to the queue user and delivery users
/// cannot write it; mail still reaches each user as that user; a dead helper stops the server
/// (111) rather than leaving local mail to defer.
#[test]
fn the_server_gives_root_up_and_only_the_delivery_helper_keeps_it() {
    let (mut srv, log) = start();
    let r = srv.root.path().to_path_buf();
    let q = nix::unistd::User::from_name("mtaq")
        .unwrap()
        .expect("init made mtaq");
    let pid = srv.child.id();
    assert_eq!(
        uids(pid),
        vec![q.uid.as_raw(); 4],
        "the server runs as mtaq"
    );
    let helpers = children_with(pid, "lspawn");
    assert_eq!(helpers.len(), 1, "one delivery helper");
    assert_eq!(uids(helpers[0]), vec![0; 4], "the helper keeps root");
    let queue = std::fs::metadata(r.join("queue")).unwrap();
    assert_eq!((queue.uid(), queue.mode() & 0o777), (q.uid.as_raw(), 0o700));

    // fred (uid 4242) tries to drop a file into the queue from his .qmail program.
    let todo = r.join("queue/todo/forged");
    std::fs::write(
        r.join("home/fred/.qmail"),
        format!(
            "|touch {} 2>/dev/null; echo $? > tried\n./Maildir/\n",
            todo.display()
        ),
    )
    .unwrap();
    inject(&r, "fred", "try the queue");
    common::eventually("fred's delivery", 30, || {
        log_has(&log, "delivery 1: success:")
    });
    let tried = std::fs::read_to_string(r.join("home/fred/tried")).unwrap();
    assert_ne!(tried.trim(), "0", "a delivery user wrote into the queue");
    assert!(!todo.exists());
    let new = r.join("home/fred/Maildir/new");
    let m = std::fs::read_dir(&new).unwrap().next().unwrap().unwrap();
    assert_eq!(m.metadata().unwrap().uid(), UID, "delivered as fred");
    for seg in std::fs::read_dir(r.join("queue/log")).unwrap() {
        let s = seg.unwrap().metadata().unwrap();
        assert_eq!(s.uid(), q.uid.as_raw(), "log segments are the queue user's");
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helpers[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = srv.child.wait().unwrap();
    assert_eq!(status.code(), Some(111), "a dead helper stops the server");
    let l = std::fs::read_to_string(&log).unwrap();
    assert!(l.contains("local delivery helper stopped"), "{l}");
}
