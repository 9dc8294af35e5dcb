//! Local delivery (qmail-lspawn + qmail-local): find the user and the `.qmail` file for a
//! recipient, then carry out its instructions: Maildir (exactly once), mbox, programs, forwards.

pub mod assign;
pub mod dirsync;
pub mod dotqmail;
pub mod getpw;
pub mod lspawn;
pub mod maildir;
pub mod mbox;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::control::{ControlDir, ControlError};
use crate::date;
use crate::env::{Creds, Env, Exit, Fs, Program};
use crate::queue::{Body, BodyRef, Disabled, MsgId};
use assign::{Assign, User};
use dotqmail::Instruction;

/// What local delivery reads from the installation.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub root: PathBuf,
    pub me: String,
    pub assign: Assign,
    /// Instructions used when there is no `.qmail` file (control/defaultdelivery).
    pub defaultdelivery: String,
    /// Verification only: fsync points to skip.
    pub disabled: Disabled,
    /// control/getpw (default 0): local parts not in users/assign are looked up in
    /// /etc/passwd as qmail-getpw does before they go to the alias user.
    pub passwd: bool,
    /// Maildir `new/` fsyncs shared by concurrent deliveries (this process's).
    pub dir_syncs: Arc<dirsync::DirSyncs>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalConfigError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Assign(#[from] assign::AssignError),
    #[error("users/assign: {0}")]
    Read(std::io::Error),
}

impl LocalConfig {
    pub fn load<F: Fs>(fs: &F, root: &Path) -> Result<Self, LocalConfigError> {
        let c = ControlDir::new(fs, root);
        let assign = match fs.read(&root.join("users/assign")) {
            Ok(b) => Assign::parse(&String::from_utf8_lossy(&b))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Assign::default(),
            Err(e) => return Err(LocalConfigError::Read(e)),
        };
        let defaultdelivery = c
            .lines("defaultdelivery")?
            .map(|l| l.join("\n"))
            .unwrap_or_else(|| "./Maildir/".into());
        Ok(LocalConfig {
            root: root.to_path_buf(),
            me: c.me()?,
            assign,
            defaultdelivery,
            disabled: Disabled::none(),
            passwd: c.switch("getpw", false)?,
            dir_syncs: Default::default(),
        })
    }
}

impl LocalConfig {
    /// The user a local part belongs to: from `users/cdb` when `mta newu` made one (as
    /// qmail-lspawn reads it), else `users/assign`; then, with `getpw`, the system's accounts.
    pub fn user<F: Fs>(&self, fs: &F, local: &str) -> std::io::Result<Option<User>> {
        let cdb = self.root.join("users/cdb");
        let found = match fs.open_rw(&cdb) {
            Ok(mut f) => assign::lookup_cdb(&mut f, local)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.assign.lookup(local),
            // Readable but not writable (root's table, read by the queue user): whole.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                let mut f = crate::cdb::InMemory(fs.read(&cdb)?);
                assign::lookup_cdb(&mut f, local)?
            }
            Err(e) => return Err(e),
        };
        Ok(found.or_else(|| {
            self.passwd
                .then(|| getpw::lookup(fs, Path::new(PASSWD), local))
                .flatten()
        }))
    }
}

/// The system's account list (qmail-getpw's getpwnam).
pub const PASSWD: &str = "/etc/passwd";

/// One recipient of one message.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: MsgId,
    pub rcpt: u32,
    pub sender: String,
    /// The recipient after rewriting (`local@domain`).
    pub recipient: String,
    /// Where the message is in the queue; read a piece at a time.
    pub message: BodyRef,
    /// True when no earlier attempt can have written this recipient's mail (the message is
    /// new in this process and this is its first try): Maildir need not look for a copy.
    pub first_attempt: bool,
}

/// How a local delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done. `forwards` must be queued (the message behind `forward_prefix`, from
    /// `forward_sender`).
    Delivered {
        report: String,
        forwards: Vec<String>,
        forward_sender: String,
        forward_prefix: Vec<u8>,
    },
    Deferred(String),
    Failed(String),
}

