//! The SMTP receiver (qmail-smtpd): a listener driving [`crate::smtp::server::Session`]s over
//! the environment's network, committing messages through the queue service.

pub mod auth;
pub mod filter;
pub mod perip;
pub mod rules;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::control::{ControlDir, ControlError};
use crate::env::{unix_secs, Env, Fs, Listener, Net};
use crate::queue::service::QueueHandle;
use crate::queue::spool::{self, Spool};
use crate::queue::{Config, NewMessage, Paths};
use crate::smtp::deadline::{self, Limits, Watch};
use crate::smtp::received::Peer;
use crate::smtp::server::{CommitError, Policy, RcptCheck, Secure, Session, Step};
use filter::{Filter, Input, Verdict};
use perip::PerIp;
use rules::Rules;

/// Everything the receiver reads from control files (reloaded on SIGHUP).
#[derive(Debug, Clone)]
pub struct Settings {
    pub me: String,
    pub greeting: String,
    pub rcpthosts: Option<Vec<String>>,
    pub morercpthosts: Vec<String>,
    pub badmailfrom: Vec<String>,
    pub databytes: u64,
    pub localiphost: String,
    /// control/timeoutsmtpd: one read, and one whole command line.
    pub timeout: Duration,
    /// Whole-command and whole-DATA deadlines (timeoutsmtpd, timeoutdata, dataminrate).
    pub deadlines: Limits,
    pub concurrency: usize,
    /// control/concurrencyperip (default 10; 0: no limit): sessions from one address.
    pub concurrency_per_ip: usize,
    pub rules: Rules,
    pub filters: Vec<String>,
    /// Our own addresses, for `box@[ip]`.
    pub local_ips: Vec<IpAddr>,
    /// control/envnoathost (default: me), the domain of bare recipient names.
    pub envnoathost: String,
    /// control/nullsenderonercpt (default 1): the null sender gets one recipient.
    pub null_sender_one_rcpt: bool,
    /// control/realrcptto (default 0): refuse unknown local recipients at RCPT.
    pub realrcptto: bool,
    /// The check `realrcptto` asks for; the driver builds it (it reads the installation).
    pub rcpt_check: Option<RcptCheck>,
    /// control/servercert.pem: STARTTLS, and the implicit-TLS listener.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// control/checkpassword, else control/passwd: AUTH is offered.
    pub checker: Option<auth::Checker>,
    /// control/authallowplaintext (default 0): AUTH outside TLS too.
    pub auth_plaintext: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    #[error(transparent)]
    Local(#[from] crate::local::LocalConfigError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl Settings {
    pub fn load<F: Fs>(fs: &F, root: &Path) -> Result<Settings, SettingsError> {
        let c = ControlDir::new(fs, root);
        let me = c.me()?;
        let rules = match fs.read(&root.join("control/smtp.rules")) {
            Ok(b) => Rules::parse(&String::from_utf8_lossy(&b))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Rules::default(),
            Err(source) => {
                return Err(ControlError::Read {
                    file: "smtp.rules".into(),
                    source,
                }
                .into())
            }
        };
        let rcpthosts = c.lines("rcpthosts")?;
        let timeout = c.number("timeoutsmtpd", 1200)?;
        Ok(Settings {
            greeting: c.line_or("smtpgreeting", &me)?,
            rcpthosts,
            morercpthosts: c.lines("morercpthosts")?.unwrap_or_default(),
            badmailfrom: c
                .lines("badmailfrom")?
                .unwrap_or_default()
                .into_iter()
                .map(|l| l.to_ascii_lowercase())
                .collect(),
            databytes: c.number("databytes", 0)?,
            localiphost: c.line_or("localiphost", &me)?,
            timeout: Duration::from_secs(timeout),
            deadlines: Limits {
                command: Duration::from_secs(timeout),
                data_base: Duration::from_secs(c.number("timeoutdata", timeout)?),
                data_rate: c.number("dataminrate", deadline::DEFAULT_DATA_RATE)?,
            },
            concurrency: c.number("concurrencyincoming", 100)? as usize,
            // Enough for a busy sender's parallel deliveries, far from every slot.
            concurrency_per_ip: c.number("concurrencyperip", 10)? as usize,
            rules,
            filters: c.lines("smtpfilters")?.unwrap_or_default(),
            local_ips: vec![IpAddr::from([127, 0, 0, 1])],
            envnoathost: c.line_or("envnoathost", &me)?,
            null_sender_one_rcpt: c.switch("nullsenderonercpt", true)?,
            realrcptto: c.switch("realrcptto", false)?,
            rcpt_check: None,
            tls: crate::tls::load_server(fs, root)?,
            checker: auth::Checker::load(fs, root)?,
            auth_plaintext: c.switch("authallowplaintext", false)?,
            me,
        })
    }

    /// True when some rule names a client by host (`=host`): only then is a PTR lookup
    /// worth its time.
    pub fn wants_host_names(&self) -> bool {
        self.rules.0.iter().any(|r| r.key.starts_with('='))
    }

    /// The session policy for a client (with its confirmed host name, if known), or `None`
    /// when the rules deny it.
    pub fn policy_for(&self, peer: SocketAddr, host: Option<&str>) -> Option<Policy> {
        let rule = self.rules.find(peer.ip(), host);
        if rule.is_some_and(|r| !r.allow) {
            return None;
        }
        let var = |name: &str| {
            rule.and_then(|r| r.vars.iter().find(|(k, _)| k == name))
                .map(|(_, v)| v.clone())
        };
        // Checked when the rules were read.
        let databytes = var("DATABYTES")
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.databytes);
        Some(Policy {
            greeting: self.greeting.clone(),
            local_host: self.me.clone(),
            rcpthosts: self.rcpthosts.clone(),
            morercpthosts: self.morercpthosts.clone(),
            badmailfrom: self.badmailfrom.clone(),
            relayclient: var("RELAYCLIENT"),
            databytes,
            localiphost: self.localiphost.clone(),
            local_ips: self.local_ips.clone(),
            peer: Peer {
                remote_ip: peer.ip().to_canonical().to_string(),
                remote_host: host.map(str::to_string),
                remote_info: None,
            },
            envnoathost: self.envnoathost.clone(),
            null_sender_one_rcpt: self.null_sender_one_rcpt,
            rcpt_check: self.rcpt_check.clone(),
            secure: Secure {
                starttls: self.tls.is_some(),
                implicit: false,
                auth: self.checker.is_some(),
                auth_plaintext: self.auth_plaintext,
            },
        })
    }
}

