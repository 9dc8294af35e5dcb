//! Bounce messages in qmail's format (QSBMF), double bounces and triple-bounce discards.

use crate::date;

/// The envelope sender of a double bounce (qmail's `#@[]`).
pub const DOUBLE_BOUNCE_SENDER: &str = "#@[]";

/// Names a bounce is made with (control files bouncefrom, bouncehost, doublebounceto,
/// doublebouncehost).
#[derive(Debug, Clone)]
pub struct Names {
    pub bouncefrom: String,
    pub bouncehost: String,
    /// Empty: double bounces are discarded.
    pub doublebounceto: String,
    pub doublebouncehost: String,
    /// Body bytes of the failed message a bounce carries (control/bouncemaxbytes): a
    /// bounce to a forged sender must not return a large message to a stranger.
    pub bouncemaxbytes: usize,
    /// control/virtualdomains, so a bounce names a virtual-domain recipient without the
    /// prepend its delivery added (stripvdomprepend).
    pub virtualdomains: std::collections::BTreeMap<String, String>,
}

/// The most header bytes a bounce copies, whatever the message.
pub const MAX_BOUNCE_HEADER: usize = 64 * 1024;

/// What to do with a message that has failed recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bounce {
    /// Queue this message.
    Send {
        sender: String,
        recipient: String,
        data: Vec<u8>,
    },
    /// Nobody to tell: drop it, with the reason for the log.
    Discard(&'static str),
}

/// Build the bounce for `message` (sent by `sender`) whose `failures` are (recipient, report).
pub fn make(
    n: &Names,
    sender: &str,
    failures: &[(String, String)],
    (message, len): (&[u8], u64),
    now: u64,
) -> Bounce {
    if sender == DOUBLE_BOUNCE_SENDER {
        return Bounce::Discard("triple bounce");
    }
    let double = sender.is_empty();
    if double && n.doublebounceto.is_empty() {
        return Bounce::Discard("double bounce with an empty doublebounceto");
    }
    let to = if double {
        format!("{}@{}", n.doublebounceto, n.doublebouncehost)
    } else {
        super::verp::bounce_to(sender).to_string()
    };
    let mut d = String::new();
    d.push_str(&format!("Date: {}\n", date::rfc822(now)));
    d.push_str(&format!("From: {}@{}\n", n.bouncefrom, n.bouncehost));
    d.push_str(&format!("To: {to}\n"));
    d.push_str("Subject: failure notice\n\n");
    d.push_str(&format!(
        "Hi. This is the qmail-send program at {}.\n",
        n.bouncehost
    ));
    if double {
        d.push_str(
            "I tried to deliver a bounce message to this address, but the bounce bounced!\n\n",
        );
    } else {
        d.push_str(
            "I'm afraid I wasn't able to deliver your message to the following addresses.\n",
        );
        d.push_str("This is a permanent error; I've given up. Sorry it didn't work out.\n\n");
    }
    for (rcpt, report) in failures {
        let rcpt = super::verp::strip_vdom_prepend(&n.virtualdomains, rcpt);
        d.push_str(&format!("<{rcpt}>:\n{}\n\n", report.trim_end()));
    }
    d.push_str(if double {
        "--- Below this line is the original bounce.\n\n"
    } else {
        "--- Below this line is a copy of the message.\n\n"
    });
    d.push_str(&format!("Return-Path: <{sender}>\n"));
    let mut data = d.into_bytes();
    excerpt((message, len), n.bouncemaxbytes, &mut data);
    Bounce::Send {
        sender: if double {
            DOUBLE_BOUNCE_SENDER.to_string()
        } else {
            String::new()
        },
        recipient: to,
        data,
    }
}

/// Append the part of a message a bounce returns: its header (at most [`MAX_BOUNCE_HEADER`]
/// bytes) and at most `max_body` bytes of its body, each cut at a line end, and a line saying
/// how much was left out. `message` is the message's start (at least that much of it, when
/// it is longer) and `len` its whole length.
fn excerpt((message, len): (&[u8], u64), max_body: usize, out: &mut Vec<u8>) {
    let split = message
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(message.len(), |i| i + 2);
    let (head, body) = message.split_at(split);
    let head = cut_at_line(head, MAX_BOUNCE_HEADER);
    let body = cut_at_line(body, max_body);
    out.extend_from_slice(head);
    out.extend_from_slice(body);
    let left = len as usize - head.len() - body.len();
    if left > 0 {
        if out.last().is_some_and(|&b| b != b'\n') {
            out.push(b'\n');
        }
        out.extend_from_slice(
            format!("\n--- {left} more bytes of the message are not included.\n").as_bytes(),
        );
    }
}

