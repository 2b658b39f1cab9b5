#!/usr/bin/env bash
# TLS cost on the data plane, in one run on this machine: `strata bench` GET and PUT of 2 MiB
# blocks, batch 16, 2 connections, against a plaintext node and a TLS node (certificates from
# scripts/dev-ca.sh), next to the machine's own single-core cipher rate
# (`openssl speed -evp aes-128-gcm -bytes 16384`, 16 KiB records, one core). Rounds alternate
# plaintext and TLS; medians of REPEATS rounds. Prints the table of docs/performance.md ("TLS"),
# with the CPU seconds node and client together spent per GB moved (their own /proc counters over
# the timed part of each run): less sensitive than the rate to other load on the machine; 2 / that
# is the rate two cores could reach if they did nothing else. Beside them, in the same rounds, the
# TLS ceiling (scripts/bench/tls_ceiling.c: the loopback ceiling's blob request/response over
# user-space OpenSSL TLS 1.3 with the same cipher, and nothing else) at the same size and
# connections: what any user-space TLS blob server reaches on this machine.
#
# Usage: scripts/bench-tls.sh [STRATA_BIN] [REPEATS=3] [SECONDS=3]
#   STRATA_BIN defaults to .build/release/strata (built with `swift build -c release` if missing).
# Everything listens on 127.0.0.1 only; both nodes are stopped on exit.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
strata="${1:-$repo/.build/release/strata}"
if [[ ! -x "$strata" ]]; then
  echo "building $strata ..." >&2
  (cd "$repo" && swift build -c release --product strata >&2)
fi
repeats="${2:-3}"
duration="${3:-3}"

work=$(mktemp -d /tmp/strata-tls-bench.XXXXXX)
# start() runs in a command substitution (a subshell), so node pids are kept in a file.
cleanup() {
  local pid pids=()
  [[ -f "$work/pids" ]] && mapfile -t pids <"$work/pids"
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

"$repo/scripts/dev-ca.sh" "$work/ca" node-1 >/dev/null
printf 'limits:\n  max_block_size: 2MiB\n' >"$work/node.yaml"
start() { # NAME EXTRA...: starts a node, prints its address
  local name=$1
  shift
  "$strata" serve --config "$work/node.yaml" --data-dir "$work/$name" --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
    --ram 1GiB --nvme 2GiB --ram-unlocked "$@" >"$work/$name.log" 2>&1 &
  echo $! >>"$work/pids"
  for _ in $(seq 300); do
    grep -q " listening on " "$work/$name.log" 2>/dev/null && break
    sleep 0.1
  done
  grep " listening on " "$work/$name.log" | awk '{print $NF}'
}
gcc -O2 -pthread -o "$work/tls_ceiling" "$repo/scripts/bench/tls_ceiling.c" -lssl -lcrypto
ceiling_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$work/tls_ceiling" server "$ceiling_port" "$work/ca/node-1.pem" "$work/ca/node-1.key" 256 >"$work/ceiling.log" 2>&1 &
echo $! >>"$work/pids"
plain=$(start plain)
tls=$(start tls --tls-cert "$work/ca/node-1.pem" --tls-key "$work/ca/node-1.key")
[[ -n "$plain" && -n "$tls" ]] || { echo "a node did not start:" >&2; cat "$work"/*.log >&2; exit 1; }
plain_pid=$(sed -n 2p "$work/pids")
tls_pid=$(sed -n 3p "$work/pids")

results="$work/results.jsonl"
for round in $(seq "$repeats"); do
  for op in get put; do
    for mode in plain tls; do
      if [[ $mode == plain ]]; then
        node=$plain extra=(--node-pid "$plain_pid")
      else
        node=$tls extra=(--node-pid "$tls_pid" --tls-ca "$work/ca/ca.pem")
      fi
      line=$("$strata" bench --node "$node" "${extra[@]}" --op "$op" --size 2MiB --batch 16 --connections 2 \
        --seconds "$duration" --json | tail -1)
      python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["mode"]=sys.argv[2]; print(json.dumps(d))' \
        "$line" "$mode" >>"$results"
    done
    line=$("$work/tls_ceiling" client "$ceiling_port" "$work/ca/ca.pem" 2097152 "$duration" 2 "$op" 256)
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["mode"]="ceiling"; print(json.dumps(d))' \
      "$line" >>"$results"
  done
done
# openssl speed: the last line's last column is bytes/s in thousands for 16 KiB blocks.
cipher=$(taskset -c 0 openssl speed -evp aes-128-gcm -bytes 16384 -seconds "$duration" 2>/dev/null \
  | awk '/^AES-128-GCM|^aes-128-gcm/ {v=$NF} END {sub("k","",v); print v*1000}')
tls_modes=$(grep -h "tls_mode" "$work/tls.log" | sed -n 's/.*tls_mode=\([a-z]*\).*/\1/p' | sort | uniq -c | tr '\n' ' ')
python3 - "$results" "$cipher" "$repeats" "${tls_modes:-none logged}" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
cipher = float(sys.argv[2]) / 1e9
print(f"openssl speed -evp aes-128-gcm, 16 KiB, one core: {cipher:.2f} GB/s; rounds: {sys.argv[3]}; "
      f"TLS sessions on the node: {sys.argv[4]}")
print("| op | plaintext GB/s | TLS GB/s | TLS / plaintext | TLS / cipher core | target (>= 0.6x cipher) | TLS p99 ms "
      "| CPU s/GB plaintext (node+client) | CPU s/GB TLS (node+client) | TLS 2-core CPU bound GB/s "
      "| TLS ceiling GB/s | TLS ceiling / cipher core | TLS / TLS ceiling |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
def cpu(rows):
    # Node plus client CPU seconds per GB moved: what one byte costs on this machine's two cores,
    # whatever else shares them during the run.
    values = [r["node_cpu_s_per_gb"] + r["client_cpu_s_per_gb"] for r in rows
              if r.get("node_cpu_s_per_gb") is not None and r.get("client_cpu_s_per_gb") is not None]
    return statistics.median(values) if values else float("nan")
for op in ("get", "put"):
    plain_rows = [r for r in rows if r["op"] == op and r["mode"] == "plain"]
    plain = statistics.median(r["gbps"] for r in plain_rows)
    tls = [r for r in rows if r["op"] == op and r["mode"] == "tls"]
    rate = statistics.median(r["gbps"] for r in tls)
    p99 = statistics.median(r["p99_us"] for r in tls) / 1000
    verdict = "met" if rate >= 0.6 * cipher else "missed"
    ceiling_rows = [r for r in rows if r["op"] == op and r["mode"] == "ceiling" and not r["failed"]]
    ceiling = statistics.median(r["gbps"] for r in ceiling_rows) if ceiling_rows else float("nan")
    print(f"| {op.upper()} 2 MiB x 16, 2 conn | {plain:.2f} | {rate:.2f} | {rate / plain:.2f} | "
          f"{rate / cipher:.2f} | {verdict} | {p99:.1f} | {cpu(plain_rows):.3f} | {cpu(tls):.3f} | "
          f"{2 / cpu(tls):.2f} | {ceiling:.2f} | {ceiling / cipher:.2f} | {rate / ceiling:.2f} |")
PY