/// qmail-realrcptto's check: a recipient that rewrites to a local address must be one local
/// delivery would take (a user, an extension with its `.qmail` file or `-default`, an alias);
/// remote recipients pass (relaying was decided before).
pub fn local_rcpt_check<E: Env>(env: &E, root: &Path) -> Result<RcptCheck, SettingsError> {
    use crate::queue::{Channel, Classify};
    let rewrite = crate::control::Rewrite::load(&ControlDir::new(env.fs(), root))?;
    let local = crate::local::LocalConfig::load(env.fs(), root)?;
    let env = env.clone();
    Ok(RcptCheck(Arc::new(move |addr: &str| {
        match rewrite.classify(addr) {
            (a, Channel::Local) => crate::local::has_mailbox(env.fs(), &local, &a),
            (_, Channel::Remote) => true,
        }
    })))
}

/// Counters for logs and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub sessions: AtomicU64,
    pub refused_busy: AtomicU64,
    /// Connections refused by `concurrencyperip`.
    pub refused_per_ip: AtomicU64,
    /// Sessions closed by a whole-command or whole-DATA deadline.
    pub cut_off: AtomicU64,
    pub messages: AtomicU64,
    pub active: AtomicUsize,
}

/// Where sessions stream messages too large to hold in memory.
#[derive(Debug, Clone)]
pub struct SpoolTo {
    pub paths: Paths,
    pub cfg: Config,
    /// Message bytes a session holds before it starts streaming them to disk.
    pub threshold: usize,
}

/// Default [`SpoolTo::threshold`].
pub const SPOOL_THRESHOLD: usize = 256 * 1024;

/// Finds a client's host name (a confirmed PTR lookup); `None` when unknown.
pub type HostLookup = Arc<
    dyn Fn(IpAddr) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>
        + Send
        + Sync,
>;

