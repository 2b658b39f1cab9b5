#!/usr/bin/env bash
# Hostile soak: one `strata serve` on loopback, legitimate clients of tenant A (PUT, leased LOOKUP,
# GET of 4 KiB-1 MiB blocks, every byte compared) while every attack of docs/security.md runs at
# once (idle and half-HELLO floods, body-size claims before and after HELLO, stalled GET readers and
# PUTs, lease hogs, malformed frames, a tenant claiming the peer capability, slow admin
# connections) and /health and /ready are probed. One line every 30 s: legit ops, success %, p50/p99,
# node RSS, threads and descriptors, attack counters. Exits non-zero when a legitimate request
# failed, a byte differed, an attack got what it must never get, or the node died. Admin probe
# failures are reported, not fatal.
#
# Usage: scripts/soak-hostile.sh MINUTES [SUMMARY_JSON]
#   Builds .build/release/{strata,strata-soak-hostile} if missing (STRATA_BUILD=debug for a debug
#   build). SUMMARY_JSON defaults to soak-hostile-summary.json in the current directory.
#   SOAK_ARGS adds options of strata-soak-hostile (e.g. SOAK_ARGS="--attacks none" for the
#   legitimate clients alone, "--attacks stalled-get,lease-hog" for some attacks; --help lists all).
# Everything listens on 127.0.0.1 only; the node started here is stopped on exit.
set -euo pipefail

minutes="${1:?usage: scripts/soak-hostile.sh MINUTES [SUMMARY_JSON]}"
[[ "$minutes" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "MINUTES must be a number: $minutes" >&2; exit 2; }
summary="${2:-$PWD/soak-hostile-summary.json}"
repo=$(cd "$(dirname "$0")/.." && pwd)
mode="${STRATA_BUILD:-release}"
bin="$repo/.build/$mode"
if [[ ! -x "$bin/strata" || ! -x "$bin/strata-soak-hostile" ]]; then
  echo "building $mode strata and strata-soak-hostile ..." >&2
  (cd "$repo" && swift build -c "$mode" --product strata >&2 && swift build -c "$mode" --product strata-soak-hostile >&2)
fi

# 2,000 flood sockets plus the attacks' and the clients' own, on both sides.
ulimit -n "$(ulimit -Hn)"
[[ "$(ulimit -n)" -ge 8192 ]] || { echo "need at least 8192 open files (ulimit -Hn is $(ulimit -Hn))" >&2; exit 2; }

work=$(mktemp -d /tmp/strata-soak-hostile.XXXXXX)
node_pid=
stop_node() { # SIGTERM, wait (the node writes its RAM blocks to NVMe first), then SIGKILL
  [[ -n "$node_pid" ]] || return 0
  kill -TERM "$node_pid" 2>/dev/null || return 0
  for _ in $(seq 300); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$node_pid" 2>/dev/null || true
  wait "$node_pid" 2>/dev/null || true
}
cleanup() {
  stop_node
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

next_port=$((10000 + RANDOM % 20000)) # below the ephemeral range (32768-)
free_port() { # a loopback port nothing answers on
  while (exec 3<>"/dev/tcp/127.0.0.1/$next_port") 2>/dev/null; do next_port=$((next_port + 1)); done
  port=$next_port
  next_port=$((next_port + 1))
}
free_port; data_port=$port
free_port; admin_port=$port

token_a="soak-tenant-a-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
token_b="soak-tenant-b-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
cluster_token="soak-cluster-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
# Moderate limits: the attacking tenant's own connection and in-flight budgets below what the node
# as a whole allows. The request timeout is the node's default (10 s): with 2 s, a legitimate client
# descheduled for 2 s on a loaded 2-core machine (the soak runs attackers and clients in one
# process) was cut like an attacker — 55 of 400,000 requests in one run.
request_timeout_s=10
min_transfer_rate_mib=4
lease_duration_s=5
cat >"$work/node.yaml" <<YAML
listen: 127.0.0.1:$data_port
data_dir: $work/data
ram:
  capacity: 256MiB
  lock: false
nvme:
  capacity: 2GiB
limits:
  max_connections: 256
  max_connections_per_source: 160
  max_connections_per_namespace: 48
  max_handshakes: 4096
  handshake_timeout: 5s
  idle_timeout: 60s
  request_timeout: ${request_timeout_s}s
  min_transfer_rate: ${min_transfer_rate_mib}MiB
  max_inflight_bytes: 512MiB
  max_inflight_bytes_per_namespace: 128MiB
  max_inflight_bytes_per_connection: 64MiB
  max_leases: 4096
  max_leases_per_connection: 64
  max_leases_per_namespace: 256
  max_pinned_bytes_per_namespace: 64MiB
  lease_duration: ${lease_duration_s}s
auth:
  tokens:
    - {token: "$token_a", namespace: tenant-a, admin: true}
    - {token: "$token_b", namespace: tenant-b, admin: true}
cluster:
  token: "$cluster_token"
admin:
  listen: 127.0.0.1:$admin_port
YAML

"$bin/strata" serve --config "$work/node.yaml" >"$work/node.log" 2>&1 &
node_pid=$!
for _ in $(seq 300); do
  grep -q " listening on " "$work/node.log" 2>/dev/null && break
  kill -0 "$node_pid" 2>/dev/null || { echo "the node exited:" >&2; cat "$work/node.log" >&2; exit 1; }
  sleep 0.1
done
grep -q " listening on " "$work/node.log" || { echo "the node did not start:" >&2; cat "$work/node.log" >&2; exit 1; }
echo "node pid $node_pid on 127.0.0.1:$data_port (admin 127.0.0.1:$admin_port), $(nproc) cores, $(uname -r)"
echo "configuration (tokens elided):"
grep -v "token" "$work/node.yaml" | sed 's/^/  /'

status=0
"$bin/strata-soak-hostile" --node "127.0.0.1:$data_port" --admin "127.0.0.1:$admin_port" --pid "$node_pid" \
  --token-a "$token_a" --token-b "$token_b" --seconds "$(awk "BEGIN{print $minutes*60}")" \
  --request-timeout "$request_timeout_s" --min-transfer-rate $((min_transfer_rate_mib << 20)) \
  --lease-duration "$lease_duration_s" --summary "$summary" ${SOAK_ARGS:-} || status=$?

if ! kill -0 "$node_pid" 2>/dev/null || grep -q "^\*\*\* Swift runtime failure" "$work/node.log"; then
  cp "$work/node.log" "$summary.node.log"
  echo "the node died during the soak; its whole log: $summary.node.log; the failing thread:" >&2
  grep -A12 -E "^\*\*\* Swift runtime failure|crashed:$" "$work/node.log" >&2 || tail -50 "$work/node.log" >&2
  status=1
fi
echo "node log: $(wc -l <"$work/node.log") lines; last lines:"
tail -5 "$work/node.log" | sed 's/^/  /'
echo "summary JSON: $summary"
exit "$status"
