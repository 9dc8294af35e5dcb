//! QMQP's client side (qmail-qmqpc): a mini-qmail host has no queue; `mta inject` hands each
//! message to the first server in `control/qmqpservers` that answers, with qmail-qmqpc's
//! exit statuses. A line is an address, `IP` (port 628) or `IP:PORT` / `[IPv6]:PORT`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::control::ControlDir;
use crate::env::{Env, Fs, Net};
use crate::netio::{read_timed, write_timed};
use crate::netstring::{self, Reader};
use crate::qmtp::Reply;
use crate::queue::NewMessage;

/// QMQP's port.
pub const PORT: u16 = 628;
/// qmail-qmqpc's connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Each read and write of the exchange.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// qmail-qmqpc's exit statuses (qmail-queue's), with qmail-inject's words for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 31: a server refused the message for good.
    Refused = 31,
    /// 55: no usable `control/qmqpservers`.
    Config = 55,
    /// 71: a server refused it for now.
    Deferred = 71,
    /// 72: the connection timed out.
    ConnectTimeout = 72,
    /// 73: the connection was refused.
    ConnectRefused = 73,
    /// 74: connected, but the exchange failed.
    Communication = 74,
}

impl Exit {
    pub fn text(self) -> &'static str {
        match self {
            Exit::Refused => "mail server permanently rejected message (#5.3.0)",
            Exit::Config => "unable to read configuration (#4.3.0)",
            Exit::Deferred => "mail server temporarily rejected message (#4.3.0)",
            Exit::ConnectTimeout => "connection to mail server timed out (#4.4.1)",
            Exit::ConnectRefused => "connection to mail server rejected (#4.4.1)",
            Exit::Communication => "communication with mail server failed (#4.4.2)",
        }
    }
}

/// The servers of `control/qmqpservers`; `None` when the file does not exist (a full host).
pub fn servers<F: Fs>(fs: &F, root: &Path) -> Result<Option<Vec<SocketAddr>>, String> {
    let lines = ControlDir::new(fs, root)
        .numbered("qmqpservers")
        .map_err(|e| e.to_string())?;
    let Some(lines) = lines else { return Ok(None) };
    let mut v = Vec::new();
    for (n, l) in lines {
        let a = l
            .parse::<SocketAddr>()
            .or_else(|_| l.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, PORT)))
            .map_err(|_| format!("control/qmqpservers line {n}: not an address: {l:?}"))?;
        v.push(a);
    }
    Ok(Some(v))
}

/// The one netstring a client sends.
pub fn encode(m: &NewMessage) -> Vec<u8> {
    let mut inner = netstring::encode(&m.data);
    inner.extend(netstring::encode(m.sender.as_bytes()));
    for r in &m.recipients {
        inner.extend(netstring::encode(r.as_bytes()));
    }
    netstring::encode(&inner)
}

/// Hand `m` to the servers in order until one answers `K` or `D`. `Ok`: the accepting
/// server's text; `Err`: the exit status and the last server's words, if any.
pub async fn send<E: Env>(
    env: &E,
    servers: &[SocketAddr],
    m: &NewMessage,
) -> Result<String, (Exit, String)> {
    let wire = encode(m);
    let mut last = (Exit::Config, String::new());
    for &s in servers {
        match one(env, s, &wire).await {
            Ok(Reply::Ok(t)) => return Ok(t),
            Ok(Reply::Perm(t)) => return Err((Exit::Refused, t)),
            Ok(Reply::Temp(t)) => last = (Exit::Deferred, t),
            Err(e) => {
                tracing::info!("qmqp {s}: {e:?}");
                last = (e, String::new());
            }
        }
    }
    Err(last)
}

/// One server's answer.
async fn one<E: Env>(env: &E, server: SocketAddr, wire: &[u8]) -> Result<Reply, Exit> {
    let mut c = tokio::select! {
        biased;
        r = env.net().connect(server) => r.map_err(|_| Exit::ConnectRefused)?,
        () = env.sleep(CONNECT_TIMEOUT) => return Err(Exit::ConnectTimeout),
    };
    write_timed(env, &mut c, wire, TIMEOUT)
        .await
        .map_err(|_| Exit::Communication)?;
    let mut reader = Reader::new(1000, false);
    let mut buf = [0u8; 1024];
    loop {
        let n = match read_timed(env, &mut c, &mut buf, TIMEOUT).await {
            Ok(Some(n)) if n > 0 => n,
            _ => return Err(Exit::Communication),
        };
        match reader.feed(&buf[..n]) {
            Ok((_, Some(ns))) => return Reply::decode(&ns.data).ok_or(Exit::Communication),
            Ok((_, None)) => {}
            Err(_) => return Err(Exit::Communication),
        }
    }
}
