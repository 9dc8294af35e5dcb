//! The SMTP server session, sans IO: every reply of qmail-smtpd's dialogue, the policy rules,
//! and RFC 2821's transparency and limits.

use mta::smtp::received::Peer;
use std::sync::Arc;

use mta::smtp::server::{CommitError, Policy, RcptCheck, Session, Step, Transaction};

fn policy() -> Policy {
    Policy {
        greeting: "heaven.af.mil".into(),
        local_host: "heaven.af.mil".into(),
        rcpthosts: Some(vec!["heaven.af.mil".into(), ".sub.af.mil".into()]),
        morercpthosts: vec!["more.org".into()],
        badmailfrom: vec!["spammer@bad.com".into(), "@evil.org".into()],
        relayclient: None,
        databytes: 0,
        localiphost: "heaven.af.mil".into(),
        local_ips: vec!["127.0.0.1".parse().unwrap()],
        envnoathost: "heaven.af.mil".into(),
        null_sender_one_rcpt: true,
        rcpt_check: None,
        secure: Default::default(),
        peer: Peer {
            remote_ip: "10.1.2.3".into(),
            ..Peer::default()
        },
    }
}

/// Run a dialogue; every message is committed with `commit`. Returns the transcript of
/// replies and the committed transactions.
fn run_with(
    p: Policy,
    input: &[u8],
    chunk: usize,
    commit: impl Fn(&Transaction) -> Result<String, CommitError>,
) -> (String, Vec<Transaction>) {
    let mut s = Session::new(p, 1_000_000_000);
    let mut msgs = Vec::new();
    let mut out = s.take_output();
    let mut feed = |s: &mut Session, bytes: &[u8], out: &mut Vec<u8>| match s.input(bytes) {
        Step::Message(t) => {
            let r = commit(&t);
            msgs.push(t);
            s.committed(r);
            out.extend(s.take_output());
            // Resume buffered input.
            feed_rest(s, out, &commit, &mut msgs);
        }
        _ => out.extend(s.take_output()),
    };
    for c in input.chunks(chunk.max(1)) {
        if s.is_closed() {
            break;
        }
        feed(&mut s, c, &mut out);
    }
    (String::from_utf8_lossy(&out).into_owned(), msgs)
}

fn feed_rest(
    s: &mut Session,
    out: &mut Vec<u8>,
    commit: &impl Fn(&Transaction) -> Result<String, CommitError>,
    msgs: &mut Vec<Transaction>,
) {
    loop {
        match s.input(b"") {
            Step::Message(t) => {
                let r = commit(&t);
                msgs.push(t);
                s.committed(r);
                out.extend(s.take_output());
            }
            _ => {
                out.extend(s.take_output());
                return;
            }
        }
    }
}

fn run(p: Policy, input: &str) -> (String, Vec<Transaction>) {
    run_with(p, input.as_bytes(), usize::MAX, |_| Ok("1".into()))
}

fn replies(p: Policy, input: &str) -> Vec<String> {
    run(p, input).0.lines().map(String::from).collect()
}

