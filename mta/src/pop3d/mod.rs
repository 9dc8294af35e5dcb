//! The POP3 server (qmail-popup + checkpassword + qmail-pop3d in one): a listener driving
//! [`crate::pop3::session::Session`]s over the environment's network. After a good password
//! every mailbox operation runs as the mailbox's owner ([`Env::run_as`], as local delivery
//! does), on the Maildir `HOME/Maildir/` of the user's `users/assign` entry.
//!
//! Like qmail's programs, which start afresh for every connection, each session reads its
//! control files when it starts, so changes apply to the next session without a SIGHUP.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::checkpassword::{self, Verdict};
use crate::control::ControlDir;
use crate::env::{unix_secs, Creds, Env, Fs, FsFile, Listener, Net};
use crate::local::LocalConfig;
use crate::netio::{read_timed, write_timed};
use crate::pop3::mailbox::{self, CHUNK};
use crate::pop3::session::{Credentials, Login, Session, Step};
use crate::pop3::wire::Encoder;
use crate::smtp::server::AuthResult;
use crate::smtpd::auth::Checker;

/// What a session reads from the installation.
#[derive(Debug, Clone)]
struct Config {
    me: String,
    /// control/checkpassword, else control/passwd (as SMTP AUTH checks).
    checker: Option<Checker>,
    /// users/assign (and, with control/getpw, the system's accounts).
    local: LocalConfig,
    /// control/timeoutpop3d (default 1200 s, qmail-pop3d's): one read or write.
    timeout: Duration,
    /// control/servercert.pem (the SMTP side's): STLS and POP3S.
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl Config {
    fn load<F: Fs>(fs: &F, root: &Path) -> Result<Config, String> {
        let c = ControlDir::new(fs, root);
        let local = LocalConfig::load(fs, root).map_err(|e| e.to_string())?;
        Ok(Config {
            me: c.me().map_err(|e| e.to_string())?,
            checker: Checker::load(fs, root).map_err(|e| e.to_string())?,
            tls: crate::tls::load_server(fs, root).map_err(|e| e.to_string())?,
            local,
            timeout: Duration::from_secs(
                c.number("timeoutpop3d", 1200)
                    .map_err(|e| e.to_string())?
                    .max(1),
            ),
        })
    }
}

/// Whose Maildir a logged-in session serves.
#[derive(Debug, Clone)]
struct Mailbox {
    who: Creds,
    home: PathBuf,
}

/// Sessions at once when `control/concurrencypop3` does not say.
pub const DEFAULT_CONCURRENCY: u64 = 40;

/// Accept connections until `shutdown` turns true, then wait for the sessions in progress.
pub async fn serve<E: Env>(
    env: E,
    root: PathBuf,
    listener: <E::Net as Net>::Listener,
    mut shutdown: watch::Receiver<bool>,
    tls_first: bool,
) {
    let limit = ControlDir::new(env.fs(), &root)
        .number("concurrencypop3", DEFAULT_CONCURRENCY)
        .unwrap_or(DEFAULT_CONCURRENCY) as usize;
    let active = Arc::new(AtomicUsize::new(0));
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            r = listener.accept() => match r {
                Ok((mut stream, peer)) => {
                    let (env, root, active) = (env.clone(), root.clone(), active.clone());
                    sessions.spawn(async move {
                        if active.fetch_add(1, Ordering::SeqCst) >= limit {
                            let msg = b"-ERR too many sessions, try again later\r\n";
                            let _ = write_timed(&env, &mut stream, msg, Duration::from_secs(10)).await;
                        } else if let Err(e) = session(&env, &root, stream, peer, tls_first).await {
                            tracing::debug!("pop3 {peer}: {e}");
                        }
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Err(e) => {
                    tracing::warn!("pop3 accept: {e}");
                    env.sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    while sessions.join_next().await.is_some() {}
}

/// How a dialogue ended.
enum End {
    Closed,
    StartTls,
}

/// A session's state across a switch to TLS.
struct Conn {
    s: Session,
    mb: Option<Mailbox>,
    peer: SocketAddr,
}

/// One POP3 session; `tls_first`: implicit TLS (POP3S), else STLS when there is a
/// certificate.
async fn session<E: Env, S>(
    env: &E,
    root: &Path,
    mut stream: S,
    peer: SocketAddr,
    tls_first: bool,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let cfg = match Config::load(env.fs(), root) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("pop3 {peer}: unable to read controls: {e}");
            let msg = b"-ERR unable to read controls, try again later\r\n";
            return write_timed(env, &mut stream, msg, Duration::from_secs(10)).await;
        }
    };
    let ts = format!(
        "<{}.{}.{}@{}>",
        env.pid(),
        unix_secs(env.now()),
        env.random_u64() % 1_000_000,
        cfg.me
    );
    let mut c = Conn {
        s: Session::new(ts),
        mb: None,
        peer,
    };
    if !tls_first {
        if cfg.tls.is_some() {
            c.s.offer_tls();
        }
        if let End::Closed = dialogue(env, &cfg, &mut c, &mut stream).await? {
            return Ok(());
        }
    }
    let Some(mut tls) = accept_tls(env, &cfg, stream, peer).await else {
        return Ok(());
    };
    c.s.tls_started();
    dialogue(env, &cfg, &mut c, &mut tls).await.map(|_| ())
}

/// The TLS handshake with `control/servercert.pem`'s certificate.
async fn accept_tls<E: Env, S>(
    env: &E,
    cfg: &Config,
    stream: S,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(tls) = cfg.tls.clone() else {
        tracing::warn!("pop3 {peer}: TLS wanted but control/servercert.pem is missing");
        return None;
    };
    let r = tokio::select! {
        biased;
        r = tokio_rustls::TlsAcceptor::from(tls).accept(stream) => r,
        _ = env.sleep(cfg.timeout) => Err(io::ErrorKind::TimedOut.into()),
    };
    r.map_err(|e| tracing::info!("pop3 {peer}: TLS handshake failed: {e}"))
        .ok()
}

/// Run the dialogue over `stream` until the session closes or switches to TLS.
async fn dialogue<E: Env, S>(env: &E, cfg: &Config, c: &mut Conn, stream: &mut S) -> io::Result<End>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let t = cfg.timeout;
    let mut buf = vec![0u8; 4096];
    loop {
        match c.s.step() {
            Step::Idle => {
                write_timed(env, stream, &c.s.take_output(), t).await?;
                match read_timed(env, stream, &mut buf, t).await? {
                    None => c.s.timeout(),
                    Some(0) => return Ok(End::Closed),
                    Some(n) => c.s.input(&buf[..n]),
                }
            }
            Step::Close => {
                write_timed(env, stream, &c.s.take_output(), t).await?;
                let _ = stream.shutdown().await;
                return Ok(End::Closed);
            }
            Step::StartTls => {
                write_timed(env, stream, &c.s.take_output(), t).await?;
                return Ok(End::StartTls);
            }
            Step::Auth(cred) => {
                let (login, m) = login(env, cfg, &cred, c.peer).await;
                c.mb = m;
                c.s.authenticated(login);
            }
            Step::Send { index, path, lines } => {
                retr(env, cfg, c, stream, (index, path, lines)).await?
            }
            Step::Update(gone) => update(env, c, gone).await,
        }
    }
}

/// RETR or TOP: open the message as its owner, then stream it.
async fn retr<E: Env, S: AsyncWrite + Unpin>(
    env: &E,
    cfg: &Config,
    c: &mut Conn,
    stream: &mut S,
    (index, path, lines): (usize, String, Option<u64>),
) -> io::Result<()> {
    let Some(m) = &c.mb else { return Ok(()) };
    match as_user(env, m, move |fs, dir| fs.open_rw(&dir.join(path))).await {
        Ok(f) => {
            c.s.send_started(index, lines);
            write_timed(env, stream, &c.s.take_output(), cfg.timeout).await?;
            send_message(env, stream, f, lines, cfg.timeout).await
        }
        Err(e) => {
            tracing::warn!("pop3 {}: message {}: {e}", c.peer, index + 1);
            c.s.send_failed();
            Ok(())
        }
    }
}

/// QUIT: the deletions, durable before the answer.
async fn update<E: Env>(env: &E, c: &mut Conn, gone: Vec<String>) {
    let n = gone.len();
    let r = match &c.mb {
        Some(m) => as_user(env, m, move |fs, dir| mailbox::update(fs, dir, &gone)).await,
        None => Ok(()),
    };
    match &r {
        Err(e) => tracing::warn!("pop3 {}: removing deleted messages: {e}", c.peer),
        Ok(()) => tracing::info!("pop3 {}: {n} messages deleted", c.peer),
    }
    c.s.updated(r.is_ok());
}

/// Run `f` on the user's Maildir as the user.
async fn as_user<E: Env, T: Send + 'static>(
    env: &E,
    m: &Mailbox,
    f: impl FnOnce(&E::Fs, &Path) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let env2 = env.clone();
    env.run_as(m.who, &m.home, move |base| async move {
        f(env2.fs(), &base.join("Maildir"))
    })
    .await?
}

/// Check the password, find the user's mailbox and open it.
async fn login<E: Env>(
    env: &E,
    cfg: &Config,
    c: &Credentials,
    peer: SocketAddr,
) -> (Login, Option<Mailbox>) {
    match verdict(env, cfg, c).await {
        AuthResult::Ok => {}
        AuthResult::Bad => {
            tracing::info!("pop3 {peer}: login failed for {:?}", c.user);
            return (Login::Bad, None);
        }
        AuthResult::Temporary => {
            return (Login::Temp("unable to check the password now".into()), None)
        }
    }
    let m = match mailbox_of(env, cfg, &c.user) {
        Ok(m) => m,
        Err(why) => {
            tracing::warn!("pop3 {peer}: {:?}: {why}", c.user);
            return (Login::Temp(why), None);
        }
    };
    let now = env.now();
    let open = move |fs: &E::Fs, dir: &Path| {
        mailbox::clean_tmp(fs, dir, now);
        mailbox::open(fs, dir)
    };
    match as_user(env, &m, open).await {
        Ok(msgs) => {
            tracing::info!("pop3 {peer}: {} logged in, {} messages", c.user, msgs.len());
            (Login::Ok(msgs), Some(m))
        }
        Err(e) => {
            tracing::warn!("pop3 {peer}: {}: cannot open the Maildir: {e}", c.user);
            (Login::Temp("unable to open the mailbox".into()), None)
        }
    }
}

/// USER/PASS as SMTP AUTH checks them (checkpassword or the password file); APOP through
/// checkpassword with the greeting's timestamp (the password file cannot check a digest).
async fn verdict<E: Env>(env: &E, cfg: &Config, c: &Credentials) -> AuthResult {
    match (&cfg.checker, c.timestamp.is_empty()) {
        (None, _) => {
            tracing::warn!("pop3: no control/checkpassword or control/passwd: no one can log in");
            AuthResult::Temporary
        }
        (Some(ch), true) => {
            let cred = crate::smtp::auth::Credentials {
                user: c.user.clone(),
                password: c.secret.as_bytes().to_vec(),
            };
            ch.check(env, &cred, &cfg.me).await
        }
        (Some(Checker::Program(cmd)), false) => {
            match checkpassword::check(env, cmd, &c.user, c.secret.as_bytes(), &c.timestamp).await {
                Verdict::Ok => AuthResult::Ok,
                Verdict::Bad => AuthResult::Bad,
                Verdict::Temp => AuthResult::Temporary,
            }
        }
        (Some(Checker::File(_)), false) => AuthResult::Bad,
    }
}

/// The user's `users/assign` entry (or account, with `control/getpw`), and whether this process can act as them (the rules of
/// local delivery: never as root, and only as itself unless it runs as root).
fn mailbox_of<E: Env>(env: &E, cfg: &Config, user: &str) -> Result<Mailbox, String> {
    let u = match cfg.local.user(env.fs(), user) {
        Ok(Some(u)) if u.ext.is_empty() => u,
        Ok(_) => return Err("this user has no mailbox here".into()),
        Err(e) => return Err(format!("unable to read users/cdb: {e}")),
    };
    if u.uid == 0 {
        return Err("not allowed to read mail as root".into());
    }
    let me = env.uid();
    if me != 0 && me != u.uid {
        // After giving up root for control/queueuser, too: see the README's POP3 notes.
        return Err(format!(
            "mta run runs as uid {me}, not as root, and cannot open uid {}'s mailbox",
            u.uid
        ));
    }
    Ok(Mailbox {
        who: Creds {
            uid: u.uid,
            gid: u.gid,
        },
        home: u.home,
    })
}

/// Stream a message (or TOP's part of it) in pieces, encoded for the wire.
async fn send_message<E: Env, S: AsyncWrite + Unpin, F: FsFile>(
    env: &E,
    stream: &mut S,
    mut f: F,
    lines: Option<u64>,
    t: Duration,
) -> io::Result<()> {
    let mut enc = Encoder::new(lines);
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(2 * CHUNK + 8);
    let mut off = 0u64;
    while !enc.is_done() {
        let n = f.read_at(off, &mut buf)?;
        if n == 0 {
            break;
        }
        off += n as u64;
        enc.push(&buf[..n], &mut out);
        write_timed(env, stream, &out, t).await?;
        out.clear();
    }
    enc.finish(&mut out);
    write_timed(env, stream, &out, t).await
}
