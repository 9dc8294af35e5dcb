#!/usr/bin/env bash
# End-to-end throughput, SMTP in → Maildir, every message durable, with Postfix's smtp-source
# as the client (a load generator neither server's authors wrote): mta and Postfix in the same
# run, alternating rounds, beside the disk's own ceiling for the same file work (W writers
# doing write + fsync + link + unlink + directory fsync of files of the same size). Regenerates
# reports/e2e.md. Needs root; installs Postfix (for smtp-source and the comparison) if
# missing. Postfix runs as a private instance on a loopback port (its own configuration,
# queue and Maildirs under a scratch directory), never the system's.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-4000}
CONNS=${CONNS:-16}
SIZE=${SIZE:-2048}
ROUNDS=${ROUNDS:-3}
target="${CARGO_TARGET_DIR:-target}"
cargo build -q --release -p mta -p mta-benches --bin mta --bin disk-ceiling
work=$(mktemp -d "${MTA_BENCH_DIR:-/var/tmp}/mta-e2e.XXXXXX")
# mta run gives root up for its queue user, which must reach the installation.
chmod 755 "$work"
cleanup() {
  if [ -f "$work/postfix/etc/main.cf" ]; then postfix -c "$work/postfix/etc" stop >/dev/null 2>&1 || true; fi
  if [ -f "$work/undo" ]; then sh "$work/undo"; fi
  rm -rf "$work"
}
trap cleanup EXIT
now_ms() { date +%s%3N; }
count() { find "$1" -maxdepth 1 -type f 2>/dev/null | wc -l; }
wait_for() { # dir n timeout_s
  local end=$(( $(date +%s) + $3 ))
  while [ "$(count "$1")" -lt "$2" ]; do
    [ "$(date +%s)" -lt "$end" ] || { echo "timeout waiting for $2 in $1" >&2; return 1; }
    sleep 0.05
  done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
# smtp-source: CONNS sessions, each sending messages until N went out (-d: same connection).
load() { smtp-source -d -s "$CONNS" -m "$N" -l "$SIZE" -f bench@bench.local -t "$2" "127.0.0.1:$1"; }

# One round against mta: "ms until accepted, ms until the last message is in Maildir/new".
run_mta() {
  local root="$work/mta" port t0 t1 t2 pid
  rm -rf "$root"
  "$target/release/mta" init --root "$root" --me bench.local --user fred >/dev/null 2>&1
  echo 2000 > "$root/control/concurrencyincoming"
  echo 0 > "$root/control/concurrencyperip"
  port=$(free_port)
  "$target/release/mta" run --root "$root" --listen "127.0.0.1:$port" > "$root/out" 2>"$root/err" &
  pid=$!
  wait_port "$port" || { echo "mta run did not start: $(tail -3 "$root/err")" >&2; return 1; }
  t0=$(now_ms); load "$port" fred@bench.local; t1=$(now_ms)
  wait_for "$root/home/fred/Maildir/new" "$N" 300
  t2=$(now_ms)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$(( t1 - t0 )) $(( t2 - t0 ))"
}

setup_postfix() {
  if ! command -v postfix >/dev/null || ! command -v smtp-source >/dev/null; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
  fi
  local d="$work/postfix"
  PF_PORT=$(free_port)
  mkdir -p "$d/etc" "$d/queue" "$d/data" "$d/mail"
  chown postfix "$d/data"; chown nobody:nogroup "$d/mail"
  cat > "$d/etc/main.cf" <<EOC
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
maillog_file = $d/maillog
myhostname = bench.local
mydestination =
virtual_mailbox_domains = bench.local
virtual_mailbox_base = $d/mail
virtual_mailbox_maps = inline:{ fred@bench.local=fred/Maildir/ }
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
smtpd_client_connection_count_limit = 0
default_process_limit = 100
EOC
  # The package's services from pickup to postlog, none chrooted (a private queue has no
  # chroot tree), with smtpd on our port only.
  {
    echo "127.0.0.1:$PF_PORT inet n - n - - smtpd"
    sed -n '/^pickup/,/^postlog/p' /usr/share/postfix/master.cf.dist |
      awk 'NF >= 8 && $1 !~ /^#/ { $5 = "n"; print }'
  } > "$d/etc/master.cf"
  # `postfix -c DIR` wants DIR named in the default main.cf: create that file only if the
  # package left none (removed again at the end), never edit an existing one.
  if [ ! -e /etc/postfix/main.cf ]; then
    echo "alternate_config_directories = $d/etc" > /etc/postfix/main.cf
    echo "rm -f /etc/postfix/main.cf" > "$work/undo"
  fi
}

run_postfix() {
  local d="$work/postfix" t0 t1 t2
  rm -rf "$d/mail/fred"
  postfix -c "$d/etc" start >/dev/null 2>&1 || { echo "postfix did not start: $(tail -3 "$d/maillog")" >&2; return 1; }
  wait_port "$PF_PORT" || { echo "postfix is not listening: $(tail -3 "$d/maillog")" >&2; return 1; }
  t0=$(now_ms); load "$PF_PORT" fred@bench.local; t1=$(now_ms)
  wait_for "$d/mail/fred/Maildir/new" "$N" 600
  t2=$(now_ms)
  postfix -c "$d/etc" stop >/dev/null 2>&1 || true
  while pgrep -f "$d/queue" >/dev/null 2>&1; do sleep 0.1; done
  echo "$(( t1 - t0 )) $(( t2 - t0 ))"
}

run_ceiling() {
  rm -rf "$work/ceiling"
  "$target/release/disk-ceiling" --dir "$work/ceiling" --writers "$CONNS" --files "$N" --size "$SIZE" |
    python3 -c 'import json,sys; print(int(json.load(sys.stdin)["secs"] * 1000))'
}

setup_postfix
pf_version=$(postconf -h mail_version)
mta_runs=(); pf_runs=(); ceil_runs=()
for _ in $(seq "$ROUNDS"); do
  r=$(run_mta) || exit 1; mta_runs+=("$r")
  r=$(run_postfix) || exit 1; pf_runs+=("$r")
  r=$(run_ceiling) || exit 1; ceil_runs+=("$r")
done
# "median (slowest–fastest)" of a column of runs (ms), as messages/s.
summary() {
  local col=$1; shift
  printf '%s\n' "$@" | awk -v c="$col" '{print $c}' | sort -n | awk -v n="$N" '
    { v[NR] = n * 1000 / $1 }
    END { printf "%.0f (%.0f–%.0f)", v[int((NR + 1) / 2)], v[NR], v[1] }'
}
median() {
  local col=$1; shift
  printf '%s\n' "$@" | awk -v c="$col" '{print $c}' | sort -n | awk -v n="$N" '{ v[NR] = n * 1000 / $1 } END { printf "%.0f", v[int((NR + 1) / 2)] }'
}
mta_d=$(median 2 "${mta_runs[@]}"); pf_d=$(median 2 "${pf_runs[@]}"); ceil=$(median 1 "${ceil_runs[@]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
pairs() { local x; for x in "$@"; do printf ' %s' "${x/ //}"; done; }
{
  echo "# End-to-end throughput: SMTP in → Maildir"
  echo
  echo "Generated by \`benches/e2e.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') ($machine, shared with other work); ext4 on a virtual disk."
  echo "$N messages of $SIZE bytes from Postfix's \`smtp-source\` ($CONNS sessions, \`-d\`) over loopback to one"
  echo "local recipient with a Maildir. Both servers make every message durable before \`250\` and fsync"
  echo "each Maildir delivery (Postfix $pf_version, Debian, a private instance: virtual(8) delivery). \"Delivered\" is"
  echo "from the first connection until the last message is in \`Maildir/new\`. The disk ceiling is"
  echo "\`disk-ceiling\`: $CONNS writers making $N files of $SIZE bytes durable as a Maildir delivery does"
  echo "(write, fsync, link into \`new/\`, unlink, fsync of \`new/\`), with no MTA at all. $ROUNDS rounds,"
  echo "mta, Postfix and the ceiling in turn, in the same script run; median (slowest–fastest)."
  echo
  echo "| | accepted msgs/s | delivered msgs/s |"
  echo "|---|---:|---:|"
  echo "| mta (release) | $(summary 1 "${mta_runs[@]}") | $(summary 2 "${mta_runs[@]}") |"
  echo "| Postfix $pf_version | $(summary 1 "${pf_runs[@]}") | $(summary 2 "${pf_runs[@]}") |"
  echo "| disk ceiling (files/s) | | $(summary 1 "${ceil_runs[@]}") |"
  echo
  echo "Issue 14's targets (medians): mta delivered / Postfix delivered = **$(ratio "$mta_d" "$pf_d")** (target ≥ 3);"
  echo "mta delivered / disk ceiling = **$(ratio "$mta_d" "$ceil")** (target ≥ 0.70)."
  echo
  echo "Raw, per round (ms until accepted / ms until delivered): mta:$(pairs "${mta_runs[@]}"); Postfix:$(pairs "${pf_runs[@]}"); ceiling (ms):$(pairs "${ceil_runs[@]}")."
} > reports/e2e.md
cat reports/e2e.md
