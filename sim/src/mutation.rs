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
    v.push(Mutant {
        bug: "compute the retry from the last attempt instead of birth",
        caught_by: "retry-schedule-40",
        violations: planted_run(Bug::RetryFromLastAttempt, || {
            schedule_scenario::run(20, seed).violations.len()
        }),
    });
    v.push(Mutant {
        bug: "lose the bounce state on restart (failed recipients replayed as delivered)",
        caught_by: "crash-mid-delivery-local",
        violations: planted_run(Bug::LoseBounceStateOnRestart, || {
            local_crash::enumerate(seed, Disabled::none())
                .violations
                .len()
        }),
    });
    v.push(Mutant {
        bug: "treat SERVFAIL as permanent",
        caught_by: "dns-failures",
        violations: planted_run(Bug::ServfailPermanent, || {
            remote_world::dns_failures(seed).len()
        }),
    });
    v.push(Mutant {
        bug: "ignore TC (use a truncated UDP answer as it is)",
        caught_by: "huge-mx",
        violations: planted_run(Bug::IgnoreTruncation, || remote_world::huge_mx(seed).len()),
    });
    v.push(Mutant {
        bug: "keep appending to the queue log behind a failed fsync",
        caught_by: "failed-fsync",
        violations: planted_run(Bug::AppendAfterFailedFsync, || {
            receive::failed_fsyncs(3, seed).violations.len()
        }),
    });
    v.push(Mutant {
        bug: "trust a Maildir new/ name that a failed fsync may have dropped from the disk",
        caught_by: "failed-fsync-local",
        violations: planted_run(Bug::TrustMaildirNameInCache, || {
            local_crash::failed_fsyncs(seed).violations.len()
        }),
    });
    v.push(Mutant {
        bug: "take damage in the middle of a log segment for a torn tail",
        caught_by: "latent-corruption",
        violations: planted_run(Bug::CutAtFirstDamage, || {
            corruption::enumerate(60, seed).violations.len()
        }),
    });
    v
}
