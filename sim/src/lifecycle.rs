//! The queue lifecycle scenario and its oracle, generic over the environment so the same code
//! runs on the real host and in the simulator.
//!
//! Steps: create the layout; inject two messages in one batch and a third alone (the `todo/`
//! path); open the queue (recovery + preprocessing); submit a fourth straight into the log;
//! record outcomes; retire messages until every old log segment is collected; keep a sixth
//! alive (one recipient delivered) while others come and go, so that compaction moves it to
//! the head; inject and preprocess a fifth. A [`Ledger`] records what each step attempted and
//! what was acknowledged.

use std::path::{Path, PathBuf};

use mta::control::Rewrite;
use mta::env::{Env, Fs};
use mta::queue::{self, Config, MsgId, NewMessage, Paths, Queue, Status};

/// Where the scenario puts its queue inside the env's filesystem.
pub fn queue_dir(base: &Path) -> PathBuf {
    base.join("mta").join("queue")
}

pub fn classifier() -> Rewrite {
    Rewrite {
        envnoathost: "example.org".into(),
        locals: vec!["example.org".into()],
        ..Rewrite::default()
    }
}

/// What the scenario tried and what the MTA acknowledged.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    pub attempted: Vec<NewMessage>,
    /// Acknowledged injections: id and index into `attempted`.
    pub acked: Vec<(MsgId, usize)>,
    pub outcomes_tried: Vec<(MsgId, u32, Status)>,
    pub outcomes_acked: Vec<(MsgId, u32, Status)>,
    pub retires_tried: Vec<MsgId>,
    pub retires_acked: Vec<MsgId>,
    /// Every step completed.
    pub finished: bool,
    /// Log segments right after the churn around the long-lived message (compaction keeps
    /// them few).
    pub segments_after_churn: Option<usize>,
}

fn msg(n: u8, rcpts: &[&str]) -> NewMessage {
    let mut data = format!("Subject: message {n}\n\nbody {n}\n").into_bytes();
    if n == 0 {
        // NUL, 8-bit and no final newline must survive byte-exact.
        data.extend_from_slice(b"\0\xff\xfe raw\r\nno final newline");
    }
    NewMessage {
        sender: format!("sender{n}@example.net"),
        recipients: rcpts.iter().map(|r| r.to_string()).collect(),
        data,
        qp: 100 + u64::from(n),
        uid: 1000,
    }
}

impl Ledger {
    fn inject<E: Env>(&mut self, env: &E, p: &Paths, cfg: &Config, ms: Vec<NewMessage>) -> bool {
        let first = self.attempted.len();
        self.attempted.extend(ms.iter().cloned());
        match queue::inject(env, p, cfg, &ms) {
            Ok(ids) => {
                self.acked.extend(ids.into_iter().zip(first..));
                true
            }
            Err(_) => false,
        }
    }
    fn id(&self, attempt: usize) -> MsgId {
        self.acked
            .iter()
            .find(|(_, i)| *i == attempt)
            .expect("acked")
            .0
    }
    fn record<E: Env>(&mut self, q: &mut Queue<E>, o: Vec<(MsgId, u32, Status)>) -> bool {
        self.outcomes_tried.extend(o.iter().cloned());
        let ok = q.record(&o).is_ok();
        if ok {
            self.outcomes_acked.extend(o);
        }
        ok
    }
    fn retire<E: Env>(&mut self, q: &mut Queue<E>, ids: Vec<MsgId>) -> bool {
        self.retires_tried.extend(ids.iter().copied());
        let ok = q.retire(&ids).is_ok();
        if ok {
            self.retires_acked.extend(ids);
        }
        ok
    }
}

/// Run the scenario until the first failure (after a simulated crash every call fails).
pub fn run<E: Env>(env: &E, base: &Path, cfg: &Config) -> Ledger {
    let mut l = Ledger::default();
    let _ = run_steps(env, base, cfg, &mut l);
    l
}

fn run_steps<E: Env>(env: &E, base: &Path, cfg: &Config, l: &mut Ledger) -> Option<()> {
    let p = Paths::new(queue_dir(base));
    let rw = classifier();
    queue::create_layout(env, &p, cfg).ok()?;
    let ab = vec![
        msg(0, &["alice", "bob@remote.net"]),
        msg(1, &["carol@example.org", "dave@remote.net"]),
    ];
    l.inject(env, &p, cfg, ab).then_some(())?;
    l.inject(env, &p, cfg, vec![msg(2, &["erin"])])
        .then_some(())?;
    let (mut q, _) = Queue::open(env.clone(), p.clone(), *cfg, &rw).ok()?;
    let d = msg(3, &["frank@remote.net"]);
    l.attempted.push(d.clone());
    let ids = q.submit(vec![d], &rw).ok()?;
    l.acked.push((ids[0], 3));
    let (a, b, c, dd) = (l.id(0), l.id(1), l.id(2), l.id(3));
    let fail = |s: &str| Status::Failed(s.to_string());
    l.record(
        &mut q,
        vec![
            (a, 0, Status::Delivered),
            (a, 1, fail("550 no such user (#5.1.1)")),
            (b, 0, Status::Delivered),
        ],
    )
    .then_some(())?;
    l.retire(&mut q, vec![a]).then_some(())?;
    l.record(
        &mut q,
        vec![
            (b, 1, Status::Delivered),
            (c, 0, Status::Delivered),
            (dd, 0, fail("554 rejected")),
        ],
    )
    .then_some(())?;
    l.retire(&mut q, vec![b, c, dd]).then_some(())?;
    churn_around_a_long_lived_message(&mut q, l)?;
    l.inject(env, &p, cfg, vec![msg(4, &["gina"])])
        .then_some(())?;
    q.preprocess(&rw).ok()?;
    l.finished = true;
    Some(())
}

