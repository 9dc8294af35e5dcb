#!/usr/bin/env bash
# Start time, memory and SMTP accept rate of `mta run` with 1k .. 1M deferred messages queued;
# regenerates reports/queue-depth.md and reports/queue-depth.svg (needs root for the queue
# user; `MTA_BENCH_DIR` picks the disk). Extra arguments go to the queue-depth binary
# (e.g. `--depths 1000,10000`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p mta -p mta-benches --bin mta --bin smtp-load --bin queue-depth
target="${CARGO_TARGET_DIR:-target}"
"$target/release/queue-depth" --mta "$target/release/mta" --load "$target/release/smtp-load" "$@"