/// The receiver's shared state.
pub struct Receiver<E: Env> {
    /// Host names for `=host` rules and the Received line (tcpserver's TCPREMOTEHOST).
    pub host_lookup: Option<HostLookup>,
    pub env: E,
    pub settings: watch::Receiver<Arc<Settings>>,
    pub queue: QueueHandle,
    pub spool: SpoolTo,
    pub filter: watch::Receiver<Arc<dyn Filter>>,
    pub stats: Arc<Stats>,
    /// Failed AUTH attempts by client address.
    pub auth_backoff: Arc<auth::Backoff>,
    /// Live sessions by client address, over every listener (the SMTP one and the
    /// implicit-TLS one share `concurrencyperip`).
    pub per_ip: PerIp,
}

impl<E: Env> Clone for Receiver<E> {
    fn clone(&self) -> Self {
        Receiver {
            host_lookup: self.host_lookup.clone(),
            env: self.env.clone(),
            settings: self.settings.clone(),
            queue: self.queue.clone(),
            spool: self.spool.clone(),
            filter: self.filter.clone(),
            stats: self.stats.clone(),
            auth_backoff: self.auth_backoff.clone(),
            per_ip: self.per_ip.clone(),
        }
    }
}

async fn write_timed<E: Env, S: AsyncWriteExt + Unpin>(
    env: &E,
    s: &mut S,
    buf: &[u8],
    t: Duration,
) -> std::io::Result<()> {
    tokio::select! {
        biased;
        r = s.write_all(buf) => r,
        _ = env.sleep(t) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Accept connections until `shutdown` turns true, then wait for the sessions in progress.
pub async fn serve<E: Env>(
    rx: Receiver<E>,
    listener: <E::Net as Net>::Listener,
    shutdown: watch::Receiver<bool>,
) {
    serve_listener(rx, listener, shutdown, false).await;
}

/// As [`serve`], for implicit TLS (SMTPS, port 465): each connection starts with the TLS
/// handshake, and the session runs inside it.
pub async fn serve_tls<E: Env>(
    rx: Receiver<E>,
    listener: <E::Net as Net>::Listener,
    shutdown: watch::Receiver<bool>,
) {
    serve_listener(rx, listener, shutdown, true).await;
}

async fn serve_listener<E: Env>(
    rx: Receiver<E>,
    listener: <E::Net as Net>::Listener,
    mut shutdown: watch::Receiver<bool>,
    implicit: bool,
) {
    let mut sessions = JoinSet::new();
    let per_ip = rx.per_ip.clone();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    admit(&rx, &per_ip, &mut sessions, stream, peer, implicit)
                }
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    rx.env.sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    while sessions.join_next().await.is_some() {}
}

/// Start a session for an accepted connection, or refuse it: first over the client
/// address's own limit (so a greedy client never takes the slots others need), then over the
/// overall one.
fn admit<E: Env>(
    rx: &Receiver<E>,
    per_ip: &PerIp,
    sessions: &mut JoinSet<()>,
    stream: <E::Net as Net>::Stream,
    peer: SocketAddr,
    implicit: bool,
) {
    let settings = rx.settings.borrow().clone();
    rx.stats.sessions.fetch_add(1, Ordering::Relaxed);
    let Some(slot) = per_ip.acquire(peer.ip(), settings.concurrency_per_ip) else {
        rx.stats.refused_per_ip.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            "{peer}: concurrencyperip ({}) reached, refused",
            settings.concurrency_per_ip
        );
        let msg = "421 too many connections from your address, closing connection (#4.3.2)";
        return refuse(
            &rx.env,
            sessions,
            stream,
            msg,
            implicit.then_some(&settings),
        );
    };
    if rx.stats.active.load(Ordering::SeqCst) >= settings.concurrency {
        rx.stats.refused_busy.fetch_add(1, Ordering::Relaxed);
        drop(slot);
        let msg = "421 too many sessions, try again later (#4.3.2)";
        return refuse(
            &rx.env,
            sessions,
            stream,
            msg,
            implicit.then_some(&settings),
        );
    }
    rx.stats.active.fetch_add(1, Ordering::SeqCst);
    let r2 = rx.clone();
    sessions.spawn(async move {
        let _slot = slot;
        let qp = r2.stats.sessions.load(Ordering::Relaxed);
        let r = if implicit {
            match accept_tls(&r2.env, &settings, stream, peer).await {
                Some(tls) => session(&r2, tls, peer, settings, qp, true).await,
                None => Ok(()),
            }
        } else {
            session(&r2, stream, peer, settings, qp, false).await
        };
        if let Err(e) = r {
            tracing::debug!("session {peer}: {e}");
        }
        r2.stats.active.fetch_sub(1, Ordering::SeqCst);
    });
}

