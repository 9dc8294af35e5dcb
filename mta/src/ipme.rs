//! ipme (qmail's list of this host's own addresses): an MX that resolves to one of them is
//! this host, and mail must not be sent there. Shared between the remote-delivery side and the
//! code that refreshes it on SIGHUP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use crate::env::Env;

/// The current set; cheap to clone, every clone sees a refresh.
#[derive(Debug, Clone, Default)]
pub struct Ipme(Arc<RwLock<Vec<IpAddr>>>);

impl Ipme {
    pub fn new(ips: Vec<IpAddr>) -> Ipme {
        Ipme(Arc::new(RwLock::new(ips)))
    }
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let v = self.0.read().unwrap_or_else(|e| e.into_inner());
        v.contains(&canonical(*ip))
    }
    pub fn set(&self, ips: Vec<IpAddr>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = ips;
    }
    pub fn get(&self) -> Vec<IpAddr> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Gather the host's addresses: loopback, every interface's, the listen address and `extra`.
/// An interface list that cannot be read is said on stderr, and the rest is used.
pub fn gather<E: Env>(env: &E, listen: SocketAddr, extra: &[IpAddr]) -> Vec<IpAddr> {
    let mut v = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    match env.local_addresses() {
        Ok(a) => v.extend(a),
        Err(e) => env.stderr(&format!("mta run: cannot list this host's addresses: {e}")),
    }
    if !listen.ip().is_unspecified() {
        v.push(listen.ip());
    }
    v.extend_from_slice(extra);
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in v.into_iter().map(canonical) {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_count_as_ipv4_and_refreshes_are_seen_by_every_clone() {
        let a = Ipme::new(vec!["10.0.0.1".parse().unwrap()]);
        let b = a.clone();
        assert!(b.contains(&"::ffff:10.0.0.1".parse().unwrap()));
        a.set(vec!["10.0.0.2".parse().unwrap()]);
        assert!(!b.contains(&"10.0.0.1".parse().unwrap()));
        assert!(b.contains(&"10.0.0.2".parse().unwrap()));
    }
}
