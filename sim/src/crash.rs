//! Exhaustive crash-point enumeration: stop the host after every mutating filesystem operation
//! of a scenario, and for each stop every legal persisted state; recover and run the oracle.

use std::path::Path;
use std::time::Duration;

use mta::queue::Config;

use crate::env::SimEnv;
use crate::fs::{Clock, Faults, Persist, SimFs};
use crate::lifecycle;

/// Simulated start time: 2026-01-01T00:00:00Z.
pub const T0_MS: u64 = 1_767_225_600_000;

#[derive(Debug, Clone)]
pub struct Violation {
    pub crash_after: u64,
    pub persist: Persist,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Mutating operations in a crash-free run: the crash points.
    pub crash_points: u64,
    /// Crash states checked (crash point × persistence choice), plus the crash-free run.
    pub states: usize,
    /// Crash points at which the scenario had acknowledged at least one injection.
    pub points_after_first_ack: u64,
    pub violations: Vec<Violation>,
    pub trace_hash: u64,
}

fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x0100_0000_01b3).rotate_left(17)
}

/// Enumerate every crash state of the queue lifecycle with queue config `cfg`.
pub fn queue_lifecycle(cfg: &Config, seed: u64) -> Report {
    let base = Path::new("/");
    let mut rep = Report::default();
    let fresh = |faults: Faults| {
        let clock = Clock::new(T0_MS);
        let fs = SimFs::new(clock.clone());
        fs.set_faults(faults);
        SimEnv::manual(fs, clock, seed)
    };
    // The crash-free run: counts the crash points and must itself pass.
    let env = fresh(Faults::default());
    let l = lifecycle::run(&env, base, cfg);
    rep.crash_points = env.sim_fs().ops();
    rep.trace_hash = env.sim_fs().trace_hash();
    assert!(l.finished, "the scenario must finish without faults");
    let problems = lifecycle::check(&env, base, &l);
    rep.states += 1;
    if !problems.is_empty() {
        rep.violations.push(Violation {
            crash_after: 0,
            persist: Persist::All,
            problems,
        });
    }
    for n in 1..=rep.crash_points {
        let env = fresh(Faults {
            crash_after: Some(n),
            ..Faults::default()
        });
        let l = lifecycle::run(&env, base, cfg);
        if !l.acked.is_empty() {
            rep.points_after_first_ack += 1;
        }
        let fs = env.sim_fs();
        rep.trace_hash = mix(rep.trace_hash, fs.trace_hash());
        for p in fs.persist_choices() {
            // Reboot long after the crash, so stale tmp/ files count as debris.
            let clock = Clock::new(env.clock().now_ms());
            clock.advance(Duration::from_secs(mta::queue::TMP_MAX_AGE_SECS + 1));
            let disk = SimFs::from_image(fs.crash_image(&p), clock.clone());
            let env2 = SimEnv::manual(disk, clock, seed ^ n);
            let problems = lifecycle::check(&env2, base, &l);
            rep.states += 1;
            rep.trace_hash = mix(rep.trace_hash, env2.sim_fs().trace_hash());
            if !problems.is_empty() {
                rep.violations.push(Violation {
                    crash_after: n,
                    persist: p,
                    problems,
                });
            }
        }
    }
    rep.trace_hash = mix(rep.trace_hash, rep.violations.len() as u64);
    rep
}

/// The queue config the enumeration uses: segments small enough that the scenario rolls and
/// collects them.
pub fn small_segments() -> Config {
    Config {
        segment_size: 600,
        ..Config::default()
    }
}
