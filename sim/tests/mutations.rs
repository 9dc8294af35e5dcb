//! Every planted bug is caught, and the same scenarios pass without it. A test binary of its
//! own: planted bugs are process-wide.

#[test]
fn campaign_catches_every_planted_bug() {
    assert!(sim::remote_world::dns_failures(2).is_empty());
    assert!(sim::remote_world::huge_mx(2).is_empty());
    for m in sim::mutation::run_all(2) {
        println!("{}: {} violations ({})", m.bug, m.violations, m.caught_by);
        assert!(m.violations > 0, "not caught: {}", m.bug);
    }
}
