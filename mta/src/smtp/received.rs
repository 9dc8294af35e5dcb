//! The `Received:` trace line qmail-smtpd prepends.

use crate::date;

/// qmail keeps `[A-Za-z0-9.@%+/=:-]` in the fields it copies and turns the rest into `?`.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".@%+/=:-".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Who is on the other end of an SMTP session.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub remote_ip: String,
    pub remote_host: Option<String>,
    pub remote_info: Option<String>,
}

/// `Received: from host (HELO helo) (info@ip)\n  by local with PROTO; date\n` (`SMTP`, or
/// RFC 3848's `ESMTPS`, `ESMTPA`, `ESMTPSA` for TLS and AUTH).
pub fn line(peer: &Peer, helo: Option<&str>, local: &str, proto: &str, unix: u64) -> String {
    let host = peer.remote_host.as_deref().unwrap_or("unknown");
    let mut s = format!("Received: from {}", safe(host));
    if let Some(h) = helo {
        if h != host {
            s.push_str(&format!(" (HELO {})", safe(h)));
        }
    }
    s.push_str(" (");
    if let Some(i) = &peer.remote_info {
        s.push_str(&safe(i));
        s.push('@');
    }
    s.push_str(&safe(&peer.remote_ip));
    s.push_str(&format!(
        ")\n  by {} with {proto}; {}\n",
        safe(local),
        date::rfc822(unix)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_qmail() {
        let p = Peer {
            remote_ip: "10.0.0.1".into(),
            ..Peer::default()
        };
        assert_eq!(
            line(&p, Some("client.example"), "heaven.af.mil", "SMTP", 0),
            "Received: from unknown (HELO client.example) (10.0.0.1)\n  by heaven.af.mil with SMTP; 1 Jan 1970 00:00:00 -0000\n"
        );
        let p = Peer {
            remote_ip: "10.0.0.1".into(),
            remote_host: Some("c.example".into()),
            remote_info: Some("joe".into()),
        };
        assert_eq!(
            line(&p, Some("c.example"), "h", "ESMTPSA", 0),
            "Received: from c.example (joe@10.0.0.1)\n  by h with ESMTPSA; 1 Jan 1970 00:00:00 -0000\n"
        );
        assert!(line(&p, Some("bad host<>\n"), "h", "SMTP", 0).contains("(HELO bad?host???)"));
    }
}
