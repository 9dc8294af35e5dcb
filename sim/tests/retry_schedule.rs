//! qmail's retry schedule, through `mta run` on the paused clock: every attempt at its
//! scheduled time over a whole queue lifetime, then one bounce. Attempt times come from the
//! MTA's own log lines.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mta::env::Exit;
use sim::deliver::{image, Run, World};
use sim::schedule_scenario::expected;

const WEEK: u64 = 604_800;

/// Each message's delivery passes on `channel`, in seconds after its birth.
fn attempt_times(r: &Run, channel: &str) -> Vec<Vec<u64>> {
    r.attempt_times(channel)
        .iter()
        .map(|(id, v)| {
            assert_eq!(id.secs, sim::crash::T0_MS / 1000, "born at the start");
            v.iter().map(|t| t - id.secs).collect()
        })
        .collect()
}

#[test]
fn forty_remote_attempts_over_seven_days_then_one_bounce() {
    let w = World::new(image(&[("defaultdelivery", "./Mailbox\n")], &[]), 3);
    w.inject(
        "joe@heaven.af.mil",
        &["bill@irs.gov"],
        "Subject: far\n\nx\n",
    );
    let t = std::time::Instant::now();
    let r = w.run(WEEK + 86_400);
    let wall = t.elapsed();
    assert_eq!(r.attempts("remote"), 40);
    let times = attempt_times(&r, "remote");
    assert_eq!(times[0], expected(20, WEEK));
    assert_eq!(times[0][39], 608_400);
    assert_eq!(r.bounces(), 1);
    let bounce = w.read("home/joe/Mailbox").unwrap();
    assert!(
        bounce.contains("<bill@irs.gov>:\n")
            && bounce.contains(
                "I'm not going to try again; this message has been in the queue too long.\n"
            ),
        "{bounce}"
    );
    assert!(r.drained(), "{r:?}");
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
    let r = w.run(WEEK + 86_400);
    let times = attempt_times(&r, "local");
    assert_eq!(times[0].len(), 79);
    assert_eq!(times[0], expected(10, WEEK));
    assert_eq!(
        r.bounces(),
        1,
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
        let r = w.run(WEEK);
        assert_eq!(n.load(Ordering::SeqCst), k);
        let times = attempt_times(&r, "local");
        assert_eq!(times[0], expected(10, WEEK)[..k].to_vec());
        assert_eq!(w.maildir("home/fred/Maildir").len(), 1, "k={k}");
        assert_eq!(r.bounces(), 0);
        assert!(r.drained(), "k={k}: {r:?}");
    }
}

#[test]
fn a_restart_neither_hammers_nor_shifts_the_schedule() {
    use sim::schedule_scenario::{expected_with_downtime, run_with_downtime};
    // Stopped twice for a minute, between attempts: the 40 attempts are exactly qmail's.
    let short = [(100_007, 100_067), (300_011, 300_071)];
    let (times, bounces) = run_with_downtime(5, &short);
    assert_eq!(times, expected(20, WEEK));
    assert_eq!(expected_with_downtime(20, WEEK, &short), expected(20, WEEK));
    assert_eq!(bounces, 1);
    // Down for a day across several attempts: one attempt at the restart, then on.
    let long = [(200_003, 286_403)];
    let (times, bounces) = run_with_downtime(5, &long);
    let want = expected_with_downtime(20, WEEK, &long);
    assert_eq!(times, want);
    assert!(want.contains(&286_403) && want.len() < 40, "{want:?}");
    assert_eq!(bounces, 1);
}
