#!/usr/bin/env bash
# The servers of `mta-conform matrix`: mta, Postfix, OpenSMTPD and Exim, each from Debian's
# packages, each configured here on its own loopback port to serve heaven.af.mil and deliver
# fred@ and postmaster@ to a Maildir under WORK (fixtures/rfc5321/README.md says what the
# catalogue assumes). Run by `mta-conform matrix`, which plays the catalogue against them:
#
#   matrix.sh start WORK MTA_BINARY   prints one line per server:
#       server NAME HOST:PORT PROFILE MAILDIR [AUTH_USER AUTH_PASS]
#       unavailable NAME REASON...
#   matrix.sh stop WORK               stops them and undoes what start changed outside WORK
#
# Postfix is installed with apt-get (no configuration of the system's own instance); OpenSMTPD
# and Exim conflict with it as packages, so they are fetched with `apt-get download` and
# unpacked with `dpkg -x` into WORK/root (their libraries come from apt-get). The system
# users their packages would create (opensmtpd, opensmtpq, Debian-exim) are created if
# missing and removed by `stop`. Needs root.
set -euo pipefail

cmd=${1:?start|stop}
work=${2:?work directory}
here="$(cd "$(dirname "$0")/../.." && pwd)"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
undo="$work/undo.sh"

note() { echo "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}
# Remember how to undo a change outside WORK (run in reverse order by `stop`).
remember() { echo "$*" >>"$undo"; }
ensure_user() {
  if ! id "$1" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir "$2" --shell /usr/sbin/nologin "$1"
    remember "userdel $1"
  fi
}

cert() {
  [ -f "$work/key.pem" ] && return
  # RSA: OpenSMTPD 6.8 (built against OpenSSL 3) fails handshakes with an EC key here.
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
    -subj /CN=heaven.af.mil -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  chmod 600 "$work/key.pem"
}

start_mta() {
  local mta=$1 root="$work/mta"
  rm -rf "$root"
  "$mta" init --me heaven.af.mil --user fred --root "$root" >/dev/null
  cp "$here"/fixtures/rfc5321/control/* "$root/control/"
  cp "$here/fixtures/tls/servercert.pem" "$root/control/servercert.pem"
  cp "$here/fixtures/smtp-tls/passwd" "$root/control/passwd"
  local port; port=$(free_port)
  "$mta" run --listen "127.0.0.1:$port" --root "$root" >"$work/mta.out" 2>"$work/mta.err" &
  echo $! >"$work/mta.pid"
  wait_port "$port" || { echo "unavailable mta did not start: $(tail -1 "$work/mta.err")"; return; }
  echo "server mta 127.0.0.1:$port mta $root/home/fred/Maildir fred secret"
  echo "about mta mta from this tree ($(git -C "$here" describe --always --dirty 2>/dev/null || echo unknown)), control files of fixtures/rfc5321/control, TLS and AUTH (fred)"
}

postfix_master_cf() {
  cat <<EOF
127.0.0.1:$1 inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

start_postfix() {
  if ! command -v postfix >/dev/null; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >&2 ||
      { echo "unavailable postfix apt-get install postfix failed"; return; }
  fi
  local d="$work/postfix" port; port=$(free_port)
  rm -rf "$d"; mkdir -p "$d/etc" "$d/queue" "$d/data" "$d/mail"
  chown postfix "$d/data"; chown nobody:nogroup "$d/mail"
  cat >"$d/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
maillog_file = $d/maillog
myhostname = heaven.af.mil
mydestination =
virtual_mailbox_domains = heaven.af.mil
virtual_mailbox_base = $d/mail
virtual_mailbox_maps = inline:{ fred@heaven.af.mil=fred/Maildir/, postmaster@heaven.af.mil=postmaster/Maildir/ }
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.2/32
# Refuse relaying outright (the default defers it with 454 as a safety net).
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
message_size_limit = 1048576
smtpd_tls_security_level = may
smtpd_tls_chain_files = $work/key.pem, $work/cert.pem
EOF
  postfix_master_cf "$port" >"$d/etc/master.cf"
  # `postfix -c DIR` wants DIR named in the default main.cf; create that file only if the
  # package left none (and remove it again), never edit an existing one.
  if [ ! -e /etc/postfix/main.cf ]; then
    echo "alternate_config_directories = $d/etc" >/etc/postfix/main.cf
    remember "rm -f /etc/postfix/main.cf"
  elif ! postconf -h alternate_config_directories | grep -q "$d/etc"; then
    echo "unavailable postfix /etc/postfix/main.cf exists and does not list $d/etc in alternate_config_directories (not edited)"
    return
  fi
  postfix -c "$d/etc" start >&2 2>&1 || { echo "unavailable postfix postfix start failed: $(tail -1 "$d/maillog" 2>/dev/null)"; return; }
  remember "postfix -c $d/etc stop"
  wait_port "$port" || { echo "unavailable postfix not listening"; return; }
  echo "server postfix 127.0.0.1:$port generic $d/mail/fred/Maildir"
  echo "about postfix Postfix $(postconf -h mail_version) (Debian $(dpkg-query -W -f '${Version}' postfix)), virtual Maildir delivery, STARTTLS, no SASL"
}

# OpenSMTPD and Exim conflict with Postfix as packages: unpack them privately.
unpack() {
  local root="$work/root"
  mkdir -p "$work/debs" "$root"
  # Their libraries, only those missing (never upgrading what the machine has).
  local missing=()
  for p in libevent-2.1-7 libdb5.3 libssl3 libgnutls-dane0 libgnutls30 libidn12 libnsl2 libpcre2-8-0; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-upgrade "${missing[@]}" >&2
  fi
  (cd "$work/debs" && apt-get download opensmtpd exim4-daemon-light exim4-base exim4-config >&2)
  for f in "$work"/debs/*.deb; do dpkg -x "$f" "$root"; done
}

start_opensmtpd() {
  local d="$work/opensmtpd" port; port=$(free_port)
  [ -x "$work/root/usr/sbin/smtpd" ] || { echo "unavailable opensmtpd could not unpack the package"; return; }
  ensure_user opensmtpd /var/lib/opensmtpd/empty
  ensure_user opensmtpq /var/lib/opensmtpd/empty
  # Paths compiled into smtpd: its chroot, its spool, its delivery helpers.
  if [ ! -e /var/lib/opensmtpd ]; then mkdir -p /var/lib/opensmtpd/empty; remember "rm -rf /var/lib/opensmtpd"; fi
  if [ ! -e /var/spool/smtpd ]; then remember "rm -rf /var/spool/smtpd"; fi
  if [ ! -e /usr/libexec/opensmtpd ]; then
    ln -s "$work/root/usr/libexec/opensmtpd" /usr/libexec/opensmtpd
    remember "rm -f /usr/libexec/opensmtpd"
  fi
  rm -rf "$d"; mkdir -p "$d/mail"; chown nobody "$d/mail"
  cat >"$d/smtpd.conf" <<EOF
pki heaven.af.mil cert "$work/cert.pem"
pki heaven.af.mil key "$work/key.pem"
smtp max-message-size 1M
table vusers { "fred@heaven.af.mil" = "nobody", "postmaster@heaven.af.mil" = "nobody" }
listen on 127.0.0.1 port $port tls pki heaven.af.mil hostname heaven.af.mil
action "md" maildir "$d/mail/%{dest.user}/Maildir" virtual <vusers>
match from any for domain "heaven.af.mil" action "md"
EOF
  setsid "$work/root/usr/sbin/smtpd" -d -f "$d/smtpd.conf" >"$d/log" 2>&1 &
  echo $! >"$work/opensmtpd.pid"
  wait_port "$port" || { echo "unavailable opensmtpd did not start: $(tail -1 "$d/log")"; return; }
  echo "server opensmtpd 127.0.0.1:$port generic $d/mail/fred/Maildir"
  echo "about opensmtpd OpenSMTPD (Debian $(dpkg-deb -f "$work"/debs/opensmtpd_*.deb Version), unpacked), virtual Maildir delivery, STARTTLS, no AUTH"
}

start_exim() {
  local d="$work/exim" port; port=$(free_port)
  local exim="$work/root/usr/sbin/exim4"
  [ -x "$exim" ] || { echo "unavailable exim could not unpack the package"; return; }
  ensure_user Debian-exim /nonexistent
  rm -rf "$d"; mkdir -p "$d/spool" "$d/log" "$d/mail"
  chown -R Debian-exim "$d/spool" "$d/log" "$d/mail"
  cp "$work/key.pem" "$d/key.pem"; chown Debian-exim "$d/key.pem"
  # Exim gives up root with -C: it runs, and delivers, as Debian-exim.
  cat >"$d/exim.conf" <<EOF
exim_path = $exim
keep_environment =
primary_hostname = heaven.af.mil
domainlist local_domains = heaven.af.mil
spool_directory = $d/spool
log_file_path = $d/log/%slog
daemon_smtp_ports = $port
local_interfaces = 127.0.0.1
message_size_limit = 1M
tls_certificate = $work/cert.pem
tls_privatekey = $d/key.pem
tls_advertise_hosts = *
acl_smtp_rcpt = acl_check_rcpt
begin acl
acl_check_rcpt:
  accept domains = +local_domains
         local_parts = fred : postmaster
  deny   message = relay not permitted
begin routers
local_user:
  driver = accept
  domains = +local_domains
  local_parts = fred : postmaster
  transport = maildir
begin transports
maildir:
  driver = appendfile
  directory = $d/mail/\${local_part_data}/Maildir
  maildir_format
  create_directory
  delivery_date_add
  envelope_to_add
  return_path_add
  user = Debian-exim
EOF
  # Its own process group: `stop` ends the daemon and the queue runners it forked.
  setsid "$exim" -C "$d/exim.conf" -bdf -q10s >"$d/out" 2>&1 &
  echo $! >"$work/exim.pid"
  wait_port "$port" || { echo "unavailable exim did not start: $(tail -1 "$d/out")"; return; }
  echo "server exim 127.0.0.1:$port generic $d/mail/fred/Maildir"
  echo "about exim Exim (Debian exim4-daemon-light $(dpkg-deb -f "$work"/debs/exim4-daemon-light_*.deb Version), unpacked), Maildir delivery, STARTTLS, no AUTH"
}

stop() {
  if [ -f "$work/mta.pid" ]; then kill "$(cat "$work/mta.pid")" 2>/dev/null || true; rm -f "$work/mta.pid"; fi
  # Started with setsid: the pid is the process group of the daemon and its children.
  for p in opensmtpd exim; do
    if [ -f "$work/$p.pid" ]; then
      kill -- "-$(cat "$work/$p.pid")" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 -- "-$(cat "$work/$p.pid")" 2>/dev/null || break; sleep 0.1; done
      rm -f "$work/$p.pid"
    fi
  done
  if [ -f "$undo" ]; then
    tac "$undo" | while read -r line; do eval "$line" >&2 2>&1 || true; done
    rm -f "$undo"
  fi
}

case "$cmd" in
  start)
    mta=${3:?mta binary}
    stop
    cert
    start_mta "$mta"
    start_postfix
    unpack || note "unpacking OpenSMTPD and Exim failed"
    start_opensmtpd
    start_exim
    ;;
  stop) stop ;;
  *) echo "usage: matrix.sh start|stop WORK [MTA]" >&2; exit 2 ;;
esac
