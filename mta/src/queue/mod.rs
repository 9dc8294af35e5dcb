//! The durable queue (qmail-queue, qmail-clean and the preprocessing half of qmail-send).
//!
//! Layout under the queue directory:
//! - `lock`: held by the one queue manager (the process that owns the log);
//! - `tmp/`: injections being written; `todo/`: committed injections, one file each;
//! - `log/`: the queue log, numbered segment files of checksummed records.
//!
//! Any process injects by writing `tmp/<id>`, fsyncing it, renaming it into `todo/` and
//! fsyncing `todo/` (the commit point; a batch of injections shares that one directory fsync).
//! The queue manager preprocesses `todo/` entries into `Msg` records of the log and records
//! per-recipient outcomes and retirements there too. Every log append is one write plus one
//! fsync for a whole batch (group commit), so concurrent injections and delivery outcomes share
//! fsyncs. Recovery replays the log, cuts it at the first torn record, removes stale `tmp/`
//! files, and preprocesses whatever `todo/` holds.

pub mod body;
mod log;
pub mod record;
pub mod service;
pub mod spool;
pub mod sync;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::env::{self, Env, Fs};
pub use body::{Body, BodyRef};
pub use log::{LogStats, Seg};
pub use record::{Channel, Envelope, Forward, MsgId, Recipient, Record, Status};
pub use sync::{Disabled, SyncPoint};

/// qmail-queue's trace line, written first in every message it queues: `how` is
/// `invoked by uid N`, `invoked from network` or `invoked for bounce`.
pub fn trace_line(qp: u64, how: &str, now: u64) -> String {
    format!(
        "Received: (qmail {qp} {how}); {}\n",
        crate::date::rfc822(now)
    )
}

/// Longest address the queue accepts (qmail-queue's "address too long" is permanent).
pub const MAX_ADDR: usize = 1000;
/// Stale `tmp/` files older than this are debris (longer than any injection may take).
pub const TMP_MAX_AGE_SECS: u64 = 36 * 3600;

#[derive(Debug, Error)]
pub enum QueueError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("address too long ({0} bytes; at most {MAX_ADDR})")]
    AddressTooLong(usize),
    #[error("address contains a NUL or newline")]
    BadAddress,
    #[error("no recipients")]
    NoRecipients,
    #[error("corrupt queue data: {0}")]
    Corrupt(String),
    #[error("the queue is locked by another queue manager")]
    Locked,
    #[error("unknown message {0}")]
    UnknownMessage(MsgId),
    #[error("a record of {0} bytes does not fit a log frame")]
    TooLarge(usize),
}

impl QueueError {
    /// Permanent errors are the sender's fault (SMTP 5xx, exit 100); others are temporary.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            QueueError::AddressTooLong(_) | QueueError::BadAddress | QueueError::NoRecipients
        )
    }
    /// True when the underlying cause was a full disk.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, QueueError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull)
    }
}

pub(crate) fn ctx<T>(r: io::Result<T>, what: impl FnOnce() -> String) -> Result<T, QueueError> {
    r.map_err(|source| QueueError::Io {
        context: what(),
        source,
    })
}

/// Queue tuning; the defaults are production values.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// A new log segment starts once the head would grow past this.
    pub segment_size: u64,
    /// Verification only: fsync points to skip.
    pub disabled: Disabled,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            segment_size: 64 << 20,
            disabled: Disabled::none(),
        }
    }
}

/// How preprocessing decides where each recipient goes (address rewriting, spec section 4).
pub trait Classify {
    fn classify(&self, addr: &str) -> (String, Channel);
}

/// A new message for injection.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub sender: String,
    pub recipients: Vec<String>,
    pub data: Vec<u8>,
    pub qp: u64,
    pub uid: u32,
}

/// Paths of the queue layout.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Paths { dir: dir.into() }
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }
    pub fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }
    pub fn todo(&self) -> PathBuf {
        self.dir.join("todo")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("log")
    }
    pub fn corrupt(&self) -> PathBuf {
        self.dir.join("corrupt")
    }
}

fn sync_dir<F: Fs>(fs: &F, cfg: &Config, p: SyncPoint, dir: &Path) -> Result<(), QueueError> {
    if cfg.disabled.contains(p) {
        return Ok(());
    }
    ctx(fs.sync_dir(dir), || format!("fsync {}", dir.display()))
}

