#!/usr/bin/env bash
# Runs seeds of the deterministic cluster simulation in parallel (docs/simulation.md).
#   scripts/simulate.sh [--seeds N] [--first F] [--jobs J] [--release] [--mutation NAME] [--ram-pressure]
#   scripts/simulate.sh --findings [--release]   the seeds that found bugs (FindingSeeds), in one process
# N seeds (default 200: the CI set is seeds 0..199) from F (default 0), J processes (default: the
# number of cores). Prints every failing seed's report (its fault schedule, failure and trace end),
# a summary with the throughput in seeds per minute, and exits 1 when a seed failed.
# Replay one seed: swift run strata-sim --seed S --trace
set -euo pipefail
cd "$(dirname "$0")/.."

seeds=200
first=0
jobs="$(nproc)"
configuration=debug
mutation=()  # and --ram-pressure: options passed to each strata-sim
findings=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="$2"; shift 2 ;;
    --first) first="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --release) configuration=release; shift ;;
    --mutation) mutation+=(--mutation "$2"); shift 2 ;;
    --ram-pressure) mutation+=(--ram-pressure); shift ;;
    --findings) findings=1; shift ;;
    *) echo "usage: scripts/simulate.sh [--seeds N] [--first F] [--jobs J] [--release] [--mutation NAME] [--ram-pressure] | --findings [--release]" >&2; exit 64 ;;
  esac
done

swift build -c "$configuration" --product strata-sim >/dev/null
binary="$(swift build -c "$configuration" --show-bin-path)/strata-sim"
if [ "$findings" -eq 1 ]; then
  exec "$binary" --findings --quiet
fi

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
start=$(date +%s%N)
pids=()
per=$(((seeds + jobs - 1) / jobs))
for ((job = 0; job < jobs; job++)); do
  from=$((first + job * per))
  count=$((seeds - job * per < per ? seeds - job * per : per))
  [ "$count" -gt 0 ] || break
  "$binary" --first "$from" --count "$count" "${mutation[@]}" >"$logs/$job.log" 2>&1 &
  pids+=("$!")
done
status=0
for job in "${!pids[@]}"; do
  code=0
  wait "${pids[$job]}" || code=$?
  if [ "$code" -gt 1 ]; then
    # Not a failed invariant (exit 1) but a crash: the seed after the last one reported did it.
    echo "simulation: a process stopped with status $code after: $(grep '^seed ' "$logs/$job.log" | tail -1)"
    tail -5 "$logs/$job.log"
  fi
  [ "$code" -eq 0 ] || status=1
done
elapsed_ms=$((($(date +%s%N) - start) / 1000000))

# Every failing seed's report (clean seeds print one line each, left out here).
cat "$logs"/*.log | grep -v -e '^seeds ' -e '^seed [0-9]*: clean' || true
count() { cat "$logs"/*.log | grep -c "$1" || true; }
clean=$(count '^seed [0-9]*: clean')
failed=$(count '^seed [0-9]*: FAILED')
echo "simulation: seeds $first..<$((first + seeds)) ($configuration, $jobs jobs): $clean clean, $failed failed, $((seeds - clean - failed)) not run" \
  "in $((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100))s, $((seeds * 60000 / (elapsed_ms + 1))) seeds/minute"
exit $status
