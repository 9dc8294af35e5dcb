//! The deterministic cost gate: fixed workloads on the simulated disk and clock, measured in
//! units that do not depend on the machine (fsyncs, mutating operations, bytes, reads,
//! directory entries listed), compared with committed baselines. Timings on shared machines vary from run to run;
//! these do not, so any growth is a real change in what the MTA does.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::deliver::{image, World};
use crate::fs::{Costs, Persist};
use crate::receive::Receive;

/// Messages in each workload.
pub const MESSAGES: u64 = 20;
/// Where the baselines live, relative to the workspace root.
pub const BASELINE: &str = "benches/baselines/sim-costs.txt";

/// One workload's measures, by metric name (totals over [`MESSAGES`] messages).
pub type Measures = BTreeMap<&'static str, u64>;

/// Every workload's measures, by workload name.
pub type Table = BTreeMap<String, Measures>;

fn measures(c: Costs) -> Measures {
    BTreeMap::from([
        ("fsyncs", c.fsyncs),
        ("dir_fsyncs", c.dir_fsyncs),
        ("ops", c.ops),
        ("bytes_written", c.bytes_written),
        ("reads", c.reads),
        ("bytes_read", c.bytes_read),
        ("listed", c.listed),
    ])
}

/// How much a metric may grow before the gate fails, in percent. Counts of operations are
/// exact (one more fsync per message is the regression this gate exists for); bytes may
/// move a little with a log line's wording.
pub fn tolerance_pct(metric: &str) -> u64 {
    match metric {
        "bytes_written" | "bytes_read" => 1,
        _ => 0,
    }
}

fn body(i: u64) -> String {
    format!(
        "Subject: cost {i}\n\n{}\n",
        "line of the message body\n".repeat(40)
    )
}

/// `mta inject` of [`MESSAGES`] messages to a local user, then `mta run` until it has
/// delivered them all: the cost per accepted and per delivered message.
fn inject_and_deliver(seed: u64) -> (Measures, Measures) {
    let w = World::new(image(&[], &[]), seed);
    let fs = w.env.sim_fs().clone();
    let before = fs.costs();
    for i in 0..MESSAGES {
        w.inject("joe@heaven.af.mil", &["fred@heaven.af.mil"], &body(i));
    }
    let injected = fs.costs();
    let run = w.run(3600);
    assert!(
        run.drained(),
        "the cost workload did not drain: {:?}",
        run.stderr
    );
    assert_eq!(run.delivered() as u64, MESSAGES);
    (measures(injected - before), measures(fs.costs() - injected))
}

/// [`MESSAGES`] SMTP sessions over the simulated network, one message each, to a running
/// `mta run`: the receiving host's whole boot until the client is done.
fn smtp(seed: u64) -> Measures {
    let world = Receive {
        image: crate::receive::installation(&[]),
        crash_at_end: false,
    };
    let n = MESSAGES as usize;
    let o = world.run(n, Default::default(), Persist::Synced, seed, |_, _| {});
    assert_eq!(o.acked.len(), n, "refusals: {:?}", o.refusals);
    measures(o.costs)
}

/// Run every workload (seed 1: the baselines are for it).
pub fn measure() -> Table {
    let (inject, deliver) = inject_and_deliver(1);
    Table::from([
        ("inject".to_string(), inject),
        ("deliver-local".to_string(), deliver),
        ("smtp-receive".to_string(), smtp(1)),
    ])
}

/// The baseline file: `workload metric total` per line, `#` comments.
pub fn render_baseline(t: &Table) -> String {
    let mut s = String::from(
        "# Deterministic simulator costs (totals for the fixed workloads of sim/src/costs.rs).\n\
         # Checked by `mta-sim costs` in CI; update with `mta-sim costs --update` in a reviewed commit.\n",
    );
    for (w, m) in t {
        for (k, v) in m {
            let _ = writeln!(s, "{w} {k} {v}");
        }
    }
    s
}

pub fn parse_baseline(text: &str) -> Result<Table, String> {
    let mut t = Table::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let [w, k, v] = f[..] else {
            return Err(format!("line {}: want `workload metric value`", n + 1));
        };
        let v = v
            .parse()
            .map_err(|_| format!("line {}: bad value", n + 1))?;
        let k = METRICS
            .iter()
            .find(|m| **m == k)
            .ok_or_else(|| format!("line {}: unknown metric {k}", n + 1))?;
        t.entry(w.to_string()).or_default().insert(k, v);
    }
    Ok(t)
}

