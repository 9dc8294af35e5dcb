//! The SMTP receiver inside the simulator: the conformance dialogues over turmoil's network,
//! and crashes at every filesystem operation while messages are being committed.

use std::time::Duration;

use conformance::{fixtures, Dialogue, Match};
use sim::fs::Persist;
use sim::host::MtaHost;
use sim::receive::{self, installation, EPOCH_MS, PORT};
use sim::world::Disk;

/// Message ids and times in `250 ok <time> qp <id>` vary with the seed and the clock.
fn redact(t: &str) -> String {
    t.lines()
        .map(|l| match l.strip_prefix("S: 250 ok ") {
            Some(_) => "S: 250 ok [time] qp [id]".to_string(),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Play every dialogue of `fixtures/DIR` over the simulated network against an MTA with the
/// controls of `fixtures/smtp/control` plus `extra` (name, fixture file); snapshots named
/// `PREFIX-NAME`.
fn play_all(dir: &'static str, extra: &[(&str, &str)], prefix: &'static str) {
    let ctl = fixtures().join("smtp/control");
    let mut files: Vec<(String, String)> =
        ["me", "rcpthosts", "locals", "badmailfrom", "databytes"]
            .iter()
            .map(|f| (f.to_string(), std::fs::read_to_string(ctl.join(f)).unwrap()))
            .collect();
    for (name, from) in extra {
        let text = std::fs::read_to_string(fixtures().join(from)).unwrap();
        files.push((name.to_string(), text));
    }
    let controls: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let clock = sim::fs::Clock::new(EPOCH_MS);
    let disk = Disk::with_image(installation(&controls), clock);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(600))
        .build();
    MtaHost::new("mta", disk.clone(), 1, false).install(&mut sim);
    sim.client("client", async move {
        let to = std::net::SocketAddr::new(turmoil::lookup("mta"), PORT);
        for d in Dialogue::load_dir(&fixtures().join(dir)).unwrap() {
            let s = turmoil::net::TcpStream::connect(to).await?;
            match conformance::run(s, &d, Match::Text, Duration::from_secs(30)).await {
                Ok(t) => insta::assert_snapshot!(format!("{prefix}-{}", d.name), redact(&t)),
                Err(e) => panic!("{e}"),
            }
        }
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn every_conformance_dialogue_over_the_simulated_network() {
    play_all("smtp", &[], "dialogue");
}

/// The STARTTLS and AUTH dialogues (fixtures/smtp-tls): TLS over the simulated network.
#[test]
fn every_tls_dialogue_over_the_simulated_network() {
    let extra = [
        ("servercert.pem", "tls/servercert.pem"),
        ("passwd", "smtp-tls/passwd"),
    ];
    play_all("smtp-tls", &extra, "tls-dialogue");
}

#[test]
fn crash_at_every_fs_operation_while_receiving_loses_no_acknowledged_message() {
    let c = receive::crash_mid_receive(4, mta::smtpd::SPOOL_THRESHOLD, 5);
    println!(
        "{} crash points, {} runs; {} messages accepted but unacknowledged (complete)",
        c.crash_points, c.runs, c.unacked_kept
    );
    assert!(
        c.crash_points >= 8,
        "each commit is at least a write and an fsync"
    );
    assert!(c.violations.is_empty(), "{:#?}", c.violations);
}

#[test]
fn same_seed_same_world() {
    let a = receive::run(3, Some(25), Persist::All, 9);
    let b = receive::run(3, Some(25), Persist::All, 9);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.stored, b.stored);
    assert_eq!(a.boots, b.boots);
}

#[test]
fn full_disk_answers_451_and_queues_nothing_half_written() {
    // Capacity for the installation and recovery, not for messages: every commit fails
    // until the disk is healed after the client has seen refusals.
    for seed in [2, 3, 4] {
        let bad = receive::disk_full(seed);
        assert!(bad.is_empty(), "seed {seed}: {bad:?}");
    }
}

#[test]
fn host_name_rules_use_confirmed_ptr_names() {
    use std::sync::Arc;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let clock = sim::fs::Clock::new(EPOCH_MS);
    let img = installation(&[(
        "smtp.rules",
        "=trusted.example:allow,RELAYCLIENT=\"\"\n:allow\n",
    )]);
    let disk = Disk::with_image(img, clock);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(60))
        .build();
    sim.host("dns", || async {
        let mut z = sim::dns_server::Zone::default();
        let trusted = turmoil::lookup("trusted");
        z.ptr(trusted, "trusted.example")
            .ip("trusted.example", trusted);
        // A PTR that does not point back is not believed.
        let liar = turmoil::lookup("liar");
        z.ptr(liar, "trusted.example");
        let z = Arc::new(z);
        let any =
            std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 53);
        let udp = mta::env::Net::bind_udp(&sim::env::TURMOIL, any).await?;
        let tcp = mta::env::Net::listen(&sim::env::TURMOIL, any).await?;
        tokio::spawn(sim::dns_server::serve_udp(udp, z.clone()));
        sim::dns_server::serve_tcp(tcp, z).await;
        Ok(())
    });
    MtaHost::new("mta", disk.clone(), 1, true).install(&mut sim);
    for (name, want) in [("trusted", "250 ok"), ("liar", "553 ")] {
        sim.client(name, async move {
            let to = std::net::SocketAddr::new(turmoil::lookup("mta"), PORT);
            let mut r = BufReader::new(turmoil::net::TcpStream::connect(to).await?);
            let mut line = String::new();
            r.read_line(&mut line).await?;
            r.get_mut()
                .write_all(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bill@irs.gov>\r\n")
                .await?;
            line.clear();
            r.read_line(&mut line).await?;
            line.clear();
            r.read_line(&mut line).await?;
            assert!(line.starts_with(want), "{name}: {line}");
            Ok(())
        });
    }
    sim.run().unwrap();
}

#[test]
fn a_failed_fsync_at_any_operation_loses_no_acknowledged_message() {
    let c = receive::failed_fsyncs(3, 7);
    assert!(c.runs >= 10, "{} runs", c.runs);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

/// Whole-command and whole-DATA deadlines run on the environment's clock: in the simulator,
/// turmoil's. Clients trickle one byte per simulated second (every read in time for a 5 s
/// `timeoutsmtpd`) and are cut at the 5 s deadline of their command or message.
#[test]
fn trickling_clients_are_cut_at_the_deadline_in_simulated_time() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let clock = sim::fs::Clock::new(EPOCH_MS);
    let disk = Disk::with_image(
        installation(&[("timeoutsmtpd", "5\n"), ("timeoutdata", "5\n")]),
        clock,
    );
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(120))
        .build();
    MtaHost::new("mta", disk, 1, false).install(&mut sim);
    let cases: [(&str, &[u8], &str); 2] = [
        ("command", b"", "421 command not received in time"),
        (
            "data",
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<fred@heaven.af.mil>\r\nDATA\r\n",
            "421 message arriving too slowly",
        ),
    ];
    for (name, setup, want) in cases {
        sim.client(name, async move {
            let to = std::net::SocketAddr::new(turmoil::lookup("mta"), PORT);
            let mut r = BufReader::new(turmoil::net::TcpStream::connect(to).await?);
            let mut line = String::new();
            r.read_line(&mut line).await?;
            r.get_mut().write_all(setup).await?;
            // The replies to the setup (pipelined), up to the 354.
            for _ in 0..setup.iter().filter(|&&b| b == b'\n').count() {
                line.clear();
                r.read_line(&mut line).await?;
            }
            let t0 = turmoil::sim_elapsed().unwrap();
            let (rd, mut wr) = tokio::io::split(r);
            let mut rd = BufReader::new(rd);
            let trickle = async move {
                for _ in 0..60 {
                    if wr.write_all(b"x").await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            };
            line.clear();
            let got = tokio::select! {
                r = rd.read_line(&mut line) => r.map(|_| line.clone()),
                () = trickle => Ok("trickle never cut".into()),
            }?;
            let took = turmoil::sim_elapsed().unwrap() - t0;
            assert!(got.starts_with(want), "{name}: {got:?}");
            assert!(
                took >= Duration::from_secs(4) && took <= Duration::from_secs(6),
                "{name}: cut after {took:?}"
            );
            Ok(())
        });
    }
    sim.run().unwrap();
}
