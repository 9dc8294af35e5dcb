//! The catalogue and profiles as data, and the runner's verdicts against scripted servers.

use std::collections::BTreeSet;
use std::time::Duration;

use conformance::catalogue::{self, Entry, Level};
use conformance::fixtures;
use conformance::play::Vars;
use conformance::profile::Profile;
use conformance::runner::{self, Options, Outcome};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn entries() -> Vec<Entry> {
    catalogue::load(&fixtures().join("rfc5321/catalogue")).unwrap()
}

#[test]
fn catalogue_covers_the_issue() {
    let e = entries();
    assert!(e.len() >= 150, "{} entries", e.len());
    let areas: BTreeSet<&str> = e.iter().map(|e| e.area.as_str()).collect();
    for a in [
        "syntax",
        "replies",
        "ehlo",
        "mail",
        "rcpt",
        "data",
        "verbs",
        "sequence",
        "postmaster",
        "nullsender",
        "address",
        "limits",
        "size",
        "pipelining",
        "8bitmime",
        "transparency",
        "lineend",
        "hops",
        "trace",
        "timeouts",
        "greeting",
        "starttls",
        "auth",
    ] {
        assert!(areas.contains(a), "no area {a}");
    }
    for x in &e {
        let sec = x.section.rsplit('/').next().unwrap();
        assert!(
            sec.split('.').all(|n| n.parse::<u32>().is_ok()),
            "{}: section {}",
            x.id,
            x.section
        );
        assert!(x.says.len() > 10, "{}: no statement", x.id);
    }
    for l in Level::ALL {
        assert!(e.iter().any(|x| x.level == l), "no {l} entry");
    }
}

#[test]
fn profiles_name_real_entries_with_reasons() {
    let ids: BTreeSet<String> = entries().into_iter().map(|e| e.id).collect();
    for name in ["generic", "mta", "qmail"] {
        let p = Profile::load(&fixtures().join("rfc5321/profiles"), name).unwrap();
        for (id, why) in &p.deviations {
            assert!(ids.contains(id), "{name}: unknown entry {id}");
            assert!(why.len() > 20, "{name}: {id}: no real reason");
        }
    }
    let generic = Profile::load(&fixtures().join("rfc5321/profiles"), "generic").unwrap();
    assert!(generic.deviations.is_empty());
}

#[test]
fn parse_errors_name_the_line() {
    let bad = "[a.b] 4.1 MUST\nstatement\nQ: nope\n";
    let e = catalogue::parse("x", "x.txt", bad).unwrap_err().to_string();
    assert!(e.contains("x.txt:3"), "{e}");
    assert!(catalogue::parse("x", "x.txt", "[a] 4.1 OFTEN\ns\nS: 220\n").is_err());
    assert!(catalogue::parse("x", "x.txt", "[a] 4.1 MUST\ns\nS: 220 | t\nLOOP 2\n").is_err());
    let ok = catalogue::parse(
        "x",
        "x.txt",
        "[a] 4.1 MAY ext:size\ns\nLOOP 3\nC: x\nEND\n---\nS: 2xx\n",
    )
    .unwrap();
    assert_eq!(ok[0].dialogues.len(), 2);
    assert_eq!(ok[0].dialogues[0].len(), 3);
    assert_eq!(ok[0].ext, ["SIZE"]);
}

/// A server that greets, then answers every line with the next of `replies`, then is silent.
async fn scripted(
    replies: &'static [&'static str],
) -> std::io::Result<(tokio::io::DuplexStream, String)> {
    let (client, server) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let (r, mut w) = tokio::io::split(server);
        let mut r = BufReader::new(r);
        let _ = w.write_all(b"220 test ESMTP\r\n").await;
        for reply in replies {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let _ = w.write_all(reply.as_bytes()).await;
        }
        // Out of replies: stay connected and silent until the client goes.
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut r, &mut sink).await;
        drop(w);
    });
    Ok((client, "127.0.0.1".to_string()))
}

fn verdict(entry: &str, profile: &str, replies: &'static [&'static str]) -> Outcome {
    let e = catalogue::parse("t", "t.txt", entry).unwrap();
    let p = Profile::parse("p", profile).unwrap();
    let vars = Vars {
        domain: "test".into(),
        rcpt: "a@test".into(),
        sender: "b@example.net".into(),
        client: "c.example".into(),
        ip: String::new(),
        token: "tok".into(),
        sizemax: 0,
        user: String::new(),
        pass: String::new(),
    };
    let o = Options {
        timeout: Duration::from_secs(2),
        ..Options::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut connect = || scripted(replies);
    let server = runner::Server::default();
    rt.block_on(runner::run_entry(
        &e[0],
        &mut connect,
        &vars,
        &server,
        &p,
        &o,
    ))
}

const UNKNOWN: &str =
    "[u.500] 4.2.4 SHOULD\nUnknown verbs get 500.\nS: 220\nC: XYZ\nS: 500 | 500 what\n";

#[test]
fn runner_tells_pass_fail_and_deviation_apart() {
    assert_eq!(
        verdict(UNKNOWN, "match codes", &["500 eh\r\n"]),
        Outcome::Pass
    );
    assert!(matches!(
        verdict(UNKNOWN, "match codes", &["502 no\r\n"]),
        Outcome::Fail(_)
    ));
    // Text profiles also compare the text.
    assert!(matches!(
        verdict(UNKNOWN, "match text", &["500 eh\r\n"]),
        Outcome::Fail(_)
    ));
    assert_eq!(
        verdict(UNKNOWN, "match text", &["500 what?\r\n"]),
        Outcome::Pass
    );
    let listed = "match codes\ndeviate u.500 this server says 502, and here is why";
    assert_eq!(
        verdict(UNKNOWN, listed, &["502 no\r\n"]),
        Outcome::Deviation("this server says 502, and here is why".into())
    );
    assert_eq!(
        verdict(UNKNOWN, listed, &["500 eh\r\n"]),
        Outcome::PassListed
    );
}

#[test]
fn malformed_replies_fail() {
    for bad in ["500 no\n", "50 no\r\n", "500-a\r\n501 b\r\n", "500x\r\n"] {
        let leaked: &'static str = Box::leak(bad.to_string().into_boxed_str());
        let v = verdict(UNKNOWN, "match codes", Box::leak(Box::new([leaked])));
        assert!(matches!(v, Outcome::Fail(_)), "{bad:?}: {v:?}");
    }
    let multi = &["500-first\r\n500 last\r\n"];
    assert_eq!(verdict(UNKNOWN, "match codes", multi), Outcome::Pass);
}

#[test]
fn a_silent_server_fails_within_the_entry_time() {
    let start = std::time::Instant::now();
    let v = verdict(UNKNOWN, "match codes", &[]);
    assert!(
        matches!(v, Outcome::Fail(ref w) if w.contains("timed out") || w.contains("closed")),
        "{v:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn entries_needing_what_the_runner_lacks_are_not_run() {
    let e = "[d.x] 4.4 MUST needs:delivery\nDelivered.\nS: 220\nM: has x\n";
    assert!(matches!(
        verdict(e, "match codes", &[]),
        Outcome::NotApplicable(_)
    ));
    let e = "[s.x] 4.4 MUST ext:SIZE\nSized.\nS: 220\n";
    assert!(matches!(
        verdict(e, "match codes", &[]),
        Outcome::NotApplicable(_)
    ));
}
