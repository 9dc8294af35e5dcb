//! qmail-tcpto: hosts whose connection attempts timed out recently. A host that timed out
//! twice within an hour is skipped until an hour after its last timeout, so a dead MX does
//! not cost every delivery a full `timeoutconnect`; a connection that works forgets it. Kept
//! in `queue/tcpto` (rewritten whole, synced, renamed into place) so a restart remembers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::env::{write_new_synced, Fs};

/// How long a timeout is remembered, in seconds.
pub const MEMORY_SECS: u64 = 3600;
/// Timeouts within [`MEMORY_SECS`] after which a host is skipped.
pub const SKIP_AFTER: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    timeouts: u32,
    last: u64,
}

#[derive(Debug, Default)]
pub struct Tcpto {
    /// Where it is kept; `None`: in memory only.
    path: Option<PathBuf>,
    hosts: Mutex<BTreeMap<IpAddr, Entry>>,
}

impl Tcpto {
    /// Read the table; a missing or damaged file is an empty table (it is only a hint).
    pub fn load<F: Fs>(fs: &F, path: &Path) -> Tcpto {
        let text = fs.read(path).unwrap_or_default();
        let hosts = String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| {
                let mut w = l.split(' ');
                let ip = w.next()?.parse().ok()?;
                let timeouts = w.next()?.parse().ok()?;
                let last = w.next()?.parse().ok()?;
                Some((ip, Entry { timeouts, last }))
            })
            .collect();
        Tcpto {
            path: Some(path.to_path_buf()),
            hosts: Mutex::new(hosts),
        }
    }

    fn hosts(&self) -> std::sync::MutexGuard<'_, BTreeMap<IpAddr, Entry>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Skip this host now?
    pub fn skip(&self, ip: &IpAddr, now: u64) -> bool {
        self.hosts()
            .get(ip)
            .is_some_and(|e| e.timeouts >= SKIP_AFTER && now < e.last + MEMORY_SECS)
    }

    /// A connection attempt to `ip` timed out at `now`.
    pub fn timed_out<F: Fs>(&self, fs: &F, ip: IpAddr, now: u64) {
        let mut h = self.hosts();
        let e = h.entry(ip).or_insert(Entry {
            timeouts: 0,
            last: now,
        });
        // An old timeout no longer counts.
        if now >= e.last + MEMORY_SECS {
            e.timeouts = 0;
        }
        e.timeouts += 1;
        e.last = now;
        self.save(fs, &h);
    }

    /// A connection to `ip` worked: forget its timeouts.
    pub fn connected<F: Fs>(&self, fs: &F, ip: IpAddr) {
        let mut h = self.hosts();
        if h.remove(&ip).is_some() {
            self.save(fs, &h);
        }
    }

    /// Best effort: a table that cannot be written is still used in memory.
    fn save<F: Fs>(&self, fs: &F, h: &BTreeMap<IpAddr, Entry>) {
        let Some(path) = &self.path else { return };
        let text: String = h
            .iter()
            .map(|(ip, e)| format!("{ip} {} {}\n", e.timeouts, e.last))
            .collect();
        let tmp = path.with_extension("new");
        let _ = fs.unlink(&tmp);
        let saved = write_new_synced(fs, &tmp, text.as_bytes(), true)
            .and_then(|()| fs.rename(&tmp, path))
            .and_then(|()| path.parent().map_or(Ok(()), |d| fs.sync_dir(d)));
        if let Err(e) = saved {
            tracing::warn!("cannot save {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::real::RealFs;

    #[test]
    fn two_recent_timeouts_skip_a_host_for_an_hour_and_a_restart_remembers() {
        let d = tempfile::tempdir().unwrap();
        let (fs, path) = (RealFs, d.path().join("tcpto"));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t = Tcpto::load(&fs, &path);
        t.timed_out(&fs, ip, 1000);
        assert!(!t.skip(&ip, 1001), "one timeout is not enough");
        t.timed_out(&fs, ip, 1100);
        assert!(t.skip(&ip, 1101));
        let again = Tcpto::load(&fs, &path);
        assert!(again.skip(&ip, 1101 + 3000), "remembered across a restart");
        assert!(
            !again.skip(&ip, 1100 + MEMORY_SECS),
            "forgotten an hour after the last"
        );
        // Timeouts an hour apart do not add up.
        again.timed_out(&fs, ip, 1100 + MEMORY_SECS + 1);
        assert!(!again.skip(&ip, 1100 + MEMORY_SECS + 2));
        again.timed_out(&fs, ip, 1100 + MEMORY_SECS + 5);
        assert!(again.skip(&ip, 1100 + MEMORY_SECS + 6));
        again.connected(&fs, ip);
        assert!(!Tcpto::load(&fs, &path).skip(&ip, 1100 + MEMORY_SECS + 7));
    }

    #[test]
    fn a_damaged_file_is_an_empty_table() {
        let d = tempfile::tempdir().unwrap();
        let (fs, path) = (RealFs, d.path().join("tcpto"));
        std::fs::write(&path, "garbage\n1.2.3.4 x 5\n").unwrap();
        assert!(!Tcpto::load(&fs, &path).skip(&"1.2.3.4".parse().unwrap(), 6));
    }
}
