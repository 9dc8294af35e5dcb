//! `mta run`: the whole server — control files, queue recovery, the queue manager, the SMTP
//! receiver, signals, reload and shutdown — generic over the environment, so the real binary
//! and every simulated host start and fail the same way.
//!
//! It exits only when told to (SIGTERM/SIGINT: 0) or when it cannot start (111: control files
//! unreadable, queue not recoverable, port taken), which is what a supervisor restarts. Once
//! running, trouble (a full disk, an I/O error, no file descriptors) is answered with temporary
//! refusals and deferrals while the process keeps serving.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::control::{ControlDir, Rewrite};
use crate::env::{Env, Fs, FsFile, Listener, Net, Signal, Signals};
use crate::ipme::Ipme;
use crate::local::lspawn::Lspawn;
use crate::local::LocalConfig;
use crate::queue::service::{self, QueueHandle};
use crate::queue::Disabled;
use crate::queue::{Config, Paths, Queue, QueueError};
use crate::send::manager::{self, Manager, Remote};
use crate::smtpd::filter::{Commands, Filter, NoFilter};
use crate::smtpd::{self, Receiver, Settings, Stats};

/// qmail's exit code for a temporary failure.
pub const EXIT_TEMP: i32 = 111;

/// How to start.
#[derive(Clone)]
pub struct Options {
    pub root: PathBuf,
    /// Where the SMTP receiver listens.
    pub listen: SocketAddr,
    /// Where it also listens for implicit TLS (SMTPS), if anywhere.
    pub listen_tls: Option<SocketAddr>,
    /// DNS servers; `None` reads them from `/etc/resolv.conf`.
    pub nameservers: Option<Vec<SocketAddr>>,
    /// Addresses of this host besides loopback and the listen address (never a mail target).
    pub local_ips: Vec<IpAddr>,
    /// Where every qmail-format log line goes too (a simulated host's record).
    pub log_sink: Option<crate::send::log::Sink>,
    /// Fsyncs to leave out: only the simulator's audit that each one is needed sets this.
    pub fsync_off: Disabled,
    /// The optional protocols' listeners besides SMTP.
    pub listeners: Listeners,
}

/// Where the optional servers listen (`None`: not started).
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    /// POP3 (`--listen-pop3`; STLS with control/servercert.pem).
    pub pop3: Option<SocketAddr>,
    /// POP3 inside TLS from the first byte (`--listen-pop3s`, port 995).
    pub pop3s: Option<SocketAddr>,
    /// QMTP (`--listen-qmtp`).
    pub qmtp: Option<SocketAddr>,
    /// QMQP (`--listen-qmqp`).
    pub qmqp: Option<SocketAddr>,
}

/// Why `mta run` could not start (or, for a panic in the queue manager, stopped).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("unable to read controls: {0}")]
    Controls(String),
    #[error("another queue manager is running on {0}")]
    Locked(PathBuf),
    #[error("cannot open the queue: {0}")]
    Queue(QueueError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("the queue manager stopped unexpectedly")]
    QueueStopped,
    #[error("cannot start the queue manager's threads: {0}")]
    Worker(std::io::Error),
    #[error("cannot give up root: {0}")]
    Privileges(String),
    #[error("the local delivery helper stopped unexpectedly")]
    HelperStopped,
    #[error("the POP3 helper stopped unexpectedly")]
    Pop3HelperStopped,
    #[error(
        "--listen-tls needs a certificate: {} is missing",
        crate::tls::SERVERCERT
    )]
    NoCert,
}

/// Run until SIGTERM/SIGINT (exit 0) or a failed start (exit 111, reason on stderr).
pub async fn run<E: Env>(env: E, opts: Options) -> i32 {
    match serve(env.clone(), opts).await {
        Ok(()) => 0,
        Err(e) => {
            env.stderr(&format!("mta run: {e}"));
            EXIT_TEMP
        }
    }
}

/// The receiver's settings, with this host's addresses (`[ip]` literals for them are local).
fn receiver_settings<E: Env>(env: &E, opts: &Options, ipme: &Ipme) -> Result<Settings, StartError> {
    let ctl = |e: smtpd::SettingsError| StartError::Controls(e.to_string());
    let mut s = Settings::load(env.fs(), &opts.root).map_err(ctl)?;
    for ip in ipme.get() {
        if !s.local_ips.contains(&ip) {
            s.local_ips.push(ip);
        }
    }
    if s.realrcptto {
        s.rcpt_check = Some(smtpd::local_rcpt_check(env, &opts.root).map_err(ctl)?);
    }
    Ok(s)
}

