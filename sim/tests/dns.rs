//! The stub resolver against a real DNS server (wire format), on loopback and in turmoil:
//! preference order, giant answers through the TCP fallback, NXDOMAIN, SERVFAIL, timeouts,
//! CNAME chains and loops.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mta::dns::Resolver;
use mta::env::real::RealEnv;
use mta::env::{Env, Listener, Net};
use mta::remote::{DnsError, Resolve};
use sim::dns_server::{serve_tcp, serve_udp, Answer, Zone};

const GIANT: usize = 1000;

fn zone() -> Zone {
    let mut z = Zone::default();
    z.mx("irs.gov", 20, "mx2.irs.gov")
        .mx("irs.gov", 10, "mx1.irs.gov")
        .ip("mx1.irs.gov", "10.1.0.1".parse().unwrap())
        .ip("mx1.irs.gov", "fd00::1".parse().unwrap())
        .ip("noaaaa.gov", "10.1.0.9".parse().unwrap())
        .cname("alias.gov", "mx1.irs.gov")
        .cname("loop1.gov", "loop2.gov")
        .cname("loop2.gov", "loop1.gov")
        .fail("broken.gov", Answer::ServFail)
        .fail("silent.gov", Answer::Silent);
    for i in 0..GIANT {
        z.mx(
            "giant.gov",
            (i % 50) as u16,
            &format!("mx{i}.a-fairly-long-host-name.giant.gov"),
        );
    }
    z
}

async fn checks<E: mta::env::Env>(r: &Resolver<E>) {
    let mx = r.mx("irs.gov").await.unwrap();
    let mut sorted = mx.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![
            (10, "mx1.irs.gov".to_string()),
            (20, "mx2.irs.gov".to_string())
        ]
    );
    assert_eq!(
        r.ips("mx1.irs.gov").await.unwrap(),
        vec![
            "10.1.0.1".parse::<IpAddr>().unwrap(),
            "fd00::1".parse().unwrap()
        ]
    );
    assert_eq!(
        r.ips("noaaaa.gov").await.unwrap(),
        vec!["10.1.0.9".parse::<IpAddr>().unwrap()]
    );
    let giant = r.mx("giant.gov").await.unwrap();
    assert_eq!(giant.len(), GIANT, "the whole answer, through TCP");
    assert_eq!(r.mx("nowhere.gov").await, Err(DnsError::NotFound));
    assert_eq!(r.ips("nowhere.gov").await, Err(DnsError::NotFound));
    assert_eq!(
        r.mx("noaaaa.gov").await,
        Ok(vec![]),
        "no MX: the caller falls back to A"
    );
    assert_eq!(r.mx("broken.gov").await, Err(DnsError::Temporary));
    assert_eq!(r.mx("silent.gov").await, Err(DnsError::Temporary));
    assert_eq!(
        r.ips("alias.gov").await.unwrap()[0],
        "10.1.0.1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(r.ips("loop1.gov").await, Err(DnsError::Temporary));
}

#[test]
fn giant_answer_is_over_512_bytes_and_under_64k() {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii("giant.gov.").unwrap(),
        RecordType::MX,
    ));
    let r = zone().respond(&q).unwrap().to_vec().unwrap();
    assert!(r.len() > 512 * 20 && r.len() < 65_535, "{} bytes", r.len());
    assert_eq!(
        Message::from_vec(&r).unwrap().answers.len(),
        GIANT,
        "all records fit in 64 KiB"
    );
}

#[test]
fn resolver_on_loopback() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let env = RealEnv::new();
        let z = Arc::new(zone());
        // One port for both protocols: the TCP port the kernel picks may be taken for UDP by
        // another test, so pick again (a bounded number of times) until both are ours.
        let mut both = None;
        for _ in 0..100 {
            let tcp = env
                .net()
                .listen("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let addr = tcp.local_addr().unwrap();
            if let Ok(udp) = env.net().bind_udp(addr).await {
                both = Some((udp, tcp, addr));
                break;
            }
        }
        let (udp, tcp, addr) = both.expect("a port free for both UDP and TCP");
        tokio::spawn(serve_udp(udp, z.clone()));
        tokio::spawn(serve_tcp(tcp, z));
        let r = Resolver::new(env, vec![addr], Duration::from_millis(300));
        checks(&r).await;
    });
}

#[test]
fn resolver_in_the_simulator() {
    let mut sim = turmoil::Builder::new().build();
    sim.host("dns", || async {
        let z = Arc::new(zone());
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 53);
        let udp = sim::env::TURMOIL.bind_udp(any).await?;
        let tcp = sim::env::TURMOIL.listen(any).await?;
        tokio::spawn(serve_udp(udp, z.clone()));
        serve_tcp(tcp, z).await;
        Ok(())
    });
    sim.client("mta", async {
        let clock = sim::fs::Clock::new(sim::crash::T0_MS);
        let env = sim::env::SimEnv::turmoil(
            sim::fs::SimFs::new(clock.clone()),
            clock,
            sim::crash::T0_MS,
            1,
        );
        let server = SocketAddr::new(turmoil::lookup("dns"), 53);
        let r = Resolver::new(env, vec![server], Duration::from_secs(2));
        checks(&r).await;
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn the_delivery_worlds_giant_zone_fits_in_64k() {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut z = Zone::default();
    for i in 0..sim::remote_world::GIANT_MX {
        z.mx(
            "giant.example",
            100 + i,
            &format!("mx{i}.a-long-name-for-a-big-answer.giant.example"),
        );
    }
    z.mx("giant.example", 1, "best.giant.example");
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii("giant.example.").unwrap(),
        RecordType::MX,
    ));
    let r = z.respond(&q).unwrap().to_vec().unwrap();
    assert!(r.len() > 40_000, "{} bytes", r.len());
    assert_eq!(
        Message::from_vec(&r).unwrap().answers.len(),
        sim::remote_world::GIANT_MX as usize + 1
    );
}
