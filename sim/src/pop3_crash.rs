//! crash-mid-pop3-update: a POP3 session's mailbox work (the move of `new/` to `cur/` when it
//! starts, the deletions at QUIT) is crashed after every filesystem operation. From every
//! persisted state, the next session must find each message it did not delete whole and
//! exactly once, each deleted one either whole or gone (gone for certain once QUIT was
//! answered `+OK`), no unique name listed twice, and must be able to finish the deletions.

use std::collections::BTreeMap;
use std::path::Path;

use mta::env::{Fs, FsFile};
use mta::pop3::mailbox;

use crate::fs::{Clock, Faults, Image, Persist, SimFs};

const MAILDIR: &str = "/home/fred/Maildir";
/// Unique names deleted in the session.
const DELETED: [&str; 3] = ["1000.a.h", "1002.c.h", "1004.e.h"];

/// Five messages: three new (never seen by a reader), two in cur/ already.
fn messages() -> Vec<(&'static str, String)> {
    let body = |n: usize| format!("Subject: {n}\n\n.dotted\n{}\n", "z".repeat(100 * n));
    vec![
        ("new/1000.a.h", body(0)),
        ("new/1001.b.h", body(1)),
        ("cur/1002.c.h:2,S", body(2)),
        ("new/1003.d.h", body(3)),
        ("cur/1004.e.h:2,", body(4)),
    ]
}

fn unique(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.split(':').next().unwrap_or(name)
}

fn clock() -> Clock {
    Clock::new(1_700_000_000_000)
}

fn setup() -> Image {
    let fs = SimFs::new(clock());
    let dir = Path::new(MAILDIR);
    mta::env::mkdir_all(&fs, dir).expect("mkdir");
    for sub in ["new", "cur", "tmp"] {
        fs.mkdir(&dir.join(sub)).expect("mkdir");
    }
    for (p, data) in messages() {
        let mut f = fs.create_new(&dir.join(p)).expect("create");
        f.write_at(0, data.as_bytes()).expect("write");
    }
    fs.crash_image(&Persist::All)
}

/// One session: log in (move and list), delete [`DELETED`], QUIT. True when QUIT would have
/// been answered `+OK` (the update returned success). `ack_early`: a wrong server that
/// answers before the deletions are durable, to show the check notices.
fn session(fs: &SimFs, ack_early: bool) -> bool {
    let dir = Path::new(MAILDIR);
    let Ok(msgs) = mailbox::open(fs, dir) else {
        return false;
    };
    let gone: Vec<String> = msgs
        .iter()
        .filter(|m| DELETED.contains(&m.uid.as_str()))
        .map(|m| m.path.clone())
        .collect();
    if ack_early {
        for p in &gone {
            let _ = fs.unlink(&dir.join(p));
        }
        return true;
    }
    mailbox::update(fs, dir, &gone).is_ok()
}

/// What is on the disk: unique name → (copies, contents of one copy).
fn contents(fs: &SimFs) -> BTreeMap<String, (usize, Vec<u8>)> {
    let dir = Path::new(MAILDIR);
    let mut found: BTreeMap<String, (usize, Vec<u8>)> = BTreeMap::new();
    for sub in ["new", "cur"] {
        for name in fs.list_dir(&dir.join(sub)).unwrap_or_default() {
            let data = fs.read(&dir.join(sub).join(&name)).unwrap_or_default();
            let e = found.entry(unique(&name).to_string()).or_default();
            e.0 += 1;
            e.1 = data;
        }
    }
    found
}

