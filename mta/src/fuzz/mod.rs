//! Fuzz entry points, shared by the libFuzzer targets in `fuzz/` and by the regular test that
//! replays their committed corpora. Each checks invariants beyond "no panic".

mod auth;
mod config;
mod inject;
mod pop3;
mod queue;
mod users;

pub use auth::smtp_auth;
pub use config::{control_files, smtpd_rules};
pub use inject::inject_headers;
pub use pop3::{netstrings, pop3_session, pop3_wire};
pub use queue::{log_recovery, todo_file};
pub use users::users_cdb;

use crate::smtp::address;
use crate::smtp::received::Peer;
use crate::smtp::server::{CommitError, Policy, Session, Step, MAX_LINE, MAX_MESSAGE};

/// A representative receiver policy (rcpthosts, badmailfrom, a size limit if not 0), for the
/// fuzz targets and the instruction-count benchmarks.
pub fn policy(databytes: u64) -> Policy {
    Policy {
        greeting: "fuzz.example".into(),
        local_host: "fuzz.example".into(),
        rcpthosts: Some(vec!["fuzz.example".into(), ".sub.example".into()]),
        morercpthosts: vec![],
        badmailfrom: vec!["@bad.example".into()],
        relayclient: None,
        databytes,
        localiphost: "fuzz.example".into(),
        local_ips: vec!["127.0.0.1".parse().expect("ip")],
        envnoathost: "fuzz.example".into(),
        null_sender_one_rcpt: true,
        rcpt_check: None,
        secure: Default::default(),
        peer: Peer {
            remote_ip: "10.0.0.1".into(),
            ..Peer::default()
        },
    }
}

/// Every reply line is `ddd` then space or `-`, and ends with CRLF.
pub(crate) fn check_replies(out: &[u8]) {
    for line in out.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "reply line without CRLF: {line:?}");
        assert!(
            line.len() >= 5 && line[..3].iter().all(u8::is_ascii_digit),
            "bad reply {line:?}"
        );
        assert!(line[3] == b' ' || line[3] == b'-', "bad reply {line:?}");
    }
}

/// The SMTP server session: input split at arbitrary points, commits that succeed or fail.
/// Byte 0 picks the chunk size, byte 1 the databytes limit and the commit results.
pub fn smtp_session(data: &[u8]) {
    let (Some(&c), Some(&d)) = (data.first(), data.get(1)) else {
        return;
    };
    let input = &data[2..];
    let databytes = u64::from(d & 0x0f) * 64;
    let mut s = Session::new(policy(databytes), 0);
    let mut out = s.take_output();
    let mut commits = 0u32;
    let mut handle = |s: &mut Session, step: Step, out: &mut Vec<u8>| {
        let mut step = step;
        while let Step::Message(t) = step {
            assert!(!t.recipients.is_empty());
            let limit = if databytes > 0 {
                databytes
            } else {
                MAX_MESSAGE
            };
            assert!(
                (t.data.len() as u64) < limit + 512,
                "message over its limit"
            );
            commits += 1;
            let r = match (d >> 4) % 3 {
                0 => Ok("1".to_string()),
                1 => Err(CommitError::Temporary(
                    "qq temporary problem (#4.3.0)".into(),
                )),
                _ => Err(CommitError::Permanent(
                    "qq permanent problem (#5.3.0)".into(),
                )),
            };
            s.committed(r);
            step = s.input(&[]);
        }
        out.extend(s.take_output());
        // Memory is bounded by the line limit while the session waits for more input.
        assert!(s.buffered() <= data.len());
    };
    for chunk in input.chunks(usize::from(c % 64) + 1) {
        if s.is_closed() {
            break;
        }
        let step = s.input(chunk);
        handle(&mut s, step, &mut out);
    }
    check_replies(&out);
    let _ = MAX_LINE;
}

/// The MAIL/RCPT argument parser: never panics; results respect the limits.
pub fn smtp_address(data: &[u8]) {
    for kw in ["FROM", "TO"] {
        if let Ok(p) = address::parse(data, kw) {
            assert!(p.addr.len() <= address::MAX_ADDR);
            assert!(!p.addr.bytes().any(|b| b < 32));
        }
    }
}

/// The queue's on-disk decoders over arbitrary bytes.
pub fn queue_records(data: &[u8]) {
    use crate::queue::record::{decode_todo, frame, Frame, Record};
    let mut at = 0;
    while let Frame::Whole(body, n) = frame(&data[at..], 0) {
        let _ = Record::decode(body, 0);
        at += n;
    }
    let _ = decode_todo(data);
}

/// The SMTP client's reply parser and dialogue: a hostile server's bytes, in pieces.
pub fn smtp_reply(data: &[u8]) {
    use crate::smtp::client::{Client, Step};
    let mut c = Client::new("10.0.0.1", "fuzz.example", "a@b", "c@d");
    let mut at = 0;
    let mut sent = 0usize;
    while at < data.len() {
        let end = (at + 1 + usize::from(data[at] % 32)).min(data.len());
        let (step, used) = c.input(&data[at..end]);
        at += used.max(1).min(end - at);
        match step {
            Step::Done(_) => return,
            Step::Send(b) => {
                sent += b.len();
                assert!(sent < 1 << 20, "the client keeps talking");
            }
            Step::SendBody => sent += 5,
            Step::StartTls => {
                let _ = c.tls_started();
            }
            Step::NeedInput => {}
        }
    }
    let _ = c.connection_lost();
}

/// DNS messages from the network.
pub fn dns_message(data: &[u8]) {
    if let Ok(m) = hickory_proto::op::Message::from_vec(data) {
        let _ = m.to_vec();
    }
}

/// `.qmail` files and `users/assign`.
pub fn dotqmail_assign(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::local::dotqmail::parse(&text);
    let _ = crate::local::dotqmail::candidates("-", &text);
    if let Ok(a) = crate::local::assign::Assign::parse(&text) {
        for key in ["fred", "fred-x", "", "-"] {
            let _ = a.lookup(key);
        }
    }
}
