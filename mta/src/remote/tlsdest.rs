//! `control/tlsdestinations`: recipient domains whose mail goes out only over TLS. One entry
//! per line, `domain` or `domain:verify`; `.suffix` entries match every domain under it, `*`
//! matches every domain. With `verify` the server's certificate must name the host connected
//! to and chain to a root in the system's store. Elsewhere TLS is opportunistic.

use crate::control::ControlError;
use crate::tls::ClientTls;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsDestinations(Vec<(String, bool)>);

impl TlsDestinations {
    /// Parse numbered lines (from [`crate::control::ControlDir::numbered`]).
    pub fn parse(lines: &[(usize, String)]) -> Result<TlsDestinations, ControlError> {
        let mut v = Vec::new();
        for (n, l) in lines {
            let (domain, verify) = match l.split_once(':') {
                None => (l.as_str(), false),
                Some((d, "verify")) => (d, true),
                Some((_, o)) => {
                    return Err(ControlError::invalid(
                        "tlsdestinations",
                        *n,
                        format!("unknown option {o:?} (only \"verify\")"),
                    ))
                }
            };
            if domain.is_empty() {
                return Err(ControlError::invalid("tlsdestinations", *n, "no domain"));
            }
            v.push((domain.to_ascii_lowercase(), verify));
        }
        Ok(TlsDestinations(v))
    }

    /// True when some entry asks for certificate checks (the system's roots are needed).
    pub fn any_verify(&self) -> bool {
        self.0.iter().any(|(_, v)| *v)
    }

    /// What TLS mail to `domain` needs: exact entry, else the longest `.suffix`, else `*`.
    pub fn find(&self, domain: &str) -> ClientTls {
        let d = domain.to_ascii_lowercase();
        let get = |k: &str| self.0.iter().find(|(x, _)| x == k).map(|(_, v)| *v);
        let mut hit = get(&d);
        let mut at = 0;
        while hit.is_none() {
            let Some(i) = d[at..].find('.') else { break };
            hit = get(&d[at + i..]);
            at += i + 1;
        }
        match hit.or_else(|| get("*")) {
            Some(verify) => ClientTls::Required { verify },
            None => ClientTls::Opportunistic,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<TlsDestinations, ControlError> {
        let lines: Vec<_> = (1..).zip(lines.iter().map(|s| s.to_string())).collect();
        TlsDestinations::parse(&lines)
    }

    #[test]
    fn lookup() {
        let t = parse(&["bank.example:verify", ".gov.example", "Partner.example"]).unwrap();
        assert_eq!(t.find("BANK.example"), ClientTls::Required { verify: true });
        assert_eq!(
            t.find("irs.gov.example"),
            ClientTls::Required { verify: false }
        );
        assert_eq!(
            t.find("partner.example"),
            ClientTls::Required { verify: false }
        );
        assert_eq!(t.find("other.example"), ClientTls::Opportunistic);
        assert!(t.any_verify());
        let all = parse(&["*"]).unwrap();
        assert_eq!(all.find("x.y"), ClientTls::Required { verify: false });
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse(&["a.example", "b.example:check"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "control/tlsdestinations line 2: unknown option \"check\" (only \"verify\")"
        );
        assert!(parse(&[":verify"]).is_err());
    }
}
