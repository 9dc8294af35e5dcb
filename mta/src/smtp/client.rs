//! The SMTP client session (qmail-remote's dialogue) as a sans-IO state machine: feed it the
//! server's bytes, send what it returns; it ends with an [`Outcome`] per the stage that failed.
//! One recipient per transaction, as qmail always does.

/// Longest reply line kept, and most lines in one reply (bounds memory on hostile servers).
pub const MAX_REPLY_LINE: usize = 4096;
pub const MAX_REPLY_LINES: usize = 100;

/// A complete SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The reply as qmail-remote quotes it: `Remote host said: 550 ...` lines.
    pub fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| format!("{} {l}", self.code))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    Syntax,
    TooLong,
}

/// Incremental reply parser: `ddd-text` continuation lines, `ddd text` last line.
#[derive(Debug, Default)]
pub struct ReplyParser {
    line: Vec<u8>,
    lines: Vec<String>,
    code: Option<u16>,
}

impl ReplyParser {
    /// Feed bytes; returns the replies completed and how many bytes were used (parsing stops
    /// after each complete reply so the caller can act on it).
    pub fn push(&mut self, buf: &[u8]) -> (Option<Result<Reply, ReplyError>>, usize) {
        for (i, &b) in buf.iter().enumerate() {
            if b != b'\n' {
                if self.line.len() >= MAX_REPLY_LINE {
                    return (Some(Err(ReplyError::TooLong)), i + 1);
                }
                self.line.push(b);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let r = self.line_done(&line);
            if r.is_some() {
                return (r, i + 1);
            }
        }
        (None, buf.len())
    }

    fn line_done(&mut self, line: &[u8]) -> Option<Result<Reply, ReplyError>> {
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Some(Err(ReplyError::Syntax));
        }
        let code = std::str::from_utf8(&line[..3]).ok()?.parse::<u16>().ok()?;
        if self.code.is_some_and(|c| c != code) || !(200..600).contains(&code) {
            return Some(Err(ReplyError::Syntax));
        }
        self.code = Some(code);
        let more = line.get(3) == Some(&b'-');
        let text = String::from_utf8_lossy(line.get(4..).unwrap_or_default()).into_owned();
        self.lines.push(text);
        if self.lines.len() > MAX_REPLY_LINES {
            return Some(Err(ReplyError::TooLong));
        }
        if more {
            return None;
        }
        self.code = None;
        Some(Ok(Reply {
            code,
            lines: std::mem::take(&mut self.lines),
        }))
    }
}

/// How a delivery attempt to one host ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered(String),
    /// Permanent failure for this recipient.
    Failed(String),
    /// Temporary failure.
    Deferred(String),
    /// This host would not talk (greeting or HELO failed): try the next one.
    NextHost(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    Data,
    Final,
    Quit,
    Done,
}

/// What the client wants of TLS on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsWant {
    /// Never (a retry after a failed opportunistic handshake).
    Off,
    /// STARTTLS when the server offers it.
    #[default]
    Opportunistic,
    /// STARTTLS or no delivery through this host.
    Required,
}

/// One transaction: greeting, EHLO (HELO if refused), STARTTLS and EHLO again if wanted and
/// offered, AUTH if configured, MAIL, RCPT, DATA, message, QUIT.
pub struct Client {
    host: String,
    helo: String,
    sender: String,
    recipient: String,
    stage: Stage,
    parser: ReplyParser,
    outcome: Option<Outcome>,
    tls_want: TlsWant,
    tls: bool,
    /// Smarthost credentials, sent only inside TLS.
    auth: Option<(String, String)>,
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Send(Vec<u8>),
    /// Send the message, encoded by a [`BodyEncoder`] and ended with `.`, then read on.
    SendBody,
    NeedInput,
    Done(Outcome),
    /// The server said `220` to STARTTLS: drop any bytes read after that reply, run the TLS
    /// handshake, then call [`Client::tls_started`] (or [`Client::tls_failed`]).
    StartTls,
}

/// Encode a message for DATA: every line end (LF, CRLF, and a bare CR too) becomes CRLF,
/// then lines starting with `.` are dot-stuffed, and `.` ends it. Normalising first means no
/// body (`\r.\r\n`, `\n.\n`) can look like the end of DATA to a lenient next hop that takes
/// a bare CR or LF for a line end (SMTP smuggling).
pub fn encode_body(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 32 + 8);
    let mut e = BodyEncoder::default();
    e.push(message, &mut out);
    e.finish(&mut out);
    out
}

