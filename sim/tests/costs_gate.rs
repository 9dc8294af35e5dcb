//! The deterministic cost gate: its measurements repeat exactly, and a planted extra fsync
//! per message makes it fail. A test binary of its own: planted bugs are process-wide.

use mta::planted::{plant, Bug};
use sim::costs::{compare, measure};

#[test]
fn costs_repeat_exactly_and_an_extra_fsync_per_message_fails_the_gate() {
    let base = measure();
    assert_eq!(measure(), base, "the workloads are deterministic");
    plant(&[Bug::ExtraFsync]);
    let slowed = measure();
    plant(&[]);
    let v = compare(&base, &slowed);
    let n = sim::costs::MESSAGES;
    let want = format!("inject fsyncs: {n} -> {} (+100.0%)", 2 * n);
    assert!(v.regressions.contains(&want), "{:?}", v.regressions);
}
