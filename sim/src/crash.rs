//! Exhaustive crash-point enumeration: stop the host after every mutating filesystem operation
//! of a scenario, and for each stop every legal persisted state; recover and run the oracle.
//! With `nested`, recovery itself is crashed at each of its operations and recovered again.

use std::path::Path;

use mta::queue::Config;

use crate::env::SimEnv;
use crate::fs::{Clock, Faults, Image, Persist, SimFs};
use crate::lifecycle;

pub use crate::fixture::T0_MS;

/// A scenario the enumerator can crash anywhere.
pub trait Scenario {
    type Ledger;
    fn name(&self) -> &'static str;
    /// Run to the end or to the first failure (after a crash every fs call fails).
    fn run(&self, env: &SimEnv) -> Self::Ledger;
    fn finished(&self, l: &Self::Ledger) -> bool;
    /// What the MTA does at start, before anything else (crashable on its own).
    fn recover(&self, env: &SimEnv);
    /// Recover and check the oracle; every problem found.
    fn check(&self, env: &SimEnv, l: &Self::Ledger) -> Vec<String>;
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub crash_after: u64,
    pub persist: Persist,
    /// For nested crashes: the crash point and persisted state inside recovery.
    pub nested: Option<(u64, Persist)>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Mutating operations in a crash-free run: the crash points.
    pub crash_points: u64,
    /// Crash states checked (crash point × persistence choice), plus the crash-free run.
    pub states: usize,
    /// States reached by crashing recovery itself.
    pub nested_states: usize,
    /// Crash points at which the scenario had acknowledged something.
    pub points_after_first_ack: u64,
    pub violations: Vec<Violation>,
    pub trace_hash: u64,
}

fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x0100_0000_01b3).rotate_left(17)
}

fn env_at(img: Image, now_ms: u64, faults: Faults, seed: u64) -> SimEnv {
    let clock = Clock::new(now_ms);
    let fs = SimFs::from_image(img, clock.clone());
    fs.set_faults(faults);
    SimEnv::manual(fs, clock, seed)
}

/// Enumerate every crash state of `s`.
pub fn enumerate<S: Scenario>(s: &S, seed: u64, nested: bool) -> Report
where
    S::Ledger: Acked,
{
    let mut rep = Report::default();
    let env = env_at(Image::default(), T0_MS, Faults::default(), seed);
    let l = s.run(&env);
    rep.crash_points = env.sim_fs().ops();
    rep.trace_hash = env.sim_fs().trace_hash();
    assert!(s.finished(&l), "{}: must finish without faults", s.name());
    rep.states += 1;
    let problems = s.check(&env, &l);
    if !problems.is_empty() {
        rep.violations.push(Violation {
            crash_after: 0,
            persist: Persist::All,
            nested: None,
            problems,
        });
    }
    for n in 1..=rep.crash_points {
        let faults = Faults {
            crash_after: Some(n),
            ..Faults::default()
        };
        let env = env_at(Image::default(), T0_MS, faults, seed);
        let l = s.run(&env);
        if l.acked_any() {
            rep.points_after_first_ack += 1;
        }
        let fs = env.sim_fs();
        rep.trace_hash = mix(rep.trace_hash, fs.trace_hash());
        // Reboot long after the crash, so stale tmp/ files count as debris.
        let reboot_ms = env.clock().now_ms() + (mta::queue::TMP_MAX_AGE_SECS + 1) * 1000;
        for p in fs.persist_choices() {
            let img = fs.crash_image(&p);
            let env2 = env_at(img.clone(), reboot_ms, Faults::default(), seed ^ n);
            let problems = s.check(&env2, &l);
            rep.states += 1;
            rep.trace_hash = mix(rep.trace_hash, env2.sim_fs().trace_hash());
            if !problems.is_empty() {
                rep.violations.push(Violation {
                    crash_after: n,
                    persist: p.clone(),
                    nested: None,
                    problems,
                });
            }
            if nested {
                nested_recovery(s, &l, img, reboot_ms, seed ^ n, n, &p, &mut rep);
            }
        }
    }
    rep.trace_hash = mix(rep.trace_hash, rep.violations.len() as u64);
    rep
}

/// Crash recovery at each of its operations, then recover again and check.
#[allow(clippy::too_many_arguments)]
fn nested_recovery<S: Scenario>(
    s: &S,
    l: &S::Ledger,
    img: Image,
    now_ms: u64,
    seed: u64,
    n: u64,
    p: &Persist,
    rep: &mut Report,
) {
    let probe = env_at(img.clone(), now_ms, Faults::default(), seed);
    s.recover(&probe);
    let k_max = probe.sim_fs().ops();
    for k in 1..=k_max {
        let faults = Faults {
            crash_after: Some(k),
            ..Faults::default()
        };
        let env = env_at(img.clone(), now_ms, faults, seed);
        s.recover(&env);
        for q in env.sim_fs().persist_choices() {
            let env2 = env_at(
                env.sim_fs().crash_image(&q),
                now_ms,
                Faults::default(),
                seed,
            );
            let problems = s.check(&env2, l);
            rep.nested_states += 1;
            rep.trace_hash = mix(rep.trace_hash, env2.sim_fs().trace_hash());
            if !problems.is_empty() {
                rep.violations.push(Violation {
                    crash_after: n,
                    persist: p.clone(),
                    nested: Some((k, q)),
                    problems,
                });
            }
        }
    }
}

/// Whether a ledger records any acknowledgement yet.
pub trait Acked {
    fn acked_any(&self) -> bool;
}

impl Acked for lifecycle::Ledger {
    fn acked_any(&self) -> bool {
        !self.acked.is_empty()
    }
}

/// The queue lifecycle (see [`lifecycle`]) with a queue config.
pub struct QueueLifecycle(pub Config);

impl Scenario for QueueLifecycle {
    type Ledger = lifecycle::Ledger;
    fn name(&self) -> &'static str {
        "queue-lifecycle"
    }
    fn run(&self, env: &SimEnv) -> lifecycle::Ledger {
        lifecycle::run(env, Path::new("/"), &self.0)
    }
    fn finished(&self, l: &lifecycle::Ledger) -> bool {
        l.finished
    }
    fn recover(&self, env: &SimEnv) {
        lifecycle::recover(env, Path::new("/"));
    }
    fn check(&self, env: &SimEnv, l: &lifecycle::Ledger) -> Vec<String> {
        lifecycle::check(env, Path::new("/"), l)
    }
}

/// Enumerate every crash state of the queue lifecycle with queue config `cfg`.
pub fn queue_lifecycle(cfg: &Config, seed: u64) -> Report {
    enumerate(&QueueLifecycle(*cfg), seed, false)
}

/// The queue config the enumeration uses: segments small enough that the scenario rolls and
/// collects them.
pub fn small_segments() -> Config {
    Config {
        segment_size: 600,
        ..Config::default()
    }
}
