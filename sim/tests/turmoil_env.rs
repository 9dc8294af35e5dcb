//! The simulated env on turmoil: UDP between hosts and a clock that follows simulated time.
//! (Crashing whole MTA hosts is the job of the receive, remote and swarm worlds, which boot
//! `mta run`'s start-up path.)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use mta::env::{Env, Net, Udp};
use sim::env::SimEnv;
use sim::fs::{Clock, SimFs};

const EPOCH_MS: u64 = sim::crash::T0_MS;

#[test]
fn udp_over_the_simulated_network() {
    let mut sim = turmoil::Builder::new().build();
    sim.host("server", || async {
        let u = sim::env::TURMOIL
            .bind_udp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 53))
            .await?;
        let mut buf = [0u8; 512];
        loop {
            let (n, from) = u.recv_from(&mut buf).await?;
            u.send_to(&buf[..n], from).await?;
        }
    });
    sim.client("c", async {
        let u = sim::env::TURMOIL
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
        Ok(())
    });
    sim.run().unwrap();
}
