//! Crash points of the streaming path: with a tiny in-memory threshold every message is
//! spooled to tmp/, committed into todo/ and preprocessed into the log by the queue manager.
//! (A test binary of its own: the threshold is process-wide.)

#[test]
fn crash_at_every_fs_operation_of_the_spool_path_loses_no_acknowledged_message() {
    let c = sim::receive::crash_mid_receive(3, 64, 5);
    println!(
        "{} crash points, {} runs, {} kept without acknowledgement",
        c.crash_points, c.runs, c.unacked_kept
    );
    // create, magic, data, envelope, fsync, link, unlink, todo fsync, then preprocessing.
    assert!(
        c.crash_points >= 12 * 3,
        "{} ops: the spool path was not taken",
        c.crash_points
    );
    assert!(c.violations.is_empty(), "{:#?}", c.violations);
}