/// [`encode_body`] a piece at a time: the same bytes whatever the pieces.
#[derive(Debug, Clone, Copy)]
pub struct BodyEncoder {
    line_start: bool,
    /// The last piece ended in CR: an LF starting the next one belongs to it.
    after_cr: bool,
}

impl Default for BodyEncoder {
    fn default() -> Self {
        BodyEncoder {
            line_start: true,
            after_cr: false,
        }
    }
}

impl BodyEncoder {
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        for &b in piece {
            let lf_of_crlf = self.after_cr && b == b'\n';
            self.after_cr = b == b'\r';
            if lf_of_crlf {
                continue;
            }
            if b == b'\r' || b == b'\n' {
                out.extend_from_slice(b"\r\n");
                self.line_start = true;
                continue;
            }
            if self.line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            self.line_start = false;
        }
    }

    /// End the message: a last line end if needed, then `.`.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

impl Client {
    /// `host` names the server in reports (its address).
    pub fn new(host: &str, helo: &str, sender: &str, recipient: &str) -> Self {
        Client {
            host: host.to_string(),
            helo: helo.to_string(),
            sender: sender.to_string(),
            recipient: recipient.to_string(),
            stage: Stage::Greeting,
            parser: ReplyParser::default(),
            outcome: None,
            tls_want: TlsWant::Opportunistic,
            tls: false,
            auth: None,
        }
    }

    /// How much this connection wants TLS (default: opportunistic).
    pub fn with_tls(mut self, want: TlsWant) -> Self {
        self.tls_want = want;
        self
    }

