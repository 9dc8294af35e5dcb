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

pub trait Filter: Send + Sync + 'static {
    fn check<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Verdict>;
}

/// No filtering.
pub struct NoFilter;

impl Filter for NoFilter {
    fn check<'a>(&'a self, _data: &'a [u8]) -> BoxFuture<'a, Verdict> {
        Box::pin(async { Verdict::Pass })
    }
}

/// Real-host filters: each line of `control/smtpfilters` run as `/bin/sh -c CMD` with the
/// message on standard input, in order, until one does not pass.
pub struct Commands(pub Vec<String>);

async fn run_one(cmd: &str, data: &[u8]) -> Verdict {
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
        let _ = stdin.write_all(data).await;
    }
    match child.wait().await.map(|s| s.code()) {
        Ok(Some(0)) => Verdict::Pass,
        Ok(Some(1)) => Verdict::Spam,
        _ => Verdict::TempFail,
    }
}

impl Filter for Commands {
    fn check<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            for cmd in &self.0 {
                match run_one(cmd, data).await {
                    Verdict::Pass => continue,
                    v => return v,
                }
            }
            Verdict::Pass
        })
    }
}
