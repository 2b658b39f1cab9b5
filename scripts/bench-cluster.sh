#!/usr/bin/env bash
# Cluster benchmark, side by side in one run: one `strata bench` client process against (1) a single
# node and (2) a 3-node static cluster (R = 2) on loopback. GET throughput of 2 MiB blocks
# (batch 16, 4 connections per node) and LOOKUP of 1,024 keys (p50/p99 latency per LOOKUP; in the
# cluster the keys spread over the 3 owners and go out in parallel). Medians of REPEATS rounds,
# interleaved. On one machine the nodes and the client share its cores: the numbers show the
# routing overhead and the fan-out, not the scaling of separate hosts.
#
# With WHAT=quorum instead: the cost of the write quorum, in one run against the same 3-node
# cluster: PUT throughput and latency of 64 KiB blocks (batch 16, 4 connections) with quorum 1
# (acknowledged once the first owner holds the blocks; each PUT asks for it) against the default
# quorum 2 (acknowledged once both owners hold them), interleaved rounds.
#
# Usage: scripts/bench-cluster.sh [STRATA_BIN] [REPEATS=3] [SECONDS=3] [WHAT=get|quorum]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
strata="${1:-$repo/.build/release/strata}"
if [[ ! -x "$strata" ]]; then
  (cd "$repo" && swift build -c release --product strata >&2)
fi
repeats="${2:-3}"
duration="${3:-3}"
what="${4:-get}"
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_node() { # name listen [extra...]
  local name=$1 listen=$2
  shift 2
  "$strata" serve --data-dir "$work/$name" --listen "$listen" --ram 1GiB --nvme 4GiB --ram-unlocked --admin 127.0.0.1:0 "$@" \
    >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 1 1200); do
    grep -q " listening on " "$work/$name.out" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "node $name did not start" >&2
  cat "$work/$name.log" >&2
  exit 1
}

if [[ $what != quorum ]]; then
  single=127.0.0.1:$(free_port)
  start_node single "$single"
fi
p1=127.0.0.1:$(free_port); p2=127.0.0.1:$(free_port); p3=127.0.0.1:$(free_port)
peers="$p1,$p2,$p3"
start_node c1 "$p1" --peers "$peers" --replicas 2
start_node c2 "$p2" --peers "$peers" --replicas 2
start_node c3 "$p3" --peers "$peers" --replicas 2

results="$work/results.jsonl"
if [[ $what == quorum ]]; then
  for round in $(seq 1 "$repeats"); do
    for quorum in 1 2; do
      "$strata" bench --seeds "$peers" --write-quorum "$quorum" --op put --size 64KiB --batch 16 --connections 4 \
        --seconds "$duration" --json |
        tail -1 | sed "s/^{/{\"quorum\":$quorum,\"round\":$round,/" >>"$results"
    done
  done
  python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def med(quorum, field):
    return statistics.median(r[field] for r in rows if r["quorum"] == quorum)
print(f"{'PUT 64 KiB x16, 4 conns':28}{'quorum 1':>12}{'quorum 2':>12}{'ratio':>8}")
for field, label, scale in (("gbps", "GB/s", 1), ("ops_per_s", "blocks/s", 1), ("p50_us", "p50, us", 1),
                            ("p99_us", "p99, us", 1)):
    a, b = med(1, field), med(2, field)
    print(f"{label:28}{a * scale:>12.2f}{b * scale:>12.2f}{b / a:>8.2f}")
PY
  exit 0
fi
for round in $(seq 1 "$repeats"); do
  for target in single cluster; do
    if [[ $target == single ]]; then where=(--node "$single"); conns=4; else where=(--seeds "$peers"); conns=4; fi
    "$strata" bench "${where[@]}" --op get --size 2MiB --batch 16 --connections "$conns" --seconds "$duration" --json |
      tail -1 | sed "s/^{/{\"target\":\"$target\",\"round\":$round,/" >>"$results"
    "$strata" bench "${where[@]}" --op lookup --size 4KiB --batch 1024 --connections 1 --seconds "$duration" --json |
      tail -1 | sed "s/^{/{\"target\":\"$target\",\"round\":$round,/" >>"$results"
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def med(target, op, field):
    return statistics.median(r[field] for r in rows if r["target"] == target and r["op"] == op)
print(f"{'':28}{'single node':>14}{'3 nodes (R=2)':>16}{'ratio':>8}")
g1, g3 = med("single", "get", "gbps"), med("cluster", "get", "gbps")
print(f"{'GET 2 MiB x16, GB/s':28}{g1:>14.2f}{g3:>16.2f}{g3 / g1:>8.2f}")
for field, label in (("p50_us", "LOOKUP 1024 keys p50, us"), ("p99_us", "LOOKUP 1024 keys p99, us")):
    a, b = med("single", "lookup", field), med("cluster", "lookup", field)
    print(f"{label:28}{a:>14.0f}{b:>16.0f}{b / a:>8.2f}")
k1, k3 = med("single", "lookup", "ops_per_s"), med("cluster", "lookup", "ops_per_s")
print(f"{'LOOKUP keys/s':28}{k1:>14.0f}{k3:>16.0f}{k3 / k1:>8.2f}")
PY