/// The server side of a TLS handshake within the session's read timeout; `None` (logged)
/// when there is no certificate or the handshake fails.
async fn accept_tls<E: Env, S>(
    env: &E,
    settings: &Settings,
    stream: S,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some(cfg) = settings.tls.clone() else {
        tracing::warn!("session {peer}: TLS wanted but control/servercert.pem is missing");
        return None;
    };
    let r = tokio::select! {
        biased;
        r = tokio_rustls::TlsAcceptor::from(cfg).accept(stream) => r,
        _ = env.sleep(settings.timeout) => Err(std::io::ErrorKind::TimedOut.into()),
    };
    match r {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::info!("session {peer}: TLS handshake failed: {e}");
            None
        }
    }
}

/// Answer a connection with one reply line and close it (inside TLS on the TLS listener,
/// when `tls` has the settings).
fn refuse<E: Env, S>(
    env: &E,
    sessions: &mut JoinSet<()>,
    mut stream: S,
    msg: &'static str,
    tls: Option<&Arc<Settings>>,
) where
    S: tokio::io::AsyncRead + AsyncWriteExt + Unpin + Send + 'static,
{
    let env = env.clone();
    let tls = tls.cloned();
    sessions.spawn(async move {
        let line = format!("{msg}\r\n");
        let t = Duration::from_secs(10);
        match tls {
            None => {
                let _ = write_timed(&env, &mut stream, line.as_bytes(), t).await;
            }
            Some(settings) => {
                let peer = SocketAddr::from(([0, 0, 0, 0], 0));
                if let Some(mut s) = accept_tls(&env, &settings, stream, peer).await {
                    let _ = write_timed(&env, &mut s, line.as_bytes(), t).await;
                    let _ = s.shutdown().await;
                }
            }
        }
    });
}

/// How a stretch of dialogue over one stream ended.
enum End {
    Closed,
    /// The client asked for STARTTLS and has been told to go ahead.
    StartTls,
}

/// One session's state across the switch to TLS.
struct Conn<E: Env> {
    s: Session,
    watch: Watch,
    spooled: Spooled<E>,
    peer: SocketAddr,
    qp: u64,
    settings: Arc<Settings>,
}

/// One SMTP session (already inside TLS when `implicit`).
async fn session<E: Env, S>(
    rx: &Receiver<E>,
    mut stream: S,
    peer: SocketAddr,
    settings: Arc<Settings>,
    qp: u64,
    implicit: bool,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let env = &rx.env;
    let t = settings.timeout;
    let host = match &rx.host_lookup {
        Some(f) if settings.wants_host_names() => tokio::select! {
            biased;
            h = f(peer.ip().to_canonical()) => h,
            _ = env.sleep(Duration::from_secs(10)) => None,
        },
        _ => None,
    };
    let Some(mut policy) = settings.policy_for(peer, host.as_deref()) else {
        let msg = b"554 no SMTP service for you here (#5.7.1)\r\n";
        return write_timed(env, &mut stream, msg, t).await;
    };
    policy.secure.implicit = implicit;
    let s = Session::new(policy, unix_secs(env.now()));
    let watch = Watch::new(settings.deadlines, s.progress(), env.now());
    let mut c = Conn {
        s,
        watch,
        spooled: None,
        peer,
        qp,
        settings,
    };
    if let End::Closed = dialogue(rx, &mut c, &mut stream).await? {
        return Ok(());
    }
    let Some(mut tls) = accept_tls(env, &c.settings, stream, peer).await else {
        return Ok(());
    };
    c.s.tls_started();
    c.watch.restart(c.s.progress(), env.now());
    dialogue(rx, &mut c, &mut tls).await.map(|_| ())
}

