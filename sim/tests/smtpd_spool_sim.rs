//! Crash points of the streaming path: with a tiny in-memory threshold every message is
//! spooled to tmp/, committed into todo/ and preprocessed into the log by the queue service.
//! (A test binary of its own: the threshold is process-wide.)

use std::sync::atomic::Ordering;

use sim::fs::Persist;
use sim::receive::{self, SPOOL_THRESHOLD};

#[test]
fn crash_at_every_fs_operation_of_the_spool_path_loses_no_acknowledged_message() {
    SPOOL_THRESHOLD.store(64, Ordering::Relaxed);
    const N: usize = 3;
    let clean = receive::run(N, None, Persist::Synced, 5);
    assert_eq!(clean.acked.len(), N);
    assert_eq!(clean.stored, clean.acked);
    // create, magic, data, envelope, fsync, link, unlink, todo fsync, then preprocessing.
    assert!(
        clean.ops >= 12 * N as u64,
        "{} ops: the spool path was not taken",
        clean.ops
    );
    let mut runs = 0;
    for k in 1..=clean.ops {
        for p in [
            Persist::Synced,
            Persist::All,
            Persist::AllBut(0),
            Persist::TornLastWrite,
        ] {
            let o = receive::run(N, Some(k), p.clone(), k);
            assert_eq!(o.acked.len(), N, "crash {k} {p:?}");
            assert_eq!(
                o.corrupt, 0,
                "crash {k} {p:?}: corrupted or invented message"
            );
            for i in &o.acked {
                assert!(
                    o.stored.contains(i),
                    "crash {k} {p:?}: acknowledged message {i} lost"
                );
            }
            runs += 1;
        }
    }
    println!("{} crash points, {runs} crash runs", clean.ops);
}
