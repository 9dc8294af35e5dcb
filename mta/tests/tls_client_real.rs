//! Issue 10, the client side: remote delivery between two real `mta run`s over loopback with
//! opportunistic STARTTLS, `control/tlsdestinations` (required TLS, verified certificates)
//! and smarthost AUTH from `control/smtproutesauth`.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Server;

fn mta() -> &'static str {
    env!("CARGO_BIN_EXE_mta")
}

/// `mta init --me ME` with `users`, the control files given (`smtproutesauth` with mode
/// 0600), without a certificate unless `cert`; nothing started.
fn install(me: &str, users: &[&str], controls: &[(&str, String)], cert: bool) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let mut init = Command::new(mta());
    init.args(["init", "--me", me, "--root"]).arg(root.path());
    for u in users {
        init.args(["--user", u]);
    }
    assert!(init.output().unwrap().status.success());
    if !cert {
        std::fs::remove_file(root.path().join("control/servercert.pem")).unwrap();
    }
    for (f, text) in controls {
        let p = root.path().join("control").join(f);
        std::fs::write(&p, text).unwrap();
        if *f == "smtproutesauth" {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            // The server reads it after giving root up: the queue user's, as for an admin.
            let q = std::fs::read_to_string(root.path().join("control/queueuser")).unwrap();
            let q = nix::unistd::User::from_name(q.trim()).unwrap().unwrap();
            std::os::unix::fs::chown(&p, Some(q.uid.as_raw()), Some(q.gid.as_raw())).unwrap();
        }
    }
    root
}

/// Start `mta run` on `root` with every log line (MTA_LOG=info) in `root/stderr`.
fn run(root: tempfile::TempDir) -> (Server, PathBuf) {
    let log = root.path().join("stderr");
    let mut cmd = Command::new(mta());
    cmd.args(["run", "--listen", "127.0.0.1:0", "--root"])
        .arg(root.path())
        .env("MTA_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap());
    let (child, addr) = common::spawn_listening(cmd);
    (Server { child, addr, root }, log)
}

fn inject(root: &Path, to: &str, body: &str) {
    let mut c = Command::new(mta())
        .args(["inject", "-f", "joe@heaven.af.mil", to, "--root"])
        .arg(root)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success());
}

fn maildir(root: &Path, user: &str) -> Vec<String> {
    let dir = root.join("home").join(user).join("Maildir/new");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn delivery_between_servers_uses_starttls() {
    let (far, _) = run(install("far.example", &["bill"], &[], true));
    let route = format!("far.example:[127.0.0.1]:{}\n", far.addr.port());
    let (near, _) = run(install(
        "heaven.af.mil",
        &["joe"],
        &[("smtproutes", route)],
        true,
    ));
    inject(
        near.root.path(),
        "bill@far.example",
        "Subject: tls\n\nover TLS\n",
    );
    common::eventually("delivery", 20, || {
        maildir(far.root.path(), "bill").len() == 1
    });
    let m = &maildir(far.root.path(), "bill")[0];
    assert!(m.contains("over TLS"));
    assert!(m.contains("\n  by far.example with ESMTPS; "), "{m}");
}

#[test]
fn required_tls_defers_when_refused_or_unverified() {
    let (plain, _) = run(install("far.example", &["bill"], &[], false));
    let (selfsigned, _) = run(install("far2.example", &["bill"], &[], true));
    let routes = format!(
        "far.example:[127.0.0.1]:{}\nfar2.example:[127.0.0.1]:{}\n",
        plain.addr.port(),
        selfsigned.addr.port()
    );
    let tlsdest = "far.example\nfar2.example:verify\n".to_string();
    let (near, near_log) = run(install(
        "heaven.af.mil",
        &["joe"],
        &[("smtproutes", routes), ("tlsdestinations", tlsdest)],
        true,
    ));
    inject(
        near.root.path(),
        "bill@far.example",
        "Subject: 1\n\nsecret one\n",
    );
    inject(
        near.root.path(),
        "bill@far2.example",
        "Subject: 2\n\nsecret two\n",
    );
    let both = || {
        let l = log(&near_log);
        l.contains("does_not_offer_STARTTLS,_which_is_required")
            && l.contains("TLS_handshake_failed:_invalid_peer_certificate")
    };
    common::eventually("both deliveries deferred", 20, both);
    assert!(maildir(plain.root.path(), "bill").is_empty());
    assert!(maildir(selfsigned.root.path(), "bill").is_empty());
    let l = log(&near_log);
    assert_eq!(l.matches("deferral:").count(), 2, "{l}");
}

#[test]
fn smarthost_auth_relays_through_a_server_that_needs_it() {
    let far = install("far.example", &["bill"], &[], true);
    let pw = Command::new(mta())
        .args(["passwd", "--root"])
        .arg(far.path())
        .arg("fred")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pw = pw;
    pw.stdin.take().unwrap().write_all(b"s3cret-pw\n").unwrap();
    assert!(pw.wait().unwrap().success());
    let (far, far_log) = run(far);
    let route = format!(":[127.0.0.1]:{}\n", far.addr.port());
    let auth = "[127.0.0.1]:fred:s3cret-pw\n".to_string();
    let (near, near_log) = run(install(
        "heaven.af.mil",
        &["joe"],
        &[("smtproutes", route), ("smtproutesauth", auth)],
        true,
    ));
    // far.example relays only for fred: a domain it does not host goes through on AUTH.
    inject(
        near.root.path(),
        "someone@elsewhere.example",
        "Subject: relay\n\nvia smarthost\n",
    );
    common::eventually("relayed", 20, || log(&near_log).contains("success:"));
    assert!(
        log(&far_log).contains("AUTH ok, user \"fred\""),
        "{}",
        log(&far_log)
    );
    for l in [log(&near_log), log(&far_log)] {
        assert!(
            !l.contains("s3cret") && !l.contains("czNjcmV0"),
            "password in a log:\n{l}"
        );
    }
}

#[test]
fn smtproutesauth_readable_by_others_is_refused() {
    let root = install(
        "heaven.af.mil",
        &["joe"],
        &[("smtproutesauth", "[127.0.0.1]:a:b\n".into())],
        true,
    );
    let p = root.path().join("control/smtproutesauth");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = Command::new(mta())
        .args(["run", "--listen", "127.0.0.1:0", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(111));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("smtproutesauth") && err.contains("chmod 600"),
        "{err}"
    );
}
