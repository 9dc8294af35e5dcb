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

/// qmail's attempt times (relative to birth) when the MTA is down in each `[stop, restart)`
/// of `downs`: an attempt that falls due while it is down happens at the restart, and the
/// schedule goes on from there (`(isqrt(t) + skip)²`); nothing else moves.
pub fn expected_with_downtime(skip: u64, lifetime: u64, downs: &[(u64, u64)]) -> Vec<u64> {
    let isqrt = |x: u64| (0..).take_while(|r: &u64| r * r <= x).last().unwrap_or(0);
    let mut v = Vec::new();
    let mut next = 0;
    loop {
        let t = downs
            .iter()
            .find(|(a, b)| next >= *a && next < *b)
            .map_or(next, |&(_, b)| b);
        v.push(t);
        if t > lifetime {
            return v;
        }
        let n = isqrt(t) + skip;
        next = n * n;
    }
}

/// Run `mta run` over a message's lifetime, stopping it (SIGTERM) at each `stop` and
/// starting it again at `restart`, all times relative to the message's birth. Returns the
/// remote attempt times relative to birth, and the bounces made.
pub fn run_with_downtime(seed: u64, downs: &[(u64, u64)]) -> (Vec<u64>, usize) {
    let week = 604_800;
    let w = World::new(image(&[], &[]), seed);
    w.inject(
        "joe@heaven.af.mil",
        &["bill@far.example"],
        "Subject: x\n\nx\n",
    );
    let (mut times, mut bounces, mut up) = (Vec::new(), 0, 0);
    for &(stop, restart) in downs.iter().chain([(week + 86_400, week + 86_400)].iter()) {
        let run = w.run(stop - up);
        bounces += run.bounces();
        for (id, v) in run.attempt_times("remote") {
            times.extend(v.iter().map(|t| t - id.secs));
        }
        w.env.clock().advance(Duration::from_secs(restart - stop));
        up = restart;
        if run.queued == Some(0) {
            break;
        }
    }
    (times, bounces)
}

/// retry-schedule-restarts: the MTA stopped between attempts (a minute, twice) sees qmail's
/// 40 times exactly; down for a day across several attempts, it makes one at the restart
/// and goes on from there. Both end in one bounce.
pub fn restarts(seed: u64) -> Vec<String> {
    let week = 604_800;
    let mut bad = Vec::new();
    for downs in [
        vec![(100_007, 100_067), (300_011, 300_071)],
        vec![(200_003, 286_403)],
    ] {
        let (times, bounces) = run_with_downtime(seed, &downs);
        let want = expected_with_downtime(20, week, &downs);
        if times != want {
            bad.push(format!(
                "down {downs:?}: attempts at {times:?}, want {want:?}"
            ));
        }
        if bounces != 1 {
            bad.push(format!("down {downs:?}: {bounces} bounces"));
        }
    }
    bad
}
