//! qmail's remote PIC scenarios that need DNS, in a turmoil world: local2rem (MX lookup, SMTP
//! to the MX, the remote's reply in the log), MX preference and fallback, DNS failures. The
//! ones a route decides (nullclient, a domain's smtproutes entry) are data in `fixtures/pic/`.

use sim::deliver::{image, World};
use sim::fs::{Faults, Persist};
use sim::remote_world::{run_world, Peer};

fn world(controls: &[(&str, &str)]) -> sim::fs::Image {
    let w = World::new(image(controls, &[]), 0);
    w.inject(
        "joe@heaven.af.mil",
        &["bill@irs.gov"],
        "Subject: PIC\n\nHello.\n",
    );
    w.env.sim_fs().crash_image(&Persist::All)
}

/// Log lines with message ids and addresses that vary by run made stable.
fn redact(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| {
            let mut out = Vec::new();
            for w in l.split(' ') {
                let bare = w.trim_end_matches(':');
                let is_id = bare.parse::<mta::queue::MsgId>().is_ok();
                let w = if is_id {
                    w.replace(bare, "[id]")
                } else {
                    w.to_string()
                };
                out.push(w);
            }
            out.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn local2rem_goes_to_the_mx_and_logs_its_reply() {
    let r = run_world(
        world(&[]),
        vec![Peer::Accept],
        None,
        Faults::default(),
        Persist::Synced,
        60,
        3,
    );
    assert_eq!(r.peer.lock().unwrap().accepted.len(), 1);
    let lines = r.lines.lock().unwrap().clone();
    insta::assert_snapshot!(redact(&lines), @r"
    starting delivery 1: msg [id] to remote bill@irs.gov
    status: local 0/10 remote 1/20
    delivery 1: success: 192.168.0.1_accepted_message./Remote_host_said:_250_scripted_reply
    end msg [id]
    ");
}

#[test]
fn unknown_domain_bounces_temporary_dns_trouble_defers() {
    let w = World::new(image(&[], &[]), 0);
    w.inject(
        "joe@heaven.af.mil",
        &["x@nowhere.example"],
        "Subject: nx\n\nx\n",
    );
    let img = w.env.sim_fs().crash_image(&Persist::All);
    let r = run_world(
        img,
        vec![Peer::Accept],
        None,
        Faults::default(),
        Persist::Synced,
        60,
        3,
    );
    let w = r.world();
    let b = w.maildir("home/joe/Maildir").concat();
    assert!(
        b.contains(
            "<x@nowhere.example>:\nSorry, I couldn't find any host named nowhere.example. (#5.1.2)"
        ),
        "{b}"
    );
}

fn outcome(rcpt: &str, peer: Vec<Peer>, secs: u64, seed: u64) -> (usize, usize, String, bool) {
    let o = sim::remote_world::deliver_one(rcpt, peer, secs, seed);
    (o.peer, o.peer2, o.bounces, o.queued)
}

#[test]
fn best_mx_refusing_its_greeting_falls_back_to_the_next() {
    let (a, b, bounce, queued) = outcome("bill@multi.example", vec![Peer::Greeting(554)], 60, 3);
    assert_eq!((a, b), (0, 1), "mx2 took it");
    assert!(bounce.is_empty() && !queued);
    let (a, b, _, _) = outcome("bill@multi.example", vec![Peer::Accept], 60, 3);
    assert_eq!((a, b), (1, 0), "the best MX first");
}

#[test]
fn equal_preferences_are_chosen_at_random_by_seed() {
    let mut seen = [0, 0];
    for seed in 0..12 {
        let (a, b, _, _) = outcome("bill@equal.example", vec![Peer::Accept], 60, seed);
        seen[0] += a;
        seen[1] += b;
    }
    assert_eq!(seen[0] + seen[1], 12);
    assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
}

#[test]
fn ourselves_as_best_mx_uses_only_better_hosts_or_fails() {
    // Our address is the best MX: only strictly better hosts may be used, and there are none.
    let (a, b, bounce, _) = outcome("bill@selfonly.example", vec![Peer::Accept], 60, 3);
    assert_eq!((a, b), (0, 0));
    assert!(
        bounce.contains("Although I'm listed as a best-preference MX or A for that host"),
        "{bounce}"
    );
    // Listed at preference 10 with a backup at 20: the backup is worse, so it fails too.
    let (_, b, bounce, _) = outcome("bill@self.example", vec![Peer::Accept], 60, 3);
    assert_eq!(b, 0);
    assert!(bounce.contains("best-preference MX"), "{bounce}");
}

#[test]
fn no_mx_falls_back_to_the_address_record() {
    let (a, _, bounce, queued) = outcome("bill@fallback.example", vec![Peer::Accept], 60, 3);
    assert_eq!(a, 1);
    assert!(bounce.is_empty() && !queued);
}

#[test]
fn servfail_and_silence_defer_without_bouncing() {
    for rcpt in ["bill@broken.example", "bill@silent.example"] {
        let (a, b, bounce, queued) = outcome(rcpt, vec![Peer::Accept], 120, 3);
        assert_eq!((a, b), (0, 0), "{rcpt}");
        assert!(bounce.is_empty(), "{rcpt}: {bounce}");
        assert!(queued, "{rcpt}: still queued for the next attempt");
    }
}

#[test]
fn a_peer_that_never_speaks_times_out_and_defers() {
    // timeoutremote is 30 s in this world: the attempt gives up and the message waits.
    let (a, b, bounce, queued) =
        outcome("bill@multi.example", vec![Peer::Hang, Peer::Hang], 120, 3);
    assert_eq!(a, 0);
    // The best MX hangs; the second MX is tried after the timeout and accepts.
    assert_eq!(b, 1, "next MX after the timeout");
    assert!(bounce.is_empty() && !queued);
    let (a, b, bounce, queued) = outcome("bill@irs.gov", vec![Peer::Hang], 120, 3);
    assert_eq!((a, b), (0, 0));
    assert!(bounce.is_empty() && queued, "deferred, not bounced");
}

#[test]
fn giant_mx_answer_is_resolved_over_tcp_and_delivered() {
    let (a, _, bounce, queued) = outcome("bill@giant.example", vec![Peer::Accept], 60, 3);
    assert_eq!(a, 1);
    assert!(bounce.is_empty() && !queued);
}
