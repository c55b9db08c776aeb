#!/usr/bin/env bash
# First figures of one xmppd node (issue 2), not a test:
#   - resident memory per idle authenticated connection, plaintext and TLS,
#     at N connections (default 10,000);
#   - delivered messages per second between P client pairs (default 1,000)
#     spread over 2 workers, plaintext and TLS.
# Uses the release build and xmpp-loadgen; prints a Markdown report on stdout.
# Usage: bench/single-node.sh [CONNECTIONS] [PAIRS] [CHAT_SECONDS]
# The side-by-side comparison with the peer servers is bench/compare (issue 3).
set -euo pipefail
cd "$(dirname "$0")/.."

conns=${1:-10000}
pairs=${2:-1000}
chat_seconds=${3:-10}
addr=127.0.0.70
port=5222
dir=$(mktemp -d /tmp/xmppd-bench.XXXXXX)
accounts=$(( conns > 2 * pairs ? conns : 2 * pairs ))

ninja build/xmppd build/xmppctl build/xmpp-loadgen >/dev/null

cat >"$dir/xmppd.yaml" <<EOF
node:
  name: bench
  data_dir: $dir/data
domain: localhost
workers:
  count: 2
listeners:
  - type: c2s
    address: $addr
    port: $port
    tls: optional
logging:
  level: warn
  file: $dir/xmppd.log
EOF

echo "bench: importing $accounts accounts (SCRAM, 4096 iterations)..." >&2
half=$(( accounts / 2 ))
mkdir -p "$dir/data"
( seq 1 "$half" | awk '{print "user"$1"@localhost pass"$1}' |
	build/xmppctl -c "$dir/xmppd.yaml" user import >/dev/null ) &
( seq $(( half + 1 )) "$accounts" | awk '{print "user"$1"@localhost pass"$1}' |
	build/xmppctl -c "$dir/xmppd.yaml" user import >/dev/null ) &
wait
have=$(build/xmppctl -c "$dir/xmppd.yaml" user list | wc -l)
[ "$have" -eq "$accounts" ] || { echo "bench: only $have of $accounts accounts imported" >&2; exit 1; }

build/xmppd -c "$dir/xmppd.yaml" 2>"$dir/xmppd.stderr" &
xmppd_pid=$!
trap 'kill -TERM $xmppd_pid 2>/dev/null; wait $xmppd_pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
	grep -q 'xmppd ready' "$dir/xmppd.log" 2>/dev/null && break
	build/xmppctl -c "$dir/xmppd.yaml" status >/dev/null 2>&1 && break
	sleep 0.1
done

worker_pids() {
	build/xmppctl -c "$dir/xmppd.yaml" status | awk '/^worker [0-9]+:/{print $4}'
}

# Resident and proportional set sizes of all xmppd processes, in KiB.
memory_kib() {
	local rss=0 pss=0 p
	for p in $xmppd_pid $(pgrep -P "$xmppd_pid"); do
		rss=$(( rss + $(awk '/^Rss:/{print $2}' "/proc/$p/smaps_rollup") ))
		pss=$(( pss + $(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup") ))
	done
	echo "$rss $pss"
}

loadgen() {
	build/xmpp-loadgen --server "$addr:$port" --domain localhost \
		--source-range 127.0.3.1-127.0.3.254 --threads 2 "$@" 2>/dev/null
}

idle_run() {
	local tls=$1 before after line
	read -r rss0 pss0 < <(memory_kib)
	# PLAIN is refused outside TLS, so plaintext streams log in with SCRAM
	local mech=PLAIN
	[ "$tls" = none ] && mech=SCRAM-SHA-256
	# started directly (not through the function) so that $! is the
	# generator itself; TERM because background jobs of a script ignore INT
	build/xmpp-loadgen --server "$addr:$port" --domain localhost \
		--source-range 127.0.3.1-127.0.3.254 --threads 2 --tls "$tls" --mech "$mech" \
		--accounts "$conns" --duration 0 --concurrency 200 idle >"$dir/idle.out" 2>/dev/null &
	local lg=$!
	for _ in $(seq 1200); do
		[ "$(build/xmppctl -c "$dir/xmppd.yaml" status | awk '/^sessions:/{print $2}')" -ge "$conns" ] && break
		kill -0 "$lg" 2>/dev/null || { echo "bench: the load generator stopped early" >&2; exit 1; }
		sleep 0.5
	done
	sleep 8 # past the 5 s after which idle streams hibernate (workers/c2s.c)
	read -r rss1 pss1 < <(memory_kib)
	local sessions
	sessions=$(build/xmppctl -c "$dir/xmppd.yaml" status | awk '/^sessions:/{print $2}')
	kill -TERM "$lg"
	wait "$lg" || true
	echo "| $tls | $sessions | $(( (rss1 - rss0) * 1024 / sessions )) | $(( (pss1 - pss0) * 1024 / sessions )) |"
	# wait until the server has let go of them
	for _ in $(seq 600); do
		[ "$(build/xmppctl -c "$dir/xmppd.yaml" status | awk '/^sessions:/{print $2}')" -eq 0 ] && break
		sleep 0.5
	done
}

chat_run() {
	local tls=$1 line
	local mech=PLAIN
	[ "$tls" = none ] && mech=SCRAM-SHA-256
	line=$(loadgen --tls "$tls" --mech "$mech" --pairs "$pairs" --window 4 \
		--duration "$chat_seconds" chat)
	echo "$line" >>"$dir/chat.out"
	local kv
	kv() { grep -oE "(^| )$1=[^ ]+" <<<"$line" | cut -d= -f2; }
	echo "| $tls | $pairs | $(kv rate) | $(kv p50_us) | $(kv p99_us) | $(kv lost) | $(kv cpu_pct) |"
}

echo "## xmppd single node: first figures"
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), xmppd with 2 workers; load generator on the same machine."
echo "Command: \`bench/single-node.sh $conns $pairs $chat_seconds\`"
echo
echo "### Memory per idle authenticated connection ($conns connections)"
echo
echo "| stream | sessions | RSS bytes/conn | PSS bytes/conn |"
echo "|---|---|---|---|"
idle_run none
idle_run starttls
echo
echo "### Messages between $pairs client pairs (closed loop, window 4, ${chat_seconds} s)"
echo
echo "| stream | pairs | delivered msg/s | p50 µs | p99 µs | lost | loadgen CPU % |"
echo "|---|---|---|---|---|---|---|"
chat_run none
chat_run starttls