/// Create the queue layout (idempotent), making each new directory durable.
pub fn create_layout<E: Env>(env: &E, paths: &Paths, cfg: &Config) -> Result<(), QueueError> {
    let fs = env.fs();
    let mut made = ctx(env::mkdir_all(fs, &paths.dir), || {
        format!("create {}", paths.dir.display())
    })?;
    for d in [paths.tmp(), paths.todo(), paths.log(), paths.corrupt()] {
        match fs.mkdir(&d) {
            Ok(()) => made.push(d),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return ctx(Err(e), || format!("create {}", d.display())),
        }
    }
    match fs.create_new(&paths.lock()) {
        Ok(_) => made.push(paths.lock()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return ctx(Err(e), || "create queue lock".into()),
    }
    // A new entry is durable once its parent directory is fsynced.
    let mut parents: Vec<PathBuf> = made
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    parents.sort();
    parents.dedup();
    for p in parents {
        let p = if p.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            p
        };
        sync_dir(fs, cfg, SyncPoint::LayoutDirs, &p)?;
    }
    Ok(())
}

fn check_addr(a: &str) -> Result<(), QueueError> {
    if a.len() > MAX_ADDR {
        return Err(QueueError::AddressTooLong(a.len()));
    }
    if a.bytes().any(|b| b == 0 || b == b'\n' || b == b'\r') {
        return Err(QueueError::BadAddress);
    }
    Ok(())
}

/// Check an envelope before anything is committed.
pub fn check_envelope(sender: &str, recipients: &[String]) -> Result<(), QueueError> {
    check_addr(sender)?;
    if recipients.is_empty() {
        return Err(QueueError::NoRecipients);
    }
    recipients.iter().try_for_each(|r| check_addr(r))
}

/// Check a message's envelope before anything is written.
pub fn validate(m: &NewMessage) -> Result<(), QueueError> {
    check_envelope(&m.sender, &m.recipients)
}

fn new_id<E: Env>(env: &E) -> MsgId {
    MsgId {
        secs: env::unix_secs(env.now()),
        rand: env.random_u64(),
    }
}

/// Inject messages into `todo/` (qmail-queue). Returns only after every message of the batch is
/// durable, including its directory entry: one file fsync per message, one `todo/` fsync per
/// batch. Usable by any process; the queue manager need not run.
pub fn inject<E: Env>(
    env: &E,
    paths: &Paths,
    cfg: &Config,
    msgs: &[NewMessage],
) -> Result<Vec<MsgId>, QueueError> {
    msgs.iter().try_for_each(validate)?;
    let mut ids = Vec::with_capacity(msgs.len());
    for m in msgs {
        let mut sp = spool::Spool::create(env, paths, cfg)?;
        if let Err(e) = sp.write(&m.data) {
            sp.abort();
            return Err(e);
        }
        ids.push(sp.finish(&m.sender, &m.recipients, m.qp, m.uid)?);
    }
    spool::sync_todo(env, paths, cfg)?;
    Ok(ids)
}

/// One recipient in the queue manager's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptState {
    pub rcpt: Recipient,
    pub status: Status,
}

/// Message bytes preprocessed into one log append at most (a larger message goes alone).
const PREPROCESS_BATCH_BYTES: usize = 16 << 20;

/// Segments compaction frees at most per retirement (it catches up over the next ones).
const COMPACT_STEPS: usize = 4;

/// Injections on their way from `todo/` into the log.
#[derive(Default)]
struct Batch {
    recs: Vec<Record>,
    /// (todo/ name, id) of each entry, taken in or already in the log.
    done: Vec<(String, MsgId)>,
    bytes: usize,
}

/// One queued message in the queue manager's view.
#[derive(Debug, Clone)]
pub struct MsgState {
    pub env: Envelope,
    pub rcpts: Vec<RcptState>,
    /// Where the message bytes are: segment, offset and length inside the log.
    data_at: (u64, u64, u64),
    /// Segments holding records about this message (they cannot be collected before it ends).
    segs: Vec<u64>,
    /// When the last delivery pass that left recipients pending started, per channel
    /// (local, remote); 0: none recorded.
    pub tried: [u64; 2],
}

impl MsgState {
    pub fn id(&self) -> MsgId {
        self.env.id
    }
    pub fn size(&self) -> u64 {
        self.data_at.2
    }
    /// True when no recipient is pending.
    pub fn is_done(&self) -> bool {
        self.rcpts.iter().all(|r| r.status != Status::Pending)
    }
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub messages: usize,
    pub preprocessed: usize,
    pub torn_bytes_cut: u64,
    pub tmp_removed: usize,
    pub corrupt_todo: usize,
    /// Bytes of latent damage in the middle of log segments (see `corrupt/`).
    pub damaged_bytes: u64,
}

