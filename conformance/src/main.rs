//! `mta-conform`: play the SMTP conformance dialogues against a live server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use conformance::{fixtures, run, Dialogue, Match};

#[derive(Parser)]
#[command(
    name = "mta-conform",
    about = "Play SMTP conformance dialogues against a server"
)]
struct Cli {
    /// Server address, e.g. 127.0.0.1:2525.
    #[arg(long)]
    server: std::net::SocketAddr,
    /// Dialogue directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Compare reply codes only (for servers other than mta, e.g. Postfix).
    #[arg(long)]
    codes_only: bool,
    /// Only dialogues whose name contains this.
    #[arg(long)]
    only: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dir = cli.dir.unwrap_or_else(|| fixtures().join("smtp"));
    let dialogues = match Dialogue::load_dir(&dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("mta-conform: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let m = if cli.codes_only {
        Match::Code
    } else {
        Match::Text
    };
    let (mut pass, mut fail) = (0, 0);
    for d in dialogues.iter().filter(|d| {
        cli.only
            .as_ref()
            .is_none_or(|o| d.name.contains(o.as_str()))
    }) {
        let r = rt.block_on(async {
            let s = tokio::net::TcpStream::connect(cli.server)
                .await
                .map_err(|e| e.to_string())?;
            run(s, d, m, Duration::from_secs(30)).await
        });
        match r {
            Ok(_) => {
                pass += 1;
                println!("ok   {}", d.name);
            }
            Err(e) => {
                fail += 1;
                println!("FAIL {e}");
            }
        }
    }
    println!("{pass} passed, {fail} failed");
    if fail == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
