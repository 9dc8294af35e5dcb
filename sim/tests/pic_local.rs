//! qmail's PIC delivery scenarios (local ones) and bounces, through the real queue manager and
//! local delivery on the simulated disk. Mailbox contents are snapshots.

use sim::deliver::{image, World};

const PIC: &[(&str, &str)] = &[("defaultdelivery", "./Mailbox\n")];
const MSG: &str = "Subject: PIC\n\nHello.\nFrom the PIC.\n";
const DAY: u64 = 86_400;

fn mailbox(w: &World, user: &str) -> String {
    w.read(&format!("home/{user}/Mailbox")).unwrap_or_default()
}

#[test]
fn local2local() {
    let w = World::new(image(PIC, &[]), 1);
    w.inject("joe@heaven.af.mil", &["fred"], MSG);
    let r = w.run(DAY);
    assert_eq!(r.delivered(), 1);
    insta::assert_snapshot!(mailbox(&w, "fred"), @r"
    From joe@heaven.af.mil Thu Jan  1 00:00:00 2026
    Return-Path: <joe@heaven.af.mil>
    Delivered-To: fred@heaven.af.mil
    Subject: PIC

    Hello.
    >From the PIC.
    ");
    assert!(r.drained(), "retired");
}

#[test]
fn local2ext() {
    let w = World::new(image(PIC, &[("home/fred/.qmail-sos", "./Extramail\n")]), 1);
    w.inject("joe@heaven.af.mil", &["fred-sos"], MSG);
    w.run(DAY);
    let t = w.read("home/fred/Extramail").unwrap();
    assert!(t.contains("Delivered-To: fred-sos@heaven.af.mil\n"), "{t}");
    assert_eq!(mailbox(&w, "fred"), "");
}

#[test]
fn local2alias_forwards_with_delivered_to_and_the_same_sender() {
    let w = World::new(image(PIC, &[("alias/.qmail-help", "john\n")]), 1);
    w.inject("joe@heaven.af.mil", &["help"], MSG);
    let r = w.run(DAY);
    assert_eq!(r.delivered(), 2, "the alias, then john");
    insta::assert_snapshot!(mailbox(&w, "john"), @r"
    From joe@heaven.af.mil Thu Jan  1 00:00:00 2026
    Return-Path: <joe@heaven.af.mil>
    Delivered-To: john@heaven.af.mil
    Delivered-To: help@heaven.af.mil
    Subject: PIC

    Hello.
    >From the PIC.
    ");
}

#[test]
fn local2virt_uses_qmail_default_with_the_extension() {
    let w = World::new(
        image(
            &[
                ("defaultdelivery", "./Mailbox\n"),
                ("virtualdomains", "tommy.gov:fred\n"),
            ],
            &[("home/fred/.qmail-default", "./Mail.tommy\n")],
        ),
        1,
    );
    w.inject("joe@heaven.af.mil", &["dude@tommy.gov"], MSG);
    w.run(DAY);
    let t = w.read("home/fred/Mail.tommy").unwrap();
    assert!(t.contains("Delivered-To: fred-dude@tommy.gov\n"), "{t}");
}

#[test]
fn unknown_user_bounces_to_the_sender() {
    let w = World::new(image(PIC, &[]), 1);
    w.inject("joe@heaven.af.mil", &["nosuchuser"], MSG);
    let r = w.run(DAY);
    assert_eq!(r.bounces(), 1);
    let t = mailbox(&w, "joe");
    insta::assert_snapshot!(t, @r"
    From MAILER-DAEMON Thu Jan  1 00:00:00 2026
    Return-Path: <>
    Delivered-To: joe@heaven.af.mil
    Received: (qmail 37512 invoked for bounce); 1 Jan 2026 00:00:00 -0000
    Date: 1 Jan 2026 00:00:00 -0000
    From: MAILER-DAEMON@heaven.af.mil
    To: joe@heaven.af.mil
    Subject: failure notice

    Hi. This is the qmail-send program at heaven.af.mil.
    I'm afraid I wasn't able to deliver your message to the following addresses.
    This is a permanent error; I've given up. Sorry it didn't work out.

    <nosuchuser@heaven.af.mil>:
    Sorry, no mailbox here by that name. (#5.1.1)

    --- Below this line is a copy of the message.

    Return-Path: <joe@heaven.af.mil>
    Subject: PIC

    Hello.
    >From the PIC.
    ");
}

#[test]
fn postmaster_in_any_case_reaches_the_alias() {
    let w = World::new(image(PIC, &[]), 1);
    w.inject(
        "joe@heaven.af.mil",
        &["PostMaster", "postmaster@HEAVEN.AF.MIL"],
        MSG,
    );
    w.run(DAY);
    // alias/.qmail-postmaster forwards to fred (mta init).
    assert_eq!(mailbox(&w, "fred").matches("Subject: PIC").count(), 2);
}

#[test]
fn double_bounce_goes_to_postmaster() {
    let w = World::new(image(PIC, &[]), 1);
    // The sender does not exist either: its bounce bounces.
    w.inject("ghost@heaven.af.mil", &["nosuchuser"], MSG);
    let r = w.run(DAY);
    assert_eq!(r.bounces(), 2);
    let t = mailbox(&w, "fred");
    assert!(
        t.contains("I tried to deliver a bounce message to this address, but the bounce bounced!"),
        "{t}"
    );
    assert!(t.contains("<ghost@heaven.af.mil>:\nSorry, no mailbox here by that name. (#5.1.1)"));
    assert!(t.contains("--- Below this line is the original bounce.\n\nReturn-Path: <>\n"));
    assert!(r.drained());
}

#[test]
fn triple_bounce_is_discarded() {
    let w = World::new(
        image(
            &[
                ("defaultdelivery", "./Mailbox\n"),
                ("doublebounceto", "nobody-here"),
            ],
            &[],
        ),
        1,
    );
    w.inject("ghost@heaven.af.mil", &["nosuchuser"], MSG);
    let r = w.run(DAY);
    assert_eq!(r.bounces(), 2);
    assert_eq!(r.discarded(), 1);
    assert!(r.drained(), "nothing left");
    for u in ["fred", "joe", "john"] {
        assert_eq!(mailbox(&w, u), "", "{u}");
    }
}

#[test]
fn maildir_default_delivery_and_programs() {
    let w = World::new(
        image(&[], &[("home/joe/.qmail", "|notify\n./Maildir/\n")]),
        1,
    );
    let ran = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let r2 = ran.clone();
    w.env.set_program("notify", move |p| {
        r2.lock().unwrap().push(p.vars.clone());
        mta::env::Exit {
            code: Some(0),
            output: b"notified".to_vec(),
        }
    });
    w.inject("bill@irs.gov", &["fred", "joe"], MSG);
    w.run(DAY);
    let f = w.maildir("home/fred/Maildir");
    assert_eq!(f.len(), 1);
    assert!(f[0].starts_with(
        "Return-Path: <bill@irs.gov>\nDelivered-To: fred@heaven.af.mil\nSubject: PIC\n"
    ));
    assert_eq!(w.maildir("home/joe/Maildir").len(), 1);
    let vars = ran.lock().unwrap().clone();
    assert_eq!(vars.len(), 1);
    let get = |k: &str| {
        vars[0]
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("SENDER"), "bill@irs.gov");
    assert_eq!(get("RECIPIENT"), "joe@heaven.af.mil");
    assert_eq!(get("DTLINE"), "Delivered-To: joe@heaven.af.mil\n");
    assert_eq!(get("HOST2"), "heaven.af");
}

#[test]
fn program_exit_codes_map_to_outcomes() {
    let w = World::new(
        image(
            PIC,
            &[
                ("home/joe/.qmail", "|reject\n"),
                ("home/fred/.qmail", "|later\n"),
            ],
        ),
        1,
    );
    w.env.set_program("reject", |_| mta::env::Exit {
        code: Some(100),
        output: b"no thanks".to_vec(),
    });
    w.env.set_program("later", |_| mta::env::Exit {
        code: Some(75),
        output: b"try later".to_vec(),
    });
    w.inject("bill@irs.gov", &["joe", "fred"], MSG);
    let r = w.run(3000);
    assert_eq!(r.failed(), 1, "exit 100 is permanent");
    // exit 75 is temporary: fred is tried at 0, 100, 400, 900, 1600 and 2500 s (the local
    // schedule) before the run stops at 3000 s.
    assert_eq!(r.attempts("local"), 1 + 6);
    assert!(r.queued.is_some_and(|n| n > 0), "fred still pending");
}

#[test]
fn blank_doublebounceto_discards_double_bounces() {
    let w = World::new(
        image(
            &[("defaultdelivery", "./Mailbox\n"), ("doublebounceto", "\n")],
            &[],
        ),
        1,
    );
    w.inject("ghost@heaven.af.mil", &["nosuchuser"], MSG);
    let r = w.run(DAY);
    assert_eq!(r.bounces(), 1, "the bounce to ghost, then no double bounce");
    assert_eq!(r.discarded(), 1);
    assert!(r.drained());
    assert_eq!(mailbox(&w, "fred"), "", "postmaster (fred) got nothing");
}

#[test]
fn owner_file_sets_the_forward_sender() {
    let w = World::new(
        image(
            PIC,
            &[
                ("alias/.qmail-list", "john\njoe\n"),
                ("alias/.qmail-list-owner", "fred\n"),
            ],
        ),
        1,
    );
    w.inject("bill@irs.gov", &["list"], MSG);
    w.run(DAY);
    for u in ["john", "joe"] {
        let t = mailbox(&w, u);
        assert!(t.starts_with("From list-owner@heaven.af.mil "), "{u}: {t}");
        assert!(
            t.contains("Return-Path: <list-owner@heaven.af.mil>\n"),
            "{u}: {t}"
        );
    }
}

#[test]
fn delivered_to_loop_bounces() {
    // help forwards to itself: the second pass finds its own Delivered-To line.
    let w = World::new(image(PIC, &[("alias/.qmail-help", "help\n")]), 1);
    w.inject("joe@heaven.af.mil", &["help"], MSG);
    let r = w.run(DAY);
    let t = mailbox(&w, "joe");
    assert!(
        t.contains("This message is looping: it already has my Delivered-To line. (#5.4.6)"),
        "{t}"
    );
    assert_eq!(r.bounces(), 1);
}

#[test]
fn local_concurrency_limit_holds() {
    let w = World::new(image(&[("concurrencylocal", "3\n")], &[]), 1);
    for i in 0..12 {
        w.inject(
            "joe@heaven.af.mil",
            &["fred"],
            &format!("Subject: {i}\n\nx\n"),
        );
    }
    let lines = w.run(DAY).log();
    let most = lines
        .iter()
        .filter_map(|l| l.strip_prefix("status: local "))
        .map(|l| l.split('/').next().unwrap().parse::<usize>().unwrap())
        .max()
        .unwrap();
    assert_eq!(
        most, 3,
        "never more than concurrencylocal at once, and the limit was reached"
    );
    assert_eq!(w.maildir("home/fred/Maildir").len(), 12);
}

#[test]
fn pic_log_lines() {
    let w = World::new(image(PIC, &[("alias/.qmail-help", "john\n")]), 1);
    w.inject("joe@heaven.af.mil", &["fred"], MSG);
    let lines = w.run(DAY).log();
    insta::assert_snapshot!("local2local-log", sim::deliver::redact_ids(&lines));
    let w = World::new(image(PIC, &[("alias/.qmail-help", "john\n")]), 1);
    w.inject("joe@heaven.af.mil", &["help"], MSG);
    let lines = w.run(DAY).log();
    insta::assert_snapshot!("local2alias-log", sim::deliver::redact_ids(&lines));
}

#[test]
fn bounce_storm_delivers_every_bounce_exactly_once() {
    let bad = sim::local_crash::bounce_storm(2, 20);
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn each_delivery_runs_as_its_recipient_and_programs_too() {
    let w = World::new(image(PIC, &[("home/john/.qmail", "|filter\n")]), 1);
    w.env.set_program("filter", |_| mta::env::Exit {
        code: Some(0),
        output: Vec::new(),
    });
    w.inject("joe@heaven.af.mil", &["fred", "john"], MSG);
    assert!(w.run(DAY).drained());
    let who = |uid| mta::env::Creds { uid, gid: uid };
    let homes: Vec<_> = w.env.deliveries_as.lock().unwrap().clone();
    assert!(homes.contains(&(who(1000), sim::deliver::root().join("home/fred"))));
    assert!(homes.contains(&(who(1003), sim::deliver::root().join("home/john"))));
    let runs = w.env.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0].creds,
        Some(who(1003)),
        "john's program runs as john"
    );
}

#[test]
fn a_server_not_started_as_root_delivers_only_as_itself() {
    let mut w = World::new(image(PIC, &[]), 1);
    w.env = w.env.clone().with_uid(1000);
    w.inject("joe@heaven.af.mil", &["fred", "john"], MSG);
    let r = w.run(3000);
    assert!(
        mailbox(&w, "fred").contains("Subject: PIC"),
        "fred is uid 1000"
    );
    assert_eq!(mailbox(&w, "john"), "");
    assert!(
        r.log().iter().any(|l| l.contains(
            "deferral: Unable_to_deliver_as_uid_1003_(john):_mta_run_runs_as_uid_1000,_not_as_root._(#4.3.0)"
        )),
        "{:?}",
        r.log()
    );
}

/// Directory entries listed while delivering one message to fred, whose Maildir's cur/
/// already holds `n` messages.
fn listed_for_one_delivery(n: usize) -> u64 {
    let old: Vec<(String, String)> = (0..n)
        .map(|i| {
            (
                format!("home/fred/Maildir/cur/{i}.old:2,S"),
                "x\n".to_string(),
            )
        })
        .collect();
    let files: Vec<(&str, &str)> = old.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    let w = World::new(image(&[], &files), 1);
    w.inject("joe@heaven.af.mil", &["fred"], MSG);
    let before = w.env.sim_fs().listed();
    assert!(w.run(DAY).drained());
    assert_eq!(w.maildir("home/fred/Maildir").len(), 1);
    w.env.sim_fs().listed() - before
}

#[test]
fn a_maildir_delivery_costs_the_same_whatever_the_mailbox_holds() {
    assert_eq!(listed_for_one_delivery(3), listed_for_one_delivery(2000));
}

/// With `control/queueuser`, the simulated server gives root up as the real one does, and
/// local deliveries go through the helper it started first: still each as its recipient.
#[test]
fn a_server_that_gives_root_up_delivers_through_its_helper_as_each_recipient() {
    let files = [
        ("home/john/.qmail", "|filter\n./Mailbox\n"),
        ("control/queueuser", "mtaq\n"),
    ];
    let w = World::new(image(PIC, &files), 1);
    w.env.set_program("filter", |_| mta::env::Exit {
        code: Some(0),
        output: Vec::new(),
    });
    w.inject("joe@heaven.af.mil", &["fred", "john"], MSG);
    let r = w.run(DAY);
    assert!(r.drained(), "{r:?}");
    use mta::env::Env;
    assert_eq!(w.env.uid(), sim::fs::OWNER, "the server runs as mtaq");
    assert!(mailbox(&w, "fred").contains("Subject: PIC"));
    assert!(mailbox(&w, "john").contains("Subject: PIC"));
    let who = |uid| mta::env::Creds { uid, gid: uid };
    let homes: Vec<_> = w.env.deliveries_as.lock().unwrap().clone();
    assert!(homes.contains(&(who(1000), sim::deliver::root().join("home/fred"))));
    assert!(homes.contains(&(who(1003), sim::deliver::root().join("home/john"))));
    let runs = w.env.runs.lock().unwrap().clone();
    assert_eq!(
        runs[0].creds,
        Some(who(1003)),
        "john's program runs as john"
    );
}
