//! `users/assign` (qmail-users): which user, home and extension a local part belongs to.
//!
//! ```text
//! =fred:fred:1000:1000:/home/fred:::         exact: local part "fred"
//! +fred-:fred:1000:1000:/home/fred:-::       wildcard: "fred-" + anything, ext = the rest
//! .
//! ```

use std::io;
use std::path::{Path, PathBuf};

use crate::env::{Fs, FsFile};

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
            // No field can hold a NUL (users/cdb separates fields with it, and a path with
            // one names nothing).
            if line.contains('\0') {
                return Err(err("a NUL byte"));
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
            // The first of equally long ones, as users/cdb finds it (max_by_key takes the last).
            .rev()
            .max_by_key(|e| e.key.len())
            .map(|e| e.user_with(format!("{}{}", e.ext, &local[e.key.len()..])))
    }
}

/// The most bytes a users/cdb record may hold.
const MAX_RECORD: usize = 8192;

impl Assign {
    /// The records of `users/cdb` (qmail-newu): `!local` for exact entries, `+prefix` for
    /// wildcards; data `user\0uid\0gid\0home\0dash\0ext\0`.
    pub fn cdb_records(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.entries
            .iter()
            .map(|e| {
                let key = format!("{}{}", if e.wildcard { '+' } else { '!' }, e.key);
                let data = format!(
                    "{}\0{}\0{}\0{}\0{}\0{}\0",
                    e.user,
                    e.uid,
                    e.gid,
                    e.home.display(),
                    e.dash,
                    e.ext
                );
                (key.into_bytes(), data.into_bytes())
            })
            .collect()
    }
}

fn decode(data: &[u8], rest: &str) -> io::Result<User> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "users/cdb: bad record");
    let text = std::str::from_utf8(data).map_err(|_| bad())?;
    let f: Vec<&str> = text.split('\0').collect();
    if f.len() < 7 {
        return Err(bad());
    }
    Ok(User {
        user: f[0].to_string(),
        uid: f[1].parse().map_err(|_| bad())?,
        gid: f[2].parse().map_err(|_| bad())?,
        home: PathBuf::from(f[3]),
        dash: f[4].to_string(),
        ext: format!("{}{rest}", f[5]),
    })
}

/// [`Assign::lookup`] in an open `users/cdb`: the exact entry, else the longest wildcard.
pub fn lookup_cdb<F: FsFile>(f: &mut F, local: &str) -> io::Result<Option<User>> {
    let local = local.to_ascii_lowercase();
    if let Some(d) = crate::cdb::get(f, format!("!{local}").as_bytes(), MAX_RECORD)? {
        return decode(&d, "").map(Some);
    }
    let cuts = (0..=local.len())
        .rev()
        .filter(|&i| local.is_char_boundary(i));
    for i in cuts {
        let key = format!("+{}", &local[..i]);
        if let Some(d) = crate::cdb::get(f, key.as_bytes(), MAX_RECORD)? {
            return decode(&d, &local[i..]).map(Some);
        }
    }
    Ok(None)
}

/// Why `mta newu` failed.
#[derive(Debug, thiserror::Error)]
pub enum NewuError {
    #[error(transparent)]
    Assign(#[from] AssignError),
    #[error("users/assign: {0}")]
    Read(io::Error),
    #[error("unable to write users/cdb: {0}")]
    Write(io::Error),
}

/// qmail-newu: compile `users/assign` into `users/cdb` (written aside, made durable, then
/// renamed over the old one, so a lookup sees the old table or the new, never half).
/// Returns the number of entries.
pub fn newu<F: Fs>(fs: &F, root: &Path) -> Result<usize, NewuError> {
    let users = root.join("users");
    let text = fs.read(&users.join("assign")).map_err(NewuError::Read)?;
    let a = Assign::parse(&String::from_utf8_lossy(&text))?;
    let db = crate::cdb::build(&a.cdb_records()).map_err(NewuError::Write)?;
    let tmp = users.join("cdb.tmp");
    match fs.unlink(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(NewuError::Write(e)),
        _ => {}
    }
    crate::env::write_new_synced(fs, &tmp, &db, true).map_err(NewuError::Write)?;
    fs.rename(&tmp, &users.join("cdb"))
        .map_err(NewuError::Write)?;
    fs.sync_dir(&users).map_err(NewuError::Write)?;
    Ok(a.entries.len())
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

    /// Found by the users_cdb fuzz target: a NUL in a field made users/cdb (NUL-separated)
    /// answer differently from users/assign.
    #[test]
    fn a_nul_byte_is_refused_with_its_line() {
        let e = Assign::parse("=fred:fred:1:1:/h:::\n=joe:j\0e:1:1:/h:::\n.\n").unwrap_err();
        assert_eq!((e.line, e.why), (2, "a NUL byte"));
    }

    #[test]
    fn users_cdb_answers_as_users_assign() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("users")).unwrap();
        std::fs::write(d.path().join("users/assign"), A).unwrap();
        let fs = crate::env::real::RealFs;
        assert_eq!(newu(&fs, d.path()).unwrap(), 4);
        let a = Assign::parse(A).unwrap();
        let mut f = fs.open_rw(&d.path().join("users/cdb")).unwrap();
        for local in [
            "Fred",
            "fred-sos",
            "fred-list-x",
            "joe",
            "nobody",
            "joe-x",
            "fred-",
        ] {
            assert_eq!(
                lookup_cdb(&mut f, local).unwrap(),
                a.lookup(local),
                "{local}"
            );
        }
        std::fs::write(d.path().join("users/assign"), "=a:b\n.\n").unwrap();
        assert!(newu(&fs, d.path()).is_err());
        assert!(d.path().join("users/cdb").exists(), "the old table stays");
    }

    #[test]
    fn errors() {
        assert!(Assign::parse("=a:a:1:1:/h:::\n").is_err());
        assert_eq!(Assign::parse("x\n.\n").unwrap_err().line, 1);
        assert!(Assign::parse("=a:a:x:1:/h:::\n.\n").is_err());
        assert!(Assign::parse(".\n").unwrap().lookup("a").is_none());
    }
}
