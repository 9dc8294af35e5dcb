//! The scripted SMTP server a client under test relays into: answers per the active
//! scenario and records what the client sent, connection by connection.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::scenario::{Scenario, Stage};

/// Longest command or text line read (a client sending more is recorded as breaking the
/// limits, and cut off).
const MAX_READ: usize = 64 << 10;

/// One transaction the client ran.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    pub sender: String,
    /// Recipients the server accepted.
    pub rcpts: Vec<String>,
    /// The message as sent (dot-stuffed, line ends as sent), without the final `.` line.
    pub data: Vec<u8>,
    /// The server answered 250 at the end of the data.
    pub accepted: bool,
}

/// One connection, as the server saw it.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    /// The scenario active when it arrived (`None`: between scenarios).
    pub scenario: Option<String>,
    pub commands: Vec<String>,
    pub txns: Vec<Txn>,
    /// Rule breaches seen on the way (line ends, lengths, timing).
    pub breaches: Vec<String>,
    pub ehlo_refused: bool,
    pub helo_after_refused_ehlo: bool,
    pub quit: bool,
    /// The server ended the connection (after a 421).
    pub server_closed: bool,
}

/// What the server knows of the scenario being played.
#[derive(Debug, Clone)]
pub struct Active {
    pub sc: Scenario,
    /// Connections that arrived so far.
    pub conns: usize,
    /// Recipients that were given RCPT so far.
    pub rcpts: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct State {
    pub active: Option<Active>,
    pub conns: Vec<Conn>,
    /// Connections still open.
    pub open: usize,
}

/// State shared by the server's connections and the runner; `changed` wakes the runner.
#[derive(Debug, Default)]
pub struct Shared {
    pub state: Mutex<State>,
    pub changed: Notify,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Accept connections for ever, each served on its own task.
pub async fn serve(l: TcpListener, shared: Arc<Shared>, domain: String) {
    while let Ok((s, _)) = l.accept().await {
        let (sh, d) = (shared.clone(), domain.clone());
        tokio::spawn(async move {
            let (sc, first) = {
                let mut st = sh.lock();
                st.open += 1;
                match &mut st.active {
                    Some(a) => {
                        a.conns += 1;
                        (Some(a.sc.clone()), a.conns == 1)
                    }
                    None => (None, false),
                }
            };
            let mut c = Conn {
                scenario: sc.as_ref().map(|s| s.id.clone()),
                ..Conn::default()
            };
            let mut sess = Session {
                io: BufReader::new(s),
                sc,
                first,
                domain: d,
                shared: sh.clone(),
                c: &mut c,
            };
            let _ = tokio::time::timeout(Duration::from_secs(600), sess.run()).await;
            let mut st = sh.lock();
            st.open -= 1;
            st.conns.push(c);
            drop(st);
            sh.changed.notify_waiters();
        });
    }
}

struct Session<'a> {
    io: BufReader<TcpStream>,
    sc: Option<Scenario>,
    first: bool,
    domain: String,
    shared: Arc<Shared>,
    c: &'a mut Conn,
}

/// A reply's wire form: `\n` in the text separates lines, each with the code.
fn wire(code: u16, text: &str) -> String {
    let lines: Vec<&str> = text.split("\\n").collect();
    let n = lines.len();
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let sep = if i + 1 == n { ' ' } else { '-' };
            format!("{code}{sep}{l}\r\n")
        })
        .collect()
}

/// The address inside `FROM:<...>` / `TO:<...>`.
fn path(arg: &str) -> Option<String> {
    let a = arg.find('<')?;
    let b = arg[a..].find('>')? + a;
    Some(arg[a + 1..b].to_string())
}

