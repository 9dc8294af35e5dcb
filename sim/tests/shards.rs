//! A swarm campaign split over processes adds up to the same campaign run by one: three
//! `mta-sim swarm --shard K/3 --json` processes in parallel, merged by `mta-sim merge`, give
//! exactly the totals (trace sum included) of one `mta-sim swarm` over every seed.

use std::process::Command;

use sim::shards::{merge, MergeError, ShardResult};

const SIM: &str = env!("CARGO_BIN_EXE_mta-sim");
const SEEDS: &str = "24";

fn result(path: &std::path::Path) -> ShardResult {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn shards_run_in_parallel_merge_to_the_totals_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let shard = |k: u32| dir.path().join(format!("shard-{k}.json"));
    let runs: Vec<_> = (1..=3)
        .map(|k| {
            Command::new(SIM)
                .args(["swarm", "--seeds", SEEDS, "--start", "500"])
                .args(["--shard", &format!("{k}/3"), "--json"])
                .arg(shard(k))
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let whole = dir.path().join("whole.json");
    let one = Command::new(SIM)
        .args(["swarm", "--seeds", SEEDS, "--start", "500", "--json"])
        .arg(&whole)
        .output()
        .unwrap();
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    for mut r in runs {
        assert!(r.wait().unwrap().success());
    }
    let summary = dir.path().join("merged.md");
    let merged = Command::new(SIM)
        .arg("merge")
        .args((1..=3).map(shard))
        .arg("--summary")
        .arg(&summary)
        .output()
        .unwrap();
    assert!(merged.status.success());
    let parts: Vec<ShardResult> = (1..=3).map(|k| result(&shard(k))).collect();
    let m = merge(&parts).unwrap();
    let whole = result(&whole);
    assert_eq!(m.totals, whole.totals, "same seeds, same runs, same sums");
    assert_eq!(m.totals.seeds, 24);
    assert!(m.totals.acked > 0 && m.totals.crashes > 0, "{:?}", m.totals);
    let report = std::fs::read_to_string(&summary).unwrap();
    assert!(report.contains(&format!("{:016x}", whole.totals.trace)));
    // A missing or doubled shard is refused, not silently summed.
    assert_eq!(
        merge(&parts[..2]).unwrap_err(),
        MergeError::Missing(vec![3], 3)
    );
    let twice = [parts[0].clone(), parts[0].clone(), parts[2].clone()];
    assert_eq!(merge(&twice).unwrap_err(), MergeError::Twice(1, 3));
    let mut other = parts.clone();
    other[1].seeds = 30;
    assert_eq!(merge(&other).unwrap_err(), MergeError::Mismatch(2, 3));
    let mut short = parts;
    short[2].totals.seeds -= 1;
    assert_eq!(merge(&short).unwrap_err(), MergeError::Short(3, 3, 7, 8));
}
