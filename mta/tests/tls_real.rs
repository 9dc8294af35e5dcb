//! Issue 10: STARTTLS, implicit TLS and SMTP AUTH against the real `mta` binary, with real
//! clients (swaks, openssl s_client, Python's smtplib, and rustls for the raw cases).
//! Tools missing from the host are installed from the distribution's packages when the test
//! runs as root; otherwise the test says so and skips.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

fn mta() -> &'static str {
    env!("CARGO_BIN_EXE_mta")
}

/// `mta run` with both listeners; killed when dropped.
struct Tls {
    child: Child,
    addr: SocketAddr,
    tls_addr: SocketAddr,
    root: tempfile::TempDir,
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tls {
    fn log(&self) -> PathBuf {
        self.root.path().join("stderr")
    }
    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

/// `mta passwd --root ROOT USER` with `password` on stdin; its exit code.
fn passwd(root: &Path, user: &str, password: &str) -> i32 {
    let mut c = Command::new(mta())
        .args(["passwd", "--root"])
        .arg(root)
        .arg(user)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    // A refusal (a bad user name) may come before the password is read: the pipe is then
    // closed, and only the exit status matters.
    let _ = c.stdin.take().unwrap().write_all(password.as_bytes());
    c.wait().unwrap().code().unwrap_or(-1)
}

/// A fresh installation (with its self-signed certificate) where fred's AUTH password is
/// `secret`, running with `--listen-tls`.
fn start(controls: &[(&str, &str)]) -> Tls {
    let root = tempfile::tempdir().unwrap();
    common::init(mta(), root.path(), "heaven.af.mil", "fred");
    assert_eq!(passwd(root.path(), "fred", "secret\n"), 0);
    for (f, text) in controls {
        std::fs::write(root.path().join("control").join(f), text).unwrap();
    }
    let mut child = Command::new(mta())
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--listen-tls",
            "127.0.0.1:0",
        ])
        .arg("--root")
        .arg(root.path())
        .env("MTA_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(root.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = |prefix: &str| {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        let a = l.trim().strip_prefix(prefix);
        a.unwrap_or_else(|| panic!("unexpected output {l:?}"))
            .parse()
            .unwrap()
    };
    let addr = line("mta: listening on ");
    let tls_addr = line("mta: listening for TLS on ");
    Tls {
        child,
        addr,
        tls_addr,
        root,
    }
}

