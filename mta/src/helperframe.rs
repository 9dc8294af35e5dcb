//! Frames on the pipes between `mta run` and its root helpers (local delivery, POP3):
//! `len:u32 | kind:u8 | fields`, fields as `len:u32 | bytes` or fixed little-endian integers.
//! Either side reads a frame whole (at most a given length) before decoding it, and a short
//! or malformed frame is an error, never a panic.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub(crate) fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("helper pipe: bad {what}"),
    )
}

/// A frame being written.
pub(crate) struct Enc(Vec<u8>);

impl Enc {
    pub(crate) fn new(kind: u8) -> Self {
        Enc(vec![0, 0, 0, 0, kind])
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
    /// Overwrite the first field, a `u64` written before its value was known (a request id
    /// given when the request is sent).
    pub(crate) fn set_first_u64(&mut self, v: u64) {
        self.0[5..13].copy_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn done(mut self) -> Vec<u8> {
        let len = (self.0.len() - 4) as u32;
        self.0[..4].copy_from_slice(&len.to_le_bytes());
        self.0
    }
}

/// A frame's fields being read.
pub(crate) struct Dec<'a>(pub(crate) &'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(bad("frame"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub(crate) fn u64(&mut self) -> io::Result<u64> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| bad("number"))?;
        Ok(u64::from_le_bytes(b))
    }
    pub(crate) fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| bad("length"))?;
        self.take(u32::from_le_bytes(b) as usize)
    }
    pub(crate) fn text(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| bad("text"))
    }
}

/// Read one frame of at most `max` bytes: its kind and fields. `None` at a clean end.
pub(crate) async fn read_frame(
    r: &mut (dyn AsyncRead + Send + Unpin),
    max: usize,
) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > max {
        return Err(bad("frame length"));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    let kind = buf.remove(0);
    Ok(Some((kind, buf)))
}

/// One side's writing end, shared by the tasks that answer or ask.
pub(crate) type Writer = Arc<tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>>;

pub(crate) async fn send(w: &Writer, frame: &[u8]) -> io::Result<()> {
    let mut w = w.lock().await;
    w.write_all(frame).await?;
    w.flush().await
}
