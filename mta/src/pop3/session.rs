//! The POP3 dialogue (RFC 1939; qmail-popup, then qmail-pop3d once logged in) as a sans-IO
//! state machine.
//!
//! Feed the client's bytes with [`Session::input`], then call [`Session::step`] until it says
//! [`Step::Idle`], sending [`Session::take_output`] in between. Steps that need the outside
//! world (a password check, a message's bytes, the deletions at QUIT) stop the session until
//! the driver reports back, so pipelined commands are answered in order. Memory is bounded:
//! input is fed only when the session is idle, and a line longer than [`MAX_LINE`] is
//! answered `-ERR` and discarded up to its end.

use super::mailbox::Msg;

/// Longest command line kept, CRLF included (RFC 2449 allows 255 octets).
pub const MAX_LINE: usize = 512;
/// Failed logins before the session is closed.
pub const MAX_AUTH_FAILURES: u32 = 3;

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the output, then feed more input.
    Idle,
    /// Check a password (USER/PASS) or an APOP digest, then call [`Session::authenticated`].
    Auth(Credentials),
    /// Open message `index` (0-based) at `path`, call [`Session::send_started`] (or
    /// [`Session::send_failed`]), send the output, then the message, whole or (TOP) its header
    /// and `lines` body lines.
    Send {
        index: usize,
        path: String,
        lines: Option<u64>,
    },
    /// QUIT in the transaction state: remove these messages durably, then call
    /// [`Session::updated`].
    Update(Vec<String>),
    /// STLS (RFC 2595) was answered `+OK`: send the output, start TLS, then call
    /// [`Session::tls_started`].
    StartTls,
    /// Send the output and close the connection.
    Close,
}

/// What checkpassword gets: for APOP, `secret` is the digest and `timestamp` the greeting's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub secret: String,
    pub timestamp: String,
}

/// The outcome of a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// Logged in: the mailbox's messages.
    Ok(Vec<Msg>),
    /// Wrong user or password.
    Bad,
    /// Could not check or open the mailbox now: the reason.
    Temp(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Before login: the name USER gave.
    Authorization(Option<String>),
    Transaction,
    Closed,
}

#[derive(Debug)]
pub struct Session {
    state: State,
    /// The APOP challenge in the greeting, `<...>`.
    timestamp: String,
    failures: u32,
    msgs: Vec<Msg>,
    deleted: Vec<bool>,
    /// LAST: the highest message number retrieved.
    last: usize,
    inbuf: Vec<u8>,
    /// In the middle of a too-long line.
    discarding: bool,
    out: Vec<u8>,
    /// STLS may be offered (the server has a certificate and TLS is not on yet).
    tls_offered: bool,
}

impl Session {
    /// `timestamp`: a unique `<...>` string for APOP (qmail-popup's `<pid.time@host>`).
    pub fn new(timestamp: String) -> Session {
        let mut s = Session {
            state: State::Authorization(None),
            timestamp,
            failures: 0,
            msgs: Vec::new(),
            deleted: Vec::new(),
            last: 0,
            inbuf: Vec::new(),
            discarding: false,
            out: Vec::new(),
            tls_offered: false,
        };
        let greeting = format!("+OK {}", s.timestamp);
        s.reply(&greeting);
        s
    }

    /// The server can start TLS: CAPA lists STLS and STLS works.
    pub fn offer_tls(&mut self) {
        self.tls_offered = true;
    }

    /// TLS is on: nothing sent before it counts (RFC 2595 section 4: a client must not
    /// pipeline past STLS, and plaintext queued behind it could be an attacker's), and a name
    /// USER gave in the clear is forgotten.
    pub fn tls_started(&mut self) {
        self.tls_offered = false;
        self.inbuf.clear();
        self.discarding = false;
        if matches!(self.state, State::Authorization(_)) {
            self.state = State::Authorization(None);
        }
    }

