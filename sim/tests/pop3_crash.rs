//! POP3's mailbox work across crashes at every filesystem operation: nothing undeleted is
//! lost, and what QUIT confirmed deleted stays deleted.

#[test]
fn crash_at_every_fs_operation_of_a_pop3_session_loses_nothing() {
    let r = sim::pop3_crash::enumerate(false);
    println!("{} crash points, {} states", r.crash_points, r.states);
    assert!(r.crash_points >= 8, "{} crash points", r.crash_points);
    assert!(
        r.violations.is_empty(),
        "{:#?}",
        &r.violations[..r.violations.len().min(8)]
    );
}

/// The check has teeth: a server answering QUIT before its deletions are durable is caught.
#[test]
fn answering_quit_before_the_deletions_are_durable_is_caught() {
    let r = sim::pop3_crash::enumerate(true);
    assert!(
        !r.violations.is_empty(),
        "{} states, none violate",
        r.states
    );
}

#[test]
fn a_message_deleted_with_ok_is_gone_after_a_failed_fsync_and_a_repeated_delivery() {
    let bad = sim::pop3_crash::failed_fsync_then_redelivery();
    assert!(bad.is_empty(), "{bad:#?}");
}
