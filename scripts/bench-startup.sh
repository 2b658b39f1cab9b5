#!/usr/bin/env bash
# How long a node takes to start with a large RAM arena, for one or more builds of strata side by
# side: seconds from launching `strata serve` to its "listening" line (a fresh data folder, so the
# NVMe tier holds nothing; the RAM arena's pre-fault is nearly all of it), with ram.lock on and off,
# rounds interleaved across the builds. Prints one line per start and the medians per build and mode.
#
# Usage: scripts/bench-startup.sh RAM ROUNDS STRATA [STRATA...]
#   e.g. scripts/bench-startup.sh 8GiB 5 /tmp/base/.build/release/strata .build/release/strata
# Every node listens on 127.0.0.1 only and is stopped with SIGTERM after it starts.
set -euo pipefail
[[ $# -ge 3 ]] || { sed -n 2,8p "$0" >&2; exit 64; }
ram=$1
rounds=$2
shift 2
binaries=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

start_once() { # BINARY LOCK(locked|unlocked): prints the seconds to "listening"
  local binary=$1 lock=$2 flags=() pid start
  [[ $lock == unlocked ]] && flags=(--ram-unlocked)
  rm -rf "$work/data" && mkdir -p "$work/data"
  : >"$work/out.log"
  start=$(date +%s.%N)
  "$binary" serve --data-dir "$work/data" --listen 127.0.0.1:0 --admin 127.0.0.1:0 --ram "$ram" --nvme 1GiB \
    "${flags[@]}" >"$work/out.log" 2>"$work/err.log" &
  pid=$!
  until grep -q "listening" "$work/out.log"; do
    kill -0 "$pid" 2>/dev/null || { echo "node exited: $(tail -3 "$work/err.log")" >&2; return 1; }
    sleep 0.02
  done
  echo "$(date +%s.%N) - $start" | bc
  kill -TERM "$pid"
  wait "$pid" || true
}

for round in $(seq 1 "$rounds"); do
  for index in "${!binaries[@]}"; do
    for lock in unlocked locked; do
      echo "round $round build $index ($lock): $(start_once "${binaries[$index]}" "$lock") s" | tee -a "$work/lines"
    done
  done
done
echo "medians (RAM $ram, $rounds rounds):"
for index in "${!binaries[@]}"; do
  for lock in unlocked locked; do
    median=$(grep "build $index ($lock)" "$work/lines" | awk '{print $(NF-1)}' | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
    echo "  build $index ${binaries[$index]} ($lock): $median s"
  done
done
