//! Subcommands of `mta`. Exit codes follow qmail-inject: 0 ok, 100 permanent, 111 temporary.

use std::io::{Read, Write};
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
        /// As root: the account `mta run` gives root up for, which owns the queue (created
        /// as a system account if missing; written to control/queueuser).
        #[arg(long, default_value = "mtaq")]
        queue_user: String,
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
        /// Also listen here for SMTP inside TLS from the first byte (SMTPS, port 465); needs
        /// control/servercert.pem.
        #[arg(long = "listen-tls", value_name = "ADDR")]
        listen_tls: Option<std::net::SocketAddr>,
        /// Also serve POP3 (users' Maildirs, logins through control/checkpassword) here.
        #[arg(long = "listen-pop3", value_name = "ADDR")]
        listen_pop3: Option<std::net::SocketAddr>,
        /// Also serve POP3 inside TLS from the first byte here (POP3S, port 995); needs
        /// control/servercert.pem.
        #[arg(long = "listen-pop3s", value_name = "ADDR")]
        listen_pop3s: Option<std::net::SocketAddr>,
        /// Also receive mail over QMTP here (port 209 by convention; smtp.rules apply).
        #[arg(long = "listen-qmtp", value_name = "ADDR")]
        listen_qmtp: Option<std::net::SocketAddr>,
        /// Also take mail from mini-qmail hosts over QMQP here (port 628 by convention;
        /// only clients control/qmqp.rules allows).
        #[arg(long = "listen-qmqp", value_name = "ADDR")]
        listen_qmqp: Option<std::net::SocketAddr>,
    },
    /// Set a user's SMTP AUTH password in control/passwd (read from standard input: its
    /// first line, or all of it).
    Passwd {
        /// The user name clients give to AUTH.
        user: String,
    },
    /// Serve POP3 alone, keeping root (as tcpserver runs qmail-popup); `mta run
    /// --listen-pop3` does the same through its root POP3 helper. SIGTERM/SIGINT: finish
    /// sessions and exit.
    Pop3d {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:110")]
        listen: std::net::SocketAddr,
        /// Also listen here for POP3 inside TLS (POP3S, port 995); needs
        /// control/servercert.pem.
        #[arg(long = "listen-tls", value_name = "ADDR")]
        listen_tls: Option<std::net::SocketAddr>,
    },
    /// Compile users/assign into users/cdb (qmail-newu): lookups then read the table
    /// instead of the file, and edits of users/assign apply at the next `mta newu`.
    Newu,
    /// Inspect the queue.
    Queue {
        #[command(subcommand)]
        cmd: QueueCmd,
    },
    /// The local-delivery helper `mta run` starts as root for itself (qmail-lspawn): requests
    /// on standard input, outcomes on standard output.
    #[command(hide = true)]
    Lspawn,
    /// The POP3 helper `mta run` starts as root for itself when it has a POP3 listener: it
    /// checks logins and works on each mailbox as its owner; requests on standard input,
    /// answers on standard output.
    #[command(hide = true)]
    Pop3helper,
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
        complain!("mta: no installation given: use --root DIR or set MTA_ROOT");
        return EXIT_PERM;
    };
    let env = RealEnv::new();
    match cli.cmd {
        Cmd::Init {
            me,
            users,
            force,
            queue_user,
        } => cmd_init(&env, &root, me, users, force, queue_user),
        Cmd::Inject {
            sender,
            extract,
            recipients,
            ..
        } => cmd_inject(&env, &root, sender, extract, recipients),
        Cmd::Queue { cmd } => cmd_queue(&env, &root, cmd),
        Cmd::Newu => match mta::local::assign::newu(env.fs(), &root) {
            Ok(n) => finish_output(
                writeln!(std::io::stdout(), "users/cdb: {n} entries"),
                "mta newu",
            ),
            Err(e @ mta::local::assign::NewuError::Assign(_)) => {
                complain!("mta newu: {e}");
                EXIT_PERM
            }
            Err(e) => {
                complain!("mta newu: {e}");
                EXIT_TEMP
            }
        },
        Cmd::Run {
            listen,
            nameservers,
            listen_tls,
            listen_pop3,
            listen_pop3s,
            listen_qmtp,
            listen_qmqp,
        } => {
            let extra = mta::daemon::Listeners {
                pop3: listen_pop3,
                pop3s: listen_pop3s,
                qmtp: listen_qmtp,
                qmqp: listen_qmqp,
            };
            crate::run::run(env, &root, listen, listen_tls, nameservers, extra)
        }
        Cmd::Passwd { user } => cmd_passwd(&root, &user),
        Cmd::Lspawn => crate::run::lspawn(env, &root),
        Cmd::Pop3helper => crate::run::pop3helper(env, &root),
        Cmd::Pop3d { listen, listen_tls } => crate::run::pop3d(env, &root, listen, listen_tls),
    }
}

/// `IP` or `IP:PORT` (`[IPv6]:PORT`).
fn nameserver(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
        .map_err(|_| format!("not an address: {s:?}"))
}

