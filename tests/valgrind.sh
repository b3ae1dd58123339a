#!/bin/sh
# tests/valgrind.sh BUILD_DIR - `make valgrind`: the daemon under valgrind
# (memcheck, full leak check; any error or definite/possible leak fails),
# driven by real clients: the RPC benchmark's calls through libpinpool, one
# client killed with SIGKILL while it holds slices, `pinpool info` (itself
# under valgrind); then
# SIGTERM, and the daemon must exit 0.  Known third-party reports are
# suppressed by name in tests/valgrind.supp.
set -u
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/pinpool-valgrind-XXXXXX)
sock=$dir/pinpool.sock
GRPC_VERBOSITY=NONE valgrind -q --error-exitcode=1 --leak-check=full \
    --show-leak-kinds=definite,possible --errors-for-leak-kinds=definite,possible \
    --suppressions="$here/valgrind.supp" --log-file="$dir/valgrind.log" \
    "$build/pinpool" serve --socket "$sock" --mem-pool-size 64MiB --chunk-size 16MiB \
    >"$dir/out" 2>"$dir/log" &
pid=$!
fail() { echo "valgrind: $*"; cat "$dir/log" "$dir/valgrind.log" 2>/dev/null | tail -n 80; kill -9 $pid 2>/dev/null; exit 1; }
for i in $(seq 600); do grep -q '^pinpool ready' "$dir/out" 2>/dev/null && break; sleep 0.1; done
grep -q '^pinpool ready' "$dir/out" || fail "the daemon did not get ready"

"$build/bench/rpc_latency" "$sock" 300 >"$dir/bench.out" 2>&1 || fail "rpc_latency failed: $(cat "$dir/bench.out")"
"$build/bench/rpc_latency" "$sock" 100000 >/dev/null 2>&1 &
victim=$!
sleep 2
kill -9 $victim; wait $victim 2>/dev/null
# A client under valgrind too (abseil's static pool is suppressed by name).
GRPC_VERBOSITY=NONE valgrind -q --error-exitcode=1 --leak-check=full \
    --show-leak-kinds=definite,possible --errors-for-leak-kinds=definite,possible \
    --suppressions="$here/valgrind.supp" "$build/pinpool" info --socket "$sock" >"$dir/info.out" 2>&1 ||
    fail "pinpool info failed or is not valgrind-clean: $(cat "$dir/info.out")"
sleep 1
kill -TERM $pid
wait $pid; rc=$?
if [ "$rc" -ne 0 ]; then fail "the daemon exited with $rc under valgrind"; fi
[ -s "$dir/valgrind.log" ] && fail "valgrind reported something"
echo "valgrind: daemon clean (errors, definite and possible leaks), exit 0"
rm -rf "$dir"
