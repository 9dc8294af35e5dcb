//! The hostile-input table (issue 9): runs every row against the real `mta` binary on
//! loopback and writes `reports/security.md`. `--quick` uses the CI sizes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use mta_benches::security::{self, Config, Meta, Sizes};

#[derive(Parser)]
struct Cli {
    /// CI sizes (a few hundred connections, a few MB) instead of the full ones.
    #[arg(long)]
    quick: bool,
    /// Where to write the Markdown table (default: print it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The `mta` binary (default: the one next to this program).
    #[arg(long)]
    mta: Option<PathBuf>,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mta = cli.mta.unwrap_or_else(|| {
        let me = std::env::current_exe().expect("own path");
        me.with_file_name("mta")
    });
    let scratch = tempfile::tempdir().expect("scratch dir");
    let sizes = if cli.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let cfg = Config {
        mta,
        sizes: sizes.clone(),
        scratch: scratch.path().to_path_buf(),
    };
    let start = Instant::now();
    let rows = match security::run(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("security: {e}");
            return ExitCode::from(111);
        }
    };
    let listener = if std::net::TcpListener::bind("[::]:0").is_ok() {
        "[::]:0"
    } else {
        "127.0.0.1:0"
    };
    let meta = Meta {
        command: format!(
            "benches/security.sh{}",
            if cli.quick { " --quick" } else { "" }
        ),
        date: date(),
        machine: machine(),
        sizes,
        seconds: start.elapsed().as_secs_f64(),
        listener: listener.into(),
    };
    let text = security::markdown(&rows, &meta);
    match cli.out {
        Some(p) => std::fs::write(p, text).expect("write report"),
        None => print!("{text}"),
    }
    let bad = rows.iter().filter(|r| r.verdict() != "ok").count();
    eprintln!("security: {} rows, {bad} not ok", rows.len());
    ExitCode::from(u8::from(bad > 0))
}
