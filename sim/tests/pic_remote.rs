//! qmail's remote PIC scenarios in a turmoil world: local2rem (MX lookup, SMTP to the MX, the
//! remote's reply in the log) and nullclient (a default smtproutes relay takes everything).

use std::sync::{Arc, Mutex};

use sim::deliver::{image, World};
use sim::fs::{Faults, Persist};
use sim::remote_world::{run_world, Peer, PeerLog};

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
fn nullclient_sends_everything_to_the_relay() {
    let relay = Arc::new(Mutex::new(PeerLog::default()));
    let img = world(&[("smtproutes", ":bigbang.af.mil\n")]);
    let r = run_world(
        img,
        vec![Peer::Accept],
        Some(relay.clone()),
        Faults::default(),
        Persist::Synced,
        60,
        3,
    );
    assert_eq!(relay.lock().unwrap().accepted.len(), 1, "the relay took it");
    assert_eq!(
        r.peer.lock().unwrap().connections,
        0,
        "the MX was never contacted"
    );
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
