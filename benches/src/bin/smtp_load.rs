//! SMTP load generator: C concurrent connections, each sending M messages (one transaction at
//! a time, pipelined MAIL/RCPT/DATA), or holding idle connections open. Prints one JSON line.
//! Targets only the address given (loopback in our scripts).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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
}

async fn reply(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
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
    let mut r = BufReader::new(TcpStream::connect(cli.server).await?);
    r.get_mut().set_nodelay(true)?;
    reply(&mut r).await?;
    r.get_mut().write_all(b"EHLO load.example\r\n").await?;
    reply(&mut r).await?;
    let mut ok = 0;
    let tx = format!(
        "MAIL FROM:<load@example.net>\r\nRCPT TO:<{}>\r\nDATA\r\n",
        cli.rcpt
    );
    for _ in 0..cli.messages {
        r.get_mut().write_all(tx.as_bytes()).await?;
        for _ in 0..3 {
            reply(&mut r).await?;
        }
        r.get_mut().write_all(body.as_bytes()).await?;
        if reply(&mut r).await?.starts_with("250") {
            ok += 1;
        }
    }
    r.get_mut().write_all(b"QUIT\r\n").await?;
    Ok(ok)
}

#[tokio::main]
async fn main() {
    let cli: &'static Cli = Box::leak(Box::new(Cli::parse()));
    if let Some(n) = cli.idle {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let mut r = BufReader::new(TcpStream::connect(cli.server).await.expect("connect"));
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
