//! Conformance dialogues for QMTP and QMQP (`fixtures/qmtp/`, `fixtures/qmqp/`): netstrings
//! written as the protocol documents describe them, played over real TCP against `mta run
//! --listen-qmtp/--listen-qmqp` by the runner `mta-conform netstrings` uses, with the
//! delivered messages checked in fred's Maildir.

mod common;

fn mta() -> &'static str {
    env!("CARGO_BIN_EXE_mta")
}

#[tokio::test(flavor = "multi_thread")]
async fn qmtp_and_qmqp_dialogues_pass_against_mta_run() {
    let root = common::installation(mta(), &["fred", "joe"]);
    std::fs::write(
        root.path().join("control/qmqp.rules"),
        "127.:allow\n:deny\n",
    )
    .unwrap();
    let args = [
        "--listen-qmtp",
        "127.0.0.1:0",
        "--listen-qmqp",
        "127.0.0.1:0",
    ];
    let (mut child, addrs) = common::spawn_with(mta(), root.path(), &args, "mta=info");
    let fred = root.path().join("home/fred/Maildir");
    let mut report = Vec::new();
    for (dir, at, least) in [("qmtp", addrs[1], 5), ("qmqp", addrs[2], 3)] {
        let d = conformance::fixtures().join(dir);
        let verdicts = conformance::netstrings::run_dir(at, &d, "heaven.af.mil", Some(&fred))
            .await
            .unwrap();
        assert!(
            verdicts.len() >= least,
            "{dir}: {} dialogues",
            verdicts.len()
        );
        for (name, r) in verdicts {
            if let Err(why) = r {
                report.push(format!("{dir}/{name}: {why}"));
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(report.is_empty(), "{report:#?}");
}