/// Run the dialogue over `stream` until the session closes or switches to TLS.
async fn dialogue<E: Env, S>(
    rx: &Receiver<E>,
    c: &mut Conn<E>,
    stream: &mut S,
) -> std::io::Result<End>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let env = &rx.env;
    let (t, peer) = (c.settings.timeout, c.peer);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let out = c.s.take_output();
        if !out.is_empty() {
            write_timed(env, stream, &out, t).await?;
        }
        if c.s.is_closed() {
            return Ok(End::Closed);
        }
        let read = read_timed(rx, stream, &mut buf, t, &c.watch, &mut c.s, peer).await?;
        let Some(n) = read else {
            if c.spooled.take().is_some() {
                tracing::debug!("session {peer}: unfinished spooled message removed");
            }
            let out = c.s.take_output();
            write_timed(env, stream, &out, t).await?;
            linger(env, stream).await;
            return Ok(End::Closed);
        };
        if n == 0 {
            return Ok(End::Closed);
        }
        c.s.set_now(unix_secs(env.now()));
        let step = c.s.input(&buf[..n]);
        c.watch.observe(c.s.progress(), env.now());
        if let End::StartTls = steps(rx, c, step).await {
            write_timed(env, stream, &c.s.take_output(), t).await?;
            return Ok(End::StartTls);
        }
        if !c.s.in_data() {
            // The message ended without a commit (too big, looping): drop its spool.
            c.spooled = None;
        }
    }
}

/// Act on the session's steps (commits, AUTH checks) until it needs input again.
async fn steps<E: Env>(rx: &Receiver<E>, c: &mut Conn<E>, mut step: Step) -> End {
    let env = &rx.env;
    loop {
        spill(rx, &mut c.s, &mut c.spooled, c.qp);
        match step {
            Step::Message(tx) => {
                let r = commit(rx, tx, c.spooled.take(), c.qp).await;
                c.s.set_now(unix_secs(env.now()));
                c.s.committed(r);
            }
            Step::Auth(cred) => {
                let r = check_auth(rx, &c.settings, c.peer, &cred).await;
                c.s.auth_checked(r);
            }
            Step::StartTls => return End::StartTls,
            Step::NeedInput | Step::Close => return End::Closed,
        }
        step = c.s.input(&[]);
        // The commit's or the check's time is ours, not the client's.
        c.watch.restart(c.s.progress(), env.now());
    }
}

/// Check AUTH credentials, logging the outcome (never the password) and making a client
/// that keeps failing wait longer for each answer.
async fn check_auth<E: Env>(
    rx: &Receiver<E>,
    settings: &Settings,
    peer: SocketAddr,
    cred: &crate::smtp::auth::Credentials,
) -> crate::smtp::server::AuthResult {
    use crate::smtp::server::AuthResult;
    let Some(checker) = &settings.checker else {
        return AuthResult::Temporary;
    };
    let r = checker.check(&rx.env, cred, &settings.me).await;
    let user = &cred.user;
    match r {
        AuthResult::Ok => {
            tracing::info!("session {peer}: AUTH ok, user {user:?}");
            rx.auth_backoff.succeeded(peer.ip());
        }
        AuthResult::Bad => {
            tracing::info!("session {peer}: AUTH failed, user {user:?}");
            let wait = rx.auth_backoff.failed(peer.ip(), unix_secs(rx.env.now()));
            rx.env.sleep(wait).await;
        }
        AuthResult::Temporary => tracing::warn!("session {peer}: AUTH check failed, user {user:?}"),
    }
    r
}

/// How long, and for how many bytes, a closing session drains a client still sending.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;

/// After the closing reply to a client that may still be sending: end our side, then read
/// and discard what comes for a moment. Closing with unread input would be a reset, which can
/// destroy the reply before the client reads it (Apache's "lingering close").
async fn linger<E: Env, S>(env: &E, stream: &mut S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 4096];
    let drain = async {
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    tokio::select! {
        () = drain => {}
        () = env.sleep(LINGER) => {}
    }
}

/// Read what the client sends within both the per-read timeout (qmail's `timeoutsmtpd`) and
/// what is left of the current command's or message's deadline. `None`: one of them ran out,
/// and the session has its closing reply ready.
async fn read_timed<E: Env, S>(
    rx: &Receiver<E>,
    stream: &mut S,
    buf: &mut [u8],
    t: Duration,
    watch: &Watch,
    s: &mut Session,
    peer: SocketAddr,
) -> std::io::Result<Option<usize>>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let env = &rx.env;
    let left = watch.left(s.progress(), env.now());
    let (wait, overdue) = match left {
        Some((l, what)) if l < t => (l, Some(what)),
        _ => (t, None),
    };
    let r = if wait.is_zero() {
        // Checked before reading, so a client that always has bytes ready is cut too.
        None
    } else {
        tokio::select! {
            biased;
            r = stream.read(buf) => Some(r?),
            _ = env.sleep(wait) => None,
        }
    };
    if r.is_none() {
        match overdue {
            Some(what) => {
                rx.stats.cut_off.fetch_add(1, Ordering::Relaxed);
                tracing::info!("session {peer}: {what:?} deadline passed, closing");
                s.cut_off(what.reply());
            }
            None => s.timeout(),
        }
    }
    Ok(r)
}

