//! The client-side judge tells good clients from bad ones: a tiny scripted client (in this
//! test) relays each scenario's message, correctly or with one mistake.

use std::net::SocketAddr;
use std::time::Duration;

use conformance::client::{self, scenario, Injection};
use conformance::fixtures;
use conformance::runner::Outcome;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    NoDotStuffing,
    BareLf,
    NoQuit,
}

async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).await.unwrap_or(0) == 0 || l.as_bytes().get(3) != Some(&b'-') {
            return l;
        }
    }
}

/// Send the message as a client would: EHLO, MAIL, one RCPT per recipient, DATA, QUIT.
async fn relay(addr: SocketAddr, i: Injection, fault: Fault) {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let end = if fault == Fault::BareLf { "\n" } else { "\r\n" };
    reply(&mut r).await;
    let mut cmds = vec![
        "EHLO c.example".to_string(),
        format!("MAIL FROM:<{}>", i.sender),
    ];
    cmds.extend(i.rcpts.iter().map(|x| format!("RCPT TO:<{x}>")));
    cmds.push("DATA".into());
    for c in cmds {
        w.write_all(format!("{c}{end}").as_bytes()).await.unwrap();
        reply(&mut r).await;
    }
    let mut body = String::new();
    for l in i.message.lines() {
        let stuff = l.starts_with('.') && fault != Fault::NoDotStuffing;
        body.push_str(&format!("{}{l}\r\n", if stuff { "." } else { "" }));
    }
    body.push_str(".\r\n");
    w.write_all(body.as_bytes()).await.unwrap();
    reply(&mut r).await;
    if fault != Fault::NoQuit {
        w.write_all(b"QUIT\r\n").await.unwrap();
        reply(&mut r).await;
    }
}

fn verdict(id: &str, fault: Fault) -> Outcome {
    let all = scenario::load(&fixtures().join("rfc5321-client")).unwrap();
    let sc: Vec<_> = all.into_iter().filter(|s| s.id == id).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hooks = client::Hooks {
            inject: move |i: &Injection| {
                tokio::spawn(relay(addr, i.clone(), fault));
                Ok(())
            },
            kick: || {},
        };
        let rs = client::play_all(l, &sc, "conform.test", hooks, Duration::from_secs(5)).await;
        rs[0].outcome.clone()
    })
}

#[test]
fn a_correct_client_passes() {
    assert_eq!(verdict("client.dot-stuffing", Fault::None), Outcome::Pass);
    assert_eq!(verdict("client.quit", Fault::None), Outcome::Pass);
}

#[test]
fn each_mistake_fails_its_scenario() {
    for (id, fault, why) in [
        ("client.dot-stuffing", Fault::NoDotStuffing, "altered"),
        ("client.crlf-only", Fault::BareLf, "CRLF"),
        ("client.quit", Fault::NoQuit, "without QUIT"),
    ] {
        match verdict(id, fault) {
            Outcome::Fail(w) => assert!(w.contains(why), "{id}: {w}"),
            o => panic!("{id}: {o:?}"),
        }
    }
}

#[test]
fn every_scenario_parses_and_cites_a_section() {
    let all = scenario::load(&fixtures().join("rfc5321-client")).unwrap();
    assert!(all.len() >= 20);
    for s in &all {
        assert!(s.id.starts_with("client."), "{}", s.id);
        assert!(s.says.len() > 20, "{}: no statement", s.id);
        assert!(!s.citation().is_empty());
    }
    let bad = scenario::parse(
        "t",
        "[x] 4.1 MUST\nSays something here.\nreply: nowhere 250\n",
    );
    assert!(bad.is_err());
}
