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
