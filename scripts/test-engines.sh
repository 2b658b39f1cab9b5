#!/usr/bin/env bash
# Engine adapter tests against the real engine packages (docs/integrations.md).
#
# Builds, once, a cached virtual environment per requirement file (python/requirements-engines-*.txt,
# every version pinned, installed with --no-deps) under
#   ${XDG_CACHE_HOME:-$HOME/.cache}/strata/engines-<name>-<hash of the file and the Python version>
# builds the node and libstrata_client.so, and runs python/tests/engines against a real node.
#
# Usage: scripts/test-engines.sh [vllm|lmcache|sglang]...   (default: all three)
#        scripts/test-engines.sh bench [ARGS]                (vLLM TTFT benchmark, docs/performance.md)
# Environment:
#   STRATA_SKIP_ENGINES=1   skip everything (fast local runs; CI runs the engines)
#   STRATA_TORCH_WHEELS=DIR a folder holding torch-2.13.0+cpu (not on PyPI); default: PIP_FIND_LINKS
#   STRATA_KV_PYTHONPATH    where the strata_kv package is (default: python/)
#   STRATA_CLIENT_LIBRARY   libstrata_client.so to load (default: the one built here, debug)
#   STRATA_BIN              the strata binary the tests start (default: the one built here, debug)
#   PYTHON                  the interpreter the environments are made from (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ "${STRATA_SKIP_ENGINES:-0}" = 1 ]; then
  echo "== engine tests skipped (STRATA_SKIP_ENGINES=1)"
  exit 0
fi

python=${PYTHON:-python3}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/strata

# venv NAME: prints the environment of python/requirements-engines-NAME.txt, building it if needed.
venv() {
  local requirements=python/requirements-engines-$1.txt
  local hash dir started
  hash=$({ cat "$requirements"; "$python" --version; } | sha256sum | cut -c1-16)
  dir=$cache/engines-$1-$hash
  if [ ! -f "$dir/.complete" ]; then
    started=$(date +%s)
    echo "== building the $1 environment in $dir (cold: several minutes)" >&2
    rm -rf "$dir"
    mkdir -p "$cache"
    "$python" -m venv "$dir"
    local links=()
    if [ -n "${STRATA_TORCH_WHEELS:-}" ]; then links=(--find-links "$STRATA_TORCH_WHEELS"); fi
    if ! "$dir/bin/pip" install --quiet --disable-pip-version-check --no-deps "${links[@]}" \
      -r "$requirements" >&2; then
      echo "installing $requirements failed; torch==2.13.0+cpu is not on PyPI: put its wheel in a" >&2
      echo "folder and set STRATA_TORCH_WHEELS (docs/integrations.md)" >&2
      rm -rf "$dir"
      return 1
    fi
    touch "$dir/.complete"
    echo "== $1 environment built in $(($(date +%s) - started)) s" >&2
  fi
  echo "$dir"
}

echo "== building the node and libstrata_client.so"
swift build --product strata
swift build --product strata_client
bin=$(swift build --show-bin-path)
export STRATA_BIN=${STRATA_BIN:-$bin/strata}
export STRATA_CLIENT_LIBRARY=${STRATA_CLIENT_LIBRARY:-$bin/libstrata_client.so}
export LD_LIBRARY_PATH=$bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONPATH=${STRATA_KV_PYTHONPATH:-$root/python}${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
# A skipped engine test (its engine did not import) fails the run (python/tests/engines/conftest.py).
export STRATA_ENGINE_SKIPS_FAIL=1

# run ENV TEST_DIR: pytest from one environment; the engines' own conftest stops at tests/engines.
run() {
  local env
  env=$(venv "$1")
  echo "== $2 ($1 environment)"
  # A test running past 5 minutes has every thread's stack printed (pytest's faulthandler_timeout).
  "$env/bin/python" -m pytest -q -p no:cacheprovider -o faulthandler_timeout=300 \
    --confcutdir=python/tests/engines "python/tests/engines/$2"
}

if [ "${1:-}" = bench ]; then
  shift
  env=$(venv vllm)
  exec "$env/bin/python" python/tests/engines/vllm_engine/ttft_bench.py "$@"
fi

engines=("$@")
if [ ${#engines[@]} -eq 0 ]; then engines=(vllm lmcache sglang); fi
for engine in "${engines[@]}"; do
  case $engine in
    vllm) run vllm vllm_engine ;;
    lmcache) run lmcache-sglang lmcache_engine ;;
    sglang) run lmcache-sglang sglang_engine ;;
    *)
      echo "unknown engine $engine (vllm, lmcache, sglang)" >&2
      exit 2
      ;;
  esac
done