impl Session<'_> {
    /// The reply for `stage`: the scenario's rule when it applies, else `code text`.
    fn pick(
        &self,
        stage: Stage,
        rcpt: Option<(&str, bool)>,
        code: u16,
        text: &str,
    ) -> (u16, String) {
        let first = rcpt.map_or(self.first, |(_, f)| f);
        let local = rcpt.map(|(l, _)| l);
        match self.sc.as_ref().and_then(|s| s.rule(stage, first, local)) {
            Some(r) => (r.code, r.text.clone()),
            None => (code, text.to_string()),
        }
    }

    /// Wait the scenario's delay, noting a client that sends before it is answered.
    async fn delay(&mut self, what: &str) {
        let d = self.sc.as_ref().map_or(0, |s| s.delay);
        if d == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(d)).await;
        let pipelining = self
            .sc
            .as_ref()
            .is_some_and(|s| s.ehlo.iter().any(|k| k == "PIPELINING"));
        // Polled once: bytes already there were sent before the reply.
        let early = tokio::time::timeout(Duration::ZERO, self.io.fill_buf()).await;
        if matches!(early, Ok(Ok(b)) if !b.is_empty()) && (what == "greeting" || !pipelining) {
            self.c
                .breaches
                .push(format!("sent a command before the {what} reply"));
        }
    }

    /// Send a reply; false when it closes the connection (421).
    async fn reply(&mut self, what: &str, code: u16, text: &str) -> bool {
        self.delay(what).await;
        let _ = self
            .io
            .get_mut()
            .write_all(wire(code, text).as_bytes())
            .await;
        if code == 421 {
            self.c.server_closed = true;
            return false;
        }
        true
    }

    /// One line as sent (line end included); `None` at the end of the stream.
    async fn line(&mut self) -> Option<Vec<u8>> {
        let mut b = Vec::new();
        let n = (&mut self.io)
            .take(MAX_READ as u64)
            .read_until(b'\n', &mut b)
            .await
            .ok()?;
        (n > 0).then_some(b)
    }

    fn check_line(&mut self, l: &[u8], max: usize, what: &str) {
        let crlf = l.ends_with(b"\r\n");
        let body = &l[..l.len() - if crlf { 2 } else { 0 }];
        if !crlf || body.contains(&b'\r') || body.contains(&b'\n') {
            self.c.breaches.push(format!(
                "{what} line not ended by CRLF alone: {:?}",
                String::from_utf8_lossy(&l[..l.len().min(60)])
            ));
        }
        if l.len() > max {
            self.c
                .breaches
                .push(format!("{what} line of {} octets (limit {max})", l.len()));
        }
    }

    async fn run(&mut self) {
        let (code, text) = self.pick(
            Stage::Greeting,
            None,
            220,
            &format!("{} ESMTP conform", self.domain),
        );
        if !self.reply("greeting", code, &text).await {
            return;
        }
        let mut txn: Option<Txn> = None;
        while let Some(l) = self.line().await {
            self.check_line(&l, 512, "command");
            let s = String::from_utf8_lossy(&l).trim_end().to_string();
            self.c.commands.push(s.clone());
            let (verb, arg) = s.split_once(' ').unwrap_or((&s, ""));
            let go = match verb.to_ascii_uppercase().as_str() {
                "EHLO" => self.ehlo().await,
                "HELO" => {
                    self.c.helo_after_refused_ehlo |= self.c.ehlo_refused;
                    let (c, t) = self.pick(Stage::Helo, None, 250, &self.domain.clone());
                    self.reply("HELO", c, &t).await
                }
                "MAIL" => self.mail(arg, &mut txn).await,
                "RCPT" => self.rcpt(arg, &mut txn).await,
                "DATA" => self.data(&mut txn).await,
                "RSET" => {
                    txn = None;
                    self.reply("RSET", 250, "flushed").await
                }
                "NOOP" => self.reply("NOOP", 250, "ok").await,
                "QUIT" => {
                    self.c.quit = true;
                    let _ = self.reply("QUIT", 221, "bye").await;
                    return;
                }
                _ => self.reply("command", 502, "unimplemented").await,
            };
            if !go {
                return;
            }
        }
    }

    async fn ehlo(&mut self) -> bool {
        let (c, mut t) = self.pick(Stage::Ehlo, None, 250, "");
        if c == 250 && t.is_empty() {
            t = self.domain.clone();
            for k in self
                .sc
                .as_ref()
                .map_or(&vec!["8BITMIME".to_string()], |s| &s.ehlo)
                .clone()
            {
                t.push_str(&format!("\\n{k}"));
            }
        }
        self.c.ehlo_refused = c != 250;
        self.reply("EHLO", c, &t).await
    }

    async fn mail(&mut self, arg: &str, txn: &mut Option<Txn>) -> bool {
        let sender = path(arg).unwrap_or_default();
        // The scripted refusals are for the scenario's message, never for the bounce that
        // must come back (null sender).
        let (c, t) = if sender.is_empty() {
            (250, "ok".to_string())
        } else {
            self.pick(Stage::Mail, None, 250, "ok")
        };
        if c / 100 == 2 {
            *txn = Some(Txn {
                sender,
                ..Txn::default()
            });
        }
        self.reply("MAIL", c, &t).await
    }

    async fn rcpt(&mut self, arg: &str, txn: &mut Option<Txn>) -> bool {
        let Some(t) = txn.as_mut() else {
            return self.reply("RCPT", 503, "MAIL first").await;
        };
        let addr = path(arg).unwrap_or_default();
        let first = self
            .shared
            .lock()
            .active
            .as_mut()
            .is_some_and(|a| a.rcpts.insert(addr.clone()));
        let local = addr.split('@').next().unwrap_or("").to_string();
        let (c, text) = self.pick(Stage::Rcpt, Some((&local, first)), 250, "ok");
        if c / 100 == 2 {
            t.rcpts.push(addr);
        }
        self.reply("RCPT", c, &text).await
    }

    async fn data(&mut self, txn: &mut Option<Txn>) -> bool {
        let Some(mut t) = txn.take().filter(|t| !t.rcpts.is_empty()) else {
            return self.reply("DATA", 503, "no valid recipients").await;
        };
        let bounce = t.sender.is_empty();
        let (c, text) = match bounce {
            true => (354, "go ahead".to_string()),
            false => self.pick(Stage::Data, None, 354, "go ahead"),
        };
        if !self.reply("DATA", c, &text).await || c != 354 {
            return c != 421;
        }
        loop {
            let Some(l) = self.line().await else {
                return false;
            };
            if l == b".\r\n" || l == b".\n" {
                self.check_line(&l, 1000, "message");
                break;
            }
            self.check_line(&l, 1000, "message");
            t.data.extend_from_slice(&l);
        }
        let (c, text) = match bounce {
            true => (250, "ok queued".to_string()),
            false => self.pick(Stage::End, None, 250, "ok queued"),
        };
        t.accepted = c == 250;
        self.c.txns.push(t);
        self.reply("end of data", c, &text).await
    }
}

/// Undo dot-stuffing and line ends: the message's lines as the client meant them.
pub fn unstuff(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(data)
        .split("\r\n")
        .map(|l| l.strip_prefix('.').unwrap_or(l).to_string())
        .collect()
}
