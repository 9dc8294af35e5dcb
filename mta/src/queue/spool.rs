//! A message being written into `tmp/`, streamed in pieces, then committed into `todo/`:
//! the injection path of `mta inject` and of SMTP messages too large to hold in memory.

use std::io;
use std::path::PathBuf;

use super::record::{self, Envelope, MsgId, TODO_MAGIC};
use super::{check_envelope, ctx, new_id, sync_dir, Config, Paths, QueueError, SyncPoint};
use crate::env::{Env, Fs, FsFile};

pub struct Spool<E: Env> {
    env: E,
    paths: Paths,
    cfg: Config,
    id: MsgId,
    tmp: PathBuf,
    file: <E::Fs as Fs>::File,
    len: u64,
    crc: u32,
    /// Set once the tmp/ name is gone (finished or aborted).
    done: bool,
    /// Held while the file is written: recovery removes only tmp/ files nobody holds.
    _lock: Option<<E::Fs as Fs>::Lock>,
}

impl<E: Env> Spool<E> {
    /// Start a new message in `tmp/` under a fresh id.
    pub fn create(env: &E, paths: &Paths, cfg: &Config) -> Result<Self, QueueError> {
        let fs = env.fs();
        loop {
            let id = new_id(env);
            let tmp = paths.tmp().join(id.to_string());
            match fs.create_new(&tmp) {
                Ok(mut file) => {
                    // Without the lock (no file descriptor for it) the file is still safe
                    // from recoveries for the 36 hours of the age rule.
                    let lock = fs.try_lock(&tmp).ok();
                    if let Err(e) = file.write_at(0, TODO_MAGIC) {
                        let _ = fs.unlink(&tmp);
                        return ctx(Err(e), || format!("write {}", tmp.display()));
                    }
                    return Ok(Spool {
                        env: env.clone(),
                        paths: paths.clone(),
                        cfg: *cfg,
                        id,
                        tmp,
                        file,
                        len: 0,
                        crc: 0,
                        done: false,
                        _lock: lock,
                    });
                }
                // Ids never repeat: draw another.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return ctx(Err(e), || format!("create {}", tmp.display())),
            }
        }
    }

    pub fn id(&self) -> MsgId {
        self.id
    }

    /// Message bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append message bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), QueueError> {
        let at = TODO_MAGIC.len() as u64 + self.len;
        ctx(self.file.write_at(at, bytes), || {
            format!("write {}", self.tmp.display())
        })?;
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Write the envelope, fsync, and link the file into `todo/`. The entry is durable only
    /// after [`sync_todo`] (which a batch of injections shares). On error the file is removed.
    pub fn finish(
        mut self,
        sender: &str,
        recipients: &[String],
        qp: u64,
        uid: u32,
    ) -> Result<MsgId, QueueError> {
        let r = self.finish_inner(sender, recipients, qp, uid);
        // Whatever happened, tmp/ no longer needs the name (todo/ holds a link on success).
        let _ = self.env.fs().unlink(&self.tmp);
        self.done = true;
        r.map(|()| self.id)
    }

    fn finish_inner(
        &mut self,
        sender: &str,
        recipients: &[String],
        qp: u64,
        uid: u32,
    ) -> Result<(), QueueError> {
        check_envelope(sender, recipients)?;
        let env = Envelope {
            id: self.id,
            birth: self.id.secs,
            qp,
            uid,
            sender: sender.to_string(),
            recipients: recipients.to_vec(),
        };
        let e = record::encode_envelope(&env);
        let crc = crc32c::crc32c_append(self.crc, &e);
        let mut tail = e;
        tail.extend_from_slice(&record::todo_trailer(self.len, (tail.len()) as u32, crc));
        let at = TODO_MAGIC.len() as u64 + self.len;
        let tmp = &self.tmp;
        ctx(self.file.write_at(at, &tail), || {
            format!("write {}", tmp.display())
        })?;
        if !self.cfg.disabled.contains(SyncPoint::TodoFile) {
            ctx(self.file.sync(), || format!("fsync {}", tmp.display()))?;
            if crate::planted::on(crate::planted::Bug::ExtraFsync) {
                ctx(self.file.sync(), || format!("fsync {}", tmp.display()))?;
            }
        }
        // link, not rename: it refuses to replace an existing entry.
        let todo = self.paths.todo().join(self.id.to_string());
        ctx(self.env.fs().link(tmp, &todo), || {
            format!("link into {}", todo.display())
        })
    }

    /// Give up on the message: remove the file (dropping a spool does the same).
    pub fn abort(self) {}

    /// The file being written and where the message bytes start in it.
    pub fn file(&self) -> (&std::path::Path, u64) {
        (&self.tmp, TODO_MAGIC.len() as u64)
    }
}

impl<E: Env> Drop for Spool<E> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.env.fs().unlink(&self.tmp);
        }
    }
}

/// Make every `todo/` entry linked so far durable: the commit point of injection.
pub fn sync_todo<E: Env>(env: &E, paths: &Paths, cfg: &Config) -> Result<(), QueueError> {
    sync_dir(env.fs(), cfg, SyncPoint::TodoDir, &paths.todo())
}
