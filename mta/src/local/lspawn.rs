//! qmail-lspawn: local deliveries in a process of their own.
//!
//! Started as root, `mta run` keeps root only in this helper: it starts it
//! ([`crate::env::Env::spawn_lspawn`]) and then gives its own privileges up, so the SMTP
//! receiver, the queue manager and remote delivery run as the unprivileged queue user. The
//! helper's one input is this pipe from the queue manager; for each request it runs
//! [`super::deliver`], which takes on the recipient's uid and gid (never root's) for the
//! delivery, and answers with the outcome.
//!
//! Frames on the pipe are `len:u32 | kind:u8 | fields`, fields as `len:u32 | bytes` or fixed
//! little-endian integers. Requests carry an id; answers come back in any order with it.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncRead;
use tokio::sync::{oneshot, Notify};

use super::{Delivery, LocalConfig, Outcome};
use crate::env::{Env, HelperPipe};
use crate::helperframe::{bad, send, Dec, Enc, Writer};
use crate::queue::{BodyRef, MsgId};

/// The largest frame either side accepts (an outcome with a forward's message).
const MAX_FRAME: usize = 1 << 30;

const DELIVER: u8 = 1;
const RELOAD: u8 = 2;
const OUTCOME: u8 = 3;

/// Read one frame (see [`crate::helperframe`]).
async fn read_frame(r: &mut (dyn AsyncRead + Send + Unpin)) -> io::Result<Option<(u8, Vec<u8>)>> {
    crate::helperframe::read_frame(r, MAX_FRAME).await
}

fn encode_delivery(id: u64, d: &Delivery) -> Vec<u8> {
    let mut e = Enc::new(DELIVER);
    e.u64(id).u64(d.id.secs).u64(d.id.rand).u64(d.rcpt.into());
    e.bytes(d.sender.as_bytes()).bytes(d.recipient.as_bytes());
    let path = d.message.path.as_os_str().as_encoded_bytes();
    e.bytes(path).u64(d.message.offset).u64(d.message.len);
    e.u64(d.first_attempt.into());
    e.done()
}

fn decode_delivery(f: &[u8]) -> io::Result<(u64, Delivery)> {
    let mut d = Dec(f);
    let req = d.u64()?;
    let id = MsgId {
        secs: d.u64()?,
        rand: d.u64()?,
    };
    let rcpt = u32::try_from(d.u64()?).map_err(|_| bad("recipient"))?;
    let (sender, recipient) = (d.text()?, d.text()?);
    let path = PathBuf::from(std::str::from_utf8(d.bytes()?).map_err(|_| bad("path"))?);
    let message = BodyRef {
        path,
        offset: d.u64()?,
        len: d.u64()?,
    };
    let first_attempt = d.u64()? != 0;
    Ok((
        req,
        Delivery {
            id,
            rcpt,
            sender,
            recipient,
            message,
            first_attempt,
        },
    ))
}

fn encode_outcome(id: u64, o: &Outcome) -> Vec<u8> {
    let mut e = Enc::new(OUTCOME);
    e.u64(id);
    match o {
        Outcome::Delivered {
            report,
            forwards,
            forward_sender,
            forward_prefix,
        } => {
            e.u64(0).bytes(report.as_bytes()).u64(forwards.len() as u64);
            for f in forwards {
                e.bytes(f.as_bytes());
            }
            e.bytes(forward_sender.as_bytes()).bytes(forward_prefix);
        }
        Outcome::Deferred(t) => {
            e.u64(1).bytes(t.as_bytes());
        }
        Outcome::Failed(t) => {
            e.u64(2).bytes(t.as_bytes());
        }
    }
    e.done()
}

fn decode_outcome(f: &[u8]) -> io::Result<(u64, Outcome)> {
    let mut d = Dec(f);
    let id = d.u64()?;
    let o = match d.u64()? {
        0 => {
            let report = d.text()?;
            let n = d.u64()?;
            let forwards = (0..n).map(|_| d.text()).collect::<io::Result<_>>()?;
            Outcome::Delivered {
                report,
                forwards,
                forward_sender: d.text()?,
                forward_prefix: d.bytes()?.to_vec(),
            }
        }
        1 => Outcome::Deferred(d.text()?),
        2 => Outcome::Failed(d.text()?),
        _ => return Err(bad("outcome")),
    };
    Ok((id, o))
}