/// The problems a reboot from `img` shows, for a session whose QUIT was `acked`.
fn check(img: Image, acked: bool) -> Vec<String> {
    let fs = SimFs::from_image(img, clock());
    let mut bad = Vec::new();
    let disk = contents(&fs);
    for (path, data) in messages() {
        let u = unique(path);
        let deleted = DELETED.contains(&u);
        match disk.get(u) {
            None if !deleted => bad.push(format!("{u} (not deleted) lost")),
            Some(_) if deleted && acked => bad.push(format!("{u} still there after +OK")),
            Some((_, d)) if d != data.as_bytes() => bad.push(format!("{u} damaged")),
            _ => {}
        }
    }
    match mailbox::open(&fs, Path::new(MAILDIR)) {
        Err(e) => bad.push(format!("the next session cannot open the mailbox: {e}")),
        Ok(msgs) => {
            let mut uids: Vec<&str> = msgs.iter().map(|m| m.uid.as_str()).collect();
            uids.sort_unstable();
            let n = uids.len();
            uids.dedup();
            if uids.len() != n {
                bad.push("a unique name listed twice".into());
            }
        }
    }
    // The next session finishes the job.
    if !session(&fs, false) {
        bad.push("the next session's QUIT fails".into());
    }
    let left: Vec<String> = contents(&fs).into_keys().collect();
    let want: Vec<String> = messages()
        .iter()
        .map(|(p, _)| unique(p).to_string())
        .filter(|u| !DELETED.contains(&u.as_str()))
        .collect();
    if left != want {
        bad.push(format!("after the next session: {left:?}, wants {want:?}"));
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

/// Crash the session after each of its filesystem operations and check every state a
/// reboot can find (every persistence choice of the pending operations).
pub fn enumerate(ack_early: bool) -> Report {
    let img = setup();
    let clean = SimFs::from_image(img.clone(), clock());
    assert!(session(&clean, ack_early), "the crash-free session fails");
    let mut rep = Report {
        crash_points: clean.ops(),
        ..Report::default()
    };
    rep.violations
        .extend(check(clean.crash_image(&Persist::Synced), true));
    for k in 1..=rep.crash_points {
        let fs = SimFs::from_image(img.clone(), clock());
        fs.set_faults(Faults {
            crash_after: Some(k),
            ..Faults::default()
        });
        let acked = session(&fs, ack_early);
        for p in fs.persist_choices() {
            rep.states += 1;
            let problems = check(fs.crash_image(&p), acked);
            if !problems.is_empty() {
                rep.violations.push(format!(
                    "crash_after={k} persist={p}: {}",
                    problems.join("; ")
                ));
            }
        }
    }
    rep
}

/// A failed fsync in UPDATE (Linux may drop the removals it covered while they still look
/// done; the client was told `-ERR`), then a repeated delivery of one of the messages under
/// its same name, then a session that deletes everything and is answered `+OK`: no copy of a
/// deleted message may be left on the disk. The problems found.
pub fn failed_fsync_then_redelivery() -> Vec<String> {
    let fs = SimFs::from_image(setup(), clock());
    let dir = Path::new(MAILDIR);
    let msgs = mailbox::open(&fs, dir).expect("open");
    let gone: Vec<String> = msgs
        .iter()
        .filter(|m| DELETED.contains(&m.uid.as_str()))
        .map(|m| m.path.clone())
        .collect();
    // Each deletion is two operations; the first directory fsync after them fails.
    let sync = fs.ops() + 2 * gone.len() as u64 + 1;
    fs.set_faults(Faults {
        fsync_fail_at: [sync].into_iter().collect(),
        ..Faults::default()
    });
    let mut bad = Vec::new();
    if mailbox::update(&fs, dir, &gone).is_ok() {
        bad.push("the UPDATE with a failed fsync succeeded".into());
    }
    let (name, data) = &messages()[0];
    let again = dir.join(name);
    let mut f = fs.create_new(&again).expect("redeliver");
    f.write_at(0, data.as_bytes()).expect("write");
    f.sync().expect("sync");
    fs.sync_dir(&dir.join("new")).expect("sync new");
    if !session(&fs, false) {
        bad.push("the next session's QUIT fails".into());
    }
    // The first UPDATE's `-ERR` leaves its removals in doubt; the redelivered message was
    // deleted again, and that was answered `+OK`.
    let img = fs.crash_image(&Persist::Synced);
    for (p, _) in img.files() {
        if p.contains(unique(name)) {
            bad.push(format!("{p} is on the disk after QUIT was answered +OK"));
        }
    }
    bad
}
