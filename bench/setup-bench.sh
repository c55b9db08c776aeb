#!/usr/bin/env bash
# Installs the Debian packages that only the benchmarks need (bench/compare):
# the peer servers (ejabberd, Prosody, jabberd2), tsung as a second load
# generator, gnuplot for the plots and perf for profiling. Idempotent.
#
# bench/compare runs every server as its own foreground process in a scratch
# directory, so the distribution services must stay down: where a package's
# postinst started its service during THIS run (no policy-rc.d forbidding it),
# the service is stopped again and its boot links are disabled. Services that
# were already running before this script are left alone.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "setup-bench: run as root (apt-get install)" >&2
	exit 1
fi

packages=(ejabberd erlang-p1-sqlite3 prosody jabberd2 tsung gnuplot-nox sqlite3 linux-perf)
# The distribution service of each peer package and the system user it runs
# as. A service is recognised by its user, not by program names: other people
# on this machine run Prosody or Erlang as themselves, and those are not ours
# to stop.
declare -A service_of=([ejabberd]=ejabberd [prosody]=prosody [jabberd2]=jabberd2)
declare -A user_of=([ejabberd]=ejabberd [prosody]=prosody [jabberd2]=jabber)

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# pids of the processes of user $1, one a line (empty when none or no such user)
pids_of_user() {
	id -u "$1" >/dev/null 2>&1 || return 0
	pgrep -u "$1" | sort -u || true
}

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq

missing=()
for p in "${packages[@]}"; do
	installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "setup-bench: every package is installed already"
	exit 0
fi

# linux-perf is "if available": some kernels' flavours have none.
if [[ " ${missing[*]} " == *" linux-perf "* ]] && ! apt-cache show linux-perf >/dev/null 2>&1; then
	echo "setup-bench: linux-perf is not available here; profiling needs another perf" >&2
	missing=("${missing[@]/linux-perf/}")
fi

declare -A before
for p in "${!service_of[@]}"; do
	before[$p]=$(pids_of_user "${user_of[$p]}")
done

echo "setup-bench: installing ${missing[*]}"
# shellcheck disable=SC2068
apt-get install -y -qq --no-install-recommends ${missing[@]} >/dev/null

for p in "${!service_of[@]}"; do
	[[ " ${missing[*]} " == *" $p "* ]] || continue
	svc=${service_of[$p]}
	now=$(pids_of_user "${user_of[$p]}")
	started=$(comm -13 <(echo "${before[$p]}") <(echo "$now") | grep . || true)
	# Boot links: never start at boot (no-op where there is no init system).
	if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
		systemctl disable --now "$svc" >/dev/null 2>&1 || true
	elif command -v update-rc.d >/dev/null; then
		update-rc.d "$svc" disable >/dev/null 2>&1 || true
	fi
	if [ -n "$started" ]; then
		echo "setup-bench: the $p package started its service; stopping it"
		if [ -x "/etc/init.d/$svc" ]; then
			"/etc/init.d/$svc" stop >/dev/null 2>&1 || true
		fi
		sleep 1
		for pid in $started; do
			kill -TERM "$pid" 2>/dev/null || true
		done
	fi
done

for p in "${missing[@]}"; do
	[ -n "$p" ] || continue
	installed "$p" || { echo "setup-bench: $p did not install" >&2; exit 1; }
done
echo "setup-bench: done"
