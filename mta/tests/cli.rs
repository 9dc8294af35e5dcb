//! The `mta` binary's contracts: init, inject (exit 0/100/111) and queue list/stat.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use mta::env::real::RealEnv;
use mta::queue::{Paths, View};

fn mta(root: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mta"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env("USER", "joe")
        .env_remove("MTA_ROOT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails early may never read its input: only its output and status count.
    let _ = c.stdin.take().unwrap().write_all(stdin);
    c.wait_with_output().unwrap()
}

fn init(root: &Path) {
    let o = mta(
        root,
        &[
            "init",
            "--me",
            "heaven.af.mil",
            "--user",
            "fred",
            "--user",
            "joe",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn view(root: &Path) -> View {
    View::load(&RealEnv::new(), &Paths::new(root.join("queue"))).unwrap()
}

#[test]
fn init_creates_the_installation_and_refuses_to_overwrite() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("r");
    init(&root);
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("control/me"), "heaven.af.mil\n");
    assert_eq!(read("control/locals"), "heaven.af.mil\n");
    assert_eq!(read("control/rcpthosts"), "heaven.af.mil\n");
    assert_eq!(read("control/defaultdelivery"), "./Maildir/\n");
    assert_eq!(read("alias/.qmail-postmaster"), "&fred\n");
    assert_eq!(read("alias/.qmail-mailer-daemon"), "&fred\n");
    let assign = read("users/assign");
    assert!(assign.contains("=fred:fred:"));
    assert!(assign.contains(&format!(":{}:::\n", root.join("home/fred").display())));
    assert!(assign.ends_with(".\n"));
    for sub in ["new", "cur", "tmp"] {
        assert!(root.join("home/joe/Maildir").join(sub).is_dir());
    }
    assert!(root.join("queue/todo").is_dir());

    let o = mta(&root, &["init", "--me", "other.org"], b"");
    assert_eq!(o.status.code(), Some(100));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(read("control/me"), "heaven.af.mil\n");
    let o = mta(&root, &["init", "--me", "other.org", "--force"], b"");
    assert!(o.status.success());
    assert_eq!(read("control/me"), "other.org\n");

    let o = mta(&d.path().join("x"), &["init", "--me", "bad name!"], b"");
    assert_eq!(o.status.code(), Some(100));
}

#[test]
fn inject_stores_byte_exact_and_lists() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    init(root);
    let body = b"Subject: bin\n\n\0\x01\xff\xfe 8bit\r\nlast line without newline";
    let o = mta(
        root,
        &["inject", "-f", "joe@heaven.af.mil", "fred", "bill@irs.gov"],
        body,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = view(root);
    assert_eq!(v.todo.len(), 1);
    let (env, _) = &v.todo[0];
    assert_eq!(env.sender, "joe@heaven.af.mil");
    assert_eq!(env.recipients, vec!["fred@heaven.af.mil", "bill@irs.gov"]);
    let todo = std::fs::read_dir(root.join("queue/todo"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let raw = std::fs::read(todo.path()).unwrap();
    let (_, data) = mta::queue::record::decode_todo(&raw).unwrap();
    let text = String::from_utf8_lossy(&data);
    assert!(text.starts_with("Received: (qmail "), "{text}");
    assert!(text.contains(" invoked by uid "));
    assert!(text
        .split_once('\n')
        .unwrap()
        .1
        .starts_with("Subject: bin\nDate: "));
    assert!(data.ends_with(b"\n\n\0\x01\xff\xfe 8bit\r\nlast line without newline"));

    let o = mta(root, &["queue", "list"], b"");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("<joe@heaven.af.mil>"), "{out}");
    assert!(out.contains("bill@irs.gov"), "{out}");
    let o = mta(root, &["queue", "stat"], b"");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("messages in queue: 1\n"), "{out}");
    assert!(out.contains("not yet preprocessed: 1\n"), "{out}");
}

#[test]
fn inject_t_takes_recipients_from_headers() {
    let d = tempfile::tempdir().unwrap();
    init(d.path());
    let msg = b"To: fred\nCc: Bill <bill@irs.gov>\nBcc: secret@x.org\nSubject: s\n\nhi\n";
    let o = mta(d.path(), &["inject", "-t"], msg);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = view(d.path());
    assert_eq!(
        v.todo[0].0.recipients,
        vec!["fred@heaven.af.mil", "bill@irs.gov", "secret@x.org"]
    );
    assert_eq!(v.todo[0].0.sender, "joe@heaven.af.mil");
}

#[test]
fn inject_refusals_exit_100_with_a_message() {
    let d = tempfile::tempdir().unwrap();
    init(d.path());
    let o = mta(d.path(), &["inject"], b"Subject: x\n\n");
    assert_eq!(o.status.code(), Some(100));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no recipients"));
    let long = format!("{}@x.org", "a".repeat(1001));
    let o = mta(d.path(), &["inject", &long], b"x\n");
    assert_eq!(o.status.code(), Some(100));
    assert!(String::from_utf8_lossy(&o.stderr).contains("address too long"));
    assert!(view(d.path()).todo.is_empty());
}

#[test]
fn inject_without_an_installation_exits_111() {
    let d = tempfile::tempdir().unwrap();
    let o = mta(&d.path().join("none"), &["inject", "fred"], b"x\n");
    assert_eq!(o.status.code(), Some(111));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unable to read controls"));
}

#[test]
fn missing_root_is_a_clear_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_mta"))
        .args(["queue", "stat"])
        .env_remove("MTA_ROOT")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(100));
    assert!(String::from_utf8_lossy(&o.stderr).contains("MTA_ROOT"));
}
