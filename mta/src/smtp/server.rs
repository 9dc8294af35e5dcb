//! The SMTP server session (qmail-smtpd's dialogue), as a sans-IO state machine.
//!
//! Feed it the bytes the client sent with [`Session::input`]; take the replies to send with
//! [`Session::take_output`]. When a message is complete it stops with [`Step::Message`]: the
//! driver commits it to the queue and reports back with [`Session::committed`] before feeding
//! more input, so `250` is only ever produced after the durable commit. Memory is bounded: a
//! command line is at most [`MAX_LINE`] bytes (longer ones are discarded up to their end and
//! answered `500`), a message at most `databytes` or [`MAX_MESSAGE`].

use std::net::IpAddr;
use std::sync::Arc;

use super::address::{self, AddrError};
use super::auth::{self, Credentials, Exchange, Next};

/// Longest command line kept, CRLF included (RFC 2821's minimum is 512).
pub const MAX_LINE: usize = 4096;
/// Most recipients per transaction (RFC 2821's minimum is 100).
pub const MAX_RCPTS: usize = 1000;
/// Largest message kept in memory when no `databytes` limit is set.
pub const MAX_MESSAGE: u64 = 64 << 20;
/// `Received:` plus `Delivered-To:` header lines that mean a loop (RFC 2821 6.2: at least 100).
pub const MAX_HOPS: usize = 100;
/// Failed AUTH attempts a session may make; the last one closes it.
pub const MAX_AUTH_FAILURES: u32 = 3;

/// What the session may offer of TLS and AUTH.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Secure {
    /// A certificate is configured: STARTTLS is offered (outside TLS).
    pub starttls: bool,
    /// The connection is TLS from its first byte (the implicit-TLS listener).
    pub implicit: bool,
    /// A password checker is configured: AUTH is offered (inside TLS).
    pub auth: bool,
    /// control/authallowplaintext: AUTH is offered outside TLS too.
    pub auth_plaintext: bool,
}

/// How the driver's check of AUTH credentials came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Ok,
    /// Wrong user name or password.
    Bad,
    /// The checker could not decide (checkpassword exit 111, a file unreadable).
    Temporary,
}

/// What the session knows of its configuration and its client.
#[derive(Debug, Clone)]
pub struct Policy {
    /// First line of smtpgreeting (or me).
    pub greeting: String,
    /// Our name in the Received line.
    pub local_host: String,
    /// `None`: no rcpthosts file, accept every domain.
    pub rcpthosts: Option<Vec<String>>,
    pub morercpthosts: Vec<String>,
    /// Lowercased; `@domain` entries match a whole domain.
    pub badmailfrom: Vec<String>,
    /// RELAYCLIENT: relaying allowed, its value appended to each recipient.
    pub relayclient: Option<String>,
    /// 0: no limit.
    pub databytes: u64,
    pub localiphost: String,
    pub local_ips: Vec<IpAddr>,
    pub peer: super::received::Peer,
    /// The domain qmail-send gives bare names (control/envnoathost): a bare `RCPT` is
    /// checked against rcpthosts as `name@envnoathost`.
    pub envnoathost: String,
    /// control/nullsenderonercpt: refuse a second recipient for the null sender.
    pub null_sender_one_rcpt: bool,
    /// control/realrcptto: which recipients local delivery would take; `None` takes all.
    pub rcpt_check: Option<RcptCheck>,
    /// STARTTLS and AUTH.
    pub secure: Secure,
}

/// Decides at RCPT time whether a recipient exists (qmail-realrcptto). The driver builds it
/// from the installation; the session only calls it, so it stays free of I/O of its own.
#[derive(Clone)]
pub struct RcptCheck(pub Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for RcptCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RcptCheck")
    }
}

/// A complete message for the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub sender: String,
    pub recipients: Vec<String>,
    /// The message with the Received line prepended, LF line ends; when the driver took
    /// data along the way ([`Session::take_data`]), only the rest.
    pub data: Vec<u8>,
}

