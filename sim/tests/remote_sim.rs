//! Remote delivery through turmoil: MX lookup against a DNS host, SMTP to a scripted peer
//! failing at each stage, retries on the schedule, bounces, and crashes of the MTA host.

use sim::fs::{Faults, Persist};
use sim::remote_world::{run, Peer};

fn bounce(w: &sim::deliver::World) -> String {
    w.maildir("home/joe/Maildir").concat()
}

fn check(scripts: Vec<Peer>, secs: u64) -> (usize, usize, String, bool) {
    let r = run(scripts, Faults::default(), Persist::Synced, secs, 7);
    let w = r.world();
    let queued = w.recover().is_none_or(|m| !m.is_empty());
    let log = r.peer.lock().unwrap();
    (log.accepted.len(), log.connections, bounce(&w), queued)
}

#[test]
fn accepted_on_the_first_attempt() {
    let (acc, conns, b, queued) = check(vec![Peer::Accept], 60);
    assert_eq!((acc, conns), (1, 1));
    assert!(b.is_empty() && !queued);
}

#[test]
fn permanent_failures_at_each_stage_bounce() {
    for (script, why) in [
        (Peer::Mail(553), "but sender was rejected."),
        (Peer::Rcpt(550), "does not like recipient."),
        (Peer::Data(554), "failed on DATA command."),
        (Peer::AfterDot(554), "failed after I sent the message."),
    ] {
        let (acc, conns, b, queued) = check(vec![script], 60);
        assert_eq!((acc, conns, queued), (0, 1, false), "{script:?}");
        assert!(b.contains("<bill@far.example>:\n"), "{script:?}: {b}");
        assert!(b.contains(why), "{script:?}: {b}");
        assert!(b.contains("Remote host said: 5"), "{script:?}");
    }
}

#[test]
fn temporary_failures_are_retried_on_schedule() {
    for script in [
        Peer::Greeting(554),
        Peer::Greeting(421),
        Peer::Mail(451),
        Peer::Rcpt(450),
        Peer::Data(451),
        Peer::AfterDot(451),
    ] {
        // Before the second attempt (at 400 s): still queued, no bounce.
        let (acc, conns, b, queued) = check(vec![script], 300);
        assert_eq!((acc, conns), (0, 1), "{script:?}");
        assert!(queued && b.is_empty(), "{script:?}");
        // The second attempt succeeds.
        let (acc, conns, b, queued) = check(vec![script, Peer::Accept], 600);
        assert_eq!((acc, conns), (1, 2), "{script:?}");
        assert!(!queued && b.is_empty(), "{script:?}");
    }
}

#[test]
fn connection_lost_after_the_dot_is_retried_a_possible_duplicate() {
    let (acc, conns, b, queued) = check(vec![Peer::DropAfterDot, Peer::Accept], 600);
    assert_eq!(
        (acc, conns),
        (2, 2),
        "the peer got it twice: SMTP cannot avoid this one"
    );
    assert!(!queued && b.is_empty());
}

#[test]
fn crash_of_the_mta_host_at_every_fs_operation_loses_nothing() {
    let r = sim::remote_world::crash_mid_delivery_remote(7);
    println!(
        "{} crash points, {} runs; {} duplicates at the peer (crash between its 250 and our durable outcome)",
        r.crash_points, r.runs, r.duplicates
    );
    assert!(r.crash_points > 5);
    assert!(r.violations.is_empty(), "{:#?}", r.violations);
}
