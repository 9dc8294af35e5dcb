//! The client scenarios (`fixtures/rfc5321-client/`) against mta's remote delivery: the
//! conformance runner listens on loopback as `conform.test`, `mta run` routes that domain to
//! it (`control/smtproutes`), each scenario's message goes in with `mta inject`, and retries
//! are driven by `mta queue flush` while the runner waits for them.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use conformance::client::{self, scenario, Injection};
use conformance::fixtures;
use conformance::runner::Outcome;

fn mta() -> &'static str {
    env!("CARGO_BIN_EXE_mta")
}

fn inject(root: &Path, i: &Injection) -> Result<(), String> {
    let mut c = Command::new(mta())
        .args(["inject", "-f", &i.sender, "--root"])
        .arg(root)
        .args(&i.rcpts)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut w = c.stdin.take().ok_or("no stdin")?;
    w.write_all(i.message.as_bytes())
        .map_err(|e| e.to_string())?;
    drop(w);
    match c.wait() {
        Ok(s) if s.success() => Ok(()),
        other => Err(format!("mta inject: {other:?}")),
    }
}

fn flush(root: &Path) {
    let _ = Command::new(mta())
        .args(["queue", "flush", "--root"])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[test]
fn every_client_scenario_against_mta_remote_delivery() {
    let scenarios = scenario::load(&fixtures().join("rfc5321-client")).unwrap();
    assert!(scenarios.len() >= 20, "{} scenarios", scenarios.len());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let root = common::installation(mta(), &["joe"]);
    let ctl = root.path().join("control");
    // No certificate: the scripted server offers no STARTTLS anyway.
    std::fs::write(
        ctl.join("smtproutes"),
        format!("conform.test:[127.0.0.1]:{port}\n"),
    )
    .unwrap();
    let (srv, _log) = common::spawn_logged(mta(), root);
    let root = srv.root.path().to_path_buf();
    let hooks = client::Hooks {
        inject: |i: &Injection| inject(&root, i),
        kick: || flush(&root),
    };
    let rs = rt.block_on(client::play_all(
        listener,
        &scenarios,
        "conform.test",
        hooks,
        Duration::from_secs(60),
    ));
    let text = conformance::report::text(&rs);
    let failed: Vec<&str> = rs
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
        .map(|r| r.id.as_str())
        .collect();
    assert!(failed.is_empty(), "failed: {failed:?}\n{text}");
    assert_eq!(rs.len(), scenarios.len());
}
