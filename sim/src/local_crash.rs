//! crash-mid-delivery-local: the queue manager delivering locally (Maildir, a forward, a
//! bounce, a double bounce) is crashed after every filesystem operation; after a reboot from each persisted
//! state it finishes, and every message must be in its mailbox exactly once.

use std::time::Duration;

use mta::queue::Disabled;

use crate::deliver::{image, Run, World};
use crate::fs::{Faults, Image, Persist};

const DAY: u64 = 86_400;

/// The mailboxes after a run: (fred, joe, john) Maildir `new/` contents.
type Boxes = (Vec<String>, Vec<String>, Vec<String>);

fn setup(seed: u64) -> (Image, World) {
    let img = image(&[], &[("alias/.qmail-help", "john\n")]);
    let w = World::new(img, seed);
    w.inject(
        "joe@heaven.af.mil",
        &["fred", "joe"],
        "Subject: A\n\nfirst\n",
    );
    w.inject(
        "joe@heaven.af.mil",
        &["nosuchuser"],
        "Subject: B\n\nbounces\n",
    );
    w.inject("fred@heaven.af.mil", &["help"], "Subject: C\n\nforwarded\n");
    // From a sender that does not exist: its bounce bounces, to the postmaster (fred).
    w.inject(
        "ghost@heaven.af.mil",
        &["nosuchuser"],
        "Subject: D\n\ndouble\n",
    );
    (w.env.sim_fs().crash_image(&Persist::All), w)
}

const MAILDIRS: [&str; 3] = ["home/fred/Maildir", "home/joe/Maildir", "home/john/Maildir"];

fn boxes(w: &World) -> Boxes {
    (
        w.mailbox(MAILDIRS[0]),
        w.mailbox(MAILDIRS[1]),
        w.mailbox(MAILDIRS[2]),
    )
}

fn check(b: &Boxes) -> Vec<String> {
    let mut bad = Vec::new();
    let count = |v: &Vec<String>, s: &str| v.iter().filter(|m| m.contains(s)).count();
    for (who, v, subj, want) in [
        ("fred", &b.0, "Subject: A", 1),
        ("fred", &b.0, "but the bounce bounced!", 1),
        ("joe", &b.1, "Subject: A", 1),
        ("joe", &b.1, "Subject: failure notice", 1),
        ("john", &b.2, "Subject: C", 1),
    ] {
        let n = count(v, subj);
        if n != want {
            bad.push(format!("{who} has {n} × {subj:?}, wants {want}"));
        }
    }
    let total = b.0.len() + b.1.len() + b.2.len();
    if total != 5 {
        bad.push(format!("{total} messages delivered in all, wants 5"));
    }
    bad
}

/// Totals of the enumeration.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub crash_points: u64,
    pub states: usize,
    pub violations: Vec<String>,
}

/// Crash a delivery run from `img` after each of its filesystem operations; boot a world on
/// every persisted state, let `after_crash` act on it, run it to quiescence and record what
/// `check` finds, and a queue that did not drain. Returns the crash-free run's world and
/// whether its queue drained.
fn crash_every_op(
    img: &Image,
    seed: u64,
    off: Disabled,
    label: &str,
    after_crash: &dyn Fn(&World),
    check: &dyn Fn(&World) -> Vec<String>,
    rep: &mut Report,
) -> (World, bool) {
    let clean = World::new(img.clone(), seed);
    let before = clean.env.sim_fs().ops();
    let drained = clean.run_with(DAY, off).drained();
    rep.crash_points = clean.env.sim_fs().ops() - before;
    for k in 1..=rep.crash_points {
        let w = World::new(img.clone(), seed);
        w.env.sim_fs().set_faults(Faults {
            crash_after: Some(w.env.sim_fs().ops() + k),
            ..Faults::default()
        });
        w.run_with(3600, off);
        for p in w.env.sim_fs().persist_choices() {
            let after = World::new(w.env.sim_fs().crash_image(&p), seed ^ k);
            after_crash(&after);
            let run = after.run_with(7 * DAY, off);
            rep.states += 1;
            let mut problems = check(&after);
            problems.extend(undrained(&run));
            if !problems.is_empty() {
                rep.violations.push(format!(
                    "{label}crash_after={k} persist={p:?}: {}",
                    problems.join("; ")
                ));
            }
        }
    }
    (clean, drained)
}

/// Enumerate every crash point of the delivery run, with local-delivery fsyncs `off`.
pub fn enumerate(seed: u64, off: Disabled) -> Report {
    let mut rep = Report::default();
    let (img, _) = setup(seed);
    let (clean, drained) = crash_every_op(
        &img,
        seed,
        off,
        "",
        // A reader takes what was delivered before the crash: a repeated delivery must
        // find its copy in cur/ rather than make a second one.
        &|w: &World| {
            w.env.clock().advance(Duration::from_secs(60));
            MAILDIRS.iter().for_each(|d| w.read_new(d));
        },
        &|w: &World| check(&boxes(w)),
        &mut rep,
    );
    let problems = check(&boxes(&clean));
    if !problems.is_empty() || !drained {
        rep.violations.push(format!("clean run: {problems:?}"));
    }
    rep
}

