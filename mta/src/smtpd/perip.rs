//! Sessions per client address (an addition to qmail, like tcpserver's per-host limit): one
//! address cannot take every `concurrencyincoming` slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Live sessions by client address (IPv4-mapped IPv6 counted as the IPv4 address).
#[derive(Debug, Default, Clone)]
pub struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One session's place in its address's count; given back when dropped, so a session that
/// ends in any way (a panic included) frees it.
#[derive(Debug)]
pub struct Slot {
    map: PerIp,
    ip: IpAddr,
}

impl PerIp {
    /// A slot for a session from `ip`, or `None` when `limit` sessions from it are live
    /// already. A limit of 0 means no limit.
    pub fn acquire(&self, ip: IpAddr, limit: usize) -> Option<Slot> {
        let ip = ip.to_canonical();
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if limit > 0 && *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            map: self.clone(),
            ip,
        })
    }

    /// Live sessions from `ip`.
    pub fn count(&self, ip: IpAddr) -> usize {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.map.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_per_address_with_mapped_ipv4_as_ipv4() {
        let p = PerIp::default();
        let v4: IpAddr = "10.0.0.8".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.8".parse().unwrap();
        let other: IpAddr = "10.0.0.9".parse().unwrap();
        let a = p.acquire(v4, 2).unwrap();
        let b = p.acquire(mapped, 2).unwrap();
        assert!(p.acquire(v4, 2).is_none());
        assert!(p.acquire(mapped, 2).is_none());
        let c = p.acquire(other, 2).unwrap();
        drop(a);
        let d = p.acquire(mapped, 2).unwrap();
        assert_eq!(p.count(v4), 2);
        drop((b, c, d));
        assert_eq!(p.count(v4), 0);
        assert!(p.0.lock().unwrap().is_empty(), "no entries left behind");
    }

    #[test]
    fn zero_is_no_limit() {
        let p = PerIp::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..50).map(|_| p.acquire(ip, 0).unwrap()).collect();
        assert_eq!(p.count(ip), 50);
        drop(slots);
        assert_eq!(p.count(ip), 0);
    }
}
