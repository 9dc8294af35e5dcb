//! qmail's retry schedule, through the real queue manager on a manual clock: every attempt at
//! its scheduled time over a whole queue lifetime, then one bounce.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mta::env::Exit;
use sim::deliver::{image, World};
use sim::env::SimEnv;
use sim::schedule_scenario::AlwaysDefer;

const WEEK: u64 = 604_800;

fn attempt_times(
    m: &mta::send::manager::Manager<SimEnv, mta::control::Rewrite>,
    birth: u64,
) -> Vec<Vec<u64>> {
    let log: &BTreeMap<_, Vec<u64>> = m.attempt_log.as_ref().unwrap();
    log.values()
        .map(|v| v.iter().map(|t| t - birth).collect())
        .collect()
}

fn birth() -> u64 {
    sim::crash::T0_MS / 1000
}

#[test]
fn forty_remote_attempts_over_seven_days_then_one_bounce() {
    let w = World::new(image(&[("defaultdelivery", "./Mailbox\n")], &[]), 3);
    let calls = Arc::new(AtomicUsize::new(0));
    w.inject(
        "joe@heaven.af.mil",
        &["bill@irs.gov"],
        "Subject: far\n\nx\n",
    );
    let (mut m, h, inbox) = w.manager(Some(Arc::new(AlwaysDefer(calls.clone()))));
    m.attempt_log = Some(BTreeMap::new());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let end = birth() + WEEK + 86_400;
    let t = std::time::Instant::now();
    let m = rt.block_on(m.run(inbox, mta::send::manager::Until::EmptyBy(end)));
    let wall = t.elapsed();
    drop(h);
    assert_eq!(calls.load(Ordering::SeqCst), 40);
    let times = attempt_times(&m, birth());
    assert_eq!(times[0], sim::schedule_scenario::expected(20, WEEK));
    assert_eq!(times[0][39], 608_400);
    assert_eq!(m.counts.bounces, 1);
    let bounce = w.read("home/joe/Mailbox").unwrap();
    assert!(bounce.contains("<bill@irs.gov>:\n421 busy, try later\nI'm not going to try again; this message has been in the queue too long.\n"), "{bounce}");
    assert!(m.queue().messages().next().is_none());
    println!("7 simulated days, 40 attempts, in {wall:?} of wall time");
}

#[test]
fn seventy_nine_local_attempts() {
    let w = World::new(image(&[], &[("home/fred/.qmail", "|busy\n")]), 3);
    w.env.set_program("busy", |_| Exit {
        code: Some(111),
        output: b"mailbox busy".to_vec(),
    });
    w.inject("joe@heaven.af.mil", &["fred"], "Subject: local\n\nx\n");
    let (mut m, h, inbox) = w.manager(None);
    m.attempt_log = Some(BTreeMap::new());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let m = rt.block_on(m.run(
        inbox,
        mta::send::manager::Until::EmptyBy(birth() + WEEK + 86_400),
    ));
    drop(h);
    let times = attempt_times(&m, birth());
    assert_eq!(times[0].len(), 79);
    assert_eq!(times[0], sim::schedule_scenario::expected(10, WEEK));
    assert_eq!(
        m.counts.bounces, 1,
        "then a bounce to joe (delivered by Maildir)"
    );
    assert_eq!(w.maildir("home/joe/Maildir").len(), 1);
}

#[test]
fn delivered_at_attempt_k_after_k_minus_one_deferrals() {
    for k in [1usize, 2, 5, 12] {
        let w = World::new(
            image(&[], &[("home/fred/.qmail", "|flaky\n./Maildir/\n")]),
            3,
        );
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        w.env.set_program("flaky", move |_| {
            let i = n2.fetch_add(1, Ordering::SeqCst) + 1;
            Exit {
                code: Some(if i < k { 111 } else { 0 }),
                output: Vec::new(),
            }
        });
        w.inject("joe@heaven.af.mil", &["fred"], "Subject: k\n\nx\n");
        let (mut m, h, inbox) = w.manager(None);
        m.attempt_log = Some(BTreeMap::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let m = rt.block_on(m.run(inbox, mta::send::manager::Until::EmptyBy(birth() + WEEK)));
        drop(h);
        assert_eq!(n.load(Ordering::SeqCst), k);
        let times = attempt_times(&m, birth());
        assert_eq!(
            times[0],
            sim::schedule_scenario::expected(10, WEEK)[..k].to_vec()
        );
        assert_eq!(w.maildir("home/fred/Maildir").len(), 1, "k={k}");
        assert_eq!(m.counts.bounces, 0);
    }
}