/// This host's addresses as they are now (at start and on every SIGHUP), with those listed in
/// `control/moreipme` (addresses that reach this host through NAT or a load balancer).
fn own_addresses<E: Env>(env: &E, opts: &Options) -> Result<Vec<IpAddr>, StartError> {
    let c = ControlDir::new(env.fs(), &opts.root);
    let ctl = |e: crate::control::ControlError| StartError::Controls(e.to_string());
    let mut extra = opts.local_ips.clone();
    for (n, l) in c.numbered("moreipme").map_err(ctl)?.unwrap_or_default() {
        let ip = l.parse().map_err(|_| {
            ctl(crate::control::ControlError::invalid(
                "moreipme",
                n,
                format!("not an address: {l:?}"),
            ))
        })?;
        extra.push(ip);
    }
    Ok(crate::ipme::gather(env, opts.listen, &extra))
}

fn filter_for(s: &Settings) -> Arc<dyn Filter> {
    if s.filters.is_empty() {
        Arc::new(NoFilter)
    } else {
        Arc::new(Commands(s.filters.clone()))
    }
}

fn nameservers<E: Env>(env: &E, opts: &Options) -> Vec<SocketAddr> {
    opts.nameservers.clone().unwrap_or_else(|| {
        let conf = env
            .fs()
            .read("/etc/resolv.conf".as_ref())
            .unwrap_or_default();
        crate::dns::nameservers(&String::from_utf8_lossy(&conf))
    })
}

/// What the queue manager needs besides the queue, read from the control files before
/// anything listens (a bad control file stops the start, not a running server).
struct ManagerParts<E: Env> {
    send: manager::Settings,
    remote: Arc<dyn Remote<E>>,
    reloader: manager::Reloader<Rewrite>,
    sink: Option<crate::send::log::Sink>,
}

fn manager_parts<E: Env>(
    env: &E,
    opts: &Options,
    ipme: &Ipme,
) -> Result<ManagerParts<E>, StartError> {
    let ctl = |e: &dyn std::fmt::Display| StartError::Controls(e.to_string());
    let mut send = manager::Settings::load(env.fs(), &opts.root).map_err(|e| ctl(&e))?;
    send.local = with_fsync_off(&send.local, opts.fsync_off);
    let mut rcfg = crate::remote::RemoteConfig::load(env.fs(), &opts.root).map_err(|e| ctl(&e))?;
    rcfg.ipme = ipme.clone();
    let tcpto = opts.root.join("queue").join("tcpto");
    rcfg.tcpto = Arc::new(crate::remote::tcpto::Tcpto::load(env.fs(), &tcpto));
    let resolver =
        crate::dns::Resolver::new(env.clone(), nameservers(env, opts), Duration::from_secs(10));
    let remote: Arc<dyn Remote<E>> = Arc::new(crate::remote::Smtp {
        cfg: rcfg,
        resolver: Arc::new(resolver),
    });
    let (renv, root, off) = (env.clone(), opts.root.clone(), opts.fsync_off);
    let reloader: manager::Reloader<Rewrite> = Box::new(move || {
        let rw = Rewrite::load(&ControlDir::new(renv.fs(), &root)).map_err(|e| e.to_string())?;
        let mut s = manager::Settings::load(renv.fs(), &root).map_err(|e| e.to_string())?;
        s.local = with_fsync_off(&s.local, off);
        Ok((rw, s))
    });
    Ok(ManagerParts {
        send,
        remote,
        reloader,
        sink: opts.log_sink.clone(),
    })
}

impl<E: Env> ManagerParts<E> {
    fn build(self, env: &E, queue: Queue<E>, rewrite: Rewrite) -> Manager<E, Rewrite> {
        let mut m = Manager::new(env.clone(), queue, rewrite, self.send, Some(self.remote));
        m.sink = self.sink;
        m.reloader = Some(self.reloader);
        m
    }
}

fn with_fsync_off(local: &Arc<LocalConfig>, off: Disabled) -> Arc<LocalConfig> {
    Arc::new(LocalConfig {
        disabled: off,
        ..(**local).clone()
    })
}

fn queue_config(opts: &Options) -> Config {
    Config {
        disabled: opts.fsync_off,
        ..Config::default()
    }
}