/// The queue manager's handle: owns the lock and the log.
pub struct Queue<E: Env> {
    env: E,
    paths: Paths,
    cfg: Config,
    log: log::Log<E::Fs>,
    msgs: BTreeMap<MsgId, MsgState>,
    refs: SegRefs,
    /// Messages added since the last [`Queue::take_new`].
    fresh: Vec<MsgId>,
    /// `todo/` entries (name, message) whose removal failed or is not known durable (the
    /// directory fsync failed): until it is, a crash could bring them back, so neither may
    /// their messages be retired nor any segment collected.
    todo_unsynced: Vec<(String, MsgId)>,
    _lock: <E::Fs as Fs>::Lock,
}

impl<E: Env> Queue<E> {
    /// Open the queue as its one manager: take the lock, replay and repair the log, remove stale
    /// `tmp/` files and preprocess every committed injection.
    pub fn open(
        env: E,
        paths: Paths,
        cfg: Config,
        classify: &impl Classify,
    ) -> Result<(Self, Recovery), QueueError> {
        Self::lock(env, paths, cfg)?
            .recover(classify)
            .map_err(|(e, _)| e)
    }

    /// The first step of [`Queue::open`], quick whatever the queue holds: finish the layout and
    /// take the lock (so a second manager is refused before anything else happens).
    pub fn lock(env: E, paths: Paths, cfg: Config) -> Result<Locked<E>, QueueError> {
        // A crash during installation can leave the layout half made: finish it first.
        create_layout(&env, &paths, &cfg)?;
        let lock = match env.fs().try_lock(&paths.lock()) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(QueueError::Locked),
            Err(e) => return ctx(Err(e), || format!("lock {}", paths.lock().display())),
        };
        Ok(Locked {
            env,
            paths,
            cfg,
            lock,
            todo_unsynced: Vec::new(),
        })
    }
}

/// A queue whose lock is held, not yet recovered.
pub struct Locked<E: Env> {
    env: E,
    paths: Paths,
    cfg: Config,
    lock: <E::Fs as Fs>::Lock,
    /// `todo/` removals a failed attempt could not make durable: the next attempt redoes
    /// them before it trusts the directory (what a failed fsync dropped still looks done).
    todo_unsynced: Vec<(String, MsgId)>,
}

impl<E: Env> Locked<E> {
    /// The rest of [`Queue::open`]: replay and repair the log, remove stale `tmp/` files and
    /// preprocess every committed injection. On failure the lock comes back with the error,
    /// so the caller can try again (every step is safe to repeat, as after a crash).
    pub fn recover(
        self,
        classify: &impl Classify,
    ) -> Result<(Queue<E>, Recovery), (QueueError, Locked<E>)> {
        let Locked {
            env,
            paths,
            cfg,
            lock,
            todo_unsynced,
        } = self;
        let back = |e, lock, todo_unsynced| {
            let (env, paths) = (env.clone(), paths.clone());
            let l = Locked {
                env,
                paths,
                cfg,
                lock,
                todo_unsynced,
            };
            (e, l)
        };
        let mut rec = Recovery::default();
        let mut msgs = BTreeMap::new();
        let mut refs = SegRefs::new();
        let seed = env.random_u64();
        let replayed = log::Log::open(env.fs(), &paths, &cfg, (true, seed), |r| match r {
            Some((seg, end, r)) => apply(&mut msgs, &mut refs, seg, end, planted_on_replay(r)),
            None => (msgs, refs) = (BTreeMap::new(), SegRefs::new()),
        });
        let log = match replayed {
            Ok(log) => log,
            Err(e) => return Err(back(e, lock, todo_unsynced)),
        };
        rec.torn_bytes_cut = log.stats().torn_bytes_cut;
        rec.damaged_bytes = log.stats().damaged_bytes;
        let mut q = Queue {
            env: env.clone(),
            paths: paths.clone(),
            cfg,
            log,
            msgs,
            refs,
            fresh: Vec::new(),
            todo_unsynced,
            _lock: lock,
        };
        let mut tidy = || -> Result<(), QueueError> {
            rec.tmp_removed = q.clean_tmp()?;
            (rec.preprocessed, rec.corrupt_todo) = q.preprocess(classify)?;
            Ok(())
        };
        match tidy() {
            Ok(()) => {
                rec.messages = q.msgs.len();
                Ok((q, rec))
            }
            Err(e) => Err(back(e, q._lock, q.todo_unsynced)),
        }
    }
}

