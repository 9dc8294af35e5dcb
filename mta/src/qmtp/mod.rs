//! QMTP (qmail's Quick Mail Transfer Protocol, port 209): the server's package reader
//! ([`server`]), and what QMTP and QMQP share: replies and the recipient rules.

pub mod server;

use crate::netstring;
use crate::smtp::server::Policy;

/// One answer: for a recipient (QMTP) or for the whole message (QMQP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `K`: accepted (the text names the queue entry).
    Ok(String),
    /// `Z`: try again later.
    Temp(String),
    /// `D`: refused for good.
    Perm(String),
}

impl Reply {
    /// The reply's netstring.
    pub fn encode(&self) -> Vec<u8> {
        let (c, t) = match self {
            Reply::Ok(t) => ('K', t),
            Reply::Temp(t) => ('Z', t),
            Reply::Perm(t) => ('D', t),
        };
        netstring::encode(format!("{c}{t}").as_bytes())
    }

    /// Read a reply netstring's contents; `None` when it is not one.
    pub fn decode(data: &[u8]) -> Option<Reply> {
        let text = String::from_utf8_lossy(data.get(1..)?).into_owned();
        match data.first()? {
            b'K' => Some(Reply::Ok(text)),
            b'Z' => Some(Reply::Temp(text)),
            b'D' => Some(Reply::Perm(text)),
            _ => None,
        }
    }
}

/// qmail-qmtpd's recipient rule (the same as qmail-smtpd's RCPT): with RELAYCLIENT anything
/// goes, its value appended; otherwise the domain must be in rcpthosts (or morercpthosts), and
/// the local part must not hide a relay (`%`, `!`, `@`). Returns the address to queue, or the
/// refusal.
pub fn check_rcpt(p: &Policy, addr: &str) -> Result<String, Reply> {
    if addr.is_empty() || addr.len() > crate::queue::MAX_ADDR {
        return Err(Reply::Perm(
            "sorry, that address is not valid (#5.1.3)".into(),
        ));
    }
    let addr = crate::smtp::address::rewrite_ip_literal(addr, &p.local_ips, &p.localiphost);
    if let Some(suffix) = &p.relayclient {
        return Ok(format!("{addr}{suffix}"));
    }
    let (local, domain) = match addr.rfind('@') {
        Some(i) => (&addr[..i], addr[i + 1..].to_ascii_lowercase()),
        None => (addr.as_str(), p.envnoathost.to_ascii_lowercase()),
    };
    let listed = |l: &[String]| {
        l.iter().any(|h| {
            let h = h.to_ascii_lowercase();
            if h.starts_with('.') {
                domain.ends_with(&h)
            } else {
                domain == h
            }
        })
    };
    let allowed = p
        .rcpthosts
        .as_ref()
        .is_none_or(|l| listed(l) || listed(&p.morercpthosts));
    if !allowed {
        return Err(Reply::Perm(
            "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)".into(),
        ));
    }
    if local.contains(['%', '!', '@']) {
        return Err(Reply::Perm("we don't relay (#5.7.1)".into()));
    }
    Ok(addr)
}

/// The refusal for a message over `databytes`.
pub fn too_big() -> Reply {
    Reply::Perm("sorry, that message size exceeds my databytes limit (#5.3.4)".into())
}

/// The queue's answer as a reply.
pub fn queued(r: Result<crate::queue::MsgId, crate::queue::service::Refusal>) -> Reply {
    match r {
        Ok(id) => Reply::Ok(format!("ok {id}")),
        Err(r) if r.permanent => Reply::Perm(r.text),
        Err(r) => Reply::Temp(r.text),
    }
}
