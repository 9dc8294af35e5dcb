//! Reads and writes on a connection bounded by the environment's clock (the POP3, QMTP and
//! QMQP servers and clients share them).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::env::Env;

/// Write all of `buf` within `t`.
pub async fn write_timed<E: Env, S: AsyncWrite + Unpin>(
    env: &E,
    s: &mut S,
    buf: &[u8],
    t: Duration,
) -> io::Result<()> {
    tokio::select! {
        biased;
        r = s.write_all(buf) => r,
        _ = env.sleep(t) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Read what comes within `t`; `None` when nothing did.
pub async fn read_timed<E: Env, S: AsyncRead + Unpin>(
    env: &E,
    s: &mut S,
    buf: &mut [u8],
    t: Duration,
) -> io::Result<Option<usize>> {
    tokio::select! {
        biased;
        r = s.read(buf) => r.map(Some),
        _ = env.sleep(t) => Ok(None),
    }
}
