//! Replays the committed corpus of the structure-aware simulation fuzz target
//! (fuzz/corpus/sim_swarm) through the same entry point libFuzzer uses: every input is a
//! fault profile and workload, and the oracle must hold for each.

#[test]
fn sim_swarm_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/sim_swarm");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{} inputs", files.len());
    let mut faulty = 0;
    for f in &files {
        let input = std::fs::read(f).unwrap();
        let (_, p) = sim::fuzz::decode(&input);
        faulty += usize::from(!p.crashes.is_empty() || p.reboot.is_some());
        sim::fuzz::swarm(&input);
    }
    assert!(faulty > 0, "the corpus crashes the MTA somewhere");
}
