//! A stub DNS resolver speaking the wire format (hickory-proto) over the environment's
//! network: UDP first, TCP when the answer is truncated (answers up to 64 KiB), CNAME chains
//! with a loop limit. NXDOMAIN is permanent; SERVFAIL, refusals and timeouts are temporary.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::env::{Env, Net, Udp};
use crate::remote::{DnsError, DnsFuture, Resolve};

/// CNAMEs followed before giving up (temporary: qmail treats a loop as a soft error).
pub const MAX_CNAME: usize = 8;

#[derive(Clone)]
pub struct Resolver<E: Env> {
    env: E,
    servers: Vec<SocketAddr>,
    timeout: Duration,
}

/// Name servers from resolv.conf text (`nameserver ADDR` lines); 127.0.0.1 when none.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    let v: Vec<SocketAddr> = resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    if v.is_empty() {
        vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53)]
    } else {
        v
    }
}

impl<E: Env> Resolver<E> {
    pub fn new(env: E, servers: Vec<SocketAddr>, timeout: Duration) -> Self {
        Resolver {
            env,
            servers,
            timeout,
        }
    }

    fn request(&self, name: &Name, t: RecordType) -> Result<(u16, Vec<u8>), DnsError> {
        let id = self.env.random_u64() as u16;
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name.clone(), t));
        m.to_vec().map(|b| (id, b)).map_err(|_| DnsError::Temporary)
    }

    async fn udp(&self, server: SocketAddr, req: &[u8], id: u16) -> Option<Message> {
        let any = match server {
            SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        let sock = self.env.net().bind_udp(any).await.ok()?;
        sock.send_to(req, server).await.ok()?;
        let mut buf = vec![0u8; 4096];
        let env = &self.env;
        let recv = async {
            loop {
                let (n, from) = sock.recv_from(&mut buf).await.ok()?;
                // Ignore strays: only our server's answer to our id counts.
                if from != server {
                    continue;
                }
                if let Ok(m) = Message::from_vec(&buf[..n]) {
                    if m.metadata.id == id {
                        return Some(m);
                    }
                }
            }
        };
        tokio::select! {
            biased;
            m = recv => m,
            _ = env.sleep(self.timeout) => None,
        }
    }

    async fn tcp(&self, server: SocketAddr, req: &[u8], id: u16) -> Option<Message> {
        let env = &self.env;
        let exchange = async {
            let mut s = env.net().connect(server).await.ok()?;
            let mut out = (req.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(req);
            s.write_all(&out).await.ok()?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.ok()?;
            let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut buf).await.ok()?;
            let m = Message::from_vec(&buf).ok()?;
            (m.metadata.id == id).then_some(m)
        };
        tokio::select! {
            biased;
            m = exchange => m,
            _ = env.sleep(self.timeout) => None,
        }
    }

    /// One question to the servers in turn.
    async fn ask(&self, name: &Name, t: RecordType) -> Result<Message, DnsError> {
        let (id, req) = self.request(name, t)?;
        for &server in &self.servers {
            let Some(mut m) = self.udp(server, &req, id).await else {
                continue;
            };
            if m.metadata.truncation && !crate::planted::on(crate::planted::Bug::IgnoreTruncation) {
                match self.tcp(server, &req, id).await {
                    Some(full) => m = full,
                    None => continue,
                }
            }
            match m.metadata.response_code {
                ResponseCode::NoError => return Ok(m),
                ResponseCode::NXDomain => return Err(DnsError::NotFound),
                ResponseCode::ServFail
                    if crate::planted::on(crate::planted::Bug::ServfailPermanent) =>
                {
                    return Err(DnsError::NotFound)
                }
                _ => continue,
            }
        }
        Err(DnsError::Temporary)
    }

    /// The host name of an address (PTR), confirmed by a forward lookup as tcpserver does;
    /// `None` when there is none or it does not point back.
    pub async fn host_of(&self, ip: IpAddr) -> Option<String> {
        let rev = Name::from(ip).to_ascii();
        let names = self.lookup(&rev, RecordType::PTR).await.ok()?;
        let name = names.into_iter().find_map(|d| match d {
            RData::PTR(p) => Some(host(&p.0)),
            _ => None,
        })?;
        let back = Resolve::ips(self, &name).await.ok()?;
        back.contains(&ip).then_some(name)
    }

    /// Records of type `t` for `name`, following CNAMEs.
    pub async fn lookup(&self, name: &str, t: RecordType) -> Result<Vec<RData>, DnsError> {
        let mut name = Name::from_ascii(name).map_err(|_| DnsError::NotFound)?;
        name.set_fqdn(true);
        for _ in 0..=MAX_CNAME {
            let m = self.ask(&name, t).await?;
            let mut found = Vec::new();
            let mut alias = None;
            for r in &m.answers {
                if r.name != name {
                    continue;
                }
                match &r.data {
                    RData::CNAME(c) if t != RecordType::CNAME => alias = Some(c.0.clone()),
                    d if d.record_type() == t => found.push(d.clone()),
                    _ => {}
                }
            }
            if !found.is_empty() || alias.is_none() {
                return Ok(found);
            }
            name = alias.expect("checked");
        }
        Err(DnsError::Temporary)
    }
}

fn host(n: &Name) -> String {
    n.to_ascii().trim_end_matches('.').to_string()
}

impl<E: Env> Resolve for Resolver<E> {
    fn mx<'a>(&'a self, domain: &'a str) -> DnsFuture<'a, Vec<(u16, String)>> {
        Box::pin(async move {
            let r = self.lookup(domain, RecordType::MX).await?;
            Ok(r.into_iter()
                .filter_map(|d| match d {
                    RData::MX(mx) => Some((mx.preference, host(&mx.exchange))),
                    _ => None,
                })
                .collect())
        })
    }

    fn ips<'a>(&'a self, h: &'a str) -> DnsFuture<'a, Vec<IpAddr>> {
        Box::pin(async move {
            let a = self.lookup(h, RecordType::A).await;
            let aaaa = self.lookup(h, RecordType::AAAA).await;
            let mut ips: Vec<IpAddr> = Vec::new();
            for r in [&a, &aaaa].into_iter().flatten() {
                for d in r {
                    match d {
                        RData::A(x) => ips.push(IpAddr::V4(x.0)),
                        RData::AAAA(x) => ips.push(IpAddr::V6(x.0)),
                        _ => {}
                    }
                }
            }
            if !ips.is_empty() {
                return Ok(ips);
            }
            match (a, aaaa) {
                (Err(DnsError::Temporary), _) | (_, Err(DnsError::Temporary)) => {
                    Err(DnsError::Temporary)
                }
                (Err(DnsError::NotFound), _) => Err(DnsError::NotFound),
                _ => Ok(ips),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn resolv_conf() {
        let v = super::nameservers("# x\nsearch a\nnameserver 10.0.0.1\nnameserver ::1\n");
        assert_eq!(
            v,
            vec!["10.0.0.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
        assert_eq!(
            super::nameservers(""),
            vec!["127.0.0.1:53".parse().unwrap()]
        );
    }
}
