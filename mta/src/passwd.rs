//! The built-in password file for SMTP AUTH, `control/passwd`: one `user:hash` line per user,
//! the hash an Argon2id PHC string (`$argon2id$v=19$m=...`). Used when no checkpassword
//! program is configured; written by `mta passwd`.

use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::env::Fs;

/// The file, under the installation's root.
pub const FILE: &str = "control/passwd";

#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    #[error("invalid user name {0:?}: must be 1 to 255 characters, no ':' nor control characters")]
    User(String),
    #[error("the password is empty")]
    Empty,
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("control/passwd line {0}: not user:hash")]
    Line(usize),
}

/// A user name fit for the file (and for the Received line, which quotes it).
pub fn valid_user(user: &str) -> Result<(), PasswdError> {
    let ok = !user.is_empty()
        && user.len() <= 255
        && !user.contains(':')
        && !user.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(PasswdError::User(user.into()))
    }
}

/// Hash a password with a fresh salt (16 random bytes from the caller).
pub fn hash(password: &[u8], salt: [u8; 16]) -> Result<String, PasswdError> {
    if password.is_empty() {
        return Err(PasswdError::Empty);
    }
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswdError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswdError::Hash(e.to_string()))
}

/// The file's text with `user` set to `hash` (replacing an old line, else appended), every
/// other line kept as it was.
pub fn set(text: &str, user: &str, hash: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    for l in text.lines() {
        if l.split_once(':').is_some_and(|(u, _)| u == user) {
            if !done {
                out.push_str(&format!("{user}:{hash}\n"));
                done = true;
            }
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    if !done {
        out.push_str(&format!("{user}:{hash}\n"));
    }
    out
}

/// Check `user`'s password against the file's text: `Ok(false)` for an unknown user or a
/// wrong password; an error for a line that is not `user:hash`.
pub fn verify(text: &str, user: &str, password: &[u8]) -> Result<bool, PasswdError> {
    for (n, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (u, h) = l.split_once(':').ok_or(PasswdError::Line(n + 1))?;
        if u != user {
            continue;
        }
        let h = PasswordHash::new(h).map_err(|_| PasswdError::Line(n + 1))?;
        return Ok(Argon2::default().verify_password(password, &h).is_ok());
    }
    Ok(false)
}

/// [`verify`] against the installation's file; a missing file knows no users.
pub fn check<F: Fs>(fs: &F, root: &Path, user: &str, password: &[u8]) -> std::io::Result<bool> {
    let text = match fs.read(&root.join(FILE)) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    verify(&text, user, password).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_verify() {
        let h = hash(b"sesame", [7; 16]).unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        let text = set("# users\njoe:x\n", "cave", &h);
        assert!(
            text.starts_with("# users\njoe:x\ncave:$argon2id$"),
            "{text}"
        );
        assert!(verify(&text, "cave", b"sesame").unwrap());
        assert!(!verify(&text, "cave", b"Sesame").unwrap());
        assert!(!verify(&text, "nobody", b"sesame").unwrap());
        // joe's line comes first and is not a hash.
        assert!(matches!(
            verify(&text, "joe", b"x"),
            Err(PasswdError::Line(2))
        ));
        let h2 = hash(b"other", [8; 16]).unwrap();
        let again = set(&text, "cave", &h2);
        assert_eq!(again.matches("cave:").count(), 1);
        assert!(verify(&again, "cave", b"other").unwrap());
    }

    #[test]
    fn bad_input() {
        assert!(valid_user("fred@example.org").is_ok());
        assert!(valid_user("a:b").is_err() && valid_user("").is_err());
        assert!(valid_user("a\nb").is_err());
        assert!(matches!(hash(b"", [0; 16]), Err(PasswdError::Empty)));
    }
}
