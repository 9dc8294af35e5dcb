//! Every queue transition, on the real filesystem.

use std::fs;
use std::time::{Duration, SystemTime};

use super::*;
use crate::control::Rewrite;
use crate::env::real::RealEnv;

struct T {
    _dir: tempfile::TempDir,
    env: RealEnv,
    paths: Paths,
}

fn setup() -> T {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path().join("queue"));
    let env = RealEnv::new();
    create_layout(&env, &paths, &Config::default()).unwrap();
    T {
        _dir: dir,
        env,
        paths,
    }
}

fn rw() -> Rewrite {
    Rewrite {
        envnoathost: "example.org".into(),
        locals: vec!["example.org".into()],
        ..Rewrite::default()
    }
}

fn msg(body: &str, rcpts: &[&str]) -> NewMessage {
    NewMessage {
        sender: "joe@example.org".into(),
        recipients: rcpts.iter().map(|s| s.to_string()).collect(),
        data: body.as_bytes().to_vec(),
        qp: 1,
        uid: 2,
    }
}

fn names(p: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn open(t: &T) -> (Queue<RealEnv>, Recovery) {
    Queue::open(t.env.clone(), t.paths.clone(), Config::default(), &rw()).unwrap()
}

#[test]
fn inject_commits_into_todo_and_leaves_no_tmp() {
    let t = setup();
    let ids = inject(
        &t.env,
        &t.paths,
        &Config::default(),
        &[msg("a", &["x"]), msg("b", &["y"])],
    )
    .unwrap();
    assert_eq!(ids.len(), 2);
    let mut want: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    want.sort();
    assert_eq!(names(&t.paths.todo()), want);
    assert!(names(&t.paths.tmp()).is_empty());
}

#[test]
fn invalid_envelopes_are_refused_before_writing() {
    let t = setup();
    let cfg = Config::default();
    let long = format!("{}@x.org", "a".repeat(MAX_ADDR));
    let e = inject(&t.env, &t.paths, &cfg, &[msg("a", &[long.as_str()])]).unwrap_err();
    assert!(matches!(e, QueueError::AddressTooLong(_)) && e.is_permanent());
    let e = inject(&t.env, &t.paths, &cfg, &[msg("a", &[])]).unwrap_err();
    assert!(matches!(e, QueueError::NoRecipients) && e.is_permanent());
    let e = inject(&t.env, &t.paths, &cfg, &[msg("a", &["a\nb@c"])]).unwrap_err();
    assert!(matches!(e, QueueError::BadAddress));
    assert!(names(&t.paths.todo()).is_empty() && names(&t.paths.tmp()).is_empty());
}

#[test]
fn open_preprocesses_todo_into_the_log_with_classification() {
    let t = setup();
    let ids = inject(
        &t.env,
        &t.paths,
        &Config::default(),
        &[msg("hello\0\u{ff}", &["fred", "bill@irs.gov"])],
    )
    .unwrap();
    let (mut q, rec) = open(&t);
    assert_eq!(rec.preprocessed, 1);
    assert!(names(&t.paths.todo()).is_empty());
    let m = q.get(ids[0]).unwrap().clone();
    assert_eq!(m.rcpts[0].rcpt.addr, "fred@example.org");
    assert_eq!(m.rcpts[0].rcpt.channel, Channel::Local);
    assert_eq!(m.rcpts[1].rcpt.channel, Channel::Remote);
    assert!(m.rcpts.iter().all(|r| r.status == Status::Pending));
    assert_eq!(q.read_data(ids[0]).unwrap(), "hello\0\u{ff}".as_bytes());
    assert_eq!(m.env.birth, ids[0].secs);
}

#[test]
fn preprocessing_is_idempotent() {
    let t = setup();
    let cfg = Config::default();
    let ids = inject(&t.env, &t.paths, &cfg, &[msg("m", &["a"])]).unwrap();
    let todo_file = t.paths.todo().join(ids[0].to_string());
    let saved = fs::read(&todo_file).unwrap();
    let (mut q, _) = open(&t);
    // As after a crash that lost the removal: the entry is back.
    fs::write(&todo_file, &saved).unwrap();
    assert_eq!(q.preprocess(&rw()).unwrap(), (0, 0));
    assert!(names(&t.paths.todo()).is_empty());
    assert_eq!(q.messages().count(), 1);
}

#[test]
fn submit_record_retire_and_reopen() {
    let t = setup();
    let (mut q, _) = open(&t);
    let ids = q
        .submit(vec![msg("a", &["x", "y@r.net"]), msg("b", &["z"])], &rw())
        .unwrap();
    q.record(&[
        (ids[0], 0, Status::Delivered),
        (ids[0], 1, Status::Failed("550 no".into())),
    ])
    .unwrap();
    assert!(q.get(ids[0]).unwrap().is_done());
    assert!(!q.get(ids[1]).unwrap().is_done());
    q.retire(&[ids[0]]).unwrap();
    assert!(q.get(ids[0]).is_none());
    drop(q);
    let (mut q, rec) = open(&t);
    assert_eq!(rec.messages, 1);
    assert_eq!(q.read_data(ids[1]).unwrap(), b"b");
    q.record(&[(ids[1], 0, Status::Failed("x".into()))])
        .unwrap();
    drop(q);
    let (q, _) = open(&t);
    assert_eq!(
        q.get(ids[1]).unwrap().rcpts[0].status,
        Status::Failed("x".into())
    );
}

#[test]
fn outcomes_for_unknown_messages_or_recipients_are_refused() {
    let t = setup();
    let (mut q, _) = open(&t);
    let ids = q.submit(vec![msg("a", &["x"])], &rw()).unwrap();
    let ghost = MsgId { secs: 1, rand: 2 };
    assert!(matches!(
        q.record(&[(ghost, 0, Status::Delivered)]),
        Err(QueueError::UnknownMessage(_))
    ));
    assert!(q.record(&[(ids[0], 5, Status::Delivered)]).is_err());
    assert!(matches!(
        q.retire(&[ghost]),
        Err(QueueError::UnknownMessage(_))
    ));
}

#[test]
fn only_one_queue_manager() {
    let t = setup();
    let (_q, _) = open(&t);
    let e = Queue::open(t.env.clone(), t.paths.clone(), Config::default(), &rw());
    assert!(matches!(e, Err(QueueError::Locked)));
}

#[test]
fn recovery_cuts_a_torn_tail() {
    let t = setup();
    let (mut q, _) = open(&t);
    let ids = q.submit(vec![msg("keep", &["x"])], &rw()).unwrap();
    drop(q);
    let seg = t.paths.log().join(names(&t.paths.log())[0].clone());
    let good = fs::metadata(&seg).unwrap().len();
    let mut f = fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, &[7u8; 13]).unwrap();
    drop(f);
    let (mut q, rec) = open(&t);
    assert_eq!(rec.torn_bytes_cut, 13);
    assert_eq!(fs::metadata(&seg).unwrap().len(), good);
    assert_eq!(q.read_data(ids[0]).unwrap(), b"keep");
    q.submit(vec![msg("after", &["x"])], &rw()).unwrap();
    drop(q);
    assert_eq!(open(&t).1.messages, 2);
}

