//! Instruction counts of the hot paths, under Valgrind (gungraun): the SMTP session parsing a
//! whole transaction, queue records encoded and decoded, recovery of a log of 2000 messages,
//! Maildir names. Counts do not depend on the machine's load, so `benches/instructions.sh`
//! compares them with `benches/baselines/instructions.txt` in CI.

use std::hint::black_box;

use gungraun::prelude::*;
use mta::env::real::RealEnv;
use mta::queue::record::Record;
use mta::queue::{Channel, Config, Envelope, MsgId, Paths, Queue, Recipient};
use mta::smtp::server::{Session, Step};
use mta_benches::{message, rewrite};

/// One client's session: EHLO, a sender, three recipients, 2 KiB of DATA, QUIT.
fn session_bytes() -> Vec<u8> {
    let mut s = b"EHLO client.example\r\nMAIL FROM:<joe@client.example>\r\n".to_vec();
    for r in ["fred", "bill", "mary"] {
        s.extend_from_slice(format!("RCPT TO:<{r}@fuzz.example>\r\n").as_bytes());
    }
    s.extend_from_slice(b"DATA\r\nSubject: hot path\r\n\r\n");
    while s.len() < 2300 {
        s.extend_from_slice(b"The quick brown fox jumps over the lazy dog. 0123456789\r\n");
    }
    s.extend_from_slice(b".\r\nQUIT\r\n");
    s
}

#[library_benchmark]
#[bench::transaction(session_bytes())]
fn smtp_session(input: Vec<u8>) -> usize {
    let mut s = Session::new(mta::fuzz::policy(0), 0);
    let mut out = s.take_output().len();
    // Arrives as a network would hand it over: in 512-byte reads.
    for chunk in input.chunks(512) {
        let mut step = s.input(black_box(chunk));
        while let Step::Message(_) = step {
            s.committed(Ok("1".into()));
            step = s.input(&[]);
        }
        out += s.take_output().len();
    }
    black_box(out)
}

fn records() -> Vec<Record> {
    (0..100u64)
        .map(|i| {
            let m = message(i as usize);
            let env = Envelope {
                id: MsgId {
                    secs: 1_700_000_000 + i,
                    rand: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                },
                birth: 1_700_000_000 + i,
                qp: 1,
                uid: 1,
                sender: m.sender,
                recipients: m.recipients.clone(),
            };
            let rcpts = m
                .recipients
                .iter()
                .map(|r| Recipient {
                    original: r.clone(),
                    addr: r.clone(),
                    channel: Channel::Local,
                })
                .collect();
            Record::Msg {
                env,
                rcpts,
                data: m.data,
            }
        })
        .collect()
}

#[library_benchmark]
#[bench::hundred_messages(records())]
fn record_encode_decode(recs: Vec<Record>) -> usize {
    let mut buf = Vec::new();
    for r in &recs {
        r.encode(&mut buf, 0x5eed);
    }
    let mut at = 0;
    let mut n = 0;
    while let mta::queue::record::Frame::Whole(body, len) =
        mta::queue::record::frame(&buf[at..], 0x5eed)
    {
        n += usize::from(Record::decode(black_box(body), 0x5eed).is_ok());
        at += len;
    }
    black_box(n)
}

/// A queue of 2000 messages on disk (setup, not counted).
fn queue_on_disk() -> (tempfile::TempDir, Paths) {
    let dir = mta_benches::scratch();
    let paths = Paths::new(dir.path().join("queue"));
    let (mut q, _) =
        Queue::open(RealEnv::new(), paths.clone(), Config::default(), &rewrite()).expect("queue");
    for batch in 0..20 {
        let msgs = (0..100).map(|i| message(batch * 100 + i)).collect();
        q.submit(msgs, &rewrite()).expect("submit");
    }
    drop(q);
    (dir, paths)
}

#[library_benchmark]
#[bench::two_thousand_messages(queue_on_disk())]
fn recovery((dir, paths): (tempfile::TempDir, Paths)) -> usize {
    let (q, rec) =
        Queue::open(RealEnv::new(), paths, Config::default(), &rewrite()).expect("recovery");
    drop(q);
    drop(dir);
    black_box(rec.messages)
}

#[library_benchmark]
fn maildir_names() -> usize {
    (0..1000u64)
        .map(|i| {
            let id = MsgId {
                secs: 1_700_000_000 + i,
                rand: i << 17,
            };
            mta::local::maildir::name(black_box(id), (i % 4) as u32, "mx.heaven.af.mil").len()
        })
        .sum()
}

library_benchmark_group!(
    name = hot;
    benchmarks = smtp_session, record_encode_decode, recovery, maildir_names
);

main!(library_benchmark_groups = hot);
