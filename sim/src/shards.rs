//! Swarm campaigns past one machine: each shard runs its share of the seeds and writes its
//! result as JSON; merging the shards gives the totals one machine running every seed would
//! have printed (order does not matter: every figure is a sum, the trace a wrapping sum of
//! per-seed hashes), with every failing seed's replay line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::swarm::{Outcome, Profile};

/// Sums over seeds; merging shards adds them.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub seeds: u64,
    pub failed: u64,
    pub acked: u64,
    pub local: u64,
    pub remote: u64,
    pub dups: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub eio: u64,
    pub jumps: u64,
    pub fsync_failed: u64,
    pub read_errors: u64,
    pub enospc: u64,
    pub full_secs: u64,
    /// Seeds on the natural retry schedule alone (no operator flushes).
    pub natural: u64,
    pub restarts: u64,
    pub corrupted: u64,
    /// Wrapping sum of the seeds' trace hashes: equal totals mean the same runs happened.
    pub trace: u64,
}

impl Totals {
    /// Count one seed's run (faults that fired, not merely drawn).
    pub fn add(&mut self, p: &Profile, o: &Outcome) {
        let n = |v: usize| v as u64;
        self.seeds += 1;
        self.failed += u64::from(!o.violations.is_empty());
        self.acked += n(o.acked);
        self.local += n(o.local_delivered);
        self.remote += n(o.remote_delivered);
        self.dups += n(o.duplicates_remote);
        self.crashes += n(o.crashes);
        self.partitions += u64::from(p.partition.is_some());
        self.jumps += u64::from(p.jump.is_some());
        self.eio += o.fired.eio;
        self.fsync_failed += o.fired.fsync;
        self.read_errors += o.fired.read;
        self.enospc += o.fired.enospc;
        self.full_secs += o.full_secs;
        self.natural += u64::from(!p.flush);
        self.restarts += n(o.restarts);
        self.corrupted += u64::from(o.damage.is_some());
        self.trace = self.trace.wrapping_add(o.trace_hash);
    }

    fn merge(&mut self, o: &Totals) {
        let pairs = [
            (&mut self.seeds, o.seeds),
            (&mut self.failed, o.failed),
            (&mut self.acked, o.acked),
            (&mut self.local, o.local),
            (&mut self.remote, o.remote),
            (&mut self.dups, o.dups),
            (&mut self.crashes, o.crashes),
            (&mut self.partitions, o.partitions),
            (&mut self.eio, o.eio),
            (&mut self.jumps, o.jumps),
            (&mut self.fsync_failed, o.fsync_failed),
            (&mut self.read_errors, o.read_errors),
            (&mut self.enospc, o.enospc),
            (&mut self.full_secs, o.full_secs),
            (&mut self.natural, o.natural),
            (&mut self.restarts, o.restarts),
            (&mut self.corrupted, o.corrupted),
        ];
        for (a, b) in pairs {
            *a += b;
        }
        self.trace = self.trace.wrapping_add(o.trace);
    }

    /// The one-line summary `mta-sim swarm` prints.
    pub fn line(&self, secs: f64) -> String {
        format!(
            "swarm: {} seeds in {secs:.1}s ({:.0} seeds/s), {} failed; {} acknowledged; fired: {} crashes, {} failed fsyncs, {} EIO, {} read EIO, {} ENOSPC, {} full-disk s, {} lost sectors, {} partitions, {} clock jumps",
            self.seeds,
            self.seeds as f64 / secs.max(1e-9),
            self.failed,
            self.acked,
            self.crashes,
            self.fsync_failed,
            self.eio,
            self.read_errors,
            self.enospc,
            self.full_secs,
            self.corrupted,
            self.partitions,
            self.jumps
        )
    }
}

/// A failing seed, with what replays it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub seed: u64,
    pub profile: String,
    pub violations: Vec<String>,
    pub replay: String,
}

impl Failure {
    pub fn new(seed: u64, p: &Profile, o: &Outcome) -> Failure {
        Failure {
            seed,
            profile: p.to_string(),
            violations: o.violations.clone(),
            replay: format!("mta-sim run swarm --seed {seed} --profile '{p}'"),
        }
    }
}

/// What one shard ran and found (`mta-sim swarm --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardResult {
    pub commit: String,
    /// The campaign: seeds `start .. start + seeds`, split in `of` shards.
    pub start: u64,
    pub seeds: u64,
    /// This shard (1-based) of `of`.
    pub shard: u64,
    pub of: u64,
    pub secs: f64,
    pub totals: Totals,
    pub failures: Vec<Failure>,
}