#[test]
fn tmp_files_of_dead_writers_are_removed_those_of_live_ones_kept() {
    let t = setup();
    let old = t.paths.tmp().join("old");
    let dead = t.paths.tmp().join("dead");
    let live = t.paths.tmp().join("live");
    for p in [&old, &dead, &live] {
        fs::write(p, b"x").unwrap();
    }
    let f = fs::File::options().write(true).open(&old).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(TMP_MAX_AGE_SECS + 60))
        .unwrap();
    // A writer that is still running holds its file locked (another open file, as another
    // process would).
    let held = fs::File::options().write(true).open(&live).unwrap();
    held.try_lock().unwrap();
    let (_q, rec) = open(&t);
    assert_eq!(rec.tmp_removed, 2, "old and dead, whatever their age");
    assert_eq!(names(&t.paths.tmp()), vec!["live"]);
}

#[test]
fn a_spool_being_written_survives_a_recovery() {
    let t = setup();
    let env = crate::env::real::RealEnv::new();
    let mut sp = spool::Spool::create(&env, &t.paths, &Config::default()).unwrap();
    sp.write(b"Subject: still coming\n\n").unwrap();
    let (q, rec) = open(&t);
    assert_eq!(rec.tmp_removed, 0);
    drop(q);
    sp.write(b"body\n").unwrap();
    let id = sp.finish("a@b", &["c@d".to_string()], 1, 0).unwrap();
    let (q, _) = open(&t);
    assert!(q.contains(id), "the injection went through");
}

