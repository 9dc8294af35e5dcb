//! The SMTP AUTH exchange: the decoder alone over hostile lines, and a whole session inside
//! TLS where every AUTH verdict is drawn from the input.

use crate::smtp::auth::{self, Exchange, Next, MAX_FIELD};
use crate::smtp::server::{AuthResult, CommitError, Secure, Session, Step};

/// Byte 0 picks the chunk size and whether AUTH is allowed in the clear; the rest is the
/// client's input, each line also fed to the decoder on its own.
pub fn smtp_auth(data: &[u8]) {
    let Some(&c) = data.first() else {
        return;
    };
    decoder(&data[1..]);
    session(c, &data[1..]);
}

fn decoder(input: &[u8]) {
    let mut ex: Option<Exchange> = None;
    for line in input.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let next = match ex.take() {
            None => auth::start(line),
            Some(e) => auth::step(e, line),
        };
        match next {
            Next::Challenge(c, e) => {
                assert!(c.starts_with("334 "), "{c:?}");
                ex = Some(e);
            }
            Next::Check(c) => {
                assert!(!c.user.is_empty() && c.user.len() <= MAX_FIELD);
                assert!(!c.user.chars().any(char::is_control), "{:?}", c.user);
                assert!(!c.password.is_empty() && c.password.len() <= MAX_FIELD);
                assert!(!c.password.contains(&0));
                assert!(format!("{c:?}").contains("<hidden>"));
            }
            Next::Refuse(r) => assert!(r.starts_with('5') && r.as_bytes()[3] == b' ', "{r}"),
        }
    }
}

fn session(c: u8, input: &[u8]) {
    let secure = Secure {
        starttls: true,
        implicit: c & 0x80 != 0,
        auth: true,
        auth_plaintext: c & 0x40 != 0,
    };
    let mut p = super::policy(0);
    p.secure = secure;
    let mut s = Session::new(p, 0);
    let mut out = s.take_output();
    let mut verdicts = input.iter().rev().copied().cycle();
    let mut failures = 0;
    for chunk in input.chunks(usize::from(c % 32) + 1) {
        if s.is_closed() {
            break;
        }
        let mut step = s.input(chunk);
        loop {
            out.extend(s.take_output());
            step = match step {
                Step::Auth(cred) => {
                    assert!(
                        s.is_tls() || secure.auth_plaintext,
                        "AUTH checked in the clear"
                    );
                    assert!(!cred.password.is_empty());
                    let r = match verdicts.next().unwrap_or(0) % 3 {
                        0 => AuthResult::Ok,
                        1 => AuthResult::Bad,
                        _ => AuthResult::Temporary,
                    };
                    failures += u32::from(r == AuthResult::Bad);
                    s.auth_checked(r);
                    s.input(&[])
                }
                Step::Message(_) => {
                    s.committed(Err(CommitError::Temporary("no".into())));
                    s.input(&[])
                }
                Step::StartTls => {
                    s.tls_started();
                    break;
                }
                Step::NeedInput | Step::Close => break,
            };
        }
        assert!(failures < crate::smtp::server::MAX_AUTH_FAILURES || s.is_closed());
    }
    out.extend(s.take_output());
    super::check_replies(&out);
}
