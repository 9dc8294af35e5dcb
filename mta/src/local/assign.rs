//! `users/assign` (qmail-users): which user, home and extension a local part belongs to.
//!
//! ```text
//! =fred:fred:1000:1000:/home/fred:::         exact: local part "fred"
//! +fred-:fred:1000:1000:/home/fred:-::       wildcard: "fred-" + anything, ext = the rest
//! .
//! ```

use std::path::PathBuf;

/// Where a local part is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// `-` when an extension follows, else empty.
    pub dash: String,
    pub ext: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    wildcard: bool,
    key: String,
    user: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    dash: String,
    ext: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assign {
    entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("users/assign line {line}: {why}")]
pub struct AssignError {
    pub line: usize,
    pub why: &'static str,
}

impl Assign {
    pub fn parse(text: &str) -> Result<Assign, AssignError> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let err = |why| AssignError { line: n + 1, why };
            if line == "." {
                return Ok(Assign { entries });
            }
            if line.trim().is_empty() {
                continue;
            }
            let wildcard = match line.as_bytes()[0] {
                b'=' => false,
                b'+' => true,
                _ => return Err(err("lines start with = or +")),
            };
            let f: Vec<&str> = line[1..].split(':').collect();
            if f.len() < 7 {
                return Err(err("too few fields"));
            }
            entries.push(Entry {
                wildcard,
                key: f[0].to_ascii_lowercase(),
                user: f[1].to_string(),
                uid: f[2].parse().map_err(|_| err("bad uid"))?,
                gid: f[3].parse().map_err(|_| err("bad gid"))?,
                home: PathBuf::from(f[4]),
                dash: f[5].to_string(),
                ext: f[6].to_string(),
            });
        }
        Err(AssignError {
            line: text.lines().count(),
            why: "missing the final . line",
        })
    }

    /// Look up a local part (case-insensitively): exact entries first, then the wildcard with
    /// the longest matching prefix.
    pub fn lookup(&self, local: &str) -> Option<User> {
        let local = local.to_ascii_lowercase();
        if let Some(e) = self.entries.iter().find(|e| !e.wildcard && e.key == local) {
            return Some(e.user_with(e.ext.clone()));
        }
        self.entries
            .iter()
            .filter(|e| e.wildcard && local.starts_with(&e.key))
            .max_by_key(|e| e.key.len())
            .map(|e| e.user_with(format!("{}{}", e.ext, &local[e.key.len()..])))
    }
}

impl Entry {
    fn user_with(&self, ext: String) -> User {
        User {
            user: self.user.clone(),
            uid: self.uid,
            gid: self.gid,
            home: self.home.clone(),
            dash: self.dash.clone(),
            ext,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "=fred:fred:1000:1000:/h/fred:::\n+fred-:fred:1000:1000:/h/fred:-::\n\
        +fred-list-:lists:1001:1001:/h/lists:-:fl-:\n=joe:joe:1002:1002:/h/joe:::\n.\n";

    #[test]
    fn exact_then_longest_wildcard() {
        let a = Assign::parse(A).unwrap();
        let u = a.lookup("Fred").unwrap();
        assert_eq!(
            (u.user.as_str(), u.dash.as_str(), u.ext.as_str()),
            ("fred", "", "")
        );
        let u = a.lookup("fred-sos").unwrap();
        assert_eq!((u.dash.as_str(), u.ext.as_str()), ("-", "sos"));
        let u = a.lookup("fred-list-x").unwrap();
        assert_eq!((u.user.as_str(), u.ext.as_str()), ("lists", "fl-x"));
        assert_eq!(a.lookup("joe").unwrap().home, PathBuf::from("/h/joe"));
        assert_eq!(a.lookup("nobody"), None);
        assert_eq!(a.lookup("joe-x"), None);
    }

    #[test]
    fn errors() {
        assert!(Assign::parse("=a:a:1:1:/h:::\n").is_err());
        assert_eq!(Assign::parse("x\n.\n").unwrap_err().line, 1);
        assert!(Assign::parse("=a:a:x:1:/h:::\n.\n").is_err());
        assert!(Assign::parse(".\n").unwrap().lookup("a").is_none());
    }
}
