//! STARTTLS and AUTH inside the simulator: rustls over turmoil's streams, against a simulated
//! host booted by `mta::daemon::run` like every other (the certificate and the password file
//! are control files on its simulated disk).

use std::time::Duration;

use sim::host::MtaHost;
use sim::receive::{installation, EPOCH_MS, PORT};
use sim::world::Disk;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Read one whole reply.
async fn reply<S: AsyncRead + Unpin>(r: &mut BufReader<S>) -> Result<String> {
    let mut all = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).await? == 0 {
            return Ok(all);
        }
        all.push_str(&l);
        if l.as_bytes().get(3) != Some(&b'-') {
            return Ok(all);
        }
    }
}

async fn say<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    line: &str,
) -> Result<String> {
    s.get_mut().write_all(line.as_bytes()).await?;
    s.get_mut().flush().await?;
    reply(s).await
}

/// Connect, EHLO, then STARTTLS with `after` written in the same packet; the stream once
/// the server said 220.
async fn to_starttls(after: &str) -> Result<BufReader<turmoil::net::TcpStream>> {
    let to = std::net::SocketAddr::new(turmoil::lookup("mta"), PORT);
    let mut s = BufReader::new(turmoil::net::TcpStream::connect(to).await?);
    assert!(reply(&mut s).await?.starts_with("220 "));
    let ehlo = say(&mut s, "EHLO c.example\r\n").await?;
    assert!(
        ehlo.contains("250-STARTTLS\r\n") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(
        say(&mut s, &format!("STARTTLS\r\n{after}")).await?,
        "220 ready to start TLS\r\n"
    );
    Ok(s)
}

async fn handshake(
    s: turmoil::net::TcpStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<turmoil::net::TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(mta::tls::client_config(None));
    let name = "heaven.af.mil".try_into().expect("name");
    connector.connect(name, s).await
}

async fn dialogue() -> Result<()> {
    // A handshake that fails (plain text after 220) ends that session only.
    let mut s = to_starttls("").await?;
    s.get_mut().write_all(b"EHLO plain.example\r\n").await?;
    let rest = reply(&mut s).await?;
    assert!(!rest.contains("250"), "answered in the clear: {rest}");

    // Commands pipelined after STARTTLS are discarded, then AUTH and relaying inside TLS.
    let s = to_starttls("MAIL FROM:<evil@x.example>\r\n").await?;
    let mut t = BufReader::new(handshake(s.into_inner()).await?);
    let r = say(&mut t, "RCPT TO:<fred@heaven.af.mil>\r\n").await?;
    assert_eq!(r, "503 MAIL first (#5.5.1)\r\n", "injected MAIL ran");
    let ehlo = say(&mut t, "EHLO c.example\r\n").await?;
    assert!(ehlo.contains("250-AUTH LOGIN PLAIN\r\n"), "{ehlo}");
    say(&mut t, "MAIL FROM:<fred@heaven.af.mil>\r\n").await?;
    assert!(say(&mut t, "RCPT TO:<bill@far.example>\r\n")
        .await?
        .starts_with("553 "));
    say(&mut t, "RSET\r\n").await?;
    // "\0fred\0wrong", then "\0fred\0secret"
    assert!(say(&mut t, "AUTH PLAIN AGZyZWQAd3Jvbmc=\r\n")
        .await?
        .starts_with("535 "));
    assert!(say(&mut t, "AUTH PLAIN AGZyZWQAc2VjcmV0\r\n")
        .await?
        .starts_with("235 "));
    say(&mut t, "MAIL FROM:<fred@heaven.af.mil>\r\n").await?;
    assert_eq!(
        say(&mut t, "RCPT TO:<bill@far.example>\r\n").await?,
        "250 ok\r\n"
    );
    assert!(say(&mut t, "DATA\r\n").await?.starts_with("354"));
    let done = say(&mut t, "Subject: tls\r\n\r\nover simulated TLS\r\n.\r\n").await?;
    assert!(done.starts_with("250 ok "), "{done}");
    assert_eq!(say(&mut t, "QUIT\r\n").await?, "221 heaven.af.mil\r\n");
    Ok(())
}

#[test]
fn starttls_and_auth_over_the_simulated_network() {
    let cert = mta::tls::self_signed("heaven.af.mil").unwrap();
    let passwd = format!("fred:{}\n", mta::passwd::hash(b"secret", [1; 16]).unwrap());
    let controls = [
        ("servercert.pem", cert.as_str()),
        ("passwd", passwd.as_str()),
    ];
    let clock = sim::fs::Clock::new(EPOCH_MS);
    let disk = Disk::with_image(installation(&controls), clock);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(600))
        .build();
    MtaHost::new("mta", disk.clone(), 1, false).install(&mut sim);
    sim.client("client", async {
        dialogue().await.map_err(|e| e.to_string().into())
    });
    sim.run().unwrap();
}