impl<E: Env> Queue<E> {
    /// Remove what dead writers left in `tmp/`: a file whose writer is alive is locked (an
    /// `mta inject` still running); one that cannot be judged goes after 36 hours.
    fn clean_tmp(&mut self) -> Result<usize, QueueError> {
        let fs = self.env.fs();
        let now = env::unix_secs(self.env.now());
        let dir = self.paths.tmp();
        let mut n = 0;
        for name in ctx(fs.list_dir(&dir), || format!("list {}", dir.display()))? {
            let p = dir.join(&name);
            let Ok(m) = fs.metadata(&p) else { continue };
            let dead = match fs.try_lock(&p) {
                Ok(_unlocked) => true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                Err(_) => now.saturating_sub(env::unix_secs(m.mtime)) >= TMP_MAX_AGE_SECS,
            };
            if dead {
                ctx(fs.unlink(&p), || format!("remove {}", p.display()))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Move every committed injection from `todo/` into the log (idempotent: an id already in
    /// the log is only unlinked). Returns (messages preprocessed, corrupt files set aside).
    pub fn preprocess(&mut self, classify: &impl Classify) -> Result<(usize, usize), QueueError> {
        let env = self.env.clone();
        let fs = env.fs();
        let todo = self.paths.todo();
        self.resync_todo()?;
        let names = ctx(fs.list_dir(&todo), || format!("list {}", todo.display()))?;
        let (mut n, mut bad) = (0, 0);
        let mut batch = Batch::default();
        for name in names {
            let p = todo.join(&name);
            // One entry that cannot be read now (an I/O error, something that is not a file)
            // must not hold up the others: it is tried again on the next pass.
            let buf = match fs.read(&p) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("todo/{name}: {e}; left for the next pass");
                    continue;
                }
            };
            match record::decode_todo(&buf) {
                Ok((envl, data)) => {
                    let (id, size) = (envl.id, data.len());
                    if !self.msgs.contains_key(&id) {
                        let m = NewMessage {
                            sender: envl.sender,
                            recipients: envl.recipients,
                            data,
                            qp: envl.qp,
                            uid: envl.uid,
                        };
                        batch
                            .recs
                            .push(self.message_record(id, envl.birth, m, classify));
                        batch.bytes += size;
                    }
                    batch.done.push((name.clone(), id));
                }
                Err(e) => {
                    // Only a broken disk or a durability bug makes a committed file unreadable:
                    // keep it for the administrator rather than deleting mail.
                    tracing::error!("todo/{name}: {e}; moved to corrupt/");
                    let to = self.paths.corrupt().join(&name);
                    ctx(fs.rename(&p, &to), || format!("move {}", p.display()))?;
                    bad += 1;
                }
            }
            // Large injections go in a few at a time: memory stays bounded.
            if batch.bytes >= PREPROCESS_BATCH_BYTES {
                n += self.take_in(std::mem::take(&mut batch))?;
            }
        }
        n += self.take_in(batch)?;
        Ok((n, bad))
    }

    /// Append a batch of injections to the log, then remove their `todo/` entries.
    fn take_in(&mut self, batch: Batch) -> Result<usize, QueueError> {
        if batch.done.is_empty() {
            return Ok(0);
        }
        let (env, todo) = (self.env.clone(), self.paths.todo());
        let fs = env.fs();
        let n = batch.recs.len();
        self.append(batch.recs)?;
        // Until these removals are durable a crash could resurrect a todo entry: its message
        // must stay in the queue (not retired, its segments kept) to be recognised.
        let removed = batch.done.iter().try_for_each(|(name, _)| {
            let p = todo.join(name);
            ctx(fs.unlink(&p), || format!("remove {}", p.display()))
        });
        let synced = removed.and_then(|()| sync_dir(fs, &self.cfg, SyncPoint::TodoUnlink, &todo));
        if let Err(e) = synced {
            self.todo_unsynced.extend(batch.done);
            return Err(e);
        }
        Ok(n)
    }

    /// True while the `todo/` entry this message came from might come back after a crash:
    /// retiring it now could deliver it twice.
    pub fn removal_pending(&self, id: MsgId) -> bool {
        self.todo_unsynced.iter().any(|(_, i)| *i == id)
    }

    /// Make removals that failed, or whose directory fsync failed, durable. Linux may have
    /// dropped them from the disk while the directory in memory no longer shows them, so
    /// fsyncing again is not enough: each name is made (if gone) and removed again, then the
    /// directory is fsynced.
    fn resync_todo(&mut self) -> Result<(), QueueError> {
        if self.todo_unsynced.is_empty() {
            return Ok(());
        }
        let fs = self.env.fs();
        let todo = self.paths.todo();
        for (name, _) in &self.todo_unsynced {
            // Names are message ids: one still here is the same injection, its message queued.
            let p = todo.join(name);
            if fs.metadata(&p).is_err() {
                drop(ctx(fs.create_new(&p), || {
                    format!("create {}", p.display())
                })?);
            }
            ctx(fs.unlink(&p), || format!("remove {}", p.display()))?;
        }
        sync_dir(fs, &self.cfg, SyncPoint::TodoUnlink, &todo)?;
        self.todo_unsynced.clear();
        Ok(())
    }

    /// Append records as one durable batch and apply them to the in-memory state.
    fn append(&mut self, recs: Vec<Record>) -> Result<(), QueueError> {
        self.append_forwards(recs, Vec::new())
    }

    /// [`Queue::append`] with forwards behind the records, in the same batch.
    fn append_forwards(&mut self, recs: Vec<Record>, fwds: Vec<Forward>) -> Result<(), QueueError> {
        if recs.is_empty() && fwds.is_empty() {
            return Ok(());
        }
        let placed = self.log.append(self.env.fs(), &self.cfg, &recs, &fwds)?;
        let flat = recs.into_iter().flat_map(|r| match r {
            Record::Group(members) => members,
            r => vec![r],
        });
        let mut placed = placed.into_iter();
        // The records first in the zip: it stops on them without taking a forward's place.
        for (r, (seg, end)) in flat.zip(placed.by_ref()) {
            if let Record::Msg { env, .. } = &r {
                self.note_fresh(env.id);
            }
            apply(&mut self.msgs, &mut self.refs, seg, end, r);
        }
        for fw in fwds {
            let (Some((seg, end)), Some(out)) = (placed.next(), placed.next()) else {
                break;
            };
            let len = fw.data_len();
            self.note_fresh(fw.env.id);
            add_msg(
                &mut self.msgs,
                &mut self.refs,
                (seg, end, len),
                fw.env,
                fw.rcpts,
            );
            apply(&mut self.msgs, &mut self.refs, out.0, out.1, fw.outcome);
        }
        Ok(())
    }

    fn note_fresh(&mut self, id: MsgId) {
        if !self.msgs.contains_key(&id) {
            self.fresh.push(id);
        }
    }

    /// Inject messages straight into the log (the in-process path of the SMTP receiver):
    /// returns after one durable append for the whole batch.
    pub fn submit(
        &mut self,
        msgs: Vec<NewMessage>,
        classify: &impl Classify,
    ) -> Result<Vec<MsgId>, QueueError> {
        msgs.iter().try_for_each(validate)?;
        let mut ids = Vec::with_capacity(msgs.len());
        let mut recs = Vec::with_capacity(msgs.len());
        for m in msgs {
            let mut id = new_id(&self.env);
            // Ids must never repeat: a second record with a live id would be ignored.
            while self.msgs.contains_key(&id) || ids.contains(&id) {
                id = new_id(&self.env);
            }
            ids.push(id);
            recs.push(self.message_record(id, id.secs, m, classify));
        }
        self.append(recs)?;
        Ok(ids)
    }

    /// Ids of the messages added (submitted, preprocessed, bounces, forwards) since the last
    /// call, without scanning the queue.
    pub fn take_new(&mut self) -> Vec<MsgId> {
        std::mem::take(&mut self.fresh)
    }

    /// A fresh message id.
    pub fn new_id(&self) -> MsgId {
        let mut id = new_id(&self.env);
        while self.msgs.contains_key(&id) {
            id = new_id(&self.env);
        }
        id
    }

    /// The log record for a new message under `id`, born `birth`.
    pub fn message_record(
        &self,
        id: MsgId,
        birth: u64,
        m: NewMessage,
        classify: &impl Classify,
    ) -> Record {
        let rcpts = m
            .recipients
            .iter()
            .map(|r| {
                let (addr, channel) = classify.classify(r);
                Recipient {
                    original: r.clone(),
                    addr,
                    channel,
                }
            })
            .collect();
        Record::Msg {
            env: Envelope {
                id,
                birth,
                qp: m.qp,
                uid: m.uid,
                sender: m.sender,
                recipients: m.recipients,
            },
            rcpts,
            data: m.data,
        }
    }

    /// True if a message with this id is in the queue.
    pub fn contains(&self, id: MsgId) -> bool {
        self.msgs.contains_key(&id)
    }

    /// Append records (a [`Record::Group`] takes effect whole or not at all) as one durable
    /// batch.
    pub fn commit(&mut self, recs: Vec<Record>) -> Result<(), QueueError> {
        self.append(recs)
    }

    /// [`Queue::commit`] with forwards, each queued with the outcome that made it.
    pub fn commit_forwards(
        &mut self,
        recs: Vec<Record>,
        fwds: Vec<Forward>,
    ) -> Result<(), QueueError> {
        self.append_forwards(recs, fwds)
    }

    /// Make recipients' outcomes durable (one fsync for the batch).
    pub fn record(&mut self, outcomes: &[(MsgId, u32, Status)]) -> Result<(), QueueError> {
        for (id, rcpt, _) in outcomes {
            let m = self.msgs.get(id).ok_or(QueueError::UnknownMessage(*id))?;
            if *rcpt as usize >= m.rcpts.len() {
                return Err(QueueError::Corrupt(format!("{id} has no recipient {rcpt}")));
            }
        }
        let recs = outcomes
            .iter()
            .map(|(id, rcpt, status)| Record::Outcome {
                id: *id,
                rcpt: *rcpt,
                status: status.clone(),
            })
            .collect();
        self.append(recs)
    }

    /// Finish messages (their bounces, if any, must already be queued), then collect log
    /// segments that no live message needs any more.
    pub fn retire(&mut self, ids: &[MsgId]) -> Result<(), QueueError> {
        self.retire_around(ids, |_| false)
    }

    /// [`Queue::retire`] while deliveries run: compaction leaves the messages `busy` names
    /// where they are, since a delivery may still open its data by the place it was given
    /// (a moved message's old segment would be unlinked under it: a spurious deferral).
    pub fn retire_around(
        &mut self,
        ids: &[MsgId],
        busy: impl Fn(MsgId) -> bool,
    ) -> Result<(), QueueError> {
        for id in ids {
            if !self.msgs.contains_key(id) {
                return Err(QueueError::UnknownMessage(*id));
            }
        }
        self.append(ids.iter().map(|id| Record::Retire { id: *id }).collect())?;
        if !self.todo_unsynced.is_empty() {
            return Ok(());
        }
        let live = self.live_segments();
        self.log.collect(self.env.fs(), &self.cfg, &live)?;
        self.compact(busy)
    }

    /// Compaction: while the log holds more than twice the live messages' bytes plus two
    /// segments, the live messages of the oldest segment are written again at the head
    /// ([`Record::Moved`], their whole state), so that segment and the dead ones after it
    /// can go: disk use stays within a small multiple of live data whatever the age mix.
    /// Each step is an ordinary durable append, then the checkpoint and unlinks of
    /// collection, so a crash anywhere leaves the old records, the new, or both (the newer
    /// replaces the older at recovery).
    fn compact(&mut self, busy: impl Fn(MsgId) -> bool) -> Result<(), QueueError> {
        for _ in 0..COMPACT_STEPS {
            let slack = 2 * self.cfg.segment_size;
            if self.log.total_bytes() <= 2 * self.refs.bytes + slack {
                return Ok(());
            }
            let Some(oldest) = self.log.oldest_sealed() else {
                return Ok(());
            };
            let (ids, held): (Vec<MsgId>, Vec<MsgId>) = self
                .msgs
                .values()
                .filter(|m| m.segs.contains(&oldest))
                .map(MsgState::id)
                .partition(|&id| !busy(id));
            let (mut recs, mut bytes) = (Vec::new(), 0);
            for id in ids {
                let rec = self.moved(id)?;
                bytes += self.msgs[&id].size() as usize;
                recs.push(rec);
                if bytes >= PREPROCESS_BATCH_BYTES {
                    self.append(std::mem::take(&mut recs))?;
                    bytes = 0;
                }
            }
            self.append(recs)?;
            if !held.is_empty() {
                // The oldest segment stays until its deliveries end: a later retirement
                // finishes the step.
                return Ok(());
            }
            let live = self.live_segments();
            self.log.collect(self.env.fs(), &self.cfg, &live)?;
        }
        Ok(())
    }

    /// A live message's whole state, to be written again at the head.
    fn moved(&mut self, id: MsgId) -> Result<Record, QueueError> {
        let data = self.read_data(id)?;
        let m = &self.msgs[&id];
        let forget = crate::planted::on(crate::planted::Bug::CompactWithoutOutcomes);
        let rcpts = m
            .rcpts
            .iter()
            .map(|r| {
                let status = if forget {
                    Status::Pending
                } else {
                    r.status.clone()
                };
                (r.rcpt.clone(), status)
            })
            .collect();
        Ok(Record::Moved {
            env: m.env.clone(),
            rcpts,
            tried: m.tried,
            data,
        })
    }

    /// Segments holding records of live messages (sorted; kept up to date as records apply,
    /// so collection never walks the queue).
    fn live_segments(&self) -> Vec<u64> {
        self.refs.segs.keys().copied().collect()
    }

    pub fn messages(&self) -> impl Iterator<Item = &MsgState> {
        self.msgs.values()
    }
    pub fn get(&self, id: MsgId) -> Option<&MsgState> {
        self.msgs.get(&id)
    }
    /// Read a message's bytes from the log.
    pub fn read_data(&mut self, id: MsgId) -> Result<Vec<u8>, QueueError> {
        let m = self.msgs.get(&id).ok_or(QueueError::UnknownMessage(id))?;
        self.log.read_data(self.env.fs(), m.data_at)
    }
    /// Where a message's bytes are, to stream them.
    pub fn body(&self, id: MsgId) -> Result<BodyRef, QueueError> {
        let m = self.msgs.get(&id).ok_or(QueueError::UnknownMessage(id))?;
        let (seg, end, len) = m.data_at;
        Ok(BodyRef {
            path: self.log.segment_path(seg),
            offset: end - len,
            len,
        })
    }
    pub fn log_stats(&self) -> LogStats {
        self.log.stats()
    }
    pub fn paths(&self) -> &Paths {
        &self.paths
    }
}

/// A new message whose bytes are at `data_at` (a repeated record of a live one is ignored).
fn add_msg(
    msgs: &mut BTreeMap<MsgId, MsgState>,
    refs: &mut SegRefs,
    data_at: (u64, u64, u64),
    env: Envelope,
    rcpts: Vec<Recipient>,
) {
    if msgs.contains_key(&env.id) {
        return;
    }
    refs.add(data_at.0);
    refs.bytes += data_at.2;
    let rcpts = rcpts
        .into_iter()
        .map(|rcpt| RcptState {
            rcpt,
            status: Status::Pending,
        })
        .collect();
    let segs = vec![data_at.0];
    msgs.insert(
        env.id,
        MsgState {
            env,
            rcpts,
            data_at,
            segs,
            tried: [0, 0],
        },
    );
}

/// Verification only: the planted "lose the bounce state on restart" bug.
fn planted_on_replay(r: Record) -> Record {
    match r {
        Record::Outcome {
            id,
            rcpt,
            status: Status::Failed(_),
        } if crate::planted::on(crate::planted::Bug::LoseBounceStateOnRestart) => Record::Outcome {
            id,
            rcpt,
            status: Status::Delivered,
        },
        r => r,
    }
}

/// What the live messages hold of the log: how many use each segment (a segment with none
/// can be collected) and how many message bytes they have (what compaction compares with).
#[derive(Default)]
struct SegRefs {
    segs: BTreeMap<u64, usize>,
    bytes: u64,
}

impl SegRefs {
    fn new() -> Self {
        Self::default()
    }
    fn add(&mut self, seg: u64) {
        *self.segs.entry(seg).or_default() += 1;
    }
    /// A message is gone (retired, or replaced by its moved copy).
    fn drop_msg(&mut self, m: &MsgState) {
        self.bytes = self.bytes.saturating_sub(m.size());
        for s in &m.segs {
            if let Some(n) = self.segs.get_mut(s) {
                *n -= 1;
                if *n == 0 {
                    self.segs.remove(s);
                }
            }
        }
    }
}

/// Apply one log record (in segment `seg`, ending at offset `end`) to the in-memory state.
fn apply(msgs: &mut BTreeMap<MsgId, MsgState>, refs: &mut SegRefs, seg: u64, end: u64, r: Record) {
    let mut touch = |m: &mut MsgState| {
        if !m.segs.contains(&seg) {
            m.segs.push(seg);
            refs.add(seg);
        }
    };
    match r {
        Record::Msg { env, rcpts, data } => {
            // The message bytes are the record's last field.
            add_msg(msgs, refs, (seg, end, data.len() as u64), env, rcpts);
        }
        Record::Outcome { id, rcpt, status } => {
            // An outcome for a retired message (its segments already collected) is ignored.
            if let Some(m) = msgs.get_mut(&id) {
                if let Some(r) = m.rcpts.get_mut(rcpt as usize) {
                    r.status = status;
                    touch(m);
                }
            }
        }
        Record::Retire { id } => {
            if let Some(m) = msgs.remove(&id) {
                refs.drop_msg(&m);
            }
        }
        Record::Tried { id, channel, at } => {
            if let Some(m) = msgs.get_mut(&id) {
                let c = usize::from(channel == Channel::Remote);
                m.tried[c] = m.tried[c].max(at);
                touch(m);
            }
        }
        Record::Moved {
            env,
            rcpts,
            tried,
            data,
        } => {
            // The whole state, replacing what earlier records said (their segments may be
            // gone already, or not yet).
            if let Some(old) = msgs.remove(&env.id) {
                refs.drop_msg(&old);
            }
            refs.add(seg);
            refs.bytes += data.len() as u64;
            let rcpts = rcpts
                .into_iter()
                .map(|(rcpt, status)| RcptState { rcpt, status })
                .collect();
            let data_at = (seg, end, data.len() as u64);
            let m = MsgState {
                env,
                rcpts,
                data_at,
                segs: vec![seg],
                tried,
            };
            msgs.insert(m.env.id, m);
        }
        Record::Checkpoint { .. } | Record::Group(_) => {}
    }
}

/// One log segment's bytes replayed as recovery replays them, without a disk.
#[doc(hidden)]
pub struct Replayed {
    /// Every record applied, with the offset where it ends.
    pub records: Vec<(Record, u64)>,
    /// The messages the queue would hold, each with the bytes a delivery would read for it.
    pub messages: Vec<(MsgState, Vec<u8>)>,
    /// End of the last whole record (what follows is a torn tail).
    pub keep: u64,
    /// Damaged stretches with whole records after them.
    pub damaged: Vec<(u64, u64)>,
}

/// Replay one segment's bytes (for the fuzz targets: recovery must never panic, never apply
/// a record that is not whole in the bytes, and never invent a message).
#[doc(hidden)]
pub fn replay_segment(buf: &[u8], key: u32) -> Replayed {
    let (mut msgs, mut refs, mut records) = (BTreeMap::new(), SegRefs::new(), Vec::new());
    let scanned = log::scan(buf, key, |r, end| {
        records.push((r.clone(), end));
        apply(&mut msgs, &mut refs, 1, end, r);
        Ok(())
    })
    .expect("the callback never fails");
    // Read each message's bytes where `read_data` would: a wrong offset panics or differs.
    let messages = msgs
        .into_values()
        .map(|m| {
            let (_, end, len) = m.data_at;
            let bytes = buf[(end - len) as usize..end as usize].to_vec();
            (m, bytes)
        })
        .collect();
    Replayed {
        records,
        messages,
        keep: scanned.keep,
        damaged: scanned.damaged,
    }
}

/// A read-only view of a queue for `mta queue list|stat`: works while a queue manager runs.
pub struct View {
    pub messages: Vec<MsgState>,
    /// Committed injections not yet preprocessed.
    pub todo: Vec<(Envelope, u64)>,
}

impl View {
    pub fn load<E: Env>(env: &E, paths: &Paths) -> Result<View, QueueError> {
        let fs = env.fs();
        let mut msgs = BTreeMap::new();
        let mut refs = SegRefs::new();
        log::Log::open(fs, paths, &Config::default(), (false, 0), |r| match r {
            Some((seg, end, r)) => apply(&mut msgs, &mut refs, seg, end, r),
            None => (msgs, refs) = (BTreeMap::new(), SegRefs::new()),
        })?;
        let mut todo = Vec::new();
        let dir = paths.todo();
        for name in ctx(fs.list_dir(&dir), || format!("list {}", dir.display()))? {
            // A file may vanish while we look (preprocessed meanwhile): skip it.
            let Ok(buf) = fs.read(&dir.join(&name)) else {
                continue;
            };
            if let Ok((e, data)) = record::decode_todo(&buf) {
                if !msgs.contains_key(&e.id) {
                    todo.push((e, data.len() as u64));
                }
            }
        }
        Ok(View {
            messages: msgs.into_values().collect(),
            todo,
        })
    }
}

#[cfg(test)]
mod tests;