/// Fail each fsync of a delivery run in turn (Linux semantics: what it covered may be gone
/// from the disk while reads still return it), and the operation after it with EIO; the
/// manager retries on its schedule, then the machine goes down keeping only what was made
/// durable. After a reboot every message must be in its mailbox exactly once.
pub fn failed_fsyncs(seed: u64) -> Report {
    let mut rep = Report::default();
    let (img, _) = setup(seed);
    let clean = World::new(img.clone(), seed);
    let before = clean.env.sim_fs().ops();
    clean.run(DAY);
    rep.crash_points = clean.env.sim_fs().ops() - before;
    for k in 1..=rep.crash_points {
        let w = World::new(img.clone(), seed);
        let at = w.env.sim_fs().ops() + k;
        // The operation after the failed fsync (usually the undo) fails too.
        w.env.sim_fs().set_faults(Faults {
            fsync_fail_at: [at].into_iter().collect(),
            eio_at: Some(at + 1),
            ..Faults::default()
        });
        w.run(7 * DAY);
        let after = World::new(w.env.sim_fs().crash_image(&Persist::Synced), seed ^ k);
        let run = after.run(7 * DAY);
        rep.states += 1;
        let mut problems = check(&boxes(&after));
        problems.extend(undrained(&run));
        if !problems.is_empty() {
            rep.violations
                .push(format!("fsync_fail_at={k}: {}", problems.join("; ")));
        }
    }
    rep
}

/// mbox delivery across crashes: at least once (a crash between the append and the durable
/// outcome repeats it, as in qmail) and never a partial message, which qmail cannot promise.
/// Two messages, so a stale append marker would cut the first.
pub fn enumerate_mbox(seed: u64, off: Disabled) -> Report {
    let img = image(&[], &[("home/fred/.qmail", "./Mailbox\n")]);
    let w = World::new(img, seed);
    w.inject(
        "joe@heaven.af.mil",
        &["fred"],
        "Subject: M\n\nFrom the mbox test\nend\n",
    );
    w.inject(
        "joe@heaven.af.mil",
        &["fred"],
        "Subject: M\n\nFrom the mbox test\nend\n",
    );
    let img = w.env.sim_fs().crash_image(&Persist::All);
    let mut rep = Report::default();
    let check = |w: &World| -> Vec<String> {
        let t = w.read("home/fred/Mailbox").unwrap_or_default();
        let copies = t.matches("From joe@heaven.af.mil ").count();
        let whole = t
            .matches("Subject: M\n\n>From the mbox test\nend\n\n")
            .count();
        let mut bad = Vec::new();
        if copies < 3 {
            bad.push(format!("{copies} copies, wants at least 3"));
        }
        if whole != copies {
            bad.push(format!("{copies} From_ lines but {whole} whole messages"));
        }
        bad
    };
    // A delivery after the crash: a stale append marker would cut an earlier message.
    let again = |w: &World| {
        w.inject(
            "joe@heaven.af.mil",
            &["fred"],
            "Subject: M\n\nFrom the mbox test\nend\n",
        )
    };
    crash_every_op(&img, seed, off, "mbox ", &again, &check, &mut rep);
    rep
}

/// bounce-storm: many messages to unknown users at once, half of them from unknown senders
/// (their bounces bounce again, to the postmaster). Every bounce and double bounce arrives
/// exactly once; the queue drains.
pub fn bounce_storm(seed: u64, n: usize) -> Vec<String> {
    let w = World::new(image(&[], &[]), seed);
    for i in 0..n {
        let sender = if i % 2 == 0 {
            "joe@heaven.af.mil".to_string()
        } else {
            format!("ghost{i}@heaven.af.mil")
        };
        w.inject(
            &sender,
            &[&format!("nobody{i}")],
            &format!("Subject: storm {i}\n\nx\n"),
        );
    }
    let run = w.run(7 * DAY);
    let mut bad = Vec::new();
    let joe = w.maildir("home/joe/Maildir");
    let fred = w.maildir("home/fred/Maildir");
    for i in 0..n {
        let (who, box_) = if i % 2 == 0 {
            ("joe", &joe)
        } else {
            ("fred", &fred)
        };
        let c = box_
            .iter()
            .filter(|b| b.contains(&format!("<nobody{i}@heaven.af.mil>:")))
            .count();
        if c != 1 {
            bad.push(format!("bounce of message {i} reached {who} {c} times"));
        }
    }
    let singles = n.div_ceil(2);
    if run.bounces() != n + n / 2 {
        bad.push(format!(
            "{} bounces made, wants {}",
            run.bounces(),
            n + n / 2
        ));
    }
    if joe.len() != singles || fred.len() != n / 2 {
        bad.push(format!("joe has {}, fred has {}", joe.len(), fred.len()));
    }
    bad.extend(undrained(&run));
    bad
}

/// What is wrong with a run that should have emptied the queue and stopped when told to.
fn undrained(run: &Run) -> Vec<String> {
    match (run.exit, run.queued) {
        (Some(0), Some(0)) => Vec::new(),
        (Some(0), Some(n)) => vec![format!("{n} messages still queued after recovery")],
        (Some(0), None) => vec!["the queue cannot be read after the run".into()],
        (code, _) => vec![format!("mta run exited {code:?}: {:?}", run.stderr)],
    }
}
