//! The POP3 server (qmail-popup + checkpassword + qmail-pop3d): a listener driving
//! [`crate::pop3::session::Session`]s over the environment's network. A login is checked and
//! the mailbox opened where root is kept ([`login`]): in this process when it is root (`mta
//! pop3d`) or the mailbox's owner, else in the POP3 helper `mta run` started before giving root
//! up ([`helper`]). Either way every mailbox operation runs as the mailbox's owner
//! ([`maildrop`]), on the Maildir `HOME/Maildir/` of the user's `users/assign` entry.
//!
//! Like qmail's programs, which start afresh for every connection, each session reads its
//! control files when it starts, so changes apply to the next session without a SIGHUP.

pub mod helper;
pub mod login;
pub mod maildrop;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::control::ControlDir;
use crate::env::{unix_secs, Env, Fs, Listener, Net};
use crate::netio::{read_timed, write_timed};
use crate::pop3::mailbox::CHUNK;
use crate::pop3::session::{Credentials, Login, Session, Step};
use crate::pop3::wire::Encoder;
use helper::Client;
use login::LoginConfig;
use maildrop::Maildrop;

/// What the dialogue reads from the installation.
#[derive(Debug, Clone)]
struct Config {
    me: String,
    /// control/timeoutpop3d (default 1200 s, qmail-pop3d's): one read or write.
    timeout: Duration,
    /// control/servercert.pem (the SMTP side's): STLS and POP3S.
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl Config {
    fn load<F: Fs>(fs: &F, root: &Path) -> Result<Config, String> {
        let c = ControlDir::new(fs, root);
        Ok(Config {
            me: c.me().map_err(|e| e.to_string())?,
            tls: crate::tls::load_server(fs, root).map_err(|e| e.to_string())?,
            timeout: Duration::from_secs(
                c.number("timeoutpop3d", 1200)
                    .map_err(|e| e.to_string())?
                    .max(1),
            ),
        })
    }
}

/// A logged-in session's mailbox: opened by this process, or by the POP3 helper (the
/// session's id there).
enum Mailbox {
    Here(Maildrop),
    Helper(Arc<Client>, u64),
}

impl Mailbox {
    async fn read(&self, path: &str, offset: u64) -> io::Result<Vec<u8>> {
        match self {
            Mailbox::Here(m) => m.read(path, offset).await,
            Mailbox::Helper(h, s) => h.read(*s, path, offset).await,
        }
    }
    async fn update(&self, gone: Vec<String>) -> io::Result<()> {
        match self {
            Mailbox::Here(m) => m.update(gone).await,
            Mailbox::Helper(h, s) => h.update(*s, &gone).await,
        }
    }
    async fn close(self) {
        if let Mailbox::Helper(h, s) = self {
            h.close(s).await;
        }
    }
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
    helper: Option<Arc<Client>>,
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
                    let helper = helper.clone();
                    sessions.spawn(async move {
                        if active.fetch_add(1, Ordering::SeqCst) >= limit {
                            let msg = b"-ERR too many sessions, try again later\r\n";
                            let _ = write_timed(&env, &mut stream, msg, Duration::from_secs(10)).await;
                        } else if let Err(e) = session(&env, &root, stream, (peer, tls_first), helper).await {
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
    root: PathBuf,
    /// Where logins go when this process cannot open others' mailboxes.
    helper: Option<Arc<Client>>,
}

/// One POP3 session; `tls_first`: implicit TLS (POP3S), else STLS when there is a
/// certificate.
async fn session<E: Env, S>(
    env: &E,
    root: &Path,
    mut stream: S,
    (peer, tls_first): (SocketAddr, bool),
    helper: Option<Arc<Client>>,
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
        root: root.to_path_buf(),
        helper,
    };
    let r = converse(env, &cfg, &mut c, stream, tls_first).await;
    if let Some(m) = c.mb.take() {
        m.close().await;
    }
    r
}

/// The dialogue in the clear, then inside TLS after STLS (or from the start).
async fn converse<E: Env, S>(
    env: &E,
    cfg: &Config,
    c: &mut Conn,
    mut stream: S,
    tls_first: bool,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if !tls_first {
        if cfg.tls.is_some() {
            c.s.offer_tls();
        }
        if let End::Closed = dialogue(env, cfg, c, &mut stream).await? {
            return Ok(());
        }
    }
    let Some(mut tls) = accept_tls(env, cfg, stream, c.peer).await else {
        return Ok(());
    };
    c.s.tls_started();
    dialogue(env, cfg, c, &mut tls).await.map(|_| ())
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
                let (login, m) = log_in(env, c, &cred).await;
                if let Some(old) = std::mem::replace(&mut c.mb, m) {
                    old.close().await;
                }
                c.s.authenticated(login);
            }
            Step::Send { index, path, lines } => {
                retr(env, cfg, c, stream, (index, path, lines)).await?
            }
            Step::Update(gone) => update(c, gone).await,
        }
    }
}

