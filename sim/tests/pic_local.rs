//! Local delivery through the real queue manager on the simulated disk, beyond the PIC
//! scenarios kept as data in `fixtures/pic/` (run by `pic_data.rs` here and `pic_real.rs`
//! against the real binary): programs, concurrency, log lines, bounce storms, users and costs.

use sim::deliver::{image, World};

const PIC: &[(&str, &str)] = &[("defaultdelivery", "./Mailbox\n")];
const MSG: &str = "Subject: PIC\n\nHello.\nFrom the PIC.\n";
const DAY: u64 = 86_400;

fn mailbox(w: &World, user: &str) -> String {
    w.read(&format!("home/{user}/Mailbox")).unwrap_or_default()
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
