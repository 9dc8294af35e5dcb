//! A queued message's bytes, read a piece at a time: deliveries stream the message from its
//! log segment instead of holding it in memory, so memory does not grow with message size.

use std::io;
use std::path::{Path, PathBuf};

use crate::env::{Fs, FsFile};

/// Where a message's bytes are: `len` bytes at `offset` of the log segment `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyRef {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
}

/// Bytes read at a time.
pub const PIECE: usize = 64 * 1024;

impl BodyRef {
    /// Open for reading (by the process that owns the queue: a delivery running as another
    /// user gets the open file, never the path).
    pub fn open<F: Fs>(&self, fs: &F) -> io::Result<Body<F::File>> {
        Ok(Body {
            file: fs.open_rw(&self.path)?,
            offset: self.offset,
            len: self.len,
            pos: 0,
            first: None,
        })
    }

    /// Open for the root delivery helper, which is told where the message is by the
    /// unprivileged queue manager: only a regular segment file directly in `log_dir` (itself
    /// no symbolic link), never through a symbolic link, and only one owned by whoever owns
    /// `log_dir` (the queue user): the pointer cannot make root read anything else.
    pub fn open_in<F: Fs>(&self, fs: &F, log_dir: &Path) -> io::Result<Body<F::File>> {
        let refused = || {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is not a queue file", self.path.display()),
            )
        };
        let name = self.path.file_name().and_then(|n| n.to_str());
        let name = match name {
            Some(n)
                if self.path.parent() == Some(log_dir) && super::log::Seg::parse(n).is_some() =>
            {
                n
            }
            _ => return Err(refused()),
        };
        let (file, m, dir) = fs.open_read_in(log_dir, name)?;
        if m.is_dir || m.uid != dir.uid {
            return Err(refused());
        }
        Ok(Body {
            file,
            offset: self.offset,
            len: self.len,
            pos: 0,
            first: None,
        })
    }
}

impl<T: FsFile> crate::env::Input for Body<T> {
    fn next_piece(&mut self) -> io::Result<Vec<u8>> {
        Body::next_piece(self)
    }
}

/// An open message, read from its start.
pub struct Body<T: FsFile> {
    file: T,
    offset: u64,
    len: u64,
    pos: u64,
    /// The first piece, kept: a delivery reads it twice (the header for the loop check,
    /// then the whole message), and most messages are one piece.
    first: Option<Vec<u8>>,
}

impl<T: FsFile> Body<T> {
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Back to the first byte.
    pub fn rewind(&mut self) {
        self.pos = 0;
    }

    /// The next piece (at most [`PIECE`] bytes); empty at the end.
    pub fn next_piece(&mut self) -> io::Result<Vec<u8>> {
        if let (0, Some(first)) = (self.pos, &self.first) {
            self.pos = first.len() as u64;
            return Ok(first.clone());
        }
        let at_start = self.pos == 0;
        let want = (self.len - self.pos).min(PIECE as u64) as usize;
        let mut buf = vec![0u8; want];
        let mut got = 0;
        while got < want {
            let n = self
                .file
                .read_at(self.offset + self.pos + got as u64, &mut buf[got..])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got += n;
        }
        self.pos += want as u64;
        if at_start {
            self.first = Some(buf.clone());
        }
        Ok(buf)
    }

    /// Call `f` with every piece from the start.
    pub fn each_piece(&mut self, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        self.rewind();
        loop {
            let p = self.next_piece()?;
            if p.is_empty() {
                return Ok(());
            }
            f(&p)?;
        }
    }

    /// The first `n` bytes at most (a header to look at).
    pub fn prefix(&mut self, n: usize) -> io::Result<Vec<u8>> {
        self.rewind();
        let mut out = Vec::new();
        while out.len() < n {
            let p = self.next_piece()?;
            if p.is_empty() {
                break;
            }
            out.extend_from_slice(&p);
        }
        out.truncate(n);
        Ok(out)
    }

    /// The whole message in memory (for what must hold it: a forward's new queue record).
    pub fn read_all(&mut self) -> io::Result<Vec<u8>> {
        self.prefix(self.len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::real::RealFs;
    use std::os::unix::fs::symlink;

    const SEG: &str = "0000000000000001.0000abcd";

    fn body_ref(dir: &Path) -> BodyRef {
        BodyRef {
            path: dir.join(SEG),
            offset: 0,
            len: 5,
        }
    }

    #[test]
    fn the_helper_opens_only_regular_segment_files_of_the_real_log_directory() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("log");
        std::fs::create_dir(&log).unwrap();
        std::fs::write(log.join(SEG), "hello").unwrap();
        let mut b = body_ref(&log).open_in(&RealFs, &log).unwrap();
        assert_eq!(b.read_all().unwrap(), b"hello");
        // Not a segment name, or not directly in the log directory.
        let mut other = body_ref(&log);
        other.path = log.join("passwd");
        assert!(other.open_in(&RealFs, &log).is_err());
        other.path = t.path().join(SEG);
        assert!(other.open_in(&RealFs, &log).is_err());
        // A FIFO named like a segment is refused at once (no blocking open).
        std::fs::remove_file(log.join(SEG)).unwrap();
        nix::unistd::mkfifo(
            &log.join(SEG),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(body_ref(&log).open_in(&RealFs, &log).is_err());
        // The log directory swapped for a symbolic link to another one.
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join(SEG), "other").unwrap();
        std::fs::remove_dir_all(&log).unwrap();
        symlink(&elsewhere, &log).unwrap();
        assert!(body_ref(&log).open_in(&RealFs, &log).is_err());
    }

    #[test]
    fn a_segment_owned_by_someone_else_is_refused() {
        if !nix::unistd::getuid().is_root() {
            return; // only root can give a file away
        }
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("log");
        std::fs::create_dir(&log).unwrap();
        std::fs::write(log.join(SEG), "secret").unwrap();
        // As a hard link to a root-owned file would be, in a directory the queue user owns.
        std::os::unix::fs::chown(&log, Some(4242), Some(4242)).unwrap();
        assert!(body_ref(&log).open_in(&RealFs, &log).is_err());
        std::os::unix::fs::chown(log.join(SEG), Some(4242), Some(4242)).unwrap();
        assert!(body_ref(&log).open_in(&RealFs, &log).is_ok());
    }
}
