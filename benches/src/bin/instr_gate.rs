//! The instruction-count gate: reads the JSON lines `cargo bench --bench hotpaths --
//! --output-format=json` prints (gungraun, under Valgrind's Callgrind) and compares each
//! benchmark's instructions (Ir) with the committed baseline; more than the tolerance over it
//! fails. `--update` writes the baseline instead (a reviewed commit).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
struct Cli {
    /// The benchmark's JSON output.
    results: PathBuf,
    #[arg(long, default_value = "benches/baselines/instructions.txt")]
    baseline: PathBuf,
    /// Percent over the baseline that still passes (recovery reads a disk and varies a little).
    #[arg(long, default_value_t = 2.0)]
    tolerance: f64,
    #[arg(long)]
    update: bool,
}

/// `group::function.id` → instructions, from gungraun's JSON lines.
fn counts(text: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let name = match v["id"].as_str() {
            Some(id) => format!(
                "{}::{}.{id}",
                v["group"].as_str().unwrap_or(""),
                v["function_name"].as_str().unwrap_or("")
            ),
            None => format!(
                "{}::{}",
                v["group"].as_str().unwrap_or(""),
                v["function_name"].as_str().unwrap_or("")
            ),
        };
        let ir = v["profiles"][0]["data"]["total"]["metrics"]["Ir"]["values"]["new"]
            .as_u64()
            .ok_or_else(|| format!("{name}: no instruction count"))?;
        out.insert(name, ir);
    }
    if out.is_empty() {
        return Err("no benchmark results".into());
    }
    Ok(out)
}

fn parse_baseline(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let now = match std::fs::read_to_string(&cli.results)
        .map_err(|e| e.to_string())
        .and_then(|t| counts(&t))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("instr-gate: {}: {e}", cli.results.display());
            return ExitCode::from(2);
        }
    };
    if cli.update {
        let mut text = String::from("# Instructions (Callgrind Ir) per hot-path benchmark: benches/benches/hotpaths.rs.\n# Written by `bash benches/instructions.sh --update`; a change here is a reviewed commit.\n");
        now.iter()
            .for_each(|(k, v)| text.push_str(&format!("{k} {v}\n")));
        return match std::fs::write(&cli.baseline, text) {
            Ok(()) => {
                println!("baseline written to {}", cli.baseline.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("instr-gate: {}: {e}", cli.baseline.display());
                ExitCode::from(2)
            }
        };
    }
    let base = parse_baseline(&std::fs::read_to_string(&cli.baseline).unwrap_or_default());
    let mut failed = false;
    for (name, &ir) in &now {
        let Some(&b) = base.get(name) else {
            println!("NEW {name}: {ir} instructions, no baseline (run with --update)");
            failed = true;
            continue;
        };
        let change = (ir as f64 / b.max(1) as f64 - 1.0) * 100.0;
        let over = change > cli.tolerance;
        failed |= over;
        let tag = if over { "REGRESSION" } else { "ok" };
        println!("{tag} {name}: {b} -> {ir} ({change:+.2}%)");
    }
    for name in base.keys().filter(|k| !now.contains_key(*k)) {
        println!("GONE {name}: in the baseline, not measured (run with --update)");
        failed = true;
    }
    if failed {
        println!("(tolerance {}%; if intended: bash benches/instructions.sh --update, in a reviewed commit)", cli.tolerance);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
