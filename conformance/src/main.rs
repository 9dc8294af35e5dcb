//! `mta-conform`: play the SMTP conformance dialogues, or the RFC 5321 catalogue, against a
//! live server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use conformance::catalogue;
use conformance::play::{Mailbox, Vars};
use conformance::profile::Profile;
use conformance::runner::{self, Options};
use conformance::{fixtures, report, run, Dialogue, Match};

#[derive(Parser)]
#[command(
    name = "mta-conform",
    about = "Play SMTP conformance dialogues against a server",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    dialogues: DialogueArgs,
}

/// Without a subcommand: the qmail-flavoured dialogues of `fixtures/smtp/`.
#[derive(Args)]
struct DialogueArgs {
    /// Server address, e.g. 127.0.0.1:2525.
    #[arg(long, required = true)]
    server: Option<std::net::SocketAddr>,
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

#[derive(Subcommand)]
enum Cmd {
    /// Run the RFC 5321 requirement catalogue (`fixtures/rfc5321/`) against a server.
    Catalogue(CatalogueArgs),
    /// Play QMTP or QMQP dialogues (`fixtures/qmtp/`, `fixtures/qmqp/`) against a server.
    Netstrings(conformance::netstrings::Args),
    /// Act as a scripted SMTP server an MTA relays into, and judge the MTA's client side
    /// (`fixtures/rfc5321-client/`).
    Client(ClientArgs),
    /// Run the whole catalogue against mta, Postfix, OpenSMTPD and Exim side by side
    /// (installed and started by `conformance/scripts/matrix.sh`, stopped afterwards) and
    /// write the requirement × server report. Needs root.
    Matrix(MatrixArgs),
}

#[derive(Args)]
struct MatrixArgs {
    /// The mta binary to run (default: `mta` beside this program).
    #[arg(long)]
    mta: Option<PathBuf>,
    /// Where the servers' installations, queues and Maildirs go (removed at the start).
    #[arg(long, default_value = "/var/tmp/mta-conform-matrix")]
    work: PathBuf,
    /// The report to write.
    #[arg(long, default_value = "reports/conformance.md")]
    report: PathBuf,
    /// Notes included at the end of the report (spot-checks of failures against the RFC;
    /// default: the repository's `conformance/matrix-notes.md`).
    #[arg(long)]
    notes: Option<PathBuf>,
    /// Seconds allowed per entry.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

#[derive(Args)]
struct ClientArgs {
    /// Where to listen, e.g. 127.0.0.1:2600 (the MTA routes --domain here).
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Run only these scenarios (ids, or a part of them); default: all.
    #[arg(long)]
    scenario: Vec<String>,
    /// The domain served; senders and recipients are made up in it.
    #[arg(long, default_value = "conform.test")]
    domain: String,
    /// Shell command that hands the MTA one message: $CONFORM_SENDER, $CONFORM_RCPTS
    /// (space-separated), the message on stdin. Without it the runner prints what to send
    /// and waits.
    #[arg(long)]
    inject: Option<String>,
    /// Shell command that makes the MTA retry deferred mail now (e.g. `mta queue flush`).
    #[arg(long)]
    kick: Option<String>,
    /// Seconds allowed per scenario.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// The scenario directory (default: the repository's `fixtures/rfc5321-client`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write a Markdown report here.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Args)]
struct CatalogueArgs {
    /// Server address, HOST:PORT.
    #[arg(long)]
    server: String,
    /// Profile: generic (reply codes), mta or qmail (exact texts), or a file's stem in
    /// `fixtures/rfc5321/profiles/`.
    #[arg(long, default_value = "generic")]
    profile: String,
    /// Write a Markdown report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// A Maildir that receives mail for --rcpt: enables the delivered-message checks.
    #[arg(long)]
    maildir: Option<PathBuf>,
    /// Also run the entries that take minutes (timeouts).
    #[arg(long)]
    slow: bool,
    /// Seconds allowed per entry.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Only entries whose id contains this.
    #[arg(long)]
    only: Option<String>,
    /// The catalogue directory (default: the repository's `fixtures/rfc5321`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The server's domain (it must accept mail for ${rcpt} and postmaster there).
    #[arg(long, default_value = "heaven.af.mil")]
    domain: String,
    /// A recipient the server accepts and delivers.
    #[arg(long, default_value = "fred@heaven.af.mil")]
    rcpt: String,
    /// The envelope sender used.
    #[arg(long, default_value = "joe@example.net")]
    sender: String,
    /// The name the client gives in EHLO/HELO.
    #[arg(long, default_value = "client.example")]
    client: String,
    /// The command to name in the report's header as the one that made it.
    #[arg(long)]
    generated_by: Option<String>,
    /// A user the server accepts for SMTP AUTH: enables the `needs:credentials` entries.
    #[arg(long)]
    auth_user: Option<String>,
    /// That user's password.
    #[arg(long, default_value = "")]
    auth_pass: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match cli.cmd {
        Some(Cmd::Catalogue(a)) => rt.block_on(catalogue_cmd(a)),
        Some(Cmd::Netstrings(a)) => rt.block_on(conformance::netstrings::cli(a)),
        Some(Cmd::Client(a)) => rt.block_on(client_cmd(a)),
        Some(Cmd::Matrix(a)) => rt.block_on(matrix_cmd(a)),
        None => dialogues_cmd(&rt, cli.dialogues),
    }
}

fn dialogues_cmd(rt: &tokio::runtime::Runtime, a: DialogueArgs) -> ExitCode {
    let Some(server) = a.server else {
        eprintln!("mta-conform: --server is required");
        return ExitCode::from(2);
    };
    let dir = a.dir.unwrap_or_else(|| fixtures().join("smtp"));
    let dialogues = match Dialogue::load_dir(&dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("mta-conform: {e}");
            return ExitCode::from(2);
        }
    };
    let m = if a.codes_only {
        Match::Code
    } else {
        Match::Text
    };
    let (mut pass, mut fail) = (0, 0);
    let wanted = |n: &str| a.only.as_ref().is_none_or(|o| n.contains(o.as_str()));
    for d in dialogues.iter().filter(|d| wanted(&d.name)) {
        let r = rt.block_on(async {
            let s = tokio::net::TcpStream::connect(server)
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

async fn connect(server: &str) -> std::io::Result<(tokio::net::TcpStream, String)> {
    let s = tokio::net::TcpStream::connect(server).await?;
    let ip = s.local_addr()?.ip().to_string();
    Ok((s, ip))
}

async fn catalogue_cmd(a: CatalogueArgs) -> ExitCode {
    let dir = a.dir.clone().unwrap_or_else(|| fixtures().join("rfc5321"));
    let loaded = catalogue::load(&dir.join("catalogue"))
        .map_err(|e| e.to_string())
        .and_then(|c| {
            let p = Profile::load(&dir.join("profiles"), &a.profile).map_err(|e| e.to_string())?;
            Ok((c, p))
        });
    let (entries, profile) = match loaded {
        Ok(x) => x,
        Err(e) => {
            eprintln!("mta-conform: {e}");
            return ExitCode::from(2);
        }
    };
    let vars = Vars {
        domain: a.domain.clone(),
        rcpt: a.rcpt.clone(),
        sender: a.sender.clone(),
        client: a.client.clone(),
        ip: String::new(),
        token: conformance::run_token(),
        sizemax: 0,
        user: a.auth_user.clone().unwrap_or_default(),
        pass: a.auth_pass.clone(),
    };
    let o = Options {
        mailbox: a.maildir.clone().map(Mailbox),
        slow: a.slow,
        timeout: Duration::from_secs(a.timeout),
        only: a.only.clone(),
    };
    let server = a.server.clone();
    let rs = match runner::run_all(&entries, || connect(&server), &vars, &profile, &o).await {
        Ok(rs) => rs,
        Err(e) => {
            eprintln!("mta-conform: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report::text(&rs));
    if let Some(path) = &a.report {
        let mut header = conformance::report_header(&a.server, &profile, &o);
        if let Some(g) = &a.generated_by {
            header.insert(0, format!("Generated by `{g}`"));
        }
        if let Err(e) = std::fs::write(path, report::markdown(&rs, &header)) {
            eprintln!("mta-conform: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if runner::must_failed(&rs) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Run a shell command with the injection in its environment and the message on stdin.
fn inject_with(cmd: Option<&str>, i: &conformance::client::Injection) -> Result<(), String> {
    use std::io::Write;
    let Some(cmd) = cmd else {
        println!(
            "send now: from {} to {}:\n{}",
            i.sender,
            i.rcpts.join(" "),
            i.message
        );
        return Ok(());
    };
    let mut c = std::process::Command::new("sh")
        .args(["-c", cmd])
        .env("CONFORM_SENDER", &i.sender)
        .env("CONFORM_RCPTS", i.rcpts.join(" "))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if let Some(mut w) = c.stdin.take() {
        w.write_all(i.message.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    match c.wait() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{cmd}: {s}")),
        Err(e) => Err(e.to_string()),
    }
}

async fn client_cmd(a: ClientArgs) -> ExitCode {
    use conformance::client::{self, scenario};
    let dir = a
        .dir
        .clone()
        .unwrap_or_else(|| fixtures().join("rfc5321-client"));
    let all = match scenario::load(&dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mta-conform: {e}");
            return ExitCode::from(2);
        }
    };
    let wanted =
        |id: &str| a.scenario.is_empty() || a.scenario.iter().any(|w| id.contains(w.as_str()));
    let chosen: Vec<_> = all.into_iter().filter(|s| wanted(&s.id)).collect();
    let listener = match tokio::net::TcpListener::bind(a.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mta-conform: listen on {}: {e}", a.listen);
            return ExitCode::from(2);
        }
    };
    let (inject, kick) = (a.inject.clone(), a.kick.clone());
    let hooks = client::Hooks {
        inject: |i: &client::Injection| inject_with(inject.as_deref(), i),
        kick: || {
            if let Some(k) = &kick {
                let _ = std::process::Command::new("sh").args(["-c", k]).status();
            }
        },
    };
    let timeout = Duration::from_secs(a.timeout);
    let rs = client::play_all(listener, &chosen, &a.domain, hooks, timeout).await;
    print!("{}", report::text(&rs));
    if let Some(path) = &a.report {
        let header = vec![format!(
            "Client scenarios against the MTA relaying to {}",
            a.listen
        )];
        if let Err(e) = std::fs::write(path, report::markdown(&rs, &header)) {
            eprintln!("mta-conform: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if runner::must_failed(&rs) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The catalogue against one of the matrix's servers.
async fn run_peer(
    p: &conformance::matrix::Peer,
    timeout: u64,
) -> Result<Vec<conformance::runner::Result1>, String> {
    let dir = fixtures().join("rfc5321");
    let entries = catalogue::load(&dir.join("catalogue")).map_err(|e| e.to_string())?;
    let profile = Profile::load(&dir.join("profiles"), &p.profile).map_err(|e| e.to_string())?;
    let (user, pass) = p.auth.clone().unwrap_or_default();
    let vars = Vars {
        domain: "heaven.af.mil".into(),
        rcpt: "fred@heaven.af.mil".into(),
        sender: "joe@example.net".into(),
        client: "client.example".into(),
        ip: String::new(),
        token: conformance::run_token(),
        sizemax: 0,
        user,
        pass,
    };
    let o = Options {
        mailbox: Some(Mailbox(p.maildir.clone())),
        slow: false,
        timeout: Duration::from_secs(timeout),
        only: None,
    };
    let addr = p.addr.clone();
    runner::run_all(&entries, || connect(&addr), &vars, &profile, &o).await
}

fn script(step: &str, a: &MatrixArgs, mta: &std::path::Path) -> std::io::Result<String> {
    let path = fixtures().join("../conformance/scripts/matrix.sh");
    let out = std::process::Command::new("bash")
        .arg(path)
        .arg(step)
        .arg(&a.work)
        .arg(mta)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn matrix_cmd(a: MatrixArgs) -> ExitCode {
    use conformance::matrix;
    let mta = a.mta.clone().unwrap_or_else(|| {
        let me = std::env::current_exe().unwrap_or_default();
        me.with_file_name("mta")
    });
    let started = match script("start", &a, &mta) {
        Ok(out) => matrix::parse_started(&out),
        Err(e) => {
            eprintln!("mta-conform: matrix.sh: {e}");
            return ExitCode::from(2);
        }
    };
    let mut runs = Vec::new();
    let mut unavailable = started.unavailable.clone();
    for p in started.peers {
        eprintln!("mta-conform: catalogue against {} ({})", p.name, p.addr);
        match run_peer(&p, a.timeout).await {
            Ok(rs) => runs.push((p, rs)),
            Err(e) => {
                unavailable.push((p.name.clone(), format!("the catalogue could not run: {e}")))
            }
        }
    }
    if let Err(e) = script("stop", &a, &mta) {
        eprintln!("mta-conform: matrix.sh stop: {e}");
    }
    let notes_file = a
        .notes
        .clone()
        .unwrap_or_else(|| fixtures().join("../conformance/matrix-notes.md"));
    let notes = std::fs::read_to_string(notes_file).unwrap_or_default();
    let mut header = vec![
        "Generated by `mta-conform matrix` (servers set up by `conformance/scripts/matrix.sh`)"
            .to_string(),
    ];
    header.push(
        "Delivery checks: on (each server's Maildir for fred); slow entries: off (n/a)".into(),
    );
    header.extend(conformance::machine_and_date());
    let text = matrix::markdown(&runs, &unavailable, &header, &notes);
    if let Err(e) = std::fs::write(&a.report, text) {
        eprintln!("mta-conform: {}: {e}", a.report.display());
        return ExitCode::from(2);
    }
    for (p, rs) in &runs {
        let text = report::text(rs);
        let totals: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with(' '))
            .filter(|l| l.contains(": "))
            .collect();
        eprintln!("{}: {}", p.name, totals.join("; "));
    }
    let mta_failed = runs
        .iter()
        .any(|(p, rs)| p.name == "mta" && runner::must_failed(rs));
    if mta_failed || runs.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
