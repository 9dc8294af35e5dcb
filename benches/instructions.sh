#!/usr/bin/env bash
# The instruction-count gate: the hot paths of benches/benches/hotpaths.rs (SMTP session,
# queue records, recovery of a 2000-message log, Maildir names) run once each under Valgrind's
# Callgrind through gungraun; each count is compared with benches/baselines/instructions.txt
# and more than 2% over it fails. Counts do not depend on the machine's load.
#   bash benches/instructions.sh            # the gate (CI)
#   bash benches/instructions.sh --update   # rewrite the baseline (commit it for review)
# Installs valgrind (Debian package) and gungraun-runner (the version the benchmark links) if
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
want=0.20.0
if ! command -v valgrind >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
if ! gungraun-runner --version 2>/dev/null | grep -q " $want"; then
  cargo install -q gungraun-runner --version "$want" --locked
fi
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
cargo bench -q -p mta-benches --bench hotpaths -- --output-format=json > "$target/hotpaths.json"
cargo run -q --release -p mta-benches --bin instr-gate -- "$target/hotpaths.json" "$@"
