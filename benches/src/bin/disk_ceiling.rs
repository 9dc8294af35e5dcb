//! The disk's ceiling for Maildir-style delivery, to compare an MTA with: W writers at once,
//! each making N files durable the way a careful delivery does (write to `tmp/`, fsync the
//! file, link it into `new/`, unlink the `tmp/` name, fsync `new/`). Prints one JSON line with
//! the files per second. Plain blocking I/O on threads: no MTA logic at all.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;

#[derive(Parser)]
struct Cli {
    /// A scratch directory on the disk to measure (tmp/ and new/ are made in it).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Files in all.
    #[arg(long, default_value_t = 4000)]
    files: usize,
    /// Bytes per file.
    #[arg(long, default_value_t = 2048)]
    size: usize,
}

/// One durable delivery of `data` as `name`.
fn deliver(dir: &Path, name: &str, data: &[u8], new_dir: &File) -> std::io::Result<()> {
    let tmp = dir.join("tmp").join(name);
    let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::hard_link(&tmp, dir.join("new").join(name))?;
    fs::remove_file(&tmp)?;
    new_dir.sync_all()
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    for d in ["tmp", "new"] {
        if let Err(e) = fs::create_dir_all(cli.dir.join(d)) {
            eprintln!("disk-ceiling: {}: {e}", cli.dir.display());
            return std::process::ExitCode::from(2);
        }
    }
    let data = vec![b'x'; cli.size];
    let per = cli.files / cli.writers.max(1);
    let t0 = Instant::now();
    let failed = std::thread::scope(|s| {
        let workers: Vec<_> = (0..cli.writers)
            .map(|w| {
                let (dir, data) = (&cli.dir, &data);
                s.spawn(move || -> std::io::Result<()> {
                    let new_dir = File::open(dir.join("new"))?;
                    (0..per).try_for_each(|i| deliver(dir, &format!("{w}.{i}"), data, &new_dir))
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().expect("writer thread").err())
            .next()
    });
    if let Some(e) = failed {
        eprintln!("disk-ceiling: {e}");
        return std::process::ExitCode::from(1);
    }
    let secs = t0.elapsed().as_secs_f64();
    let files = per * cli.writers;
    println!(
        "{{\"files\":{files},\"writers\":{},\"size\":{},\"secs\":{secs:.3},\"files_per_sec\":{:.0}}}",
        cli.writers,
        cli.size,
        files as f64 / secs
    );
    std::process::ExitCode::SUCCESS
}
