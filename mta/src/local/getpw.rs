//! qmail-getpw: the local user a local part names when `users/assign` does not, from the
//! system's `/etc/passwd` (read through the environment's filesystem). The longest prefix of
//! the local part ending at a `-` (or the whole) that is an account's name wins, if the
//! account is not root and owns its home directory; the rest is the extension.

use std::path::{Path, PathBuf};

use super::assign::User;
use crate::env::Fs;

/// qmail-getpw's limit on user names.
const MAX_USER: usize = 32;

/// One `/etc/passwd` entry: (uid, gid, home).
fn account(passwd: &str, name: &str) -> Option<(u32, u32, PathBuf)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || f[0] != name {
            return None;
        }
        Some((f[2].parse().ok()?, f[3].parse().ok()?, PathBuf::from(f[5])))
    })
}

/// The user for `local` (already lowercase or not: names are compared lowercased), from the
/// passwd file at `passwd`.
pub fn lookup<F: Fs>(fs: &F, passwd: &Path, local: &str) -> Option<User> {
    let text = String::from_utf8(fs.read(passwd).ok()?).ok()?;
    let ends = local
        .char_indices()
        .filter(|&(_, c)| c == '-')
        .map(|(i, _)| i)
        .chain(std::iter::once(local.len()));
    let mut ends: Vec<usize> = ends.collect();
    ends.reverse();
    for end in ends {
        let name = local[..end].to_ascii_lowercase();
        if name.is_empty() || name.len() >= MAX_USER {
            continue;
        }
        let Some((uid, gid, home)) = account(&text, &name) else {
            continue;
        };
        if uid == 0 || fs.metadata(&home).map_or(true, |m| m.uid != uid) {
            continue;
        }
        let (dash, ext) = match local.get(end + 1..) {
            Some(ext) if end < local.len() => ("-", ext),
            _ => ("", ""),
        };
        return Some(User {
            user: name,
            uid,
            gid,
            home,
            dash: dash.into(),
            ext: ext.to_string(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::real::RealFs;

    #[test]
    fn longest_owned_prefix_wins() {
        let d = tempfile::tempdir().unwrap();
        // An account that is not root and owns its home (as root, hand it over).
        let mut me = nix::unistd::geteuid().as_raw();
        let home = d.path().join("fred");
        std::fs::create_dir(&home).unwrap();
        if me == 0 {
            me = 4242;
            std::os::unix::fs::chown(&home, Some(me), Some(me)).unwrap();
        }
        let passwd = d.path().join("passwd");
        let text = format!(
            "root:x:0:0:root:/root:/bin/sh\nfred:x:{me}:{me}::{h}:/bin/sh\n\
             fred-list:x:{me}:7::/nonexistent:/bin/sh\n",
            h = home.display()
        );
        std::fs::write(&passwd, text).unwrap();
        let u = lookup(&RealFs, &passwd, "Fred-list-x").unwrap();
        assert_eq!(
            (u.user.as_str(), u.dash.as_str(), u.ext.as_str()),
            ("fred", "-", "list-x")
        );
        let u = lookup(&RealFs, &passwd, "fred").unwrap();
        assert_eq!((u.dash.as_str(), u.ext.as_str(), u.home), ("", "", home));
        assert!(lookup(&RealFs, &passwd, "root").is_none());
        assert!(lookup(&RealFs, &passwd, "nobody-here").is_none());
        assert!(lookup(&RealFs, &d.path().join("none"), "fred").is_none());
    }
}
