//! Remote delivery (qmail-remote): pick the hosts (smtproutes, else MX, else the address
//! records), connect in order, and run one SMTP transaction per recipient.

pub mod qmtp;
pub mod relayauth;
pub mod routes;
pub mod tcpto;
pub mod tlsdest;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::control::{ControlDir, ControlError};
use crate::env::{Env, Fs, Net};
use crate::queue::{Body, BodyRef};
use crate::send::manager::{Outcome, Remote};
use crate::smtp::client::{self, Client, Step, TlsWant};
use crate::tls::ClientTls;
use relayauth::RelayAuth;
use routes::Routes;
use tlsdest::TlsDestinations;

/// Why a name could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// The name does not exist (permanent).
    NotFound,
    /// SERVFAIL, timeout, network trouble (temporary).
    Temporary,
}

/// A pending DNS answer.
pub type DnsFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DnsError>> + Send + 'a>>;

/// Name resolution as remote delivery needs it.
pub trait Resolve: Send + Sync + 'static {
    /// MX records of a domain, `(preference, host)`; empty when there are none.
    fn mx<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, Vec<(u16, String)>>;
    /// Addresses (A and AAAA) of a host.
    fn ips<'a>(&'a self, host: &'a str) -> DnsFuture<'a, Vec<IpAddr>>;
}

/// What remote delivery reads from control files.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub helohost: String,
    pub routes: Routes,
    /// control/qmtproutes (notqmail's): domains sent over QMTP, falling back to SMTP.
    pub qmtproutes: Routes,
    pub timeout_connect: Duration,
    pub timeout_remote: Duration,
    /// Our own addresses, for the "listed as best-preference MX" check.
    pub ipme: crate::ipme::Ipme,
    /// Hosts that timed out recently (shared by every delivery).
    pub tcpto: Arc<tcpto::Tcpto>,
    /// control/tlsdestinations: where TLS (and a checked certificate) is required.
    pub tls_destinations: TlsDestinations,
    /// control/smtproutesauth: smarthost credentials.
    pub relay_auth: RelayAuth,
    /// TLS without certificate checks (opportunistic, or required without `verify`).
    pub tls_any: Arc<rustls::ClientConfig>,
    /// TLS checked against the system's roots, when some destination asks for it.
    pub tls_verify: Option<Arc<rustls::ClientConfig>>,
}

impl RemoteConfig {
    pub fn load<F: Fs>(fs: &F, root: &std::path::Path) -> Result<RemoteConfig, ControlError> {
        let c = ControlDir::new(fs, root);
        let me = c.me()?;
        let tls_destinations =
            TlsDestinations::parse(&c.numbered("tlsdestinations")?.unwrap_or_default())?;
        let tls_verify = tls_destinations
            .any_verify()
            .then(|| crate::tls::client_config(Some(crate::tls::system_roots(fs))));
        Ok(RemoteConfig {
            tls_destinations,
            relay_auth: RelayAuth::load(fs, root)?,
            tls_any: crate::tls::client_config(None),
            tls_verify,
            helohost: c.line_or("helohost", &me)?,
            routes: Routes::parse(&c.numbered("smtproutes")?.unwrap_or_default())?,
            qmtproutes: Routes::parse_file(
                &c.numbered("qmtproutes")?.unwrap_or_default(),
                "qmtproutes",
                qmtp::PORT,
            )?,
            timeout_connect: Duration::from_secs(c.number("timeoutconnect", 60)?),
            timeout_remote: Duration::from_secs(c.number("timeoutremote", 1200)?),
            ipme: crate::ipme::Ipme::new(vec![IpAddr::from([127, 0, 0, 1])]),
            tcpto: Arc::default(),
        })
    }
}

/// Remote delivery over the environment's network.
pub struct Smtp<R: Resolve> {
    pub cfg: RemoteConfig,
    pub resolver: Arc<R>,
}

