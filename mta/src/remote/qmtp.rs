//! Remote delivery over QMTP for the domains in `control/qmtproutes` (notqmail's file, the
//! format of smtproutes, port 209 unless given), as qmail-qmtpc does it: one package per
//! message for all its recipients at the route's host, one reply per recipient.
//!
//! Falling back to SMTP follows the rule for QMTP clients (MXPS): SMTP is tried only when
//! the QMTP connection attempt fails (no address, refused, timed out), that is when the
//! server cannot have the message. Once connected, the server may have queued it whatever
//! happens next, so a cut-off, a timeout or a malformed answer is a temporary failure for
//! the recipients without a reply, retried later over QMTP; never a second copy over SMTP.
//! The message is streamed from the queue in pieces.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncWrite};

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

/// The outcomes from the route's host, one per recipient in order; `None` when no
/// connection could be made to any of its addresses (use SMTP).
pub async fn deliver<E: Env, R: Resolve>(
    env: &E,
    cfg: &RemoteConfig,
    resolver: &R,
    route: &Route,
    (sender, recipients): (&str, &[String]),
    body: &BodyRef,
) -> Option<Vec<Outcome>> {
    let ips = match literal(&route.relay) {
        Some(ip) => vec![ip],
        None => resolver.ips(&route.relay).await.ok()?,
    };
    let n = recipients.len();
    for ip in ips {
        let to = SocketAddr::new(ip, route.port);
        let mut s = tokio::select! {
            biased;
            r = env.net().connect(to) => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!("qmtp {to}: {e}; trying the next host or SMTP");
                    continue;
                }
            },
            () = env.sleep(cfg.timeout_connect) => {
                tracing::info!("qmtp {to}: connection timed out; trying the next host or SMTP");
                continue;
            }
        };
        let Ok(mut b) = body.open(env.fs()) else {
            let why = "Unable to read the message. (#4.3.0)";
            return Some(vec![Outcome::Deferred(why.into()); n]);
        };
        let (replies, trouble) = package(env, cfg, &mut s, (sender, recipients), &mut b).await;
        return Some(outcomes(ip, n, replies, trouble));
    }
    None
}

/// One outcome per recipient: its reply, or (none came) a temporary failure saying why.
fn outcomes(ip: IpAddr, n: usize, replies: Vec<Reply>, trouble: Option<String>) -> Vec<Outcome> {
    let mut out: Vec<Outcome> = replies
        .into_iter()
        .map(|r| match r {
            Reply::Ok(t) => Outcome::Delivered {
                report: format!("{ip} accepted message over QMTP./Remote host said: {t}"),
                forwards: Vec::new(),
                forward_sender: String::new(),
                forward_prefix: Vec::new(),
            },
            Reply::Temp(t) => Outcome::Deferred(said(ip, &t)),
            Reply::Perm(t) => Outcome::Failed(said(ip, &t)),
        })
        .collect();
    let why = trouble.unwrap_or_else(|| "no reply".into());
    if out.len() < n {
        tracing::info!("qmtp {ip}: {why}; the recipients without a reply are retried over QMTP");
    }
    let cut = format!("Connected to {ip} over QMTP but {why}. (#4.4.2)");
    out.resize(n, Outcome::Deferred(cut));
    out
}

fn said(ip: IpAddr, text: &str) -> String {
    format!("Remote host {ip} said over QMTP: {text}")
}

/// Send one package for every recipient and read the replies, one per recipient in order:
/// those that came, and what stopped the rest.
async fn package<E: Env, S: AsyncRead + AsyncWrite + Unpin>(
    env: &E,
    cfg: &RemoteConfig,
    s: &mut S,
    (sender, recipients): (&str, &[String]),
    body: &mut Body<<E::Fs as Fs>::File>,
) -> (Vec<Reply>, Option<String>) {
    let t = cfg.timeout_remote;
    // The message netstring: LF convention byte, then the message as queued.
    let head = format!("{}:\n", body.len() + 1);
    let mut rest = b",".to_vec();
    rest.extend(netstring::encode(sender.as_bytes()));
    let list: Vec<u8> = recipients
        .iter()
        .flat_map(|r| netstring::encode(r.as_bytes()))
        .collect();
    rest.extend(netstring::encode(&list));
    let sent = async {
        write_timed(env, s, head.as_bytes(), t).await?;
        stream_body(env, s, body, t).await?;
        write_timed(env, s, &rest, t).await
    };
    if let Err(e) = sent.await {
        return (
            Vec::new(),
            Some(format!("the connection died while sending ({e})")),
        );
    }
    read_replies(env, cfg, s, recipients.len()).await
}

/// Up to `n` reply netstrings.
async fn read_replies<E: Env, S: AsyncRead + Unpin>(
    env: &E,
    cfg: &RemoteConfig,
    s: &mut S,
    n: usize,
) -> (Vec<Reply>, Option<String>) {
    let mut replies = Vec::new();
    let mut reader = Reader::new(1000, false);
    let mut buf = [0u8; 1024];
    while replies.len() < n {
        let got = match read_timed(env, s, &mut buf, cfg.timeout_remote).await {
            Ok(Some(0)) | Err(_) => return (replies, Some("the connection died".into())),
            Ok(None) => return (replies, Some("it timed out".into())),
            Ok(Some(k)) => k,
        };
        let mut input = &buf[..got];
        while !input.is_empty() && replies.len() < n {
            let bad = || Some("it did not talk proper QMTP".to_string());
            match reader.feed(input) {
                Ok((used, Some(ns))) => {
                    input = &input[used..];
                    match Reply::decode(&ns.data) {
                        Some(r) => replies.push(r),
                        None => return (replies, bad()),
                    }
                }
                Ok((_, None)) => input = &[],
                Err(_) => return (replies, bad()),
            }
        }
    }
    (replies, None)
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
