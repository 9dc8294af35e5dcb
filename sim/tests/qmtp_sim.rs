//! The QMTP client in a turmoil world: `qmtproutes` sends far.example's mail to the peer's
//! QMTP port, where a scripted server written here from the protocol document reads each
//! package; the peer's SMTP side records any fallback. One package carries every recipient
//! with a reply each; SMTP is used only when no QMTP connection can be made; a server that
//! took the package and died makes a deferral retried over QMTP, never an SMTP copy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mta::env::{Listener, Net};
use sim::deliver::{image, World};
use sim::env::TURMOIL;
use sim::fs::{Faults, Persist};
use sim::host::MtaHost;
use sim::receive::EPOCH_MS;
use sim::remote_world::{dns_host, peer_host, Peer, PeerLog};
use sim::world::Disk;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the QMTP server does on its `n`th connection (the last repeats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Reply `K` to bill, `Z` to everyone else.
    KForBill,
    /// Reply `K` to everyone.
    Accept,
    /// Read the package, close without a reply.
    DieAfterPackage,
}

/// The recipients of each package the QMTP server read.
type Packages = Arc<Mutex<Vec<Vec<String>>>>;

/// Read one netstring's contents (byte by byte, as the protocol document describes).
async fn netstring(s: &mut turmoil::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = 0usize;
    loop {
        let b = s.read_u8().await?;
        if b == b':' {
            break;
        }
        len = len * 10 + usize::from(b - b'0');
    }
    let mut data = vec![0u8; len + 1];
    s.read_exact(&mut data).await?;
    data.pop();
    Ok(data)
}

fn ns(b: &[u8]) -> Vec<u8> {
    [format!("{}:", b.len()).as_bytes(), b, b","].concat()
}

async fn qmtp_session(mut s: turmoil::net::TcpStream, script: Script, got: Packages) {
    let (Ok(_msg), Ok(_sender), Ok(list)) = (
        netstring(&mut s).await,
        netstring(&mut s).await,
        netstring(&mut s).await,
    ) else {
        return;
    };
    let mut rcpts = Vec::new();
    let mut rest = &list[..];
    while let Some(colon) = rest.iter().position(|&b| b == b':') {
        let n: usize = String::from_utf8_lossy(&rest[..colon]).parse().unwrap();
        rcpts.push(String::from_utf8_lossy(&rest[colon + 1..colon + 1 + n]).into_owned());
        rest = &rest[colon + 2 + n..];
    }
    got.lock().unwrap().push(rcpts.clone());
    let reply = |r: &String| match script {
        Script::KForBill if !r.starts_with("bill@") => ns(b"Ztry later"),
        Script::DieAfterPackage => Vec::new(),
        _ => ns(b"Kthanks"),
    };
    let out: Vec<u8> = rcpts.iter().flat_map(reply).collect();
    let _ = s.write_all(&out).await;
}

async fn qmtp_host(scripts: Vec<Script>, got: Packages) -> turmoil::Result {
    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 209);
    let l = TURMOIL.listen(any).await?;
    let mut n = 0;
    loop {
        let (s, _) = l.accept().await?;
        let script = scripts[n.min(scripts.len() - 1)];
        n += 1;
        tokio::spawn(qmtp_session(s, script, got.clone()));
    }
}

struct Outcome {
    packages: Vec<Vec<String>>,
    smtp: Arc<Mutex<PeerLog>>,
    lines: Vec<String>,
}

/// joe sends one message to bill and ann at far.example, routed by qmtproutes to the peer;
/// `qmtp`: the QMTP server's scripts (`None`: nothing listens on 209).
fn run(qmtp: Option<Vec<Script>>, secs: u64) -> Outcome {
    let img = image(&[("qmtproutes", "far.example:mx.far.example\n")], &[]);
    let w = World::new(img, 0);
    let rcpts = ["bill@far.example", "ann@far.example"];
    w.inject("joe@heaven.af.mil", &rcpts, "Subject: q\n\nx\n");
    let img = w.env.sim_fs().crash_image(&Persist::All);
    let disk = Disk::with_image(img, sim::fs::Clock::new(EPOCH_MS));
    disk.arm(Faults::default());
    let mut sim = turmoil::Builder::new()
        .epoch(std::time::UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .tick_duration(Duration::from_millis(100))
        .simulation_duration(Duration::from_secs(secs + 60))
        .rng_seed(7)
        .build();
    let smtp = Arc::new(Mutex::new(PeerLog::default()));
    let packages = Packages::default();
    let (s, p) = (smtp.clone(), packages.clone());
    sim.host("peer", move || {
        let (s, p, q) = (s.clone(), p.clone(), qmtp.clone());
        async move {
            match q {
                Some(q) => {
                    let both = tokio::join!(peer_host(vec![Peer::Accept], s), qmtp_host(q, p));
                    both.0.and(both.1)
                }
                None => peer_host(vec![Peer::Accept], s).await,
            }
        }
    });
    sim.host("dns", dns_host);
    let host = MtaHost::new("mta", disk, 7, true);
    host.install(&mut sim);
    while sim.elapsed() < Duration::from_secs(secs) {
        sim.step().unwrap();
        host.tend(&mut sim, || Persist::Synced);
    }
    let lines = host.lines.lock().unwrap().clone();
    let packages = packages.lock().unwrap().clone();
    Outcome {
        packages,
        smtp,
        lines,
    }
}

fn both() -> Vec<String> {
    vec!["bill@far.example".into(), "ann@far.example".into()]
}

#[test]
fn one_package_for_both_recipients_then_the_deferred_one_alone() {
    let o = run(Some(vec![Script::KForBill, Script::Accept]), 900);
    assert_eq!(o.packages, [both(), vec!["ann@far.example".to_string()]]);
    assert_eq!(o.smtp.lock().unwrap().connections, 0, "no SMTP");
    let l = o.lines.join("\n");
    assert_eq!(l.matches("accepted_message_over_QMTP").count(), 2, "{l}");
    assert!(l.contains("deferral: Remote_host_"), "{l}");
}

#[test]
fn a_package_cut_off_after_sending_is_retried_over_qmtp_not_smtp() {
    let o = run(Some(vec![Script::DieAfterPackage, Script::Accept]), 900);
    assert_eq!(o.packages, [both(), both()]);
    assert_eq!(o.smtp.lock().unwrap().connections, 0, "no SMTP copy");
    let l = o.lines.join("\n");
    assert!(l.contains("over_QMTP_but_the_connection_died."), "{l}");
    assert_eq!(l.matches("accepted_message_over_QMTP").count(), 2, "{l}");
}

#[test]
fn no_qmtp_listener_means_smtp() {
    let o = run(None, 300);
    assert!(o.packages.is_empty());
    let smtp = o.smtp.lock().unwrap();
    assert_eq!(smtp.accepted.len(), 2, "both recipients over SMTP");
}
