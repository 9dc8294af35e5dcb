//! qmail's control files (`control/*`) and the address rewriting of preprocessing (spec §4).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::env::Fs;
use crate::queue::{Channel, Classify};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("unable to read control/{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("control/me is missing or empty: run `mta init`")]
    NoMe,
}

/// Reads control files under `<root>/control`.
pub struct ControlDir<'a, F: Fs> {
    fs: &'a F,
    dir: PathBuf,
}

impl<'a, F: Fs> ControlDir<'a, F> {
    pub fn new(fs: &'a F, root: &Path) -> Self {
        ControlDir {
            fs,
            dir: root.join("control"),
        }
    }

    /// Lines of a control file, trimmed, without blanks and `#` comments; `None` if missing.
    pub fn lines(&self, file: &str) -> Result<Option<Vec<String>>, ControlError> {
        match self.fs.read(&self.dir.join(file)) {
            Ok(b) => Ok(Some(
                String::from_utf8_lossy(&b)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from)
                    .collect(),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ControlError::Read {
                file: file.into(),
                source,
            }),
        }
    }

    /// First line of a control file, or `None` if missing or empty.
    pub fn line(&self, file: &str) -> Result<Option<String>, ControlError> {
        Ok(self.lines(file)?.and_then(|v| v.into_iter().next()))
    }

    pub fn line_or(&self, file: &str, default: &str) -> Result<String, ControlError> {
        Ok(self.line(file)?.unwrap_or_else(|| default.to_string()))
    }

    /// A numeric control file; unparsable values fall back to the default, as in qmail.
    pub fn number(&self, file: &str, default: u64) -> Result<u64, ControlError> {
        Ok(self
            .line(file)?
            .and_then(|l| l.parse().ok())
            .unwrap_or(default))
    }

    pub fn me(&self) -> Result<String, ControlError> {
        self.line("me")?.ok_or(ControlError::NoMe)
    }
}

/// Address rewriting at preprocessing: envnoathost, percenthack, locals, virtualdomains.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    pub envnoathost: String,
    pub locals: Vec<String>,
    pub percenthack: Vec<String>,
    /// Keys lowercased: `user@domain`, `domain`, `.suffix` or `` (catch-all).
    pub virtualdomains: BTreeMap<String, String>,
}

impl Rewrite {
    pub fn load<F: Fs>(c: &ControlDir<'_, F>) -> Result<Self, ControlError> {
        let me = c.me()?;
        let lower = |v: Vec<String>| v.into_iter().map(|s| s.to_ascii_lowercase()).collect();
        let mut virtualdomains = BTreeMap::new();
        for l in c.lines("virtualdomains")?.unwrap_or_default() {
            if let Some((k, v)) = l.rsplit_once(':') {
                virtualdomains.insert(k.to_ascii_lowercase(), v.to_string());
            }
        }
        Ok(Rewrite {
            envnoathost: c.line_or("envnoathost", &me)?,
            locals: lower(c.lines("locals")?.unwrap_or_else(|| vec![me.clone()])),
            percenthack: lower(c.lines("percenthack")?.unwrap_or_default()),
            virtualdomains,
        })
    }

    fn virtual_prepend(&self, local: &str, domain: &str) -> Option<&str> {
        let vd = &self.virtualdomains;
        if let Some(p) = vd.get(&format!("{}@{domain}", local.to_ascii_lowercase())) {
            return Some(p);
        }
        if let Some(p) = vd.get(domain) {
            return Some(p);
        }
        // `.suffix` entries, longest first.
        let mut at = 0;
        while let Some(i) = domain[at..].find('.') {
            if let Some(p) = vd.get(&domain[at + i..]) {
                return Some(p);
            }
            at += i + 1;
        }
        vd.get("").map(String::as_str)
    }
}

impl Classify for Rewrite {
    fn classify(&self, addr: &str) -> (String, Channel) {
        let mut addr = if addr.contains('@') {
            addr.to_string()
        } else {
            format!("{addr}@{}", self.envnoathost)
        };
        loop {
            let (local, domain) = addr.rsplit_once('@').expect("has @");
            let d = domain.to_ascii_lowercase();
            if !self.percenthack.contains(&d) {
                break;
            }
            let Some(i) = local.rfind('%') else { break };
            addr = format!("{}@{}", &local[..i], &local[i + 1..]);
        }
        let (local, domain) = addr.rsplit_once('@').expect("has @");
        let d = domain.to_ascii_lowercase();
        if self.locals.contains(&d) {
            return (addr, Channel::Local);
        }
        match self.virtual_prepend(local, &d) {
            Some("") | None => (addr, Channel::Remote),
            Some(p) => (format!("{p}-{local}@{domain}"), Channel::Local),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw() -> Rewrite {
        let mut v = BTreeMap::new();
        v.insert("tommy.gov".into(), "fred".into());
        v.insert(".sub.org".into(), "subby".into());
        v.insert("joe@vip.org".into(), "joey".into());
        v.insert("relay.net".into(), "".into());
        Rewrite {
            envnoathost: "heaven.af.mil".into(),
            locals: vec!["heaven.af.mil".into()],
            percenthack: vec!["heaven.af.mil".into()],
            virtualdomains: v,
        }
    }

    #[test]
    fn rewriting_follows_qmail_order() {
        let r = rw();
        let c = |a: &str| r.classify(a);
        assert_eq!(c("fred"), ("fred@heaven.af.mil".into(), Channel::Local));
        assert_eq!(
            c("Fred@HEAVEN.af.mil"),
            ("Fred@HEAVEN.af.mil".into(), Channel::Local)
        );
        assert_eq!(
            c("dude@tommy.gov"),
            ("fred-dude@tommy.gov".into(), Channel::Local)
        );
        assert_eq!(
            c("x@a.sub.org"),
            ("subby-x@a.sub.org".into(), Channel::Local)
        );
        assert_eq!(c("x@sub.org"), ("x@sub.org".into(), Channel::Remote));
        assert_eq!(
            c("joe@vip.org"),
            ("joey-joe@vip.org".into(), Channel::Local)
        );
        assert_eq!(c("ann@vip.org"), ("ann@vip.org".into(), Channel::Remote));
        assert_eq!(c("a@relay.net"), ("a@relay.net".into(), Channel::Remote));
        assert_eq!(c("bill@irs.gov"), ("bill@irs.gov".into(), Channel::Remote));
        // percenthack: the last % becomes @, repeatedly while the domain is listed.
        assert_eq!(
            c("bill%irs.gov@heaven.af.mil"),
            ("bill@irs.gov".into(), Channel::Remote)
        );
        assert_eq!(
            c("a%b%heaven.af.mil@heaven.af.mil"),
            ("a@b".into(), Channel::Remote)
        );
    }

    #[test]
    fn catch_all_virtual_domain() {
        let mut r = rw();
        r.virtualdomains.insert("".into(), "catch".into());
        assert_eq!(
            r.classify("x@else.com"),
            ("catch-x@else.com".into(), Channel::Local)
        );
    }
}