/// Every metric a workload can have.
pub const METRICS: [&str; 7] = [
    "fsyncs",
    "dir_fsyncs",
    "ops",
    "bytes_written",
    "reads",
    "bytes_read",
    "listed",
];

/// What comparing a measurement with the baseline found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Costs that grew beyond their tolerance (or appeared/vanished): the gate fails.
    pub regressions: Vec<String>,
    /// Costs that went down: fine, but the baseline should be updated to lock them in.
    pub improvements: Vec<String>,
}

pub fn compare(base: &Table, now: &Table) -> Verdict {
    let mut v = Verdict::default();
    let names: std::collections::BTreeSet<&String> = base.keys().chain(now.keys()).collect();
    for w in names {
        let (b, n) = (base.get(w), now.get(w));
        let metrics: std::collections::BTreeSet<&&str> =
            b.into_iter().chain(n).flat_map(|m| m.keys()).collect();
        for k in metrics {
            match (b.and_then(|m| m.get(k)), n.and_then(|m| m.get(k))) {
                (Some(&old), Some(&new)) if new * 100 > old * (100 + tolerance_pct(k)) => v
                    .regressions
                    .push(format!("{w} {k}: {old} -> {new} ({})", pct(old, new))),
                (Some(&old), Some(&new)) if new < old => v
                    .improvements
                    .push(format!("{w} {k}: {old} -> {new} ({})", pct(old, new))),
                (Some(_), Some(_)) => {}
                (old, new) => v.regressions.push(format!(
                    "{w} {k}: baseline {old:?}, measured {new:?} (update the baseline)"
                )),
            }
        }
    }
    v
}

fn pct(old: u64, new: u64) -> String {
    if old == 0 {
        return "new".into();
    }
    format!("{:+.1}%", (new as f64 - old as f64) * 100.0 / old as f64)
}

/// The report table: per message, with the baseline beside it.
pub fn render_report(base: &Table, now: &Table, header: &str) -> String {
    let mut s = format!("{header}\n| workload | metric | per message | total | baseline | tolerance |\n|---|---|---:|---:|---:|---:|\n");
    for (w, m) in now {
        for (k, v) in m {
            let old = base.get(w).and_then(|b| b.get(k));
            let per = format!("{:.1}", *v as f64 / MESSAGES as f64);
            let _ = writeln!(
                s,
                "| {w} | {k} | {per} | {v} | {} | {}% |",
                old.map_or("-".into(), u64::to_string),
                tolerance_pct(k)
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, &'static str, u64)]) -> Table {
        let mut t = Table::new();
        for (w, k, v) in rows {
            t.entry(w.to_string()).or_default().insert(*k, *v);
        }
        t
    }

    #[test]
    fn any_growth_of_a_count_fails_bytes_have_one_percent() {
        let base = table(&[("a", "fsyncs", 40), ("a", "bytes_written", 1000)]);
        let same = compare(&base, &base);
        assert!(same.regressions.is_empty() && same.improvements.is_empty());
        let v = compare(
            &base,
            &table(&[("a", "fsyncs", 41), ("a", "bytes_written", 1010)]),
        );
        assert_eq!(v.regressions, vec!["a fsyncs: 40 -> 41 (+2.5%)"]);
        let v = compare(
            &base,
            &table(&[("a", "fsyncs", 40), ("a", "bytes_written", 1011)]),
        );
        assert_eq!(v.regressions, vec!["a bytes_written: 1000 -> 1011 (+1.1%)"]);
        let v = compare(
            &base,
            &table(&[("a", "fsyncs", 20), ("a", "bytes_written", 900)]),
        );
        assert!(v.regressions.is_empty());
        assert_eq!(v.improvements.len(), 2);
    }

    #[test]
    fn a_missing_or_new_measure_fails() {
        let base = table(&[("a", "fsyncs", 1)]);
        let v = compare(&base, &table(&[("a", "ops", 1)]));
        assert_eq!(v.regressions.len(), 2);
    }

    #[test]
    fn the_baseline_format_round_trips() {
        let t = table(&[("inject", "fsyncs", 40), ("smtp-receive", "listed", 7)]);
        assert_eq!(parse_baseline(&render_baseline(&t)), Ok(t));
        assert!(parse_baseline("a fsyncs\n").is_err());
        assert!(parse_baseline("a nonsense 1\n").is_err());
    }
}