fn perm_code(code: i32) -> bool {
    matches!(code, 64 | 65 | 70 | 76 | 77 | 78 | 100 | 112)
}

/// The header block qmail-local prepends for files and forwards.
fn dtline(recipient: &str) -> String {
    format!("Delivered-To: {recipient}\n")
}

/// How much of a message is searched for our Delivered-To line (a header longer than this is
/// not searched to its end; SMTP's hop count still stops a loop).
const MAX_LOOP_SCAN: usize = 1 << 20;

/// True if the message header already holds exactly this Delivered-To line.
fn looping(message: &[u8], dt: &str) -> bool {
    let want = dt.trim_end().as_bytes();
    for line in message.split(|&b| b == b'\n') {
        if line.is_empty() {
            return false;
        }
        if line.eq_ignore_ascii_case(want) {
            return true;
        }
    }
    false
}

/// qmail-command's HOST2..4 / EXT2..4: the part before the n-th last dot, after the n-th dash.
fn host_n(host: &str, n: usize) -> String {
    let mut h = host;
    for _ in 1..n {
        h = h.rfind('.').map_or("", |i| &h[..i]);
    }
    h.to_string()
}
fn ext_n(ext: &str, n: usize) -> String {
    let mut e = ext;
    for _ in 1..n {
        e = e.find('-').map_or("", |i| &e[i + 1..]);
    }
    e.to_string()
}

/// Where a recipient's mail goes: the user, the address split, and the .qmail instructions.
struct Target<'a> {
    user: User,
    /// Where paths inside home are named from (see [`Env::run_as`]).
    base: PathBuf,
    /// What `|program` lines run as (`None`: as this process).
    creds: Option<Creds>,
    local: &'a str,
    domain: &'a str,
    ins: Vec<Instruction>,
    /// The part of the extension a `-default` file matched.
    default: String,
    /// Forwards go out from local-owner@domain when a -owner file exists.
    forward_sender: String,
}

/// The lines qmail-local adds: Return-Path, Delivered-To, and the mbox From_ line.
struct Lines {
    rp: String,
    dt: String,
    ufline: String,
}

impl Lines {
    fn new(d: &Delivery, now: u64) -> Lines {
        let from = if d.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            &d.sender
        };
        Lines {
            rp: format!("Return-Path: <{}>\n", d.sender),
            dt: dtline(&d.recipient),
            ufline: format!("From {from} {}\n", date::ctime(now)),
        }
    }
    /// Return-Path and Delivered-To, as files and programs' input start.
    fn header(&self) -> Vec<u8> {
        format!("{}{}", self.rp, self.dt).into_bytes()
    }
}

/// The recipient's home directory (`home`), checked as qmail-local does.
fn home_checked<F: crate::env::Fs>(fs: &F, home: &Path) -> Result<(), Outcome> {
    match fs.metadata(home) {
        Ok(m) if m.is_dir && m.mode & 0o022 != 0 => Err(Outcome::Deferred(
            "Uh-oh: home directory is writable. (#4.7.0)".into(),
        )),
        Ok(m) if m.is_dir && m.mode & 0o1000 != 0 => Err(Outcome::Deferred(
            "Home directory is sticky: user is editing his .qmail file. (#4.2.1)".into(),
        )),
        Ok(m) if m.is_dir => Ok(()),
        _ => Err(Outcome::Deferred(
            "Unable to switch to home directory. (#4.3.0)".into(),
        )),
    }
}

