#!/usr/bin/env bash
# Run the injection benchmark and regenerate reports/inject.md from criterion's estimates.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p mta-benches --bench inject -- "$@"
machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
cargo run -q --release -p mta-benches --bin bench-report -- target/criterion reports/inject.md "$machine" "$(date -u '+%Y-%m-%d %H:%M UTC')"
