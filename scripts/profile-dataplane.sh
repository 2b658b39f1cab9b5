#!/usr/bin/env bash
# Where a data-plane transfer's CPU goes: `perf record -g` of a fresh `strata serve` and of the
# `strata bench` client driving it, for one op, size and batch; prints each process's top symbols
# (self time, call graphs collected). Needs perf (Debian: apt-get install linux-perf) and root or
# kernel.perf_event_paranoid <= 1 for kernel symbols.
#
# Usage: scripts/profile-dataplane.sh [STRATA_BIN] [OP=get] [SIZE=2097152] [BATCH=16] [CONNS=2] [SECONDS=6]
#   RAM=SIZE in the environment: the node's RAM tier (default 3GiB; NVMe 8GiB, as in the benchmarks).
#   TRANSPORT=shm in the environment: the same-host path instead of TCP.
#   RAM_ONLY=1 in the environment: the node keeps a RAM tier only (nvme.admission: never).
#   PCT=N in the environment: list symbols down to N% of the samples (default 1.5).
#   TLS=1 in the environment: the node serves TLS (scripts/dev-ca.sh certificates), the bench
#   client verifies it (user-space OpenSSL unless the kernel offers the tls ULP).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
strata=${1:-$repo/.build/release/strata}
op=${2:-get}
size=${3:-2097152}
batch=${4:-16}
conns=${5:-2}
seconds=${6:-6}
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 2; }
work=$(mktemp -d /tmp/strata-profile.XXXXXX)
node_pid=
cleanup() {
  if [[ -n "$node_pid" ]]; then kill -TERM "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
serve_tls=()
bench_tls=()
if [[ "${TLS:-0}" == 1 ]]; then
  "$repo/scripts/dev-ca.sh" "$work/ca" node-1 >/dev/null
  serve_tls=(--tls-cert "$work/ca/node-1.pem" --tls-key "$work/ca/node-1.key")
  bench_tls=(--tls-ca "$work/ca/ca.pem")
fi
printf 'limits:\n  max_block_size: %s\n' "$size" >"$work/node.yaml"
[[ "${RAM_ONLY:-0}" == 1 ]] && printf 'nvme:\n  admission: never\n' >>"$work/node.yaml"
"$strata" serve --config "$work/node.yaml" --data-dir "$work/node" --listen 127.0.0.1:0 --admin 127.0.0.1:0 --ram "${RAM:-3GiB}" --nvme 8GiB \
  --ram-unlocked "${serve_tls[@]}" >"$work/node.log" 2>&1 &
node_pid=$!
for _ in $(seq 3000); do grep -q "same-host path listening" "$work/node.log" && break; sleep 0.1; done
address=$(grep -o "listening on [0-9.:]*" "$work/node.log" | awk '{print $3}')
[[ -n "$address" ]] || { cat "$work/node.log" >&2; exit 1; }
perf record -q -g -F 999 -p "$node_pid" -o "$work/node.data" -- sleep $((seconds + 2)) 2>/dev/null &
perf_pid=$!
perf record -q -g -F 999 -o "$work/client.data" -- \
  "$strata" bench --node "$address" "${bench_tls[@]}" --transport "${TRANSPORT:-tcp}" --op "$op" --size "$size" --batch "$batch" --connections "$conns" \
  --seconds "$seconds" --json 2>/dev/null | tail -1
wait "$perf_pid" || true
for side in node client; do
  echo "--- $side: top symbols by self time ($op $size x$batch x$conns) ---"
  perf report -i "$work/$side.data" --no-children --sort sym --percent-limit ${PCT:-1.5} --stdio 2>/dev/null \
    | grep -E "^ +[0-9.]+%" | head -25
done
