//! STARTTLS and AUTH in the SMTP server session, sans IO: what is offered when, the reset
//! after STARTTLS (RFC 3207 4.2), the command-injection case, the AUTH exchanges, relaying
//! and the Received line of an authenticated session.

use mta::smtp::auth::Credentials;
use mta::smtp::received::Peer;
use mta::smtp::server::{AuthResult, Policy, Secure, Session, Step};

fn policy(secure: Secure) -> Policy {
    Policy {
        greeting: "heaven.af.mil".into(),
        local_host: "heaven.af.mil".into(),
        rcpthosts: Some(vec!["heaven.af.mil".into()]),
        morercpthosts: vec![],
        badmailfrom: vec![],
        relayclient: None,
        databytes: 0,
        localiphost: "heaven.af.mil".into(),
        local_ips: vec!["127.0.0.1".parse().unwrap()],
        envnoathost: "heaven.af.mil".into(),
        null_sender_one_rcpt: true,
        rcpt_check: None,
        secure,
        peer: Peer {
            remote_ip: "10.1.2.3".into(),
            ..Peer::default()
        },
    }
}

const TLS_AUTH: Secure = Secure {
    starttls: true,
    implicit: false,
    auth: true,
    auth_plaintext: false,
};

/// A driver: STARTTLS always succeeds, `fred`/`secret` is the only good password, every
/// message is committed. Returns the replies and the messages' data.
struct Driver {
    s: Session,
    out: String,
    checked: Vec<Credentials>,
    messages: Vec<String>,
}

impl Driver {
    fn new(secure: Secure) -> Self {
        let mut s = Session::new(policy(secure), 1_000_000_000);
        let out = String::from_utf8(s.take_output()).unwrap();
        Driver {
            s,
            out,
            checked: Vec::new(),
            messages: Vec::new(),
        }
    }

    fn send(&mut self, input: &str) -> &mut Self {
        let mut step = self.s.input(input.as_bytes());
        loop {
            self.out
                .push_str(&String::from_utf8(self.s.take_output()).unwrap());
            step = match step {
                Step::StartTls => {
                    self.s.tls_started();
                    self.out.push_str("[TLS]\r\n");
                    return self;
                }
                Step::Auth(c) => {
                    let ok = c.user == "fred" && c.password == b"secret";
                    self.checked.push(c);
                    self.s
                        .auth_checked(if ok { AuthResult::Ok } else { AuthResult::Bad });
                    self.s.input(b"")
                }
                Step::Message(t) => {
                    self.messages.push(String::from_utf8(t.data).unwrap());
                    self.s.committed(Ok("1".into()));
                    self.s.input(b"")
                }
                Step::NeedInput | Step::Close => return self,
            };
        }
    }

    fn take(&mut self) -> String {
        std::mem::take(&mut self.out)
    }
}

#[test]
fn starttls_offered_with_a_certificate_and_auth_only_inside_tls() {
    let mut d = Driver::new(Secure::default());
    d.take();
    let r = d
        .send("EHLO c\r\nSTARTTLS\r\nAUTH PLAIN AGZyZWQAc2VjcmV0\r\n")
        .take();
    assert!(!r.contains("STARTTLS") && !r.contains("AUTH"), "{r}");
    assert!(r.contains("502 unimplemented (#5.5.1)\r\n502"), "{r}");

    let mut d = Driver::new(TLS_AUTH);
    d.take();
    let r = d.send("EHLO c\r\nAUTH PLAIN AGZyZWQAc2VjcmV0\r\n").take();
    assert!(r.contains("250-STARTTLS\r\n"), "{r}");
    assert!(!r.contains("AUTH"), "AUTH offered in the clear: {r}");
    assert!(
        r.ends_with("538 encryption required for requested authentication mechanism (#5.7.11)\r\n"),
        "{r}"
    );
    assert!(d.checked.is_empty(), "credentials checked in the clear");

    let r = d.send("STARTTLS\r\n").send("EHLO c\r\n").take();
    assert!(r.starts_with("220 ready to start TLS\r\n[TLS]\r\n"), "{r}");
    assert!(
        !r.contains("STARTTLS\r\n"),
        "STARTTLS offered inside TLS: {r}"
    );
    assert!(
        r.contains("250-AUTH LOGIN PLAIN\r\n250-AUTH=LOGIN PLAIN\r\n"),
        "{r}"
    );
    let r = d.send("STARTTLS\r\n").take();
    assert_eq!(r, "503 TLS already active (#5.5.1)\r\n");
}

#[test]
fn plaintext_auth_when_the_switch_allows_it() {
    let mut d = Driver::new(Secure {
        auth_plaintext: true,
        ..TLS_AUTH
    });
    let r = d.send("EHLO c\r\nAUTH PLAIN AGZyZWQAc2VjcmV0\r\n").take();
    assert!(r.contains("250-AUTH LOGIN PLAIN"), "{r}");
    assert!(r.ends_with("235 ok, go ahead (#2.0.0)\r\n"), "{r}");
}

