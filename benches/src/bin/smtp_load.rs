//! SMTP load generator: C concurrent connections, each sending M messages (one transaction at
//! a time, pipelined MAIL/RCPT/DATA), or holding idle connections open. Prints one JSON line.
//! Targets only the address given (loopback in our scripts).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Conn = BufReader<Box<dyn Io>>;

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    server: SocketAddr,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    #[arg(long, default_value_t = 100)]
    messages: usize,
    #[arg(long, default_value_t = 2048)]
    size: usize,
    #[arg(long, default_value = "fred@heaven.af.mil")]
    rcpt: String,
    /// Instead of sending: open this many idle connections, hold them for --hold seconds.
    #[arg(long)]
    idle: Option<usize>,
    #[arg(long, default_value_t = 5)]
    hold: u64,
    /// STARTTLS after the first EHLO (any certificate accepted), then EHLO again.
    #[arg(long)]
    starttls: bool,
    /// TLS from the first byte (an implicit-TLS listener).
    #[arg(long, conflicts_with = "starttls")]
    tlsc: bool,
}

async fn tls(s: Box<dyn Io>) -> std::io::Result<Box<dyn Io>> {
    let connector = tokio_rustls::TlsConnector::from(mta::tls::client_config(None));
    let name = "load.example".try_into().expect("name");
    Ok(Box::new(connector.connect(name, s).await?))
}

/// Connect, read the greeting and say EHLO, through TLS as asked.
async fn open(cli: &Cli) -> std::io::Result<Conn> {
    let tcp = TcpStream::connect(cli.server).await?;
    tcp.set_nodelay(true)?;
    let mut s: Box<dyn Io> = Box::new(tcp);
    if cli.tlsc {
        s = tls(s).await?;
    }
    let mut r = BufReader::new(s);
    reply(&mut r).await?;
    r.get_mut().write_all(b"EHLO load.example\r\n").await?;
    r.get_mut().flush().await?;
    reply(&mut r).await?;
    if cli.starttls {
        r.get_mut().write_all(b"STARTTLS\r\n").await?;
        r.get_mut().flush().await?;
        if !reply(&mut r).await?.starts_with("220") {
            return Err(std::io::Error::other("STARTTLS refused"));
        }
        r = BufReader::new(tls(r.into_inner()).await?);
        r.get_mut().write_all(b"EHLO load.example\r\n").await?;
        r.get_mut().flush().await?;
        reply(&mut r).await?;
    }
    Ok(r)
}

async fn reply(r: &mut Conn) -> std::io::Result<String> {
    let mut all = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        all.push_str(&l);
        if l.as_bytes().get(3) != Some(&b'-') {
            return Ok(all);
        }
    }
}

async fn client(cli: &Cli, body: &str) -> std::io::Result<usize> {
    let mut r = open(cli).await?;
    let mut ok = 0;
    let tx = format!(
        "MAIL FROM:<load@example.net>\r\nRCPT TO:<{}>\r\nDATA\r\n",
        cli.rcpt
    );
    for _ in 0..cli.messages {
        r.get_mut().write_all(tx.as_bytes()).await?;
        r.get_mut().flush().await?;
        for _ in 0..3 {
            reply(&mut r).await?;
        }
        r.get_mut().write_all(body.as_bytes()).await?;
        r.get_mut().flush().await?;
        if reply(&mut r).await?.starts_with("250") {
            ok += 1;
        }
    }
    r.get_mut().write_all(b"QUIT\r\n").await?;
    r.get_mut().flush().await?;
    Ok(ok)
}

#[tokio::main]
async fn main() {
    let cli: &'static Cli = Box::leak(Box::new(Cli::parse()));
    if let Some(n) = cli.idle {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let s: Box<dyn Io> = Box::new(TcpStream::connect(cli.server).await.expect("connect"));
            let mut r = BufReader::new(s);
            reply(&mut r).await.expect("greeting");
            conns.push(r);
        }
        println!("{{\"idle\":{n}}}");
        tokio::time::sleep(Duration::from_secs(cli.hold)).await;
        return;
    }
    let mut body = String::from("Subject: load\r\n\r\n");
    while body.len() < cli.size {
        body.push_str("The quick brown fox jumps over the lazy dog. 0123456789\r\n");
    }
    body.push_str(".\r\n");
    let body: &'static str = Box::leak(body.into_boxed_str());
    let t = Instant::now();
    let tasks: Vec<_> = (0..cli.connections)
        .map(|_| tokio::spawn(client(cli, body)))
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.expect("task").expect("client");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{{\"connections\":{},\"messages\":{ok},\"seconds\":{secs:.3},\"rate\":{:.1}}}",
        cli.connections,
        ok as f64 / secs
    );
}
