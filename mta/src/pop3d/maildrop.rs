//! A logged-in session's mailbox, worked on as its owner (qmail-pop3d, which checkpassword
//! starts as the user): one task started through [`Env::run_as`] when the login succeeds,
//! living as long as the session. On a real host started as root that is a thread whose
//! filesystem identity is the user's, so every read, rename and unlink in the Maildir is the
//! user's own; the session's other parts (the dialogue, TLS) never touch the mailbox.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, oneshot};

use crate::env::{Creds, Env, Fs, FsFile};
use crate::pop3::mailbox::{self, Msg, CHUNK};

/// What a session asks of its mailbox's worker.
enum Op {
    /// Up to [`CHUNK`] bytes of a listed message from `offset` (empty at its end).
    Read {
        path: String,
        offset: u64,
        reply: oneshot::Sender<io::Result<Vec<u8>>>,
    },
    /// QUIT: remove these listed messages durably.
    Update {
        gone: Vec<String>,
        reply: oneshot::Sender<io::Result<()>>,
    },
}

/// The handle a session holds; dropping it ends the worker.
#[derive(Clone)]
pub struct Maildrop {
    tx: mpsc::Sender<Op>,
}

fn worker_gone() -> io::Error {
    io::Error::other("the mailbox worker is gone")
}

impl Maildrop {
    /// Become `who` in `home`, tidy `Maildir/tmp/`, move `new/` to `cur/` and list the
    /// messages; the worker then waits for the session's requests.
    pub async fn open<E: Env>(
        env: &E,
        who: Creds,
        home: &Path,
    ) -> io::Result<(Maildrop, Vec<Msg>)> {
        let (tx, rx) = mpsc::channel(1);
        let (opened_tx, opened) = oneshot::channel();
        let env2 = env.clone();
        let run = env.run_as(who, home, move |base| {
            work(env2, base.join("Maildir"), opened_tx, rx)
        });
        tokio::spawn(async move {
            if let Err(e) = run.await {
                tracing::warn!("pop3: cannot act as uid {} gid {}: {e}", who.uid, who.gid);
            }
        });
        let msgs = opened.await.map_err(|_| {
            io::Error::other(format!("cannot act as uid {} gid {}", who.uid, who.gid))
        })??;
        Ok((Maildrop { tx }, msgs))
    }

    /// A piece of a listed message from `offset`: empty at its end.
    pub async fn read(&self, path: &str, offset: u64) -> io::Result<Vec<u8>> {
        let (reply, rx) = oneshot::channel();
        let op = Op::Read {
            path: path.to_string(),
            offset,
            reply,
        };
        self.tx.send(op).await.map_err(|_| worker_gone())?;
        rx.await.map_err(|_| worker_gone())?
    }

    /// Remove listed messages durably (UPDATE).
    pub async fn update(&self, gone: Vec<String>) -> io::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Update { gone, reply })
            .await
            .map_err(|_| worker_gone())?;
        rx.await.map_err(|_| worker_gone())?
    }
}

/// The worker, as the user: open the mailbox, then serve requests until the session ends.
/// Only messages of the listing are touched, whatever the requests name.
async fn work<E: Env>(
    env: E,
    dir: PathBuf,
    opened: oneshot::Sender<io::Result<Vec<Msg>>>,
    mut rx: mpsc::Receiver<Op>,
) {
    let fs = env.fs();
    mailbox::clean_tmp(fs, &dir, env.now());
    let msgs = match mailbox::open(fs, &dir) {
        Ok(m) => m,
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    let listed: BTreeSet<String> = msgs.iter().map(|m| m.path.clone()).collect();
    if opened.send(Ok(msgs)).is_err() {
        return;
    }
    // The message being sent, kept open between pieces.
    let mut file: Option<(String, <E::Fs as Fs>::File)> = None;
    while let Some(op) = rx.recv().await {
        match op {
            Op::Read {
                path,
                offset,
                reply,
            } => {
                let r = read(fs, &dir, &listed, &mut file, path, offset);
                let _ = reply.send(r);
            }
            Op::Update { gone, reply } => {
                file = None;
                let r = match gone.iter().find(|p| !listed.contains(*p)) {
                    Some(p) => Err(not_listed(p)),
                    None => mailbox::update(fs, &dir, &gone),
                };
                let _ = reply.send(r);
            }
        }
    }
}

fn not_listed(path: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{path:?} is not a message of this session"),
    )
}

fn read<F: Fs>(
    fs: &F,
    dir: &Path,
    listed: &BTreeSet<String>,
    file: &mut Option<(String, F::File)>,
    path: String,
    offset: u64,
) -> io::Result<Vec<u8>> {
    if !listed.contains(&path) {
        return Err(not_listed(&path));
    }
    if file.as_ref().is_none_or(|(p, _)| *p != path) {
        *file = None;
        let f = fs.open_rw(&dir.join(&path))?;
        *file = Some((path, f));
    }
    let Some((_, f)) = file.as_mut() else {
        return Err(worker_gone());
    };
    let mut buf = vec![0u8; CHUNK];
    let n = f.read_at(offset, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}