fn cmd_init(
    env: &RealEnv,
    root: &Path,
    me: String,
    users: Vec<String>,
    force: bool,
    queue_user: String,
) -> i32 {
    let (uid, gid) = std::fs::metadata("/proc/self").map_or((0, 0), |m| (m.uid(), m.gid()));
    // As root, deliveries change user, so every user needs an account of its own.
    let owners = if uid == 0 {
        users.iter().map(|u| (u.clone(), account(u))).collect()
    } else {
        Default::default()
    };
    let o = InitOptions {
        me,
        users,
        force,
        uid,
        gid,
        owners,
        // Only root gives anything up; an ordinary user's server runs as that user.
        queue_user: (uid == 0).then_some(queue_user),
        disabled: Default::default(),
    };
    let done = init::init(env, root, &o).and_then(|()| {
        servercert(root, &o.me)?;
        if let Some(q) = &o.queue_user {
            give_homes(root, &o)?;
            crate::owners::hand_over(root, q)?;
        }
        Ok(())
    });
    match done {
        Ok(()) => finish_output(
            writeln!(std::io::stdout(), "initialized {}", root.display()),
            "mta init",
        ),
        Err(e @ (init::InitError::Exists(_) | init::InitError::Invalid { .. })) => {
            complain!("mta init: {e}");
            EXIT_PERM
        }
        Err(e) => {
            complain!("mta init: {e}");
            EXIT_TEMP
        }
    }
}

/// A self-signed certificate for a fresh installation (an existing control/servercert.pem is
/// kept, even with --force): STARTTLS works from the start.
fn servercert(root: &Path, me: &str) -> Result<(), init::InitError> {
    let path = root.join(mta::tls::SERVERCERT);
    if path.exists() {
        return Ok(());
    }
    let io = |source| init::InitError::Io {
        context: format!("write {}", path.display()),
        source,
    };
    let pem = mta::tls::self_signed(me).map_err(|e| io(std::io::Error::other(e)))?;
    write_private(&path, pem.as_bytes()).map_err(io)
}

/// Write a file only its owner may read (mode 0600), durably, replacing any old one
/// atomically.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// `mta passwd USER`: hash the password from standard input into control/passwd.
fn cmd_passwd(root: &Path, user: &str) -> i32 {
    if let Err(e) = mta::passwd::valid_user(user) {
        complain!("mta passwd: {e}");
        return EXIT_PERM;
    }
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().lock().take(4096).read_to_end(&mut input) {
        complain!("mta passwd: unable to read the password: {e}");
        return EXIT_TEMP;
    }
    // The first line (what `echo` or a terminal gives), without its line end.
    let password = input.split(|&b| b == b'\n').next().unwrap_or_default();
    let password = password.strip_suffix(b"\r").unwrap_or(password);
    let hash = match mta::passwd::hash(password, rand::random()) {
        Ok(h) => h,
        Err(e) => {
            complain!("mta passwd: {e}");
            return EXIT_PERM;
        }
    };
    let path = root.join(mta::passwd::FILE);
    let old = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            complain!("mta passwd: unable to read {}: {e}", path.display());
            return EXIT_TEMP;
        }
    };
    let text = mta::passwd::set(&old, user, &hash);
    let written = write_private(&path, text.as_bytes())
        .and_then(|()| crate::owners::give_secret(root, &path));
    match written {
        Ok(()) => 0,
        Err(e) => {
            complain!("mta passwd: unable to write {}: {e}", path.display());
            EXIT_TEMP
        }
    }
}

/// A root installation's account for a user: the system account of that name, else
/// `nobody` (a virtual user: its mail is written as nobody, never as root).
fn account(user: &str) -> (u32, u32) {
    let pw = |n: &str| nix::unistd::User::from_name(n).ok().flatten();
    if let Some(p) = pw(user) {
        if !p.uid.is_root() {
            return (p.uid.as_raw(), p.gid.as_raw());
        }
    }
    let (u, g) = pw("nobody").map_or((65534, 65534), |p| (p.uid.as_raw(), p.gid.as_raw()));
    complain!("mta init: {user} is not a system account: its mail is delivered as uid {u}");
    (u, g)
}

