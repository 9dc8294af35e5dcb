//! The RFC 5321 catalogue (`fixtures/rfc5321/`) against the real `mta run` on loopback, with
//! the `mta` profile: every MUST passes, every SHOULD not followed is a listed deviation.

mod common;

use std::path::Path;
use std::time::Duration;

use conformance::catalogue::{self, Level};
use conformance::play::{Mailbox, Vars};
use conformance::profile::Profile;
use conformance::runner::{self, Options, Outcome};
use conformance::{fixtures, report};

/// MUSTs mta is known to break, each listed in `profiles/mta.txt` with its reason. Keeping
/// the list here makes a fix (or a new break) fail this test until both places agree.
const KNOWN_MUST_BUGS: &[&str] = &[];

fn install(root: &Path) {
    let mta = env!("CARGO_BIN_EXE_mta");
    common::init(mta, root, "heaven.af.mil", "fred");
    // TLS with the fixture certificate (`mta init`'s own would do as well) and AUTH with
    // fred's password `secret`, for the STARTTLS and AUTH entries.
    let f = fixtures();
    std::fs::copy(
        f.join("tls/servercert.pem"),
        root.join("control/servercert.pem"),
    )
    .unwrap();
    std::fs::copy(f.join("smtp-tls/passwd"), root.join("control/passwd")).unwrap();
    let ctl = fixtures().join("rfc5321/control");
    for e in std::fs::read_dir(ctl).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, root.join("control").join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn catalogue_against_mta_run() {
    let root = tempfile::tempdir().unwrap();
    install(root.path());
    let (child, addr) = common::spawn_run(env!("CARGO_BIN_EXE_mta"), root.path());
    let srv = common::Server { child, addr, root };
    let dir = fixtures().join("rfc5321");
    let entries = catalogue::load(&dir.join("catalogue")).unwrap();
    let profile = Profile::load(&dir.join("profiles"), "mta").unwrap();
    let vars = Vars {
        domain: "heaven.af.mil".into(),
        rcpt: "fred@heaven.af.mil".into(),
        sender: "joe@example.net".into(),
        client: "client.example".into(),
        ip: String::new(),
        token: conformance::run_token(),
        sizemax: 0,
        user: "fred".into(),
        pass: "secret".into(),
    };
    let o = Options {
        mailbox: Some(Mailbox(srv.root.path().join("home/fred/Maildir"))),
        slow: false,
        timeout: Duration::from_secs(30),
        only: None,
    };
    let connect = || async move {
        let s = tokio::net::TcpStream::connect(addr).await?;
        let ip = s.local_addr()?.ip().to_string();
        Ok::<_, std::io::Error>((s, ip))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rs = rt
        .block_on(runner::run_all(&entries, connect, &vars, &profile, &o))
        .unwrap();
    let text = report::text(&rs);
    assert_eq!(rs.len(), entries.len());
    let failed: Vec<&str> = rs
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
        .map(|r| r.id.as_str())
        .collect();
    assert!(failed.is_empty(), "failed: {failed:?}\n{text}");
    let stale: Vec<&str> = rs
        .iter()
        .filter(|r| r.outcome == Outcome::PassListed)
        .map(|r| r.id.as_str())
        .collect();
    assert!(stale.is_empty(), "listed deviations that pass: {stale:?}");
    let must_deviations: Vec<&str> = rs
        .iter()
        .filter(|r| r.level == Level::Must && matches!(r.outcome, Outcome::Deviation(_)))
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(must_deviations, KNOWN_MUST_BUGS, "{text}");
    // Only the minutes-long entries and the shutdown hook are not run here.
    let not_run: Vec<&str> = rs
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::NotApplicable(_)))
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(
        not_run,
        [
            "timeout.idle-5min",
            "timeout.data-idle-3min",
            "timeout.421-on-shutdown"
        ]
    );
}
