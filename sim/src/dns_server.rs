//! A DNS server for the simulated world (and loopback tests): real wire format over the env's
//! UDP and TCP. Answers over 512 bytes go out truncated (TC) on UDP and whole on TCP; names
//! can be made to fail with NXDOMAIN, SERVFAIL or silence.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use mta::env::{Listener, Udp};

#[derive(Debug, Clone)]
pub enum Answer {
    Records(Vec<RData>),
    NxDomain,
    ServFail,
    /// Never answer (the client times out).
    Silent,
}

#[derive(Debug, Clone, Default)]
pub struct Zone {
    names: BTreeMap<String, BTreeMap<u16, Answer>>,
    whole: BTreeMap<String, Answer>,
}

fn key(n: &str) -> String {
    n.trim_end_matches('.').to_ascii_lowercase()
}

fn name(n: &str) -> Name {
    let mut x = Name::from_ascii(n).expect("name");
    x.set_fqdn(true);
    x
}

impl Zone {
    fn add(&mut self, n: &str, t: RecordType, d: RData) -> &mut Self {
        let e = self
            .names
            .entry(key(n))
            .or_default()
            .entry(u16::from(t))
            .or_insert(Answer::Records(Vec::new()));
        if let Answer::Records(v) = e {
            v.push(d);
        }
        self
    }
    pub fn mx(&mut self, n: &str, pref: u16, host: &str) -> &mut Self {
        self.add(n, RecordType::MX, RData::MX(MX::new(pref, name(host))))
    }
    pub fn ip(&mut self, n: &str, ip: IpAddr) -> &mut Self {
        match ip {
            IpAddr::V4(v) => self.add(n, RecordType::A, RData::A(A(v))),
            IpAddr::V6(v) => self.add(n, RecordType::AAAA, RData::AAAA(AAAA(v))),
        }
    }
    /// The reverse (PTR) record of an address.
    pub fn ptr(&mut self, ip: IpAddr, host: &str) -> &mut Self {
        let rev = Name::from(ip).to_ascii();
        self.add(&rev, RecordType::PTR, RData::PTR(PTR(name(host))))
    }
    pub fn cname(&mut self, n: &str, target: &str) -> &mut Self {
        self.whole.insert(
            key(n),
            Answer::Records(vec![RData::CNAME(CNAME(name(target)))]),
        );
        self
    }
    /// Every question about `n` gets this answer.
    pub fn fail(&mut self, n: &str, a: Answer) -> &mut Self {
        self.whole.insert(key(n), a);
        self
    }

    /// The response to a query, or `None` to stay silent.
    pub fn respond(&self, q: &Message) -> Option<Message> {
        let query = q.queries.first()?;
        let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
        r.metadata.recursion_desired = q.metadata.recursion_desired;
        r.metadata.recursion_available = true;
        r.add_query(query.clone());
        let k = key(&query.name().to_ascii());
        let t = u16::from(query.query_type());
        let answer = self
            .whole
            .get(&k)
            .or_else(|| self.names.get(&k).and_then(|m| m.get(&t)))
            .cloned()
            .unwrap_or(if self.names.contains_key(&k) {
                Answer::Records(Vec::new())
            } else {
                Answer::NxDomain
            });
        match answer {
            Answer::Silent => return None,
            Answer::NxDomain => r.metadata.response_code = ResponseCode::NXDomain,
            Answer::ServFail => r.metadata.response_code = ResponseCode::ServFail,
            Answer::Records(v) => {
                for d in v {
                    r.answers
                        .push(Record::from_rdata(query.name().clone(), 300, d));
                }
            }
        }
        Some(r)
    }
}

/// Serve UDP: answers over 512 bytes are truncated, as a real server does.
pub async fn serve_udp<U: Udp>(sock: U, zone: Arc<Zone>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let Ok(q) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let Some(r) = zone.respond(&q) else { continue };
        let Ok(mut bytes) = r.to_vec() else { continue };
        if bytes.len() > 512 {
            let Ok(t) = r.truncate().to_vec() else {
                continue;
            };
            bytes = t;
        }
        let _ = sock.send_to(&bytes, from).await;
    }
}

/// Serve TCP: whole answers, two-byte length prefix.
pub async fn serve_tcp<L>(listener: L, zone: Arc<Zone>)
where
    L: Listener,
    L::Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let zone = zone.clone();
        tokio::spawn(async move {
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
            if s.read_exact(&mut buf).await.is_err() {
                return;
            }
            let Ok(q) = Message::from_vec(&buf) else {
                return;
            };
            let Some(r) = zone.respond(&q) else { return };
            let Ok(bytes) = r.to_vec() else { return };
            let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&bytes);
            let _ = s.write_all(&out).await;
        });
    }
}