/// A message with a delivered and a pending recipient stays while three larger ones come and
/// go: with small segments, compaction must move it (its outcome too) for the old segments
/// to be collected; its second outcome comes after the move.
fn churn_around_a_long_lived_message<E: Env>(q: &mut Queue<E>, l: &mut Ledger) -> Option<()> {
    let rw = classifier();
    let submit = |q: &mut Queue<E>, l: &mut Ledger, m: NewMessage| {
        l.attempted.push(m.clone());
        let id = q.submit(vec![m], &rw).ok()?[0];
        l.acked.push((id, l.attempted.len() - 1));
        Some(id)
    };
    let e = submit(q, l, msg(5, &["hank", "ivy@remote.net"]))?;
    l.record(q, vec![(e, 0, Status::Delivered)]).then_some(())?;
    let mut churn = Vec::new();
    for n in 6..9 {
        let mut m = msg(n, &["jack"]);
        m.data.extend_from_slice(&[b'x'; 300]);
        churn.push(submit(q, l, m)?);
    }
    l.retire(q, churn).then_some(())?;
    l.segments_after_churn = Some(q.log_stats().segments);
    let fail = Status::Failed("550 gone (#5.1.1)".into());
    l.record(q, vec![(e, 1, fail)]).then_some(())
}

/// What the queue manager does at start: open the queue (recovery and preprocessing).
pub fn recover<E: Env>(env: &E, base: &Path) {
    let p = Paths::new(queue_dir(base));
    let _ = Queue::open(env.clone(), p, Config::default(), &classifier());
}

/// Check the recovered queue against the ledger. Returns every violation found.
pub fn check<E: Env>(env: &E, base: &Path, l: &Ledger) -> Vec<String> {
    let mut bad = Vec::new();
    let p = Paths::new(queue_dir(base));
    let (mut q, _) = match Queue::open(env.clone(), p.clone(), Config::default(), &classifier()) {
        Ok(q) => q,
        Err(e) => return vec![format!("recovery failed: {e}")],
    };
    let ids: Vec<MsgId> = q.messages().map(|m| m.id()).collect();
    for id in ids {
        check_message(&mut q, id, l, &mut bad);
    }
    for (id, _) in &l.acked {
        let present = q.get(*id).is_some();
        let may_be_gone = l.retires_tried.contains(id);
        if !present && !may_be_gone {
            bad.push(format!("{id}: acknowledged message lost"));
        }
    }
    check_clean(env, &p, q, &mut bad);
    bad
}

/// One recovered message: something attempted, not retired, every status tried and every
/// acknowledged outcome kept.
fn check_message<E: Env>(q: &mut Queue<E>, id: MsgId, l: &Ledger, bad: &mut Vec<String>) {
    let m = q.get(id).expect("listed").clone();
    let data = match q.read_data(id) {
        Ok(d) => d,
        Err(e) => return bad.push(format!("{id}: unreadable: {e}")),
    };
    let origin = l.attempted.iter().position(|a| {
        a.sender == m.env.sender
            && a.recipients == m.env.recipients
            && a.data == data
            && m.rcpts.len() == a.recipients.len()
    });
    if origin.is_none() {
        bad.push(format!("{id}: invented or corrupted message"));
    }
    if l.retires_acked.contains(&id) {
        bad.push(format!("{id}: retired message came back"));
    }
    for (i, r) in m.rcpts.iter().enumerate() {
        let i = i as u32;
        let tried = |s: &Status| {
            l.outcomes_tried
                .iter()
                .any(|o| o.0 == id && o.1 == i && &o.2 == s)
        };
        if r.status != Status::Pending && !tried(&r.status) {
            bad.push(format!("{id}: recipient {i} has an invented status"));
        }
        if let Some(o) = l.outcomes_acked.iter().find(|o| o.0 == id && o.1 == i) {
            if o.2 != r.status {
                bad.push(format!("{id}: recipient {i} lost its acknowledged outcome"));
            }
        }
    }
}

/// No debris: nothing in tmp/ (older than the cutoff), todo/ or corrupt/, and a second
/// recovery finds nothing to repair.
fn check_clean<E: Env>(env: &E, p: &Paths, q: Queue<E>, bad: &mut Vec<String>) {
    let fs = env.fs();
    for d in [p.tmp(), p.todo(), p.corrupt()] {
        match fs.list_dir(&d) {
            Ok(v) if v.is_empty() => {}
            Ok(v) => bad.push(format!("debris in {}: {v:?}", d.display())),
            Err(e) => bad.push(format!("{}: {e}", d.display())),
        }
    }
    let before: Vec<_> = q.messages().map(|m| (m.id(), m.rcpts.clone())).collect();
    drop(q);
    match Queue::open(env.clone(), p.clone(), Config::default(), &classifier()) {
        Ok((q2, rec)) => {
            let after: Vec<_> = q2.messages().map(|m| (m.id(), m.rcpts.clone())).collect();
            if after != before {
                bad.push("second recovery changed the queue".into());
            }
            if rec.torn_bytes_cut != 0 || rec.preprocessed != 0 || rec.tmp_removed != 0 {
                bad.push(format!("second recovery still repaired something: {rec:?}"));
            }
            // Every file is a segment the log knows (the open adds a head of its own).
            let on_disk = fs.list_dir(&p.log()).map(|v| v.len()).unwrap_or(0);
            let segs = q2.log_stats().segments;
            if on_disk != segs {
                bad.push(format!("{on_disk} log files for {segs} live segments"));
            }
        }
        Err(e) => bad.push(format!("second recovery failed: {e}")),
    }
}
