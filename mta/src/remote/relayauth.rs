//! `control/smtproutesauth`: credentials for smarthosts named in `smtproutes`, one
//! `relay:user:password` line each (`relay` exactly as written in smtproutes; the password
//! is the rest of the line). The file must be readable by its owner only (mode 0600): it is
//! refused otherwise. Credentials are sent (AUTH PLAIN) only inside TLS, so a relay with
//! credentials is one TLS is required for.

use std::path::Path;

use crate::control::ControlError;
use crate::env::{Fs, Secret};

const FILE: &str = "smtproutesauth";

#[derive(Clone, Default, PartialEq, Eq)]
pub struct RelayAuth(Vec<(String, String, Secret)>);

impl std::fmt::Debug for RelayAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<_> = self.0.iter().map(|(r, u, _)| (r, u)).collect();
        f.debug_tuple("RelayAuth").field(&users).finish()
    }
}

impl RelayAuth {
    /// Read the file under `root` (missing: no credentials).
    pub fn load<F: Fs>(fs: &F, root: &Path) -> Result<RelayAuth, ControlError> {
        let path = root.join("control").join(FILE);
        let text = match fs.read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RelayAuth::default()),
            Err(source) => {
                return Err(ControlError::Read {
                    file: FILE.into(),
                    source,
                })
            }
        };
        let mode = fs.metadata(&path).map(|m| m.mode).unwrap_or(0);
        if mode & 0o077 != 0 {
            let why = format!("mode {mode:o}: must be readable by its owner only (chmod 600)");
            return Err(ControlError::invalid(FILE, 0, why));
        }
        RelayAuth::parse(&text)
    }

    pub fn parse(text: &str) -> Result<RelayAuth, ControlError> {
        let mut v = Vec::new();
        for (n, l) in text.lines().enumerate() {
            let l = l.trim_end_matches('\r');
            if l.trim().is_empty() || l.starts_with('#') {
                continue;
            }
            let mut parts = l.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(r), Some(u), Some(p)) if !r.is_empty() && !u.is_empty() && !p.is_empty() => v
                    .push((
                        r.to_ascii_lowercase(),
                        u.to_string(),
                        Secret(p.as_bytes().to_vec()),
                    )),
                _ => {
                    return Err(ControlError::invalid(
                        FILE,
                        n + 1,
                        "not relay:user:password",
                    ))
                }
            }
        }
        Ok(RelayAuth(v))
    }

    /// The user and password for `relay`, if any.
    pub fn find(&self, relay: &str) -> Option<(&str, String)> {
        let relay = relay.to_ascii_lowercase();
        self.0
            .iter()
            .find(|(r, _, _)| *r == relay)
            .map(|(_, u, p)| (u.as_str(), String::from_utf8_lossy(&p.0).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_find() {
        let a =
            RelayAuth::parse("# isp\nsmtp.isp.example:fred:se:cret\n[10.0.0.1]:joe:pw\n").unwrap();
        assert_eq!(a.find("SMTP.isp.example"), Some(("fred", "se:cret".into())));
        assert_eq!(a.find("[10.0.0.1]"), Some(("joe", "pw".into())));
        assert_eq!(a.find("other"), None);
        assert!(!format!("{a:?}").contains("se:cret"), "{a:?}");
        let e = RelayAuth::parse("ok:u:p\nbad:line\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "control/smtproutesauth line 2: not relay:user:password");
    }
}
