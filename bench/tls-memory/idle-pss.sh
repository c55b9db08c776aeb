#!/usr/bin/env bash
# PSS of an xmppd node per idle TLS session, for one or more xmppd binaries
# in turn (say a build before and after a change), against the same accounts.
# Each binary gets a fresh start with one worker; xmpp-loadgen logs in N
# accounts over STARTTLS (PLAIN inside TLS, so the generator spends nothing
# on PBKDF2) with initial presence and holds them; after 8 s (idle streams
# hibernate their parser after 5 s) the PSS of all xmppd processes, minus the
# same before the logins, is divided by the sessions online.
# Usage: bench/tls-memory/idle-pss.sh N [--tls starttls|none] XMPPD_BINARY...
# Prints one Markdown table row per binary. Not a test; memory figures do not
# depend on the machine's load, times do not appear.
set -euo pipefail
cd "$(dirname "$0")/../.."

n=${1:?usage: idle-pss.sh N [--tls MODE] XMPPD...}
shift
tls=starttls
if [ "${1:-}" = --tls ]; then
	tls=$2
	shift 2
fi
[ $# -ge 1 ] || { echo "idle-pss.sh: name at least one xmppd binary" >&2; exit 2; }
addr=127.0.0.73
port=5222
dir=$(mktemp -d /tmp/idle-pss.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

ninja build/xmppctl build/xmpp-loadgen >/dev/null
cat >"$dir/xmppd.yaml" <<YAML
node:
  name: idlepss
  data_dir: $dir/data
domain: localhost
workers:
  count: 1
listeners:
  - type: c2s
    address: $addr
    port: $port
    tls: optional
logging:
  level: warn
  file: $dir/xmppd.log
YAML
mkdir -p "$dir/data"
seq 1 "$n" | awk '{print "user"$1"@localhost pass"$1}' |
	build/xmppctl -c "$dir/xmppd.yaml" user import >/dev/null

status() { build/xmppctl -c "$dir/xmppd.yaml" status 2>/dev/null; }
sessions() { status | awk '/^sessions:/{print $2}'; }
pss_kib() {
	local sum=0 p
	for p in $pid $(pgrep -P "$pid"); do
		sum=$(( sum + $(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup") ))
	done
	echo "$sum"
}

mech=PLAIN
[ "$tls" = none ] && mech=SCRAM-SHA-256
for bin in "$@"; do
	"$bin" -c "$dir/xmppd.yaml" 2>"$dir/xmppd.stderr" &
	pid=$!
	for _ in $(seq 100); do status >/dev/null && break; sleep 0.1; done
	sleep 1
	pss0=$(pss_kib)
	build/xmpp-loadgen --server "$addr:$port" --domain localhost --tls "$tls" --mech "$mech" \
		--source-range 127.0.4.1-127.0.4.254 --accounts "$n" --concurrency 100 \
		--duration 0 idle >"$dir/idle.out" 2>/dev/null &
	lg=$!
	for _ in $(seq 1200); do
		[ "$(sessions)" -ge "$n" ] && break
		kill -0 "$lg" 2>/dev/null || { echo "idle-pss.sh: the load generator stopped" >&2; exit 1; }
		sleep 0.5
	done
	sleep 8
	pss1=$(pss_kib)
	online=$(sessions)
	kill -TERM "$lg"
	wait "$lg" || true
	kill -TERM "$pid"
	wait "$pid" || true
	pid=
	echo "| $bin | $tls | $online | $(( (pss1 - pss0) * 1024 / online )) |"
done
