//! The content-filter hook: a chain of commands that see each message before it is queued.
//! Exit 0 passes it on, 1 rejects it as spam (`554`), anything else is a temporary failure.

use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Spam,
    TempFail,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The message a filter sees: a spooled part in a file (path, offset, length), then bytes in
/// memory.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub spooled: Option<(&'a std::path::Path, u64, u64)>,
    pub memory: &'a [u8],
}

pub trait Filter: Send + Sync + 'static {
    fn check<'a>(&'a self, msg: Input<'a>) -> BoxFuture<'a, Verdict>;
}

/// No filtering.
pub struct NoFilter;

impl Filter for NoFilter {
    fn check<'a>(&'a self, _msg: Input<'a>) -> BoxFuture<'a, Verdict> {
        Box::pin(async { Verdict::Pass })
    }
}

/// Real-host filters: each line of `control/smtpfilters` run as `/bin/sh -c CMD` with the
/// message on standard input, in order, until one does not pass.
pub struct Commands(pub Vec<String>);

/// Copy the message into a filter's standard input, in bounded pieces.
async fn feed(stdin: &mut tokio::process::ChildStdin, msg: Input<'_>) -> std::io::Result<()> {
    if let Some((path, off, len)) = msg.spooled {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut f = tokio::fs::File::open(path).await?;
        f.seek(std::io::SeekFrom::Start(off)).await?;
        let mut left = len;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = f.read(&mut buf[..want]).await?;
            if n == 0 {
                break;
            }
            stdin.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
    }
    stdin.write_all(msg.memory).await
}

async fn run_one(cmd: &str, msg: Input<'_>) -> Verdict {
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else {
        tracing::warn!("content filter {cmd:?} could not be started");
        return Verdict::TempFail;
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A filter may exit without reading everything; its exit status decides.
        let _ = feed(&mut stdin, msg).await;
    }
    match child.wait().await.map(|s| s.code()) {
        Ok(Some(0)) => Verdict::Pass,
        Ok(Some(1)) => Verdict::Spam,
        _ => Verdict::TempFail,
    }
}

impl Filter for Commands {
    fn check<'a>(&'a self, msg: Input<'a>) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            for cmd in &self.0 {
                match run_one(cmd, msg).await {
                    Verdict::Pass => continue,
                    v => return v,
                }
            }
            Verdict::Pass
        })
    }
}
