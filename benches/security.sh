#!/usr/bin/env bash
# The hostile-input table of issue 9 against the real `mta` binary on loopback; regenerates
# reports/security.md (full sizes; `--quick` for the CI sizes). Needs root (tmpfs, uid
# switches of local delivery).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p mta -p mta-benches --bin mta --bin security
target="${CARGO_TARGET_DIR:-target}"
"$target/release/security" --mta "$target/release/mta" --out reports/security.md "$@"
