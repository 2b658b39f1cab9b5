#!/usr/bin/env bash
# Same-host path vs single-thread memcpy vs TCP, one node (fresh per size), interleaved rounds, batch 16.
# usage: scripts/bench-samehost.sh [STRATA] [ROUNDS] [SECONDS]  (JSON lines on stdout; docs/performance.md)
set -uo pipefail
strata=${1:-.build/release/strata}; rounds=${2:-3}; secs=${3:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/samehost.XXXX)
gcc -O2 -o "$work/memcpy_bench" "$repo/scripts/bench/memcpy_bench.c"
port=$((10000 + RANDOM % 20000)) # below the ephemeral range (32768-)
pid=
stop() { [[ -n "$pid" ]] && { kill -TERM $pid 2>/dev/null; for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.2; done; kill -KILL $pid 2>/dev/null; }; pid=; }
trap 'stop; rm -rf $work' EXIT
start() {
  stop; rm -rf "$work/d"
  "$strata" serve --data-dir "$work/d" --listen "127.0.0.1:$port" --admin 127.0.0.1:0 --ram 3GiB --nvme 8GiB --ram-unlocked > "$work/node.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do grep -q "listening on" "$work/node.log" && break; sleep 0.1; done
}
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$pid/stat"; }
for round in $(seq "$rounds"); do
  for size in 262144 2097152 33554432; do
    for op in get put; do
      for transport in tcp shm; do
        start
        b=$(cpu)
        line=$("$strata" bench --node "127.0.0.1:$port" --transport $transport --op $op --size $size --batch 16 --connections 1 --seconds "$secs" --json 2>"$work/err" | tail -1)
        a=$(cpu)
        [[ -z "$line" ]] && { echo "FAILED $transport $op $size: $(head -c 300 $work/err)" >&2; continue; }
        echo "{\"round\":$round,\"t\":\"$transport\",\"op\":\"$op\",\"size\":$size,\"cpu\":$(awk -v a=$a -v b=$b 'BEGIN{print a-b}'),\"r\":$line}"
      done
    done
    line=$("$work/memcpy_bench" "$size" "$secs" 256 | tail -1)
    echo "{\"round\":$round,\"t\":\"memcpy\",\"op\":\"copy\",\"size\":$size,\"cpu\":0,\"r\":$line}"
  done
done
