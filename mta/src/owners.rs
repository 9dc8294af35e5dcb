//! Who owns what in a root installation: the queue belongs to the queue user (the account
//! `mta run` gives root up for), control files are readable by it, and root's own commands
//! write the queue as that account.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use mta::env::Env;
use mta::init::InitError;

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> InitError {
    move |source| InitError::Io { context, source }
}

/// The account's uid and gid, created as a system account (no home, no login) if missing.
fn ensure_account(name: &str) -> Result<(u32, u32), InitError> {
    let find = || nix::unistd::User::from_name(name).ok().flatten();
    if find().is_none() {
        let made = std::process::Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args([
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .status();
        if !made.is_ok_and(|s| s.success()) {
            return Err(InitError::Invalid {
                what: "--queue-user",
                value: name.into(),
                why: "no such account, and useradd could not create it",
            });
        }
    }
    match find() {
        Some(p) if !p.uid.is_root() => Ok((p.uid.as_raw(), p.gid.as_raw())),
        _ => Err(InitError::Invalid {
            what: "--queue-user",
            value: name.into(),
            why: "not an unprivileged account",
        }),
    }
}

fn chmod(p: &Path, mode: u32) -> Result<(), InitError> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", p.display())))
}

/// Give the queue, everything in it, to `account`, readable by it alone; make the
/// installation's directories and the control files init wrote readable (qmail's are 0644).
pub fn hand_over(root: &Path, account: &str) -> Result<(), InitError> {
    let (uid, gid) = ensure_account(account)?;
    for d in ["", "control", "users", "home"] {
        let p = root.join(d);
        if p.is_dir() {
            chmod(&p, 0o755)?;
        }
    }
    for f in ["me", "locals", "rcpthosts", "defaultdelivery", "queueuser"] {
        chmod(&root.join("control").join(f), 0o644)?;
    }
    chmod(&root.join("users/assign"), 0o644)?;
    // Secrets the server reads after giving root up: its own, still private (0600).
    for f in SECRETS {
        let p = root.join("control").join(f);
        if p.exists() {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
                .map_err(io_err(format!("chown {}", p.display())))?;
        }
    }
    give(&root.join("queue"), (uid, gid))
}

/// Control files only the server may read: the TLS key, the AUTH password hashes, the
/// smarthost credentials.
const SECRETS: [&str; 3] = ["servercert.pem", "passwd", "smtproutesauth"];

/// Root wrote a secret control file: give it to the queue user (if the installation has one),
/// who reads it after root is given up.
pub fn give_secret(root: &Path, path: &Path) -> std::io::Result<()> {
    if !nix::unistd::getuid().is_root() {
        return Ok(());
    }
    let name = match std::fs::read_to_string(root.join("control/queueuser")) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let Some(pw) = nix::unistd::User::from_name(&name).ok().flatten() else {
        return Err(std::io::Error::other(format!("no account named {name:?}")));
    };
    std::os::unix::fs::lchown(path, Some(pw.uid.as_raw()), Some(pw.gid.as_raw()))
}

/// `chown -R` and owner-only modes: the queue user reads and writes it, delivery users never.
fn give(p: &Path, (uid, gid): (u32, u32)) -> Result<(), InitError> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .map_err(io_err(format!("chown {}", p.display())))?;
    let meta = std::fs::symlink_metadata(p).map_err(io_err(format!("stat {}", p.display())))?;
    if meta.is_dir() {
        chmod(p, 0o700)?;
        let entries = std::fs::read_dir(p).map_err(io_err(format!("list {}", p.display())))?;
        for e in entries {
            let e = e.map_err(io_err(format!("list {}", p.display())))?;
            give(&e.path(), (uid, gid))?;
        }
    }
    Ok(())
}

/// Started as root in an installation with a queue user: become it for good.
pub fn as_queue_user(env: &impl Env, root: &Path) -> Result<(), String> {
    if env.uid() != 0 {
        return Ok(());
    }
    let file = root.join("control/queueuser");
    let account = match std::fs::read_to_string(&file) {
        Ok(s) => s.lines().next().unwrap_or("").trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("unable to read {}: {e}", file.display())),
    };
    if account.is_empty() {
        return Ok(());
    }
    env.drop_privileges(&account)
        .map(|_| ())
        .map_err(|e| format!("cannot become {account}: {e}"))
}
