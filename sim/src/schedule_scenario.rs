//! retry-schedule-40: messages to a remote peer that always defers, over a whole queue
//! lifetime on the manual clock. Every message must be tried exactly at qmail's 40 times,
//! then bounced once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mta::send::manager::{Outcome, Remote, Until};

use crate::deliver::{image, World};
use crate::env::SimEnv;

/// A remote that always says "try again later".
pub struct AlwaysDefer(pub Arc<AtomicUsize>);

impl Remote<SimEnv> for AlwaysDefer {
    fn deliver(
        &self,
        _env: SimEnv,
        _sender: String,
        _rcpt: String,
        _data: Arc<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Outcome::Deferred("421 busy, try later".into()) })
    }
}

/// qmail's attempt times relative to birth, from the closed form and not from the code under
/// test: `(skip·k)²` for k = 0, 1, ... up to and including the first one past the lifetime.
pub fn expected(skip: u64, lifetime: u64) -> Vec<u64> {
    let mut v = Vec::new();
    for k in 0.. {
        let t = (skip * k) * (skip * k);
        v.push(t);
        if t > lifetime {
            break;
        }
    }
    v
}

#[derive(Debug, Clone)]
pub struct Report {
    pub messages: usize,
    pub attempts: usize,
    pub bounces: u64,
    pub simulated: Duration,
    pub wall: Duration,
    pub violations: Vec<String>,
}

pub fn run(messages: usize, seed: u64) -> Report {
    let week = 604_800;
    let w = World::new(image(&[], &[]), seed);
    for i in 0..messages {
        w.inject(
            "joe@heaven.af.mil",
            &["bill@far.example"],
            &format!("Subject: {i}\n\nx\n"),
        );
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let (mut m, h, inbox) = w.manager(Some(Arc::new(AlwaysDefer(calls.clone()))));
    m.attempt_log = Some(BTreeMap::new());
    let birth = mta::env::unix_secs(mta::env::Env::now(&w.env));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let t = Instant::now();
    let m = rt.block_on(m.run(inbox, Until::EmptyBy(birth + week + 86_400)));
    let wall = t.elapsed();
    drop(h);
    let want = expected(20, week);
    let mut violations = Vec::new();
    let log = m.attempt_log.as_ref().expect("recording");
    let remote: Vec<_> = log.iter().filter(|((_, c), _)| *c == 1).collect();
    if remote.len() != messages {
        violations.push(format!(
            "{} of {messages} messages were tried",
            remote.len()
        ));
    }
    for ((id, _), times) in remote {
        let rel: Vec<u64> = times.iter().map(|t| t - id.secs).collect();
        if rel != want {
            violations.push(format!("msg {id}: attempts at {rel:?}"));
        }
    }
    if m.counts.bounces != messages as u64 {
        violations.push(format!(
            "{} bounces for {messages} messages",
            m.counts.bounces
        ));
    }
    if m.queue().messages().next().is_some() {
        violations.push("queue not empty at the end".into());
    }
    Report {
        messages,
        attempts: calls.load(Ordering::SeqCst),
        bounces: m.counts.bounces,
        simulated: Duration::from_secs(mta::env::unix_secs(mta::env::Env::now(&w.env)) - birth),
        wall,
        violations,
    }
}
