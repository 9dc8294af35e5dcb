//! Subcommands of `mta`. Exit codes follow qmail-inject: 0 ok, 100 permanent, 111 temporary.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use mta::env::real::RealEnv;
use mta::env::{unix_secs, Env};
use mta::init::{self, InitOptions};
use mta::inject::{self, Origin};
use mta::queue::{self, Channel, Paths, Status};

const EXIT_PERM: i32 = inject::EXIT_PERM;
const EXIT_TEMP: i32 = inject::EXIT_TEMP;

#[derive(Parser)]
#[command(
    name = "mta",
    version,
    about = "A qmail-compatible mail transfer agent"
)]
struct Cli {
    /// Installation directory (control/, queue/, alias/, users/, home/).
    #[arg(long, global = true, env = "MTA_ROOT")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create an installation.
    Init {
        /// This host's fully qualified domain name.
        #[arg(long)]
        me: String,
        /// A local user with a Maildir under home/NAME (repeatable; the first gets the aliases).
        #[arg(long = "user")]
        users: Vec<String>,
        /// Rewrite control files, aliases and users/assign of an existing installation
        /// (never the queue or mailboxes).
        #[arg(long)]
        force: bool,
    },
    /// Queue a message read from standard input (qmail-inject / sendmail).
    Inject {
        /// Envelope sender (empty for the null sender).
        #[arg(short = 'f')]
        sender: Option<String>,
        /// Take recipients from the To, Cc and Bcc headers.
        #[arg(short = 't')]
        extract: bool,
        /// Accepted for sendmail compatibility; lines with a lone dot do not end input anyway.
        #[arg(short = 'i', hide = true)]
        ignore_dots: bool,
        recipients: Vec<String>,
    },
    /// Run the SMTP receiver with the queue (SIGTERM/SIGINT: finish sessions and exit;
    /// SIGHUP: reread control files).
    Run {
        /// Address to listen on for SMTP.
        #[arg(long, default_value = "127.0.0.1:2525")]
        listen: std::net::SocketAddr,
        /// A DNS server to ask instead of those in /etc/resolv.conf (repeatable; port 53
        /// unless given, e.g. 127.0.0.1:5353).
        #[arg(long = "nameserver", value_name = "ADDR", value_parser = nameserver)]
        nameservers: Vec<std::net::SocketAddr>,
    },
    /// Inspect the queue.
    Queue {
        #[command(subcommand)]
        cmd: QueueCmd,
    },
}

#[derive(Subcommand)]
enum QueueCmd {
    /// Every queued message with its sender and recipients (qmail-qread).
    List,
    /// Counts (qmail-qstat).
    Stat,
    /// Ask the running `mta run` to try every pending delivery now (SIGALRM).
    Flush,
}

pub fn main() -> i32 {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MTA_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_PERM } else { 0 };
        }
    };
    let Some(root) = cli.root else {
        eprintln!("mta: no installation given: use --root DIR or set MTA_ROOT");
        return EXIT_PERM;
    };
    let env = RealEnv::new();
    match cli.cmd {
        Cmd::Init { me, users, force } => cmd_init(&env, &root, me, users, force),
        Cmd::Inject {
            sender,
            extract,
            recipients,
            ..
        } => cmd_inject(&env, &root, sender, extract, recipients),
        Cmd::Queue { cmd } => cmd_queue(&env, &root, cmd),
        Cmd::Run {
            listen,
            nameservers,
        } => crate::run::run(env, &root, listen, nameservers),
    }
}

/// `IP` or `IP:PORT` (`[IPv6]:PORT`).
fn nameserver(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
        .map_err(|_| format!("not an address: {s:?}"))
}

fn cmd_init(env: &RealEnv, root: &Path, me: String, users: Vec<String>, force: bool) -> i32 {
    let (uid, gid) = std::fs::metadata("/proc/self").map_or((0, 0), |m| (m.uid(), m.gid()));
    let o = InitOptions {
        me,
        users,
        force,
        uid,
        gid,
        disabled: Default::default(),
    };
    match init::init(env, root, &o) {
        Ok(()) => {
            println!("initialized {}", root.display());
            0
        }
        Err(e @ (init::InitError::Exists(_) | init::InitError::Invalid { .. })) => {
            eprintln!("mta init: {e}");
            EXIT_PERM
        }
        Err(e) => {
            eprintln!("mta init: {e}");
            EXIT_TEMP
        }
    }
}