#[test]
fn corrupt_todo_files_are_set_aside_not_deleted() {
    let t = setup();
    fs::write(t.paths.todo().join("1.0000000000000001"), b"garbage").unwrap();
    let (q, rec) = open(&t);
    assert_eq!(rec.corrupt_todo, 1);
    assert_eq!(q.messages().count(), 0);
    assert_eq!(names(&t.paths.corrupt()), vec!["1.0000000000000001"]);
}

#[test]
fn an_unreadable_todo_entry_holds_up_neither_recovery_nor_the_others() {
    let t = setup();
    // Sorts first, and cannot be read (a directory): it stays for the next pass.
    fs::create_dir(t.paths.todo().join("0.stray")).unwrap();
    inject(
        &t.env,
        &t.paths,
        &Config::default(),
        &[msg("after it", &["fred"])],
    )
    .unwrap();
    let (q, rec) = open(&t);
    assert_eq!(rec.preprocessed, 1, "the injection behind it went through");
    assert_eq!(q.messages().count(), 1);
    assert_eq!(names(&t.paths.todo()), vec!["0.stray"]);
}

#[test]
fn segments_roll_and_are_collected_when_dead() {
    let t = setup();
    let cfg = Config {
        segment_size: 300,
        ..Config::default()
    };
    let (mut q, _) = Queue::open(t.env.clone(), t.paths.clone(), cfg, &rw()).unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.extend(
            q.submit(vec![msg(&format!("{i:0>150}"), &["x"])], &rw())
                .unwrap(),
        );
    }
    assert!(q.log_stats().segments >= 3);
    // The oldest message no longer pins its segment and everything after it: compaction
    // moves it to the head.
    q.retire(&ids[1..]).unwrap();
    assert!(q.log_stats().segments <= 2, "{:?}", q.log_stats());
    assert_eq!(
        q.read_data(ids[0]).unwrap(),
        format!("{:0>150}", 0).as_bytes()
    );
    q.retire(&ids[..1]).unwrap();
    assert_eq!(q.log_stats().segments, 1);
    assert_eq!(names(&t.paths.log()).len(), 1);
    drop(q);
    let (q, rec) = Queue::open(t.env.clone(), t.paths.clone(), cfg, &rw()).unwrap();
    assert_eq!(rec.messages, 0);
    assert_eq!(q.messages().count(), 0);
}

#[test]
fn view_reads_while_the_manager_holds_the_lock() {
    let t = setup();
    let cfg = Config::default();
    let (mut q, _) = open(&t);
    q.submit(vec![msg("a", &["x"])], &rw()).unwrap();
    inject(&t.env, &t.paths, &cfg, &[msg("b", &["y"])]).unwrap();
    let v = View::load(&t.env, &t.paths).unwrap();
    assert_eq!(v.messages.len(), 1);
    assert_eq!(v.todo.len(), 1);
}

/// The one log segment's path.
fn segment(t: &T) -> std::path::PathBuf {
    let log = t.paths.log();
    log.join(&names(&log)[0])
}

fn three_separate_appends(t: &T) -> Vec<MsgId> {
    let (mut q, _) = open(t);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.extend(
            q.submit(vec![msg(&format!("message {i}\n"), &["fred"])], &rw())
                .unwrap(),
        );
    }
    ids
}

