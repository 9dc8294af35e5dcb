//! `mta init`: create an installation (control files, queue, aliases, users, Maildirs).

use std::io;
use std::path::{Path, PathBuf};

use crate::env::{self, Env, Fs, FsFile};
use crate::queue::{self, Disabled, QueueError, SyncPoint};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} already holds an installation (control/me exists); use --force to rewrite its control files")]
    Exists(PathBuf),
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Queue(#[from] QueueError),
}

pub struct InitOptions {
    pub me: String,
    pub users: Vec<String>,
    pub force: bool,
    /// Recorded in users/assign for every user not in `owners`.
    pub uid: u32,
    pub gid: u32,
    /// Per-user uid and gid (a root installation: the system accounts).
    pub owners: std::collections::BTreeMap<String, (u32, u32)>,
    /// The account `mta run` started as root gives root up for (`control/queueuser`).
    pub queue_user: Option<String>,
    /// Verification only: fsync points to skip.
    pub disabled: Disabled,
}

fn sync_dir<F: Fs>(fs: &F, o: &InitOptions, d: &Path) -> Result<(), InitError> {
    if o.disabled.contains(SyncPoint::InstallDirs) {
        return Ok(());
    }
    io(fs.sync_dir(d), || format!("fsync {}", d.display()))
}

fn io<T>(r: io::Result<T>, what: impl FnOnce() -> String) -> Result<T, InitError> {
    r.map_err(|source| InitError::Io {
        context: what(),
        source,
    })
}

fn valid_name(what: &'static str, v: &str, extra: &[char]) -> Result<(), InitError> {
    let bad = |why| {
        Err(InitError::Invalid {
            what,
            value: v.into(),
            why,
        })
    };
    if v.is_empty() || v.len() > 255 {
        return bad("must be 1 to 255 characters");
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
    {
        return bad("only letters, digits and - . _ are allowed");
    }
    if v.starts_with(['.', '-']) {
        return bad("must not start with . or -");
    }
    Ok(())
}

/// Write a file whole and fsync it (replacing an old one when `replace`).
fn put<F: Fs>(fs: &F, o: &InitOptions, path: &Path, data: &str) -> Result<(), InitError> {
    if o.force {
        match fs.unlink(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return io(Err(e), || format!("remove {}", path.display()))
            }
            _ => {}
        }
    }
    let mut f = io(fs.create_new(path), || format!("create {}", path.display()))?;
    io(f.write_at(0, data.as_bytes()), || {
        format!("write {}", path.display())
    })?;
    if o.disabled.contains(SyncPoint::InstallFiles) {
        return Ok(());
    }
    io(f.sync(), || format!("fsync {}", path.display()))
}

fn mkdirs<F: Fs>(fs: &F, o: &InitOptions, dirs: &[PathBuf]) -> Result<(), InitError> {
    for d in dirs {
        let made = io(env::mkdir_all(fs, d), || format!("create {}", d.display()))?;
        for m in made {
            if let Some(p) = m.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(fs, o, p)?;
            }
        }
    }
    Ok(())
}

/// Create an installation under `root`. With `force`, control files, aliases and users/assign
/// are rewritten; the queue and mailboxes are never touched.
pub fn init<E: Env>(env: &E, root: &Path, o: &InitOptions) -> Result<(), InitError> {
    let fs = env.fs();
    valid_name("--me", &o.me, &['.', '-'])?;
    for u in &o.users {
        valid_name("--user", u, &['.', '-', '_'])?;
    }
    let control = root.join("control");
    if fs.metadata(&control.join("me")).is_ok() && !o.force {
        return Err(InitError::Exists(root.to_path_buf()));
    }
    let alias = root.join("alias");
    let users = root.join("users");
    mkdirs(fs, o, &[control.clone(), alias.clone(), users.clone()])?;

    let me = format!("{}\n", o.me);
    for (file, text) in [
        ("me", me.as_str()),
        ("locals", me.as_str()),
        ("rcpthosts", me.as_str()),
        ("defaultdelivery", "./Maildir/\n"),
    ] {
        put(fs, o, &control.join(file), text)?;
    }
    if let Some(q) = &o.queue_user {
        valid_name("--queue-user", q, &['.', '-', '_'])?;
        put(fs, o, &control.join("queueuser"), &format!("{q}\n"))?;
    }
    sync_dir(fs, o, &control)?;

    let mut assign = String::new();
    for u in &o.users {
        let home = root.join("home").join(u);
        let md = home.join("Maildir");
        mkdirs(fs, o, &[md.join("new"), md.join("cur"), md.join("tmp")])?;
        let (uid, gid) = o.owners.get(u).copied().unwrap_or((o.uid, o.gid));
        let h = home.display();
        assign.push_str(&format!("={u}:{u}:{uid}:{gid}:{h}:::\n"));
        assign.push_str(&format!("+{u}-:{u}:{uid}:{gid}:{h}:-::\n"));
    }
    assign.push_str(".\n");
    put(fs, o, &users.join("assign"), &assign)?;
    sync_dir(fs, o, &users)?;

    if let Some(first) = o.users.first() {
        for a in ["postmaster", "mailer-daemon", "root", "abuse"] {
            put(
                fs,
                o,
                &alias.join(format!(".qmail-{a}")),
                &format!("&{first}\n"),
            )?;
        }
        sync_dir(fs, o, &alias)?;
    }

    let cfg = queue::Config {
        disabled: o.disabled,
        ..Default::default()
    };
    queue::create_layout(env, &queue::Paths::new(root.join("queue")), &cfg)?;
    Ok(())
}
