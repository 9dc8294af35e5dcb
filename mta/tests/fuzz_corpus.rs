//! Replays the committed fuzz corpora (fuzz/corpus/TARGET/*) through the same entry points the
//! libFuzzer targets use, plus generated inputs, so CI checks them on every change.

use std::path::Path;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn smtp_session_corpus() {
    let c = corpus("smtp_session");
    assert!(c.len() >= 40);
    for input in &c {
        mta::fuzz::smtp_session(input);
        // Every truncation too: sessions cut off anywhere.
        for cut in (0..input.len()).step_by(input.len() / 16 + 1) {
            mta::fuzz::smtp_session(&input[..cut]);
        }
    }
}

#[test]
fn smtp_auth_corpus() {
    let c = corpus("smtp_auth");
    assert!(c.len() >= 8);
    for input in &c {
        mta::fuzz::smtp_auth(input);
        for cut in (0..input.len()).step_by(input.len() / 16 + 1) {
            mta::fuzz::smtp_auth(&input[..cut]);
        }
    }
}

#[test]
fn smtp_address_corpus() {
    let c = corpus("smtp_address");
    assert!(!c.is_empty());
    for input in &c {
        mta::fuzz::smtp_address(input);
    }
}

#[test]
fn queue_records_corpus() {
    use mta::queue::record::{encode_todo, Envelope, MsgId, Record};
    let env = Envelope {
        id: MsgId { secs: 1, rand: 2 },
        birth: 1,
        qp: 3,
        uid: 4,
        sender: "a@b".into(),
        recipients: vec!["c@d".into()],
    };
    let mut log = Vec::new();
    Record::Retire { id: env.id }.encode(&mut log, 0);
    Record::Checkpoint { low_water: 9 }.encode(&mut log, 0);
    let todo = encode_todo(&env, b"message");
    let mut inputs = corpus("queue_records");
    inputs.push(log.clone());
    inputs.push(todo.clone());
    for input in &inputs {
        mta::fuzz::queue_records(input);
        for i in (0..input.len()).step_by(input.len() / 64 + 1) {
            let mut flipped = input.clone();
            flipped[i] ^= 0x5a;
            mta::fuzz::queue_records(&flipped);
            mta::fuzz::queue_records(&input[..i]);
        }
    }
}

#[test]
fn smtp_reply_corpus() {
    for input in corpus("smtp_reply") {
        mta::fuzz::smtp_reply(&input);
        for cut in 0..input.len() {
            mta::fuzz::smtp_reply(&input[..cut]);
        }
    }
}

#[test]
fn dns_message_corpus() {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut inputs = corpus("dns_message");
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii("example.org.").unwrap(),
        RecordType::MX,
    ));
    inputs.push(q.to_vec().unwrap());
    for input in &inputs {
        mta::fuzz::dns_message(input);
        for i in 0..input.len() {
            let mut f = input.clone();
            f[i] ^= 0xa5;
            mta::fuzz::dns_message(&f);
            mta::fuzz::dns_message(&input[..i]);
        }
    }
}

#[test]
fn dotqmail_assign_corpus() {
    for input in corpus("dotqmail_assign") {
        mta::fuzz::dotqmail_assign(&input);
    }
}

/// Each input, every prefix of it at a few cuts, and each with one byte changed.
fn replay_with_variants(target: &str, min: usize, f: fn(&[u8])) {
    let c = corpus(target);
    assert!(c.len() >= min, "{target}: {} inputs", c.len());
    for input in &c {
        f(input);
        for i in (1..input.len()).step_by(input.len() / 16 + 1) {
            f(&input[..i]);
            let mut changed = input.clone();
            changed[i] ^= 0x21;
            f(&changed);
        }
    }
}

#[test]
fn log_recovery_corpus() {
    replay_with_variants("log_recovery", 40, mta::fuzz::log_recovery);
}

#[test]
fn todo_file_corpus() {
    use mta::queue::record::{encode_todo, Envelope, MsgId};
    let env = Envelope {
        id: MsgId { secs: 1, rand: 2 },
        birth: 1,
        qp: 3,
        uid: 4,
        sender: "a@b".into(),
        recipients: vec!["c@d".into(), "e@f".into()],
    };
    // A whole file as the queue writes it, in the decode-and-re-encode mode (byte 0 even).
    let mut whole = vec![0u8];
    whole.extend(encode_todo(&env, b"Subject: x\n\nbody\n"));
    mta::fuzz::todo_file(&whole);
    replay_with_variants("todo_file", 20, mta::fuzz::todo_file);
}

#[test]
fn control_files_corpus() {
    replay_with_variants("control_files", 8, mta::fuzz::control_files);
}

#[test]
fn smtpd_rules_corpus() {
    replay_with_variants("smtpd_rules", 8, mta::fuzz::smtpd_rules);
}

#[test]
fn inject_headers_corpus() {
    replay_with_variants("inject_headers", 8, mta::fuzz::inject_headers);
}

#[test]
fn pop3_session_corpus() {
    replay_with_variants("pop3_session", 16, mta::fuzz::pop3_session);
}

#[test]
fn pop3_wire_corpus() {
    replay_with_variants("pop3_wire", 10, mta::fuzz::pop3_wire);
}

#[test]
fn netstrings_corpus() {
    replay_with_variants("netstrings", 20, mta::fuzz::netstrings);
}

#[test]
fn users_cdb_corpus() {
    replay_with_variants("users_cdb", 5, mta::fuzz::users_cdb);
}