#[test]
fn damage_in_the_middle_keeps_every_record_after_it_and_sets_the_segment_aside() {
    let t = setup();
    let ids = three_separate_appends(&t);
    let seg = segment(&t);
    let mut bytes = fs::read(&seg).unwrap();
    let at = bytes.windows(9).position(|w| w == b"message 1").unwrap();
    bytes[at] ^= 0x20; // a bit flip inside the second record
    fs::write(&seg, &bytes).unwrap();
    let (q, rec) = open(&t);
    assert!(rec.damaged_bytes > 0, "{rec:?}");
    assert_eq!(
        rec.torn_bytes_cut, 0,
        "damage in the middle is not a torn tail"
    );
    assert!(
        q.contains(ids[0]) && q.contains(ids[2]),
        "records after the damage are kept"
    );
    assert!(!q.contains(ids[1]));
    assert_eq!(fs::read(&seg).unwrap().len(), bytes.len(), "nothing cut");
    let aside = names(&t.paths.corrupt());
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(fs::read(t.paths.corrupt().join(&aside[0])).unwrap(), bytes);
}

#[test]
fn a_torn_last_record_is_cut_and_nothing_set_aside() {
    let t = setup();
    let ids = three_separate_appends(&t);
    let seg = segment(&t);
    let bytes = fs::read(&seg).unwrap();
    fs::write(&seg, &bytes[..bytes.len() - 5]).unwrap();
    let (q, rec) = open(&t);
    assert!(rec.torn_bytes_cut > 0 && rec.damaged_bytes == 0, "{rec:?}");
    assert!(q.contains(ids[0]) && q.contains(ids[1]) && !q.contains(ids[2]));
    assert!(names(&t.paths.corrupt()).is_empty());
}

#[test]
fn a_damaged_group_is_never_applied_in_part() {
    let t = setup();
    let (mut q, _) = open(&t);
    let a = q.submit(vec![msg("first\n", &["fred"])], &rw()).unwrap()[0];
    let before = fs::read(segment(&t)).unwrap().len();
    let b = q.new_id();
    let bounce = q.message_record(b, 1, msg("bounce\n", &["joe"]), &rw());
    q.commit(vec![Record::Group(vec![bounce, Record::Retire { id: a }])])
        .unwrap();
    q.submit(vec![msg("after\n", &["fred"])], &rw()).unwrap();
    drop(q);
    let seg = segment(&t);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[before..before + 9].fill(0); // the group's header and kind byte
    fs::write(&seg, &bytes).unwrap();
    let (q, rec) = open(&t);
    assert!(rec.damaged_bytes > 0);
    assert!(
        q.contains(a),
        "the retirement inside the damaged group is not applied"
    );
    assert!(!q.contains(b), "nor the bounce");
    assert_eq!(
        q.messages().count(),
        2,
        "the record after the group is kept"
    );
}

/// A message whose bytes are "padding\n" then these records, encoded as a sender could: with
/// checksums under a key of its choosing (here the unkeyed one), not the segment's secret key.
fn forging(recs: &[Record]) -> NewMessage {
    let mut data = b"padding\n".to_vec();
    recs.iter().for_each(|r| r.encode(&mut data, 0));
    NewMessage {
        data,
        ..msg("", &["fred"])
    }
}

/// Flip a bit at "padding" in the one segment: damage before the forged records.
fn damage_padding(t: &T) {
    let seg = segment(t);
    let mut bytes = fs::read(&seg).unwrap();
    let at = bytes.windows(8).position(|w| w == b"padding\n").unwrap();
    bytes[at] ^= 1;
    fs::write(&seg, &bytes).unwrap();
}

