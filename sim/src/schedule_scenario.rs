//! retry-schedule-40: messages to a remote host that cannot be reached (the world has no
//! network), over a whole queue lifetime of `mta run` on the paused clock. Every message must
//! be tried exactly at qmail's 40 times, then bounced once.

use std::time::{Duration, Instant};

use crate::deliver::{image, World};

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
    let birth = mta::env::unix_secs(mta::env::Env::now(&w.env));
    let t = Instant::now();
    let run = w.run(week + 86_400);
    let wall = t.elapsed();
    let want = expected(20, week);
    let mut violations = Vec::new();
    let remote = run.attempt_times("remote");
    if remote.len() != messages {
        violations.push(format!(
            "{} of {messages} messages were tried",
            remote.len()
        ));
    }
    for (id, times) in &remote {
        let rel: Vec<u64> = times.iter().map(|t| t - id.secs).collect();
        if rel != want {
            violations.push(format!("msg {id}: attempts at {rel:?}"));
        }
    }
    if run.bounces() != messages {
        violations.push(format!("{} bounces for {messages} messages", run.bounces()));
    }
    if !run.drained() {
        violations.push(format!(
            "queue not drained: {:?} {:?}",
            run.exit, run.queued
        ));
    }
    Report {
        messages,
        attempts: run.attempts("remote"),
        bounces: run.bounces() as u64,
        simulated: Duration::from_secs(mta::env::unix_secs(mta::env::Env::now(&w.env)) - birth),
        wall,
        violations,
    }
}
