//! A blocking SMTP client that can say anything: raw bytes, any source address on loopback,
//! and replies read as events (a line, EOF or a reset), each read bounded by a timeout.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

/// Longest wait for any single reply: far above any deadline the rows provoke.
pub const REPLY_WAIT: Duration = Duration::from_secs(30);

/// Connect to `to`, from `src` when given (any 127.0.0.0/8 address works on Linux).
pub fn connect(to: SocketAddr, src: Option<IpAddr>) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    if let Some(ip) = src {
        s.bind(&SocketAddr::new(ip, 0).into())?;
    }
    s.connect_timeout(&to.into(), Duration::from_secs(10))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(REPLY_WAIT))?;
    s.set_write_timeout(Some(REPLY_WAIT))?;
    Ok(s)
}

pub struct Client {
    pub w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    /// Connect without reading the greeting.
    pub fn raw(to: SocketAddr, src: Option<IpAddr>) -> io::Result<Client> {
        let w = connect(to, src)?;
        let r = BufReader::new(w.try_clone()?);
        Ok(Client { w, r })
    }

    /// Connect and read the greeting; the greeting is returned too.
    pub fn open(to: SocketAddr, src: Option<IpAddr>) -> io::Result<(Client, String)> {
        let mut c = Client::raw(to, src)?;
        let g = c.reply();
        Ok((c, g))
    }

    /// Write bytes; a failed write is not an error for a hostile client (the server may have
    /// closed), the next reply will tell.
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.w.write_all(bytes);
    }

    /// One command line (CRLF appended) and its reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Raw bytes and the reply that follows.
    pub fn cmd_raw(&mut self, bytes: &[u8]) -> String {
        self.send(bytes);
        self.reply()
    }

    /// One reply, all its lines joined with " / "; `closed`, `reset` or `no reply` instead
    /// when the connection ends or nothing comes within [`REPLY_WAIT`].
    pub fn reply(&mut self) -> String {
        let mut all: Vec<String> = Vec::new();
        loop {
            let mut line = Vec::new();
            match self.r.read_until(b'\n', &mut line) {
                Ok(0) if all.is_empty() => return "closed".into(),
                Ok(0) => return all.join(" / "),
                Ok(_) => {}
                Err(e) if all.is_empty() => return describe(&e),
                Err(_) => return all.join(" / "),
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            let more = line.get(3) == Some(&b'-');
            all.push(text);
            if !more {
                return all.join(" / ");
            }
        }
    }

    /// Read replies until EOF (bounded by `max`); what came, then how it ended.
    pub fn drain(&mut self, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..max {
            let r = self.reply();
            let end = r == "closed" || r.starts_with("reset") || r.starts_with("no reply");
            out.push(r);
            if end {
                break;
            }
        }
        out
    }

    /// After a hostile command: RSET until `250 flushed` comes back, so the next command's
    /// reply is its own (bounded; false when the session is gone).
    pub fn resync(&mut self) -> bool {
        self.send(b"RSET\r\n");
        for _ in 0..20 {
            let r = self.reply();
            if r.starts_with("250 flushed") {
                return true;
            }
            if r == "closed" || r.starts_with("reset") || r.starts_with("no reply") {
                return false;
            }
        }
        false
    }

    pub fn shutdown_write(&self) {
        let _ = self.w.shutdown(Shutdown::Write);
    }

    /// Read and discard whatever the server sends until EOF (bounded by the read timeout).
    pub fn until_eof(&mut self) -> String {
        let mut buf = Vec::new();
        match self.r.read_to_end(&mut buf) {
            Ok(_) => "closed".into(),
            Err(e) => describe(&e),
        }
    }
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "no reply (30 s)".into(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => "reset".into(),
        _ => format!("reset ({e})"),
    }
}

/// "N × 250 ok, M × 502 ..." for a list of replies, in first-seen order.
pub fn tally(replies: &[String]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for r in replies {
        match counts.iter_mut().find(|(k, _)| k == r) {
            Some((_, n)) => *n += 1,
            None => counts.push((r.clone(), 1)),
        }
    }
    counts
        .iter()
        .map(|(k, n)| {
            if *n == 1 {
                k.clone()
            } else {
                format!("{n} × {k}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
