//! Per-client rules in tcprules syntax (`control/smtp.rules`), first match wins:
//!
//! ```text
//! 127.0.0.1:allow,RELAYCLIENT=""
//! 192.168.1.:allow,RELAYCLIENT="",DATABYTES="20000000"
//! =trusted.example.org:allow,RELAYCLIENT=""
//! 10.:deny
//! :allow
//! ```

use std::net::IpAddr;

use crate::control::parse_number;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `""` matches everyone, `=host` a remote host name, `a.b.c.` an address prefix,
    /// anything else one address.
    pub key: String,
    pub allow: bool,
    pub vars: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules(pub Vec<Rule>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("control/smtp.rules line {line}: {why}")]
pub struct RulesError {
    pub line: usize,
    pub why: &'static str,
}

fn parse_vars(s: &str) -> Result<Vec<(String, String)>, &'static str> {
    let mut vars = Vec::new();
    let mut rest = s;
    while let Some(r) = rest.strip_prefix(',') {
        let eq = r.find('=').ok_or("variable without =")?;
        let name = r[..eq].trim().to_string();
        if name.is_empty() {
            return Err("empty variable name");
        }
        let r = &r[eq + 1..];
        let (value, after) = if let Some(q) = r.strip_prefix('"') {
            let end = q.find('"').ok_or("unterminated quote")?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = r.find(',').unwrap_or(r.len());
            (r[..end].to_string(), &r[end..])
        };
        vars.push((name, value));
        rest = after;
    }
    if !rest.trim().is_empty() {
        return Err("junk after the rule");
    }
    Ok(vars)
}

impl Rules {
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        let mut rules = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |why| RulesError { line: n + 1, why };
            // The action follows the last `:allow`/`:deny`, so IPv6 keys may contain colons.
            let (key, allow, rest) = match (line.rfind(":allow"), line.rfind(":deny")) {
                (Some(a), d) if d.is_none_or(|d| a > d) => (&line[..a], true, &line[a + 6..]),
                (_, Some(d)) => (&line[..d], false, &line[d + 5..]),
                _ => return Err(err("no :allow or :deny")),
            };
            if !(rest.is_empty() || rest.starts_with(',')) {
                return Err(err("unknown action"));
            }
            let vars = parse_vars(rest).map_err(err)?;
            // A bad per-client limit must not silently become the global one.
            let databytes = vars.iter().filter(|(k, _)| k == "DATABYTES");
            if databytes.clone().any(|(_, v)| parse_number(v).is_err()) {
                return Err(err("DATABYTES is not a number"));
            }
            rules.push(Rule {
                key: key.to_string(),
                allow,
                vars,
            });
        }
        Ok(Rules(rules))
    }

    /// The first rule matching the client, if any. An IPv4-mapped IPv6 peer
    /// (`::ffff:10.0.0.8`, as a listener on `[::]` sees IPv4 clients) is matched as the IPv4
    /// address it is, so `10.:deny` cannot be bypassed by connecting to the dual-stack socket.
    pub fn find(&self, ip: IpAddr, host: Option<&str>) -> Option<&Rule> {
        let ip_s = ip.to_canonical().to_string();
        self.0.iter().find(|r| {
            let k = r.key.as_str();
            if k.is_empty() {
                true
            } else if let Some(h) = k.strip_prefix('=') {
                host.is_some_and(|x| x.eq_ignore_ascii_case(h))
            } else if k.ends_with('.') || k.ends_with(':') {
                ip_s.starts_with(k)
            } else {
                k == ip_s
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# trusted\n127.0.0.1:allow,RELAYCLIENT=\"\"\n\
        192.168.1.:allow,RELAYCLIENT=\"-x\",DATABYTES=\"2000\"\n=good.example:allow,RELAYCLIENT=\"\"\n\
        ::1:allow,RELAYCLIENT=\"\"\n10.:deny\n:allow\n";

    #[test]
    fn first_match_wins() {
        let r = Rules::parse(TEXT).unwrap();
        let f = |ip: &str, h| r.find(ip.parse().unwrap(), h).unwrap().clone();
        assert_eq!(
            f("127.0.0.1", None).vars,
            vec![("RELAYCLIENT".into(), "".into())]
        );
        let lan = f("192.168.1.77", None);
        assert!(lan.allow);
        assert_eq!(lan.vars[1], ("DATABYTES".into(), "2000".into()));
        assert_eq!(f("192.168.10.1", None).key, "");
        assert!(!f("10.0.0.8", None).allow);
        assert_eq!(f("8.8.8.8", Some("GOOD.example")).key, "=good.example");
        assert_eq!(f("::1", None).key, "::1");
        assert!(f("8.8.8.8", None).vars.is_empty());
    }

    #[test]
    fn ipv4_mapped_peers_match_as_ipv4() {
        let r = Rules::parse(TEXT).unwrap();
        let f = |ip: &str| r.find(ip.parse().unwrap(), None).unwrap().clone();
        assert!(!f("::ffff:10.0.0.8").allow, "deny entry");
        assert_eq!(f("::ffff:127.0.0.1").key, "127.0.0.1", "allow entry");
        assert_eq!(f("::ffff:192.168.1.9").key, "192.168.1.");
        assert_eq!(f("::1").key, "::1", "real IPv6 stays IPv6");
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(Rules::parse("1.2.3.4:maybe\n").unwrap_err().line, 1);
        assert_eq!(
            Rules::parse("# c\n1.2.3.4:allow,X=\"open\n").unwrap_err(),
            RulesError {
                line: 2,
                why: "unterminated quote"
            }
        );
        assert!(Rules::parse(":allow,RELAYCLIENT").is_err());
        assert_eq!(
            Rules::parse("10.:allow,DATABYTES=\"1e6\"\n")
                .unwrap_err()
                .to_string(),
            "control/smtp.rules line 1: DATABYTES is not a number"
        );
        assert!(Rules::parse("").unwrap().0.is_empty());
    }
}