/// Check the credentials and open the mailbox: here, or through the POP3 helper.
async fn log_in<E: Env>(env: &E, c: &Conn, cred: &Credentials) -> (Login, Option<Mailbox>) {
    if let Some(h) = &c.helper {
        let (l, s) = h.login(cred, c.peer).await;
        return (l, s.map(|s| Mailbox::Helper(h.clone(), s)));
    }
    match LoginConfig::load(env.fs(), &c.root) {
        Ok(cfg) => {
            let (l, m) = login::login(env, &cfg, cred, c.peer).await;
            (l, m.map(Mailbox::Here))
        }
        Err(e) => {
            tracing::warn!("pop3 {}: unable to read controls: {e}", c.peer);
            (Login::Temp("unable to read controls".into()), None)
        }
    }
}

/// RETR or TOP: read the first piece as the message's owner (`-ERR` if that fails), then
/// stream the rest.
async fn retr<E: Env, S: AsyncWrite + Unpin>(
    env: &E,
    cfg: &Config,
    c: &mut Conn,
    stream: &mut S,
    (index, path, lines): (usize, String, Option<u64>),
) -> io::Result<()> {
    let Some(m) = &c.mb else { return Ok(()) };
    match m.read(&path, 0).await {
        Ok(first) => {
            c.s.send_started(index, lines);
            write_timed(env, stream, &c.s.take_output(), cfg.timeout).await?;
            send_message(env, stream, (m, &path, first), lines, cfg.timeout).await
        }
        Err(e) => {
            tracing::warn!("pop3 {}: message {}: {e}", c.peer, index + 1);
            c.s.send_failed();
            Ok(())
        }
    }
}

/// QUIT: the deletions, durable before the answer.
async fn update(c: &mut Conn, gone: Vec<String>) {
    let n = gone.len();
    let r = match &c.mb {
        Some(m) => m.update(gone).await,
        None => Ok(()),
    };
    match &r {
        Err(e) => tracing::warn!("pop3 {}: removing deleted messages: {e}", c.peer),
        Ok(()) => tracing::info!("pop3 {}: {n} messages deleted", c.peer),
    }
    c.s.updated(r.is_ok());
}

/// Stream a message (or TOP's part of it) in pieces, encoded for the wire; `first` is the
/// piece at offset 0, already read.
async fn send_message<E: Env, S: AsyncWrite + Unpin>(
    env: &E,
    stream: &mut S,
    (m, path, first): (&Mailbox, &str, Vec<u8>),
    lines: Option<u64>,
    t: Duration,
) -> io::Result<()> {
    let mut enc = Encoder::new(lines);
    let mut out = Vec::with_capacity(2 * CHUNK + 8);
    let mut piece = first;
    let mut off = 0u64;
    while !enc.is_done() && !piece.is_empty() {
        off += piece.len() as u64;
        enc.push(&piece, &mut out);
        write_timed(env, stream, &out, t).await?;
        out.clear();
        if enc.is_done() {
            break;
        }
        piece = m.read(path, off).await?;
    }
    enc.finish(&mut out);
    write_timed(env, stream, &out, t).await
}
