//! `mta inject` under a full disk and I/O errors, on the simulated filesystem: a clear
//! temporary failure, and a queue that stays consistent.

use std::path::Path;

use mta::env::{Env, Fs};
use mta::init::{self, InitOptions};
use mta::inject::{self, Invocation, Origin, EXIT_PERM, EXIT_TEMP};
use mta::queue::{Config, Paths, Queue};
use sim::crash::T0_MS;
use sim::env::SimEnv;
use sim::fs::{Clock, Faults, SimFs};
use sim::lifecycle::classifier;

const ROOT: &str = "/mta";

fn installed() -> SimEnv {
    let clock = Clock::new(T0_MS);
    let env = SimEnv::manual(SimFs::new(clock.clone()), clock, 3);
    let o = InitOptions {
        me: "example.org".into(),
        users: vec!["fred".into()],
        force: false,
        uid: 1000,
        gid: 1000,
        owners: Default::default(),
        queue_user: None,
        disabled: Default::default(),
    };
    init::init(&env, Path::new(ROOT), &o).unwrap();
    env
}

fn inv(message: &[u8], rcpts: &[&str]) -> Invocation {
    Invocation {
        sender: Some("joe@example.org".into()),
        extract: false,
        recipients: rcpts.iter().map(|s| s.to_string()).collect(),
        message: message.to_vec(),
        origin: Origin::default(),
        pid: 77,
        uid: 1000,
    }
}

/// Open the queue after clearing faults; return the stored bodies. Checks nothing is
/// half-visible: no debris in todo/ or corrupt/ and every stored message readable.
fn stored(env: &SimEnv) -> Vec<Vec<u8>> {
    env.sim_fs().set_faults(Faults::default());
    let paths = Paths::new(Path::new(ROOT).join("queue"));
    let (mut q, _) = Queue::open(env.clone(), paths.clone(), Config::default(), &classifier())
        .expect("queue opens");
    assert!(env.fs().list_dir(&paths.todo()).unwrap().is_empty());
    assert!(env.fs().list_dir(&paths.corrupt()).unwrap().is_empty());
    let ids: Vec<_> = q.messages().map(|m| m.id()).collect();
    ids.into_iter().map(|id| q.read_data(id).unwrap()).collect()
}

#[test]
fn nul_8bit_and_missing_final_newline_are_stored_byte_exact() {
    let env = installed();
    let body = b"Subject: x\n\n\0\x80\xff bytes\r\n.\nno final newline";
    inject::run(&env, Path::new(ROOT), &inv(body, &["fred"])).unwrap();
    let got = stored(&env);
    assert_eq!(got.len(), 1);
    assert!(got[0].ends_with(b"\n\n\0\x80\xff bytes\r\n.\nno final newline"));
}

#[test]
fn oversized_address_and_no_recipient_exit_100() {
    let env = installed();
    let long = format!("{}@example.org", "a".repeat(1001));
    let f = inject::run(&env, Path::new(ROOT), &inv(b"x", &[long.as_str()])).unwrap_err();
    assert_eq!(f.exit, EXIT_PERM);
    assert!(f.message.contains("address too long"), "{}", f.message);
    let f = inject::run(&env, Path::new(ROOT), &inv(b"x", &[])).unwrap_err();
    assert_eq!(f.exit, EXIT_PERM);
    assert!(f.message.contains("no recipients"));
    assert!(stored(&env).is_empty());
}

#[test]
fn full_disk_exits_111_with_a_clear_message_and_nothing_half_written() {
    let env = installed();
    let used: u64 = 4096;
    env.sim_fs().set_faults(Faults {
        capacity: Some(used),
        ..Faults::default()
    });
    let big = vec![b'x'; 8192];
    let f = inject::run(&env, Path::new(ROOT), &inv(&big, &["fred"])).unwrap_err();
    assert_eq!(f.exit, EXIT_TEMP);
    assert!(f.message.contains("disk full"), "{}", f.message);
    assert!(stored(&env).is_empty());
    // tmp/ holds nothing either: the failed file was removed.
    let tmp = Path::new(ROOT).join("queue/tmp");
    assert!(env.fs().list_dir(&tmp).unwrap().is_empty());
}

#[test]
fn an_io_error_at_any_operation_exits_111_and_leaves_the_queue_consistent() {
    // Count the mutating operations of one injection, then fail each one in turn.
    let env = installed();
    let before = env.sim_fs().ops();
    inject::run(&env, Path::new(ROOT), &inv(b"probe", &["fred"])).unwrap();
    let n = env.sim_fs().ops() - before;
    assert!(n >= 4, "write, fsync, rename, directory fsync at least");
    let mut failures = 0;
    for k in 1..=n {
        let env = installed();
        let at = env.sim_fs().ops() + k;
        env.sim_fs().set_faults(Faults {
            eio_at: Some(at),
            ..Faults::default()
        });
        let body = format!("message {k}\n");
        let r = inject::run(&env, Path::new(ROOT), &inv(body.as_bytes(), &["fred"]));
        let stored_now = stored(&env);
        match r {
            // Only the cleanup of tmp/ after the commit may fail without failing the injection.
            Ok(_) => assert_eq!(stored_now.len(), 1, "op {k}: success means stored"),
            Err(f) => {
                assert_eq!(f.exit, EXIT_TEMP, "op {k}: {}", f.message);
                assert!(f.message.contains("qq"), "op {k}: {}", f.message);
                failures += 1;
            }
        }
        // Absent, or (if the failure came after the rename) present and intact.
        for got in stored_now {
            assert!(got.ends_with(body.as_bytes()), "op {k}: corrupted message");
        }
    }
    assert!(
        failures >= n - 1,
        "every operation up to the commit fails the injection"
    );
}