fn var(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

fn cmd_inject(
    env: &RealEnv,
    root: &Path,
    sender: Option<String>,
    extract: bool,
    recipients: Vec<String>,
) -> i32 {
    let mut message = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(inject::MAX_MESSAGE as u64 + 1)
        .read_to_end(&mut message);
    if let Err(e) = read {
        eprintln!("mta inject: unable to read message: {e}");
        return inject::EXIT_TEMP;
    }
    let inv = inject::Invocation {
        sender,
        extract,
        recipients,
        message,
        origin: Origin {
            user: var(&["QMAILUSER", "MAILUSER", "USER", "LOGNAME"]),
            host: var(&["QMAILHOST", "MAILHOST"]),
            name: var(&["QMAILNAME", "MAILNAME", "NAME"]),
        },
        pid: u64::from(std::process::id()),
        uid: std::fs::metadata("/proc/self").map_or(0, |m| m.uid()),
    };
    match inject::run(env, root, &inv) {
        Ok(_) => 0,
        Err(f) => {
            eprintln!("mta inject: {}", f.message);
            f.exit
        }
    }
}

fn cmd_flush(root: &Path) -> i32 {
    use mta::env::Fs;
    // If we can take the queue lock, no mta run holds it: a pid in the file is stale.
    if mta::env::real::RealFs
        .try_lock(&root.join("queue/lock"))
        .is_ok()
    {
        eprintln!(
            "mta queue flush: no mta run is running on {}",
            root.display()
        );
        return EXIT_TEMP;
    }
    let pid = std::fs::read_to_string(root.join("queue/lock"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let Some(pid) = pid else {
        eprintln!(
            "mta queue flush: no running mta run found for {}",
            root.display()
        );
        return EXIT_TEMP;
    };
    match std::process::Command::new("kill")
        .args(["-ALRM", &pid.to_string()])
        .status()
    {
        Ok(s) if s.success() => 0,
        _ => {
            eprintln!("mta queue flush: mta run (pid {pid}) is not running");
            EXIT_TEMP
        }
    }
}

fn cmd_queue(env: &RealEnv, root: &Path, cmd: QueueCmd) -> i32 {
    if let QueueCmd::Flush = cmd {
        return cmd_flush(root);
    }
    let view = match queue::View::load(env, &Paths::new(root.join("queue"))) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("mta queue: {e}");
            return EXIT_TEMP;
        }
    };
    let now = unix_secs(env.now());
    match cmd {
        QueueCmd::Stat => {
            println!(
                "messages in queue: {}",
                view.messages.len() + view.todo.len()
            );
            println!(
                "messages in queue but not yet preprocessed: {}",
                view.todo.len()
            );
            let pending = |c| {
                view.messages
                    .iter()
                    .flat_map(|m| &m.rcpts)
                    .filter(|r| r.rcpt.channel == c && r.status == Status::Pending)
                    .count()
            };
            println!("recipients pending local: {}", pending(Channel::Local));
            println!("recipients pending remote: {}", pending(Channel::Remote));
        }
        QueueCmd::List => {
            let age = |b: u64| {
                let s = now.saturating_sub(b);
                format!("{}d{:02}h{:02}m", s / 86400, s / 3600 % 24, s / 60 % 60)
            };
            for m in &view.messages {
                let e = &m.env;
                println!(
                    "{}  #{}  {}  <{}>  age {}",
                    mta::date::rfc822(e.birth),
                    e.id,
                    m.size(),
                    e.sender,
                    age(e.birth)
                );
                for r in &m.rcpts {
                    let ch = match r.rcpt.channel {
                        Channel::Local => "local",
                        Channel::Remote => "remote",
                    };
                    let st = match &r.status {
                        Status::Pending => "pending".to_string(),
                        Status::Delivered => "done".to_string(),
                        Status::Failed(why) => format!("failed: {why}"),
                    };
                    println!("\t{ch}\t{}\t{st}", r.rcpt.addr);
                }
            }
            for (e, size) in &view.todo {
                println!(
                    "{}  #{}  {}  <{}>  age {}  (not yet preprocessed)",
                    mta::date::rfc822(e.birth),
                    e.id,
                    size,
                    e.sender,
                    age(e.birth)
                );
                for r in &e.recipients {
                    println!("\t?\t{r}\tpending");
                }
            }
        }
        QueueCmd::Flush => unreachable!("handled above"),
    }
    0
}
