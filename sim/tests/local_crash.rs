//! Local delivery is exactly once across crashes at every filesystem operation.

use mta::queue::{Disabled, SyncPoint};
use sim::local_crash::enumerate;

#[test]
fn crash_at_every_fs_operation_of_local_delivery_loses_and_duplicates_nothing() {
    let r = enumerate(4, Disabled::none());
    println!("{} crash points, {} states", r.crash_points, r.states);
    assert!(r.crash_points > 20);
    assert!(
        r.violations.is_empty(),
        "{:#?}",
        &r.violations[..r.violations.len().min(8)]
    );
}

#[test]
fn maildir_fsyncs_earn_their_place() {
    for p in [SyncPoint::MaildirFile, SyncPoint::MaildirNew] {
        let r = enumerate(4, Disabled::only(p));
        println!(
            "without {p:?}: {} of {} states violate",
            r.violations.len(),
            r.states
        );
        assert!(!r.violations.is_empty(), "removing {p:?} went unnoticed");
    }
}

#[test]
fn mbox_delivery_is_at_least_once_and_never_partial() {
    let r = sim::local_crash::enumerate_mbox(4, Disabled::none());
    println!("mbox: {} crash points, {} states", r.crash_points, r.states);
    assert!(
        r.violations.is_empty(),
        "{:#?}",
        &r.violations[..r.violations.len().min(8)]
    );
    for p in [
        SyncPoint::MboxFile,
        SyncPoint::MboxMark,
        SyncPoint::MboxMarkGone,
    ] {
        let r = sim::local_crash::enumerate_mbox(4, Disabled::only(p));
        println!(
            "without {p:?}: {} of {} states violate",
            r.violations.len(),
            r.states
        );
        assert!(!r.violations.is_empty(), "removing {p:?} went unnoticed");
    }
}

#[test]
fn a_failed_fsync_at_any_operation_of_local_delivery_loses_and_duplicates_nothing() {
    let r = sim::local_crash::failed_fsyncs(3);
    assert!(r.states > 20, "{} states", r.states);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
}

/// Swarm seed 181238: the first attempt's Maildir copy was durable and its outcome record
/// reached the disk although the log's fsync reported a failure (so the queue retried); the
/// retry's fsync of new/ failed and took the name back, removing the only copy, and after a
/// reboot the recovered record said delivered: lost. A repeat attempt must leave the name.
#[test]
fn a_repeat_whose_fsync_of_new_fails_keeps_the_earlier_copy() {
    use mta::env::{Fs, FsFile};
    use mta::local::{dirsync::DirSyncs, maildir};
    use mta::queue::BodyRef;
    use sim::fs::{Clock, Faults, Persist, SimFs};
    use std::path::Path;

    let fs = SimFs::new(Clock::new(1_000_000));
    let md = Path::new("/Maildir");
    for d in ["", "/tmp", "/new", "/cur"] {
        fs.mkdir(Path::new(&format!("/Maildir{d}"))).unwrap();
    }
    fs.sync_dir(Path::new("/")).unwrap();
    fs.sync_dir(md).unwrap();
    let message = b"Subject: x\n\nbody\n";
    let mut seg = fs.create_new(Path::new("/segment")).unwrap();
    seg.write_at(0, message).unwrap();
    let body = BodyRef {
        path: "/segment".into(),
        offset: 0,
        len: message.len() as u64,
    };
    let deliver = |fs: &SimFs, repeat: bool| {
        let mut b = body.open(fs).unwrap();
        let (head, key): (&[u8], _) = (b"Return-Path: <a@b>\n", md.join("new"));
        let syncs = (&DirSyncs::default(), key.as_path());
        let off = Disabled::none();
        maildir::deliver(fs, (md, "1.M1R0.h"), (head, &mut b), repeat, syncs, off)
    };
    deliver(&fs, false).unwrap();
    // A repeat's last operation is the fsync of new/: make exactly that one fail.
    let probe = SimFs::from_image(fs.live_image(), Clock::new(1_000_000));
    let n = probe.ops();
    deliver(&probe, true).unwrap();
    let n = probe.ops() - n;
    let start = fs.ops();
    fs.set_faults(Faults {
        fsync_fail_at: [start + n].into(),
        ..Faults::default()
    });
    assert!(deliver(&fs, true).is_err(), "the failed fsync is reported");
    assert_eq!(fs.fired().fsync, 1);
    let after = SimFs::from_image(fs.crash_image(&Persist::All), Clock::new(1_000_000));
    let kept = after.read(Path::new("/Maildir/new/1.M1R0.h")).unwrap();
    assert!(kept.ends_with(message), "the earlier durable copy survives");
}