fn body(t: &Transaction) -> String {
    let s = String::from_utf8_lossy(&t.data).into_owned();
    s.split_once("with SMTP; 9 Sep 2001 01:46:40 -0000\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(s)
}

const SEND: &str = "MAIL FROM:<joe@x.org>\r\nRCPT TO:<fred@heaven.af.mil>\r\nDATA\r\n";

#[test]
fn full_session_transcript() {
    let (t, m) = run(
        policy(),
        "EHLO client.example\r\nMAIL FROM:<joe@x.org>\r\nRCPT TO:<fred@heaven.af.mil>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\nline\r\n.\r\nQUIT\r\n",
    );
    insta::assert_snapshot!(t, @r"
    220 heaven.af.mil ESMTP
    250-heaven.af.mil
    250-PIPELINING
    250 8BITMIME
    250 ok
    250 ok
    354 go ahead
    250 ok 1000000000 qp 1
    221 heaven.af.mil
    ");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].sender, "joe@x.org");
    assert_eq!(m[0].recipients, vec!["fred@heaven.af.mil"]);
    insta::assert_snapshot!(String::from_utf8_lossy(&m[0].data), @r"
    Received: from unknown (HELO client.example) (10.1.2.3)
      by heaven.af.mil with SMTP; 9 Sep 2001 01:46:40 -0000
    Subject: hi

    .dot
    line
    ");
}

#[test]
fn helo_ehlo_size_and_simple_verbs() {
    let mut p = policy();
    p.databytes = 1000;
    let r = replies(
        p,
        "HELO x\r\nehlo y\r\nNOOP\r\nvrfy fred\r\nRSET\r\nHELP\r\nEXPN x\r\nFOO\r\n\r\nQuIt\r\n",
    );
    assert_eq!(
        r,
        vec![
            "220 heaven.af.mil ESMTP",
            "250 heaven.af.mil",
            "250-heaven.af.mil",
            "250-PIPELINING",
            "250-8BITMIME",
            "250 SIZE 1000",
            "250 ok",
            "252 send some mail, i'll try my best",
            "250 flushed",
            "214 qmail home page: http://pobox.com/~djb/qmail.html",
            "502 unimplemented (#5.5.1)",
            "502 unimplemented (#5.5.1)",
            "502 unimplemented (#5.5.1)",
            "221 heaven.af.mil",
        ]
    );
}

#[test]
fn command_order_errors() {
    let r = replies(
        policy(),
        "RCPT TO:<fred@heaven.af.mil>\r\nDATA\r\nMAIL FROM:<a@b.c>\r\nDATA\r\n",
    );
    assert_eq!(
        &r[1..],
        [
            "503 MAIL first (#5.5.1)",
            "503 MAIL first (#5.5.1)",
            "250 ok",
            "503 RCPT first (#5.5.1)"
        ]
    );
    // HELO, EHLO and RSET end the transaction.
    for reset in ["HELO x", "EHLO x", "RSET"] {
        let r = replies(
            policy(),
            &format!("MAIL FROM:<a@b.c>\r\nRCPT TO:<fred@heaven.af.mil>\r\n{reset}\r\nDATA\r\n"),
        );
        assert_eq!(r.last().unwrap(), "503 MAIL first (#5.5.1)", "{reset}");
    }
}

#[test]
fn syntax_errors() {
    let r = replies(
        policy(),
        "MAIL FROM:<a@b\r\nMAIL <a@b>\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<>\r\nRCPT TO:fred\r\nRCPT <x@y>\r\n",
    );
    assert_eq!(
        &r[1..],
        [
            "501 syntax error (#5.5.4)",
            "501 syntax error (#5.5.4)",
            "250 ok",
            "555 syntax error (#5.5.4)",
            "250 ok",
            "555 syntax error (#5.5.4)"
        ]
    );
    let long = format!("MAIL FROM:<{}@x.org>\r\n", "a".repeat(900));
    assert_eq!(replies(policy(), &long)[1], "501 syntax error (#5.5.4)");
}

/// RFC 5321 4.1.4: a refused MAIL leaves the transaction as it was.
#[test]
fn bad_mail_keeps_the_transaction() {
    let r = replies(
        policy(),
        "MAIL FROM:<a@b.c>\r\nRCPT TO:<fred@heaven.af.mil>\r\nMAIL FROM:<broken\r\nDATA\r\n",
    );
    assert_eq!(&r[3..], ["501 syntax error (#5.5.4)", "354 go ahead"]);
}

/// RFC 1870: SIZE is 1*20DIGIT; a value past u64 is over any limit, not ignored.
#[test]
fn twenty_digit_size_is_over_the_limit() {
    let mut p = policy();
    p.databytes = 1000;
    let r = replies(
        p,
        "MAIL FROM:<a@b.c> SIZE=99999999999999999999\r\nMAIL FROM:<a@b.c> SIZE=1000\r\n",
    );
    assert_eq!(
        &r[1..],
        [
            "552 sorry, that message size exceeds my databytes limit (#5.3.4)",
            "250 ok"
        ]
    );
}

#[test]
fn badmailfrom_is_enforced_at_rcpt() {
    for sender in [
        "spammer@bad.com",
        "SPAMMER@Bad.Com",
        "anyone@evil.org",
        "x@EVIL.ORG",
    ] {
        let r = replies(
            policy(),
            &format!("MAIL FROM:<{sender}>\r\nRCPT TO:<fred@heaven.af.mil>\r\n"),
        );
        assert_eq!(r[1], "250 ok");
        assert_eq!(
            r[2], "553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)",
            "{sender}"
        );
    }
    let r = replies(
        policy(),
        "MAIL FROM:<ok@bad.com>\r\nRCPT TO:<fred@heaven.af.mil>\r\n",
    );
    assert_eq!(r[2], "250 ok");
}

#[test]
fn rcpthosts_suffixes_morercpthosts_and_postmaster() {
    let denied = "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)";
    let cases = [
        ("fred@heaven.af.mil", "250 ok"),
        ("fred@HEAVEN.AF.MIL", "250 ok"),
        ("x@a.sub.af.mil", "250 ok"),
        ("x@sub.af.mil", denied),
        ("x@more.org", "250 ok"),
        ("bill@irs.gov", denied),
        ("postmaster", "250 ok"),
        ("PostMaster", "250 ok"),
        ("postmaster@heaven.af.mil", "250 ok"),
        ("box@[127.0.0.1]", "250 ok"),
        ("box@[10.9.9.9]", denied),
    ];
    for (rcpt, want) in cases {
        let r = replies(
            policy(),
            &format!("MAIL FROM:<a@b.c>\r\nRCPT TO:<{rcpt}>\r\n"),
        );
        assert_eq!(r[2], want, "{rcpt}");
    }
    let (_, m) = run(
        policy(),
        "MAIL FROM:<a@b.c>\r\nRCPT TO:<box@[127.0.0.1]>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert_eq!(m[0].recipients, vec!["box@heaven.af.mil"]);
    // No rcpthosts file at all: every domain is accepted (qmail's open relay default).
    let mut p = policy();
    p.rcpthosts = None;
    let r = replies(p, "MAIL FROM:<a@b.c>\r\nRCPT TO:<bill@irs.gov>\r\n");
    assert_eq!(r[2], "250 ok");
}

#[test]
fn relayclient_appends_and_relays() {
    let mut p = policy();
    p.relayclient = Some("".into());
    let (t, m) = run(
        p,
        "MAIL FROM:<a@b.c>\r\nRCPT TO:<bill@irs.gov>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert!(t.contains("250 ok 1000000000"), "{t}");
    assert_eq!(m[0].recipients, vec!["bill@irs.gov"]);
    let mut p = policy();
    p.relayclient = Some("-relay".into());
    let (_, m) = run(
        p,
        "MAIL FROM:<a@b.c>\r\nRCPT TO:<bill@irs.gov>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert_eq!(m[0].recipients, vec!["bill@irs.gov-relay"]);
}

#[test]
fn relay_probes_are_refused() {
    for rcpt in [
        "bill%irs.gov@heaven.af.mil",
        "irs.gov!bill@heaven.af.mil",
        "\"bill@irs.gov\"@heaven.af.mil",
    ] {
        let r = replies(
            policy(),
            &format!("MAIL FROM:<a@b.c>\r\nRCPT TO:<{rcpt}>\r\n"),
        );
        assert_eq!(r[2], "553 we don't relay (#5.7.1)", "{rcpt}");
    }
}

/// A bare name is completed with envnoathost (and percenthack then applies) by the queue
/// manager: it must not be a way around rcpthosts.
#[test]
fn bare_names_cannot_relay() {
    for rcpt in [
        "victim%other.example",
        "other.example!victim",
        "a%b%heaven.af.mil",
    ] {
        let r = replies(
            policy(),
            &format!("MAIL FROM:<a@b.c>\r\nRCPT TO:<{rcpt}>\r\n"),
        );
        assert_eq!(r[2], "553 we don't relay (#5.7.1)", "{rcpt}");
    }
    let r = replies(policy(), "MAIL FROM:<a@b.c>\r\nRCPT TO:<postmaster>\r\n");
    assert_eq!(r[2], "250 ok", "a bare local name is still fine");
    let mut p = policy();
    p.envnoathost = "irs.gov".into();
    let r = replies(p, "MAIL FROM:<a@b.c>\r\nRCPT TO:<bill>\r\n");
    assert!(r[2].starts_with("553 sorry, that domain"), "{}", r[2]);
    // With relaying allowed, the same addresses are the client's business.
    let mut p = policy();
    p.relayclient = Some("".into());
    let r = replies(p, "MAIL FROM:<a@b.c>\r\nRCPT TO:<victim%other.example>\r\n");
    assert_eq!(r[2], "250 ok");
}

#[test]
fn null_sender_takes_one_recipient() {
    let r = replies(
        policy(),
        "MAIL FROM:<>\r\nRCPT TO:<fred@heaven.af.mil>\r\nRCPT TO:<joe@heaven.af.mil>\r\n",
    );
    assert_eq!(r[2], "250 ok");
    assert!(r[3].starts_with("553 "), "{}", r[3]);
    // control/nullsenderonercpt 0 turns the refusal off.
    let mut p = policy();
    p.null_sender_one_rcpt = false;
    let (_, m) = run(
        p,
        "MAIL FROM:<>\r\nRCPT TO:<fred@heaven.af.mil>\r\nRCPT TO:<joe@heaven.af.mil>\r\n\
         DATA\r\nx\r\n.\r\n",
    );
    assert_eq!(m[0].recipients, ["fred@heaven.af.mil", "joe@heaven.af.mil"]);
}

#[test]
fn realrcptto_refuses_unknown_recipients_at_rcpt() {
    let mut p = policy();
    p.rcpt_check = Some(RcptCheck(Arc::new(|a: &str| a.starts_with("fred"))));
    p.relayclient = Some("".into());
    let r = replies(
        p,
        "MAIL FROM:<a@b.c>\r\nRCPT TO:<fred@heaven.af.mil>\r\nRCPT TO:<ghost@heaven.af.mil>\r\n",
    );
    assert_eq!(r[2], "250 ok");
    assert_eq!(r[3], "550 sorry, no mailbox here by that name (#5.1.1)");
}

#[test]
fn hundred_recipients_accepted_then_a_limit() {
    let mut s = String::from("MAIL FROM:<a@b.c>\r\n");
    for i in 0..1001 {
        s.push_str(&format!("RCPT TO:<u{i}@heaven.af.mil>\r\n"));
    }
    let r = replies(policy(), &s);
    assert!(r[2..1002].iter().all(|l| l == "250 ok"));
    assert_eq!(r[1002], "452 too many recipients (#4.5.3)");
}

#[test]
fn databytes_exact_fits_one_more_does_not() {
    let mut p = policy();
    p.databytes = 10;
    // 9 bytes + LF = exactly 10 after CRLF → LF.
    let (t, m) = run(p.clone(), &format!("{SEND}123456789\r\n.\r\n"));
    assert!(t.contains("250 ok 1000000000"), "{t}");
    assert!(body(&m[0]).ends_with("123456789\n"));
    let (t, m) = run(p.clone(), &format!("{SEND}1234567890\r\n.\r\nNOOP\r\n"));
    assert!(
        t.contains(
            "552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n250 ok\r\n"
        ),
        "{t}"
    );
    assert!(m.is_empty());
    let r = replies(p, "MAIL FROM:<a@b.c> SIZE=11\r\n");
    assert_eq!(
        r[1],
        "552 sorry, that message size exceeds my databytes limit (#5.3.4)"
    );
}

#[test]
fn hop_counting() {
    let hops = |n: usize| {
        let mut s = SEND.to_string();
        for i in 0..n {
            s.push_str(if i % 2 == 0 {
                "Received: x\r\n"
            } else {
                "Delivered-To: y\r\n"
            });
        }
        s.push_str("\r\nReceived: in body does not count\r\n.\r\n");
        run(policy(), &s).0
    };
    assert!(hops(99).contains("250 ok 1000000000"));
    assert!(hops(100).contains("554 too many hops, this message is looping (#5.4.6)"));
}

#[test]
fn transparency_and_line_ends() {
    let (_, m) = run(
        policy(),
        &format!("{SEND}a\r\n..\r\n...x\r\n.y\r\nbare\rcr\r\n\r\nend\r\n.\r\n"),
    );
    assert_eq!(body(&m[0]), "a\n.\n..x\ny\nbare\rcr\n\nend\n");
}

#[test]
fn bare_lf_closes_without_queueing() {
    for input in [
        format!("{SEND}line\nmore\r\n.\r\n"),
        format!("{SEND}x\r\n.\n"),
        // SMTP smuggling: none of these end the data.
        format!("{SEND}x\n.\r\nMAIL FROM:<evil@x>\r\n"),
        format!("{SEND}x\r\n.\nQUIT\r\n"),
    ] {
        let (t, m) = run(policy(), &input);
        assert!(
            t.ends_with("421 See https://cr.yp.to/docs/smtplf.html.\r\n"),
            "{t}"
        );
        assert!(m.is_empty());
    }
    // `\r.\r\n` is inside a line: not the end either.
    let (t, m) = run(policy(), &format!("{SEND}x\r.\r\nstill data\r\n.\r\n"));
    assert!(t.contains("250 ok"));
    assert_eq!(body(&m[0]), "x\r.\nstill data\n");
}

#[test]
fn pipelined_replies_in_order_even_byte_by_byte() {
    let input = "EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<fred@heaven.af.mil>\r\nRCPT TO:<bill@irs.gov>\r\nDATA\r\nhi\r\n.\r\nMAIL FROM:<d@e.f>\r\nRCPT TO:<joe@heaven.af.mil>\r\nDATA\r\nsecond\r\n.\r\nQUIT\r\n";
    let whole = run_with(policy(), input.as_bytes(), usize::MAX, |_| Ok("1".into()));
    let bytewise = run_with(policy(), input.as_bytes(), 1, |_| Ok("1".into()));
    assert_eq!(whole.0, bytewise.0);
    assert_eq!(whole.1, bytewise.1);
    assert_eq!(whole.1.len(), 2);
    assert_eq!(whole.1[0].recipients, vec!["fred@heaven.af.mil"]);
    assert!(whole
        .0
        .ends_with("354 go ahead\r\n250 ok 1000000000 qp 1\r\n221 heaven.af.mil\r\n"));
}

#[test]
fn overlong_command_lines_are_discarded_and_answered_500() {
    let long = format!("NOOP {}\r\nNOOP\r\n", "x".repeat(10_000));
    let r = run_with(policy(), long.as_bytes(), 700, |_| Ok("1".into())).0;
    assert!(
        r.ends_with("500 command line too long (#5.5.2)\r\n250 ok\r\n"),
        "{r}"
    );
    // A 512-octet command line (RFC minimum) is fine.
    let ok = format!("NOOP {}\r\n", "x".repeat(505));
    assert!(replies(policy(), &ok)[1] == "250 ok");
}

#[test]
fn long_text_lines_in_data_are_fine() {
    let line = "y".repeat(100_000);
    let (t, m) = run(policy(), &format!("{SEND}{line}\r\n.\r\n"));
    assert!(t.contains("250 ok"));
    assert!(body(&m[0]).starts_with(&line));
}

#[test]
fn queue_failures_map_to_451_and_554() {
    let t = run_with(
        policy(),
        format!("{SEND}x\r\n.\r\n").as_bytes(),
        usize::MAX,
        |_| {
            Err(CommitError::Temporary(
                "qq write error or disk full (#4.3.0)".into(),
            ))
        },
    )
    .0;
    assert!(
        t.ends_with("451 qq write error or disk full (#4.3.0)\r\n"),
        "{t}"
    );
    let t = run_with(
        policy(),
        format!("{SEND}x\r\n.\r\n").as_bytes(),
        usize::MAX,
        |_| {
            Err(CommitError::Permanent(
                "qq permanent problem (#5.3.0)".into(),
            ))
        },
    )
    .0;
    assert!(t.ends_with("554 qq permanent problem (#5.3.0)\r\n"), "{t}");
}

#[test]
fn timeout_reply() {
    let mut s = Session::new(policy(), 0);
    s.take_output();
    s.timeout();
    assert_eq!(s.take_output(), b"451 timeout (#4.4.2)\r\n");
    assert!(s.is_closed());
}

#[test]
fn memory_stays_bounded_whatever_the_client_sends() {
    // Endless DATA without a line end, drained as a driver streaming to disk would.
    let mut s = Session::new(policy(), 0);
    s.input(SEND.as_bytes());
    let chunk = vec![b'z'; 64 * 1024];
    let mut streamed = 0;
    for _ in 0..160 {
        s.input(&chunk);
        if s.data_len() >= 256 * 1024 {
            streamed += s.take_data().len();
        }
        assert!(s.memory() < 2 << 20, "session holds {} bytes", s.memory());
    }
    assert!(streamed > 9 << 20);
    // With databytes set, bytes past the limit are dropped as they arrive.
    let mut p = policy();
    p.databytes = 100_000;
    let mut s = Session::new(p, 0);
    s.input(SEND.as_bytes());
    for _ in 0..100 {
        s.input(&chunk);
        assert!(s.memory() < 400_000, "{}", s.memory());
    }
    // An endless command line.
    let mut s = Session::new(policy(), 0);
    for _ in 0..100 {
        s.input(&chunk);
        assert!(s.memory() < 200_000);
    }
    // Thousands of recipients: at most MAX_RCPTS kept.
    let mut s = Session::new(policy(), 0);
    s.input(b"MAIL FROM:<a@b.c>\r\n");
    for _ in 0..5000 {
        s.input(b"RCPT TO:<someone.with.a.long.name@heaven.af.mil>\r\n");
        s.take_output();
    }
    assert!(s.memory() < 200_000, "{}", s.memory());
}

#[test]
fn progress_counts_command_lines_and_data_bytes_for_the_deadlines() {
    use mta::smtp::deadline::Progress;
    let p = |lines, data, started| Progress {
        lines,
        data,
        started,
    };
    let mut s = Session::new(policy(), 0);
    assert_eq!(s.progress(), p(0, None, false));
    // A partial line has started; its end is a completed line.
    s.input(b"NOOP");
    assert_eq!(s.progress(), p(0, None, true));
    s.input(b"\r\n");
    assert_eq!(s.progress(), p(1, None, false));
    s.input(SEND.as_bytes());
    assert_eq!(s.progress(), p(4, Some(0), false));
    s.input(b"Subject: x\r\n\r\nhi\r");
    assert_eq!(s.progress(), p(4, Some(17), true));
    // Cut off mid-message: a 421, closed, nothing kept.
    s.take_output();
    s.cut_off("421 message arriving too slowly, closing connection (#4.4.2)");
    assert_eq!(
        s.take_output(),
        b"421 message arriving too slowly, closing connection (#4.4.2)\r\n"
    );
    assert!(s.is_closed());
    assert_eq!(s.data_len(), 0);
    assert_eq!(s.input(b"\n.\r\n"), Step::Close);
}
