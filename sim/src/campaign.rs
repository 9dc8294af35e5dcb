//! The campaign's registry: scenarios by name for `mta-sim crash-points`, and the fsync
//! audit that switches each sync point off in turn. It sits above the scenarios it names.

use mta::queue::{Disabled, SyncPoint};

use crate::crash::{enumerate, small_segments, QueueLifecycle, Report};
use crate::install::Install;

/// Scenario names `mta-sim crash-points` knows.
pub const SCENARIOS: [&str; 2] = ["queue-lifecycle", "install"];

/// Enumerate a scenario by name (queue scenarios with small segments, so logs roll and are
/// collected).
pub fn by_name(name: &str, seed: u64, nested: bool) -> Option<Report> {
    match name {
        "queue-lifecycle" => Some(enumerate(&QueueLifecycle(small_segments()), seed, nested)),
        "install" => Some(enumerate(&Install(Disabled::none()), seed, nested)),
        _ => None,
    }
}

/// Switch off each fsync point alone and enumerate the scenario that exercises it:
/// (point, violating states, states). Every point must have violations.
pub fn fsync_audit(seed: u64) -> Vec<(SyncPoint, usize, usize)> {
    SyncPoint::ALL
        .iter()
        .map(|&p| {
            let r = match p {
                SyncPoint::InstallFiles | SyncPoint::InstallDirs => {
                    enumerate(&Install(Disabled::only(p)), seed, false)
                }
                SyncPoint::MaildirFile | SyncPoint::MaildirNew => {
                    let r = crate::local_crash::enumerate(seed, Disabled::only(p));
                    return (p, r.violations.len(), r.states);
                }
                SyncPoint::MboxFile | SyncPoint::MboxMark | SyncPoint::MboxMarkGone => {
                    let r = crate::local_crash::enumerate_mbox(seed, Disabled::only(p));
                    return (p, r.violations.len(), r.states);
                }
                _ => {
                    let mut cfg = small_segments();
                    cfg.disabled = Disabled::only(p);
                    enumerate(&QueueLifecycle(cfg), seed, false)
                }
            };
            (p, r.violations.len(), r.states)
        })
        .collect()
}
