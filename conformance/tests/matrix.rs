//! The matrix's pieces that need no servers: what `matrix.sh start` prints, the report, and
//! the delivered-message checks the peers showed to be too strict.

use conformance::catalogue::{Level, MailCheck};
use conformance::matrix::{markdown, parse_started};
use conformance::play::mail_ok;
use conformance::runner::{Outcome, Result1};

#[test]
fn script_lines_become_servers_and_reasons() {
    let out = "noise\nserver mta 127.0.0.1:1 mta /m fred secret\nabout mta mta from this tree\n\
               server exim 127.0.0.1:2 generic /e\nunavailable opensmtpd could not unpack: 404\n";
    let s = parse_started(out);
    assert_eq!(s.peers.len(), 2);
    assert_eq!(s.peers[0].auth, Some(("fred".into(), "secret".into())));
    assert_eq!(s.peers[0].about, "mta from this tree");
    assert_eq!(s.peers[1].auth, None);
    assert_eq!(
        s.unavailable,
        [("opensmtpd".to_string(), "could not unpack: 404".to_string())]
    );
}

#[test]
fn report_has_every_server_per_requirement_and_the_reasons() {
    let r = |id: &str, o: Outcome| Result1 {
        id: id.into(),
        area: "a".into(),
        citation: "RFC 5321 §2.3.8".into(),
        level: Level::Must,
        says: "says".into(),
        outcome: o,
    };
    let s = parse_started("server mta a:1 mta /m\nserver postfix a:2 generic /p\n");
    let runs = vec![
        (
            s.peers[0].clone(),
            vec![r("x.one", Outcome::Deviation("because".into()))],
        ),
        (
            s.peers[1].clone(),
            vec![r("x.one", Outcome::Fail("step 1: no".into()))],
        ),
    ];
    let md = markdown(
        &runs,
        &[("exim".into(), "why".into())],
        &["h".into()],
        "my notes",
    );
    assert!(
        md.contains("| `x.one` | MUST | RFC 5321 §2.3.8 | deviation | **FAIL** |"),
        "{md}"
    );
    assert!(md.contains("| `x.one` | MUST | RFC 5321 §2.3.8 | because |"));
    assert!(md.contains("**not run**: why"));
    assert!(md.ends_with("my notes\n"));
}

#[test]
fn header_checks_take_comments_and_any_case() {
    let m =
        "Return-path: <>\nReceived: from x by y; Mon, 23 Nov 2026 11:17:03 +0000 (UTC)\n\nbody\n";
    assert!(mail_ok(m, &MailCheck::Has("Return-Path: <>".into(), true)));
    assert!(mail_ok(m, &MailCheck::First("Return-Path: <".into())));
    assert!(mail_ok(m, &MailCheck::Zone("Received".into())));
    assert!(!mail_ok(
        m,
        &MailCheck::Has("Return-Path: <a@b>".into(), true)
    ));
}
