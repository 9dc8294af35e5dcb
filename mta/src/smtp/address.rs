//! Parsing of the path argument of MAIL and RCPT (qmail-smtpd's `addrparse`, RFC 2821 strict
//! about the `FROM:`/`TO:` keyword).

/// Longest address accepted (qmail-smtpd: 900).
pub const MAX_ADDR: usize = 900;

/// A parsed MAIL or RCPT argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// The mailbox (empty for the null path `<>`), route stripped, quoting removed.
    pub addr: String,
    /// ESMTP parameters after the path, as `KEYWORD[=value]` (keyword uppercased).
    pub params: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrError {
    Syntax,
    TooLong,
}

/// Parse `FROM:<path> params` or `TO:<path> params` (`keyword` is `FROM` or `TO`).
pub fn parse(arg: &[u8], keyword: &str) -> Result<Path, AddrError> {
    let k = keyword.len();
    if arg.len() <= k || !arg[..k].eq_ignore_ascii_case(keyword.as_bytes()) || arg[k] != b':' {
        return Err(AddrError::Syntax);
    }
    let mut rest = &arg[k + 1..];
    while let [b' ' | b'\t', r @ ..] = rest {
        rest = r;
    }
    let (mut addr_part, tail, bracketed) = match rest.first() {
        Some(b'<') => {
            let end = closing_bracket(&rest[1..]).ok_or(AddrError::Syntax)?;
            (&rest[1..1 + end], &rest[2 + end..], true)
        }
        // qmail accepts a bare address after the colon.
        Some(_) => {
            let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            (&rest[..end], &rest[end..], false)
        }
        None => return Err(AddrError::Syntax),
    };
    // A source route `@a,@b:user@host` is accepted and ignored (RFC 2821 4.1.1.3).
    if addr_part.first() == Some(&b'@') {
        match addr_part.iter().position(|&b| b == b':') {
            Some(i) => addr_part = &addr_part[i + 1..],
            None => return Err(AddrError::Syntax),
        }
    }
    let mut addr = Vec::with_capacity(addr_part.len());
    let (mut quoted, mut esc) = (false, false);
    for &b in addr_part {
        if esc {
            addr.push(b);
            esc = false;
        } else if b == b'\\' {
            esc = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if !quoted && (b == b' ' || b == b'<' || b == b'>') {
            return Err(AddrError::Syntax);
        } else {
            addr.push(b);
        }
    }
    if quoted || esc {
        return Err(AddrError::Syntax);
    }
    if !bracketed && addr.is_empty() {
        return Err(AddrError::Syntax);
    }
    if addr.len() > MAX_ADDR {
        return Err(AddrError::TooLong);
    }
    if addr.iter().any(|&b| b < 32 || b == 127) {
        return Err(AddrError::Syntax);
    }
    let addr = String::from_utf8(addr).map_err(|_| AddrError::Syntax)?;
    let params = String::from_utf8_lossy(tail)
        .split_ascii_whitespace()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v.to_string())),
            None => (p.to_ascii_uppercase(), None),
        })
        .collect();
    Ok(Path { addr, params })
}

/// Position of the `>` closing a path, skipping quoted parts and escapes.
fn closing_bracket(s: &[u8]) -> Option<usize> {
    let (mut quoted, mut esc) = (false, false);
    for (i, &b) in s.iter().enumerate() {
        match b {
            _ if esc => esc = false,
            b'\\' => esc = true,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// `box@[a.b.c.d]` naming one of our addresses becomes `box@localiphost`.
pub fn rewrite_ip_literal(addr: &str, ours: &[std::net::IpAddr], localiphost: &str) -> String {
    if let Some((local, dom)) = addr.rsplit_once('@') {
        if let Some(lit) = dom.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let lit = lit.strip_prefix("IPv6:").unwrap_or(lit);
            if let Ok(ip) = lit.parse::<std::net::IpAddr>() {
                if ours.contains(&ip) {
                    return format!("{local}@{localiphost}");
                }
            }
        }
    }
    addr.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<String, AddrError> {
        parse(s.as_bytes(), "FROM").map(|p| p.addr)
    }

    #[test]
    fn paths() {
        assert_eq!(p("FROM:<a@b.c>"), Ok("a@b.c".into()));
        assert_eq!(p("from:<a@b.c>"), Ok("a@b.c".into()));
        assert_eq!(p("FROM: <a@b.c>"), Ok("a@b.c".into()));
        assert_eq!(p("FROM:<>"), Ok("".into()));
        assert_eq!(p("FROM:a@b.c"), Ok("a@b.c".into()));
        assert_eq!(p("FROM:<@r1,@r2:a@b.c>"), Ok("a@b.c".into()));
        assert_eq!(p("FROM:<\"x y\"@b.c>"), Ok("x y@b.c".into()));
        assert_eq!(p("FROM:<\"a>b\"@c>"), Ok("a>b@c".into()));
        assert_eq!(p("FROM:<a\\@x@b.c>"), Ok("a@x@b.c".into()));
        assert_eq!(p("FROM:<postmaster>"), Ok("postmaster".into()));
        assert_eq!(p("FROM <a@b>"), Err(AddrError::Syntax));
        assert_eq!(p("FROM:<a@b"), Err(AddrError::Syntax));
        assert_eq!(p("FROM:"), Err(AddrError::Syntax));
        assert_eq!(p("FROM:<a b@c>"), Err(AddrError::Syntax));
        assert_eq!(p("FROM:<\"unclosed@c>"), Err(AddrError::Syntax));
        assert_eq!(p("TO:<a@b>"), Err(AddrError::Syntax));
        let long = format!("FROM:<{}@b.c>", "a".repeat(900));
        assert_eq!(p(&long), Err(AddrError::TooLong));
    }

    #[test]
    fn params() {
        let x = parse(b"FROM:<a@b> SIZE=1000 BODY=8BITMIME", "FROM").unwrap();
        assert_eq!(
            x.params,
            vec![
                ("SIZE".into(), Some("1000".into())),
                ("BODY".into(), Some("8BITMIME".into()))
            ]
        );
        assert_eq!(parse(b"To:<x@y> NOTIFY=NEVER", "TO").unwrap().addr, "x@y");
    }

    #[test]
    fn ip_literal() {
        let ours = ["127.0.0.1".parse().unwrap()];
        assert_eq!(
            rewrite_ip_literal("box@[127.0.0.1]", &ours, "me.org"),
            "box@me.org"
        );
        assert_eq!(
            rewrite_ip_literal("box@[10.0.0.1]", &ours, "me.org"),
            "box@[10.0.0.1]"
        );
        assert_eq!(
            rewrite_ip_literal("box@x.org", &ours, "me.org"),
            "box@x.org"
        );
    }
}