/// The processes that keep root after `mta run` gave it up.
#[derive(Default)]
struct Helpers {
    lspawn: Option<Arc<Lspawn>>,
    /// Only with a POP3 listener.
    pop3: Option<Arc<crate::pop3d::helper::Client>>,
}

impl Helpers {
    /// Resolves when a root helper has gone away, with the error to stop with.
    async fn gone(&self) -> StartError {
        let lspawn = async {
            match &self.lspawn {
                Some(l) => l.closed().await,
                None => std::future::pending().await,
            }
        };
        let pop3 = async {
            match &self.pop3 {
                Some(h) => h.closed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = lspawn => StartError::HelperStopped,
            () = pop3 => StartError::Pop3HelperStopped,
        }
    }
}

/// Started as root with `control/queueuser` naming an account: start the local-delivery
/// helper and, with a POP3 listener, the POP3 helper (the only parts that keep root), then
/// become that account for good, so the SMTP, POP3, QMTP and QMQP servers, the queue
/// manager and remote delivery never run as root. The queue must belong to that account
/// (`mta init` as root hands it over).
fn give_up_root<E: Env>(env: &E, opts: &Options) -> Result<Helpers, StartError> {
    let c = ControlDir::new(env.fs(), &opts.root);
    let account = c
        .line("queueuser")
        .map_err(|e| StartError::Controls(e.to_string()))?;
    let Some(account) = account.filter(|_| env.uid() == 0) else {
        if env.uid() == 0 {
            tracing::warn!("running as root without control/queueuser: nothing gives up root");
        }
        return Ok(Helpers::default());
    };
    let priv_err = |e: std::io::Error| StartError::Privileges(format!("{account}: {e}"));
    let pipe = env.spawn_lspawn(&opts.root).map_err(priv_err)?;
    let l = &opts.listeners;
    let pop3 = match l.pop3.or(l.pop3s) {
        Some(_) => Some(env.spawn_pop3_helper(&opts.root).map_err(priv_err)?),
        None => None,
    };
    let who = env.drop_privileges(&account).map_err(priv_err)?;
    let queue = opts.root.join("queue");
    match env.fs().metadata(&queue) {
        Ok(m) if m.uid != who.uid => {
            return Err(StartError::Privileges(format!(
                "{} belongs to uid {}, not to {account} (uid {}): run `mta init --force` as root to hand it over",
                queue.display(),
                m.uid,
                who.uid
            )))
        }
        _ => {}
    }
    tracing::info!(
        uid = who.uid,
        gid = who.gid,
        "running as {account}; local deliveries and POP3 logins go through root helpers"
    );
    Ok(Helpers {
        lspawn: Some(Lspawn::start(pipe)),
        pop3: pop3.map(crate::pop3d::helper::Client::start),
    })
}

/// Recover the queue, then start the queue manager where its fsyncs may block. The server
/// listens only after this: a queue that cannot be recovered stops the start (exit 111).
fn start_queue<E: Env>(
    env: &E,
    opts: &Options,
    ipme: &Ipme,
    lspawn: Option<Arc<Lspawn>>,
) -> Result<
    (
        QueueHandle,
        impl std::future::Future<Output = Option<()>> + Send + use<E>,
    ),
    StartError,
> {
    let rewrite = Rewrite::load(&ControlDir::new(env.fs(), &opts.root))
        .map_err(|e| StartError::Controls(e.to_string()))?;
    let paths = Paths::new(opts.root.join("queue"));
    let (queue, rec) = match Queue::open(env.clone(), paths.clone(), queue_config(opts), &rewrite) {
        Ok(q) => q,
        Err(QueueError::Locked) => return Err(StartError::Locked(opts.root.clone())),
        Err(e) => return Err(StartError::Queue(e)),
    };
    write_pid(env, &paths);
    let mut m = manager_parts(env, opts, ipme)?.build(env, queue, rewrite);
    m.lspawn = lspawn;
    tracing::info!(?rec, "queue recovered");
    // One thread per concurrent local delivery plus one, so their fsyncs overlap (the
    // filesystem groups them into shared journal commits) instead of queueing.
    let threads = (m.settings().concurrency_local + 1).clamp(2, 64);
    let (handle, inbox) = service::channel();
    let done = env.spawn_worker(threads, async move { m.run(inbox).await });
    Ok((handle, done.map_err(StartError::Worker)?))
}

/// `mta queue flush` finds the queue manager through the pid in the lock file.
fn write_pid<E: Env>(env: &E, paths: &Paths) {
    let pid = format!("{}\n", env.pid());
    if let Ok(mut f) = env.fs().open_rw(&paths.lock()) {
        let _ = f.set_len(0).and_then(|()| f.write_at(0, pid.as_bytes()));
    }
}

fn receiver<E: Env>(
    env: &E,
    opts: &Options,
    queue: QueueHandle,
    settings: watch::Receiver<Arc<Settings>>,
    filter: watch::Receiver<Arc<dyn Filter>>,
) -> Receiver<E> {
    let ptr =
        crate::dns::Resolver::new(env.clone(), nameservers(env, opts), Duration::from_secs(5));
    let host_lookup: smtpd::HostLookup = Arc::new(move |ip| {
        let ptr = ptr.clone();
        Box::pin(async move { ptr.host_of(ip).await })
    });
    Receiver {
        host_lookup: Some(host_lookup),
        env: env.clone(),
        settings,
        queue,
        spool: smtpd::SpoolTo {
            paths: Paths::new(opts.root.join("queue")),
            cfg: queue_config(opts),
            threshold: smtpd::SPOOL_THRESHOLD,
        },
        filter,
        stats: Arc::new(Stats::default()),
        auth_backoff: Arc::default(),
        per_ip: Default::default(),
    }
}

/// Start everything, then react to signals until told to stop.
async fn serve<E: Env>(env: E, mut opts: Options) -> Result<(), StartError> {
    // Read once: the resolver for deliveries and the one for client names share them.
    opts.nameservers = Some(nameservers(&env, &opts));
    // First, so a SIGALRM or SIGHUP during recovery (`mta queue flush`) cannot kill us.
    let signals = env.signals().map_err(StartError::Signals)?;
    let ipme = Ipme::new(own_addresses(&env, &opts)?);
    let settings = receiver_settings(&env, &opts, &ipme)?;
    if opts.listen_tls.is_some() && settings.tls.is_none() {
        return Err(StartError::NoCert);
    }
    // Bound while still root (port 25), before root is given up.
    let (listeners, bound) = listen(&env, &opts).await?;
    let extra = bind_listeners(&env, &opts).await?;
    let helpers = give_up_root(&env, &opts)?;
    let (handle, manager_done) = start_queue(&env, &opts, &ipme, helpers.lspawn.clone())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    env.stdout(&format!("mta: listening on {}", bound.0));
    if let Some(b) = bound.1 {
        env.stdout(&format!("mta: listening for TLS on {b}"));
    }
    let (set_tx, set_rx) = watch::channel(Arc::new(settings.clone()));
    let (filter_tx, filter_rx) = watch::channel(filter_for(&settings));
    let others = crate::qmtpd::Server::new(
        env.clone(),
        opts.root.clone(),
        handle.clone(),
        set_rx.clone(),
    );
    let rx = receiver(&env, &opts, handle.clone(), set_rx, filter_rx);
    let (listener, tls_listener) = listeners;
    let tls_server =
        tls_listener.map(|l| tokio::spawn(smtpd::serve_tls(rx.clone(), l, stop_rx.clone())));
    let server = tokio::spawn(smtpd::serve(rx, listener, stop_rx.clone()));
    let srv = (Arc::new(others), helpers.pop3.clone());
    let extra = start_listeners(&env, &opts, extra, &stop_rx, srv);
    let reload = |s: Settings| {
        let _ = filter_tx.send(filter_for(&s));
        let _ = set_tx.send(Arc::new(s));
    };
    let mut manager_done = std::pin::pin!(manager_done);
    let crashed = tokio::select! {
        () = on_signals(&env, &opts, signals, &handle, &ipme, reload) => None,
        // Only a panic ends the queue manager while handles exist.
        _ = &mut manager_done => Some(StartError::QueueStopped),
        // Local mail would only defer, logins only fail: exit, for the supervisor to
        // start everything again.
        e = helpers.gone() => Some(e),
    };
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(s) = tls_server {
        let _ = s.await;
    }
    for x in extra {
        let _ = x.await;
    }
    drop(handle);
    if let Some(e @ StartError::QueueStopped) = crashed {
        return Err(e);
    }
    manager_done.await;
    crashed.map_or(Ok(()), Err)
}

/// The optional listeners, bound while still root (ports 110, 209, 628).
type Bound<E> = Vec<(&'static str, <<E as Env>::Net as Net>::Listener)>;

async fn bind_listeners<E: Env>(env: &E, opts: &Options) -> Result<Bound<E>, StartError> {
    let l = &opts.listeners;
    let mut v = Vec::new();
    let all = [
        (l.pop3, "POP3"),
        (l.pop3s, "POP3S"),
        (l.qmtp, "QMTP"),
        (l.qmqp, "QMQP"),
    ];
    for (addr, name) in all {
        let Some(addr) = addr else { continue };
        let listener = env
            .net()
            .listen(addr)
            .await
            .map_err(|e| StartError::Listen(addr, e))?;
        v.push((name, listener));
    }
    Ok(v)
}

/// Start the optional servers (`mta: listening for POP3 on ADDR` for each).
fn start_listeners<E: Env>(
    env: &E,
    opts: &Options,
    bound: Bound<E>,
    stop: &watch::Receiver<bool>,
    (srv, pop3_helper): (
        Arc<crate::qmtpd::Server<E>>,
        Option<Arc<crate::pop3d::helper::Client>>,
    ),
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (name, listener) in bound {
        let at = listener
            .local_addr()
            .map_or(String::new(), |a| a.to_string());
        env.stdout(&format!("mta: listening for {name} on {at}"));
        let stop = stop.clone();
        tasks.push(match name {
            "POP3" | "POP3S" => tokio::spawn(crate::pop3d::serve(
                env.clone(),
                opts.root.clone(),
                listener,
                stop,
                name == "POP3S",
                pop3_helper.clone(),
            )),
            "QMTP" => tokio::spawn(crate::qmtpd::serve(srv.clone(), listener, stop)),
            _ => tokio::spawn(crate::qmqpd::serve(srv.clone(), listener, stop)),
        });
    }
    tasks
}

type SmtpListeners<E> = (
    <<E as Env>::Net as Net>::Listener,
    Option<<<E as Env>::Net as Net>::Listener>,
);

/// Bind the SMTP listener and the implicit-TLS one; also where each is bound (announced
/// once the queue is up and connections are served).
async fn listen<E: Env>(
    env: &E,
    opts: &Options,
) -> Result<(SmtpListeners<E>, (SocketAddr, Option<SocketAddr>)), StartError> {
    let bind = |addr| async move {
        let l = env
            .net()
            .listen(addr)
            .await
            .map_err(|e| StartError::Listen(addr, e))?;
        Ok::<_, StartError>((l.local_addr().unwrap_or(addr), l))
    };
    let (bound, listener) = bind(opts.listen).await?;
    let tls = match opts.listen_tls {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let tls_bound = tls.as_ref().map(|(b, _)| *b);
    Ok(((listener, tls.map(|(_, l)| l)), (bound, tls_bound)))
}

/// Every control file, checked before any part takes new settings, so a mistake leaves the
/// whole server on the old ones (and is reported with file and line) rather than half updated.
/// This host's addresses are read again too (an interface may have come or gone).
fn reread<E: Env>(env: &E, opts: &Options, ipme: &Ipme) -> Result<Settings, StartError> {
    let ctl = |e: &dyn std::fmt::Display| StartError::Controls(e.to_string());
    let addrs = own_addresses(env, opts)?;
    let s = receiver_settings(env, opts, &Ipme::new(addrs.clone()))?;
    Rewrite::load(&ControlDir::new(env.fs(), &opts.root)).map_err(|e| ctl(&e))?;
    manager::Settings::load(env.fs(), &opts.root).map_err(|e| ctl(&e))?;
    crate::remote::RemoteConfig::load(env.fs(), &opts.root).map_err(|e| ctl(&e))?;
    ipme.set(addrs);
    Ok(s)
}

/// qmail-send's signals: HUP rereads the controls and this host's addresses, ALRM flushes,
/// TERM and INT stop.
async fn on_signals<E: Env>(
    env: &E,
    opts: &Options,
    mut signals: Signals,
    queue: &QueueHandle,
    ipme: &Ipme,
    reload: impl Fn(Settings),
) {
    while let Some(sig) = signals.recv().await {
        match sig {
            Signal::Term | Signal::Int => return,
            Signal::Alrm => queue.flush(),
            Signal::Hup => match reread(env, opts, ipme) {
                Ok(s) => {
                    tracing::info!("control files reread");
                    reload(s);
                    queue.reload();
                }
                Err(e) => {
                    tracing::warn!("SIGHUP: {e}; keeping the old settings");
                    env.stderr(&format!("mta run: SIGHUP: {e}; keeping the old settings"));
                }
            },
        }
    }
}
