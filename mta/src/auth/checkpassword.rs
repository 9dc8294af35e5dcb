//! The checkpassword interface (the one qmail-popup and SMTP AUTH patches use): the checker
//! reads `user\0password\0timestamp\0` (at most 512 bytes) from descriptor 3 and exits 0 when
//! the password is right, 1 when it is wrong, 111 when it cannot tell now.
//!
//! `control/checkpassword` holds the command line, run by `/bin/sh` as this process, e.g.
//! `/usr/bin/checkpassword /bin/true` (a checker runs its arguments after a good password).

use std::time::Duration;

use crate::env::{Env, Program, Secret};

/// The most a checker reads from descriptor 3.
pub const MAX_INPUT: usize = 512;
/// How long a checker may take before the login fails temporarily.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A checker's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Bad,
    /// The checker failed (exit 111, 2 for misuse, a crash, not found, too slow): try again
    /// later.
    Temp,
}

/// The bytes a checker reads; `None` when they exceed [`MAX_INPUT`] (a bad login, as the
/// checker could not have read them).
pub fn input(user: &str, password: &[u8], timestamp: &str) -> Option<Vec<u8>> {
    let mut v = Vec::with_capacity(user.len() + password.len() + timestamp.len() + 3);
    for part in [user.as_bytes(), password, timestamp.as_bytes()] {
        v.extend_from_slice(part);
        v.push(0);
    }
    (v.len() <= MAX_INPUT).then_some(v)
}

/// Ask the checker `command` whether `password` (for APOP: the digest of `timestamp` and the
/// secret) is `user`'s.
pub async fn check<E: Env>(
    env: &E,
    command: &str,
    user: &str,
    password: &[u8],
    timestamp: &str,
) -> Verdict {
    if user.contains('\0') || password.contains(&0) {
        return Verdict::Bad;
    }
    let Some(fd3) = input(user, password, timestamp) else {
        return Verdict::Bad;
    };
    let p = Program {
        command: command.to_string(),
        dir: "/".into(),
        creds: None,
        vars: Vec::new(),
        fd3: Some(Secret(fd3)),
    };
    let mut no_input: &[u8] = &[];
    let exit = tokio::select! {
        biased;
        r = env.run_program(p, &mut no_input) => r,
        () = env.sleep(TIMEOUT) => {
            tracing::warn!("checkpassword: {command:?} took longer than {TIMEOUT:?}");
            return Verdict::Temp;
        }
    };
    match exit {
        Ok(e) if e.code == Some(0) => Verdict::Ok,
        Ok(e) if e.code == Some(1) => Verdict::Bad,
        Ok(e) => {
            tracing::warn!(
                "checkpassword: {command:?} exited {:?}: {}",
                e.code,
                String::from_utf8_lossy(&e.output).trim()
            );
            Verdict::Temp
        }
        Err(e) => {
            tracing::warn!("checkpassword: cannot run {command:?}: {e}");
            Verdict::Temp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_three_nul_terminated_fields_and_bounded() {
        assert_eq!(input("fred", b"pw", "").unwrap(), b"fred\0pw\0\0");
        assert!(input("u", &[b'x'; 508], "").is_some());
        assert!(input("u", &[b'x'; 509], "").is_none());
    }
}