fn literal(host: &str) -> Option<IpAddr> {
    host.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// The hosts to try, in order, with the port, and whether they came from MX records.
async fn hosts<E: Env, R: Resolve>(
    env: &E,
    cfg: &RemoteConfig,
    resolver: &R,
    domain: &str,
) -> Result<(Vec<String>, u16, bool), Outcome> {
    match cfg.routes.find(domain) {
        Some(r) if !r.relay.is_empty() => Ok((vec![r.relay.clone()], r.port, false)),
        route => {
            let port = route.map_or(25, |r| r.port);
            if literal(domain).is_some() {
                return Ok((vec![domain.to_string()], port, false));
            }
            match resolver.mx(domain).await {
                Ok(mx) if !mx.is_empty() => {
                    // Preference order; a seeded shuffle among equals.
                    let mut keyed: Vec<(u16, u64, String)> = mx
                        .into_iter()
                        .map(|(p, h)| (p, env.random_u64(), h))
                        .collect();
                    keyed.sort();
                    Ok((keyed.into_iter().map(|(_, _, h)| h).collect(), port, true))
                }
                // No MX: the domain's own address records, as an implicit MX.
                Ok(_) => Ok((vec![domain.to_string()], port, true)),
                Err(DnsError::NotFound) => Err(Outcome::Failed(format!(
                    "Sorry, I couldn't find any host named {domain}. (#5.1.2)"
                ))),
                Err(DnsError::Temporary) => Err(Outcome::Deferred(
                    "Sorry, I couldn't find any host by that name. (#4.1.2)".into(),
                )),
            }
        }
    }
}

/// One transaction with one host.
async fn send<E: Env, S: AsyncWrite + Unpin>(
    env: &E,
    cfg: &RemoteConfig,
    s: &mut S,
    bytes: &[u8],
) -> std::io::Result<()> {
    tokio::select! {
        biased;
        r = s.write_all(bytes) => r,
        _ = env.sleep(cfg.timeout_remote) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// The message a piece at a time from the queue, encoded for DATA: memory stays bounded
/// whatever the size of the message.
async fn send_body<E: Env, S: AsyncWrite + Unpin>(
    env: &E,
    cfg: &RemoteConfig,
    s: &mut S,
    body: &mut Body<<E::Fs as Fs>::File>,
) -> std::io::Result<()> {
    body.rewind();
    let mut enc = client::BodyEncoder::default();
    let mut out = Vec::with_capacity(crate::queue::body::PIECE * 2);
    loop {
        let piece = body.next_piece()?;
        out.clear();
        if piece.is_empty() {
            enc.finish(&mut out);
            return send(env, cfg, s, &out).await;
        }
        enc.push(&piece, &mut out);
        send(env, cfg, s, &out).await?;
    }
}

/// How one connection went.
enum Attempt {
    /// `None`: no connection.
    Done(Option<client::Outcome>),
    /// The TLS handshake after STARTTLS failed (the client's verdict for this host).
    TlsFailed(client::Outcome),
}

/// The TLS side of a connection: the configuration and the name to present and check.
struct TlsSetup {
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
}

async fn transact<E: Env>(
    env: &E,
    cfg: &RemoteConfig,
    to: SocketAddr,
    mut c: Client,
    body: &mut Body<<E::Fs as Fs>::File>,
    tls: &TlsSetup,
) -> Attempt {
    let connect = env.net().connect(to);
    let mut s = tokio::select! {
        biased;
        r = connect => match r {
            Ok(s) => s,
            Err(_) => return Attempt::Done(None),
        },
        _ = env.sleep(cfg.timeout_connect) => {
            let now = crate::env::unix_secs(env.now());
            cfg.tcpto.timed_out(env.fs(), to.ip(), now);
            return Attempt::Done(None);
        }
    };
    cfg.tcpto.connected(env.fs(), to.ip());
    if let Some(o) = converse(env, cfg, &mut c, &mut s, body, None).await {
        return Attempt::Done(Some(o));
    }
    // Whatever the server sent after its 220 to STARTTLS is never read (RFC 3207 4.2).
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let r = tokio::select! {
        biased;
        r = connector.connect(tls.name.clone(), s) => r,
        _ = env.sleep(cfg.timeout_remote) => Err(std::io::ErrorKind::TimedOut.into()),
    };
    let mut s = match r {
        Ok(s) => s,
        Err(e) => return Attempt::TlsFailed(c.tls_failed(&e.to_string())),
    };
    let ehlo = c.tls_started();
    let o = converse(env, cfg, &mut c, &mut s, body, Some(ehlo)).await;
    Attempt::Done(Some(o.unwrap_or_else(|| c.connection_lost())))
}

/// Run the dialogue over `s` (starting with `first`, if given) to its outcome; `None` when
/// the client asks for the TLS handshake.
async fn converse<E: Env, S: AsyncRead + AsyncWrite + Unpin>(
    env: &E,
    cfg: &RemoteConfig,
    c: &mut Client,
    s: &mut S,
    body: &mut Body<<E::Fs as Fs>::File>,
    mut first: Option<Step>,
) -> Option<client::Outcome> {
    let mut buf = vec![0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let step = match first.take() {
            Some(st) => st,
            None => {
                let (step, used) = c.input(&pending);
                pending.drain(..used);
                step
            }
        };
        match step {
            Step::Done(o) => return Some(o),
            Step::StartTls => return None,
            Step::Send(bytes) => {
                if send(env, cfg, s, &bytes).await.is_err() {
                    return Some(c.connection_lost());
                }
                continue;
            }
            Step::SendBody => {
                if send_body(env, cfg, s, body).await.is_err() {
                    return Some(c.connection_lost());
                }
                continue;
            }
            Step::NeedInput if !pending.is_empty() => continue,
            Step::NeedInput => {}
        }
        let n = tokio::select! {
            biased;
            r = s.read(&mut buf) => r.unwrap_or(0),
            _ = env.sleep(cfg.timeout_remote) => 0,
        };
        if n == 0 {
            return Some(c.connection_lost());
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// What one delivery wants of TLS and AUTH toward its hosts.
struct Wanted {
    tls: ClientTls,
    /// Smarthost credentials (they make TLS required).
    auth: Option<(String, String)>,
}

impl Wanted {
    fn client_tls(&self) -> TlsWant {
        match (self.tls, &self.auth) {
            (ClientTls::Opportunistic, None) => TlsWant::Opportunistic,
            _ => TlsWant::Required,
        }
    }
}

impl<R: Resolve> Smtp<R> {
    /// TLS for the recipient's domain, and credentials when mail goes to a `relay` from
    /// smtproutes.
    fn wanted(&self, domain: &str, relay: Option<&str>) -> Wanted {
        Wanted {
            tls: self.cfg.tls_destinations.find(domain),
            auth: relay
                .and_then(|r| self.cfg.relay_auth.find(r))
                .map(|(u, p)| (u.to_string(), p)),
        }
    }

    /// One connection to `host` at `to` (and, when opportunistic TLS failed in the
    /// handshake, one more without TLS); `None` when no connection was made.
    async fn attempt<E: Env>(
        &self,
        env: &E,
        host: &str,
        to: SocketAddr,
        w: &Wanted,
        (sender, recipient): (&str, &str),
        body: &mut Body<<E::Fs as Fs>::File>,
    ) -> Option<client::Outcome> {
        let new = |want| {
            let c = Client::new(&to.ip().to_string(), &self.cfg.helohost, sender, recipient);
            match &w.auth {
                Some((u, p)) => c.with_tls(want).with_auth(u, p),
                None => c.with_tls(want),
            }
        };
        let config = match w.tls {
            // No roots (should they be missing) means no certificate passes.
            ClientTls::Required { verify: true } => {
                self.cfg.tls_verify.clone().unwrap_or_else(|| {
                    crate::tls::client_config(Some(rustls::RootCertStore::empty()))
                })
            }
            _ => self.cfg.tls_any.clone(),
        };
        let name = crate::tls::server_name(host)
            .unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(to.ip().into()));
        let tls = TlsSetup { config, name };
        let want = w.client_tls();
        match transact(env, &self.cfg, to, new(want), body, &tls).await {
            Attempt::Done(o) => o,
            Attempt::TlsFailed(client::Outcome::NextHost(why))
                if want == TlsWant::Opportunistic =>
            {
                tracing::info!("{why} Trying again without TLS.");
                match transact(env, &self.cfg, to, new(TlsWant::Off), body, &tls).await {
                    Attempt::Done(o) => o,
                    Attempt::TlsFailed(o) => Some(o),
                }
            }
            Attempt::TlsFailed(o) => Some(o),
        }
    }

    pub async fn deliver<E: Env>(
        &self,
        env: &E,
        sender: &str,
        recipient: &str,
        body: &BodyRef,
    ) -> Outcome {
        let domain = recipient.rsplit_once('@').map_or("", |(_, d)| d);
        let (hosts, port, via_mx) = match hosts(env, &self.cfg, &*self.resolver, domain).await {
            Ok(h) => h,
            Err(o) => return o,
        };
        let wanted = self.wanted(domain, (!via_mx).then(|| hosts[0].as_str()));
        let (mut resolved, mut dns_trouble, mut last) = (false, false, None);
        // Hosts are resolved one at a time, in order: a big MX set costs nothing past the
        // host that takes the message.
        'hosts: for h in &hosts {
            let ips = match literal(h) {
                Some(ip) => vec![ip],
                None => match self.resolver.ips(h).await {
                    Ok(v) => v,
                    Err(DnsError::Temporary) => {
                        dns_trouble = true;
                        continue;
                    }
                    Err(DnsError::NotFound) => continue,
                },
            };
            for ip in ips {
                if self.cfg.tcpto.skip(&ip, crate::env::unix_secs(env.now())) {
                    tracing::info!("{ip} timed out recently: not tried (tcpto)");
                    resolved = true;
                    continue;
                }
                // Reaching our own address through MX: only better hosts may be used.
                if via_mx && self.cfg.ipme.contains(&ip) {
                    if !resolved {
                        return Outcome::Failed(
                            "Although I'm listed as a best-preference MX or A for that host,\n\
                             it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)"
                                .into(),
                        );
                    }
                    break 'hosts;
                }
                resolved = true;
                let Ok(mut b) = body.open(env.fs()) else {
                    return Outcome::Deferred("Unable to read the message. (#4.3.0)".into());
                };
                let to = SocketAddr::new(ip, port);
                let envelope = (sender, recipient);
                match self.attempt(env, h, to, &wanted, envelope, &mut b).await {
                    None => continue,
                    Some(client::Outcome::NextHost(why)) => last = Some(why),
                    Some(client::Outcome::Delivered(r)) => {
                        return Outcome::Delivered {
                            report: r,
                            forwards: Vec::new(),
                            forward_sender: String::new(),
                            forward_prefix: Vec::new(),
                        }
                    }
                    Some(client::Outcome::Failed(r)) => return Outcome::Failed(r),
                    Some(client::Outcome::Deferred(r)) => return Outcome::Deferred(r),
                }
            }
        }
        if !resolved {
            return if dns_trouble {
                Outcome::Deferred("Sorry, I couldn't find any host by that name. (#4.1.2)".into())
            } else {
                Outcome::Failed(format!(
                    "Sorry, I couldn't find any host named {domain}. (#5.1.2)"
                ))
            };
        }
        Outcome::Deferred(last.unwrap_or_else(|| {
            "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)".into()
        }))
    }
}

impl<R: Resolve> Smtp<R> {
    fn handle(&self) -> Smtp<R> {
        Smtp {
            cfg: self.cfg.clone(),
            resolver: self.resolver.clone(),
        }
    }

    /// The `qmtproutes` route for the recipient's domain (not an empty relay: that is MX).
    fn qmtp_route(&self, recipient: &str) -> Option<&routes::Route> {
        let domain = recipient.rsplit_once('@').map_or("", |(_, d)| d);
        self.cfg
            .qmtproutes
            .find(domain)
            .filter(|r| !r.relay.is_empty())
    }
}

impl<E: Env, R: Resolve> Remote<E> for Smtp<R> {
    fn deliver(
        &self,
        env: E,
        sender: String,
        recipient: String,
        body: BodyRef,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        let batch = self.deliver_batch(env, sender, vec![recipient], body);
        Box::pin(async move {
            let mut o = batch.await;
            o.pop()
                .unwrap_or_else(|| Outcome::Deferred("No outcome. (#4.3.0)".into()))
        })
    }

    /// Recipients routed to the same QMTP host share a package.
    fn batch_key(&self, recipient: &str) -> Option<String> {
        self.qmtp_route(recipient)
            .map(|r| format!("{}:{}", r.relay, r.port))
    }

    /// Over QMTP when `qmtproutes` routes the (first) recipient's domain and its host takes
    /// a connection; otherwise over SMTP, one recipient at a time.
    fn deliver_batch(
        &self,
        env: E,
        sender: String,
        recipients: Vec<String>,
        body: BodyRef,
    ) -> Pin<Box<dyn Future<Output = Vec<Outcome>> + Send>> {
        let me = self.handle();
        Box::pin(async move {
            let first = recipients.first().map_or("", String::as_str);
            if let Some(r) = me.qmtp_route(first) {
                let envelope = (sender.as_str(), recipients.as_slice());
                let o = qmtp::deliver(&env, &me.cfg, &*me.resolver, r, envelope, &body).await;
                if let Some(o) = o {
                    return o;
                }
            }
            let mut out = Vec::new();
            for rcpt in &recipients {
                out.push(me.deliver(&env, &sender, rcpt, &body).await);
            }
            out
        })
    }
}