#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    // CVE-2011-0411: whatever follows STARTTLS in the same packet was sent in the clear and
    // must never be taken as sent inside TLS.
    let mut d = Driver::new(TLS_AUTH);
    d.take();
    let r = d
        .send("EHLO c\r\nMAIL FROM:<a@b.c>\r\nSTARTTLS\r\nRSET\r\nMAIL FROM:<evil@x>\r\n")
        .take();
    assert!(
        r.ends_with("250 ok\r\n220 ready to start TLS\r\n[TLS]\r\n"),
        "{r}"
    );
    // Inside TLS: nothing of the clear-text session survived, nothing injected ran.
    let r = d.send("RCPT TO:<fred@heaven.af.mil>\r\n").take();
    assert_eq!(r, "503 MAIL first (#5.5.1)\r\n");
    assert!(d.s.buffered() == 0);
}

#[test]
fn starttls_resets_helo_and_authentication() {
    let mut d = Driver::new(Secure {
        auth_plaintext: true,
        ..TLS_AUTH
    });
    d.send("EHLO c\r\nAUTH PLAIN AGZyZWQAc2VjcmV0\r\n");
    assert_eq!(d.s.user(), Some("fred"));
    d.send("STARTTLS\r\n");
    assert_eq!(d.s.user(), None, "authentication survived STARTTLS");
    assert!(d.s.is_tls());
}

#[test]
fn auth_login_and_relaying() {
    let mut d = Driver::new(Secure {
        implicit: true,
        ..TLS_AUTH
    });
    d.take();
    let r = d
        .send("EHLO c\r\nMAIL FROM:<fred@heaven.af.mil>\r\nRCPT TO:<bill@far.example>\r\nRSET\r\n")
        .take();
    assert!(
        r.contains("553 sorry, that domain isn't in my list of allowed rcpthosts"),
        "{r}"
    );
    let r = d
        .send("AUTH LOGIN\r\n")
        .send("ZnJlZA==\r\n")
        .send("c2VjcmV0\r\n")
        .take();
    assert_eq!(
        r,
        "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 ok, go ahead (#2.0.0)\r\n"
    );
    let r = d.send("AUTH PLAIN\r\n").take();
    assert_eq!(r, "503 you're already authenticated (#5.5.0)\r\n");
    let r = d
        .send("MAIL FROM:<fred@heaven.af.mil> AUTH=<>\r\nRCPT TO:<bill@far.example>\r\nDATA\r\nhi\r\n.\r\n")
        .take();
    assert!(
        r.starts_with("250 ok\r\n250 ok\r\n354"),
        "relay refused: {r}"
    );
    assert_eq!(d.messages.len(), 1);
    assert!(
        d.messages[0].starts_with(
            "Received: from unknown (HELO c) (fred@10.1.2.3)\n  by heaven.af.mil with ESMTPSA;"
        ),
        "{}",
        d.messages[0]
    );
}

#[test]
fn wrong_passwords_are_refused_and_the_third_closes() {
    let mut d = Driver::new(Secure {
        implicit: true,
        ..TLS_AUTH
    });
    d.take();
    // "\0fred\0wrong"
    let r = d.send("AUTH PLAIN AGZyZWQAd3Jvbmc=\r\n").take();
    assert_eq!(r, "535 authentication failed (#5.7.8)\r\n");
    let r = d.send("AUTH PLAIN\r\n").send("AGZyZWQAd3Jvbmc=\r\n").take();
    assert_eq!(r, "334 \r\n535 authentication failed (#5.7.8)\r\n");
    let r = d
        .send("MAIL FROM:<a@b.c>\r\nRCPT TO:<bill@far.example>\r\nRSET\r\n")
        .take();
    assert!(r.contains("553 sorry"), "a failed AUTH let it relay: {r}");
    let r = d.send("AUTH LOGIN ZnJlZA==\r\n*\r\n").take();
    assert_eq!(
        r,
        "334 UGFzc3dvcmQ6\r\n501 auth exchange cancelled (#5.0.0)\r\n"
    );
    let r = d.send("AUTH PLAIN AGZyZWQAd3Jvbmc=\r\nNOOP\r\n").take();
    assert_eq!(
        r,
        "421 too many failed authentications, closing connection (#4.7.0)\r\n"
    );
    assert!(d.s.is_closed());
    assert_eq!(d.checked.len(), 3);
}

#[test]
fn auth_refused_inside_a_transaction_and_for_unknown_mechanisms() {
    let mut d = Driver::new(Secure {
        implicit: true,
        ..TLS_AUTH
    });
    d.take();
    let r = d
        .send("AUTH CRAM-MD5\r\nMAIL FROM:<a@b.c>\r\nAUTH PLAIN\r\n")
        .take();
    assert_eq!(
        r,
        "504 unrecognized authentication type (#5.5.4)\r\n250 ok\r\n503 no auth during mail transaction (#5.5.0)\r\n"
    );
}
