//! Durable injection throughput on the real filesystem (every message fsynced, with its
//! directory entry, before it counts).
//!
//! - `todo`: the out-of-process path (`mta inject`): file fsync per message, one `todo/`
//!   fsync per batch.
//! - `log`: the in-process path: one append and one fsync per batch (group commit).
//! - `log-concurrent`: N producer threads each submitting one message at a time to one
//!   committer thread that drains whatever is waiting into one batch.

use std::sync::mpsc;
use std::thread;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use mta::env::real::RealEnv;
use mta::queue::{self, Config, Paths, Queue};
use mta_benches::{message, rewrite, scratch};

fn todo(c: &mut Criterion) {
    let mut g = c.benchmark_group("todo");
    g.sample_size(20);
    for batch in [1usize, 16] {
        let dir = scratch();
        let env = RealEnv::new();
        let paths = Paths::new(dir.path().join("queue"));
        queue::create_layout(&env, &paths, &Config::default()).unwrap();
        let msgs: Vec<_> = (0..batch).map(message).collect();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| {
            b.iter(|| queue::inject(&env, &paths, &Config::default(), &msgs).unwrap())
        });
    }
    g.finish();
}

fn log(c: &mut Criterion) {
    let mut g = c.benchmark_group("log");
    g.sample_size(20);
    for batch in [1usize, 64] {
        let dir = scratch();
        let paths = Paths::new(dir.path().join("queue"));
        let rw = rewrite();
        let (mut q, _) = Queue::open(RealEnv::new(), paths, Config::default(), &rw).unwrap();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| {
            b.iter(|| q.submit((0..batch).map(message).collect(), &rw).unwrap())
        });
    }
    g.finish();
}

type Reply = mpsc::Sender<()>;

fn log_concurrent(c: &mut Criterion) {
    let mut g = c.benchmark_group("log-concurrent");
    g.sample_size(10);
    for producers in [1usize, 16, 64] {
        let dir = scratch();
        let paths = Paths::new(dir.path().join("queue"));
        let per = 20;
        g.throughput(Throughput::Elements((producers * per) as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(producers),
            &producers,
            |b, &n| {
                let rw = rewrite();
                let (tx, rx) = mpsc::channel::<(mta::queue::NewMessage, Reply)>();
                let p = paths.clone();
                let committer = thread::spawn(move || {
                    let (mut q, _) =
                        Queue::open(RealEnv::new(), p, Config::default(), &rw).unwrap();
                    while let Ok(first) = rx.recv() {
                        let mut batch = vec![first];
                        batch.extend(rx.try_iter());
                        let (msgs, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                        q.submit(msgs, &rw).unwrap();
                        for r in replies {
                            let _ = r.send(());
                        }
                    }
                });
                b.iter(|| {
                    thread::scope(|s| {
                        for t in 0..n {
                            let tx = tx.clone();
                            s.spawn(move || {
                                for i in 0..per {
                                    let (rtx, rrx) = mpsc::channel();
                                    tx.send((message(t * per + i), rtx)).unwrap();
                                    rrx.recv().unwrap();
                                }
                            });
                        }
                    });
                });
                drop(tx);
                committer.join().unwrap();
            },
        );
    }
    g.finish();
}

criterion_group!(benches, todo, log, log_concurrent);
criterion_main!(benches);
