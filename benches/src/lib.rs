//! Shared helpers for the benchmarks: a real-disk scratch directory and message fixtures.

pub mod security;

use std::path::PathBuf;

use mta::control::Rewrite;
use mta::queue::NewMessage;

/// Scratch space on a real disk: `$MTA_BENCH_DIR`, else the system temp dir.
pub fn scratch() -> tempfile::TempDir {
    let base = std::env::var_os("MTA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::tempdir_in(base).expect("scratch dir")
}

/// A typical small message (about 2 KiB).
pub fn message(i: usize) -> NewMessage {
    let mut data = format!(
        "From: sender@example.net\nTo: fred@example.org\nSubject: benchmark {i}\n\
         Message-ID: <{i}@example.net>\n\n"
    )
    .into_bytes();
    while data.len() < 2048 {
        data.extend_from_slice(b"The quick brown fox jumps over the lazy dog. 0123456789\n");
    }
    NewMessage {
        sender: "sender@example.net".into(),
        recipients: vec!["fred@example.org".into()],
        data,
        qp: 1,
        uid: 1,
    }
}

pub fn rewrite() -> Rewrite {
    Rewrite {
        envnoathost: "example.org".into(),
        locals: vec!["example.org".into()],
        ..Rewrite::default()
    }
}
