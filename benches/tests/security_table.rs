//! The CI-sized hostile-input table (issue 9): every row of `reports/security.md` in quick
//! sizes, against the `mta` binary of this build. Fails on any row whose server died, whose
//! acknowledged mail was lost (or refused mail appeared), whose reply class is not the
//! expected one, or whose own check failed. Needs root (tmpfs, uid switches), as CI runs.

use std::path::PathBuf;

use mta_benches::security::{self, Config, Sizes};

/// `target/<profile>/mta`, next to this test's `deps/` directory (built by `cargo test
/// --workspace`, or `cargo build -p mta`).
fn mta() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let mta = dir.join("mta");
    assert!(
        mta.exists(),
        "{} missing: build it first (cargo build -p mta)",
        mta.display()
    );
    mta
}

#[test]
fn quick_table_has_no_failed_row() {
    let scratch = tempfile::tempdir().unwrap();
    let cfg = Config {
        mta: mta(),
        sizes: Sizes::quick(),
        scratch: scratch.path().to_path_buf(),
    };
    let rows = security::run(&cfg).expect("the table runs");
    assert!(rows.len() >= 100, "{} rows", rows.len());
    let bad: Vec<String> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.verdict() != "ok")
        .map(|(i, r)| {
            format!(
                "row {}: {} — {}: {:?}",
                i + 1,
                r.input,
                r.verdict(),
                r.reply
            )
        })
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
