//! mbox delivery: From_ line, mboxrd quoting, a final blank line; an interrupted write is cut
//! back so the mailbox never holds half a message.
//!
//! Crashes too: before appending, the mailbox's size is made durable in a marker file beside
//! it (`.NAME.mta-append`); the marker is durably removed only after the append is synced,
//! before success is reported. A marker found later therefore means an append that was never
//! acknowledged (its message will be delivered again), so the mailbox is cut back to the
//! recorded size first: the mailbox never holds a partial message. A crash after the marker is
//! gone but before the queue recorded the outcome still repeats the delivery (at least once,
//! as in qmail); Maildir is the exactly-once format.

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::env::{Env, Fs, FsFile};
use crate::queue::{Disabled, SyncPoint};

/// Seconds to wait for the mailbox lock before deferring.
pub const LOCK_WAIT: u64 = 30;

/// `>From ` quoting (mboxrd): every line matching `^>*From ` gets one more `>`.
pub fn quote(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    for line in message.split_inclusive(|&b| b == b'\n') {
        let rest = &line[line.iter().take_while(|&&b| b == b'>').count()..];
        if rest.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out
}

#[derive(Debug)]
pub enum MboxError {
    Locked,
    Io(io::Error),
}

/// Append one message (`head` is the From_ line and added headers) to the mbox at `path`.
pub async fn deliver<E: Env>(
    env: &E,
    path: &Path,
    head: &[u8],
    message: &[u8],
    off: Disabled,
) -> Result<(), MboxError> {
    let fs = env.fs();
    let mut f = match fs.open_rw(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let f = fs.create_new(path).map_err(MboxError::Io)?;
            if let Some(dir) = path.parent() {
                fs.sync_dir(dir).map_err(MboxError::Io)?;
            }
            f
        }
        Err(e) => return Err(MboxError::Io(e)),
    };
    let mut waited = 0;
    let _lock = loop {
        match fs.try_lock(path) {
            Ok(l) => break l,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && waited < LOCK_WAIT => {
                env.sleep(Duration::from_secs(1)).await;
                waited += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(MboxError::Locked),
            Err(e) => return Err(MboxError::Io(e)),
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or("mbox".into(), |n| n.to_string_lossy().into_owned());
    let mark = dir.join(format!(".{name}.mta-append"));
    let io = MboxError::Io;
    if let Ok(b) = fs.read(&mark) {
        if let Ok(b) = <[u8; 8]>::try_from(b.as_slice()) {
            f.set_len(u64::from_le_bytes(b)).map_err(io)?;
            f.sync().map_err(io)?;
        }
        fs.unlink(&mark).map_err(io)?;
    }
    let start = f.size().map_err(MboxError::Io)?;
    let mut m = fs.create_new(&mark).map_err(io)?;
    m.write_at(0, &start.to_le_bytes()).map_err(io)?;
    if !off.contains(SyncPoint::MboxMark) {
        m.sync().map_err(io)?;
        fs.sync_dir(dir).map_err(io)?;
    }
    let mut buf = head.to_vec();
    buf.extend_from_slice(&quote(message));
    buf.push(b'\n');
    let r = f.write_at(start, &buf).and_then(|()| {
        if off.contains(SyncPoint::MboxFile) {
            Ok(())
        } else {
            f.sync()
        }
    });
    if let Err(e) = r {
        let _ = f.set_len(start);
        let _ = f.sync();
        return Err(MboxError::Io(e));
    }
    fs.unlink(&mark).map_err(io)?;
    if !off.contains(SyncPoint::MboxMarkGone) {
        fs.sync_dir(dir).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mboxrd_quoting() {
        assert_eq!(
            quote(b"From me\nx\n>From y\n>>From z\nFrom\nno newline"),
            b">From me\nx\n>>From y\n>>>From z\nFrom\nno newline\n".to_vec()
        );
    }
}
