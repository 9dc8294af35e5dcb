//! The queue manager: owns the queue, takes new messages (group commit), schedules delivery
//! passes by qmail's birth-anchored schedule, runs deliveries concurrently per channel, makes
//! their outcomes durable, and finishes messages (bounce + retire, atomically).
//!
//! Scheduling never scans the queue: due passes sit in an ordered set keyed by time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::bounce::{self, Bounce, Names};
use super::{log, schedule};
use crate::env::{unix_secs, Env};
use crate::local::{self, LocalConfig};
use crate::queue::service::{Inbox, Refusal, Request};
use crate::queue::{
    validate, BodyRef, Channel, Classify, Forward, MsgId, NewMessage, Queue, QueueError, Record,
    Status,
};

/// How a delivery ended (local or remote).
pub use crate::local::Outcome;

mod batch;

/// Remote delivery, supplied by the caller (SMTP to MX hosts on a real host, scripted peers
/// in the simulator). Without one, remote recipients wait in the queue.
pub trait Remote<E: Env>: Send + Sync + 'static {
    fn deliver(
        &self,
        env: E,
        sender: String,
        recipient: String,
        body: BodyRef,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;

    /// Recipients of one message (with one sender) whose keys are equal may be delivered
    /// together by [`Remote::deliver_batch`] (one QMTP package per host); `None`: alone.
    fn batch_key(&self, _recipient: &str) -> Option<String> {
        None
    }

    /// Deliver to several recipients at once: one outcome per recipient, in order.
    fn deliver_batch(
        &self,
        env: E,
        sender: String,
        recipients: Vec<String>,
        body: BodyRef,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Outcome>> + Send>> {
        let each: Vec<_> = recipients
            .into_iter()
            .map(|r| self.deliver(env.clone(), sender.clone(), r, body.clone()))
            .collect();
        Box::pin(async move {
            let mut out = Vec::new();
            for d in each {
                out.push(d.await);
            }
            out
        })
    }
}

/// The queue manager's settings (control files).
#[derive(Clone)]
pub struct Settings {
    pub local: Arc<LocalConfig>,
    pub names: Names,
    pub lifetime: u64,
    pub concurrency_local: usize,
    pub concurrency_remote: usize,
    /// How often `todo/` is checked for injections from other processes.
    pub todo_poll: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error(transparent)]
    Local(#[from] crate::local::LocalConfigError),
}

impl Settings {
    /// Read the control files the queue manager uses.
    pub fn load<F: crate::env::Fs>(
        fs: &F,
        root: &std::path::Path,
    ) -> Result<Settings, SettingsError> {
        let c = crate::control::ControlDir::new(fs, root);
        let me = c.me()?;
        Ok(Settings {
            local: Arc::new(LocalConfig::load(fs, root)?),
            names: Names {
                bouncefrom: c.line_or("bouncefrom", "MAILER-DAEMON")?,
                bouncehost: c.line_or("bouncehost", &me)?,
                doublebounceto: c.lines("doublebounceto")?.map_or("postmaster".into(), |l| {
                    l.into_iter().next().unwrap_or_default()
                }),
                doublebouncehost: c.line_or("doublebouncehost", &me)?,
                bouncemaxbytes: c.number("bouncemaxbytes", 4096)? as usize,
                virtualdomains: crate::control::Rewrite::load(&c)?.virtualdomains,
            },
            lifetime: c.number("queuelifetime", 604_800)?,
            concurrency_local: c.number("concurrencylocal", 10)?.max(1) as usize,
            concurrency_remote: c.number("concurrencyremote", 20)?.max(1) as usize,
            todo_poll: Duration::from_secs(1),
        })
    }
}

fn ch(c: Channel) -> usize {
    match c {
        Channel::Local => 0,
        Channel::Remote => 1,
    }
}
const CHANNELS: [Channel; 2] = [Channel::Local, Channel::Remote];

struct Pass {
    start: u64,
    outstanding: usize,
    dying: bool,
}

struct JobResult {
    id: MsgId,
    rcpt: u32,
    channel: Channel,
    delivery: u64,
    outcome: Outcome,
}

pub struct Manager<E: Env, C: Classify> {
    env: E,
    q: Queue<E>,
    classify: C,
    s: Settings,
    remote: Option<Arc<dyn Remote<E>>>,
    due: BTreeSet<(u64, MsgId, usize)>,
    passes: BTreeMap<(MsgId, usize), Pass>,
    /// Per message, the running deliveries that were told where its bytes are in the log
    /// (compaction must not move it under them).
    handed: BTreeMap<MsgId, usize>,
    ready: [VecDeque<(MsgId, u32)>; 2],
    running: [usize; 2],
    results_tx: mpsc::UnboundedSender<JobResult>,
    results_rx: mpsc::UnboundedReceiver<JobResult>,
    next_delivery: u64,
    /// Messages with nothing pending that still need their bounce and retirement (found at
    /// start after a crash between the last outcome and the retirement).
    unfinished: Vec<MsgId>,
    /// Local recipients never tried since their message entered the queue in this process:
    /// their first delivery cannot be a repeat, so Maildir need not look for an earlier copy.
    fresh: BTreeSet<(MsgId, u32)>,
    /// Where every qmail-format log line goes too, besides `tracing` (scenario checks).
    pub sink: Option<log::Sink>,
    /// Rereads address rewriting and settings on a reload request (SIGHUP).
    pub reloader: Option<Reloader<C>>,
    /// The privileged helper local deliveries go through when this process gave up root
    /// (`None`: they run here).
    pub lspawn: Option<Arc<crate::local::lspawn::Lspawn>>,
    /// Finishing `unfinished` failed (the queue could not take the records): not before this.
    finish_retry_at: u64,
}

/// Seconds before finishing messages is tried again after the queue refused the records.
const FINISH_RETRY_SECS: u64 = 30;

/// Reads fresh address rewriting and settings from the control files.
pub type Reloader<C> = Box<dyn Fn() -> Result<(C, Settings), String> + Send>;

/// An id derived from another, so a repeated injection after a crash is recognised.
pub fn derived_id(id: MsgId, tag: u64) -> MsgId {
    let mut z = id.rand ^ tag.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    MsgId {
        secs: id.secs,
        rand: z ^ (z >> 31),
    }
}
const TAG_BOUNCE: u64 = 1;
const TAG_FORWARD: u64 = 2;

impl<E: Env, C: Classify + Send + 'static> Manager<E, C> {
    pub fn new(
        env: E,
        q: Queue<E>,
        classify: C,
        s: Settings,
        remote: Option<Arc<dyn Remote<E>>>,
    ) -> Self {
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let mut m = Manager {
            env,
            q,
            classify,
            s,
            remote,
            due: BTreeSet::new(),
            passes: BTreeMap::new(),
            handed: BTreeMap::new(),
            ready: [VecDeque::new(), VecDeque::new()],
            running: [0, 0],
            results_tx,
            results_rx,
            next_delivery: 1,
            unfinished: Vec::new(),
            sink: None,
            reloader: None,
            lspawn: None,
            finish_retry_at: 0,
            fresh: BTreeSet::new(),
        };
        // After a start (crash or not) a pending delivery is tried at once if it was never
        // tried or an attempt fell due while the MTA was down; otherwise when its next pass
        // is due. The birth-anchored schedule continues from there.
        let now = m.now();
        // Injections taken in by the recovery were never in the queue before: never tried.
        for id in m.q.take_new() {
            m.mark_fresh(id);
        }
        let ids: Vec<MsgId> = m.q.messages().map(|x| x.id()).collect();
        for id in ids {
            m.schedule_new(id, now);
        }
        m
    }

    pub fn queue(&self) -> &Queue<E> {
        &self.q
    }

    pub fn settings(&self) -> &Settings {
        &self.s
    }

    fn now(&self) -> u64 {
        unix_secs(self.env.now())
    }

    /// Schedule a message just added (or found at start): every channel with pending work is
    /// due now, or, for a message tried before a restart, when its schedule says.
    fn schedule_new(&mut self, id: MsgId, now: u64) {
        let Some(m) = self.q.get(id) else { return };
        if m.is_done() {
            self.unfinished.push(id);
            return;
        }
        for c in CHANNELS {
            if c == Channel::Remote && self.remote.is_none() {
                continue;
            }
            if m.rcpts
                .iter()
                .any(|r| r.rcpt.channel == c && r.status == Status::Pending)
            {
                // Continue the schedule where a pass before the restart left it: due now
                // only if an attempt fell due while the MTA was down.
                let forget = crate::planted::on(crate::planted::Bug::ForgetLastAttempt);
                let due = match m.tried[ch(c)] {
                    _ if forget => now,
                    0 => now,
                    t => schedule::next_pass(m.env.birth, t, c).max(now),
                };
                self.due.insert((due, id, ch(c)));
            }
        }
    }

    /// A record of each pass these results end that leaves recipients pending (deferred),
    /// so that after a restart the schedule goes on from that pass.
    fn tried_records(&self, results: &[JobResult]) -> Vec<Record> {
        let mut ending: BTreeMap<(MsgId, usize), (usize, bool)> = BTreeMap::new();
        for r in results {
            let e = ending.entry((r.id, ch(r.channel))).or_default();
            e.0 += 1;
            e.1 |= matches!(r.outcome, Outcome::Deferred(_));
        }
        ending
            .into_iter()
            .filter_map(|((id, c), (n, deferred))| {
                let p = self.passes.get(&(id, c))?;
                (deferred && p.outstanding == n).then_some(Record::Tried {
                    id,
                    channel: CHANNELS[c],
                    at: p.start,
                })
            })
            .collect()
    }

    /// Make everything due now (SIGALRM, `mta queue flush`).
    fn flush(&mut self, now: u64) {
        let all: Vec<_> = std::mem::take(&mut self.due).into_iter().collect();
        for (_, id, c) in all {
            self.due.insert((now, id, c));
        }
    }

    fn start_due(&mut self, now: u64) {
        while let Some(&(t, id, c)) = self.due.first() {
            if t > now {
                break;
            }
            self.due.pop_first();
            let Some(m) = self.q.get(id) else { continue };
            let jobs: Vec<u32> = m
                .rcpts
                .iter()
                .enumerate()
                .filter(|(_, r)| ch(r.rcpt.channel) == c && r.status == Status::Pending)
                .map(|(i, _)| i as u32)
                .collect();
            if jobs.is_empty() {
                continue;
            }
            let dying = schedule::dying(m.env.birth, now, self.s.lifetime);
            self.passes.insert(
                (id, c),
                Pass {
                    start: now,
                    outstanding: jobs.len(),
                    dying,
                },
            );
            for r in jobs {
                self.ready[c].push_back((id, r));
            }
        }
    }

    fn launch(&mut self) {
        for c in 0..2 {
            let limit = [self.s.concurrency_local, self.s.concurrency_remote][c];
            while self.running[c] < limit {
                let Some((id, rcpt)) = self.ready[c].pop_front() else {
                    break;
                };
                if self.q.get(id).is_none() {
                    continue;
                }
                let room = limit - self.running[c] - 1;
                let more = if c == 1 {
                    self.companions(id, rcpt, room)
                } else {
                    Vec::new()
                };
                if more.is_empty() {
                    self.start(c, id, rcpt);
                } else {
                    self.start_batch(id, [rcpt].into_iter().chain(more).collect());
                }
            }
        }
    }

    /// Where `n` deliveries read the message from (streamed from the queue, never held); the
    /// message stays in place until each has its result.
    fn payload(&mut self, id: MsgId, n: usize) -> Option<BodyRef> {
        match self.q.body(id) {
            Ok(b) => {
                *self.handed.entry(id).or_default() += n;
                Some(b)
            }
            Err(e) => {
                tracing::error!("msg {id}: cannot find its data: {e}");
                None
            }
        }
    }

    /// Start one delivery on channel `c`.
    fn start(&mut self, c: usize, id: MsgId, rcpt: u32) {
        let Some(m) = self.q.get(id) else { return };
        let to = m.rcpts[rcpt as usize].rcpt.addr.clone();
        let sender = super::verp::sender_for(&m.env.sender, &to);
        let channel = CHANNELS[c];
        self.running[c] += 1;
        let Some(body) = self.payload(id, 1) else {
            let _ = self.results_tx.send(JobResult {
                id,
                rcpt,
                channel,
                delivery: 0,
                outcome: Outcome::Deferred("Unable to read the message. (#4.3.0)".into()),
            });
            return;
        };
        let d = self.next_delivery;
        self.next_delivery += 1;
        let chname = ["local", "remote"][c];
        self.log(&format!("starting delivery {d}: msg {id} to {chname} {to}"));
        self.log(&format!(
            "status: local {}/{} remote {}/{}",
            self.running[0], self.s.concurrency_local, self.running[1], self.s.concurrency_remote
        ));
        let tx = self.results_tx.clone();
        let env = self.env.clone();
        let first_attempt = self.fresh.remove(&(id, rcpt))
            || crate::planted::on(crate::planted::Bug::EveryAttemptFirst);
        let cfg = self.s.local.clone();
        let (remote, lspawn) = (self.remote.clone(), self.lspawn.clone());
        tokio::spawn(async move {
            let outcome = match (channel, remote) {
                (Channel::Local, _) => {
                    let del = local::Delivery {
                        id,
                        rcpt,
                        sender,
                        recipient: to,
                        message: body,
                        first_attempt,
                    };
                    match lspawn {
                        Some(l) => l.deliver(&del).await,
                        None => local::deliver(&env, &cfg, del).await,
                    }
                }
                (Channel::Remote, Some(r)) => r.deliver(env, sender, to, body).await,
                (Channel::Remote, None) => Outcome::Deferred("No remote delivery.".into()),
            };
            let _ = tx.send(JobResult {
                id,
                rcpt,
                channel,
                delivery: d,
                outcome,
            });
        });
    }

    /// Turn results into records: outcomes, and forwards queued with the outcome that made
    /// them.
    fn result_records(
        &mut self,
        results: &mut [JobResult],
        now: u64,
    ) -> (Vec<Record>, Vec<Forward>) {
        let mut recs = Vec::new();
        let mut fwds = Vec::new();
        for r in results {
            let fwd = match self.forward(r, now) {
                Ok(f) => f,
                Err(e) => {
                    // This delivery alone is tried again (its mailbox writes repeat, as after
                    // a crash); the rest of the round is recorded.
                    let why = format!("Unable to queue the forward: {e}. (#4.3.0)");
                    tracing::error!("msg {}: {why}", r.id);
                    r.outcome = Outcome::Deferred(why);
                    None
                }
            };
            let dying = self
                .passes
                .get(&(r.id, ch(r.channel)))
                .is_some_and(|p| p.dying);
            let d = r.delivery;
            match &r.outcome {
                Outcome::Delivered { report, .. } => {
                    self.log(&format!("delivery {d}: success: {}", log::report(report)));
                    match fwd {
                        None => recs.push(Record::Outcome {
                            id: r.id,
                            rcpt: r.rcpt,
                            status: Status::Delivered,
                        }),
                        Some(f) => fwds.push(f),
                    }
                }
                Outcome::Failed(report) => {
                    self.log(&format!("delivery {d}: failure: {}", log::report(report)));
                    recs.push(Record::Outcome {
                        id: r.id,
                        rcpt: r.rcpt,
                        status: Status::Failed(report.clone()),
                    });
                }
                Outcome::Deferred(report) if dying => {
                    self.log(&format!("delivery {d}: failure: {}", log::report(report)));
                    let why = format!(
                        "{}\nI'm not going to try again; this message has been in the queue too long.",
                        report.trim_end()
                    );
                    recs.push(Record::Outcome {
                        id: r.id,
                        rcpt: r.rcpt,
                        status: Status::Failed(why),
                    });
                }
                Outcome::Deferred(report) => {
                    self.log(&format!("delivery {d}: deferral: {}", log::report(report)));
                }
            }
        }
        (recs, fwds)
    }

    /// The forward a delivery made, with its outcome (none: no forward, or it is queued
    /// already by an earlier attempt); the message bytes stay in the log.
    fn forward(&self, r: &JobResult, now: u64) -> Result<Option<Forward>, QueueError> {
        let Outcome::Delivered {
            forwards,
            forward_sender,
            forward_prefix,
            ..
        } = &r.outcome
        else {
            return Ok(None);
        };
        let fid = derived_id(r.id, TAG_FORWARD + u64::from(r.rcpt));
        if forwards.is_empty() || self.q.contains(fid) {
            return Ok(None);
        }
        let m = NewMessage {
            sender: forward_sender.clone(),
            recipients: forwards.clone(),
            data: Vec::new(),
            qp: 0,
            uid: 0,
        };
        let Record::Msg { env, rcpts, .. } = self.q.message_record(fid, now, m, &self.classify)
        else {
            return Err(QueueError::Corrupt("not a message record".into()));
        };
        let body = self.q.body(r.id)?;
        let body_crc = Forward::checksum(self.env.fs(), &body).map_err(|e| QueueError::Io {
            context: format!("read msg {} to forward it", r.id),
            source: e,
        })?;
        Ok(Some(Forward {
            env,
            rcpts,
            prefix: forward_prefix.clone(),
            body,
            body_crc,
            outcome: Record::Outcome {
                id: r.id,
                rcpt: r.rcpt,
                status: Status::Delivered,
            },
        }))
    }

    /// After results are durable: account the passes, schedule the next ones.
    fn settle(&mut self, results: &[JobResult]) -> Vec<MsgId> {
        let mut finished = Vec::new();
        for r in results {
            let c = ch(r.channel);
            self.running[c] -= 1;
            if r.delivery != 0 {
                self.release(r.id);
            }
            let key = (r.id, c);
            let done = match self.passes.get_mut(&key) {
                Some(p) => {
                    p.outstanding -= 1;
                    p.outstanding == 0
                }
                None => false,
            };
            if !done {
                continue;
            }
            let p = self.passes.remove(&key).expect("pass");
            let Some(m) = self.q.get(r.id) else { continue };
            let pending = m
                .rcpts
                .iter()
                .any(|x| ch(x.rcpt.channel) == c && x.status == Status::Pending);
            if pending {
                let next = schedule::next_pass(m.env.birth, p.start, r.channel);
                self.due.insert((next, r.id, c));
            } else if m.is_done() && !self.in_pass(r.id) {
                finished.push(r.id);
            }
        }
        finished
    }

    /// Whether a delivery pass of the message runs on any channel (a range lookup: the
    /// passes of a large queue are many).
    fn in_pass(&self, id: MsgId) -> bool {
        self.passes
            .range((id, 0)..=(id, usize::MAX))
            .next()
            .is_some()
    }

    /// One delivery told where the message is has its result.
    fn release(&mut self, id: MsgId) {
        if let Some(n) = self.handed.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.handed.remove(&id);
            }
        }
    }

    /// Records that finish messages: a bounce (if any recipient failed) grouped with the
    /// retirement, so a crash cannot leave one without the other.
    /// Also returns the messages that could not be finished now (their data unreadable).
    fn finish_records(&mut self, ids: &[MsgId], now: u64) -> (Vec<Record>, Vec<MsgId>) {
        let mut recs = Vec::new();
        let mut later = Vec::new();
        for &id in ids {
            let Some(m) = self.q.get(id) else { continue };
            let failures: Vec<(String, String)> = m
                .rcpts
                .iter()
                .filter_map(|r| match &r.status {
                    Status::Failed(why) => Some((r.rcpt.addr.clone(), why.clone())),
                    _ => None,
                })
                .collect();
            let retire = Record::Retire { id };
            if failures.is_empty() {
                self.log(&format!("end msg {id}"));
                recs.push(retire);
                continue;
            }
            let sender = m.env.sender.clone();
            // Only what the bounce returns of the message is read.
            let want = bounce::MAX_BOUNCE_HEADER + self.s.names.bouncemaxbytes + 1;
            let read = self.q.body(id).map_err(|e| e.to_string()).and_then(|b| {
                let mut b = b.open(self.env.fs()).map_err(|e| e.to_string())?;
                Ok((b.prefix(want).map_err(|e| e.to_string())?, b.len()))
            });
            let (part, len) = match read {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("msg {id}: cannot read it to bounce: {e}");
                    later.push(id);
                    continue;
                }
            };
            match bounce::make(&self.s.names, &sender, &failures, (&part, len), now) {
                Bounce::Discard(why) => {
                    self.log(&format!("{why}: discarding bounce/{id}"));
                    recs.push(retire);
                }
                Bounce::Send {
                    sender,
                    recipient,
                    data,
                } => {
                    let bid = derived_id(id, TAG_BOUNCE);
                    self.log(&format!("bounce msg {id} qp {}", bid));
                    let mut with_trace =
                        crate::queue::trace_line(bid.rand % 100_000, "invoked for bounce", now)
                            .into_bytes();
                    with_trace.extend_from_slice(&data);
                    let m = NewMessage {
                        sender,
                        recipients: vec![recipient],
                        data: with_trace,
                        qp: 0,
                        uid: 0,
                    };
                    let msg = self.q.message_record(bid, now, m, &self.classify);
                    recs.push(Record::Group(vec![msg, retire]));
                }
            }
            self.log(&format!("end msg {id}"));
        }
        (recs, later)
    }

    fn log(&mut self, text: &str) {
        log::line(text);
        if let Some(sink) = &self.sink {
            sink(text);
        }
    }

    /// A message new in this process: none of its local recipients has been tried.
    fn mark_fresh(&mut self, id: MsgId) {
        let Some(m) = self.q.get(id) else { return };
        for (i, r) in m.rcpts.iter().enumerate() {
            if r.rcpt.channel == Channel::Local {
                self.fresh.insert((id, i as u32));
            }
        }
    }

    fn forget_fresh(&mut self, id: MsgId) {
        let gone: Vec<_> = self
            .fresh
            .range((id, 0)..=(id, u32::MAX))
            .copied()
            .collect();
        for k in gone {
            self.fresh.remove(&k);
        }
    }

    fn log_new(&mut self, id: MsgId) {
        let Some(m) = self.q.get(id) else { return };
        let info = format!(
            "info msg {id}: bytes {} from <{}> qp {} uid {}",
            m.size(),
            m.env.sender,
            m.env.qp,
            m.env.uid
        );
        self.log(&format!("new msg {id}"));
        self.log(&info);
    }

    /// One round: new messages, results, finishes. A queue that cannot take the records (a
    /// full disk, an I/O error) refuses the new messages and turns the results into deferrals:
    /// the deliveries are tried again on the schedule, and nothing is acknowledged that is
    /// not durable.
    fn commit(&mut self, subs: Vec<(NewMessage, Reply)>, mut results: Vec<JobResult>, now: u64) {
        let mut recs = Vec::new();
        let mut replies = Vec::new();
        for (m, reply) in subs {
            if let Err(e) = validate(&m) {
                let _ = reply.send(Err(Refusal::from(&e)));
                continue;
            }
            let id = self.q.new_id();
            recs.push(self.q.message_record(id, now, m, &self.classify));
            replies.push((id, reply));
        }
        let (outcomes, fwds) = self.result_records(&mut results, now);
        recs.extend(outcomes);
        let written = self.commit_round(recs, fwds, &mut results);
        match written {
            Ok(()) => replies.into_iter().for_each(|(id, r)| {
                let _ = r.send(Ok(id));
            }),
            Err(e) => {
                tracing::error!("queue append failed: {e}");
                let refusal = Refusal::from(&e);
                replies.into_iter().for_each(|(_, r)| {
                    let _ = r.send(Err(refusal.clone()));
                });
                for r in &mut results {
                    self.log(&format!("delivery {}: not recorded: {e}", r.delivery));
                    r.outcome =
                        Outcome::Deferred(format!("Unable to record the outcome: {e}. (#4.3.0)"));
                }
            }
        }
        let finished = self.settle(&results);
        self.finish(finished, now);
        for id in self.q.take_new() {
            self.log_new(id);
            self.mark_fresh(id);
            self.schedule_new(id, now);
        }
    }

    /// Append a round's records and forwards. If the append fails with forwards in it (one
    /// could not be copied), the round goes again without them, their deliveries deferred:
    /// one bad forward must not turn the whole round's deliveries into repeats.
    fn commit_round(
        &mut self,
        mut recs: Vec<Record>,
        fwds: Vec<Forward>,
        results: &mut [JobResult],
    ) -> Result<(), QueueError> {
        if fwds.is_empty() {
            recs.extend(self.tried_records(results));
            return self.q.commit(recs);
        }
        let mut with = recs.clone();
        with.extend(self.tried_records(results));
        let e = match self.q.commit_forwards(with, fwds) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        tracing::error!("queue append with forwards failed: {e}; again without them");
        for r in results.iter_mut() {
            if matches!(&r.outcome, Outcome::Delivered { forwards, .. } if !forwards.is_empty())
                && !self
                    .q
                    .contains(derived_id(r.id, TAG_FORWARD + u64::from(r.rcpt)))
            {
                let why = format!("Unable to queue the forward: {e}. (#4.3.0)");
                self.log(&format!(
                    "delivery {}: deferral: {}",
                    r.delivery,
                    log::report(&why)
                ));
                r.outcome = Outcome::Deferred(why);
            }
        }
        // Their outcomes were only in the forwards: `recs` holds none of them.
        recs.extend(self.tried_records(results));
        self.q.commit(recs)
    }

    /// Bounce and retire messages with nothing pending; what cannot be finished now is
    /// tried again after [`FINISH_RETRY_SECS`].
    fn finish(&mut self, mut ids: Vec<MsgId>, now: u64) {
        if now >= self.finish_retry_at {
            ids.append(&mut self.unfinished);
            ids.sort();
            ids.dedup();
        }
        // A message whose todo/ entry might come back waits: retired, it would be queued again.
        let (mut ids, mut later): (Vec<MsgId>, Vec<MsgId>) =
            ids.into_iter().partition(|&id| !self.q.removal_pending(id));
        let (fin, not_now) = self.finish_records(&ids, now);
        later.extend(not_now);
        if !fin.is_empty() {
            let n = fin.len();
            match self.q.commit(fin) {
                Ok(()) => {
                    let handed = &self.handed;
                    if let Err(e) = self.q.retire_around(&[], |id| handed.contains_key(&id)) {
                        tracing::warn!("log collection: {e}");
                    }
                    for &id in &ids {
                        self.forget_fresh(id);
                    }
                }
                Err(e) => {
                    tracing::error!("queue append failed finishing {n} messages: {e}");
                    later.append(&mut ids);
                }
            }
        }
        if !later.is_empty() {
            self.unfinished.extend(later);
            self.finish_retry_at = now + FINISH_RETRY_SECS;
        }
    }

    /// How long the loop may sleep: until the next due pass or `todo/` poll, at once for
    /// messages waiting to be finished.
    fn wait_time(&self, now: u64, busy: bool, last_poll: u64) -> Duration {
        let poll_at = last_poll + self.s.todo_poll.as_secs().max(1);
        let mut wake = self.due.first().map_or(poll_at, |d| d.0.min(poll_at));
        if !self.unfinished.is_empty() {
            wake = wake.min(self.finish_retry_at);
        }
        let floor = if busy || wake <= now { 0 } else { 1 };
        Duration::from_secs(wake.saturating_sub(now).max(floor))
    }

    /// Apply an operator's request (SIGALRM, SIGHUP).
    fn control(&mut self, req: Control, now: u64) {
        match req {
            Control::Flush => self.flush(now),
            Control::Reload => match self.reloader.as_ref().map(|r| r()) {
                None => {}
                Some(Ok((c, mut s))) => {
                    s.todo_poll = self.s.todo_poll;
                    self.classify = c;
                    self.s = s;
                    if let Some(l) = self.lspawn.clone() {
                        tokio::spawn(async move { l.reload().await });
                    }
                    self.log("control files reread");
                }
                Some(Err(e)) => self.log(&format!(
                    "alert: unable to reread control files: {e}; keeping the old ones"
                )),
            },
        }
    }

    /// Run until every handle is gone, then let running deliveries finish.
    pub async fn run(mut self, inbox: Inbox) {
        let mut inbox = inbox.0;
        let mut inbox_open = true;
        let mut last_poll = 0;
        loop {
            let now = self.now();
            if now >= last_poll + self.s.todo_poll.as_secs().max(1) {
                last_poll = now;
                self.preprocess(now);
            }
            if inbox_open {
                self.start_due(now);
            }
            self.launch();
            let busy = self.running != [0, 0];
            if !inbox_open && !busy {
                break;
            }
            let wait = self.wait_time(now, busy, last_poll);
            let mut round = Round::default();
            tokio::select! {
                biased;
                Some(r) = self.results_rx.recv(), if busy => round.results.push(r),
                req = inbox.recv(), if inbox_open => match req {
                    Some(r) => round.take(r),
                    None => inbox_open = false,
                },
                _ = self.env.sleep(wait), if !busy || wait > Duration::ZERO => {}
            }
            // Group commit: take whatever else is waiting.
            while let Ok(r) = self.results_rx.try_recv() {
                round.results.push(r);
            }
            while round.subs.len() < crate::queue::service::MAX_BATCH {
                match inbox.try_recv() {
                    Ok(r) => round.take(r),
                    Err(_) => break,
                }
            }
            if round.poked {
                last_poll = 0;
            }
            let now = self.now();
            for c in std::mem::take(&mut round.control) {
                self.control(c, now);
            }
            self.commit(round.subs, round.results, now);
        }
    }

    /// Move `todo/` into the queue. A failure (full disk) leaves the entries for the next poll.
    fn preprocess(&mut self, now: u64) {
        if let Err(e) = self.q.preprocess(&self.classify) {
            tracing::error!("preprocessing todo/: {e}");
        }
        for id in self.q.take_new() {
            self.log_new(id);
            self.mark_fresh(id);
            self.schedule_new(id, now);
        }
    }
}

/// An operator's request.
#[derive(Clone, Copy)]
enum Control {
    Flush,
    Reload,
}

type Reply = tokio::sync::oneshot::Sender<Result<MsgId, Refusal>>;

/// What one turn of the loop collected.
#[derive(Default)]
struct Round {
    subs: Vec<(NewMessage, Reply)>,
    results: Vec<JobResult>,
    control: Vec<Control>,
    poked: bool,
}

impl Round {
    fn take(&mut self, r: Request) {
        match r {
            Request::Submit(m, reply) => self.subs.push((m, reply)),
            Request::Poke => self.poked = true,
            Request::Flush => self.control.push(Control::Flush),
            Request::Reload => self.control.push(Control::Reload),
        }
    }
}