/// Why the queue did not take a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitError {
    /// 5xx: the text after the code.
    Permanent(String),
    /// 4xx: the text after the code.
    Temporary(String),
}

/// What the driver must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send the output, then read more input.
    NeedInput,
    /// Commit this message, then call [`Session::committed`].
    Message(Transaction),
    /// Send the output, then close the connection.
    Close,
    /// Send the output (`220 ready to start TLS`), then run the TLS handshake and call
    /// [`Session::tls_started`]. Whatever the client sent after STARTTLS in the clear has
    /// been discarded (RFC 3207 4.2, the CVE-2011-0411 command injection).
    StartTls,
    /// Send the output, check these credentials, then call [`Session::auth_checked`].
    Auth(Credentials),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    LineStart,
    Mid,
    Cr,
    Dot,
    DotCr,
}

#[derive(Debug)]
enum Mode {
    Command,
    /// Discarding an overlong command line up to its end.
    Overlong,
    Data {
        st: Data,
        hops: Hops,
        too_big: bool,
    },
    AwaitCommit,
    /// In an AUTH exchange, waiting for the client's next line.
    Auth(Exchange),
    /// Waiting for the driver's [`Session::auth_checked`].
    AwaitAuth,
    /// Waiting for the driver's TLS handshake.
    AwaitTls,
    Closed,
}

/// Counts Received and Delivered-To lines in the header as the message streams past.
#[derive(Debug, Clone, Default)]
struct Hops {
    past_header: bool,
    /// The start of the current header line (enough to see its name).
    line: Vec<u8>,
    count: usize,
}

impl Hops {
    #[inline]
    fn see(&mut self, b: u8) {
        if self.past_header {
            return;
        }
        if b != b'\n' {
            if self.line.len() < 16 {
                self.line.push(b);
            }
            return;
        }
        if self.line.is_empty() {
            self.past_header = true;
        } else {
            let l = self.line.to_ascii_lowercase();
            if l.starts_with(b"received:") || l.starts_with(b"delivered-to:") {
                self.count += 1;
            }
        }
        self.line.clear();
    }
}

pub struct Session {
    p: Policy,
    now: u64,
    helo: Option<String>,
    sender: Option<String>,
    rcpts: Vec<String>,
    mode: Mode,
    line: Vec<u8>,
    /// Message bytes not yet taken by the driver (the Received line first).
    data: Vec<u8>,
    /// Message bytes received in this DATA (after CRLF → LF), for databytes.
    count: u64,
    /// Bytes the client sent in this DATA, as sent (for the minimum-rate deadline).
    raw: u64,
    /// Command lines completed so far (for the whole-command deadline).
    lines: u64,
    pending: Vec<u8>,
    out: Vec<u8>,
    /// The connection is TLS (implicit, or after STARTTLS).
    tls: bool,
    /// The user AUTH confirmed.
    user: Option<String>,
    /// Credentials handed to the driver, until it reports.
    checking: Option<Credentials>,
    auth_failures: u32,
    /// The command line being read holds a bare LF (it is refused at its CRLF).
    bare_lf: bool,
    /// The last command byte read was a CR (a CRLF may straddle two reads).
    last_cr: bool,
}

/// RFC 1870 size-value (1*20DIGIT): a value too large for u64 is still over any limit.
fn size_value(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse().unwrap_or(u64::MAX))
}