/// At most `max` bytes of `b`, ending after a newline when one is within the limit.
fn cut_at_line(b: &[u8], max: usize) -> &[u8] {
    if b.len() <= max {
        return b;
    }
    let cut = &b[..max];
    cut.iter()
        .rposition(|&c| c == b'\n')
        .map_or(cut, |i| &cut[..=i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(m: &[u8]) -> (&[u8], u64) {
        (m, m.len() as u64)
    }

    fn names(dbt: &str) -> Names {
        Names {
            bouncefrom: "MAILER-DAEMON".into(),
            bouncehost: "heaven.af.mil".into(),
            doublebounceto: dbt.into(),
            doublebouncehost: "heaven.af.mil".into(),
            bouncemaxbytes: 4096,
            virtualdomains: [("virt.example".to_string(), "fred".to_string())].into(),
        }
    }

    fn copy_in(bounce: Bounce) -> String {
        let Bounce::Send { data, .. } = bounce else {
            panic!("not sent")
        };
        let t = String::from_utf8(data).unwrap();
        let (_, copy) = t.split_once("Return-Path: <joe@x.org>\n").unwrap();
        copy.to_string()
    }

    #[test]
    fn a_bounce_returns_the_header_and_at_most_bouncemaxbytes_of_the_body() {
        let f = vec![("nobody@heaven.af.mil".to_string(), "no".to_string())];
        let line = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
        let body = line.repeat(10_000);
        let msg = format!("Subject: big\nX-A: b\n\n{body}");
        let copy = copy_in(make(
            &names("pm"),
            "joe@x.org",
            &f,
            whole(msg.as_bytes()),
            0,
        ));
        let (head, rest) = copy.split_once("\n\n").unwrap();
        assert_eq!(head, "Subject: big\nX-A: b");
        let (kept, note) = rest.split_once("\n--- ").unwrap();
        assert_eq!(
            kept,
            line.repeat(4096 / line.len()),
            "whole lines, at most 4096 bytes"
        );
        assert_eq!(
            note,
            format!(
                "{} more bytes of the message are not included.\n",
                body.len() - kept.len()
            )
        );
        // A small message comes back whole, with no note.
        let copy = copy_in(make(
            &names("pm"),
            "joe@x.org",
            &f,
            whole(b"Subject: s\n\nhi\n"),
            0,
        ));
        assert_eq!(copy, "Subject: s\n\nhi\n");
    }

    #[test]
    fn the_start_of_a_message_makes_the_same_bounce_as_all_of_it() {
        let f = vec![("n@h".to_string(), "no".to_string())];
        let msg = format!("Subject: s\n\n{}", "line of the body\n".repeat(5000));
        let m = msg.as_bytes();
        let want = MAX_BOUNCE_HEADER + 4096 + 1;
        let part = (&m[..want.min(m.len())], m.len() as u64);
        assert_eq!(
            make(&names("pm"), "joe@x.org", &f, part, 0),
            make(&names("pm"), "joe@x.org", &f, whole(m), 0)
        );
    }

    #[test]
    fn a_header_without_end_is_cut_too() {
        let f = vec![("n@h".to_string(), "no".to_string())];
        let msg = "X-Long: y\n".repeat(20_000);
        let copy = copy_in(make(
            &names("pm"),
            "joe@x.org",
            &f,
            whole(msg.as_bytes()),
            0,
        ));
        let (kept, _) = copy.split_once("\n--- ").unwrap();
        assert!(
            kept.len() <= MAX_BOUNCE_HEADER && kept.ends_with("X-Long: y\n"),
            "{}",
            kept.len()
        );
    }

    #[test]
    fn single_bounce_text() {
        let f = vec![(
            "nobody@heaven.af.mil".to_string(),
            "Sorry, no mailbox here by that name. (#5.1.1)".to_string(),
        )];
        let Bounce::Send {
            sender,
            recipient,
            data,
        } = make(
            &names("postmaster"),
            "joe@heaven.af.mil",
            &f,
            whole(b"Subject: x\n\nhi\n"),
            0,
        )
        else {
            panic!()
        };
        assert_eq!(sender, "");
        assert_eq!(recipient, "joe@heaven.af.mil");
        let t = String::from_utf8(data).unwrap();
        assert_eq!(
            t,
            "Date: 1 Jan 1970 00:00:00 -0000\nFrom: MAILER-DAEMON@heaven.af.mil\nTo: joe@heaven.af.mil\n\
Subject: failure notice\n\nHi. This is the qmail-send program at heaven.af.mil.\n\
I'm afraid I wasn't able to deliver your message to the following addresses.\n\
This is a permanent error; I've given up. Sorry it didn't work out.\n\n\
<nobody@heaven.af.mil>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n\
--- Below this line is a copy of the message.\n\nReturn-Path: <joe@heaven.af.mil>\nSubject: x\n\nhi\n"
        );
    }

    #[test]
    fn virtual_domain_recipients_lose_their_prepend_and_verp_senders_their_marker() {
        let f = vec![("fred-bob@virt.example".to_string(), "no".to_string())];
        let Bounce::Send {
            recipient, data, ..
        } = make(
            &names("postmaster"),
            "list-@l.example-@[]",
            &f,
            (b"x\n", 2),
            0,
        )
        else {
            panic!()
        };
        assert_eq!(recipient, "list-@l.example");
        let t = String::from_utf8(data).unwrap();
        assert!(t.contains("\n<bob@virt.example>:\nno\n"), "{t}");
    }

    #[test]
    fn double_and_triple_bounces() {
        let f = vec![("joe@x.org".to_string(), "no".to_string())];
        let Bounce::Send {
            sender,
            recipient,
            data,
        } = make(&names("postmaster"), "", &f, whole(b"b"), 0)
        else {
            panic!()
        };
        assert_eq!(
            (sender.as_str(), recipient.as_str()),
            ("#@[]", "postmaster@heaven.af.mil")
        );
        let t = String::from_utf8(data).unwrap();
        assert!(t.contains("but the bounce bounced!"));
        assert!(t.contains("--- Below this line is the original bounce.\n\nReturn-Path: <>\nb"));
        assert_eq!(
            make(&names("postmaster"), "#@[]", &f, whole(b"b"), 0),
            Bounce::Discard("triple bounce")
        );
        assert!(matches!(
            make(&names(""), "", &f, whole(b"b"), 0),
            Bounce::Discard(_)
        ));
    }
}
