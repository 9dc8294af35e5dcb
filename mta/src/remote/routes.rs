//! `control/smtproutes`: `domain:relay[:port]`, `.suffix` entries, an empty domain for the
//! default route, an empty relay for "use MX", `[ip]` literals.

use crate::control::ControlError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Empty: look up MX for the recipient's domain.
    pub relay: String,
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes(Vec<(String, Route)>);

impl Routes {
    /// Parse numbered lines (from [`crate::control::ControlDir::numbered`]); a bad port is
    /// an error naming the line, not a silent port 25.
    pub fn parse(lines: &[(usize, String)]) -> Result<Routes, ControlError> {
        Self::parse_file(lines, "smtproutes", 25)
    }

    /// As [`Routes::parse`] for a file of the same format with another default port
    /// (`qmtproutes`: 209).
    pub fn parse_file(
        lines: &[(usize, String)],
        file: &str,
        default_port: u16,
    ) -> Result<Routes, ControlError> {
        let mut v = Vec::new();
        for (n, l) in lines {
            let mut parts = l.splitn(3, ':');
            let domain = parts.next().unwrap_or("").to_ascii_lowercase();
            let relay = parts.next().unwrap_or("").to_string();
            let port = match parts.next() {
                None => default_port,
                Some(p) => p
                    .parse()
                    .map_err(|_| ControlError::invalid(file, *n, format!("bad port: {p:?}")))?,
            };
            v.push((domain, Route { relay, port }));
        }
        Ok(Routes(v))
    }

    /// The route for a domain: exact, then `.suffix` entries longest first, then the default.
    pub fn find(&self, domain: &str) -> Option<&Route> {
        let d = domain.to_ascii_lowercase();
        let get = |k: &str| self.0.iter().find(|(x, _)| x == k).map(|(_, r)| r);
        if let Some(r) = get(&d) {
            return Some(r);
        }
        let mut at = 0;
        while let Some(i) = d[at..].find('.') {
            if let Some(r) = get(&d[at + i..]) {
                return Some(r);
            }
            at += i + 1;
        }
        get("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_order() {
        let lines = [
            "irs.gov:mail.irs.gov",
            ".af.mil:[10.0.0.1]:2525",
            ".heaven.af.mil:relay.heaven",
            "direct.org:",
            ":bigbang.af.mil",
        ];
        let lines: Vec<_> = (1..).zip(lines.map(String::from)).collect();
        let r = Routes::parse(&lines).unwrap();
        assert_eq!(r.find("IRS.gov").unwrap().relay, "mail.irs.gov");
        assert_eq!(
            r.find("x.af.mil").unwrap(),
            &Route {
                relay: "[10.0.0.1]".into(),
                port: 2525
            }
        );
        assert_eq!(
            r.find("a.heaven.af.mil").unwrap().relay,
            "relay.heaven",
            "longest suffix"
        );
        assert_eq!(r.find("direct.org").unwrap().relay, "");
        assert_eq!(r.find("else.com").unwrap().relay, "bigbang.af.mil");
        assert_eq!(Routes::default().find("x"), None);
    }

    #[test]
    fn bad_port_names_the_line() {
        let lines = vec![(1, "a.org:b.org".into()), (3, "c.org:d.org:smtp".into())];
        assert_eq!(
            Routes::parse(&lines).unwrap_err().to_string(),
            "control/smtproutes line 3: bad port: \"smtp\""
        );
    }
}
