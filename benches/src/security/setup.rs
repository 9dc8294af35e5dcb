//! The main installation: heaven.af.mil with users fred, joe and mallory, a virtual domain,
//! percenthack on the local domain, every remote route to the recorder, and the traps the
//! local-delivery rows spring (root-only targets behind users' symlinks, a uid 0 entry).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{SecError, CONCURRENCY, DATABYTES, PER_IP, TIMEOUT};

/// Relaying client (RELAYCLIENT), denied client, ordinary clients (127.0.0.1 among them).
pub const RULES: &str = "127.0.0.2:allow,RELAYCLIENT=\"\"\n127.0.0.9:deny\n:allow\n";

pub fn init(mta: &Path, root: &Path, users: &[&str]) -> Result<(), SecError> {
    let mut cmd = Command::new(mta);
    cmd.args(["init", "--me", "heaven.af.mil", "--root"])
        .arg(root);
    for u in users {
        cmd.args(["--user", u]);
    }
    let out = cmd.stdout(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(SecError::Mta {
            what: "init".into(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), SecError> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A Maildir only root may enter.
fn vault(dir: &Path) -> Result<(), SecError> {
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

pub fn main_install(mta: &Path, root: &Path, recorder: SocketAddr) -> Result<(), SecError> {
    init(mta, root, &["fred", "joe", "mallory"])?;
    let c = root.join("control");
    let controls = [
        ("rcpthosts", "heaven.af.mil\nvirt.example\n".to_string()),
        ("virtualdomains", "virt.example:fred\n".into()),
        ("percenthack", "heaven.af.mil\n".into()),
        ("realrcptto", "1\n".into()),
        ("databytes", format!("{DATABYTES}\n")),
        ("timeoutsmtpd", format!("{TIMEOUT}\n")),
        ("concurrencyincoming", format!("{CONCURRENCY}\n")),
        ("concurrencyperip", format!("{PER_IP}\n")),
        ("smtproutes", format!(":[127.0.0.1]:{}\n", recorder.port())),
        ("smtp.rules", RULES.into()),
    ];
    for (f, text) in controls {
        write(&c.join(f), &text, 0o644)?;
    }
    let fred = root.join("home/fred");
    write(&fred.join(".qmail-sales"), "./Maildir/\n", 0o644)?;
    write(&fred.join(".qmail-gw"), "./Maildir/\n", 0o664)?;
    write(
        &fred.join(".qmail-prog"),
        "|id -u > uid-of-program\n",
        0o644,
    )?;
    // fred-steal: a Maildir path through fred's symlink into a root-only Maildir.
    vault(&root.join("vault"))?;
    std::os::unix::fs::symlink(root.join("vault"), fred.join("vault"))?;
    write(&fred.join(".qmail-steal"), "./vault/\n", 0o644)?;
    // fred-peek: fred's .qmail file is a link to a file only root may read.
    write(&root.join("secret"), "&thief@far.example\n", 0o600)?;
    std::os::unix::fs::symlink(root.join("secret"), fred.join(".qmail-peek"))?;
    write(&root.join("home/joe/.qmail-default"), "./Maildir/\n", 0o644)?;
    // mallory's Maildir itself is a link to a root-only Maildir.
    vault(&root.join("vault2"))?;
    let md = root.join("home/mallory/Maildir");
    std::fs::remove_dir_all(&md)?;
    std::os::unix::fs::symlink(root.join("vault2"), &md)?;
    uid0_entry(root)
}

/// `toor`: an assign entry with uid 0, whose Maildir must never be written.
fn uid0_entry(root: &Path) -> Result<(), SecError> {
    let home = root.join("home/toor");
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(home.join("Maildir").join(d))?;
    }
    let assign = root.join("users/assign");
    let text = std::fs::read_to_string(&assign)?;
    let entry = format!("=toor:toor:0:0:{}:::\n.\n", home.display());
    let text = text
        .trim_end()
        .strip_suffix('.')
        .unwrap_or(&text)
        .to_string()
        + &entry;
    std::fs::write(&assign, text)?;
    Ok(())
}
