//! Checking SMTP AUTH credentials: a checkpassword program (`control/checkpassword`) or the
//! built-in password file (`control/passwd`), with a per-address backoff for failures.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::control::{ControlDir, ControlError};
use crate::env::{unix_secs, Env, Fs, Program, Secret};
use crate::smtp::auth::Credentials;
use crate::smtp::server::AuthResult;

/// How credentials are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checker {
    /// A checkpassword-compatible command line (`/usr/local/bin/checkpassword /bin/true`): it
    /// reads `user\0password\0timestamp\0` on descriptor 3 and exits 0 (good), 1 (bad), or
    /// anything else (cannot tell now: a temporary failure).
    Program(String),
    /// The password file (`control/passwd`), read at every check.
    File(PathBuf),
}

impl Checker {
    /// `control/checkpassword` if it names a program, else `control/passwd` if it exists,
    /// else none (AUTH is not offered).
    pub fn load<F: Fs>(fs: &F, root: &std::path::Path) -> Result<Option<Checker>, ControlError> {
        if let Some(cmd) = ControlDir::new(fs, root).line("checkpassword")? {
            return Ok(Some(Checker::Program(cmd)));
        }
        let file = root.join(crate::passwd::FILE);
        Ok(fs.metadata(&file).is_ok().then_some(Checker::File(file)))
    }

    /// Check `c`; `me` names this host in checkpassword's timestamp field.
    pub async fn check<E: Env>(&self, env: &E, c: &Credentials, me: &str) -> AuthResult {
        match self {
            Checker::Program(cmd) => checkpassword(env, cmd, c, me).await,
            Checker::File(path) => {
                let text = match env.fs().read(path) {
                    Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return AuthResult::Bad,
                    Err(e) => {
                        tracing::warn!("AUTH: cannot read {}: {e}", path.display());
                        return AuthResult::Temporary;
                    }
                };
                match crate::passwd::verify(&text, &c.user, &c.password) {
                    Ok(true) => AuthResult::Ok,
                    Ok(false) => AuthResult::Bad,
                    Err(e) => {
                        tracing::warn!("AUTH: {e}");
                        AuthResult::Temporary
                    }
                }
            }
        }
    }
}

async fn checkpassword<E: Env>(env: &E, cmd: &str, c: &Credentials, me: &str) -> AuthResult {
    let mut fd3 = c.user.as_bytes().to_vec();
    fd3.push(0);
    fd3.extend_from_slice(&c.password);
    fd3.push(0);
    fd3.extend_from_slice(format!("<{}@{me}>", unix_secs(env.now())).as_bytes());
    fd3.push(0);
    let p = Program {
        command: cmd.to_string(),
        dir: PathBuf::from("/"),
        creds: None,
        vars: Vec::new(),
        fd3: Some(Secret(fd3)),
    };
    match env.run_program(p, &mut (&[] as &[u8])).await {
        Ok(e) if e.code == Some(0) => AuthResult::Ok,
        Ok(e) if e.code == Some(1) => AuthResult::Bad,
        Ok(e) => {
            tracing::warn!("AUTH: checkpassword exited {:?}", e.code);
            AuthResult::Temporary
        }
        Err(e) => {
            tracing::warn!("AUTH: cannot run checkpassword: {e}");
            AuthResult::Temporary
        }
    }
}

/// Failed AUTH attempts by client address: each recent failure makes the next failure's
/// reply wait a second longer (at most [`Backoff::MAX`]), so guessing is slow even across
/// connections. A success clears the address; failures older than [`Backoff::FORGET`] count
/// no more.
#[derive(Debug, Default)]
pub struct Backoff(Mutex<HashMap<IpAddr, (u32, u64)>>);

impl Backoff {
    pub const MAX: Duration = Duration::from_secs(10);
    pub const FORGET: u64 = 900;
    /// Addresses remembered at most (a flood of addresses cannot grow memory without end).
    const CAP: usize = 10_000;

    /// Record a failure at `now` (unix seconds); returns how long to wait before replying.
    pub fn failed(&self, ip: IpAddr, now: u64) -> Duration {
        let ip = ip.to_canonical();
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= Self::CAP {
            m.retain(|_, (_, at)| now.saturating_sub(*at) < Self::FORGET);
            if m.len() >= Self::CAP {
                m.clear();
            }
        }
        let e = m.entry(ip).or_insert((0, now));
        if now.saturating_sub(e.1) >= Self::FORGET {
            e.0 = 0;
        }
        let wait = Duration::from_secs(u64::from(e.0)).min(Self::MAX);
        *e = (e.0 + 1, now);
        wait
    }

    pub fn succeeded(&self, ip: IpAddr) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(&ip.to_canonical());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_forgets() {
        let b = Backoff::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let s = Duration::from_secs;
        assert_eq!(b.failed(ip, 100), s(0));
        assert_eq!(b.failed(ip, 101), s(1));
        assert_eq!(b.failed(ip, 102), s(2));
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(b.failed(other, 102), s(0));
        for t in 0..20 {
            b.failed(ip, 103 + t);
        }
        assert_eq!(b.failed(ip, 200), Backoff::MAX);
        assert_eq!(b.failed(ip, 200 + Backoff::FORGET), s(0), "forgotten");
        b.succeeded(ip);
        assert_eq!(b.failed(ip, 2000), s(0));
    }
}
