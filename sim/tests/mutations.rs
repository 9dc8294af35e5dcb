//! Every planted bug is caught, and the same scenarios pass without it. A test binary of its
//! own: planted bugs are process-wide.

/// Planted bugs are process-wide: the tests of this binary take turns.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn campaign_catches_every_planted_bug() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    assert!(sim::remote_world::dns_failures(2).is_empty());
    assert!(sim::remote_world::huge_mx(2).is_empty());
    for m in sim::mutation::run_all(2) {
        println!("{}: {} violations ({})", m.bug, m.violations, m.caught_by);
        assert!(m.violations > 0, "not caught: {}", m.bug);
    }
}

#[test]
fn canary_fails_exactly_where_planted_and_shrinks_to_a_minimal_profile() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    use mta::planted::{plant, Bug};
    for seed in 0..8u64 {
        let planted = seed % 4 == 0;
        plant(if planted {
            &[Bug::CanaryLoseSecondMessage]
        } else {
            &[]
        });
        let (_, o) = sim::swarm::run(seed);
        plant(&[]);
        assert_eq!(
            !o.violations.is_empty(),
            planted,
            "seed {seed}: {:?}",
            o.violations
        );
    }
    let start: sim::swarm::Profile =
        "crashes=30,60;persist=All,Synced;partition=10+20;eio=50;clients=3;messages=4;remote=50"
            .parse()
            .unwrap();
    let (min, _) = sim::swarm::shrink(4, &start, |o| {
        plant(&[Bug::CanaryLoseSecondMessage]);
        !o.violations.is_empty()
    });
    plant(&[]);
    // No fault left, one client sending its two messages: the least that shows the canary.
    assert_eq!(min, sim::swarm::Profile::default(), "{min}");
}
