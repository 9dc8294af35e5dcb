//! The next hop of every outbound delivery (`smtproutes` sends all remote mail here): a
//! scripted SMTP peer that accepts everything and records each transaction's raw DATA bytes
//! up to the first CRLF.CRLF, where a strict server ends it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use super::fixture::tokens;

#[derive(Clone, Debug, Default)]
pub struct Txn {
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
}

pub struct Recorder {
    pub addr: SocketAddr,
    txns: Arc<Mutex<Vec<Txn>>>,
}

impl Recorder {
    pub fn start() -> std::io::Result<Recorder> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        let txns = Arc::new(Mutex::new(Vec::new()));
        let shared = txns.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let t = shared.clone();
                std::thread::spawn(move || {
                    let _ = session(s, &t);
                });
            }
        });
        Ok(Recorder { addr, txns })
    }

    pub fn txns(&self) -> Vec<Txn> {
        self.txns.lock().expect("recorder lock").clone()
    }

    /// Transactions (not bounces) whose data carries `token`.
    pub fn copies(&self, token: &str) -> usize {
        let t = self.txns.lock().expect("recorder lock");
        t.iter()
            .filter(|x| x.from != "<>" && tokens(&x.data).iter().any(|k| k == token))
            .count()
    }
}

fn session(mut s: TcpStream, txns: &Mutex<Vec<Txn>>) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    s.write_all(b"220 recorder ESMTP\r\n")?;
    let mut cur = Txn::default();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let verb = text.get(..4).unwrap_or_default().to_ascii_uppercase();
        match verb.as_str() {
            "MAIL" => cur.from = text.get(10..).unwrap_or_default().to_string(),
            "RCPT" => cur
                .rcpts
                .push(text.get(8..).unwrap_or_default().to_string()),
            "QUIT" => {
                s.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => {}
        }
        if verb != "DATA" {
            s.write_all(b"250 ok\r\n")?;
            continue;
        }
        s.write_all(b"354 go\r\n")?;
        while !cur.data.ends_with(b"\r\n.\r\n") {
            if r.read_until(b'\n', &mut cur.data)? == 0 {
                return Ok(());
            }
        }
        s.write_all(b"250 ok recorded\r\n")?;
        txns.lock()
            .expect("recorder lock")
            .push(std::mem::take(&mut cur));
    }
}
