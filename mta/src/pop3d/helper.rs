//! The POP3 helper: how `mta run`, once it has given root up for `control/queueuser`, still
//! serves every user's Maildir as that user. Before the drop it starts this helper
//! ([`Env::spawn_pop3_helper`]; on a real host `mta pop3helper`), which keeps root as
//! checkpassword does in qmail-popup → checkpassword → qmail-pop3d: the server's POP3
//! sessions (dialogue, TLS) hand it the credentials a client gave, it checks them itself
//! ([`login`]) and, on success, opens the Maildir in a worker running as the user
//! ([`Maildrop`]); the session then reads and deletes through it. So the unprivileged server
//! never reads a mailbox without its owner's password, and the mailbox is never touched as
//! root nor as the queue user.
//!
//! Frames on the pipe: `len:u32 | kind:u8 | id:u64 | fields`, a field `len:u32 | bytes` or a
//! little-endian `u64`. Answers come back in any order with their request's id; a login's id
//! names its session afterwards.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncRead;
use tokio::sync::oneshot;

use super::login::{login, LoginConfig};
use super::maildrop::Maildrop;
use crate::env::{Env, HelperPipe};
use crate::helperframe::{bad, send, Dec, Enc, Writer};
use crate::pop3::mailbox::Msg;
use crate::pop3::session::{Credentials, Login};

/// The largest frame either side accepts (a login's listing of a huge mailbox).
const MAX_FRAME: usize = 256 << 20;

const LOGIN: u8 = 1;
const READ: u8 = 2;
const UPDATE: u8 = 3;
const CLOSE: u8 = 4;
const ANSWER: u8 = 5;

/// A frame of `kind` about request `id`.
fn enc(kind: u8, id: u64) -> Enc {
    let mut e = Enc::new(kind);
    e.u64(id);
    e
}

/// One frame (see [`crate::helperframe`]): kind, id and the rest. `None` at a clean end.
async fn read_frame(
    r: &mut (dyn AsyncRead + Send + Unpin),
) -> io::Result<Option<(u8, u64, Vec<u8>)>> {
    let Some((kind, mut buf)) = crate::helperframe::read_frame(r, MAX_FRAME).await? else {
        return Ok(None);
    };
    let id = Dec(&buf).u64()?;
    buf.drain(..8);
    Ok(Some((kind, id, buf)))
}

fn encode_login(c: &Credentials, peer: SocketAddr) -> Enc {
    let mut e = enc(LOGIN, 0);
    e.bytes(c.user.as_bytes()).bytes(c.secret.as_bytes());
    e.bytes(c.timestamp.as_bytes())
        .bytes(peer.to_string().as_bytes());
    e
}

fn decode_login(f: &[u8]) -> io::Result<(Credentials, SocketAddr)> {
    let mut d = Dec(f);
    let c = Credentials {
        user: d.text()?,
        secret: d.text()?,
        timestamp: d.text()?,
    };
    let peer = d.text()?.parse().map_err(|_| bad("peer"))?;
    Ok((c, peer))
}

fn encode_login_answer(id: u64, l: &Login) -> Vec<u8> {
    let mut e = enc(ANSWER, id);
    match l {
        Login::Ok(msgs) => {
            e.u64(0).u64(msgs.len() as u64);
            for m in msgs {
                e.bytes(m.path.as_bytes())
                    .bytes(m.uid.as_bytes())
                    .u64(m.size);
            }
        }
        Login::Bad => {
            e.u64(1);
        }
        Login::Temp(why) => {
            e.u64(2).bytes(why.as_bytes());
        }
    }
    e.done()
}

fn decode_login_answer(f: &[u8]) -> io::Result<Login> {
    let mut d = Dec(f);
    Ok(match d.u64()? {
        0 => {
            let n = d.u64()?;
            let mut msgs = Vec::new();
            for _ in 0..n {
                let (path, uid, size) = (d.text()?, d.text()?, d.u64()?);
                msgs.push(Msg { path, uid, size });
            }
            Login::Ok(msgs)
        }
        1 => Login::Bad,
        2 => Login::Temp(d.text()?),
        _ => return Err(bad("login answer")),
    })
}

