//! The remaining qmail behaviours on a real host: VERP, bounces naming virtual-domain
//! recipients without their prepend, users/cdb from `mta newu`, and qmail-inject qualifying
//! bare addresses in the header.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn mta() -> &'static str {
    env!("CARGO_BIN_EXE_mta")
}

fn inject(root: &Path, args: &[&str], body: &[u8]) {
    let mut c = Command::new(mta())
        .args(["inject", "--root"])
        .arg(root)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(body).unwrap();
    assert!(c.wait().unwrap().success());
}

fn mail(root: &Path, user: &str) -> Vec<String> {
    let d = root.join("home").join(user).join("Maildir/new");
    let mut v: Vec<String> = std::fs::read_dir(d)
        .map(|d| {
            d.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn wait_mail(root: &Path, user: &str, what: &str) -> String {
    common::eventually(&format!("{user} gets {what:?}"), 30, || {
        mail(root, user).iter().any(|m| m.contains(what))
    });
    mail(root, user)
        .into_iter()
        .find(|m| m.contains(what))
        .unwrap()
}

#[test]
fn verp_senders_and_bounces_without_the_virtual_domain_prepend() {
    let root = common::installation(mta(), &["fred", "joe"]);
    std::fs::write(
        root.path().join("control/virtualdomains"),
        "virt.example:fred\n",
    )
    .unwrap();
    let (s, _) = common::spawn_logged(mta(), root);
    let root = s.root.path();
    inject(
        root,
        &["-f", "list-@heaven.af.mil-@[]", "fred"],
        b"Subject: verp\n\nx\n",
    );
    let m = wait_mail(root, "fred", "Subject: verp");
    assert!(
        m.starts_with("Return-Path: <list-fred=heaven.af.mil@heaven.af.mil>\n"),
        "{m}"
    );
    inject(
        root,
        &["-f", "joe@heaven.af.mil", "nosuch@virt.example"],
        b"Subject: v\n\nx\n",
    );
    let b = wait_mail(root, "joe", "failure notice");
    assert!(b.contains("\n<nosuch@virt.example>:\n"), "{b}");
    assert!(!b.contains("fred-nosuch"), "{b}");
}

#[test]
fn users_cdb_from_mta_newu_is_what_delivery_reads() {
    let root = common::installation(mta(), &["fred"]);
    let newu = |root: &Path| {
        Command::new(mta())
            .args(["newu", "--root"])
            .arg(root)
            .output()
            .unwrap()
    };
    let out = newu(root.path());
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("users/cdb: 2 entries"));
    // The table, not the file, is read now: fred stays known with users/assign emptied.
    std::fs::write(root.path().join("users/assign"), ".\n").unwrap();
    let (s, _) = common::spawn_logged(mta(), root);
    inject(s.root.path(), &["fred"], b"Subject: from cdb\n\nx\n");
    wait_mail(s.root.path(), "fred", "Subject: from cdb");
    std::fs::write(s.root.path().join("users/assign"), "=broken\n.\n").unwrap();
    let out = newu(s.root.path());
    assert_eq!(out.status.code(), Some(100), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("users/assign line 1"));
}

#[test]
fn inject_qualifies_bare_addresses_in_to_and_cc() {
    let root = common::installation(mta(), &["fred", "joe"]);
    let (s, _) = common::spawn_logged(mta(), root);
    let msg = b"To: fred, Joe <joe>\nCc: nobody (no one)\nSubject: q\n\nfred\n";
    inject(s.root.path(), &["fred"], msg);
    let m = wait_mail(s.root.path(), "fred", "Subject: q");
    assert!(
        m.contains("\nTo: fred@heaven.af.mil, Joe <joe@heaven.af.mil>\n"),
        "{m}"
    );
    assert!(m.contains("\nCc: nobody@heaven.af.mil (no one)\n"), "{m}");
    assert!(m.ends_with("\n\nfred\n"));
}
