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
use crate::queue::{Body, Disabled, SyncPoint};

/// Seconds to wait for the mailbox lock before deferring.
pub const LOCK_WAIT: u64 = 30;

/// `>From ` quoting (mboxrd): every line matching `^>*From ` gets one more `>`.
pub fn quote(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut q = Quoter::default();
    q.push(message, &mut out);
    q.finish(&mut out);
    out
}

/// [`quote`] a piece at a time: the start of a line is held back only while it could still
/// turn out to be `>*From ` (as counts, so a line of a million `>` costs nothing).
#[derive(Debug, Default)]
pub struct Quoter {
    /// Inside a line, past its start.
    mid_line: bool,
    /// `>`s seen at the start of this line.
    gts: usize,
    /// Bytes of `From ` matched after them.
    from: usize,
    /// Anything written at all (an empty message stays empty).
    any: bool,
}

const FROM: &[u8] = b"From ";

impl Quoter {
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        for &b in piece {
            self.any = true;
            if self.mid_line {
                out.push(b);
                self.mid_line = b != b'\n';
                continue;
            }
            if b == b'>' && self.from == 0 {
                self.gts += 1;
                continue;
            }
            if b == FROM[self.from] {
                self.from += 1;
                if self.from == FROM.len() {
                    out.push(b'>');
                    self.release(out);
                }
                continue;
            }
            self.release(out);
            out.push(b);
            self.mid_line = b != b'\n';
        }
    }

    /// Write what the start of the line held back; the rest of the line passes through.
    fn release(&mut self, out: &mut Vec<u8>) {
        out.extend(std::iter::repeat_n(b'>', self.gts));
        out.extend_from_slice(&FROM[..self.from]);
        self.gts = 0;
        self.from = 0;
        self.mid_line = true;
    }

    /// End the message with a line end.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        // Unterminated: inside a line, or its start still held back.
        let open = self.mid_line || self.gts + self.from > 0;
        self.release(out);
        if self.any && open {
            out.push(b'\n');
        }
    }
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
    message: &mut Body<<E::Fs as Fs>::File>,
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
    let r = append(&mut f, start, head, message).and_then(|()| {
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

/// Write the From_ line and headers, the quoted message a piece at a time, a blank line.
fn append<T: FsFile, B: FsFile>(
    f: &mut T,
    start: u64,
    head: &[u8],
    body: &mut Body<B>,
) -> io::Result<()> {
    f.write_at(start, head)?;
    let mut at = start + head.len() as u64;
    let (mut q, mut out) = (Quoter::default(), Vec::new());
    body.each_piece(|p| {
        out.clear();
        q.push(p, &mut out);
        f.write_at(at, &out)?;
        at += out.len() as u64;
        Ok(())
    })?;
    out.clear();
    q.finish(&mut out);
    out.push(b'\n');
    f.write_at(at, &out)
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
        assert_eq!(quote(b""), b"".to_vec());
        assert_eq!(quote(b">>Fro"), b">>Fro\n".to_vec());
        assert_eq!(quote(b"x\n>"), b"x\n>\n".to_vec());
    }

    /// The old whole-message quoting, as the reference for the streaming one.
    fn reference(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
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

    #[test]
    fn quoting_in_pieces_is_the_same_wherever_they_split() {
        let m: &[u8] = b"From a\n>From b\n>>Fromage\nx From\n>\n\nFrom \n>>>From\nFro";
        assert_eq!(quote(m), reference(m));
        for cut in 0..=m.len() {
            let (mut q, mut out) = (Quoter::default(), Vec::new());
            q.push(&m[..cut], &mut out);
            q.push(&m[cut..], &mut out);
            q.finish(&mut out);
            assert_eq!(out, reference(m), "cut at {cut}");
        }
    }
}