    pub fn input(&mut self, bytes: &[u8]) {
        self.inbuf.extend_from_slice(bytes);
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The client was silent too long.
    pub fn timeout(&mut self) {
        self.reply("-ERR autologout: timeout");
        self.state = State::Closed;
    }

    /// The next complete command line's step.
    pub fn step(&mut self) -> Step {
        loop {
            if self.is_closed() {
                return Step::Close;
            }
            let Some(line) = self.next_line() else {
                return Step::Idle;
            };
            let step = self.command(&line);
            if step != Step::Idle {
                return step;
            }
        }
    }

    /// Take the next line out of the buffer, answering and skipping overlong ones.
    fn next_line(&mut self) -> Option<String> {
        loop {
            let Some(nl) = self.inbuf.iter().position(|&b| b == b'\n') else {
                if self.inbuf.len() >= MAX_LINE {
                    self.inbuf.clear();
                    if !std::mem::replace(&mut self.discarding, true) {
                        self.reply("-ERR line too long");
                    }
                }
                return None;
            };
            let raw: Vec<u8> = self.inbuf.drain(..=nl).collect();
            if std::mem::take(&mut self.discarding) {
                continue;
            }
            if raw.len() > MAX_LINE {
                self.reply("-ERR line too long");
                continue;
            }
            let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            return Some(String::from_utf8_lossy(line).into_owned());
        }
    }

    fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn command(&mut self, line: &str) -> Step {
        let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
        let verb = verb.to_ascii_uppercase();
        match self.state {
            State::Authorization(_) => self.authorization(&verb, arg),
            State::Transaction => self.transaction(&verb, arg),
            State::Closed => Step::Close,
        }
    }

    fn authorization(&mut self, verb: &str, arg: &str) -> Step {
        match verb {
            "USER" if arg.trim().is_empty() => self.reply("-ERR USER needs a name"),
            "USER" => {
                self.state = State::Authorization(Some(arg.trim().to_string()));
                self.reply("+OK");
            }
            "PASS" => match std::mem::replace(&mut self.state, State::Authorization(None)) {
                State::Authorization(Some(user)) => {
                    return Step::Auth(Credentials {
                        user,
                        secret: arg.to_string(),
                        timestamp: String::new(),
                    })
                }
                _ => self.reply("-ERR USER first"),
            },
            "APOP" => match arg.trim().rsplit_once(' ') {
                Some((user, digest)) if !user.trim().is_empty() => {
                    return Step::Auth(Credentials {
                        user: user.trim().to_string(),
                        secret: digest.to_string(),
                        timestamp: self.timestamp.clone(),
                    })
                }
                _ => self.reply("-ERR APOP needs a name and a digest"),
            },
            "CAPA" => self.capa(),
            "STLS" if self.tls_offered => {
                self.reply("+OK begin TLS negotiation");
                return Step::StartTls;
            }
            "STLS" => self.reply("-ERR STLS not available"),
            "QUIT" => return self.quit_now("+OK"),
            "NOOP" => self.reply("+OK"),
            _ => self.reply("-ERR authorization first"),
        }
        Step::Idle
    }

    fn capa(&mut self) {
        self.reply("+OK capability list follows");
        let stls = self.tls_offered && matches!(self.state, State::Authorization(_));
        for c in ["TOP", "UIDL", "USER", "PIPELINING", "IMPLEMENTATION mta"] {
            self.reply(c);
        }
        if stls {
            self.reply("STLS");
        }
        self.reply(".");
    }

    fn quit_now(&mut self, text: &str) -> Step {
        self.reply(text);
        self.state = State::Closed;
        Step::Close
    }

    /// The driver's answer to [`Step::Auth`].
    pub fn authenticated(&mut self, r: Login) {
        match r {
            Login::Ok(msgs) => {
                self.deleted = vec![false; msgs.len()];
                self.msgs = msgs;
                self.state = State::Transaction;
                let n = self.msgs.len();
                self.reply(&format!("+OK {n} messages"));
            }
            Login::Bad => {
                self.failures += 1;
                self.reply("-ERR authorization failed");
                if self.failures >= MAX_AUTH_FAILURES {
                    self.state = State::Closed;
                }
            }
            Login::Temp(why) => self.reply(&format!("-ERR {why}")),
        }
    }

    fn transaction(&mut self, verb: &str, arg: &str) -> Step {
        let args: Vec<&str> = arg.split_whitespace().collect();
        match (verb, args.as_slice()) {
            ("STAT", []) => {
                let (n, size) = self
                    .live()
                    .fold((0, 0), |(n, s), (_, m)| (n + 1, s + m.size));
                self.reply(&format!("+OK {n} {size}"));
            }
            ("LIST", []) => self.listing(|m| m.size.to_string()),
            ("UIDL", []) => self.listing(|m| m.uid.clone()),
            ("LIST", [n]) => self.one(n, |i, m| format!("+OK {i} {}", m.size)),
            ("UIDL", [n]) => self.one(n, |i, m| format!("+OK {i} {}", m.uid)),
            ("RETR", [n]) => return self.send(n, None),
            ("TOP", [n, lines]) => match lines.parse::<u64>() {
                Ok(l) => return self.send(n, Some(l)),
                Err(_) => self.reply("-ERR invalid line count"),
            },
            ("DELE", [n]) => {
                if let Some(i) = self.number(n) {
                    self.deleted[i] = true;
                    self.reply("+OK");
                }
            }
            ("RSET", []) => {
                self.deleted.iter_mut().for_each(|d| *d = false);
                self.last = 0;
                self.reply("+OK");
            }
            ("LAST", []) => self.reply(&format!("+OK {}", self.last)),
            ("NOOP", []) => self.reply("+OK"),
            ("CAPA", []) => self.capa(),
            ("QUIT", _) => {
                let gone = self.live_deleted();
                return Step::Update(gone);
            }
            ("USER" | "PASS" | "APOP", _) => self.reply("-ERR already logged in"),
            ("STAT" | "LIST" | "UIDL" | "RETR" | "TOP" | "DELE" | "RSET" | "LAST" | "NOOP", _) => {
                self.reply("-ERR syntax error")
            }
            _ => self.reply("-ERR unknown command"),
        }
        Step::Idle
    }

    /// Messages not marked deleted, with their 1-based numbers.
    fn live(&self) -> impl Iterator<Item = (usize, &Msg)> {
        self.msgs
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
            .map(|(i, m)| (i + 1, m))
    }

    fn live_deleted(&self) -> Vec<String> {
        self.msgs
            .iter()
            .zip(&self.deleted)
            .filter(|(_, d)| **d)
            .map(|(m, _)| m.path.clone())
            .collect()
    }

    fn listing(&mut self, f: impl Fn(&Msg) -> String) {
        let lines: Vec<String> = self.live().map(|(i, m)| format!("{i} {}", f(m))).collect();
        self.reply("+OK");
        lines.iter().for_each(|l| self.reply(l));
        self.reply(".");
    }

    fn one(&mut self, n: &str, f: impl Fn(usize, &Msg) -> String) {
        if let Some(i) = self.number(n) {
            let line = f(i + 1, &self.msgs[i]);
            self.reply(&line);
        }
    }

    /// A live message's index from its number, or `-ERR` sent.
    fn number(&mut self, n: &str) -> Option<usize> {
        match n.parse::<usize>() {
            Ok(k) if k >= 1 && k <= self.msgs.len() && !self.deleted[k - 1] => Some(k - 1),
            Ok(k) if k >= 1 && k <= self.msgs.len() => {
                self.reply("-ERR message deleted");
                None
            }
            _ => {
                self.reply("-ERR no such message");
                None
            }
        }
    }

    fn send(&mut self, n: &str, lines: Option<u64>) -> Step {
        let Some(index) = self.number(n) else {
            return Step::Idle;
        };
        Step::Send {
            index,
            path: self.msgs[index].path.clone(),
            lines,
        }
    }

    /// The message of a [`Step::Send`] is open: its `+OK` goes out before its lines.
    pub fn send_started(&mut self, index: usize, lines: Option<u64>) {
        if lines.is_none() {
            self.last = self.last.max(index + 1);
        }
        let size = self.msgs.get(index).map_or(0, |m| m.size);
        self.reply(&format!("+OK {size} octets"));
    }

    /// The message of a [`Step::Send`] could not be opened.
    pub fn send_failed(&mut self) {
        self.reply("-ERR unable to read the message");
    }

    /// The driver's answer to [`Step::Update`]: `true` when the deletions are durable.
    pub fn updated(&mut self, ok: bool) {
        if ok {
            self.reply("+OK");
        } else {
            self.reply("-ERR some deleted messages not removed");
        }
        self.state = State::Closed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u32) -> Msg {
        Msg {
            path: format!("cur/{n}.x:2,"),
            uid: format!("{n}.x"),
            size: u64::from(n) * 10,
        }
    }

    fn say(s: &mut Session, line: &str) -> (Step, String) {
        s.input(line.as_bytes());
        let step = s.step();
        (step, String::from_utf8(s.take_output()).unwrap())
    }

    fn logged_in() -> Session {
        let mut s = Session::new("<1.2@h>".into());
        s.take_output();
        say(&mut s, "USER fred\r\n");
        let (step, _) = say(&mut s, "PASS se cret\r\n");
        assert_eq!(
            step,
            Step::Auth(Credentials {
                user: "fred".into(),
                secret: "se cret".into(),
                timestamp: String::new()
            })
        );
        s.authenticated(Login::Ok(vec![msg(1), msg(2), msg(3)]));
        assert_eq!(s.take_output(), b"+OK 3 messages\r\n");
        s
    }

    #[test]
    fn authorization_state() {
        let mut s = Session::new("<1.2@h>".into());
        assert_eq!(s.take_output(), b"+OK <1.2@h>\r\n");
        assert_eq!(say(&mut s, "STAT\r\n").1, "-ERR authorization first\r\n");
        assert_eq!(say(&mut s, "PASS x\r\n").1, "-ERR USER first\r\n");
        let (step, _) = say(&mut s, "apop fred 0123abcd\n");
        let Step::Auth(c) = step else { panic!() };
        assert_eq!(
            (c.secret.as_str(), c.timestamp.as_str()),
            ("0123abcd", "<1.2@h>")
        );
        for _ in 0..MAX_AUTH_FAILURES {
            assert!(!s.is_closed());
            s.authenticated(Login::Bad);
        }
        assert!(s.is_closed());
    }

    #[test]
    fn transaction_state() {
        let mut s = logged_in();
        assert_eq!(say(&mut s, "STAT\r\n").1, "+OK 3 60\r\n");
        assert_eq!(say(&mut s, "DELE 2\r\n").1, "+OK\r\n");
        assert_eq!(say(&mut s, "LIST\r\n").1, "+OK\r\n1 10\r\n3 30\r\n.\r\n");
        assert_eq!(say(&mut s, "UIDL 3\r\n").1, "+OK 3 3.x\r\n");
        assert_eq!(say(&mut s, "RETR 2\r\n").1, "-ERR message deleted\r\n");
        assert_eq!(say(&mut s, "RETR 9\r\n").1, "-ERR no such message\r\n");
        assert_eq!(say(&mut s, "TOP 1 x\r\n").1, "-ERR invalid line count\r\n");
        let (step, _) = say(&mut s, "TOP 3 5\r\n");
        assert_eq!(
            step,
            Step::Send {
                index: 2,
                path: "cur/3.x:2,".into(),
                lines: Some(5)
            }
        );
        s.send_started(2, Some(5));
        assert_eq!(s.take_output(), b"+OK 30 octets\r\n");
        assert_eq!(say(&mut s, "RSET\r\n").1, "+OK\r\n");
        assert_eq!(say(&mut s, "STAT\r\n").1, "+OK 3 60\r\n");
        say(&mut s, "DELE 1\r\n");
        let (step, _) = say(&mut s, "QUIT\r\n");
        assert_eq!(step, Step::Update(vec!["cur/1.x:2,".into()]));
        s.updated(true);
        assert_eq!(s.take_output(), b"+OK\r\n");
        assert_eq!(s.step(), Step::Close);
    }

    #[test]
    fn stls_when_offered_and_nothing_queued_behind_it_counts() {
        let mut s = Session::new("<1.2@h>".into());
        s.take_output();
        assert_eq!(say(&mut s, "STLS\r\n").1, "-ERR STLS not available\r\n");
        s.offer_tls();
        assert!(say(&mut s, "CAPA\r\n").1.contains("\r\nSTLS\r\n"));
        s.input(b"USER fred\r\nSTLS\r\nPASS injected\r\n");
        assert_eq!(s.step(), Step::StartTls);
        assert_eq!(s.take_output(), b"+OK\r\n+OK begin TLS negotiation\r\n");
        s.tls_started();
        assert_eq!(s.step(), Step::Idle);
        assert!(!say(&mut s, "CAPA\r\n").1.contains("STLS"));
        assert_eq!(say(&mut s, "PASS x\r\n").1, "-ERR USER first\r\n");
    }

    #[test]
    fn pipelined_and_overlong_lines() {
        let mut s = logged_in();
        s.input(b"NOOP\r\nRETR 1\r\nNOOP\r\n");
        assert!(matches!(s.step(), Step::Send { index: 0, .. }));
        assert_eq!(s.take_output(), b"+OK\r\n");
        s.send_failed();
        assert_eq!(s.step(), Step::Idle);
        assert_eq!(
            s.take_output(),
            b"-ERR unable to read the message\r\n+OK\r\n".to_vec()
        );
        s.input(&[b'x'; 3 * MAX_LINE]);
        assert_eq!(s.step(), Step::Idle);
        s.input(b"yyy\r\nNOOP\r\n");
        assert_eq!(s.step(), Step::Idle);
        assert_eq!(s.take_output(), b"-ERR line too long\r\n+OK\r\n");
    }
}
