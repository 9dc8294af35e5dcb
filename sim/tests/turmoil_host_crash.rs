//! The simulated env on turmoil: a host receives messages over simulated TCP and commits them
//! to its queue; it is crashed at an exact filesystem operation and restarted from what reached
//! its disk. Every message the client saw acknowledged must survive.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use mta::env::{Env, Listener, Net, Udp};
use mta::queue::{Config, NewMessage, Paths, Queue};
use sim::env::SimEnv;
use sim::fs::{Clock, Faults, Persist, SimFs};
use sim::lifecycle::classifier;
use sim::world::Disk;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const EPOCH_MS: u64 = sim::crash::T0_MS;
const PORT: u16 = 2525;
const MESSAGES: usize = 6;

fn body(i: usize) -> Vec<u8> {
    format!("Subject: {i}\n\nmessage number {i}\0\n").into_bytes()
}

/// The host: one queue, a listener, messages framed as `<len>\n<bytes>`, `OK <id>` replies.
async fn mta_host(disk: Disk, seed: u64) -> turmoil::Result {
    let fs = disk.boot();
    // A rebooted machine does not replay its randomness.
    let env = SimEnv::turmoil(
        fs,
        disk.clock().clone(),
        EPOCH_MS,
        seed ^ u64::from(disk.boots()) << 32,
    );
    let paths = Paths::new("/mta/queue");
    let rw = classifier();
    let Ok((mut q, _)) = Queue::open(env.clone(), paths, Config::default(), &rw) else {
        // The fs froze during recovery: wait to be crashed.
        return std::future::pending().await;
    };
    let l = env
        .net()
        .listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT))
        .await?;
    loop {
        let (s, _) = l.accept().await?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        while r.read_line(&mut line).await? > 0 {
            let n: usize = line.trim().parse()?;
            let mut data = vec![0; n];
            r.read_exact(&mut data).await?;
            line.clear();
            let m = NewMessage {
                sender: "client@example.net".into(),
                recipients: vec!["fred".into()],
                data,
                qp: 1,
                uid: 1,
            };
            match q.submit(vec![m], &rw) {
                Ok(ids) => {
                    r.get_mut()
                        .write_all(format!("OK {}\n", ids[0]).as_bytes())
                        .await?
                }
                Err(_) => return std::future::pending().await,
            }
        }
    }
}

/// Run the world with the host crashing after fs op `crash_after` of its first boot.
/// Returns (acknowledged bodies, bodies in the final queue, boots).
fn run(crash_after: Option<u64>, persist: Persist, seed: u64) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, u32) {
    let clock = Clock::new(EPOCH_MS);
    let disk = Disk::new(clock.clone());
    disk.arm(Faults {
        crash_after,
        ..Faults::default()
    });
    let mut sim = turmoil::Builder::new()
        .epoch(std::time::UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .simulation_duration(Duration::from_secs(120))
        .rng_seed(seed)
        .build();
    let d = disk.clone();
    sim.host("mta", move || mta_host(d.clone(), seed));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let a = acked.clone();
    sim.client("client", async move {
        let to = SocketAddr::new(turmoil::lookup("mta"), PORT);
        let net = sim::env::SimNet;
        let mut i = 0;
        while i < MESSAGES {
            let Ok(mut s) = net.connect(to).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            while i < MESSAGES {
                let b = body(i);
                let sent = async {
                    s.write_all(format!("{}\n", b.len()).as_bytes()).await?;
                    s.write_all(&b).await?;
                    let mut reply = [0u8; 64];
                    let n = s.read(&mut reply).await?;
                    Ok::<bool, std::io::Error>(reply[..n].starts_with(b"OK "))
                };
                match tokio::time::timeout(Duration::from_secs(2), sent).await {
                    Ok(Ok(true)) => {
                        a.lock().unwrap().push(b);
                        i += 1;
                    }
                    _ => break, // reconnect and resend: at least once
                }
            }
        }
        Ok(())
    });
    loop {
        let done = sim.step().expect("simulation step");
        if disk.frozen() {
            sim.crash("mta");
            disk.crash(&persist);
            sim.bounce("mta");
        }
        if done {
            break;
        }
    }
    // A crash in the last step leaves no mounted disk: use what the next boot would find.
    let image = disk
        .live()
        .map_or_else(|| disk.image(), |fs| fs.live_image());
    let env = SimEnv::manual(SimFs::from_image(image, clock.clone()), clock, 0);
    drop(sim);
    let (mut q, _) = Queue::open(
        env,
        Paths::new("/mta/queue"),
        Config::default(),
        &classifier(),
    )
    .expect("final recovery");
    let ids: Vec<_> = q.messages().map(|m| m.id()).collect();
    let stored = ids.into_iter().map(|id| q.read_data(id).unwrap()).collect();
    let acked = acked.lock().unwrap().clone();
    (acked, stored, disk.boots())
}

#[test]
fn crash_free_run_delivers_everything_once() {
    let (acked, stored, boots) = run(None, Persist::Synced, 1);
    assert_eq!(acked.len(), MESSAGES);
    assert_eq!(stored.len(), MESSAGES);
    assert_eq!(boots, 1);
}

#[test]
fn host_crash_at_every_fs_operation_loses_no_acknowledged_message() {
    // Crash points cover queue creation, recovery, and the first several commits.
    let mut checked = 0;
    for n in 1..=24 {
        for p in [
            Persist::Synced,
            Persist::All,
            Persist::AllBut(0),
            Persist::TornLastWrite,
        ] {
            let (acked, stored, boots) = run(Some(n), p.clone(), n);
            assert_eq!(acked.len(), MESSAGES, "crash {n} {p:?}: client finished");
            assert!(boots >= 2, "crash {n}: the host was restarted");
            for b in &acked {
                assert!(
                    stored.contains(b),
                    "crash {n} {p:?}: acknowledged message lost"
                );
            }
            for s in &stored {
                assert!(
                    (0..MESSAGES).any(|i| &body(i) == s),
                    "crash {n} {p:?}: invented or corrupted message"
                );
            }
            checked += 1;
        }
    }
    println!("{checked} crash/restart runs checked");
}

#[test]
fn udp_over_the_simulated_network() {
    let mut sim = turmoil::Builder::new().build();
    sim.host("server", || async {
        let u = sim::env::SimNet
            .bind_udp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 53))
            .await?;
        let mut buf = [0u8; 512];
        loop {
            let (n, from) = u.recv_from(&mut buf).await?;
            u.send_to(&buf[..n], from).await?;
        }
    });
    sim.client("c", async {
        let u = sim::env::SimNet
            .bind_udp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
            .await?;
        u.send_to(b"ping", SocketAddr::new(turmoil::lookup("server"), 53))
            .await?;
        let mut buf = [0u8; 16];
        let (n, _) = u.recv_from(&mut buf).await?;
        assert_eq!(&buf[..n], b"ping");
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn clock_follows_simulated_time() {
    let mut sim = turmoil::Builder::new().build();
    sim.client("c", async {
        let clock = Clock::new(EPOCH_MS);
        let env = SimEnv::turmoil(SimFs::new(clock.clone()), clock, EPOCH_MS, 1);
        let t0 = env.now();
        env.sleep(Duration::from_secs(3)).await;
        let dt = env.now().duration_since(t0).unwrap();
        assert!(
            dt >= Duration::from_secs(3) && dt < Duration::from_secs(4),
            "{dt:?}"
        );
        let _ = Path::new("/");
        Ok(())
    });
    sim.run().unwrap();
}
