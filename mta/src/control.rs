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
    /// A value that does not parse: qmail refuses to run on it rather than guess.
    #[error("control/{file} line {line}: {why}")]
    Invalid {
        file: String,
        line: usize,
        why: String,
    },
}

impl ControlError {
    pub fn invalid(file: &str, line: usize, why: impl Into<String>) -> Self {
        ControlError::Invalid {
            file: file.into(),
            line,
            why: why.into(),
        }
    }
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
        Ok(self
            .numbered(file)?
            .map(|v| v.into_iter().map(|(_, l)| l).collect()))
    }

    /// As [`ControlDir::lines`], each with its line number (from 1) for error messages.
    pub fn numbered(&self, file: &str) -> Result<Option<Vec<(usize, String)>>, ControlError> {
        match self.fs.read(&self.dir.join(file)) {
            Ok(b) => Ok(Some(
                String::from_utf8_lossy(&b)
                    .lines()
                    .enumerate()
                    .map(|(n, l)| (n + 1, l.trim()))
                    .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
                    .map(|(n, l)| (n, l.to_string()))
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

    /// A numeric control file; the default when missing or empty. Anything but a
    /// non-negative integer is an error naming file and line (qmail's control_readint fails
    /// too), never a silent "unlimited".
    pub fn number(&self, file: &str, default: u64) -> Result<u64, ControlError> {
        match self.numbered(file)?.and_then(|v| v.into_iter().next()) {
            None => Ok(default),
            Some((n, l)) => parse_number(&l).map_err(|why| ControlError::invalid(file, n, why)),
        }
    }

    /// A switch: `1` on, `0` off, the default when missing or empty.
    pub fn switch(&self, file: &str, default: bool) -> Result<bool, ControlError> {
        match self.numbered(file)?.and_then(|v| v.into_iter().next()) {
            None => Ok(default),
            Some((_, l)) if l == "1" => Ok(true),
            Some((_, l)) if l == "0" => Ok(false),
            Some((n, l)) => Err(ControlError::invalid(file, n, format!("not 0 or 1: {l:?}"))),
        }
    }

    pub fn me(&self) -> Result<String, ControlError> {
        self.line("me")?.ok_or(ControlError::NoMe)
    }
}

/// A non-negative decimal number, or why not.
pub fn parse_number(s: &str) -> Result<u64, String> {
    if !s.bytes().all(|b| b.is_ascii_digit()) || s.is_empty() {
        return Err(format!("not a number: {s:?}"));
    }
    s.parse().map_err(|_| format!("number too large: {s:?}"))
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
        for (n, l) in c.numbered("virtualdomains")?.unwrap_or_default() {
            let Some((k, v)) = l.rsplit_once(':') else {
                return Err(ControlError::invalid(
                    "virtualdomains",
                    n,
                    format!("no colon: {l:?}"),
                ));
            };
            virtualdomains.insert(k.to_ascii_lowercase(), v.to_string());
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

    fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("control")).unwrap();
        for (f, t) in files {
            std::fs::write(d.path().join("control").join(f), t).unwrap();
        }
        d
    }

    #[test]
    fn bad_numbers_are_errors_naming_file_and_line() {
        let d = dir(&[
            ("a", "abc\n"),
            ("b", "# comment\n\n-1\n"),
            ("c", "99999999999999999999999\n"),
            ("ok", " 42 \n"),
            ("sw", "yes\n"),
        ]);
        let fs = crate::env::real::RealFs;
        let c = ControlDir::new(&fs, d.path());
        let e = |f| c.number(f, 7).unwrap_err().to_string();
        assert_eq!(e("a"), "control/a line 1: not a number: \"abc\"");
        assert_eq!(e("b"), "control/b line 3: not a number: \"-1\"");
        assert_eq!(
            e("c"),
            "control/c line 1: number too large: \"99999999999999999999999\""
        );
        assert_eq!(c.number("ok", 7).unwrap(), 42);
        assert_eq!(c.number("missing", 7).unwrap(), 7);
        assert_eq!(
            c.switch("sw", true).unwrap_err().to_string(),
            "control/sw line 1: not 0 or 1: \"yes\""
        );
        assert!(c.switch("missing", true).unwrap());
    }

    #[test]
    fn virtualdomains_without_colon_is_an_error() {
        let d = dir(&[
            ("me", "h.example\n"),
            ("virtualdomains", "a.example:x\nb.example\n"),
        ]);
        let fs = crate::env::real::RealFs;
        let e = Rewrite::load(&ControlDir::new(&fs, d.path())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "control/virtualdomains line 2: no colon: \"b.example\""
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
