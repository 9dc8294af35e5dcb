#!/bin/sh
# Regenerate reports/conformance-mta.md: the RFC 5321 catalogue (fixtures/rfc5321) against
# `mta run` on loopback, profile mta, with delivery checks on fred's Maildir.
# Extra arguments go to `mta-conform catalogue` (e.g. --slow for the 5-minute timeouts).
# reports/conformance.md is the four-server matrix (`mta-conform matrix`).
set -eu
cd "$(dirname "$0")/../.."
cargo build -q -p mta -p conformance
bin="${CARGO_TARGET_DIR:-target}/debug"
root=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    rm -rf "$root"
}
trap cleanup EXIT
"$bin/mta" init --me heaven.af.mil --user fred --root "$root" >/dev/null 2>&1
cp fixtures/rfc5321/control/* "$root/control/"
cp fixtures/smtp-tls/passwd "$root/control/passwd"   # AUTH: fred, password secret
mkfifo "$root/out"
"$bin/mta" run --listen 127.0.0.1:0 --root "$root" >"$root/out" 2>/dev/null &
pid=$!
# Wait for the one line `mta: listening on ADDR`; keep the pipe open while the server runs.
exec 3<"$root/out"
read -r line <&3
addr=${line#mta: listening on }
"$bin/mta-conform" catalogue --server "$addr" --profile mta \
    --maildir "$root/home/fred/Maildir" --auth-user fred --auth-pass secret --report reports/conformance-mta.md \
    --generated-by conformance/scripts/report.sh "$@"
