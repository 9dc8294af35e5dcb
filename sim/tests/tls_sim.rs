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
