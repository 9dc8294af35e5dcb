#!/usr/bin/env bash
# Long fuzzing runs: fuzz/run.sh TARGET [SECONDS]   (targets: smtp_session smtp_address queue_records)
# Needs cargo-fuzz (cargo install cargo-fuzz). On a stable toolchain RUSTC_BOOTSTRAP lets
# cargo-fuzz use the sanitizer flags it needs. New interesting inputs land in the corpus;
# commit the small ones so CI replays them (mta/tests/fuzz_corpus.rs).
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?target}
secs=${2:-600}
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=65536