/// The first .qmail file that exists: (name, the part `-default` matched, contents, mode).
fn find_dotqmail<F: crate::env::Fs>(
    fs: &F,
    user: &User,
    home: &Path,
) -> Result<Option<(String, String, String, u32)>, Outcome> {
    for (name, default) in dotqmail::candidates(&user.dash, &user.ext) {
        let p = home.join(&name);
        match fs.metadata(&p) {
            Ok(m) if m.mode & 0o022 != 0 => {
                return Err(Outcome::Deferred(
                    "Uh-oh: .qmail file is writable. (#4.7.0)".into(),
                ))
            }
            Ok(m) => match fs.read(&p) {
                Ok(b) => {
                    return Ok(Some((
                        name,
                        default,
                        String::from_utf8_lossy(&b).into_owned(),
                        m.mode,
                    )))
                }
                Err(_) => {
                    return Err(Outcome::Deferred(format!(
                        "Unable to read {name}. (#4.3.0)"
                    )))
                }
            },
            // A name too long for the file system names no file: not there, not a deferral.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidFilename
                ) =>
            {
                continue
            }
            // Not knowing whether it exists (no permission): neither skip it nor bounce.
            Err(_) => {
                return Err(Outcome::Deferred(format!(
                    "Unable to read {name}. (#4.3.0)"
                )))
            }
        }
    }
    Ok(None)
}

/// The user a local part belongs to: users/cdb or users/assign (or the system's), else the
/// alias user with the whole local
/// part as extension (qmail-lspawn).
/// The alias user is whoever owns the alias directory (qmail's `alias` account).
fn user_for<F: crate::env::Fs>(fs: &F, cfg: &LocalConfig, local: &str) -> Result<User, Outcome> {
    let found = cfg
        .user(fs, local)
        .map_err(|e| Outcome::Deferred(format!("Unable to read users/cdb: {e}. (#4.3.0)")))?;
    Ok(found.unwrap_or_else(|| {
        let home = cfg.root.join("alias");
        let (uid, gid) = fs.metadata(&home).map_or((0, 0), |m| (m.uid, m.gid));
        User {
            user: "alias".into(),
            uid,
            gid,
            home,
            dash: "-".into(),
            ext: local.to_string(),
        }
    }))
}

/// qmail-lspawn's rule: never as root; and a server that is not root can only deliver as
/// itself, so it says so for every other user instead of writing their files as its own.
fn permitted<E: Env>(env: &E, u: &User) -> Result<Creds, Outcome> {
    if u.uid == 0 {
        return Err(Outcome::Deferred(
            "Not allowed to perform deliveries as root. (#4.3.0)".into(),
        ));
    }
    let me = env.uid();
    if me != 0 && me != u.uid {
        return Err(Outcome::Deferred(format!(
            "Unable to deliver as uid {} ({}): mta run runs as uid {me}, not as root. (#4.3.0)",
            u.uid, u.user
        )));
    }
    Ok(Creds {
        uid: u.uid,
        gid: u.gid,
    })
}

/// False only when delivery to this (rewritten, local) recipient would bounce with "no
/// mailbox here by that name" (qmail-realrcptto). Anything doubtful (a home or `.qmail`
/// file that would defer) is true: the delivery decides, not the RCPT check.
pub fn has_mailbox<F: crate::env::Fs>(fs: &F, cfg: &LocalConfig, recipient: &str) -> bool {
    let local = recipient.rsplit_once('@').map_or(recipient, |(l, _)| l);
    if local.is_empty() {
        return true;
    }
    let Ok(user) = user_for(fs, cfg, local) else {
        return true;
    };
    if user.dash.is_empty() || home_checked(fs, &user.home).is_err() {
        return true;
    }
    !matches!(find_dotqmail(fs, &user, &user.home), Ok(None))
}

