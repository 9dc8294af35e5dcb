//! `mta-conform matrix`: the whole catalogue against several servers side by side. The
//! servers are installed, configured, started and stopped by `conformance/scripts/matrix.sh`
//! (its `start` prints one line per server, see there); this module plays the catalogue
//! against each and writes the requirement × server report.

use std::fmt::Write;
use std::path::PathBuf;

use crate::catalogue::Level;
use crate::runner::{totals, Outcome, Result1};

const LABELS: [&str; 5] = ["pass", "pass*", "deviation", "FAIL", "n/a"];

/// A server the script started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub addr: String,
    pub profile: String,
    pub maildir: PathBuf,
    /// A login for the AUTH entries.
    pub auth: Option<(String, String)>,
    /// What it is (package and version).
    pub about: String,
}

/// What the script's `start` reported.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Started {
    pub peers: Vec<Peer>,
    /// Servers that could not be made to run: name, the exact reason.
    pub unavailable: Vec<(String, String)>,
}

/// Parse `server NAME ADDR PROFILE MAILDIR [USER PASS]`, `about NAME TEXT` and
/// `unavailable NAME REASON` lines; anything else is ignored.
pub fn parse_started(out: &str) -> Started {
    let mut s = Started::default();
    for l in out.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["server", name, addr, profile, maildir, rest @ ..] => s.peers.push(Peer {
                name: name.to_string(),
                addr: addr.to_string(),
                profile: profile.to_string(),
                maildir: PathBuf::from(maildir),
                auth: match rest {
                    [u, p] => Some((u.to_string(), p.to_string())),
                    _ => None,
                },
                about: String::new(),
            }),
            ["about", name, ..] => {
                let text = l.splitn(3, ' ').nth(2).unwrap_or("").to_string();
                if let Some(p) = s.peers.iter_mut().find(|p| p.name == *name) {
                    p.about = text;
                }
            }
            ["unavailable", name, ..] => {
                let why = l.splitn(3, ' ').nth(2).unwrap_or("").to_string();
                s.unavailable.push((name.to_string(), why));
            }
            _ => {}
        }
    }
    s
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn short(o: &Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::PassListed => "pass*",
        Outcome::Fail(_) => "**FAIL**",
        Outcome::Deviation(_) => "deviation",
        Outcome::NotApplicable(_) => "n/a",
    }
}

fn totals_section(runs: &[(Peer, Vec<Result1>)]) -> String {
    let mut s = String::from("\n## Totals per level\n\n| server | level | ");
    s.push_str(&LABELS.join(" | "));
    s.push_str(" |\n|---|---|");
    s.push_str(&"---:|".repeat(LABELS.len()));
    s.push('\n');
    for (p, rs) in runs {
        let t = totals(rs);
        for l in Level::ALL {
            let _ = write!(s, "| {} | {l} |", p.name);
            for k in LABELS {
                let _ = write!(s, " {} |", t.get(&(l, k)).copied().unwrap_or(0));
            }
            s.push('\n');
        }
    }
    s
}

fn matrix_section(runs: &[(Peer, Vec<Result1>)]) -> String {
    let mut s = String::from("\n## Requirements × servers\n\n| entry | level | section |");
    for (p, _) in runs {
        let _ = write!(s, " {} |", p.name);
    }
    s.push_str("\n|---|---|---|");
    s.push_str(&"---|".repeat(runs.len()));
    s.push('\n');
    let Some((_, first)) = runs.first() else {
        return s;
    };
    for (i, r) in first.iter().enumerate() {
        let _ = write!(s, "| `{}` | {} | {} |", r.id, r.level, r.citation);
        for (_, rs) in runs {
            let o = rs
                .get(i)
                .filter(|x| x.id == r.id)
                .map_or("?", |x| short(&x.outcome));
            let _ = write!(s, " {o} |");
        }
        s.push('\n');
    }
    s
}

fn deviations_section(runs: &[(Peer, Vec<Result1>)]) -> String {
    let mut s = String::new();
    for (p, rs) in runs.iter().filter(|(p, _)| p.profile != "generic") {
        let _ = write!(
            s,
            "\n## Deviations of {} (profile `{}`)\n\n| entry | level | section | reason |\n|---|---|---|---|\n",
            p.name, p.profile
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
    }
    s
}

/// Every failure, with the first line of why (the whole transcript is in the terminal run).
fn failures_section(runs: &[(Peer, Vec<Result1>)]) -> String {
    let mut s = String::from("\n## Failures, server by server\n");
    for (p, rs) in runs {
        let fails: Vec<&Result1> = rs
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
            .collect();
        let _ = writeln!(s, "\n### {} ({} failed)\n", p.name, fails.len());
        for r in fails {
            if let Outcome::Fail(why) = &r.outcome {
                let head: String = why.lines().next().unwrap_or("").chars().take(300).collect();
                let _ = writeln!(
                    s,
                    "- `{}` ({} {}): {}",
                    r.id,
                    r.level,
                    r.citation,
                    cell(&head)
                );
            }
        }
    }
    s
}

/// The report: header, servers, totals, the matrix, deviations, failures, then the notes.
pub fn markdown(
    runs: &[(Peer, Vec<Result1>)],
    unavailable: &[(String, String)],
    header: &[String],
    notes: &str,
) -> String {
    let mut s = String::from("# RFC 5321 conformance: mta and its peers\n\n");
    for h in header {
        let _ = writeln!(s, "{h}  ");
    }
    s.push_str("\n## Servers\n\n| server | what | address | profile |\n|---|---|---|---|\n");
    for (p, _) in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | `{}` |",
            p.name,
            cell(&p.about),
            p.addr,
            p.profile
        );
    }
    for (n, why) in unavailable {
        let _ = writeln!(s, "| {n} | **not run**: {} | — | — |", cell(why));
    }
    s.push_str(
        "\n`generic`: reply codes and delivered messages only (no exact texts, no deviations \
         listed: every departure shows as FAIL). `mta`: also qmail's exact texts, with mta's \
         documented deviations. `pass*`: listed as a deviation but passed. `n/a`: not run \
         (extension not offered, no login, or a minutes-long entry).\n",
    );
    s.push_str(&totals_section(runs));
    s.push_str(&matrix_section(runs));
    s.push_str(&deviations_section(runs));
    s.push_str(&failures_section(runs));
    if !notes.trim().is_empty() {
        s.push_str("\n## Notes\n\n");
        s.push_str(notes.trim_end());
        s.push('\n');
    }
    s
}
