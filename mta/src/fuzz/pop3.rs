//! POP3 and the netstring protocols (QMTP, QMQP) under arbitrary input.

use crate::netstring::{self, Reader};
use crate::pop3::mailbox::Msg;
use crate::pop3::session::{Login, Session, Step, MAX_LINE};
use crate::pop3::wire::{Counter, Encoder};
use crate::qmtp::{self, Reply};

fn msgs() -> Vec<Msg> {
    (1..=3)
        .map(|i| Msg {
            path: format!("cur/{i}.x:2,"),
            uid: format!("{i}.x"),
            size: 10 * i,
        })
        .collect()
}

/// The POP3 session: commands in arbitrary pieces, logins and message opens that succeed or
/// fail (byte 0: chunk size; byte 1: the driver's answers). Every reply line ends in CRLF,
/// the buffer stays bounded, QUIT deletes only listed messages, and a closed session stays
/// closed.
pub fn pop3_session(data: &[u8]) {
    let (Some(&c), Some(&d)) = (data.first(), data.get(1)) else {
        return;
    };
    let mut s = Session::new("<1.2@fuzz>".into());
    if d & 16 != 0 {
        s.offer_tls();
    }
    let mut out = s.take_output();
    let listed: Vec<String> = msgs().into_iter().map(|m| m.path).collect();
    'outer: for chunk in data[2..].chunks(usize::from(c % 32) + 1) {
        s.input(chunk);
        loop {
            match s.step() {
                Step::Idle => break,
                Step::Close => break 'outer,
                Step::StartTls => s.tls_started(),
                Step::Auth(cred) => {
                    assert!(!cred.user.is_empty());
                    s.authenticated(match d % 3 {
                        0 => Login::Ok(msgs()),
                        1 => Login::Bad,
                        _ => Login::Temp("later".into()),
                    });
                }
                Step::Send { index, path, lines } => {
                    assert_eq!(listed[index], path);
                    if d & 4 == 0 {
                        s.send_started(index, lines);
                    } else {
                        s.send_failed();
                    }
                }
                Step::Update(gone) => {
                    assert!(gone.iter().all(|g| listed.contains(g)));
                    s.updated(d & 8 == 0);
                    assert!(s.is_closed());
                }
            }
            out.extend(s.take_output());
        }
        out.extend(s.take_output());
    }
    out.extend(s.take_output());
    assert!(out.starts_with(b"+OK <1.2@fuzz>\r\n"));
    assert!(out.ends_with(b"\r\n") || out.is_empty());
    for line in out.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "reply line without CRLF: {line:?}");
        assert!(line.len() <= MAX_LINE + 64, "reply line too long");
    }
}

/// A message on the wire: whatever its bytes and pieces, unstuffing RETR's output gives back
/// exactly the counted size, and every line ends in CRLF.
pub fn pop3_wire(data: &[u8]) {
    let Some((&c, msg)) = data.split_first() else {
        return;
    };
    let mut e = Encoder::new(None);
    let mut count = Counter::default();
    let mut out = Vec::new();
    for piece in msg.chunks(usize::from(c % 16) + 1) {
        e.push(piece, &mut out);
        count.push(piece);
    }
    e.finish(&mut out);
    assert!(out.ends_with(b".\r\n"));
    let body = &out[..out.len() - 3];
    let mut unstuffed = 0u64;
    for line in body.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"));
        assert_ne!(line, b".\r\n", "an unstuffed terminator inside the message");
        unstuffed += line.len() as u64 - u64::from(line.starts_with(b"."));
    }
    assert_eq!(unstuffed, count.finish());
}

/// Netstrings and the QMTP server: the incremental reader agrees with the whole-buffer
/// parser whatever the pieces, and every package gets one reply per recipient.
pub fn netstrings(data: &[u8]) {
    let Some((&c, rest)) = data.split_first() else {
        return;
    };
    let size = usize::from(c % 16) + 1;
    let mut r = Reader::new(1 << 16, false);
    let mut first = None;
    'feed: for piece in rest.chunks(size) {
        let mut off = 0;
        while off < piece.len() {
            match r.feed(&piece[off..]) {
                Ok((n, done)) => {
                    off += n;
                    if let Some(ns) = done {
                        first = Some(ns.data);
                        break 'feed;
                    }
                }
                Err(_) => break 'feed,
            }
        }
    }
    if let (Some(f), Ok(all)) = (&first, netstring::parse_all(rest)) {
        assert_eq!(all.first().copied(), Some(f.as_slice()));
    }
    let mut s = qmtp::server::Session::new(u64::from(c) * 4);
    for piece in rest.chunks(size) {
        let mut step = s.input(piece);
        while let qmtp::server::Step::Package(p) = step {
            let replies = vec![Reply::Ok("ok".into()); p.recipients.len()];
            s.answer(&replies);
            let out = s.take_output();
            assert_eq!(
                netstring::parse_all(&out).map(|v| v.len()),
                Ok(p.recipients.len())
            );
            step = s.input(&[]);
        }
        if matches!(step, qmtp::server::Step::Close(_)) {
            break;
        }
    }
}