/// The instructions for a recipient (qmail-local's lookup), run as the user in `base`.
fn resolve<'a, F: crate::env::Fs>(
    fs: &F,
    cfg: &'a LocalConfig,
    (d, header): (&'a Delivery, &[u8]),
    dt: &str,
    (user, base, creds): (User, PathBuf, Option<Creds>),
) -> Result<Target<'a>, Outcome> {
    let (local, domain) = split(cfg, d);
    home_checked(fs, &base)?;
    if looping(header, dt) {
        return Err(Outcome::Failed(
            "This message is looping: it already has my Delivered-To line. (#5.4.6)".into(),
        ));
    }
    let (text, default, owner_file, mode) = match find_dotqmail(fs, &user, &base)? {
        Some((name, default, text, mode)) => (text, default, Some(format!("{name}-owner")), mode),
        None if !user.dash.is_empty() => {
            return Err(Outcome::Failed(
                "Sorry, no mailbox here by that name. (#5.1.1)".into(),
            ))
        }
        None => (String::new(), String::new(), None, 0),
    };
    let Ok(mut ins) = dotqmail::parse(&text) else {
        return Err(Outcome::Deferred(
            "Uh-oh: first line of .qmail file is blank. (#4.2.1)".into(),
        ));
    };
    // qmail-local: an executable .qmail with a program line may be a mistake (a script put
    // there to run) or an attack; neither is run.
    if mode & 0o111 != 0 && ins.iter().any(|i| matches!(i, Instruction::Program(_))) {
        return Err(Outcome::Deferred(
            "Uh-oh: .qmail has prog delivery but has x bit set. (#4.7.0)".into(),
        ));
    }
    if ins.is_empty() {
        ins = dotqmail::parse(&cfg.defaultdelivery).unwrap_or_default();
    }
    let forward_sender = match owner_file {
        Some(o) if fs.metadata(&base.join(&o)).is_ok() => format!("{local}-owner@{domain}"),
        _ => d.sender.to_string(),
    };
    Ok(Target {
        user,
        base,
        creds,
        local,
        domain,
        ins,
        default,
        forward_sender,
    })
}

/// qmail-command's environment for a `|program` line.
fn program_vars(t: &Target<'_>, d: &Delivery, l: &Lines) -> Vec<(String, String)> {
    let (domain, ext) = (t.domain, &t.user.ext);
    let vars = [
        ("SENDER", d.sender.to_string()),
        ("NEWSENDER", t.forward_sender.clone()),
        ("RECIPIENT", d.recipient.to_string()),
        ("USER", t.user.user.clone()),
        ("HOME", t.user.home.display().to_string()),
        ("HOST", domain.to_string()),
        ("HOST2", host_n(domain, 2)),
        ("HOST3", host_n(domain, 3)),
        ("HOST4", host_n(domain, 4)),
        ("LOCAL", t.local.to_string()),
        ("EXT", ext.clone()),
        ("EXT2", ext_n(ext, 2)),
        ("EXT3", ext_n(ext, 3)),
        ("EXT4", ext_n(ext, 4)),
        ("DEFAULT", t.default.clone()),
        ("DTLINE", l.dt.clone()),
        ("RPLINE", l.rp.clone()),
        ("UFLINE", l.ufline.clone()),
    ];
    vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// What one instruction did.
enum Step {
    /// A file was written.
    File,
    /// A program succeeded (with its output for the report); `stop` for exit 99.
    Program {
        output: String,
        stop: bool,
    },
    Forward(String),
}

/// Run a `|program` line (qmail-command's exit codes).
async fn program<E: Env>(
    env: &E,
    cmd: &str,
    p: Program,
    input: &mut dyn crate::env::Input,
) -> Result<Step, Outcome> {
    let out = |e: &Exit| String::from_utf8_lossy(&e.output).trim_end().to_string();
    match env.run_program(p, input).await {
        Ok(e) if e.code == Some(0) || e.code == Some(99) => Ok(Step::Program {
            output: out(&e),
            stop: e.code == Some(99),
        }),
        Ok(e) if e.code.is_some_and(perm_code) => Err(Outcome::Failed(out(&e))),
        Ok(e) => {
            let why = out(&e);
            Err(Outcome::Deferred(if why.is_empty() {
                "Unable to run the delivery program. (#4.3.0)".into()
            } else {
                why
            }))
        }
        Err(e) => Err(Outcome::Deferred(format!(
            "Unable to run {cmd}: {e}. (#4.3.0)"
        ))),
    }
}

/// Carry out one .qmail instruction.
async fn step<E: Env>(
    env: &E,
    cfg: &LocalConfig,
    d: &Delivery,
    t: &Target<'_>,
    l: &Lines,
    (i, body): (&Instruction, &mut Body<<E::Fs as Fs>::File>),
) -> Result<Step, Outcome> {
    match i {
        Instruction::Maildir(p) => {
            let name = maildir::name(d.id, d.rcpt, &cfg.me);
            let repeat = !d.first_attempt;
            // The same directory for every delivery into it, wherever each names it from.
            let key = t.user.home.join(p).join("new");
            maildir::deliver(
                env.fs(),
                (&t.base.join(p), &name),
                (&l.header(), body),
                repeat,
                (&cfg.dir_syncs, &key),
                cfg.disabled,
            )
            .map(|()| Step::File)
            .map_err(|e| {
                Outcome::Deferred(format!("Unable to deliver to Maildir {p}: {e}. (#4.2.1)"))
            })
        }
        Instruction::Mbox(p) => {
            let mut head = l.ufline.clone().into_bytes();
            head.extend_from_slice(&l.header());
            let path = t.base.join(p);
            match mbox::deliver(env, &path, &head, body, cfg.disabled).await {
                Ok(()) => Ok(Step::File),
                Err(mbox::MboxError::Locked) => {
                    Err(Outcome::Deferred(format!("Unable to lock {p}. (#4.2.1)")))
                }
                Err(mbox::MboxError::Io(e)) => Err(Outcome::Deferred(format!(
                    "Unable to write {p}: {e}. (#4.3.0)"
                ))),
            }
        }
        Instruction::Program(cmd) => {
            let p = Program {
                command: cmd.clone(),
                dir: t.base.clone(),
                creds: t.creds,
                vars: program_vars(t, d, l),
                fd3: None,
            };
            body.rewind();
            program(env, cmd, p, body).await
        }
        Instruction::Forward(a) => Ok(Step::Forward(a.clone())),
    }
}

/// The recipient split at its last `@` (no `@`: this host's name).
fn split<'a>(cfg: &'a LocalConfig, d: &'a Delivery) -> (&'a str, &'a str) {
    d.recipient
        .rsplit_once('@')
        .unwrap_or((&d.recipient, &cfg.me))
}

