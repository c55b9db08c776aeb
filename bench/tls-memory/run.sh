#!/usr/bin/env bash
# Build bench/tls-memory/tls_sessions against workers/tls.c and Debian's
# static libwolfssl.a (whose symbol table names wolfSSL's internal
# functions), run it, and with --massif also take a massif snapshot of the
# idle sessions with the call site of every live block.
# Usage: bench/tls-memory/run.sh [--massif] [tls_sessions options...]
# Writes into ${OUT:-/tmp/tls-memory}; docs/benchmarks/tls-memory.md reads the figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/tls-memory}
mkdir -p "$out"
massif=no
if [ "${1:-}" = --massif ]; then
	massif=yes
	shift
fi
gcc -std=gnu11 -O2 -g -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wvla -I. -o "$out/tls_sessions" \
	bench/tls-memory/tls_sessions.c workers/tls.c \
	/usr/lib/x86_64-linux-gnu/libwolfssl.a -lm -lpthread
if [ "$massif" = no ]; then
	exec "$out/tls_sessions" "$@"
fi
valgrind --tool=massif --massif-out-file="$out/massif.out" --threshold=0.5 \
	--depth=8 "$out/tls_sessions" -s "$out/idle.massif" "$@"
ms_print --threshold=0.5 "$out/idle.massif" >"$out/idle.txt"
echo "massif snapshot of the idle sessions: $out/idle.txt" >&2
