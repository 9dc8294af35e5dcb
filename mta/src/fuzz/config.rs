//! Files an administrator writes: control files (with `smtp.rules`) and the rules alone.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use arbitrary::Unstructured;

use crate::control::{ControlDir, Rewrite};
use crate::env::{Fs, FsFile, Metadata};
use crate::queue::Classify;
use crate::remote::RemoteConfig;
use crate::smtp::server::Session;
use crate::smtpd::rules::Rules;
use crate::smtpd::Settings;

/// A read-only directory tree in memory: what the control loaders read.
struct MemFs(BTreeMap<PathBuf, Vec<u8>>);

/// The handle type of [`MemFs`], which never opens a file.
struct NoFile;

fn unsupported<T>() -> io::Result<T> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "read-only fuzz fs",
    ))
}

impl FsFile for NoFile {
    fn write_at(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
        unsupported()
    }
    fn read_at(&mut self, _: u64, _: &mut [u8]) -> io::Result<usize> {
        unsupported()
    }
    fn set_len(&mut self, _: u64) -> io::Result<()> {
        unsupported()
    }
    fn size(&mut self) -> io::Result<u64> {
        unsupported()
    }
    fn sync(&mut self) -> io::Result<()> {
        unsupported()
    }
}

impl Fs for MemFs {
    type File = NoFile;
    type Lock = ();
    fn create_new(&self, _: &Path) -> io::Result<NoFile> {
        unsupported()
    }
    fn open_rw(&self, _: &Path) -> io::Result<NoFile> {
        unsupported()
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn mkdir(&self, _: &Path) -> io::Result<()> {
        unsupported()
    }
    fn rename(&self, _: &Path, _: &Path) -> io::Result<()> {
        unsupported()
    }
    fn link(&self, _: &Path, _: &Path) -> io::Result<()> {
        unsupported()
    }
    fn unlink(&self, _: &Path) -> io::Result<()> {
        unsupported()
    }
    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        unsupported()
    }
    fn list_dir(&self, _: &Path) -> io::Result<Vec<String>> {
        unsupported()
    }
    fn metadata(&self, _: &Path) -> io::Result<Metadata> {
        unsupported()
    }
    fn try_lock(&self, _: &Path) -> io::Result<()> {
        unsupported()
    }
}

/// Every control file the daemon reads.
const CONTROLS: [&str; 24] = [
    "me",
    "rcpthosts",
    "morercpthosts",
    "badmailfrom",
    "databytes",
    "localiphost",
    "timeoutsmtpd",
    "timeoutdata",
    "dataminrate",
    "concurrencyincoming",
    "concurrencyperip",
    "smtpfilters",
    "envnoathost",
    "nullsenderonercpt",
    "realrcptto",
    "smtpgreeting",
    "helohost",
    "smtproutes",
    "timeoutconnect",
    "timeoutremote",
    "locals",
    "percenthack",
    "virtualdomains",
    "smtp.rules",
];

/// Clients the policies are asked about: IPv4, the same as IPv4-mapped IPv6, IPv6.
const PEERS: [&str; 4] = ["127.0.0.1", "10.0.0.8", "::ffff:10.0.0.8", "::1"];

/// A whole control directory from the input; then everything the daemon derives from it
/// (SMTP policies and a session run on them, routes, address rewriting).
pub fn control_files(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let root = Path::new("/fuzz");
    let mut files = BTreeMap::new();
    files.insert(root.join("control/me"), b"fuzz.example\n".to_vec());
    // Files until the input runs out (an exhausted input yields zeros, never an error).
    for _ in 0..CONTROLS.len() {
        if u.is_empty() || u.peek_bytes(1) == Some(&[0xff]) {
            break;
        }
        let (Ok(&name), Ok(len)) = (u.choose(&CONTROLS), u.int_in_range(0..=64usize)) else {
            break;
        };
        let Ok(text) = u.bytes(len.min(u.len())) else {
            break;
        };
        files.insert(root.join("control").join(name), text.to_vec());
    }
    let probe = String::from_utf8_lossy(u.take_rest()).into_owned();
    let fs = MemFs(files);
    if let Ok(s) = Settings::load(&fs, root) {
        for peer in PEERS {
            let ip: IpAddr = peer.parse().expect("peer");
            let policy = s.policy_for(SocketAddr::new(ip, 25), Some(&probe));
            if let Some(p) = policy {
                session_on(p);
            }
        }
    }
    if let Ok(r) = RemoteConfig::load(&fs, root) {
        let _ = r.routes.find(&probe);
    }
    if let Ok(rw) = Rewrite::load(&ControlDir::new(&fs, root)) {
        for addr in [
            probe.as_str(),
            "fred",
            "a%b@fuzz.example",
            "x@y.sub.example",
        ] {
            let (to, channel) = rw.classify(addr);
            assert!(to.contains('@'), "{addr:?} rewritten to {to:?}");
            assert_eq!(rw.classify(addr), (to, channel), "rewriting is a function");
        }
    }
}

/// A short session under a policy the control files made: replies stay well formed.
fn session_on(p: crate::smtp::server::Policy) {
    let mut s = Session::new(p, 0);
    let script = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<fred@fuzz.example>\r\n\
        RCPT TO:<x@elsewhere.example>\r\nDATA\r\n";
    let _ = s.input(script);
    let mut out = s.take_output();
    let _ = s.input(b"hi\r\n.\r\nQUIT\r\n");
    out.extend(s.take_output());
    super::check_replies(&out);
}

/// `control/smtp.rules` alone. Input: rules text, then after a NUL the client's host name.
/// An IPv4 client gets the same rule on the dual-stack socket (IPv4-mapped) as on IPv4, and
/// host names match without regard to ASCII case.
pub fn smtpd_rules(data: &[u8]) {
    let mut parts = data.splitn(2, |&b| b == 0);
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let host = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let Ok(rules) = Rules::parse(&text) else {
        return;
    };
    assert_eq!(
        Rules::parse(&text).ok(),
        Some(rules.clone()),
        "parsing is a function"
    );
    for v4 in ["10.0.0.8", "127.0.0.1", "192.168.1.77"] {
        let a: std::net::Ipv4Addr = v4.parse().expect("ip");
        let mapped = IpAddr::V6(a.to_ipv6_mapped());
        for h in [None, Some(host.as_str())] {
            assert_eq!(rules.find(IpAddr::V4(a), h), rules.find(mapped, h), "{v4}");
        }
        let upper = host.to_ascii_uppercase();
        assert_eq!(
            rules.find(IpAddr::V4(a), Some(&host)),
            rules.find(IpAddr::V4(a), Some(&upper))
        );
    }
    for r in &rules.0 {
        // DATABYTES was checked when read: a policy never falls back to the global limit.
        for (k, v) in &r.vars {
            assert!(k != "DATABYTES" || v.parse::<u64>().is_ok(), "{v:?}");
        }
    }
}
