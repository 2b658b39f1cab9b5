#!/usr/bin/env bash
# Two builds of strata side by side in one run: batch PUT or GET over TCP (2 connections) and the
# same-host path (1 connection), a fresh node per measurement (3 GiB RAM, 8 GiB NVMe, as in
# scripts/bench-dataplane.sh), rounds interleaved (A tcp, A shm, B tcp, B shm, then again), so a
# burst of load on this noisy VM hits one round of both, not every round of one. Prints one line
# per measurement and the medians with the ratio B/A. The node's CPU seconds per GB come from
# /proc/PID/stat around the timed run.
#
# Usage: scripts/bench-compare.sh STRATA_A STRATA_B [OP=put] [SIZE=2097152] [ROUNDS=3] [SECONDS=5]
#   e.g. build the older commit in a worktree (git worktree add /tmp/base REV; cd /tmp/base;
#   swift build -c release --product strata) and compare it with .build/release/strata.
#   RAM_ONLY=1 in the environment: the nodes keep a RAM tier only (nvme.admission: never), so a PUT
#   measures the data path without the disk behind it.
# Everything listens on 127.0.0.1 and the node's Unix socket only; every node is killed after its run.
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n 2,12p "$0" >&2; exit 64; }
binaries=("$1" "$2")
op=${3:-put}
size=${4:-2097152}
rounds=${5:-3}
seconds=${6:-5}
for bin in "${binaries[@]}"; do [[ -x "$bin" ]] || { echo "no such binary: $bin" >&2; exit 2; }; done
[[ "$op" == put || "$op" == get ]] || { echo "OP is put or get" >&2; exit 64; }

results=$(mktemp /tmp/strata-compare.XXXXXX)
work=
pid=
cleanup() {
  if [[ -n "$pid" ]]; then kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  [[ -n "$work" ]] && rm -rf "$work"
  rm -f "$results"
}
trap cleanup EXIT

for round in $(seq "$rounds"); do
  for label in A B; do
    bin=${binaries[0]}
    [[ $label == B ]] && bin=${binaries[1]}
    for transport in tcp shm; do
      work=$(mktemp -d /tmp/strata-compare.XXXXXX)
      printf 'limits:\n  max_block_size: %s\n' "$size" >"$work/node.yaml"
      [[ "${RAM_ONLY:-0}" == 1 ]] && printf 'nvme:\n  admission: never\n' >>"$work/node.yaml"
      "$bin" serve --config "$work/node.yaml" --data-dir "$work/node" --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
        --ram 3GiB --nvme 8GiB --ram-unlocked >"$work/node.log" 2>&1 &
      pid=$!
      for _ in $(seq 300); do grep -q "same-host path listening" "$work/node.log" && break; sleep 0.1; done
      address=$(grep -o "listening on [0-9.:]*" "$work/node.log" | head -1 | awk '{print $3}')
      [[ -n "$address" ]] || { cat "$work/node.log" >&2; exit 1; }
      connections=2
      [[ $transport == shm ]] && connections=1
      before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
      line=$("$bin" bench --node "$address" --transport "$transport" --op "$op" --size "$size" --batch 16 \
        --connections "$connections" --seconds "$seconds" --json 2>/dev/null | tail -1)
      after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
      ticks=$(getconf CLK_TCK)
      python3 - "$label" "$transport" "$round" "$line" "$before" "$after" "$ticks" >>"$results" <<'EOF'
import json, sys
label, transport, round_, line, before, after, ticks = sys.argv[1:]
run = json.loads(line)
print(json.dumps({"label": label, "transport": transport, "round": int(round_), "gbps": run["gbps"],
                  "p50_us": run["p50_us"], "node_cpu_s": (float(after) - float(before)) / float(ticks)}))
EOF
      tail -1 "$results"
      kill -KILL "$pid"
      wait "$pid" 2>/dev/null || true
      pid=
      rm -rf "$work"
      work=
    done
  done
done

python3 - "$results" "$seconds" "$op" "$size" <<'EOF'
import json, statistics, sys
path, seconds, op, size = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
runs = [json.loads(line) for line in open(path)]
print(f"\n{op} {size} B x16, medians of {max(r['round'] for r in runs)} interleaved rounds of {seconds:g} s")
print("| transport | A GB/s | B GB/s | B/A | A node CPU s/GB | B node CPU s/GB |")
print("|---|---|---|---|---|---|")
for transport in ("tcp", "shm"):
    def median(label, field):
        return statistics.median(r[field] for r in runs if r["label"] == label and r["transport"] == transport)
    def cpu(label):
        return statistics.median(r["node_cpu_s"] / (r["gbps"] * seconds) for r in runs
                                 if r["label"] == label and r["transport"] == transport)
    a, b = median("A", "gbps"), median("B", "gbps")
    print(f"| {transport} | {a:.2f} | {b:.2f} | {b / a:.2f}x | {cpu('A'):.3f} | {cpu('B'):.3f} |")
EOF
