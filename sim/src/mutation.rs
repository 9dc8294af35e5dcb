//! Verification power: realistic bugs applied to the MTA one at a time; the campaign must
//! catch every one. Fsync omissions go through the queue's sync-point switches, logic bugs
//! through [`mta::planted`].

use mta::planted::{self, Bug};
use mta::queue::{Disabled, SyncPoint};

use crate::{corruption, crash, local_crash, receive, remote_world, schedule_scenario};

/// One planted bug and what the campaign found.
#[derive(Debug, Clone)]
pub struct Mutant {
    pub bug: &'static str,
    pub caught_by: &'static str,
    /// Violations found (the bug is caught when non-empty).
    pub violations: usize,
}

/// Planted logic bugs: the bug, what it is, the scenario that catches it, and that scenario's
/// violation count for a seed.
type Planted = (Bug, &'static str, &'static str, fn(u64) -> usize);

const PLANTED: [Planted; 10] = [
    (
        Bug::RetryFromLastAttempt,
        "compute the retry from the last attempt instead of birth",
        "retry-schedule-40",
        |s| schedule_scenario::run(20, s).violations.len(),
    ),
    (
        Bug::LoseBounceStateOnRestart,
        "lose the bounce state on restart (failed recipients replayed as delivered)",
        "crash-mid-delivery-local",
        |s| local_crash::enumerate(s, Disabled::none()).violations.len(),
    ),
    (
        Bug::ServfailPermanent,
        "treat SERVFAIL as permanent",
        "dns-failures",
        |s| remote_world::dns_failures(s).len(),
    ),
    (
        Bug::IgnoreTruncation,
        "ignore TC (use a truncated UDP answer as it is)",
        "huge-mx",
        |s| remote_world::huge_mx(s).len(),
    ),
    (
        Bug::AppendAfterFailedFsync,
        "keep appending to the queue log behind a failed fsync",
        "failed-fsync",
        |s| receive::failed_fsyncs(3, s).violations.len(),
    ),
    (
        Bug::ForgetLastAttempt,
        "forget each message's last attempt at a restart (everything due at once)",
        "retry-schedule-restarts",
        |s| schedule_scenario::restarts(s).len(),
    ),
    (
        Bug::EveryAttemptFirst,
        "take every Maildir delivery for a first attempt (no look in cur/ on a repeat)",
        "crash-mid-delivery-local",
        |s| local_crash::enumerate(s, Disabled::none()).violations.len(),
    ),
    (
        Bug::TrustMaildirNameInCache,
        "trust a Maildir new/ name that a failed fsync may have dropped from the disk",
        "failed-fsync-local",
        |s| local_crash::failed_fsyncs(s).violations.len(),
    ),
    (
        Bug::CompactWithoutOutcomes,
        "compaction moves a message without its recipients' outcomes",
        "queue-lifecycle crash enumeration",
        |s| {
            crash::queue_lifecycle(&crash::small_segments(), s)
                .violations
                .len()
        },
    ),
    (
        Bug::CutAtFirstDamage,
        "take damage in the middle of a log segment for a torn tail",
        "latent-corruption",
        |s| corruption::enumerate(60, s).violations.len(),
    ),
];

fn planted_run(b: Bug, f: impl FnOnce() -> usize) -> usize {
    planted::plant(&[b]);
    let n = f();
    planted::plant(&[]);
    n
}

/// Run every mutant. Not safe to run beside other simulations in the same process: the
/// planted flags are process-wide.
pub fn run_all(seed: u64) -> Vec<Mutant> {
    let mut v = Vec::new();
    let mut cfg = crash::small_segments();
    cfg.disabled = Disabled::only(SyncPoint::TodoDir);
    v.push(Mutant {
        bug: "skip the todo/ directory fsync after linking an injection",
        caught_by: "queue-lifecycle crash enumeration",
        violations: crash::queue_lifecycle(&cfg, seed).violations.len(),
    });
    v.push(Mutant {
        bug: "mark delivered before the Maildir link is durable (no fsync of new/)",
        caught_by: "crash-mid-delivery-local",
        violations: local_crash::enumerate(seed, Disabled::only(SyncPoint::MaildirNew))
            .violations
            .len(),
    });
    for (b, bug, caught_by, run) in PLANTED {
        v.push(Mutant {
            bug,
            caught_by,
            violations: planted_run(b, || run(seed)),
        });
    }
    v
}
