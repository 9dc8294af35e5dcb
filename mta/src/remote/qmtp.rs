//! Remote delivery over QMTP for the domains in `control/qmtproutes` (notqmail's file, the
//! format of smtproutes, port 209 unless given): the route's host gets one package; when no
//! answer comes (no address, no connection, a broken exchange), delivery falls back to SMTP
//! as for any other domain. The message is streamed from the queue in pieces.

use std::net::SocketAddr;

use tokio::io::AsyncWrite;

use super::routes::Route;
use super::{literal, RemoteConfig, Resolve};
use crate::env::{Env, Fs, Net};
use crate::netio::{read_timed, write_timed};
use crate::netstring::{self, Reader};
use crate::qmtp::Reply;
use crate::queue::{Body, BodyRef};
use crate::send::manager::Outcome;

/// QMTP's port.
pub const PORT: u16 = 209;

/// The outcome from the route's host; `None`: none answered, use SMTP.
pub async fn deliver<E: Env, R: Resolve>(
    env: &E,
    cfg: &RemoteConfig,
    resolver: &R,
    route: &Route,
    (sender, recipient): (&str, &str),
    body: &BodyRef,
) -> Option<Outcome> {
    let ips = match literal(&route.relay) {
        Some(ip) => vec![ip],
        None => resolver.ips(&route.relay).await.ok()?,
    };
    for ip in ips {
        let to = SocketAddr::new(ip, route.port);
        let Ok(mut b) = body.open(env.fs()) else {
            return Some(Outcome::Deferred(
                "Unable to read the message. (#4.3.0)".into(),
            ));
        };
        match package(env, cfg, to, (sender, recipient), &mut b).await {
            Some(Reply::Ok(t)) => {
                return Some(Outcome::Delivered {
                    report: format!("{ip} accepted message over QMTP./Remote host said: {t}"),
                    forwards: Vec::new(),
                    forward_sender: String::new(),
                    forward_data: Vec::new(),
                })
            }
            Some(Reply::Temp(t)) => return Some(Outcome::Deferred(said(ip, &t))),
            Some(Reply::Perm(t)) => return Some(Outcome::Failed(said(ip, &t))),
            None => tracing::info!("qmtp {to}: no answer, trying the next host or SMTP"),
        }
    }
    None
}

fn said(ip: std::net::IpAddr, text: &str) -> String {
    format!("Remote host {ip} said over QMTP: {text}")
}

/// One package to one host and its reply.
async fn package<E: Env>(
    env: &E,
    cfg: &RemoteConfig,
    to: SocketAddr,
    (sender, recipient): (&str, &str),
    body: &mut Body<<E::Fs as Fs>::File>,
) -> Option<Reply> {
    let mut s = tokio::select! {
        biased;
        r = env.net().connect(to) => r.ok()?,
        () = env.sleep(cfg.timeout_connect) => return None,
    };
    let t = cfg.timeout_remote;
    // The message netstring: LF convention byte, then the message as queued.
    let head = format!("{}:\n", body.len() + 1);
    write_timed(env, &mut s, head.as_bytes(), t).await.ok()?;
    stream_body(env, &mut s, body, t).await.ok()?;
    let mut rest = b",".to_vec();
    rest.extend(netstring::encode(sender.as_bytes()));
    rest.extend(netstring::encode(&netstring::encode(recipient.as_bytes())));
    write_timed(env, &mut s, &rest, t).await.ok()?;
    let mut reader = Reader::new(1000, false);
    let mut buf = [0u8; 1024];
    loop {
        let n = read_timed(env, &mut s, &mut buf, t).await.ok()??;
        if n == 0 {
            return None;
        }
        if let (_, Some(ns)) = reader.feed(&buf[..n]).ok()? {
            return Reply::decode(&ns.data);
        }
    }
}

async fn stream_body<E: Env, S: AsyncWrite + Unpin>(
    env: &E,
    s: &mut S,
    body: &mut Body<<E::Fs as Fs>::File>,
    t: std::time::Duration,
) -> std::io::Result<()> {
    body.rewind();
    loop {
        let piece = body.next_piece()?;
        if piece.is_empty() {
            return Ok(());
        }
        write_timed(env, s, &piece, t).await?;
    }
}
