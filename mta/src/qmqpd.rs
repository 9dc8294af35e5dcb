//! The QMQP server (qmail-qmqpd, for mini-qmail hosts): one netstring per connection holding
//! the message, the sender and the recipients; one reply; close. QMQP clients are trusted to
//! relay anywhere, so only those `control/qmqp.rules` allows may connect (tcprules syntax,
//! read for each connection; without the file, no one).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::env::{Env, Fs, Net};
use crate::netio::{read_timed, write_timed};
use crate::netstring::{self, Reader};
use crate::qmtp::Reply;
use crate::qmtpd::{accept_loop, Server};
use crate::smtp::received::Peer;
use crate::smtp::server::MAX_MESSAGE;
use crate::smtpd::rules::Rules;

/// Envelope bytes allowed on top of the message (sender and recipient netstrings).
const ENVELOPE: u64 = 1 << 20;

/// Serve QMQP until `shutdown`.
pub async fn serve<E: Env>(
    srv: Arc<Server<E>>,
    listener: <E::Net as Net>::Listener,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(srv, listener, shutdown, |srv, stream, peer| async move {
        if let Err(e) = session(&srv, stream, peer).await {
            tracing::debug!("qmqp {peer}: {e}");
        }
    })
    .await;
}

/// Whether `control/qmqp.rules` lets this client in.
fn trusted<E: Env>(srv: &Server<E>, peer: SocketAddr) -> Result<bool, String> {
    let path = srv.root.join("control/qmqp.rules");
    let rules = match srv.env.fs().read(&path) {
        Ok(b) => Rules::parse(&String::from_utf8_lossy(&b))
            .map_err(|e| format!("control/qmqp.rules line {}: {}", e.line, e.why))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("control/qmqp.rules: {e}")),
    };
    Ok(rules.find(peer.ip(), None).is_some_and(|r| r.allow))
}

/// One QMQP connection.
async fn session<E: Env, S>(srv: &Server<E>, mut stream: S, peer: SocketAddr) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    match trusted(srv, peer) {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!("qmqp {peer}: not allowed by control/qmqp.rules");
            return Ok(());
        }
        Err(e) => {
            tracing::warn!("qmqp {peer}: {e}");
            return Ok(());
        }
    }
    let t = srv.settings.borrow().timeout;
    let mut reader = Reader::new(MAX_MESSAGE + ENVELOPE, true);
    let mut buf = vec![0u8; 16 * 1024];
    let whole = loop {
        let n = match read_timed(&srv.env, &mut stream, &mut buf, t).await? {
            None | Some(0) => return Ok(()),
            Some(n) => n,
        };
        // One netstring per connection: whatever follows it is ignored.
        match reader.feed(&buf[..n]) {
            Ok((_, Some(ns))) => break ns,
            Ok((_, None)) => {}
            Err(e) => {
                tracing::info!("qmqp {peer}: {e}");
                return Ok(());
            }
        }
    };
    let reply = if whole.skipped {
        crate::qmtp::too_big()
    } else {
        match netstring::parse_all(&whole.data) {
            Ok(parts) if parts.len() >= 3 => queue(srv, peer, &parts).await,
            _ => {
                tracing::info!("qmqp {peer}: not a message, a sender and recipients");
                return Ok(());
            }
        }
    };
    write_timed(&srv.env, &mut stream, &reply.encode(), t).await?;
    stream.shutdown().await
}

async fn queue<E: Env>(srv: &Server<E>, peer: SocketAddr, parts: &[&[u8]]) -> Reply {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let recipients: Vec<String> = parts[2..].iter().map(|r| text(r)).collect();
    if recipients.iter().any(|r| r.is_empty()) {
        return Reply::Perm("sorry, an empty recipient is not valid (#5.1.3)".into());
    }
    let from = Peer {
        remote_ip: peer.ip().to_canonical().to_string(),
        ..Peer::default()
    };
    srv.submit("QMQP", &from, text(parts[1]), recipients, parts[0])
        .await
}