#[test]
fn bytes_shaped_like_a_record_inside_a_damaged_message_are_never_applied() {
    let t = setup();
    let (mut q, _) = open(&t);
    let a = q.submit(vec![msg("victim\n", &["fred"])], &rw()).unwrap()[0];
    q.submit(vec![forging(&[Record::Retire { id: a }])], &rw())
        .unwrap();
    q.submit(vec![msg("after\n", &["fred"])], &rw()).unwrap();
    drop(q);
    damage_padding(&t); // the message's own bytes: a record follows, so damage in the middle
    let (q, rec) = open(&t);
    assert!(rec.damaged_bytes > 0);
    assert!(
        q.contains(a),
        "a record forged inside message data is not applied"
    );
    assert_eq!(
        q.messages().count(),
        2,
        "the victim and the message after the damage"
    );
}

#[test]
fn a_torn_message_holding_bytes_shaped_like_records_is_cut_whole() {
    let t = setup();
    let (mut q, _) = open(&t);
    let a = q.submit(vec![msg("victim\n", &["fred"])], &rw()).unwrap()[0];
    let wipe = Record::Checkpoint {
        low_water: u64::MAX,
    };
    q.submit(vec![forging(&[Record::Retire { id: a }, wipe])], &rw())
        .unwrap();
    drop(q);
    let before = names(&t.paths.log());
    damage_padding(&t); // the last record: a torn tail, as a crash leaves it
    let (q, rec) = open(&t);
    assert!(rec.torn_bytes_cut > 0 && rec.damaged_bytes == 0, "{rec:?}");
    assert!(
        q.contains(a),
        "nothing forged inside the torn message is applied"
    );
    assert_eq!(q.messages().count(), 1);
    assert!(
        names(&t.paths.log()).starts_with(&before),
        "no segment dropped by a forged checkpoint"
    );
}

/// Found by the `log_recovery` fuzz target: latent damage in a message whose data holds
/// bytes shaped like records, then a torn tail right after it (a crash during the next
/// append). The damaged record's length leads to a record that is not whole, so recovery
/// searches byte by byte from inside the damaged message: the forged records there must
/// fail their checksums (they are not keyed with the segment's key).
#[test]
fn a_record_forged_inside_a_damaged_message_before_a_torn_tail_is_never_applied() {
    let t = setup();
    let (mut q, _) = open(&t);
    let a = q.submit(vec![msg("victim\n", &["fred"])], &rw()).unwrap()[0];
    q.submit(vec![forging(&[Record::Retire { id: a }])], &rw())
        .unwrap();
    q.submit(vec![msg("torn\n", &["fred"])], &rw()).unwrap();
    drop(q);
    damage_padding(&t);
    // Tear the last record: its last byte never reached the disk.
    let seg = segment(&t);
    let bytes = fs::read(&seg).unwrap();
    fs::write(&seg, &bytes[..bytes.len() - 1]).unwrap();
    let (q, _) = open(&t);
    assert!(
        q.contains(a),
        "a record forged inside message data was applied"
    );
}

#[test]
fn segments_carry_their_key_in_their_name_and_unkeyed_old_segments_still_recover() {
    let t = setup();
    let (mut q, _) = open(&t);
    let a = q.submit(vec![msg("old\n", &["fred"])], &rw()).unwrap()[0];
    drop(q);
    let name = names(&t.paths.log()).remove(0);
    let seg = Seg::parse(&name).expect("a segment name");
    assert!(seg.key != 0 && name.len() == 25, "{name}");
    // Rewrite it as a queue from before keys would have: 16 digits, unkeyed checksums.
    let bytes = fs::read(t.paths.log().join(&name)).unwrap();
    let mut legacy = Vec::new();
    log::scan(&bytes, seg.key, |r, _| {
        r.encode(&mut legacy, 0);
        Ok(())
    })
    .unwrap();
    fs::remove_file(t.paths.log().join(&name)).unwrap();
    fs::write(t.paths.log().join(format!("{:016x}", seg.n)), legacy).unwrap();
    let (mut q, rec) = open(&t);
    assert!(q.contains(a) && rec.damaged_bytes == 0 && rec.torn_bytes_cut == 0);
    assert_eq!(q.read_data(a).unwrap(), b"old\n");
    let b = q.submit(vec![msg("new\n", &["fred"])], &rw()).unwrap()[0];
    drop(q);
    let (mut q, _) = open(&t);
    assert_eq!(q.read_data(b).unwrap(), b"new\n");
}

