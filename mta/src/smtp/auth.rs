//! The SMTP AUTH exchange (RFC 4954) for the PLAIN (RFC 4616) and LOGIN mechanisms, sans IO:
//! the `AUTH` argument and each continuation line in, a challenge or the credentials out.
//! Checking the credentials is the driver's business (checkpassword or the password file).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Longest user name or password taken (longer ones are refused as malformed).
pub const MAX_FIELD: usize = 1024;

/// A user name and password. The password never appears in `Debug` output, so no log line
/// can carry it by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Where an exchange stands, waiting for the client's next line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// `AUTH PLAIN` without an initial response: the response comes next.
    Plain,
    /// `AUTH LOGIN`: the user name comes next.
    LoginUser,
    /// `AUTH LOGIN`: the password comes next.
    LoginPassword(String),
}

/// What the session does after a line of the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send this `334` challenge and wait for the client's answer.
    Challenge(&'static str, Exchange),
    /// The exchange is complete: check these.
    Check(Credentials),
    /// The exchange failed: send this reply (the session goes on, unauthenticated).
    Refuse(&'static str),
}

pub const MALFORMED: &str = "501 malformed auth input (#5.5.4)";
pub const CANCELLED: &str = "501 auth exchange cancelled (#5.0.0)";
pub const UNKNOWN: &str = "504 unrecognized authentication type (#5.5.4)";
const PLAIN_CHALLENGE: &str = "334 ";
/// base64 of `Username:` and `Password:`, as every LOGIN server sends them.
const USER_CHALLENGE: &str = "334 VXNlcm5hbWU6";
const PASSWORD_CHALLENGE: &str = "334 UGFzc3dvcmQ6";

/// The mechanisms offered, for EHLO.
pub const MECHANISMS: &str = "LOGIN PLAIN";

/// Start an exchange from the argument of `AUTH` (mechanism, then maybe an initial response).
pub fn start(arg: &[u8]) -> Next {
    let arg = String::from_utf8_lossy(arg);
    let mut words = arg.split_ascii_whitespace();
    let mech = words.next().unwrap_or("").to_ascii_uppercase();
    let initial = words.next();
    if words.next().is_some() {
        return Next::Refuse(MALFORMED);
    }
    match (mech.as_str(), initial) {
        ("PLAIN", None) => Next::Challenge(PLAIN_CHALLENGE, Exchange::Plain),
        // RFC 4954 4: `=` is an empty initial response.
        ("PLAIN", Some(r)) => step(Exchange::Plain, r.as_bytes()),
        ("LOGIN", None) => Next::Challenge(USER_CHALLENGE, Exchange::LoginUser),
        // RFC 4954 allows the user name as the initial response to LOGIN too.
        ("LOGIN", Some(r)) => step(Exchange::LoginUser, r.as_bytes()),
        _ => Next::Refuse(UNKNOWN),
    }
}

/// Go on with the client's answer (one line, without its line end).
pub fn step(ex: Exchange, line: &[u8]) -> Next {
    if line == b"*" {
        return Next::Refuse(CANCELLED);
    }
    let Some(bytes) = decode(line) else {
        return Next::Refuse(MALFORMED);
    };
    match ex {
        Exchange::Plain => plain(&bytes),
        Exchange::LoginUser => match user_name(bytes) {
            Some(u) => Next::Challenge(PASSWORD_CHALLENGE, Exchange::LoginPassword(u)),
            None => Next::Refuse(MALFORMED),
        },
        Exchange::LoginPassword(user) => match password(bytes) {
            Some(password) => Next::Check(Credentials { user, password }),
            None => Next::Refuse(MALFORMED),
        },
    }
}

fn decode(line: &[u8]) -> Option<Vec<u8>> {
    let line = line.trim_ascii();
    if line == b"=" {
        return Some(Vec::new());
    }
    if line.len() > 4 * MAX_FIELD {
        return None;
    }
    STANDARD.decode(line).ok()
}

/// RFC 4616: `authzid NUL authcid NUL passwd`; an authorization identity other than the
/// user's own is not supported.
fn plain(bytes: &[u8]) -> Next {
    let mut parts = bytes.split(|&b| b == 0);
    let (Some(authz), Some(authc), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Next::Refuse(MALFORMED);
    };
    let (Some(user), Some(password)) = (user_name(authc.to_vec()), password(pass.to_vec())) else {
        return Next::Refuse(MALFORMED);
    };
    if !authz.is_empty() && authz != user.as_bytes() {
        return Next::Refuse("535 authorization identity not allowed (#5.7.8)");
    }
    Next::Check(Credentials { user, password })
}

/// A user name: UTF-8, printable (no NUL, no line ends, no controls), not empty.
fn user_name(bytes: Vec<u8>) -> Option<String> {
    let s = String::from_utf8(bytes).ok()?;
    let ok = !s.is_empty() && s.len() <= MAX_FIELD && !s.chars().any(char::is_control);
    ok.then_some(s)
}

/// A password: any bytes but NUL (checkpassword's separator), not empty.
fn password(bytes: Vec<u8>) -> Option<Vec<u8>> {
    let ok = !bytes.is_empty() && bytes.len() <= MAX_FIELD && !bytes.contains(&0);
    ok.then_some(bytes)
}

/// The client's side: `AUTH PLAIN` with its initial response.
pub fn plain_command(user: &str, password: &str) -> String {
    let blob = STANDARD.encode(format!("\0{user}\0{password}"));
    format!("AUTH PLAIN {blob}\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(u: &str, p: &str) -> Next {
        Next::Check(Credentials {
            user: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn plain_with_and_without_initial_response() {
        // "\0fred\0secret"
        assert_eq!(start(b"PLAIN AGZyZWQAc2VjcmV0"), creds("fred", "secret"));
        let Next::Challenge(c, ex) = start(b"plain") else {
            panic!()
        };
        assert_eq!(c, "334 ");
        assert_eq!(step(ex, b"AGZyZWQAc2VjcmV0"), creds("fred", "secret"));
        // "fred\0fred\0secret": the user's own authorization identity.
        assert_eq!(
            start(b"PLAIN ZnJlZABmcmVkAHNlY3JldA=="),
            creds("fred", "secret")
        );
        // "joe\0fred\0secret"
        assert!(matches!(
            start(b"PLAIN am9lAGZyZWQAc2VjcmV0"),
            Next::Refuse(r) if r.starts_with("535")
        ));
    }

    #[test]
    fn login_two_steps() {
        let Next::Challenge(c, ex) = start(b"LOGIN") else {
            panic!()
        };
        assert_eq!(c, USER_CHALLENGE);
        let Next::Challenge(c, ex) = step(ex, b"ZnJlZA==") else {
            panic!()
        };
        assert_eq!(c, PASSWORD_CHALLENGE);
        assert_eq!(step(ex, b"c2VjcmV0"), creds("fred", "secret"));
        let Next::Challenge(_, ex) = start(b"LOGIN ZnJlZA==") else {
            panic!()
        };
        assert_eq!(ex, Exchange::LoginPassword("fred".into()));
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(start(b"CRAM-MD5"), Next::Refuse(UNKNOWN));
        assert_eq!(start(b""), Next::Refuse(UNKNOWN));
        assert_eq!(start(b"PLAIN !!!"), Next::Refuse(MALFORMED));
        assert_eq!(start(b"PLAIN ="), Next::Refuse(MALFORMED));
        assert_eq!(step(Exchange::LoginUser, b"*"), Next::Refuse(CANCELLED));
        // "\0fred" (no password field), "\0\0x" (no user)
        assert_eq!(start(b"PLAIN AGZyZWQ="), Next::Refuse(MALFORMED));
        assert_eq!(start(b"PLAIN AAB4"), Next::Refuse(MALFORMED));
        let long = STANDARD.encode(vec![b'a'; 5000]);
        assert_eq!(
            step(Exchange::LoginUser, long.as_bytes()),
            Next::Refuse(MALFORMED)
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let c = Credentials {
            user: "fred".into(),
            password: b"hunter2".to_vec(),
        };
        let d = format!("{c:?}");
        assert!(d.contains("fred") && !d.contains("hunter2"), "{d}");
    }

    #[test]
    fn client_command() {
        assert_eq!(
            plain_command("fred", "secret"),
            "AUTH PLAIN AGZyZWQAc2VjcmV0\r\n"
        );
    }
}
