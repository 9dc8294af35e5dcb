//! qmail-getpw's passwd fallback on a real host, as root: with `control/getpw`, a local part
//! that `users/assign` does not name but a system account does is delivered to that
//! account's home Maildir as its uid and gid, extensions through its `.qmail-default`.

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

const MTA: &str = env!("CARGO_BIN_EXE_mta");

fn inject(root: &Path, rcpt: &str, subject: &str) {
    let mut c = Command::new(MTA)
        .args(["inject", "-f", "joe@heaven.af.mil", rcpt, "--root"])
        .arg(root)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let msg = format!("Subject: {subject}\n\nx\n");
    c.stdin.take().unwrap().write_all(msg.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success());
}

fn messages(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn getpw_delivers_to_a_system_account_not_in_users_assign_as_that_account() {
    let homes = tempfile::tempdir().unwrap();
    std::fs::set_permissions(homes.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let name = format!("mtagp{}", std::process::id() % 100_000);
    let Some(u) = common::SystemUser::create(&name, &homes.path().join(&name)) else {
        return;
    };
    let root = common::installation(MTA, &["fred"]);
    let assign = std::fs::read_to_string(root.path().join("users/assign")).unwrap();
    assert!(!assign.contains(&name), "not in users/assign");
    std::fs::write(root.path().join("control/getpw"), "1\n").unwrap();
    std::fs::write(u.home.join(".qmail-default"), "./Maildir/\n").unwrap();
    let (srv, log) = common::spawn_logged(MTA, root);
    let r = srv.root.path();
    inject(r, &format!("{name}@heaven.af.mil"), "plain");
    inject(r, &format!("{name}-list@heaven.af.mil"), "extension");
    common::eventually("both deliveries", 30, || {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        l.matches(": success: did_1+0+0/").count() == 2
    });
    let new = messages(&u.home.join("Maildir/new"));
    assert_eq!(new.len(), 2, "{new:?}");
    let mut texts = Vec::new();
    for m in &new {
        let md = std::fs::metadata(m).unwrap();
        assert_eq!(
            (md.uid(), md.gid()),
            (u.uid, u.gid),
            "{} is theirs",
            m.display()
        );
        texts.push(std::fs::read_to_string(m).unwrap());
    }
    assert!(texts.iter().any(|t| t.contains("Subject: plain")));
    let ext = texts
        .iter()
        .find(|t| t.contains("Subject: extension"))
        .unwrap();
    assert!(
        ext.contains(&format!("Delivered-To: {name}-list@heaven.af.mil")),
        "{ext}"
    );
    // Nothing went to the alias user (fred) instead.
    assert!(messages(&r.join("home/fred/Maildir/new")).is_empty());
}