/// One full reply from any reader.
fn reply(r: &mut impl BufRead) -> String {
    let mut all = String::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 {
            return all;
        }
        all.push_str(&l);
        if l.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS client on `tcp` that accepts any certificate (the installation's is self-signed).
fn tls_client(tcp: TcpStream) -> BufReader<TlsStream> {
    let cfg: Arc<rustls::ClientConfig> = mta::tls::client_config(None);
    let name = "heaven.af.mil".try_into().unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    BufReader::new(rustls::StreamOwned::new(conn, tcp))
}

fn say(s: &mut BufReader<TlsStream>, line: &str) -> String {
    s.get_mut().write_all(line.as_bytes()).unwrap();
    s.get_mut().flush().unwrap();
    reply(s)
}

/// Connect, EHLO, STARTTLS; the session inside TLS (greeting and EHLO not yet sent there).
fn starttls(addr: SocketAddr) -> BufReader<TlsStream> {
    let (mut s, mut r) = common::connect(addr);
    assert!(reply(&mut r).starts_with("220 "));
    s.write_all(b"EHLO c.example\r\n").unwrap();
    assert!(reply(&mut r).contains("250-STARTTLS\r\n"));
    s.write_all(b"STARTTLS\r\n").unwrap();
    assert_eq!(reply(&mut r), "220 ready to start TLS\r\n");
    tls_client(s)
}

fn swaks(args: &[&str]) -> (bool, String) {
    let o = Command::new("swaks")
        .args(args)
        .args(["--from", "fred@heaven.af.mil", "--helo", "c.example"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

#[test]
fn init_makes_a_private_certificate_and_passwd_a_private_hash() {
    let root = tempfile::tempdir().unwrap();
    common::init(mta(), root.path(), "heaven.af.mil", "fred");
    let cert = root.path().join("control/servercert.pem");
    let pem = std::fs::read_to_string(&cert).unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE") && pem.contains("BEGIN PRIVATE KEY"));
    assert_eq!(
        std::fs::metadata(&cert).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(passwd(root.path(), "fred", "secret\n"), 0);
    assert_eq!(passwd(root.path(), "joe", "other"), 0);
    assert_eq!(passwd(root.path(), "fred", "changed\n"), 0);
    let pw = root.path().join("control/passwd");
    let text = std::fs::read_to_string(&pw).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.starts_with("fred:$argon2id$") && !text.contains("changed"),
        "{text}"
    );
    assert_eq!(
        std::fs::metadata(&pw).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(passwd(root.path(), "fred", ""), 100, "empty password");
    assert_eq!(passwd(root.path(), "a:b", "x"), 100, "bad user name");
    // --force keeps the certificate.
    let again = Command::new(mta())
        .args(["init", "--force", "--me", "heaven.af.mil", "--root"])
        .arg(root.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(again.success());
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), pem);
}

#[test]
fn listen_tls_without_a_certificate_exits_111() {
    let root = tempfile::tempdir().unwrap();
    common::init(mta(), root.path(), "heaven.af.mil", "fred");
    std::fs::remove_file(root.path().join("control/servercert.pem")).unwrap();
    let o = Command::new(mta())
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--listen-tls",
            "127.0.0.1:0",
        ])
        .arg("--root")
        .arg(root.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(111));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--listen-tls needs a certificate"), "{err}");
}

#[test]
fn commands_injected_before_the_handshake_are_discarded() {
    // CVE-2011-0411: STARTTLS and RSET in one write; the RSET was sent in the clear and
    // must not be answered inside TLS.
    let srv = start(&[]);
    let (mut s, mut r) = common::connect(srv.addr);
    reply(&mut r);
    s.write_all(b"EHLO c.example\r\n").unwrap();
    reply(&mut r);
    s.write_all(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@x.example>\r\n")
        .unwrap();
    assert_eq!(reply(&mut r), "220 ready to start TLS\r\n");
    let mut t = tls_client(s);
    let first = say(&mut t, "RCPT TO:<fred@heaven.af.mil>\r\n");
    assert_eq!(
        first, "503 MAIL first (#5.5.1)\r\n",
        "injected commands ran"
    );
    let ehlo = say(&mut t, "EHLO c.example\r\n");
    assert!(ehlo.starts_with("250-heaven.af.mil\r\n"), "{ehlo}");
    assert!(ehlo.contains("250-AUTH LOGIN PLAIN") && !ehlo.contains("STARTTLS"));
    assert_eq!(say(&mut t, "QUIT\r\n"), "221 heaven.af.mil\r\n");
}

#[test]
fn failed_handshakes_close_only_their_session() {
    let srv = start(&[]);
    let (mut s, mut r) = common::connect(srv.addr);
    reply(&mut r);
    s.write_all(b"STARTTLS\r\n").unwrap();
    assert_eq!(reply(&mut r), "220 ready to start TLS\r\n");
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(!String::from_utf8_lossy(&rest).contains("250"), "{rest:?}");
    // Plain text on the implicit-TLS port gets no greeting.
    let (mut s, mut r) = common::connect(srv.tls_addr);
    s.write_all(b"EHLO c.example\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(!String::from_utf8_lossy(&rest).contains("220"), "{rest:?}");
    common::eventually("handshake failures logged", 10, || {
        srv.log_text().matches("TLS handshake failed").count() == 2
    });
    // The server goes on.
    let mut t = starttls(srv.addr);
    assert!(say(&mut t, "EHLO c.example\r\n").contains("250-AUTH"));
}

#[test]
fn auth_is_refused_in_the_clear_and_relaying_needs_it() {
    let srv = start(&[]);
    let (mut s, mut r) = common::connect(srv.addr);
    reply(&mut r);
    s.write_all(b"EHLO c.example\r\n").unwrap();
    let ehlo = reply(&mut r);
    assert!(!ehlo.contains("AUTH"), "AUTH offered in the clear: {ehlo}");
    s.write_all(b"AUTH PLAIN AGZyZWQAc2VjcmV0\r\n").unwrap();
    assert!(reply(&mut r).starts_with("538 "));
    let mut t = starttls(srv.addr);
    say(&mut t, "EHLO c.example\r\n");
    say(&mut t, "MAIL FROM:<fred@heaven.af.mil>\r\n");
    let r = say(&mut t, "RCPT TO:<bill@far.example>\r\n");
    assert!(r.starts_with("553 "), "relayed without AUTH: {r}");
    say(&mut t, "RSET\r\n");
    // "\0fred\0secret"
    assert_eq!(
        say(&mut t, "AUTH PLAIN AGZyZWQAc2VjcmV0\r\n"),
        "235 ok, go ahead (#2.0.0)\r\n"
    );
    say(&mut t, "MAIL FROM:<fred@heaven.af.mil>\r\n");
    assert_eq!(say(&mut t, "RCPT TO:<bill@far.example>\r\n"), "250 ok\r\n");
}

#[test]
fn failures_are_limited_and_no_password_reaches_the_log() {
    let srv = start(&[]);
    let mut t = starttls(srv.addr);
    say(&mut t, "EHLO c.example\r\n");
    // LOGIN fred / hunter2, then PLAIN with the same wrong password, then the right one.
    say(&mut t, "AUTH LOGIN\r\n");
    say(&mut t, "ZnJlZA==\r\n");
    assert!(say(&mut t, "aHVudGVyMg==\r\n").starts_with("535 "));
    assert!(say(&mut t, "AUTH PLAIN AGZyZWQAaHVudGVyMg==\r\n").starts_with("535 "));
    assert!(say(&mut t, "AUTH PLAIN AGZyZWQAc2VjcmV0\r\n").starts_with("235 "));
    // Another connection: three failures close it.
    let mut t = starttls(srv.addr);
    say(&mut t, "EHLO c.example\r\n");
    for _ in 0..2 {
        assert!(say(&mut t, "AUTH PLAIN AGZyZWQAaHVudGVyMg==\r\n").starts_with("535 "));
    }
    let last = say(&mut t, "AUTH PLAIN AGZyZWQAaHVudGVyMg==\r\n");
    assert!(
        last.starts_with("421 too many failed authentications"),
        "{last}"
    );
    common::eventually("AUTH logged", 10, || {
        let l = srv.log_text();
        l.contains("AUTH ok, user \"fred\"") && l.matches("AUTH failed").count() == 5
    });
    let log = srv.log_text();
    for secret in ["hunter2", "aHVudGVyMg", "secret", "c2VjcmV0"] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
}

#[test]
fn swaks_starttls_and_implicit_tls_with_auth() {
    if !common::have("swaks", "swaks") {
        return;
    }
    let srv = start(&[]);
    let port = srv.addr.to_string();
    let (ok, out) = swaks(&[
        "--server",
        &port,
        "--to",
        "bill@far.example",
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "fred",
        "--auth-password",
        "secret",
    ]);
    assert!(
        ok && out.contains("235 ok") && out.contains("250 ok"),
        "{out}"
    );
    let tls_port = srv.tls_addr.to_string();
    let (ok, out) = swaks(&[
        "--server",
        &tls_port,
        "--to",
        "bill@far.example",
        "--tlsc",
        "--auth",
        "LOGIN",
        "--auth-user",
        "fred",
        "--auth-password",
        "secret",
    ]);
    assert!(
        ok && out.contains("235 ok") && out.contains("250 ok"),
        "{out}"
    );
    let (ok, out) = swaks(&["--server", &port, "--to", "bill@far.example", "--tls"]);
    assert!(
        !ok && out.contains("553 sorry"),
        "relayed without AUTH: {out}"
    );
    let (ok, out) = swaks(&[
        "--server",
        &port,
        "--to",
        "bill@far.example",
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "fred",
        "--auth-password",
        "wrong",
    ]);
    assert!(!ok && out.contains("535 authentication failed"), "{out}");
    let (ok, out) = swaks(&[
        "--server",
        &port,
        "--to",
        "bill@far.example",
        "--auth",
        "PLAIN",
        "--auth-user",
        "fred",
        "--auth-password",
        "secret",
    ]);
    assert!(!ok && !out.contains("235"), "AUTH in the clear: {out}");
}

#[test]
fn openssl_s_client_starttls() {
    if !common::have("openssl", "openssl") {
        return;
    }
    let srv = start(&[]);
    let mut c = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-crlf",
            "-quiet",
            "-connect",
        ])
        .arg(srv.addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut input = c.stdin.take().unwrap();
    input.write_all(b"EHLO c.example\n").unwrap();
    let ehlo = reply(&mut out);
    assert!(ehlo.contains("250-AUTH LOGIN PLAIN"), "{ehlo}");
    input.write_all(b"QUIT\n").unwrap();
    assert_eq!(reply(&mut out), "221 heaven.af.mil\r\n");
    let _ = c.wait();
}

#[test]
fn python_smtplib_starttls_login_and_send() {
    if !common::have("python3", "python3") {
        return;
    }
    let srv = start(&[]);
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {port})
s.ehlo("c.example")
s.starttls(context=ctx)
s.ehlo("c.example")
assert "auth" in s.esmtp_features, s.esmtp_features
try:
    s.login("fred", "wrong")
    raise SystemExit("wrong password accepted")
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535
s.login("fred", "secret")
s.sendmail("fred@heaven.af.mil", ["fred@heaven.af.mil"], "Subject: via smtplib\r\n\r\nhello\r\n")
s.quit()
print("sent")
"#,
        port = srv.addr.port()
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && out.contains("sent"), "{out}");
    let new = srv.root.path().join("home/fred/Maildir/new");
    common::eventually("delivery", 20, || {
        std::fs::read_dir(&new).is_ok_and(|d| d.count() == 1)
    });
    let f = std::fs::read_dir(&new).unwrap().next().unwrap().unwrap();
    let msg = std::fs::read_to_string(f.path()).unwrap();
    assert!(
        msg.contains("(fred@127.0.0.1)\n  by heaven.af.mil with ESMTPSA;"),
        "{msg}"
    );
}

/// The certificate a STARTTLS session is shown.
fn presented_cert(addr: SocketAddr) -> Vec<u8> {
    let mut t = starttls(addr);
    say(&mut t, "NOOP\r\n");
    let certs = t.get_ref().conn.peer_certificates().unwrap();
    certs[0].as_ref().to_vec()
}

#[test]
fn checkpassword_program_and_reload_on_sighup() {
    let srv = start(&[]);
    let before = presented_cert(srv.addr);
    // A checkpassword that knows joe/pw: it reads user, password and timestamp from fd 3.
    let script = srv.root.path().join("checkpw");
    std::fs::write(
        &script,
        "#!/bin/sh\ntr '\\0' '\\n' <&3 | { read u; read p; read t; [ \"$u\" = joe ] && [ \"$p\" = pw ] && [ -n \"$t\" ]; }\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        srv.root.path().join("control/checkpassword"),
        format!("{}\n", script.display()),
    )
    .unwrap();
    let pem = mta::tls::self_signed("other.example").unwrap();
    std::fs::write(srv.root.path().join("control/servercert.pem"), pem).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &srv.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    common::eventually("reread", 10, || {
        srv.log_text().contains("control files reread")
    });
    assert_ne!(presented_cert(srv.addr), before, "certificate not reloaded");
    let mut t = starttls(srv.addr);
    say(&mut t, "EHLO c.example\r\n");
    // "\0joe\0pw", then fred, whom only the password file knew.
    assert!(say(&mut t, "AUTH PLAIN AGpvZQBwdw==\r\n").starts_with("235 "));
    let mut t = starttls(srv.addr);
    say(&mut t, "EHLO c.example\r\n");
    assert!(say(&mut t, "AUTH PLAIN AGZyZWQAc2VjcmV0\r\n").starts_with("535 "));
}

#[test]
fn concurrencyperip_counts_both_listeners() {
    let srv = start(&[("concurrencyperip", "1\n")]);
    let (_s, mut r) = common::connect(srv.addr);
    assert!(reply(&mut r).starts_with("220 "));
    // The implicit-TLS listener refuses the second session, inside TLS.
    let tcp = TcpStream::connect(srv.tls_addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut t = tls_client(tcp);
    let r = reply(&mut t);
    assert!(
        r.starts_with("421 too many connections from your address"),
        "{r}"
    );
}

#[test]
fn a_bad_certificate_on_sighup_keeps_the_old_one() {
    let srv = start(&[]);
    let before = presented_cert(srv.addr);
    let cert = srv.root.path().join("control/servercert.pem");
    let pem = std::fs::read_to_string(&cert).unwrap();
    let key_only = &pem[..pem.find("-----BEGIN CERTIFICATE").unwrap()];
    std::fs::write(&cert, key_only).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &srv.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    common::eventually("the complaint", 10, || {
        srv.log_text()
            .contains("control/servercert.pem: no CERTIFICATE block; keeping the old settings")
    });
    assert_eq!(presented_cert(srv.addr), before);
}