/// An answer carrying bytes or an error's text.
fn encode_result(id: u64, r: io::Result<Vec<u8>>) -> Vec<u8> {
    let mut e = enc(ANSWER, id);
    match r {
        Ok(b) => e.u64(0).bytes(&b),
        Err(err) => e.u64(1).bytes(err.to_string().as_bytes()),
    };
    e.done()
}

fn decode_result(f: &[u8]) -> io::Result<Vec<u8>> {
    let mut d = Dec(f);
    match d.u64()? {
        0 => Ok(d.bytes()?.to_vec()),
        1 => Err(io::Error::other(d.text()?)),
        _ => Err(bad("answer")),
    }
}

/// Logged-in sessions, by their login's id.
type Sessions = Arc<Mutex<BTreeMap<u64, Maildrop>>>;

fn session(s: &Sessions, id: u64) -> io::Result<Maildrop> {
    let s = s.lock().unwrap_or_else(|e| e.into_inner());
    s.get(&id).cloned().ok_or_else(|| bad("session"))
}

/// The helper: serve the pipe until it closes, then finish what runs.
pub async fn serve<E: Env>(env: E, root: PathBuf, pipe: HelperPipe) -> io::Result<()> {
    let HelperPipe { mut from, to } = pipe;
    let to: Writer = Arc::new(tokio::sync::Mutex::new(to));
    let sessions: Sessions = Arc::default();
    let mut running = tokio::task::JoinSet::new();
    while let Some((kind, id, f)) = read_frame(&mut *from).await? {
        if kind == CLOSE {
            let gone = sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            drop(gone);
            continue;
        }
        let (env, root, to, sessions) = (env.clone(), root.clone(), to.clone(), sessions.clone());
        running.spawn(async move {
            let answer = match answer(&env, &root, &sessions, kind, id, &f).await {
                Ok(a) => a,
                Err(e) => encode_result(id, Err(e)),
            };
            // The server went away: it ends its sessions with it.
            let _ = send(&to, &answer).await;
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    Ok(())
}

/// One request's answer frame.
async fn answer<E: Env>(
    env: &E,
    root: &std::path::Path,
    sessions: &Sessions,
    kind: u8,
    id: u64,
    f: &[u8],
) -> io::Result<Vec<u8>> {
    match kind {
        LOGIN => {
            let (c, peer) = decode_login(f)?;
            let (l, drop) = match LoginConfig::load(env.fs(), root) {
                Ok(cfg) => login(env, &cfg, &c, peer).await,
                Err(e) => {
                    tracing::warn!("pop3 {peer}: unable to read controls: {e}");
                    (Login::Temp("unable to read controls".into()), None)
                }
            };
            if let Some(d) = drop {
                sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, d);
            }
            Ok(encode_login_answer(id, &l))
        }
        READ => {
            let mut d = Dec(f);
            let (s, path, offset) = (d.u64()?, d.text()?, d.u64()?);
            let r = session(sessions, s)?.read(&path, offset).await;
            Ok(encode_result(id, r))
        }
        UPDATE => {
            let mut d = Dec(f);
            let s = d.u64()?;
            let gone = (0..d.u64()?).map(|_| d.text()).collect::<io::Result<_>>()?;
            let r = session(sessions, s)?.update(gone).await;
            Ok(encode_result(id, r.map(|()| Vec::new())))
        }
        _ => Err(bad("request")),
    }
}

/// The server's end of the helper's pipe.
pub struct Client {
    to: Writer,
    pending: Mutex<BTreeMap<u64, oneshot::Sender<Vec<u8>>>>,
    next: AtomicU64,
    gone: AtomicBool,
    closed: tokio::sync::Notify,
}

fn helper_gone() -> io::Error {
    io::Error::other("the POP3 helper is gone")
}

impl Client {
    /// Talk to the helper on `pipe` (a task reads its answers).
    pub fn start(pipe: HelperPipe) -> Arc<Client> {
        let HelperPipe { from, to } = pipe;
        let c = Arc::new(Client {
            to: Arc::new(tokio::sync::Mutex::new(to)),
            pending: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
            gone: AtomicBool::new(false),
            closed: tokio::sync::Notify::new(),
        });
        tokio::spawn(c.clone().answers(from));
        c
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, oneshot::Sender<Vec<u8>>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn answers(self: Arc<Self>, mut from: Box<dyn AsyncRead + Send + Unpin>) {
        loop {
            match read_frame(&mut *from).await {
                Ok(Some((ANSWER, id, f))) => {
                    if let Some(tx) = self.pending().remove(&id) {
                        let _ = tx.send(f);
                    }
                }
                other => {
                    let why = match other {
                        Err(e) => e.to_string(),
                        _ => "it closed its pipe or sent nonsense".into(),
                    };
                    tracing::error!("POP3 helper: {why}");
                    self.gone.store(true, Ordering::SeqCst);
                    // Dropping the senders answers every waiting request.
                    self.pending().clear();
                    self.closed.notify_one();
                    return;
                }
            }
        }
    }

    /// Send a request (its id filled in here), wait for its answer's fields.
    async fn call(&self, mut frame: Enc) -> io::Result<(u64, Vec<u8>)> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        frame.set_first_u64(id);
        let (tx, rx) = oneshot::channel();
        self.pending().insert(id, tx);
        if self.gone.load(Ordering::SeqCst) || send(&self.to, &frame.done()).await.is_err() {
            self.pending().remove(&id);
            return Err(helper_gone());
        }
        Ok((id, rx.await.map_err(|_| helper_gone())?))
    }

    /// Log in through the helper: on success, the session's id there.
    pub async fn login(&self, c: &Credentials, peer: SocketAddr) -> (Login, Option<u64>) {
        let answer = self
            .call(encode_login(c, peer))
            .await
            .and_then(|(id, f)| Ok((decode_login_answer(&f)?, id)));
        match answer {
            Ok((l @ Login::Ok(_), id)) => (l, Some(id)),
            Ok((l, _)) => (l, None),
            Err(e) => {
                tracing::error!("pop3 {peer}: {e}");
                (Login::Temp("unable to check the password now".into()), None)
            }
        }
    }

    /// A piece of a message of session `s` from `offset`.
    pub async fn read(&self, s: u64, path: &str, offset: u64) -> io::Result<Vec<u8>> {
        let mut e = enc(READ, 0);
        e.u64(s).bytes(path.as_bytes()).u64(offset);
        decode_result(&self.call(e).await?.1)
    }

    /// Session `s`'s deletions.
    pub async fn update(&self, s: u64, gone: &[String]) -> io::Result<()> {
        let mut e = enc(UPDATE, 0);
        e.u64(s).u64(gone.len() as u64);
        for p in gone {
            e.bytes(p.as_bytes());
        }
        decode_result(&self.call(e).await?.1).map(|_| ())
    }

    /// Session `s` is over: its worker ends.
    pub async fn close(&self, s: u64) {
        let _ = send(&self.to, &enc(CLOSE, s).done()).await;
    }

    /// Resolves once the helper is gone.
    pub async fn closed(&self) {
        while !self.gone.load(Ordering::SeqCst) {
            let n = self.closed.notified();
            if self.gone.load(Ordering::SeqCst) {
                return;
            }
            n.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_truncations_are_errors() {
        let c = Credentials {
            user: "fred".into(),
            secret: "s3cret".into(),
            timestamp: "<1.2@x>".into(),
        };
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let f = encode_login(&c, peer).done();
        assert_eq!(decode_login(&f[13..]).unwrap(), (c, peer));
        for cut in 13..f.len() {
            assert!(decode_login(&f[13..cut]).is_err(), "cut at {cut}");
        }
        for l in [
            Login::Ok(vec![Msg {
                path: "cur/1.a:2,".into(),
                uid: "1.a".into(),
                size: 9,
            }]),
            Login::Bad,
            Login::Temp("later".into()),
        ] {
            let f = encode_login_answer(3, &l);
            assert_eq!(decode_login_answer(&f[13..]).unwrap(), l);
        }
        let f = encode_result(4, Err(io::Error::other("no")));
        assert_eq!(decode_result(&f[13..]).unwrap_err().to_string(), "no");
    }

    #[tokio::test]
    async fn a_helper_that_goes_away_refuses_logins_for_now() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (from, to) = tokio::io::split(ours);
        let c = Client::start(HelperPipe {
            from: Box::new(from),
            to: Box::new(to),
        });
        drop(theirs);
        c.closed().await;
        let cred = Credentials {
            user: "fred".into(),
            secret: "x".into(),
            timestamp: String::new(),
        };
        let (l, s) = c.login(&cred, "127.0.0.1:1".parse().unwrap()).await;
        assert!(matches!(l, Login::Temp(_)) && s.is_none());
    }
}