    /// Authenticate (AUTH PLAIN) with these credentials; they make TLS required, since a
    /// password never goes out in the clear.
    pub fn with_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_string(), password.to_string()));
        self.tls_want = TlsWant::Required;
        self
    }

    /// The handshake after STARTTLS succeeded: start over with EHLO (RFC 3207 4.2).
    pub fn tls_started(&mut self) -> Step {
        self.tls = true;
        self.parser = ReplyParser::default();
        self.stage = Stage::Ehlo;
        Step::Send(format!("EHLO {}\r\n", self.helo).into_bytes())
    }

    /// The handshake after STARTTLS failed: this host is of no use now.
    pub fn tls_failed(&mut self, why: &str) -> Outcome {
        self.stage = Stage::Done;
        Outcome::NextHost(format!(
            "Connected to {} but the TLS handshake failed: {why}. (#4.7.0)",
            self.host
        ))
    }

    /// True once the connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Feed the server's bytes (possibly empty); returns what to do.
    pub fn input(&mut self, buf: &[u8]) -> (Step, usize) {
        let (r, used) = self.parser.push(buf);
        match r {
            None => (Step::NeedInput, used),
            Some(Err(_)) => (
                Step::Done(Outcome::Deferred(format!(
                    "Connected to {} but the reply was not SMTP. (#4.4.2)",
                    self.host
                ))),
                used,
            ),
            Some(Ok(reply)) => (self.on_reply(reply), used),
        }
    }

    fn said(&self, what: &str, r: &Reply) -> String {
        format!("{what}\nRemote host said: {}", r.text())
    }

    /// 5xx is permanent, anything else that is not success temporary.
    fn by_code(c: u16, text: String) -> Outcome {
        if c >= 500 {
            Outcome::Failed(text)
        } else {
            Outcome::Deferred(text)
        }
    }

    fn quit_with(&mut self, o: Outcome) -> Step {
        self.outcome = Some(o);
        self.stage = Stage::Quit;
        Step::Send(b"QUIT\r\n".to_vec())
    }

    fn on_reply(&mut self, r: Reply) -> Step {
        let h = self.host.clone();
        let c = r.code;
        match self.stage {
            Stage::Greeting if c / 100 == 2 => {
                self.stage = Stage::Ehlo;
                Step::Send(format!("EHLO {}\r\n", self.helo).into_bytes())
            }
            Stage::Greeting => {
                let o = Outcome::NextHost(
                    self.said(&format!("Connected to {h} but greeting failed."), &r),
                );
                self.quit_with(o)
            }
            Stage::Ehlo if c == 250 => self.after_ehlo(&r),
            Stage::Ehlo if self.tls_want == TlsWant::Required => self.no_tls(&r),
            Stage::Ehlo => {
                self.stage = Stage::Helo;
                Step::Send(format!("HELO {}\r\n", self.helo).into_bytes())
            }
            Stage::StartTls | Stage::Auth => self.on_secure_reply(r),
            Stage::Helo if c == 250 => self.mail(),
            Stage::Helo => {
                let o = Outcome::NextHost(
                    self.said(&format!("Connected to {h} but my name was rejected."), &r),
                );
                self.quit_with(o)
            }
            Stage::Mail if c / 100 == 2 => {
                self.stage = Stage::Rcpt;
                Step::Send(format!("RCPT TO:<{}>\r\n", self.recipient).into_bytes())
            }
            Stage::Mail => {
                let t = self.said(&format!("Connected to {h} but sender was rejected."), &r);
                self.quit_with(Self::by_code(c, t))
            }
            Stage::Rcpt if c / 100 == 2 => {
                self.stage = Stage::Data;
                Step::Send(b"DATA\r\n".to_vec())
            }
            Stage::Rcpt => {
                let t = self.said(&format!("{h} does not like recipient."), &r);
                self.quit_with(Self::by_code(c, t))
            }
            Stage::Data if c == 354 => {
                self.stage = Stage::Final;
                Step::SendBody
            }
            Stage::Data => {
                let t = self.said(&format!("{h} failed on DATA command."), &r);
                self.quit_with(Self::by_code(c, t))
            }
            Stage::Final => {
                let o = if c / 100 == 2 {
                    Outcome::Delivered(self.said(&format!("{h} accepted message."), &r))
                } else {
                    let t = self.said(&format!("{h} failed after I sent the message."), &r);
                    Self::by_code(c, t)
                };
                self.quit_with(o)
            }
            Stage::Quit | Stage::Done => {
                self.stage = Stage::Done;
                Step::Done(self.outcome.take().unwrap_or_else(|| {
                    Outcome::Deferred(format!(
                        "Connected to {h} but the dialogue went wrong. (#4.4.2)"
                    ))
                }))
            }
        }
    }

    /// The reply to STARTTLS or AUTH.
    fn on_secure_reply(&mut self, r: Reply) -> Step {
        match (self.stage, r.code) {
            (Stage::StartTls, 220) => Step::StartTls,
            (Stage::StartTls, _) if self.tls_want == TlsWant::Required => self.no_tls(&r),
            (Stage::StartTls, _) | (Stage::Auth, 235) => self.mail(),
            _ => {
                let h = &self.host;
                let t = self.said(
                    &format!("Connected to {h} but authentication was rejected."),
                    &r,
                );
                self.quit_with(Outcome::Deferred(t))
            }
        }
    }

    /// EHLO answered: STARTTLS if wanted and offered (or required), AUTH if configured,
    /// else the transaction.
    fn after_ehlo(&mut self, r: &Reply) -> Step {
        let has = |kw: &str| {
            r.lines.iter().skip(1).any(|l| {
                let mut w = l.split_ascii_whitespace();
                w.next().is_some_and(|k| k.eq_ignore_ascii_case(kw))
            })
        };
        if !self.tls && self.tls_want != TlsWant::Off {
            if has("STARTTLS") {
                self.stage = Stage::StartTls;
                return Step::Send(b"STARTTLS\r\n".to_vec());
            }
            if self.tls_want == TlsWant::Required {
                return self.no_tls(r);
            }
        }
        match &self.auth {
            Some((u, p)) if self.tls => {
                self.stage = Stage::Auth;
                Step::Send(super::auth::plain_command(u, p).into_bytes())
            }
            _ => self.mail(),
        }
    }

    /// TLS is required and this host will not do it.
    fn no_tls(&mut self, r: &Reply) -> Step {
        let h = &self.host;
        let t = self.said(
            &format!("Connected to {h} but it does not offer STARTTLS, which is required."),
            r,
        );
        self.quit_with(Outcome::NextHost(t))
    }

    fn mail(&mut self) -> Step {
        self.stage = Stage::Mail;
        Step::Send(format!("MAIL FROM:<{}>\r\n", self.sender).into_bytes())
    }

    /// The connection ended (EOF, reset or timeout) before the dialogue finished.
    pub fn connection_lost(&mut self) -> Outcome {
        let h = &self.host;
        match (self.stage, self.outcome.take()) {
            // The verdict was in; only the QUIT went unanswered.
            (Stage::Quit | Stage::Done, Some(o)) => o,
            (Stage::Final, _) => Outcome::Deferred(format!(
                "Connected to {h} but connection died. Possible duplicate! (#4.4.2)"
            )),
            (Stage::Greeting | Stage::Ehlo | Stage::Helo | Stage::StartTls, _) => {
                Outcome::NextHost(format!("Connected to {h} but connection died. (#4.4.2)"))
            }
            _ => Outcome::Deferred(format!("Connected to {h} but connection died. (#4.4.2)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Play a server script: each entry is the server's reply to the client's last send.
    fn play(replies: &[&str]) -> (Vec<String>, Outcome) {
        let c = Client::new("10.0.0.9", "me.example", "a@me.example", "b@far.example");
        play_with(c, replies)
    }

    /// As [`play`] with a configured client; a STARTTLS handshake always succeeds and shows
    /// as `[TLS]`.
    fn play_with(mut c: Client, replies: &[&str]) -> (Vec<String>, Outcome) {
        let mut sent = Vec::new();
        for r in replies {
            let bytes = r.as_bytes();
            let mut at = 0;
            loop {
                let (step, used) = c.input(&bytes[at..]);
                at += used;
                match step {
                    Step::Send(b) => sent.push(String::from_utf8(b).unwrap()),
                    Step::SendBody => sent
                        .push(String::from_utf8(encode_body(b"Subject: x\n\n.dot\nend")).unwrap()),
                    Step::Done(o) => return (sent, o),
                    Step::StartTls => {
                        sent.push("[TLS]".into());
                        let Step::Send(b) = c.tls_started() else {
                            panic!("no EHLO after TLS")
                        };
                        sent.push(String::from_utf8(b).unwrap());
                        break;
                    }
                    Step::NeedInput => {}
                }
                if at >= bytes.len() {
                    break;
                }
            }
        }
        let o = c.connection_lost();
        (sent, o)
    }

    #[test]
    fn successful_transaction() {
        let (sent, o) = play(&[
            "220 far ESMTP\r\n",
            "250-far\r\n250 PIPELINING\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 ok 123 qp 9\r\n",
            "221 bye\r\n",
        ]);
        assert_eq!(
            sent,
            vec![
                "EHLO me.example\r\n",
                "MAIL FROM:<a@me.example>\r\n",
                "RCPT TO:<b@far.example>\r\n",
                "DATA\r\n",
                "Subject: x\r\n\r\n..dot\r\nend\r\n.\r\n",
                "QUIT\r\n"
            ]
        );
        assert_eq!(
            o,
            Outcome::Delivered(
                "10.0.0.9 accepted message.\nRemote host said: 250 ok 123 qp 9".into()
            )
        );
    }

    const OK_TAIL: [&str; 5] = [
        "250 ok\r\n",
        "250 ok\r\n",
        "354 go\r\n",
        "250 ok\r\n",
        "221\r\n",
    ];

    #[test]
    fn starttls_when_offered_then_ehlo_again() {
        let mut script = vec![
            "220 far\r\n",
            "250-far\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
            "220 go ahead\r\n",
            "250-far\r\n250 8BITMIME\r\n",
        ];
        script.extend(OK_TAIL);
        let (sent, o) = play(&script);
        assert_eq!(
            sent[..5],
            [
                "EHLO me.example\r\n",
                "STARTTLS\r\n",
                "[TLS]",
                "EHLO me.example\r\n",
                "MAIL FROM:<a@me.example>\r\n"
            ]
        );
        assert!(matches!(o, Outcome::Delivered(_)), "{o:?}");
        // Not offered: opportunistic goes on in the clear, required gives up on the host.
        let mut script = vec!["220 far\r\n", "250-far\r\n250 8BITMIME\r\n"];
        script.extend(OK_TAIL);
        assert!(matches!(play(&script).1, Outcome::Delivered(_)));
        let c = Client::new("10.0.0.9", "me", "a@me", "b@far").with_tls(TlsWant::Required);
        let (sent, o) = play_with(c, &script);
        assert!(
            matches!(o, Outcome::NextHost(ref t) if t.contains("does not offer STARTTLS")),
            "{o:?}"
        );
        assert!(!sent.iter().any(|l| l.starts_with("MAIL")), "{sent:?}");
        // A refused STARTTLS: opportunistic goes on, required gives up.
        let mut script = vec!["220 far\r\n", "250-far\r\n250 STARTTLS\r\n", "454 no\r\n"];
        script.extend(OK_TAIL);
        assert!(matches!(play(&script).1, Outcome::Delivered(_)));
        let c = Client::new("10.0.0.9", "me", "a@me", "b@far").with_tls(TlsWant::Required);
        assert!(matches!(play_with(c, &script).1, Outcome::NextHost(_)));
    }

    #[test]
    fn auth_only_inside_tls() {
        let c = || Client::new("10.0.0.9", "me", "a@me", "b@far").with_auth("fred", "secret");
        let mut script = vec![
            "220 far\r\n",
            "250-far\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n",
            "220 go ahead\r\n",
            "250-far\r\n250 AUTH PLAIN LOGIN\r\n",
            "235 ok\r\n",
        ];
        script.extend(OK_TAIL);
        let (sent, o) = play_with(c(), &script);
        assert_eq!(sent[4], "AUTH PLAIN AGZyZWQAc2VjcmV0\r\n");
        assert_eq!(sent[5], "MAIL FROM:<a@me>\r\n");
        assert!(matches!(o, Outcome::Delivered(_)), "{o:?}");
        script[4] = "535 no\r\n";
        let (_, o) = play_with(c(), &script[..6]);
        assert!(
            matches!(o, Outcome::Deferred(ref t) if t.contains("authentication was rejected")),
            "{o:?}"
        );
        // No STARTTLS offered: the password is never sent.
        let (sent, o) = play_with(
            c(),
            &["220 far\r\n", "250-far\r\n250 AUTH PLAIN\r\n", "221\r\n"],
        );
        assert!(!sent.iter().any(|l| l.starts_with("AUTH")), "{sent:?}");
        assert!(matches!(o, Outcome::NextHost(_)), "{o:?}");
    }

    #[test]
    fn ehlo_refused_falls_back_to_helo() {
        let (sent, o) = play(&[
            "220 x\r\n",
            "502 no\r\n",
            "250 hi\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 ok\r\n",
            "221\r\n",
        ]);
        assert_eq!(sent[1], "HELO me.example\r\n");
        assert!(matches!(o, Outcome::Delivered(_)));
    }

    #[test]
    fn each_stage_maps_to_its_outcome() {
        let g = play(&["554 go away\r\n", "221 bye\r\n"]).1;
        assert!(
            matches!(g, Outcome::NextHost(ref t) if t.contains("greeting failed") && t.contains("554 go away"))
        );
        let g = play(&["421 busy\r\n"]).1;
        assert!(matches!(g, Outcome::NextHost(_)), "{g:?}");
        let h = play(&["220 x\r\n", "500 no\r\n", "501 no\r\n", "221\r\n"]).1;
        assert!(matches!(h, Outcome::NextHost(ref t) if t.contains("my name was rejected")));
        let m = play(&["220 x\r\n", "250 x\r\n", "553 bad sender\r\n", "221\r\n"]).1;
        assert!(matches!(m, Outcome::Failed(ref t) if t.contains("sender was rejected")));
        let m = play(&["220 x\r\n", "250 x\r\n", "451 later\r\n", "221\r\n"]).1;
        assert!(matches!(m, Outcome::Deferred(_)));
        let r = play(&[
            "220 x\r\n",
            "250 x\r\n",
            "250 ok\r\n",
            "550 no such user\r\n",
            "221\r\n",
        ])
        .1;
        assert_eq!(
            r,
            Outcome::Failed(
                "10.0.0.9 does not like recipient.\nRemote host said: 550 no such user".into()
            )
        );
        let r = play(&[
            "220 x\r\n",
            "250 x\r\n",
            "250 ok\r\n",
            "450 greylisted\r\n",
            "221\r\n",
        ])
        .1;
        assert!(matches!(r, Outcome::Deferred(_)));
        let d = play(&[
            "220 x\r\n",
            "250 x\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "554 no data\r\n",
            "221\r\n",
        ])
        .1;
        assert!(matches!(d, Outcome::Failed(ref t) if t.contains("failed on DATA command")));
        let f = play(&[
            "220 x\r\n",
            "250 x\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "552 too big\r\n",
            "221\r\n",
        ])
        .1;
        assert!(
            matches!(f, Outcome::Failed(ref t) if t.contains("failed after I sent the message"))
        );
        let f = play(&[
            "220 x\r\n",
            "250 x\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "451 later\r\n",
        ])
        .1;
        assert!(
            matches!(f, Outcome::Deferred(_)),
            "verdict kept when QUIT goes unanswered"
        );
    }

    #[test]
    fn connection_lost_after_the_dot_is_a_possible_duplicate() {
        let o = play(&[
            "220 x\r\n",
            "250 x\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
        ])
        .1;
        assert!(matches!(o, Outcome::Deferred(ref t) if t.contains("Possible duplicate!")));
        let o = play(&["220 x\r\n", "250 x\r\n", "250 ok\r\n"]).1;
        assert!(matches!(o, Outcome::Deferred(ref t) if !t.contains("duplicate")));
        assert!(matches!(play(&[]).1, Outcome::NextHost(_)));
    }

    #[test]
    fn replies_split_anywhere_and_bad_replies() {
        let mut p = ReplyParser::default();
        let all = b"250-a\r\n250-b\r\n250 c\r\n";
        let mut got = None;
        for b in all.chunks(1) {
            if let (Some(r), _) = p.push(b) {
                got = Some(r);
            }
        }
        assert_eq!(
            got,
            Some(Ok(Reply {
                code: 250,
                lines: vec!["a".into(), "b".into(), "c".into()]
            }))
        );
        let mut p = ReplyParser::default();
        assert_eq!(p.push(b"hello\r\n").0, Some(Err(ReplyError::Syntax)));
        let mut p = ReplyParser::default();
        assert_eq!(
            p.push(b"250-a\r\n251 b\r\n").0,
            Some(Err(ReplyError::Syntax))
        );
        let mut p = ReplyParser::default();
        assert_eq!(
            p.push(&vec![b'2'; MAX_REPLY_LINE + 1]).0,
            Some(Err(ReplyError::TooLong))
        );
    }

    #[test]
    fn body_encoding() {
        assert_eq!(
            encode_body(b"a\n.b\n..\nc"),
            b"a\r\n..b\r\n...\r\nc\r\n.\r\n".to_vec()
        );
        assert_eq!(encode_body(b""), b".\r\n".to_vec());
        assert_eq!(encode_body(b".\n"), b"..\r\n.\r\n".to_vec());
    }

    /// Only CRLF goes out, and the only line that is a lone dot is the end.
    fn strictly_encoded(wire: &[u8]) -> bool {
        let crlf_only = wire.iter().enumerate().all(|(i, &b)| match b {
            b'\r' => wire.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && wire[i - 1] == b'\r',
            _ => true,
        });
        let lines: Vec<&[u8]> = wire.split(|&b| b == b'\n').collect();
        let dots = lines.iter().filter(|l| **l == b".\r").count();
        crlf_only && dots == 1 && wire.ends_with(b"\r\n.\r\n") || wire == b".\r\n"
    }

    #[test]
    fn bare_cr_and_lf_are_normalised_before_dot_stuffing() {
        assert_eq!(
            encode_body(b"a\r.\r\nb\n.\nc\r\n.\r\nd\r\r.e"),
            b"a\r\n..\r\nb\r\n..\r\nc\r\n..\r\nd\r\n\r\n..e\r\n.\r\n".to_vec()
        );
        assert_eq!(encode_body(b"x\r"), b"x\r\n.\r\n".to_vec());
        // In pieces, split anywhere (inside a CRLF too), the same bytes.
        let m: &[u8] = b"a\r\n.b\r\rc\n\r\n..d\re";
        for cut in 0..=m.len() {
            let mut e = BodyEncoder::default();
            let mut out = Vec::new();
            e.push(&m[..cut], &mut out);
            e.push(&m[cut..], &mut out);
            e.finish(&mut out);
            assert_eq!(out, encode_body(m), "cut at {cut}");
        }
        let nasty: [&[u8]; 5] = [
            b"\r.\r\n",
            b"\n.\n",
            b"a\r\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\n.\rb",
            b"\r\r\n\n.\r.",
        ];
        for m in nasty {
            assert!(strictly_encoded(&encode_body(m)), "{m:?}");
        }
    }
}
