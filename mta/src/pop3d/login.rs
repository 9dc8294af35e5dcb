//! A POP3 login, as checkpassword does it before it starts qmail-pop3d: check the password,
//! find the user's mailbox, and open it as the user ([`Maildrop::open`]). It runs where root
//! is kept: in the server itself when that is root (`mta pop3d`), else in the POP3 helper
//! `mta run` starts before it gives root up ([`super::helper`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::maildrop::Maildrop;
use crate::auth::checkpassword::{self, Verdict};
use crate::control::ControlDir;
use crate::env::{Creds, Env, Fs};
use crate::local::LocalConfig;
use crate::pop3::session::{Credentials, Login};
use crate::smtp::server::AuthResult;
use crate::smtpd::auth::Checker;

/// What a login reads from the installation (afresh for each session, as qmail's programs
/// start afresh for each connection).
#[derive(Debug, Clone)]
pub struct LoginConfig {
    pub me: String,
    /// control/checkpassword, else control/passwd (as SMTP AUTH checks).
    pub checker: Option<Checker>,
    /// users/assign (and, with control/getpw, the system's accounts).
    pub local: LocalConfig,
}

impl LoginConfig {
    pub fn load<F: Fs>(fs: &F, root: &Path) -> Result<LoginConfig, String> {
        let c = ControlDir::new(fs, root);
        Ok(LoginConfig {
            me: c.me().map_err(|e| e.to_string())?,
            checker: Checker::load(fs, root).map_err(|e| e.to_string())?,
            local: LocalConfig::load(fs, root).map_err(|e| e.to_string())?,
        })
    }
}

/// Whose Maildir a session serves.
#[derive(Debug, Clone)]
struct Owner {
    who: Creds,
    home: PathBuf,
}

/// Check the password, find the user's mailbox and open it as the user.
pub async fn login<E: Env>(
    env: &E,
    cfg: &LoginConfig,
    c: &Credentials,
    peer: SocketAddr,
) -> (Login, Option<Maildrop>) {
    match verdict(env, cfg, c).await {
        AuthResult::Ok => {}
        AuthResult::Bad => {
            tracing::info!("pop3 {peer}: login failed for {:?}", c.user);
            return (Login::Bad, None);
        }
        AuthResult::Temporary => {
            return (Login::Temp("unable to check the password now".into()), None)
        }
    }
    let m = match owner_of(env, cfg, &c.user) {
        Ok(m) => m,
        Err(why) => {
            tracing::warn!("pop3 {peer}: {:?}: {why}", c.user);
            return (Login::Temp(why), None);
        }
    };
    match Maildrop::open(env, m.who, &m.home).await {
        Ok((drop, msgs)) => {
            tracing::info!(
                uid = m.who.uid,
                "pop3 {peer}: {} logged in, {} messages",
                c.user,
                msgs.len()
            );
            (Login::Ok(msgs), Some(drop))
        }
        Err(e) => {
            tracing::warn!("pop3 {peer}: {}: cannot open the Maildir: {e}", c.user);
            (Login::Temp("unable to open the mailbox".into()), None)
        }
    }
}

/// USER/PASS as SMTP AUTH checks them (checkpassword or the password file); APOP through
/// checkpassword with the greeting's timestamp (the password file cannot check a digest).
async fn verdict<E: Env>(env: &E, cfg: &LoginConfig, c: &Credentials) -> AuthResult {
    match (&cfg.checker, c.timestamp.is_empty()) {
        (None, _) => {
            tracing::warn!("pop3: no control/checkpassword or control/passwd: no one can log in");
            AuthResult::Temporary
        }
        (Some(ch), true) => {
            let cred = crate::smtp::auth::Credentials {
                user: c.user.clone(),
                password: c.secret.as_bytes().to_vec(),
            };
            ch.check(env, &cred, &cfg.me).await
        }
        (Some(Checker::Program(cmd)), false) => {
            match checkpassword::check(env, cmd, &c.user, c.secret.as_bytes(), &c.timestamp).await {
                Verdict::Ok => AuthResult::Ok,
                Verdict::Bad => AuthResult::Bad,
                Verdict::Temp => AuthResult::Temporary,
            }
        }
        (Some(Checker::File(_)), false) => AuthResult::Bad,
    }
}

/// The user's `users/assign` entry (or account, with `control/getpw`), and whether this
/// process can act as them (the rules of local delivery: never as root, and only as itself
/// unless it runs as root).
fn owner_of<E: Env>(env: &E, cfg: &LoginConfig, user: &str) -> Result<Owner, String> {
    let u = match cfg.local.user(env.fs(), user) {
        Ok(Some(u)) if u.ext.is_empty() => u,
        Ok(_) => return Err("this user has no mailbox here".into()),
        Err(e) => return Err(format!("unable to read users/cdb: {e}")),
    };
    if u.uid == 0 {
        return Err("not allowed to read mail as root".into());
    }
    let me = env.uid();
    if me != 0 && me != u.uid {
        return Err(format!(
            "this server runs as uid {me}, not as root, and cannot open uid {}'s mailbox",
            u.uid
        ));
    }
    Ok(Owner {
        who: Creds {
            uid: u.uid,
            gid: u.gid,
        },
        home: u.home,
    })
}