/// Deliver one recipient: find the user (qmail-lspawn), then do the rest as that user.
pub async fn deliver<E: Env>(env: &E, cfg: &Arc<LocalConfig>, d: Delivery) -> Outcome {
    match d.message.open(env.fs()) {
        Ok(body) => deliver_opened(env, cfg, d, body).await,
        Err(e) => unreadable(e),
    }
}

fn unreadable(e: std::io::Error) -> Outcome {
    Outcome::Deferred(format!("Unable to read the message: {e}. (#4.3.0)"))
}

/// [`deliver`] with the message already open (by the queue's owner, or checked by the root
/// helper): the delivery, running as the user, gets the open file and never the queue.
pub async fn deliver_opened<E: Env>(
    env: &E,
    cfg: &Arc<LocalConfig>,
    d: Delivery,
    mut body: Body<<E::Fs as Fs>::File>,
) -> Outcome {
    let (local, _) = split(cfg, &d);
    if local.is_empty() {
        return delivered("empty local part; dropped.".into(), Vec::new(), &d);
    }
    let user = match user_for(env.fs(), cfg, local) {
        Ok(u) => u,
        Err(o) => return o,
    };
    let who = match permitted(env, &user) {
        Ok(c) => c,
        Err(o) => return o,
    };
    let home = user.home.clone();
    // Programs change user themselves only where this process could (root).
    let creds = (env.uid() == 0).then_some(who);
    let (env2, cfg2) = (env.clone(), cfg.clone());
    let run = env.run_as(who, &home, move |base| async move {
        as_user(&env2, &cfg2, &d, &mut body, (user, base, creds)).await
    });
    run.await.unwrap_or_else(|e| {
        Outcome::Deferred(format!(
            "Unable to switch to {}: {e}. (#4.3.0)",
            home.display()
        ))
    })
}

