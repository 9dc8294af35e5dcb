//! Printing catalogue results: a line per entry for the terminal, and a Markdown report.

use std::fmt::Write;

use crate::catalogue::Level;
use crate::runner::{totals, Outcome, Result1};

const LABELS: [&str; 5] = ["pass", "pass*", "deviation", "FAIL", "n/a"];

/// One line per entry (failures with their transcript), then totals per level.
pub fn text(rs: &[Result1]) -> String {
    let mut s = String::new();
    for r in rs {
        let _ = writeln!(s, "{:9} {:6} {}", r.outcome.label(), r.level, r.id);
        match &r.outcome {
            Outcome::Fail(why) => {
                let _ = writeln!(s, "    {} — {}\n    {why}", r.citation, r.says);
            }
            Outcome::Deviation(why) => {
                let _ = writeln!(s, "    {why}");
            }
            Outcome::PassListed => {
                let _ = writeln!(
                    s,
                    "    listed as a deviation but passes: remove the listing"
                );
            }
            _ => {}
        }
    }
    s.push_str(&totals_text(rs));
    s
}

fn totals_text(rs: &[Result1]) -> String {
    let t = totals(rs);
    let mut s = String::new();
    for l in Level::ALL {
        let parts: Vec<String> = LABELS
            .iter()
            .filter_map(|k| t.get(&(l, *k)).map(|n| format!("{n} {k}")))
            .collect();
        let _ = writeln!(s, "{l:6}: {}", parts.join(", "));
    }
    s
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Entries per area and level.
fn areas(rs: &[Result1]) -> String {
    let mut by: std::collections::BTreeMap<&str, [usize; 3]> = Default::default();
    for r in rs {
        by.entry(r.area.as_str()).or_default()[r.level as usize] += 1;
    }
    let mut s = String::from(
        "\n## Entries per area\n\n| area | MUST | SHOULD | MAY |\n|---|---:|---:|---:|\n",
    );
    for (a, [m, sh, my]) in &by {
        let _ = writeln!(s, "| {a} | {m} | {sh} | {my} |");
    }
    let t = |i: usize| by.values().map(|c| c[i]).sum::<usize>();
    let _ = writeln!(
        s,
        "| **all {}** | {} | {} | {} |",
        rs.len(),
        t(0),
        t(1),
        t(2)
    );
    s
}

/// The Markdown report: header lines, totals, deviations, then every entry by area.
/// The totals per level and outcome.
fn totals_table(rs: &[Result1]) -> String {
    let mut s = String::from("\n## Totals\n\n| level | ");
    s.push_str(&LABELS.join(" | "));
    s.push_str(" |\n|---|");
    s.push_str(&"---:|".repeat(LABELS.len()));
    s.push('\n');
    let t = totals(rs);
    for l in Level::ALL {
        let _ = write!(s, "| {l} |");
        for k in LABELS {
            let _ = write!(s, " {} |", t.get(&(l, k)).copied().unwrap_or(0));
        }
        s.push('\n');
    }
    s
}

pub fn markdown(rs: &[Result1], header: &[String]) -> String {
    let mut s = String::from("# RFC 5321 conformance\n\n");
    for h in header {
        let _ = writeln!(s, "{h}  ");
    }
    s.push_str(&totals_table(rs));
    let must_devs: Vec<String> = rs
        .iter()
        .filter(|r| r.level == Level::Must && matches!(r.outcome, Outcome::Deviation(_)))
        .map(|r| format!("`{}`", r.id))
        .collect();
    if !must_devs.is_empty() {
        let _ = writeln!(
            s,
            "\n**MUSTs not met** (listed, see below): {}",
            must_devs.join(", ")
        );
    }
    s.push_str(&areas(rs));
    s.push_str(
        "\n`pass*`: listed as a deviation, but passed. `n/a`: not run (see the entry).\n\
         \n## Deviations\n\n| entry | level | section | reason |\n|---|---|---|---|\n",
    );
    for r in rs {
        if let Outcome::Deviation(why) = &r.outcome {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} |",
                r.id,
                r.level,
                r.citation,
                cell(why)
            );
        }
    }
    let fails: Vec<&Result1> = rs
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
        .collect();
    if !fails.is_empty() {
        s.push_str("\n## Failures\n\n");
        for r in fails {
            if let Outcome::Fail(why) = &r.outcome {
                let _ = writeln!(
                    s,
                    "- `{}` ({}, {}): {}\n\n```\n{why}\n```",
                    r.id, r.level, r.citation, r.says
                );
            }
        }
    }
    s.push_str("\n## Entries\n\n| entry | level | section | requirement | result |\n|---|---|---|---|---|\n");
    for r in rs {
        let note = match &r.outcome {
            Outcome::NotApplicable(w) => format!("n/a: {w}"),
            o => o.label().to_string(),
        };
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} |",
            r.id,
            r.level,
            r.citation,
            cell(&r.says),
            note
        );
    }
    s
}