/// The helper: deliver what the pipe asks for until it closes, then finish what runs.
pub async fn serve<E: Env>(env: E, root: PathBuf, pipe: HelperPipe) -> io::Result<()> {
    let load = |env: &E| LocalConfig::load(env.fs(), &root).map_err(io::Error::other);
    let mut cfg = Arc::new(load(&env)?);
    let HelperPipe { mut from, to } = pipe;
    let to: Writer = Arc::new(tokio::sync::Mutex::new(to));
    let mut running = tokio::task::JoinSet::new();
    while let Some((kind, f)) = read_frame(&mut *from).await? {
        match kind {
            DELIVER => {
                let (id, d) = decode_delivery(&f)?;
                let (env, cfg, to) = (env.clone(), cfg.clone(), to.clone());
                let log_dir = root.join("queue").join("log");
                running.spawn(async move {
                    let o = match d.message.open_in(env.fs(), &log_dir) {
                        Ok(body) => super::deliver_opened(&env, &cfg, d, body).await,
                        Err(e) => super::unreadable(e),
                    };
                    // The queue manager went away: it will try again after its restart.
                    let _ = send(&to, &encode_outcome(id, &o)).await;
                });
            }
            RELOAD => match load(&env) {
                Ok(c) => cfg = Arc::new(c),
                Err(e) => tracing::warn!("lspawn: {e}; keeping the old settings"),
            },
            _ => return Err(bad("request")),
        }
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    Ok(())
}

/// The queue manager's end: hands deliveries to the helper.
pub struct Lspawn {
    to: Writer,
    pending: Mutex<BTreeMap<u64, oneshot::Sender<Outcome>>>,
    next: AtomicU64,
    gone: AtomicBool,
    closed: Notify,
}

fn helper_gone() -> Outcome {
    Outcome::Deferred("The local delivery helper is gone. (#4.3.0)".into())
}

impl Lspawn {
    /// Talk to the helper on `pipe` (a task reads its answers).
    pub fn start(pipe: HelperPipe) -> Arc<Lspawn> {
        let HelperPipe { from, to } = pipe;
        let l = Arc::new(Lspawn {
            to: Arc::new(tokio::sync::Mutex::new(to)),
            pending: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
            gone: AtomicBool::new(false),
            closed: Notify::new(),
        });
        tokio::spawn(l.clone().answers(from));
        l
    }

    async fn answers(self: Arc<Self>, mut from: Box<dyn AsyncRead + Send + Unpin>) {
        loop {
            let got = match read_frame(&mut *from).await {
                Ok(Some((OUTCOME, f))) => decode_outcome(&f),
                Ok(Some(_)) => Err(bad("answer")),
                Ok(None) => Err(io::ErrorKind::UnexpectedEof.into()),
                Err(e) => Err(e),
            };
            match got {
                Ok((id, o)) => {
                    let tx = self.pending().remove(&id);
                    if let Some(tx) = tx {
                        let _ = tx.send(o);
                    }
                }
                Err(e) => {
                    tracing::error!("local delivery helper: {e}");
                    self.gone.store(true, Ordering::SeqCst);
                    // Dropping the senders answers every waiting delivery.
                    self.pending().clear();
                    self.closed.notify_waiters();
                    self.closed.notify_one();
                    return;
                }
            }
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, oneshot::Sender<Outcome>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deliver through the helper; a helper that is gone defers.
    pub async fn deliver(&self, d: &Delivery) -> Outcome {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending().insert(id, tx);
        if self.gone.load(Ordering::SeqCst)
            || send(&self.to, &encode_delivery(id, d)).await.is_err()
        {
            self.pending().remove(&id);
            return helper_gone();
        }
        rx.await.unwrap_or_else(|_| helper_gone())
    }

    /// Tell the helper to reread its control files (SIGHUP).
    pub async fn reload(&self) {
        if send(&self.to, &Enc::new(RELOAD).done()).await.is_err() {
            tracing::error!("local delivery helper: cannot ask it to reload");
        }
    }

    /// Resolves once the helper is gone (the server then exits for its supervisor to
    /// restart everything).
    pub async fn closed(&self) {
        while !self.gone.load(Ordering::SeqCst) {
            let n = self.closed.notified();
            if self.gone.load(Ordering::SeqCst) {
                return;
            }
            n.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery() -> Delivery {
        Delivery {
            id: MsgId { secs: 5, rand: 6 },
            rcpt: 2,
            sender: "joe@example.org".into(),
            recipient: "fred@example.org".into(),
            message: BodyRef {
                path: "/q/queue/log/0000000000000001.0000abcd".into(),
                offset: 17,
                len: 1 << 40,
            },
            first_attempt: true,
        }
    }

    #[test]
    fn frames_round_trip() {
        let f = encode_delivery(9, &delivery());
        assert_eq!(
            u32::from_le_bytes(f[..4].try_into().unwrap()) as usize,
            f.len() - 4
        );
        let (id, d) = decode_delivery(&f[5..]).unwrap();
        let want = delivery();
        assert_eq!(
            (id, d.id, d.rcpt, &d.sender, &d.recipient, &d.message),
            (
                9,
                want.id,
                want.rcpt,
                &want.sender,
                &want.recipient,
                &want.message
            )
        );
        assert!(d.first_attempt);
        for o in [
            Outcome::Delivered {
                report: "did 1+1+0/".into(),
                forwards: vec!["a@b".into(), "c@d".into()],
                forward_sender: "s@t".into(),
                forward_prefix: b"Delivered-To: x\n".to_vec(),
            },
            Outcome::Deferred("later".into()),
            Outcome::Failed("never".into()),
        ] {
            let f = encode_outcome(4, &o);
            assert_eq!(decode_outcome(&f[5..]).unwrap(), (4, o));
        }
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        let f = encode_delivery(9, &delivery());
        for cut in 5..f.len() {
            assert!(decode_delivery(&f[5..cut]).is_err(), "cut at {cut}");
        }
        let f = encode_outcome(1, &Outcome::Deferred("x".into()));
        for cut in 5..f.len() {
            assert!(decode_outcome(&f[5..cut]).is_err(), "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn a_helper_that_goes_away_defers_every_delivery() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (from, to) = tokio::io::split(ours);
        let l = Lspawn::start(HelperPipe {
            from: Box::new(from),
            to: Box::new(to),
        });
        drop(theirs);
        l.closed().await;
        assert_eq!(l.deliver(&delivery()).await, helper_gone());
    }
}