/// The seeds of shard `k` of `n` (1-based) of the campaign `start .. start + seeds`.
pub fn seeds_of(start: u64, seeds: u64, (k, n): (u64, u64)) -> Vec<u64> {
    (start..start + seeds).filter(|s| s % n == k - 1).collect()
}

/// Why shard results do not add up to one campaign.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MergeError {
    #[error("no shard results")]
    Empty,
    #[error("shard {0}/{1} is from another campaign (commit, seeds or shard count differ)")]
    Mismatch(u64, u64),
    #[error("shard {0}/{1} appears twice")]
    Twice(u64, u64),
    #[error("shards missing: {0:?} of {1}")]
    Missing(Vec<u64>, u64),
    #[error("shard {0}/{1} ran {2} seeds, its share is {3}")]
    Short(u64, u64, u64, u64),
}

/// Every shard of one campaign, merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub commit: String,
    pub start: u64,
    pub seeds: u64,
    pub of: u64,
    /// Machine time: the sum of the shards' wall clocks.
    pub secs: f64,
    pub totals: Totals,
    pub failures: Vec<Failure>,
}

/// Merge shard results: they must be one campaign's shards, each exactly once, complete.
pub fn merge(results: &[ShardResult]) -> Result<Merged, MergeError> {
    let first = results.first().ok_or(MergeError::Empty)?;
    let mut seen = BTreeMap::new();
    for r in results {
        let same = (&r.commit, r.start, r.seeds, r.of)
            == (&first.commit, first.start, first.seeds, first.of);
        if !same || r.shard == 0 || r.shard > r.of {
            return Err(MergeError::Mismatch(r.shard, r.of));
        }
        let share = seeds_of(r.start, r.seeds, (r.shard, r.of)).len() as u64;
        if r.totals.seeds != share {
            return Err(MergeError::Short(r.shard, r.of, r.totals.seeds, share));
        }
        if seen.insert(r.shard, r).is_some() {
            return Err(MergeError::Twice(r.shard, r.of));
        }
    }
    let missing: Vec<u64> = (1..=first.of).filter(|k| !seen.contains_key(k)).collect();
    if !missing.is_empty() {
        return Err(MergeError::Missing(missing, first.of));
    }
    let mut m = Merged {
        commit: first.commit.clone(),
        start: first.start,
        seeds: first.seeds,
        of: first.of,
        secs: 0.0,
        totals: Totals::default(),
        failures: Vec::new(),
    };
    for r in seen.values() {
        m.secs += r.secs;
        m.totals.merge(&r.totals);
        m.failures.extend(r.failures.iter().cloned());
    }
    m.failures.sort_by_key(|f| f.seed);
    Ok(m)
}

/// The merged campaign as a Markdown report.
pub fn report(m: &Merged) -> String {
    let t = &m.totals;
    let mut s = format!(
        "# Swarm campaign, merged from {} shards\n\nGenerated by `mta-sim merge`  \nCommit: {}  \nSeeds: {} .. {} ({} seeds)  \nMachine time: {:.0} s (sum over shards)  \nTrace sum: {:016x}\n\n",
        m.of,
        m.commit,
        m.start,
        m.start + m.seeds,
        t.seeds,
        m.secs,
        t.trace
    );
    s.push_str("| figure | total |\n|---|---:|\n");
    let rows = [
        ("seeds", t.seeds),
        ("failed", t.failed),
        ("transmissions acknowledged", t.acked),
        ("delivered locally", t.local),
        ("delivered remotely", t.remote),
        ("crashes and reboots", t.crashes),
        ("restarts", t.restarts),
        ("failed fsyncs", t.fsync_failed),
        ("EIO on writes", t.eio),
        ("EIO on reads", t.read_errors),
        ("ENOSPC", t.enospc),
        ("seconds of full disk", t.full_secs),
        ("lost sectors", t.corrupted),
        ("partitions", t.partitions),
        ("clock jumps", t.jumps),
        ("seeds on the natural schedule", t.natural),
    ];
    for (k, v) in rows {
        s.push_str(&format!("| {k} | {v} |\n"));
    }
    s.push_str("\n## Failing seeds\n\n");
    if m.failures.is_empty() {
        s.push_str("None.\n");
    }
    for f in &m.failures {
        s.push_str(&format!(
            "- seed {}: {}  \n  replay: `{}`\n",
            f.seed,
            f.violations.join("; "),
            f.replay
        ));
    }
    s
}
