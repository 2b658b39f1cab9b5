#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks formatting, builds, runs every test (Swift,
# the Python client, the engine adapters).
# This is the README's second command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh

echo "== format check (swift format, configuration in .swift-format)"
if ! swift format lint --strict -r Sources Tests Package.swift; then
  echo "formatting differs: run scripts/format.sh and commit the result" >&2
  exit 1
fi

echo "== build"
swift build --build-tests

echo "== tests"
# Every test uses Swift Testing. The hostile-client suite measures a client's latency under a
# connection flood, so it runs on its own after the others (which run in parallel).
swift test --disable-xctest --skip HostileClientTests
echo "== tests: hostile clients (alone)"
swift test --disable-xctest --filter HostileClientTests

echo "== simulation: the CI seed set (seeds 0..199 of the deterministic cluster simulation, docs/simulation.md)"
scripts/simulate.sh --seeds 200
# A seed replays exactly across processes too (hash seeds differ per process: a run must not
# depend on dictionary order).
sim="$(swift build --show-bin-path)/strata-sim"
for seed in 7 35; do
  first="$("$sim" --seed "$seed" | sed -n 1p)"
  second="$("$sim" --seed "$seed" | sed -n 1p)"
  if [ "$first" != "$second" ]; then
    echo "simulation: seed $seed differs between two processes:"; echo "  $first"; echo "  $second"; exit 1
  fi
done
echo "simulation: seeds 7 and 35 replay exactly in separate processes"

echo "== python client"
scripts/test-python.sh

echo "== engine adapters (vLLM, LMCache, SGLang; STRATA_SKIP_ENGINES=1 skips them)"
scripts/test-engines.sh
