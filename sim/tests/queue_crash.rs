//! The queue's crash safety, proven by enumerating every crash state.

use mta::env::real::RealEnv;
use mta::queue::Config;
use sim::campaign::{by_name, fsync_audit};
use sim::crash::{queue_lifecycle, small_segments};
use sim::lifecycle;

#[test]
fn every_crash_state_of_injection_and_preprocessing_is_safe() {
    for (name, cfg) in [
        ("small segments", small_segments()),
        ("default", Config::default()),
    ] {
        let r = queue_lifecycle(&cfg, 7);
        println!(
            "{name}: {} crash points ({} after the first acknowledgement), {} crash states checked",
            r.crash_points, r.points_after_first_ack, r.states
        );
        assert!(
            r.violations.is_empty(),
            "{name}: {:#?}",
            &r.violations[..r.violations.len().min(5)]
        );
        assert!(r.crash_points > 40 && r.states > 4 * r.crash_points as usize / 2);
    }
}

#[test]
fn every_fsync_earns_its_place() {
    for (p, caught, states) in fsync_audit(7) {
        println!("without {p:?}: {caught} of {states} crash states violate the oracle");
        assert!(caught > 0, "removing the {p:?} fsync went unnoticed");
    }
}

#[test]
fn crashing_recovery_itself_is_safe() {
    let r = by_name("queue-lifecycle", 11, true).unwrap();
    println!(
        "{} states, {} more inside crashed recoveries",
        r.states, r.nested_states
    );
    assert!(
        r.nested_states > r.states,
        "recovery was crashed at its own operations"
    );
    assert!(
        r.violations.is_empty(),
        "{:#?}",
        &r.violations[..r.violations.len().min(5)]
    );
}

#[test]
fn every_crash_state_of_mta_init_is_safe() {
    let r = by_name("install", 3, false).unwrap();
    println!(
        "install: {} crash points, {} states",
        r.crash_points, r.states
    );
    assert!(r.crash_points > 20);
    assert!(
        r.violations.is_empty(),
        "{:#?}",
        &r.violations[..r.violations.len().min(5)]
    );
}

#[test]
fn same_seed_same_trace_hash() {
    let a = queue_lifecycle(&small_segments(), 42);
    let b = queue_lifecycle(&small_segments(), 42);
    let c = queue_lifecycle(&small_segments(), 43);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.states, b.states);
    assert_ne!(
        a.trace_hash, c.trace_hash,
        "the seed must reach the trace (message ids)"
    );
}

#[test]
fn real_backend_runs_the_same_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let env = RealEnv::new();
    let l = lifecycle::run(&env, dir.path(), &small_segments());
    assert!(l.finished);
    assert_eq!(l.acked.len(), 9);
    // The lifecycle really compacts: without it the long-lived message would pin its
    // segment and every one after it.
    let segs = l.segments_after_churn.unwrap();
    assert!(segs <= 2, "{segs} segments after the churn");
    let problems = lifecycle::check(&env, dir.path(), &l);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn latent_corruption_of_any_sector_drops_only_what_it_hit() {
    let r = sim::corruption::enumerate(60, 5);
    assert!(r.states > 30, "{} states", r.states);
    assert!(r.kept > r.lost_in_damage, "{r:?}");
    assert!(r.violations.is_empty(), "{:?}", r.violations);
}
