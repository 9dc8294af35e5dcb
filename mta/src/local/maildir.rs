//! Maildir delivery, exactly once: the file name is a pure function of (message, recipient),
//! so a delivery repeated after a crash finds its earlier copy instead of making another.

use std::io;
use std::path::Path;

use crate::env::{Fs, FsFile};
use crate::queue::{Disabled, SyncPoint};

/// Deliver `data` into the Maildir at `dir` under `name`. Every failure is temporary.
pub fn deliver<F: Fs>(
    fs: &F,
    dir: &Path,
    name: &str,
    data: &[u8],
    off: Disabled,
) -> io::Result<()> {
    let new = dir.join("new").join(name);
    if fs.metadata(&new).is_ok() || in_cur(fs, dir, name)? {
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
    match fs.link(&tmp, &new) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    if !off.contains(SyncPoint::MaildirNew) {
        if let Err(e) = fs.sync_dir(&dir.join("new")) {
            // Linux may have dropped the new name from the disk while it still shows: take it
            // back, or the next attempt would find it and call the message delivered.
            if !crate::planted::on(crate::planted::Bug::KeepMaildirNameAfterFailedFsync) {
                let _ = fs.unlink(&new);
            }
            return Err(e);
        }
    }
    // Not synced: a tmp/ name that survives a crash is removed by the next attempt or by
    // the reader's usual tmp/ cleaning.
    let _ = fs.unlink(&tmp);
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