/// qmail-local: read the user's .qmail file and carry out its instructions.
async fn as_user<E: Env>(
    env: &E,
    cfg: &LocalConfig,
    d: &Delivery,
    body: &mut Body<<E::Fs as Fs>::File>,
    who: (User, PathBuf, Option<Creds>),
) -> Outcome {
    let lines = Lines::new(d, crate::env::unix_secs(env.now()));
    let header = match body.prefix(MAX_LOOP_SCAN) {
        Ok(h) => h,
        Err(e) => return unreadable(e),
    };
    let t = match resolve(env.fs(), cfg, (d, &header), &lines.dt, who) {
        Ok(t) => t,
        Err(o) => return o,
    };
    let (mut files, mut programs) = (0, 0);
    let mut forwards = Vec::new();
    let mut report = String::new();
    for i in &t.ins {
        match step(env, cfg, d, &t, &lines, (i, &mut *body)).await {
            Ok(Step::File) => files += 1,
            Ok(Step::Program { output, stop }) => {
                programs += 1;
                report.push_str(&output);
                if stop {
                    break;
                }
            }
            Ok(Step::Forward(a)) => forwards.push(a),
            Err(o) => return o,
        }
    }
    // A forward is the message behind a new Delivered-To line: the queue copies the message
    // from the log when it queues the forward, so only the line goes back.
    let prefix = if forwards.is_empty() {
        Vec::new()
    } else {
        lines.dt.clone().into_bytes()
    };
    let report = format!("{}did {}+{}+{}/", report, files, forwards.len(), programs);
    Outcome::Delivered {
        report,
        forwards,
        forward_sender: t.forward_sender,
        forward_prefix: prefix,
    }
}

fn delivered(report: String, forwards: Vec<String>, d: &Delivery) -> Outcome {
    Outcome::Delivered {
        report,
        forwards,
        forward_sender: d.sender.to_string(),
        forward_prefix: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_mailbox_accepts_what_delivery_would() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for dir in ["alias", "home/fred"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let fred = root.join("home/fred").display().to_string();
        let assign = format!("=fred:fred:1:1:{fred}:::\n+fred-:fred:1:1:{fred}:-::\n.\n");
        let cfg = LocalConfig {
            root: root.to_path_buf(),
            me: "h.example".into(),
            assign: Assign::parse(&assign).unwrap(),
            defaultdelivery: "./Maildir/".into(),
            disabled: Disabled::none(),
            passwd: false,
            dir_syncs: Default::default(),
        };
        let fs = crate::env::real::RealFs;
        let has = |a: &str| has_mailbox(&fs, &cfg, a);
        let touch = |f: &str| std::fs::write(root.join(f), "./Maildir/\n").unwrap();
        assert!(
            has("fred@h.example"),
            "a user without .qmail: default delivery"
        );
        assert!(has("Fred@h.example"));
        assert!(
            !has("fred-list@h.example"),
            "extension without a .qmail file"
        );
        touch("home/fred/.qmail-list");
        assert!(has("fred-LIST@h.example"));
        assert!(!has("fred-other@h.example"));
        touch("home/fred/.qmail-default");
        assert!(has("fred-other@h.example"), "-default takes any extension");
        assert!(!has("ghost@h.example"), "no user, no alias file");
        touch("alias/.qmail-postmaster");
        assert!(has("postmaster@h.example"));
        assert!(!has("ghost@h.example"));
        touch("alias/.qmail-default");
        assert!(has("ghost@h.example"), "the alias user's catch-all");
    }

    #[test]
    fn qmail_command_pieces() {
        assert_eq!(host_n("heaven.af.mil", 2), "heaven.af");
        assert_eq!(host_n("heaven.af.mil", 3), "heaven");
        assert_eq!(host_n("heaven.af.mil", 4), "");
        assert_eq!(ext_n("a-b-c", 2), "b-c");
        assert_eq!(ext_n("a-b-c", 3), "c");
        assert_eq!(ext_n("a-b-c", 4), "");
        assert!(looping(
            b"Delivered-To: fred@x\nSubject: y\n\nbody",
            "Delivered-To: FRED@x\n"
        ));
        assert!(!looping(
            b"Subject: y\n\nDelivered-To: fred@x\n",
            "Delivered-To: fred@x\n"
        ));
    }
}
