//! Issue 10 with Postfix as the peer, both ways over STARTTLS: Postfix relaying into
//! `mta run` with `smtp_tls_security_level = encrypt` and SMTP AUTH (Cyrus SASL's PLAIN), and
//! `mta run` delivering to Postfix with TLS required by `control/tlsdestinations`. Postfix runs as a private instance (its
//! own configuration, queue and log under /var/tmp), installed from the distribution's
//! packages when missing; skipped when not root.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn mta() -> &'static str {
    env!("CARGO_BIN_EXE_mta")
}

/// Where the instance lives: a fixed name, since Postfix only accepts configuration
/// directories listed in its default main.cf; under /var, where Postfix may write its log.
const DIR: &str = "/var/tmp/mta-tls-postfix";

/// A private Postfix instance; stopped (and the default main.cf it had to create, removed)
/// when dropped.
struct Postfix {
    dir: PathBuf,
    created_default: bool,
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(self.dir.join("etc"))
            .arg("stop")
            .output();
        if self.created_default {
            let _ = std::fs::remove_file("/etc/postfix/main.cf");
        }
    }
}

impl Postfix {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }
}

fn install_postfix() -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIP: Postfix needs root");
        return false;
    }
    // Keep the package from asking how to configure the system's own instance.
    let mut sel = Command::new("debconf-set-selections")
        .stdin(Stdio::piped())
        .spawn();
    if let Ok(c) = sel.as_mut() {
        let _ = c
            .stdin
            .take()
            .unwrap()
            .write_all(b"postfix postfix/main_mailer_type select No configuration\n");
        let _ = c.wait();
    }
    if !common::have("postfix", "postfix") {
        return false;
    }
    // Postfix's SMTP client takes its SASL mechanisms (PLAIN) from Cyrus SASL's modules.
    let sasl = Command::new("dpkg")
        .args(["-s", "libsasl2-modules"])
        .output();
    if !sasl.is_ok_and(|o| o.status.success()) {
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-q", "libsasl2-modules"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIP: could not install libsasl2-modules");
            return false;
        }
    }
    true
}

/// Allow our configuration directory in the default main.cf (creating it if the package
/// left none); returns whether it was created.
fn allow_config_dir(etc: &Path) -> bool {
    let default = Path::new("/etc/postfix/main.cf");
    let line = format!("alternate_config_directories = {}", etc.display());
    if !default.exists() {
        std::fs::write(default, format!("{line}\n")).unwrap();
        return true;
    }
    let old = Command::new("postconf")
        .args(["-h", "alternate_config_directories"])
        .output()
        .unwrap();
    let old = String::from_utf8_lossy(&old.stdout).trim().to_string();
    if !old.split([' ', ',']).any(|d| Path::new(d) == etc) {
        let val = format!("alternate_config_directories = {old} {}", etc.display());
        assert!(Command::new("postconf")
            .args(["-e", &val])
            .status()
            .unwrap()
            .success());
    }
    false
}

