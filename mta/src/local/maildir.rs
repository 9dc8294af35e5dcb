//! Maildir delivery, exactly once: the file name is a pure function of (message, recipient),
//! so a delivery repeated after a crash replaces its earlier copy instead of making another.

use std::io;
use std::path::Path;

use super::dirsync::DirSyncs;
use crate::env::{Fs, FsFile};
use crate::queue::{Disabled, SyncPoint};

/// Deliver `data` into the Maildir at `dir` under `name`. Every failure is temporary.
///
/// Only a `maybe_repeat` delivery (an earlier attempt may have written the name) looks in
/// cur/ for a copy a reader has already taken; a first attempt costs the same whatever the
/// size of the mailbox.
///
/// A name already in new/ is not trusted: after a failed fsync Linux may have dropped it from
/// the disk while it still shows. The message is written again and renamed over it, which
/// leaves one copy under the one name either way. Only a reader's move to cur/ (made after
/// the name was durable) counts as delivered.
///
/// The fsync of `new/` is shared with concurrent deliveries into it (`syncs`, keyed by the
/// directory's absolute name).
pub fn deliver<F: Fs>(
    fs: &F,
    (dir, name): (&Path, &str),
    data: &[u8],
    maybe_repeat: bool,
    (syncs, key): (&DirSyncs, &Path),
    off: Disabled,
) -> io::Result<()> {
    let new = dir.join("new").join(name);
    let trusted = crate::planted::on(crate::planted::Bug::TrustMaildirNameInCache)
        && fs.metadata(&new).is_ok();
    if trusted || (maybe_repeat && in_cur(fs, dir, name)?) {
        return Ok(());
    }
    let tmp = dir.join("tmp").join(name);
    // A file left in tmp/ by an interrupted attempt is incomplete: start over.
    match fs.unlink(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = fs.create_new(&tmp)?;
    let written = f.write_at(0, data).and_then(|()| {
        if off.contains(SyncPoint::MaildirFile) {
            Ok(())
        } else {
            f.sync()
        }
    });
    if let Err(e) = written {
        let _ = fs.unlink(&tmp);
        return Err(e);
    }
    fs.rename(&tmp, &new)?;
    if !off.contains(SyncPoint::MaildirNew) {
        if let Err(e) = syncs.sync(key, || fs.sync_dir(&dir.join("new"))) {
            // Not delivered: take the name back so no reader sees a copy the queue will
            // deliver again (if this fails too, the next attempt still writes over it).
            let _ = fs.unlink(&new);
            return Err(e);
        }
    }
    Ok(())
}

/// A reader moves `new/NAME` to `cur/NAME:2,FLAGS`.
fn in_cur<F: Fs>(fs: &F, dir: &Path, name: &str) -> io::Result<bool> {
    let cur = dir.join("cur");
    if fs.metadata(&cur.join(name)).is_ok() {
        return Ok(true);
    }
    let prefix = format!("{name}:");
    Ok(fs.list_dir(&cur)?.iter().any(|n| n.starts_with(&prefix)))
}
