//! Remote delivery (qmail-remote): pick the hosts (smtproutes, else MX, else the address
//! records), connect in order, and run one SMTP transaction per recipient.

pub mod routes;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::control::{ControlDir, ControlError};
use crate::env::{Env, Fs, Net};
use crate::send::manager::{Outcome, Remote};
use crate::smtp::client::{self, Client, Step};
use routes::Routes;

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
    pub timeout_connect: Duration,
    pub timeout_remote: Duration,
    /// Our own addresses, for the "listed as best-preference MX" check.
    pub local_ips: Vec<IpAddr>,
}

impl RemoteConfig {
    pub fn load<F: Fs>(fs: &F, root: &std::path::Path) -> Result<RemoteConfig, ControlError> {
        let c = ControlDir::new(fs, root);
        let me = c.me()?;
        Ok(RemoteConfig {
            helohost: c.line_or("helohost", &me)?,
            routes: Routes::parse(&c.lines("smtproutes")?.unwrap_or_default()),
            timeout_connect: Duration::from_secs(c.number("timeoutconnect", 60)?),
            timeout_remote: Duration::from_secs(c.number("timeoutremote", 1200)?),
            local_ips: vec![IpAddr::from([127, 0, 0, 1])],
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

/// The addresses to try, in order, with the port.
async fn targets<E: Env, R: Resolve>(
    env: &E,
    cfg: &RemoteConfig,
    resolver: &R,
    domain: &str,
) -> Result<Vec<SocketAddr>, Outcome> {
    let (hosts, port): (Vec<String>, u16) = match cfg.routes.find(domain) {
        Some(r) if !r.relay.is_empty() => (vec![r.relay.clone()], r.port),
        route => {
            let port = route.map_or(25, |r| r.port);
            if let Some(ip) = literal(domain) {
                return Ok(vec![SocketAddr::new(ip, port)]);
            }
            match resolver.mx(domain).await {
                Ok(mut mx) if !mx.is_empty() => {
                    // Preference order; a seeded shuffle among equals.
                    mx.sort_by_key(|(p, _)| *p);
                    let mut keyed: Vec<(u16, u64, String)> = mx
                        .into_iter()
                        .map(|(p, h)| (p, env.random_u64(), h))
                        .collect();
                    keyed.sort();
                    (keyed.into_iter().map(|(_, _, h)| h).collect(), port)
                }
                Ok(_) => (vec![domain.to_string()], port),
                Err(DnsError::NotFound) => {
                    return Err(Outcome::Failed(format!(
                        "Sorry, I couldn't find any host named {domain}. (#5.1.2)"
                    )))
                }
                Err(DnsError::Temporary) => {
                    return Err(Outcome::Deferred(
                        "Sorry, I couldn't find any host by that name. (#4.1.2)".into(),
                    ))
                }
            }
        }
    };
    let mut addrs = Vec::new();
    let mut temp = false;
    for h in &hosts {
        if let Some(ip) = literal(h) {
            addrs.push(SocketAddr::new(ip, port));
            continue;
        }
        match resolver.ips(h).await {
            Ok(ips) => addrs.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, port))),
            Err(DnsError::Temporary) => temp = true,
            Err(DnsError::NotFound) => {}
        }
    }
    if addrs.is_empty() {
        return Err(if temp {
            Outcome::Deferred("Sorry, I couldn't find any host by that name. (#4.1.2)".into())
        } else {
            Outcome::Failed(format!(
                "Sorry, I couldn't find any host named {domain}. (#5.1.2)"
            ))
        });
    }
    // Never deliver to ourselves through MX: that is a configuration loop.
    if let Some(i) = addrs.iter().position(|a| cfg.local_ips.contains(&a.ip())) {
        if cfg.routes.find(domain).is_none_or(|r| r.relay.is_empty()) {
            addrs.truncate(i);
            if addrs.is_empty() {
                return Err(Outcome::Failed(
                    "Although I'm listed as a best-preference MX or A for that host,\n\
                     it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)"
                        .into(),
                ));
            }
        }
    }
    Ok(addrs)
}

/// One transaction with one host.
async fn transact<E: Env>(
    env: &E,
    cfg: &RemoteConfig,
    to: SocketAddr,
    mut c: Client,
) -> Option<client::Outcome> {
    let connect = env.net().connect(to);
    let mut s = tokio::select! {
        biased;
        r = connect => r.ok()?,
        _ = env.sleep(cfg.timeout_connect) => return None,
    };
    let mut buf = vec![0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let (step, used) = c.input(&pending);
        pending.drain(..used);
        match step {
            Step::Done(o) => return Some(o),
            Step::Send(bytes) => {
                let w = tokio::select! {
                    biased;
                    r = s.write_all(&bytes) => r,
                    _ = env.sleep(cfg.timeout_remote) => Err(std::io::ErrorKind::TimedOut.into()),
                };
                if w.is_err() {
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

impl<R: Resolve> Smtp<R> {
    pub async fn deliver<E: Env>(
        &self,
        env: &E,
        sender: &str,
        recipient: &str,
        data: &[u8],
    ) -> Outcome {
        let domain = recipient.rsplit_once('@').map_or("", |(_, d)| d);
        let addrs = match targets(env, &self.cfg, &*self.resolver, domain).await {
            Ok(a) => a,
            Err(o) => return o,
        };
        let mut last = None;
        for a in addrs {
            let host = a.ip().to_string();
            let c = Client::new(&host, &self.cfg.helohost, sender, recipient, data);
            match transact(env, &self.cfg, a, c).await {
                None => continue,
                Some(client::Outcome::NextHost(why)) => last = Some(why),
                Some(client::Outcome::Delivered(r)) => {
                    return Outcome::Delivered {
                        report: r,
                        forwards: Vec::new(),
                        forward_sender: String::new(),
                        forward_data: Vec::new(),
                    }
                }
                Some(client::Outcome::Failed(r)) => return Outcome::Failed(r),
                Some(client::Outcome::Deferred(r)) => return Outcome::Deferred(r),
            }
        }
        Outcome::Deferred(last.unwrap_or_else(|| {
            "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)".into()
        }))
    }
}

impl<E: Env, R: Resolve> Remote<E> for Smtp<R> {
    fn deliver(
        &self,
        env: E,
        sender: String,
        recipient: String,
        data: Arc<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        let me = Smtp {
            cfg: self.cfg.clone(),
            resolver: self.resolver.clone(),
        };
        Box::pin(async move { me.deliver(&env, &sender, &recipient, &data).await })
    }
}