const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// Start Postfix for pf.example on `port`: it relays everything else to `relay` only over
/// TLS, authenticating as fred (password `secret`), offers STARTTLS itself, and discards
/// mail for pf.example once accepted.
fn start_postfix(port: u16, relay: SocketAddr) -> Postfix {
    let dir = PathBuf::from(DIR);
    let etc = dir.join("etc");
    let _ = Command::new("postfix")
        .arg("-c")
        .arg(&etc)
        .arg("stop")
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["etc", "queue", "data"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let chown = Command::new("chown")
        .arg("postfix")
        .arg(dir.join("data"))
        .status();
    assert!(chown.unwrap().success());
    std::fs::write(
        etc.join("cert.pem"),
        mta::tls::self_signed("pf.example").unwrap(),
    )
    .unwrap();
    let d = dir.display();
    let main = format!(
        "compatibility_level = 3.6\nqueue_directory = {d}/queue\ndata_directory = {d}/data\n\
         maillog_file = {d}/maillog\nmyhostname = pf.example\nmydestination = pf.example\n\
         inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nlocal_recipient_maps =\n\
         local_transport = discard\nalias_maps =\nalias_database =\nmynetworks = 127.0.0.0/8\n\
         relayhost = [{ip}]:{rport}\nsmtp_tls_security_level = encrypt\nsmtp_tls_loglevel = 1\n\
         smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {d}/etc/cert.pem\n\
         smtpd_tls_loglevel = 1\nsmtp_sasl_auth_enable = yes\n\
         smtp_sasl_password_maps = static:fred:secret\nsmtp_sasl_tls_security_options = noanonymous\n",
        ip = relay.ip(),
        rport = relay.port()
    );
    std::fs::write(etc.join("main.cf"), main).unwrap();
    let master = format!("127.0.0.1:{port} inet n - n - - smtpd\n{MASTER_CF}");
    std::fs::write(etc.join("master.cf"), master).unwrap();
    let created_default = allow_config_dir(&etc);
    let pf = Postfix {
        dir,
        created_default,
    };
    let st = Command::new("postfix")
        .arg("-c")
        .arg(&etc)
        .arg("start")
        .output()
        .unwrap();
    assert!(st.status.success(), "postfix start: {st:?}\n{}", pf.log());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    common::eventually("Postfix listening", 30, || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    pf
}

/// A port nobody listens on now, for Postfix's listener.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Send one message over plain SMTP.
fn send(addr: SocketAddr, from: &str, to: &str, text: &str) {
    let (mut s, mut r) = common::connect(addr);
    let mut expect = |s: &mut std::net::TcpStream, line: Option<&str>, code: &str| {
        if let Some(l) = line {
            s.write_all(format!("{l}\r\n").as_bytes()).unwrap();
        }
        let rep = common::reply(&mut r);
        assert!(rep.starts_with(code), "{line:?}: {rep}");
    };
    expect(&mut s, None, "220");
    expect(&mut s, Some("EHLO client.example"), "250");
    expect(&mut s, Some(&format!("MAIL FROM:<{from}>")), "250");
    expect(&mut s, Some(&format!("RCPT TO:<{to}>")), "250");
    expect(&mut s, Some("DATA"), "354");
    expect(&mut s, Some(&format!("{text}\r\n.")), "250");
    expect(&mut s, Some("QUIT"), "221");
}

#[test]
fn postfix_both_ways_over_starttls() {
    if !install_postfix() {
        return;
    }
    let pf_port = free_port();
    // mta: far.example for bill, with pf.example reachable only over TLS.
    let root = tempfile::tempdir().unwrap();
    common::init(mta(), root.path(), "far.example", "bill");
    let mut pw = Command::new(mta())
        .args(["passwd", "--root"])
        .arg(root.path())
        .arg("fred")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    pw.stdin.take().unwrap().write_all(b"secret\n").unwrap();
    assert!(pw.wait().unwrap().success());
    let ctl = root.path().join("control");
    std::fs::write(
        ctl.join("smtproutes"),
        format!("pf.example:[127.0.0.1]:{pf_port}\n"),
    )
    .unwrap();
    std::fs::write(ctl.join("tlsdestinations"), "pf.example\n").unwrap();
    let log = root.path().join("stderr");
    let mut cmd = Command::new(mta());
    cmd.args(["run", "--listen", "127.0.0.1:0", "--root"])
        .arg(root.path())
        .env("MTA_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap());
    let (child, addr) = common::spawn_listening(cmd);
    let srv = common::Server { child, addr, root };
    let pf = start_postfix(pf_port, srv.addr);
    postfix_to_mta(&pf, pf_port, &srv);
    mta_to_postfix(&pf, &srv, &log);
}

/// Postfix relays a message to bill@far.example through mta, TLS required on its side.
fn postfix_to_mta(pf: &Postfix, pf_port: u16, srv: &common::Server) {
    // Postfix as the client: it must use TLS (encrypt) to hand over to mta.
    let pf_addr = SocketAddr::from(([127, 0, 0, 1], pf_port));
    send(
        pf_addr,
        "someone@pf.example",
        "bill@far.example",
        "Subject: from postfix\r\n\r\nhello",
    );
    let new = srv.root.path().join("home/bill/Maildir/new");
    common::eventually("Postfix's message in bill's Maildir", 60, || {
        std::fs::read_dir(&new).is_ok_and(|d| d.count() == 1)
    });
    let f = std::fs::read_dir(&new).unwrap().next().unwrap().unwrap();
    let m = std::fs::read_to_string(f.path()).unwrap();
    assert!(m.contains("(Postfix)"), "{m}");
    assert!(
        m.contains("(fred@127.0.0.1)\n  by far.example with ESMTPSA;"),
        "{m}"
    );
    assert!(
        pf.log().contains("TLS connection established to 127.0.0.1"),
        "{}",
        pf.log()
    );
    // Relaying elsewhere is allowed because Postfix authenticated.
    send(
        pf_addr,
        "someone@pf.example",
        "x@elsewhere.example",
        "Subject: relay\r\n\r\nhi",
    );
    common::eventually("relayed through mta", 60, || {
        let l = pf.log();
        l.contains("to=<x@elsewhere.example>, relay=127.0.0.1") && l.contains("status=sent (250 ok")
    });
}

/// mta delivers to someone@pf.example at Postfix, TLS required by tlsdestinations.
fn mta_to_postfix(pf: &Postfix, srv: &common::Server, log: &Path) {
    // mta as the client: TLS required for pf.example.
    let mut inj = Command::new(mta())
        .args([
            "inject",
            "-f",
            "bill@far.example",
            "someone@pf.example",
            "--root",
        ])
        .arg(srv.root.path())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    inj.stdin
        .take()
        .unwrap()
        .write_all(b"Subject: to postfix\n\nhi\n")
        .unwrap();
    assert!(inj.wait().unwrap().success());
    let took = || {
        let l = pf.log();
        l.contains("to=<someone@pf.example>, relay=none") && l.contains("status=sent")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !took() {
        let mine = std::fs::read_to_string(log).unwrap_or_default();
        let why = format!("mta:\n{mine}\npostfix:\n{}", pf.log());
        assert!(
            std::time::Instant::now() < deadline,
            "Postfix did not take the message\n{why}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let l = pf.log();
    assert!(
        l.contains("Anonymous TLS connection established from localhost[127.0.0.1]"),
        "{l}"
    );
    let mine = std::fs::read_to_string(log).unwrap();
    assert!(
        mine.contains("success: 127.0.0.1_accepted_message."),
        "{mine}"
    );
}