/// Disk use follows live data, not history: one long-lived message with a delivered and a
/// pending recipient stays while a thousand others come and go; the log stays within twice
/// the live bytes plus two segments, and the message keeps its bytes, its outcomes and its
/// last pass across compactions and a reopen.
#[test]
fn compaction_bounds_the_log_by_live_data_and_keeps_every_state() {
    let t = setup();
    let cfg = Config {
        segment_size: 4096,
        ..Config::default()
    };
    let (mut q, _) = Queue::open(t.env.clone(), t.paths.clone(), cfg, &rw()).unwrap();
    let body = "long-lived\n".repeat(20);
    let old = q.submit(vec![msg(&body, &["x", "y"])], &rw()).unwrap()[0];
    q.record(&[(old, 0, Status::Delivered)]).unwrap();
    q.commit(vec![Record::Tried {
        id: old,
        channel: Channel::Local,
        at: 77,
    }])
    .unwrap();
    for i in 0..1000 {
        let id = q
            .submit(vec![msg(&format!("{i:0>300}"), &["z"])], &rw())
            .unwrap()[0];
        q.record(&[(id, 0, Status::Delivered)]).unwrap();
        q.retire(&[id]).unwrap();
        let on_disk: u64 = names(&t.paths.log())
            .iter()
            .map(|n| fs::metadata(t.paths.log().join(n)).unwrap().len())
            .sum();
        assert!(
            on_disk <= 2 * body.len() as u64 + 3 * 4096,
            "{on_disk} bytes at {i}"
        );
    }
    drop(q);
    let (mut q, _) = Queue::open(t.env.clone(), t.paths.clone(), cfg, &rw()).unwrap();
    assert_eq!(q.messages().count(), 1);
    let m = q.get(old).unwrap().clone();
    assert_eq!(m.rcpts[0].status, Status::Delivered);
    assert_eq!(m.rcpts[1].status, Status::Pending);
    assert_eq!(m.tried[0], 77);
    assert_eq!(q.read_data(old).unwrap(), body.as_bytes());
}

/// A crash after a checkpoint but before its segments' unlinks persisted leaves dead segments
/// behind: recovery replays them once, sees the checkpoint, starts over without them, and
/// finishes their removal. Nothing they held comes back.
#[test]
fn dead_segments_left_by_a_crash_are_forgotten_and_removed() {
    let t = setup();
    let cfg = Config {
        segment_size: 300,
        ..Config::default()
    };
    let (mut q, _) = Queue::open(t.env.clone(), t.paths.clone(), cfg, &rw()).unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        let m = msg(&format!("{i:0>150}"), &["x"]);
        ids.extend(q.submit(vec![m], &rw()).unwrap());
    }
    let before: Vec<(String, Vec<u8>)> = names(&t.paths.log())
        .into_iter()
        .map(|n| (n.clone(), fs::read(t.paths.log().join(&n)).unwrap()))
        .collect();
    q.retire(&ids).unwrap();
    drop(q);
    assert!(names(&t.paths.log()).len() < before.len());
    // The unlinks "did not persist": every old segment is back.
    for (n, bytes) in &before {
        fs::write(t.paths.log().join(n), bytes).unwrap();
    }
    let (q, rec) = Queue::open(t.env.clone(), t.paths.clone(), cfg, &rw()).unwrap();
    assert_eq!((rec.messages, q.messages().count()), (0, 0));
    let now = names(&t.paths.log());
    assert_eq!(
        now.len(),
        2,
        "the dead segments are removed: the last head and the new one are left"
    );
    assert!(before.iter().all(|(n, _)| !now.contains(n)), "{now:?}");
}