fn reply(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

impl Session {
    /// A new session; the greeting is already in the output.
    pub fn new(p: Policy, now: u64) -> Self {
        let mut out = Vec::new();
        reply(&mut out, &format!("220 {} ESMTP", p.greeting));
        Session {
            now,
            helo: None,
            sender: None,
            rcpts: Vec::new(),
            mode: Mode::Command,
            line: Vec::new(),
            data: Vec::new(),
            count: 0,
            raw: 0,
            lines: 0,
            pending: Vec::new(),
            out,
            tls: p.secure.implicit,
            user: None,
            checking: None,
            auth_failures: 0,
            bare_lf: false,
            last_cr: false,
            p,
        }
    }

    /// The current time, for the Received line and the `250 ok <time>` reply.
    pub fn set_now(&mut self, now: u64) {
        self.now = now;
    }

    /// Replies produced so far (to be written, in order, before the next read).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed)
    }

    /// Bytes not yet processed (kept while a message awaits its commit).
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// True while message text is being received.
    pub fn in_data(&self) -> bool {
        matches!(self.mode, Mode::Data { .. })
    }

    /// Message bytes held, waiting for [`Session::take_data`] or the end of the message.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// Take the message bytes received so far (to stream a large message to disk); the
    /// transaction at the end then carries only what came after.
    pub fn take_data(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.data)
    }

    /// Heap bytes the session holds (buffers' capacities), for memory-bound checks.
    pub fn memory(&self) -> usize {
        self.line.capacity() + self.data.capacity() + self.pending.capacity() + self.out.capacity()
    }

    /// The driver's read timed out: say so and close.
    pub fn timeout(&mut self) {
        reply(&mut self.out, "451 timeout (#4.4.2)");
        self.mode = Mode::Closed;
    }

    /// A deadline ran out (see [`super::deadline`]): say so and close. Nothing received of
    /// an unfinished message is kept.
    pub fn cut_off(&mut self, reply_text: &str) {
        reply(&mut self.out, reply_text);
        self.data = Vec::new();
        self.reset();
        self.mode = Mode::Closed;
    }

    /// What the session has reached, for [`super::deadline::Watch`].
    pub fn progress(&self) -> super::deadline::Progress {
        let data = self.in_data().then_some(self.raw);
        let started = match self.mode {
            Mode::Command | Mode::Auth(_) => !self.line.is_empty(),
            Mode::Overlong => true,
            _ => self.raw > 0,
        };
        super::deadline::Progress {
            lines: self.lines,
            data,
            started,
        }
    }

    /// Process input. Stops early at a complete message; the unprocessed rest is kept and
    /// resumed by the next call (which may pass an empty slice).
    pub fn input(&mut self, buf: &[u8]) -> Step {
        match self.mode {
            Mode::AwaitCommit | Mode::AwaitAuth => {
                self.pending.extend_from_slice(buf);
                return Step::NeedInput;
            }
            // Nothing sent in the clear after STARTTLS is ever read.
            Mode::AwaitTls => return Step::StartTls,
            _ => {}
        }
        let owned;
        let buf = if self.pending.is_empty() {
            buf
        } else {
            self.pending.extend_from_slice(buf);
            owned = std::mem::take(&mut self.pending);
            &owned[..]
        };
        let mut i = 0;
        while i < buf.len() {
            match self.mode {
                Mode::Closed => return Step::Close,
                Mode::AwaitCommit | Mode::AwaitAuth => {
                    self.pending.extend_from_slice(&buf[i..]);
                    return self.await_step();
                }
                Mode::AwaitTls => return Step::StartTls,
                Mode::Command | Mode::Overlong | Mode::Auth(_) => {
                    i += self.command_bytes(&buf[i..])
                }
                Mode::Data { .. } => {
                    let n = self.data_bytes(&buf[i..]);
                    self.raw += n as u64;
                    i += n;
                }
            }
        }
        match self.mode {
            Mode::Closed => Step::Close,
            Mode::AwaitCommit | Mode::AwaitAuth => self.await_step(),
            Mode::AwaitTls => Step::StartTls,
            _ => Step::NeedInput,
        }
    }

    /// What the driver must do before the session goes on.
    fn await_step(&mut self) -> Step {
        if let Some(c) = self.checking.clone() {
            return Step::Auth(c);
        }
        Step::Message(Transaction {
            sender: self.sender.take().unwrap_or_default(),
            recipients: std::mem::take(&mut self.rcpts),
            data: std::mem::take(&mut self.data),
        })
    }

    /// The queue's answer for the message returned by the last [`Step::Message`].
    pub fn committed(&mut self, r: Result<String, CommitError>) {
        match r {
            Ok(id) => reply(&mut self.out, &format!("250 ok {} qp {id}", self.now)),
            Err(CommitError::Permanent(t)) => reply(&mut self.out, &format!("554 {t}")),
            Err(CommitError::Temporary(t)) => reply(&mut self.out, &format!("451 {t}")),
        }
        self.mode = Mode::Command;
    }

    /// Where the next command line ends in `buf`: (bytes to take, whether that completes a
    /// line). Only CRLF ends a line (RFC 5321 2.3.8): a bare LF is taken as part of the
    /// line and taints it, so "NOOP<LF>NOOP<CRLF>" is one (refused) line, never two commands.
    fn line_end(&mut self, buf: &[u8]) -> (usize, bool) {
        let mut from = 0;
        while let Some(n) = buf[from..].iter().position(|&b| b == b'\n') {
            let at = from + n;
            let cr = if at == 0 {
                self.last_cr
            } else {
                buf[at - 1] == b'\r'
            };
            if cr {
                self.last_cr = false;
                return (at + 1, true);
            }
            self.bare_lf = true;
            from = at + 1;
        }
        self.last_cr = buf.last() == Some(&b'\r');
        (buf.len(), false)
    }

    /// Consume command-mode bytes up to and including one line end; returns bytes used.
    fn command_bytes(&mut self, buf: &[u8]) -> usize {
        let (take, complete) = self.line_end(buf);
        if complete {
            self.lines += 1;
        }
        if matches!(self.mode, Mode::Overlong) {
            if complete {
                self.bare_lf = false;
                reply(&mut self.out, "500 command line too long (#5.5.2)");
                self.mode = Mode::Command;
            }
            return take;
        }
        if self.line.len() + take > MAX_LINE {
            self.line.clear();
            self.mode = Mode::Overlong;
            if complete {
                self.bare_lf = false;
                reply(&mut self.out, "500 command line too long (#5.5.2)");
                self.mode = Mode::Command;
            }
            return take;
        }
        self.line.extend_from_slice(&buf[..take]);
        if complete {
            let mut line = std::mem::take(&mut self.line);
            line.truncate(line.len() - 2);
            let mode = std::mem::replace(&mut self.mode, Mode::Command);
            if std::mem::take(&mut self.bare_lf) {
                // Not a command at all: refused whole, an AUTH exchange abandoned with it.
                reply(&mut self.out, "500 bare LF in command line (#5.5.2)");
                return take;
            }
            match mode {
                Mode::Auth(ex) => self.auth_next(auth::step(ex, &line)),
                m => {
                    self.mode = m;
                    self.command(&line);
                }
            }
        }
        take
    }

    fn reset(&mut self) {
        self.sender = None;
        self.rcpts.clear();
    }

    fn command(&mut self, line: &[u8]) {
        let (verb, arg) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        let verb = String::from_utf8_lossy(verb).to_ascii_lowercase();
        match verb.as_str() {
            "helo" => {
                self.reset();
                self.helo = Some(String::from_utf8_lossy(arg).trim().to_string());
                reply(&mut self.out, &format!("250 {}", self.p.greeting));
            }
            "ehlo" => {
                self.reset();
                self.helo = Some(String::from_utf8_lossy(arg).trim().to_string());
                reply(&mut self.out, &format!("250-{}", self.p.greeting));
                reply(&mut self.out, "250-PIPELINING");
                if self.p.secure.starttls && !self.tls {
                    reply(&mut self.out, "250-STARTTLS");
                }
                if self.auth_offered() && self.user.is_none() {
                    // The `AUTH=` form is for clients written before RFC 2554 was final.
                    reply(&mut self.out, &format!("250-AUTH {}", auth::MECHANISMS));
                    reply(&mut self.out, &format!("250-AUTH={}", auth::MECHANISMS));
                }
                if self.p.databytes > 0 {
                    reply(&mut self.out, "250-8BITMIME");
                    reply(&mut self.out, &format!("250 SIZE {}", self.p.databytes));
                } else {
                    reply(&mut self.out, "250 8BITMIME");
                }
            }
            "mail" => self.mail(arg),
            "rcpt" => self.rcpt(arg),
            "data" => self.data_cmd(),
            "rset" => {
                self.reset();
                reply(&mut self.out, "250 flushed");
            }
            "noop" => reply(&mut self.out, "250 ok"),
            "vrfy" => reply(&mut self.out, "252 send some mail, i'll try my best"),
            "help" => reply(
                &mut self.out,
                "214 qmail home page: http://pobox.com/~djb/qmail.html",
            ),
            "starttls" => self.starttls(arg),
            "auth" => self.auth_cmd(arg),
            "quit" => {
                reply(&mut self.out, &format!("221 {}", self.p.greeting));
                self.mode = Mode::Closed;
            }
            _ => reply(&mut self.out, "502 unimplemented (#5.5.1)"),
        }
    }

    fn auth_offered(&self) -> bool {
        self.p.secure.auth && (self.tls || self.p.secure.auth_plaintext)
    }

    fn starttls(&mut self, arg: &[u8]) {
        if !arg.is_empty() {
            reply(&mut self.out, "501 syntax error (#5.5.4)");
        } else if self.tls {
            reply(&mut self.out, "503 TLS already active (#5.5.1)");
        } else if !self.p.secure.starttls {
            reply(&mut self.out, "502 unimplemented (#5.5.1)");
        } else {
            reply(&mut self.out, "220 ready to start TLS");
            self.mode = Mode::AwaitTls;
        }
    }

    /// The driver's TLS handshake succeeded: from here the session starts over (RFC 3207
    /// 4.2), knowing nothing the client said in the clear.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.helo = None;
        self.user = None;
        self.reset();
        self.line.clear();
        self.bare_lf = false;
        self.last_cr = false;
        self.pending.clear();
        self.mode = Mode::Command;
    }

    /// True once the connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The user AUTH confirmed, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn auth_cmd(&mut self, arg: &[u8]) {
        let refusal = if !self.p.secure.auth {
            "502 unimplemented (#5.5.1)"
        } else if !self.auth_offered() {
            "538 encryption required for requested authentication mechanism (#5.7.11)"
        } else if self.user.is_some() {
            "503 you're already authenticated (#5.5.0)"
        } else if self.sender.is_some() {
            "503 no auth during mail transaction (#5.5.0)"
        } else {
            return self.auth_next(auth::start(arg));
        };
        reply(&mut self.out, refusal);
    }

    fn auth_next(&mut self, next: Next) {
        match next {
            Next::Challenge(c, ex) => {
                reply(&mut self.out, c);
                self.mode = Mode::Auth(ex);
            }
            Next::Check(c) => {
                self.checking = Some(c);
                self.mode = Mode::AwaitAuth;
            }
            Next::Refuse(r) => reply(&mut self.out, r),
        }
    }

    /// The driver's verdict on the credentials of the last [`Step::Auth`]. A session that
    /// fails [`MAX_AUTH_FAILURES`] times is closed.
    pub fn auth_checked(&mut self, r: AuthResult) {
        let c = self.checking.take();
        self.mode = Mode::Command;
        match r {
            AuthResult::Ok => {
                self.user = c.map(|c| c.user);
                reply(&mut self.out, "235 ok, go ahead (#2.0.0)");
            }
            AuthResult::Temporary => reply(
                &mut self.out,
                "454 temporary authentication failure (#4.3.0)",
            ),
            AuthResult::Bad => {
                self.auth_failures += 1;
                if self.auth_failures >= MAX_AUTH_FAILURES {
                    reply(
                        &mut self.out,
                        "421 too many failed authentications, closing connection (#4.7.0)",
                    );
                    self.mode = Mode::Closed;
                } else {
                    reply(&mut self.out, "535 authentication failed (#5.7.8)");
                }
            }
        }
    }

    fn limit(&self) -> u64 {
        if self.p.databytes > 0 {
            self.p.databytes.min(MAX_MESSAGE)
        } else {
            MAX_MESSAGE
        }
    }

    fn mail(&mut self, arg: &[u8]) {
        // RFC 5321 4.1.4: an unacceptable MAIL argument MUST get 501 (qmail-smtpd: 555), and
        // the state stays as it was.
        let path = match address::parse(arg, "FROM") {
            Ok(p) => p,
            Err(_) => return reply(&mut self.out, "501 syntax error (#5.5.4)"),
        };
        let size = path
            .params
            .iter()
            .find(|(k, _)| k == "SIZE")
            .and_then(|(_, v)| size_value(v.as_deref()?));
        if size.is_some_and(|s| s > self.limit()) {
            return reply(
                &mut self.out,
                "552 sorry, that message size exceeds my databytes limit (#5.3.4)",
            );
        }
        let addr = address::rewrite_ip_literal(&path.addr, &self.p.local_ips, &self.p.localiphost);
        self.sender = Some(addr);
        self.rcpts.clear();
        reply(&mut self.out, "250 ok");
    }

    fn bad_sender(&self, s: &str) -> bool {
        if self.p.badmailfrom.is_empty() {
            return false;
        }
        let s = s.to_ascii_lowercase();
        let dom = s.rfind('@').map(|i| &s[i..]);
        self.p
            .badmailfrom
            .iter()
            .any(|b| *b == s || Some(b.as_str()) == dom)
    }

    fn allowed_domain(&self, addr: &str) -> bool {
        let Some(list) = &self.p.rcpthosts else {
            return true;
        };
        // A bare name (`postmaster`) is delivered to envnoathost: check that domain.
        let d = match addr.rfind('@') {
            Some(i) => &addr[i + 1..],
            None => &self.p.envnoathost,
        }
        .to_ascii_lowercase();
        let hit = |l: &Vec<String>| {
            l.iter().any(|h| {
                let h = h.to_ascii_lowercase();
                if h.starts_with('.') {
                    d.ends_with(&h)
                } else {
                    d == h
                }
            })
        };
        hit(list) || hit(&self.p.morercpthosts)
    }

    fn rcpt(&mut self, arg: &[u8]) {
        let Some(sender) = &self.sender else {
            return reply(&mut self.out, "503 MAIL first (#5.5.1)");
        };
        let path = match address::parse(arg, "TO") {
            Ok(p) if !p.addr.is_empty() => p,
            Ok(_) | Err(AddrError::Syntax | AddrError::TooLong) => {
                return reply(&mut self.out, "555 syntax error (#5.5.4)")
            }
        };
        if self.bad_sender(sender) {
            return reply(
                &mut self.out,
                "553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)",
            );
        }
        let mut addr =
            address::rewrite_ip_literal(&path.addr, &self.p.local_ips, &self.p.localiphost);
        match &self.p.relayclient {
            Some(suffix) => addr.push_str(suffix),
            // An authenticated user relays, as RELAYCLIENT="" would let it.
            None if self.user.is_some() => {}
            None => {
                if !self.allowed_domain(&addr) {
                    return reply(
                        &mut self.out,
                        "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
                    );
                }
                // Relay probes: %, ! or @ hidden in the local part, of a bare name too.
                // Refusing them here also keeps percenthack (applied later, by the queue
                // manager) from turning an accepted address into a relayed one.
                let local = addr.rfind('@').map_or(addr.as_str(), |i| &addr[..i]);
                if local.contains(['%', '!', '@']) {
                    return reply(&mut self.out, "553 we don't relay (#5.7.1)");
                }
            }
        }
        if self.p.null_sender_one_rcpt && sender.is_empty() && !self.rcpts.is_empty() {
            return reply(
                &mut self.out,
                "553 sorry, a message from the null sender takes one recipient (#5.5.3)",
            );
        }
        if self.rcpts.len() >= MAX_RCPTS {
            return reply(&mut self.out, "452 too many recipients (#4.5.3)");
        }
        if self.p.rcpt_check.as_ref().is_some_and(|c| !(c.0)(&addr)) {
            return reply(
                &mut self.out,
                "550 sorry, no mailbox here by that name (#5.1.1)",
            );
        }
        self.rcpts.push(addr);
        reply(&mut self.out, "250 ok");
    }

    fn data_cmd(&mut self) {
        if self.sender.is_none() {
            return reply(&mut self.out, "503 MAIL first (#5.5.1)");
        }
        if self.rcpts.is_empty() {
            return reply(&mut self.out, "503 RCPT first (#5.5.1)");
        }
        // Like qmail-smtpd, the trace line is written before the message text.
        // RFC 3848's protocol names; the authenticated user in the info field, as qmail's
        // SMTP AUTH patches put it (`(fred@10.0.0.1)`).
        let proto = match (self.tls, self.user.is_some()) {
            (false, false) => "SMTP",
            (true, false) => "ESMTPS",
            (false, true) => "ESMTPA",
            (true, true) => "ESMTPSA",
        };
        let mut peer = self.p.peer.clone();
        if let Some(u) = &self.user {
            peer.remote_info = Some(u.clone());
        }
        let received = super::received::line(
            &peer,
            self.helo.as_deref(),
            &self.p.local_host,
            proto,
            self.now,
        );
        self.data = received.into_bytes();
        self.count = 0;
        self.raw = 0;
        self.mode = Mode::Data {
            st: Data::LineStart,
            hops: Hops::default(),
            too_big: false,
        };
        reply(&mut self.out, "354 go ahead");
    }

    /// Consume DATA bytes; returns bytes used. CRLF → LF, dot-unstuffing, end at CRLF.CRLF,
    /// a bare LF anywhere closes the session with 421 (which also defeats SMTP smuggling).
    fn data_bytes(&mut self, buf: &[u8]) -> usize {
        let limit = self.limit();
        let Mode::Data {
            mut st,
            mut hops,
            mut too_big,
        } = std::mem::replace(&mut self.mode, Mode::Command)
        else {
            return 0;
        };
        let data = &mut self.data;
        let count = &mut self.count;
        let mut emit = |b: u8| {
            if too_big {
                return;
            }
            if *count >= limit {
                // Keep reading to the end, but store nothing more.
                too_big = true;
                *data = Vec::new();
                return;
            }
            *count += 1;
            data.push(b);
            hops.see(b);
        };
        for (i, &b) in buf.iter().enumerate() {
            st = match (st, b) {
                (Data::Cr, b'\n') => {
                    emit(b'\n');
                    Data::LineStart
                }
                (Data::DotCr, b'\n') => {
                    self.end_of_data(hops.count, too_big);
                    return i + 1;
                }
                // qmail says 451 here; RFC 5321 3.8 lets a server close only after 421.
                (_, b'\n') => {
                    self.out
                        .extend_from_slice(b"421 See https://cr.yp.to/docs/smtplf.html.\r\n");
                    self.mode = Mode::Closed;
                    self.data = Vec::new();
                    return i + 1;
                }
                (Data::LineStart, b'.') => Data::Dot,
                (Data::Dot, b'\r') => Data::DotCr,
                (Data::LineStart | Data::Mid, b'\r') => Data::Cr,
                (Data::LineStart | Data::Mid | Data::Dot, _) => {
                    emit(b);
                    Data::Mid
                }
                // A CR not followed by LF is kept as it is.
                (Data::Cr | Data::DotCr, b'\r') => {
                    emit(b'\r');
                    Data::Cr
                }
                (Data::Cr | Data::DotCr, _) => {
                    emit(b'\r');
                    emit(b);
                    Data::Mid
                }
            };
        }
        self.mode = Mode::Data { st, hops, too_big };
        buf.len()
    }

    fn end_of_data(&mut self, hops: usize, too_big: bool) {
        if too_big {
            self.data.clear();
            self.reset();
            self.mode = Mode::Command;
            return reply(
                &mut self.out,
                "552 sorry, that message size exceeds my databytes limit (#5.3.4)",
            );
        }
        if hops >= MAX_HOPS {
            self.data.clear();
            self.reset();
            self.mode = Mode::Command;
            return reply(
                &mut self.out,
                "554 too many hops, this message is looping (#5.4.6)",
            );
        }
        self.mode = Mode::AwaitCommit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        let p = Policy {
            greeting: "heaven.af.mil".into(),
            local_host: "heaven.af.mil".into(),
            rcpthosts: Some(vec!["heaven.af.mil".into()]),
            morercpthosts: vec![],
            badmailfrom: vec![],
            relayclient: None,
            databytes: 0,
            localiphost: "heaven.af.mil".into(),
            local_ips: vec![],
            peer: Default::default(),
            envnoathost: "heaven.af.mil".into(),
            null_sender_one_rcpt: false,
            rcpt_check: None,
            secure: Secure {
                auth: true,
                auth_plaintext: true,
                ..Secure::default()
            },
        };
        let mut s = Session::new(p, 1);
        s.take_output();
        s
    }

    /// The replies to `input`, fed in pieces of `chunk` bytes.
    fn replies(input: &[u8], chunk: usize) -> String {
        let mut s = session();
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            s.input(c);
            out.extend(s.take_output());
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn bare_lf_does_not_end_a_command_line() {
        for chunk in [1, 2, 5, usize::MAX] {
            let r = replies(b"NOOP\nNOOP\r\nNOOP\r\n", chunk);
            assert_eq!(
                r, "500 bare LF in command line (#5.5.2)\r\n250 ok\r\n",
                "{chunk}"
            );
        }
    }

    #[test]
    fn bare_lf_lines_inject_nothing() {
        // Each would run a second command if LF ended the line.
        let r = replies(
            b"HELO a\nRSET\r\nMAIL FROM:<a@b>\nRCPT TO:<x@y>\r\nRCPT TO:<f@heaven.af.mil>\r\n",
            3,
        );
        assert_eq!(
            r,
            "500 bare LF in command line (#5.5.2)\r\n500 bare LF in command line (#5.5.2)\r\n503 MAIL first (#5.5.1)\r\n"
        );
        // A lone LF, and several LFs, before the CRLF: still one line.
        assert_eq!(
            replies(b"\n\n\r\nNOOP\r\n", 1),
            "500 bare LF in command line (#5.5.2)\r\n250 ok\r\n"
        );
    }

    #[test]
    fn crlf_split_across_reads_still_ends_the_line() {
        assert_eq!(replies(b"NOOP\r\nNOOP\r\n", 5), "250 ok\r\n250 ok\r\n");
        // A CR then a bare LF later is no CRLF.
        assert_eq!(
            replies(b"NO\rOP\nx\r\n", 3),
            "500 bare LF in command line (#5.5.2)\r\n"
        );
    }

    #[test]
    fn overlong_line_with_bare_lf_is_answered_once() {
        let mut input = vec![b'x'; MAX_LINE + 10];
        input[100] = b'\n';
        input.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(
            replies(&input, 700),
            "500 command line too long (#5.5.2)\r\n250 ok\r\n"
        );
    }

    #[test]
    fn bare_lf_in_an_auth_exchange_abandons_it() {
        let r = replies(b"AUTH LOGIN\r\nZnJlZA==\nx\r\nNOOP\r\n", 4);
        assert_eq!(
            r,
            "334 VXNlcm5hbWU6\r\n500 bare LF in command line (#5.5.2)\r\n250 ok\r\n"
        );
    }

    #[test]
    fn data_keeps_refusing_bare_lf_with_421() {
        let r = replies(
            b"MAIL FROM:<a@b>\r\nRCPT TO:<f@heaven.af.mil>\r\nDATA\r\nx\ny\r\n.\r\n",
            4,
        );
        assert!(
            r.ends_with("354 go ahead\r\n421 See https://cr.yp.to/docs/smtplf.html.\r\n"),
            "{r}"
        );
    }
}
