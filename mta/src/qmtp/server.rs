//! The QMTP server's reading of packages (qmail-qmtpd), as a sans-IO state machine.
//!
//! A package is three netstrings: the message (its first byte says how its lines end: `\n`,
//! or `\r\n` for CRLF), the sender, and a netstring of recipient netstrings. The driver
//! answers each [`Step::Package`] with one reply per recipient ([`Session::answer`]); then
//! the next package may follow on the same connection. Memory is bounded: a message over the
//! limit is read past and refused, sender and recipient lists have fixed limits, and input
//! is fed only when the session is idle.

use super::Reply;
use crate::netstring::{self, NetstringError, Reader};

/// Longest sender kept.
pub const MAX_SENDER: u64 = 1000;
/// Longest recipient list (its netstrings together).
pub const MAX_RECIPIENTS: u64 = 1 << 20;

/// A package read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The message with LF line ends, or why it cannot be taken.
    pub message: Result<Vec<u8>, Reply>,
    pub sender: String,
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the output, then feed more input.
    Idle,
    /// Decide each recipient, then call [`Session::answer`].
    Package(Package),
    /// The client broke the protocol: close the connection.
    Close(NetstringError),
}

#[derive(Debug)]
pub struct Session {
    reader: Reader,
    limit: u64,
    message: Option<Result<Vec<u8>, Reply>>,
    sender: Option<String>,
    pending: Vec<u8>,
    out: Vec<u8>,
}

impl Session {
    /// `limit`: the largest message taken (databytes, or a memory bound).
    pub fn new(limit: u64) -> Session {
        Session {
            reader: Reader::new(limit.saturating_add(2), true),
            limit,
            message: None,
            sender: None,
            pending: Vec::new(),
            out: Vec::new(),
        }
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// True between packages (the client may close here).
    pub fn between_packages(&self) -> bool {
        self.message.is_none() && self.reader.at_start() && self.pending.is_empty()
    }

    /// Feed bytes (only after [`Step::Idle`]; `&[]` to go on after a package's answer).
    pub fn input(&mut self, bytes: &[u8]) -> Step {
        self.pending.extend_from_slice(bytes);
        let mut used = 0;
        let step = loop {
            if used == self.pending.len() {
                break Step::Idle;
            }
            let (n, done) = match self.reader.feed(&self.pending[used..]) {
                Ok(r) => r,
                Err(e) => break Step::Close(e),
            };
            used += n;
            if let Some(ns) = done {
                match self.part(ns) {
                    Ok(Some(p)) => break Step::Package(p),
                    Ok(None) => {}
                    Err(e) => break Step::Close(e),
                }
            }
        };
        self.pending.drain(..used);
        step
    }

    /// A netstring of the package has come: keep it, and set up the reader for the next.
    fn part(&mut self, ns: netstring::Netstring) -> Result<Option<Package>, NetstringError> {
        if self.message.is_none() {
            self.message = Some(if ns.skipped || ns.data.len() as u64 > self.limit + 2 {
                Err(super::too_big())
            } else {
                line_ends(ns.data)
            });
            self.reader = Reader::new(MAX_SENDER, false);
            return Ok(None);
        }
        if self.sender.is_none() {
            self.sender = Some(String::from_utf8_lossy(&ns.data).into_owned());
            self.reader = Reader::new(MAX_RECIPIENTS, false);
            return Ok(None);
        }
        let recipients = netstring::parse_all(&ns.data)?
            .into_iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        self.reader = Reader::new(self.limit.saturating_add(2), true);
        Ok(Some(Package {
            message: self.message.take().unwrap_or(Ok(Vec::new())),
            sender: self.sender.take().unwrap_or_default(),
            recipients,
        }))
    }

    /// One reply per recipient of the last package, in order.
    pub fn answer(&mut self, replies: &[Reply]) {
        for r in replies {
            self.out.extend_from_slice(&r.encode());
        }
    }
}

/// The message with LF line ends, from its line-ending convention byte(s).
fn line_ends(mut data: Vec<u8>) -> Result<Vec<u8>, Reply> {
    match data.first() {
        Some(b'\n') => {
            data.remove(0);
            Ok(data)
        }
        Some(b'\r') if data.get(1) == Some(&b'\n') => {
            let mut out = Vec::with_capacity(data.len());
            let mut i = 2;
            while i < data.len() {
                if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                out.push(data[i]);
                i += 1;
            }
            Ok(out)
        }
        _ => Err(Reply::Perm(
            "sorry, I do not understand that line-ending convention (#5.6.1)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netstring::encode;

    fn package(msg: &[u8], sender: &str, rcpts: &[&str]) -> Vec<u8> {
        let list: Vec<u8> = rcpts.iter().flat_map(|r| encode(r.as_bytes())).collect();
        [encode(msg), encode(sender.as_bytes()), encode(&list)].concat()
    }

    #[test]
    fn packages_in_any_pieces_then_replies() {
        let wire = [
            package(b"\nSubject: a\n\nhi\n", "joe@x", &["fred@y", "joe@y"]),
            package(b"\r\nA: b\r\n\r\nc\r\n", "", &["p@q"]),
        ]
        .concat();
        for split in [1, 3, 7, wire.len()] {
            let mut s = Session::new(1000);
            let mut got = Vec::new();
            for piece in wire.chunks(split) {
                let mut step = s.input(piece);
                while let Step::Package(p) = step {
                    got.push(p);
                    s.answer(&[Reply::Ok("ok".into())]);
                    step = s.input(&[]);
                }
                assert_eq!(step, Step::Idle);
            }
            assert!(s.between_packages());
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].message, Ok(b"Subject: a\n\nhi\n".to_vec()));
            assert_eq!(got[0].recipients, vec!["fred@y", "joe@y"]);
            assert_eq!(got[1].message, Ok(b"A: b\n\nc\n".to_vec()));
            assert_eq!(got[1].sender, "");
            assert_eq!(s.take_output(), b"3:Kok,3:Kok,");
        }
    }

    #[test]
    fn too_big_bad_convention_and_broken_framing() {
        let mut s = Session::new(5);
        let Step::Package(p) = s.input(&package(b"\n1234567890", "a", &["b"])) else {
            panic!()
        };
        assert_eq!(p.message, Err(crate::qmtp::too_big()));
        let Step::Package(p) = s.input(&package(b"xy", "a", &["b"])) else {
            panic!()
        };
        assert!(matches!(p.message, Err(Reply::Perm(_))));
        assert!(matches!(Session::new(5).input(b"3:abc;"), Step::Close(_)));
        let bad_list = [encode(b"\n"), encode(b"a"), encode(b"zz")].concat();
        assert!(matches!(Session::new(5).input(&bad_list), Step::Close(_)));
    }
}