/// Hand each home and its Maildir to its user, and the alias directory to the `alias`
/// account (else nobody): deliveries run as them and must be able to write there.
fn give_homes(root: &Path, o: &InitOptions) -> Result<(), init::InitError> {
    let chown = |p: &Path, (u, g): (u32, u32)| {
        std::os::unix::fs::lchown(p, Some(u), Some(g)).map_err(|source| init::InitError::Io {
            context: format!("chown {}", p.display()),
            source,
        })
    };
    for u in &o.users {
        let ids = o.owners.get(u).copied().unwrap_or((o.uid, o.gid));
        let home = root.join("home").join(u);
        for d in ["", "Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"] {
            chown(&home.join(d), ids)?;
        }
    }
    let alias = nix::unistd::User::from_name("alias").ok().flatten();
    let ids = alias
        .filter(|p| !p.uid.is_root())
        .map_or_else(|| account("nobody"), |p| (p.uid.as_raw(), p.gid.as_raw()));
    chown(&root.join("alias"), ids)?;
    // The alias files init wrote are read by deliveries running as that account.
    for a in ["postmaster", "mailer-daemon", "root", "abuse"] {
        let f = root.join("alias").join(format!(".qmail-{a}"));
        if f.exists() {
            chown(&f, ids)?;
        }
    }
    Ok(())
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
        complain!("mta inject: unable to read message: {e}");
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
    match mta::qmqp::servers(&mta::env::real::RealFs, root) {
        Ok(None) => {}
        Ok(Some(servers)) => return mini_qmail(env, root, &inv, &servers),
        Err(e) => {
            complain!("mta inject: {e}");
            return mta::qmqp::Exit::Config as i32;
        }
    }
    // Root writes the queue as its owner (qmail-queue is setuid qmailq), or the queue user
    // could not read what root wrote.
    if let Err(e) = crate::owners::as_queue_user(env, root) {
        complain!("mta inject: {e}");
        return EXIT_TEMP;
    }
    match inject::run(env, root, &inv) {
        Ok(_) => 0,
        Err(f) => {
            complain!("mta inject: {}", f.message);
            f.exit
        }
    }
}

/// A mini-qmail host (control/qmqpservers): no queue here, the message goes over QMQP, and
/// the exit status is qmail-qmqpc's.
fn mini_qmail(
    env: &RealEnv,
    root: &Path,
    inv: &inject::Invocation,
    servers: &[std::net::SocketAddr],
) -> i32 {
    let msg = match inject::message(env, root, inv) {
        Ok(m) => m,
        Err(f) => {
            complain!("mta inject: {}", f.message);
            return f.exit;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            complain!("mta inject: cannot start: {e}");
            return inject::EXIT_TEMP;
        }
    };
    match rt.block_on(mta::qmqp::send(env, servers, &msg)) {
        Ok(_) => 0,
        Err((exit, text)) => {
            let said = if text.is_empty() {
                String::new()
            } else {
                format!(": {text}")
            };
            complain!("mta inject: {}{said}", exit.text());
            exit as i32
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
        complain!(
            "mta queue flush: no mta run is running on {}",
            root.display()
        );
        return EXIT_TEMP;
    }
    let pid = std::fs::read_to_string(root.join("queue/lock"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let Some(pid) = pid else {
        complain!(
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
            complain!("mta queue flush: mta run (pid {pid}) is not running");
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
            complain!("mta queue: {e}");
            return EXIT_TEMP;
        }
    };
    let now = unix_secs(env.now());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = match cmd {
        QueueCmd::Stat => queue_stat(&view, &mut out),
        QueueCmd::List => queue_list(&view, now, &mut out),
        QueueCmd::Flush => unreachable!("handled above"),
    };
    finish_output(written.and_then(|()| out.flush()), "mta queue")
}

/// The exit code once a command's output is written. A reader that went away (`| head`)
/// ends the command quietly, as a program killed by SIGPIPE would, but without a signal.
fn finish_output(r: std::io::Result<()>, who: &str) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            complain!("{who}: unable to write output: {e}");
            EXIT_TEMP
        }
    }
}

/// qmail-qstat.
fn queue_stat(view: &queue::View, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "messages in queue: {}",
        view.messages.len() + view.todo.len()
    )?;
    writeln!(
        out,
        "messages in queue but not yet preprocessed: {}",
        view.todo.len()
    )?;
    let pending = |c| {
        view.messages
            .iter()
            .flat_map(|m| &m.rcpts)
            .filter(|r| r.rcpt.channel == c && r.status == Status::Pending)
            .count()
    };
    writeln!(out, "recipients pending local: {}", pending(Channel::Local))?;
    writeln!(
        out,
        "recipients pending remote: {}",
        pending(Channel::Remote)
    )?;
    Ok(())
}

/// qmail-qread.
fn queue_list(view: &queue::View, now: u64, out: &mut impl Write) -> std::io::Result<()> {
    let age = |b: u64| {
        let s = now.saturating_sub(b);
        format!("{}d{:02}h{:02}m", s / 86400, s / 3600 % 24, s / 60 % 60)
    };
    for m in &view.messages {
        let e = &m.env;
        writeln!(
            out,
            "{}  #{}  {}  <{}>  age {}",
            mta::date::rfc822(e.birth),
            e.id,
            m.size(),
            e.sender,
            age(e.birth)
        )?;
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
            writeln!(out, "\t{ch}\t{}\t{st}", r.rcpt.addr)?;
        }
    }
    for (e, size) in &view.todo {
        writeln!(
            out,
            "{}  #{}  {}  <{}>  age {}  (not yet preprocessed)",
            mta::date::rfc822(e.birth),
            e.id,
            size,
            e.sender,
            age(e.birth)
        )?;
        for r in &e.recipients {
            writeln!(out, "\t?\t{r}\tpending")?;
        }
    }
    Ok(())
}