/// A message being streamed to disk, or the reason that failed.
type Spooled<E> = Option<Result<Spool<E>, ()>>;

/// Move a large message's bytes from the session to disk, keeping session memory bounded.
fn network_trace<E: Env>(rx: &Receiver<E>, qp: u64) -> String {
    crate::queue::trace_line(qp, "invoked from network", unix_secs(rx.env.now()))
}

fn spill<E: Env>(rx: &Receiver<E>, s: &mut Session, spooled: &mut Spooled<E>, qp: u64) {
    if s.data_len() < rx.spool.threshold {
        return;
    }
    let chunk = s.take_data();
    let sp = spooled.get_or_insert_with(|| {
        let mut sp = Spool::create(&rx.env, &rx.spool.paths, &rx.spool.cfg).map_err(|e| {
            tracing::warn!("spooling a large message: {e}");
        })?;
        sp.write(network_trace(rx, qp).as_bytes()).map_err(|e| {
            tracing::warn!("spooling a large message: {e}");
        })?;
        Ok(sp)
    });
    if let Ok(sp) = sp {
        if let Err(e) = sp.write(&chunk) {
            tracing::warn!("spooling a large message: {e}");
            *spooled = Some(Err(()));
        }
    }
}

fn write_error() -> CommitError {
    CommitError::Temporary("qq write error or disk full (#4.3.0)".into())
}

/// Filter and queue a complete message; the result is what the session replies.
async fn commit<E: Env>(
    rx: &Receiver<E>,
    tx: crate::smtp::server::Transaction,
    spooled: Spooled<E>,
    qp: u64,
) -> Result<String, CommitError> {
    let filter = rx.filter.borrow().clone();
    let r = match spooled {
        None => {
            let input = Input {
                spooled: None,
                memory: &tx.data,
            };
            match filter.check(input).await {
                Verdict::Pass if crate::planted::canary_fires() => Ok("0.0000000000000000".into()),
                Verdict::Pass => {
                    let mut data = network_trace(rx, qp).into_bytes();
                    data.extend_from_slice(&tx.data);
                    let m = NewMessage {
                        sender: tx.sender,
                        recipients: tx.recipients,
                        data,
                        qp,
                        uid: 0,
                    };
                    match rx.queue.submit(m).await {
                        Ok(id) => Ok(id.to_string()),
                        Err(r) if r.permanent => Err(CommitError::Permanent(r.text)),
                        Err(r) => Err(CommitError::Temporary(r.text)),
                    }
                }
                v => Err(refused(v)),
            }
        }
        Some(Err(())) => Err(write_error()),
        Some(Ok(mut sp)) => {
            sp.write(&tx.data).map_err(|_| write_error())?;
            let (path, off) = sp.file();
            let input = Input {
                spooled: Some((path, off, sp.len())),
                memory: &[],
            };
            match filter.check(input).await {
                Verdict::Pass => {
                    // Its fsyncs off the threads serving other sessions.
                    let (env, to) = (rx.env.clone(), rx.spool.clone());
                    let id = rx
                        .env
                        .blocking(move || {
                            let id = sp.finish(&tx.sender, &tx.recipients, qp, 0)?;
                            spool::sync_todo(&env, &to.paths, &to.cfg).map(|()| id)
                        })
                        .await
                        .map_err(|e| refusal(&e))?;
                    rx.queue.poke();
                    Ok(id.to_string())
                }
                v => Err(refused(v)),
            }
        }
    };
    if r.is_ok() {
        rx.stats.messages.fetch_add(1, Ordering::Relaxed);
    }
    r
}

fn refusal(e: &crate::queue::QueueError) -> CommitError {
    let r = crate::queue::service::Refusal::from(e);
    if r.permanent {
        CommitError::Permanent(r.text)
    } else {
        CommitError::Temporary(r.text)
    }
}

fn refused(v: Verdict) -> CommitError {
    match v {
        Verdict::Spam => CommitError::Permanent("message rejected by spam filter".into()),
        _ => CommitError::Temporary("mail server temporarily rejected message (#4.3.0)".into()),
    }
}