/// A delivery is handed where its message is and opens it later (a remote delivery only
/// after connecting): compaction must not move a message with a delivery running and unlink
/// the segment under it. Held, the message stays put and its segment with it; once released,
/// the next retirement moves it and frees the segment.
#[test]
fn compaction_leaves_messages_with_running_deliveries_in_place() {
    let t = setup();
    let cfg = Config {
        segment_size: 1024,
        ..Config::default()
    };
    let (mut q, _) = Queue::open(t.env.clone(), t.paths.clone(), cfg, &rw()).unwrap();
    let body = "in delivery\n".repeat(10);
    let held = q.submit(vec![msg(&body, &["x"])], &rw()).unwrap()[0];
    let given = q.body(held).unwrap();
    let churn = |q: &mut Queue<RealEnv>, busy: &dyn Fn(MsgId) -> bool| {
        for i in 0..50 {
            let id = q
                .submit(vec![msg(&format!("{i:0>300}"), &["z"])], &rw())
                .unwrap()[0];
            q.record(&[(id, 0, Status::Delivered)]).unwrap();
            q.retire_around(&[id], busy).unwrap();
        }
    };
    churn(&mut q, &|id| id == held);
    let mut b = given
        .open(t.env.fs())
        .expect("the segment it was given is still there");
    assert_eq!(b.read_all().unwrap(), body.as_bytes());
    assert_eq!(q.body(held).unwrap(), given, "not moved while held");
    churn(&mut q, &|_| false);
    assert_ne!(q.body(held).unwrap(), given, "moved once released");
    assert!(given.open(t.env.fs()).is_err(), "and its old segment freed");
    assert_eq!(q.read_data(held).unwrap(), body.as_bytes());
}

/// A forward is queued with the outcome that made it in one append, its bytes copied from
/// the original in the log (in pieces: the message is larger than one); after a reopen both
/// are as written.
#[test]
fn a_forward_copies_its_message_from_the_log_with_its_outcome() {
    let t = setup();
    let cfg = Config::default();
    let (mut q, _) = open(&t);
    let body = "forward me\n".repeat(20_000);
    let orig = q.submit(vec![msg(&body, &["fred"])], &rw()).unwrap()[0];
    let fid = MsgId { secs: 9, rand: 9 };
    let forward = |q: &Queue<RealEnv>| {
        let m = NewMessage {
            data: Vec::new(),
            ..msg("", &["bill@elsewhere.example"])
        };
        let Record::Msg { env, rcpts, .. } = q.message_record(fid, 9, m, &rw()) else {
            unreachable!()
        };
        let body = q.body(orig).unwrap();
        Forward {
            env,
            rcpts,
            prefix: b"Delivered-To: fred@example.org\n".to_vec(),
            body_crc: Forward::checksum(t.env.fs(), &body).unwrap(),
            body,
            outcome: Record::Outcome {
                id: orig,
                rcpt: 0,
                status: Status::Delivered,
            },
        }
    };
    let fw = forward(&q);
    q.commit_forwards(vec![], vec![fw]).unwrap();
    let want = format!("Delivered-To: fred@example.org\n{body}");
    for reopen in [false, true] {
        if reopen {
            drop(q);
            q = Queue::open(t.env.clone(), t.paths.clone(), cfg, &rw())
                .unwrap()
                .0;
        }
        assert_eq!(q.read_data(fid).unwrap(), want.as_bytes());
        assert_eq!(q.get(orig).unwrap().rcpts[0].status, Status::Delivered);
        assert_eq!(
            q.get(fid).unwrap().rcpts[0].rcpt.addr,
            "bill@elsewhere.example"
        );
    }
    // An original that cannot be read fails the append whole: neither part is applied.
    let mut fw = forward(&q);
    fw.env.id = MsgId { secs: 9, rand: 10 };
    fw.body.path = t.paths.log().join("gone");
    assert!(q.commit_forwards(vec![], vec![fw]).is_err());
    assert!(!q.contains(MsgId { secs: 9, rand: 10 }));
    drop(q);
    let (q, rec) = Queue::open(t.env.clone(), t.paths.clone(), cfg, &rw()).unwrap();
    assert_eq!((rec.messages, rec.torn_bytes_cut), (2, 0));
    assert!(!q.contains(MsgId { secs: 9, rand: 10 }));
}
