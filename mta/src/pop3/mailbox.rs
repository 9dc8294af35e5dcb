//! The Maildir a POP3 session serves (qmail-pop3d's): at the start, messages of `new/` move
//! to `cur/` with an empty info (`:2,`), as any Maildir reader does; the session lists `cur/`
//! oldest first; deletions happen only at QUIT, and are durable before QUIT is answered.
//!
//! Crash safety: each step is one rename or one unlink, so every message is at every moment
//! whole under exactly one name; a crash in UPDATE leaves some deletions undone, and the next
//! session lists those messages again under the same UIDL, which every client handles.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use super::wire::Counter;
use crate::env::{Fs, FsFile};

/// One message of a session's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Inside the Maildir: `cur/NAME:2,` (or `new/NAME` when it could not be moved).
    pub path: String,
    /// The unique name (before the `:`), stable across sessions: the UIDL.
    pub uid: String,
    /// Octets as RETR sends them (CRLF line ends), without dot-stuffing.
    pub size: u64,
}

/// Bytes read at a time (counting sizes, and RETR).
pub const CHUNK: usize = 64 * 1024;

/// Move `new/` to `cur/`, then list the messages, oldest first.
pub fn open<F: Fs>(fs: &F, dir: &Path) -> io::Result<Vec<Msg>> {
    let kept_in_new = move_new(fs, dir)?;
    let mut found = Vec::new();
    for (sub, names) in [
        ("cur", fs.list_dir(&dir.join("cur"))?),
        ("new", kept_in_new),
    ] {
        for name in names.into_iter().filter(|n| !n.starts_with('.')) {
            let path = format!("{sub}/{name}");
            let m = match fs.metadata(&dir.join(&path)) {
                Ok(m) if !m.is_dir => m,
                // Gone meanwhile (another session), or not a message.
                _ => continue,
            };
            let uid = name.split(':').next().unwrap_or_default().to_string();
            found.push((m.mtime, path, uid));
        }
    }
    found.sort();
    let mut seen = BTreeSet::new();
    let mut msgs = Vec::new();
    for (_, path, uid) in found {
        // One message per unique name: a UIDL listed twice would confuse every client.
        if !seen.insert(uid.clone()) {
            continue;
        }
        match size(fs, &dir.join(&path)) {
            Ok(size) => msgs.push(Msg { path, uid, size }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(msgs)
}

/// Rename each `new/NAME` to `cur/NAME:2,`; returns the names that stay in `new/` (the
/// rename failed). The moves are made durable so later deletions cannot be undone by a crash
/// that brings back the `new/` name.
fn move_new<F: Fs>(fs: &F, dir: &Path) -> io::Result<Vec<String>> {
    let mut stayed = Vec::new();
    let mut moved = false;
    for name in fs.list_dir(&dir.join("new"))? {
        if name.starts_with('.') {
            continue;
        }
        let to = if name.contains(':') {
            name.clone()
        } else {
            format!("{name}:2,")
        };
        match fs.rename(&dir.join("new").join(&name), &dir.join("cur").join(&to)) {
            Ok(()) => moved = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!("pop3: cannot move new/{name} to cur/: {e}");
                stayed.push(name);
            }
        }
    }
    if moved {
        fs.sync_dir(&dir.join("cur"))?;
        fs.sync_dir(&dir.join("new"))?;
    }
    Ok(stayed)
}

/// The size a message has on the wire, reading it in pieces.
fn size<F: Fs>(fs: &F, path: &Path) -> io::Result<u64> {
    let mut f = fs.open_rw(path)?;
    let mut c = Counter::default();
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0;
    loop {
        let n = f.read_at(off, &mut buf)?;
        if n == 0 {
            return Ok(c.finish());
        }
        c.push(&buf[..n]);
        off += n as u64;
    }
}

/// How old a file in `tmp/` is before it counts as debris of an interrupted delivery.
pub const TMP_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(36 * 3600);

/// qmail-pop3d's maildir_clean: remove files in `tmp/` older than [`TMP_MAX_AGE`] (a
/// delivery writes there only briefly). Best effort: what cannot be removed stays.
pub fn clean_tmp<F: Fs>(fs: &F, dir: &Path, now: std::time::SystemTime) {
    let tmp = dir.join("tmp");
    for name in fs.list_dir(&tmp).unwrap_or_default() {
        let p = tmp.join(&name);
        let old = fs.metadata(&p).is_ok_and(|m| {
            !m.is_dir
                && now
                    .duration_since(m.mtime)
                    .is_ok_and(|age| age > TMP_MAX_AGE)
        });
        if old {
            let _ = fs.unlink(&p);
        }
    }
}

/// UPDATE: remove the deleted messages, then make that durable. An error leaves the rest of
/// the mailbox as it was; messages not yet removed are listed again next time.
///
/// Each message is first renamed to its other Maildir name (`new/NAME` ↔ `cur/NAME:2,`) and
/// removed under that: after a failed directory fsync (Linux may drop what it covered while
/// the names still look gone), a stale copy of the other name can be on the disk though
/// not in the directory listing, and a repeated delivery can bring the message back under
/// the same name; the rename binds the other name again, so the removal covers both.
pub fn update<F: Fs>(fs: &F, dir: &Path, deleted: &[String]) -> io::Result<()> {
    for path in deleted {
        let other = counterpart(path);
        let gone = match fs.rename(&dir.join(path), &dir.join(&other)) {
            Ok(()) => other,
            // Out of room for a name, say: remove it as it is.
            Err(_) => path.clone(),
        };
        match fs.unlink(&dir.join(gone)) {
            Ok(()) => {}
            // Another session took it already.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if !deleted.is_empty() {
        fs.sync_dir(&dir.join("cur"))?;
        fs.sync_dir(&dir.join("new"))?;
    }
    Ok(())
}

/// The message's other name: `new/NAME` for `cur/NAME:INFO`, `cur/NAME:2,` for `new/NAME`.
fn counterpart(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let unique = name.split(':').next().unwrap_or(name);
    if path.starts_with("new/") {
        format!("cur/{unique}:2,")
    } else {
        format!("new/{unique}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::real::RealFs;

    fn maildir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for s in ["new", "cur", "tmp"] {
            std::fs::create_dir(d.path().join(s)).unwrap();
        }
        d
    }

    #[test]
    fn new_moves_to_cur_and_sizes_count_crlf() {
        let d = maildir();
        let p = d.path();
        std::fs::write(p.join("new/100.a.host"), "A: b\n\nhi\n").unwrap();
        std::fs::write(p.join("cur/50.b.host:2,S"), "x\r\ny\n").unwrap();
        std::fs::write(p.join("new/.hidden"), "no").unwrap();
        let fs = RealFs;
        let mut msgs = open(&fs, p).unwrap();
        msgs.sort_by(|a, b| a.uid.cmp(&b.uid));
        assert_eq!(
            msgs,
            vec![
                Msg {
                    path: "cur/100.a.host:2,".into(),
                    uid: "100.a.host".into(),
                    size: 12
                },
                Msg {
                    path: "cur/50.b.host:2,S".into(),
                    uid: "50.b.host".into(),
                    size: 6
                },
            ]
        );
        assert!(p.join("cur/100.a.host:2,").exists());
        update(&fs, p, &["cur/100.a.host:2,".into(), "cur/gone".into()]).unwrap();
        assert_eq!(open(&fs, p).unwrap().len(), 1);
        // Debris older than 36 hours goes from tmp/, a delivery in progress stays.
        for n in ["old", "new"] {
            std::fs::write(p.join("tmp").join(n), "x").unwrap();
        }
        let now = std::time::SystemTime::now();
        let f = std::fs::File::options()
            .write(true)
            .open(p.join("tmp/old"))
            .unwrap();
        f.set_modified(now - TMP_MAX_AGE - std::time::Duration::from_secs(1))
            .unwrap();
        clean_tmp(&fs, p, now);
        assert_eq!(
            fs.list_dir(&p.join("tmp")).unwrap(),
            vec!["new".to_string()]
        );
    }
}
