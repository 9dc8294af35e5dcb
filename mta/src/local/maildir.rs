//! Maildir delivery, exactly once: the file name is a pure function of (message, recipient),
//! so a delivery repeated after a crash replaces its earlier copy instead of making another.

use std::io;
use std::path::Path;

use super::dirsync::DirSyncs;
use crate::env::{Fs, FsFile};
use crate::queue::{Body, Disabled, MsgId, SyncPoint};

/// The file name of a message's copy for one recipient: a pure function of the two (and of
/// this host's name, which may not hold `/` or `:` in a Maildir name), so a repeated delivery
/// finds its earlier copy.
pub fn name(id: MsgId, rcpt: u32, host: &str) -> String {
    let host = host.replace(['/', ':'], "_");
    format!("{}.M{:016x}R{rcpt}.{host}", id.secs, id.rand)
}

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
    (head, body): (&[u8], &mut Body<F::File>),
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
    let written = write_message(&mut f, head, body).and_then(|()| {
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
            // Not delivered. A first attempt takes the name back, so no reader sees a copy
            // the queue will deliver again (if this fails too, the next attempt still writes
            // over it). A repeat must not: the name may hold an earlier attempt's durable
            // copy whose success the queue recorded although its fsync failed (the record
            // may well be on disk), and removing it would lose the message. Left there, the
            // next attempt renames over it again: still one copy.
            if !maybe_repeat {
                let _ = fs.unlink(&new);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// `head`, then the message a piece at a time.
fn write_message<T: FsFile, B: FsFile>(
    f: &mut T,
    head: &[u8],
    body: &mut Body<B>,
) -> io::Result<()> {
    f.write_at(0, head)?;
    let mut at = head.len() as u64;
    body.each_piece(|p| {
        f.write_at(at, p)?;
        at += p.len() as u64;
        Ok(())
    })
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