/// Submit one message for fred@relay.example to "mta" over plain SMTP.
async fn submit() -> turmoil::Result {
    let to = std::net::SocketAddr::new(turmoil::lookup("mta"), PORT);
    let mut s = BufReader::new(turmoil::net::TcpStream::connect(to).await?);
    reply(&mut s).await.map_err(|e| e.to_string())?;
    for (cmd, code) in [
        ("HELO c.example\r\n", "250"),
        ("MAIL FROM:<joe@heaven.af.mil>\r\n", "250"),
        ("RCPT TO:<fred@relay.example>\r\n", "250"),
        ("DATA\r\n", "354"),
        (
            "Subject: tls\r\n\r\nbetween simulated hosts\r\n.\r\n",
            "250",
        ),
    ] {
        let r = say(&mut s, cmd).await.map_err(|e| e.to_string())?;
        assert!(r.starts_with(code), "{cmd:?}: {r}");
    }
    Ok(())
}

/// "mta" relays to relay.example's MX "mta2" (another simulated `mta run`) with TLS required
/// by tlsdestinations; `cert`: whether mta2 has a certificate. Returns fred's mail on mta2
/// and mta's log lines after `secs` simulated seconds.
fn relay_world(cert: bool, secs: u64) -> (Vec<String>, Vec<String>) {
    use sim::fixture::image;
    let pem = mta::tls::self_signed("mx.relay.example").unwrap();
    let mut relay = vec![
        ("me", "relay.example"),
        ("locals", "relay.example"),
        ("rcpthosts", "relay.example"),
    ];
    if cert {
        relay.push(("servercert.pem", pem.as_str()));
    }
    let sender = image(
        &[
            ("rcpthosts", "heaven.af.mil\nrelay.example\n"),
            ("tlsdestinations", "relay.example\n"),
        ],
        &[],
    );
    let clock = || sim::fs::Clock::new(EPOCH_MS);
    let disk2 = Disk::with_image(image(&relay, &[]), clock());
    let mut sim = turmoil::Builder::new()
        .epoch(std::time::UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .tick_duration(Duration::from_millis(100))
        .simulation_duration(Duration::from_secs(secs + 60))
        .rng_seed(5)
        .build();
    sim.host("dns", sim::remote_world::dns_host);
    let host = MtaHost::new("mta", Disk::with_image(sender, clock()), 5, true);
    host.install(&mut sim);
    MtaHost::new("mta2", disk2.clone(), 6, true).install(&mut sim);
    sim.client("client", submit());
    while sim.elapsed() < Duration::from_secs(secs) {
        sim.step().unwrap();
    }
    let img = disk2
        .live()
        .map_or_else(|| disk2.image(), |fs| fs.live_image());
    let mail = sim::deliver::World::new(img, 0).maildir("home/fred/Maildir");
    let lines = host.lines.lock().unwrap().clone();
    (mail, lines)
}

#[test]
fn remote_delivery_between_simulated_hosts_needs_starttls() {
    let (mail, _) = relay_world(true, 60);
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert!(
        mail[0].contains("by relay.example with ESMTPS;"),
        "{}",
        mail[0]
    );
    // mta2 without a certificate: no STARTTLS offered, so the delivery is deferred.
    let (mail, lines) = relay_world(false, 60);
    assert!(mail.is_empty(), "{mail:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("deferral") && l.contains("does_not_offer_STARTTLS")),
        "{lines:#?}"
    );
}
