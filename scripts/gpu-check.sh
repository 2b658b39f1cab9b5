#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU and the CUDA toolkit (not run by the tests; see
# docs/rdma.md and, for `vllm`, docs/integrations.md). Builds the node and libstrata_client.so
# (release), starts a node on loopback, compiles a small C program against the library and
# libcudart, writes blocks, reads them into cudaMalloc'd memory over TCP (the pinned staging ring,
# strata_get_gpu), checks every byte, and prints the staging bandwidth next to a plain pinned
# cudaMemcpy of the same bytes.
# Usage: scripts/gpu-check.sh [BLOCKS] [BLOCK_BYTES]   (defaults 256 blocks of 2 MiB)
#        scripts/gpu-check.sh vllm   (the vLLM connector on the GPU: see vllm_check below)
set -euo pipefail
cd "$(dirname "$0")/.."

# vllm_check: StrataConnector with vLLM's CUDA KV cache (docs/integrations.md). Installs vLLM (the
# CUDA build, the same 0.32.0 API the CPU tests use) into a cached environment, starts a node, and
# runs two engine processes on a tiny random-weight Llama (fp16, block 16): process 1 computes a
# prompt and saves its blocks through the pinned staging buffer; process 2 (fresh, prefix caching
# off) must report Strata-loaded tokens and produce the same tokens; a third run with the node
# stopped must still complete. Prints the two runs' times.
vllm_check() {
  local python=${PYTHON:-python3} env
  env=${XDG_CACHE_HOME:-$HOME/.cache}/strata/gpu-vllm-0.32.0
  if [ ! -f "$env/.complete" ]; then
    rm -rf "$env"
    "$python" -m venv "$env"
    "$env/bin/pip" install --quiet "vllm==0.32.0" "pytest==8.4.2"
    touch "$env/.complete"
  fi
  swift build -c release --product strata
  swift build -c release --product strata_client
  local bin work
  bin=$(swift build -c release --show-bin-path)
  work=$(mktemp -d)
  export STRATA_BIN=$bin/strata STRATA_CLIENT_LIBRARY=$bin/libstrata_client.so
  export PYTHONPATH=$PWD/python:$PWD/python/tests/engines PYTHONUNBUFFERED=1
  "$env/bin/python" python/tests/engines/vllm_engine/engine_run.py make-model "$work/model"
  "$env/bin/python" - "$work" <<'PY'
import json, subprocess, sys
from pathlib import Path
from strata_node import StrataNode

work = Path(sys.argv[1])
runner = "python/tests/engines/vllm_engine/engine_run.py"
prompt = [3 + (i * 7) % 500 for i in range(8 * 16 + 5)]  # 8 full blocks of 16 and a tail


def run(node, extra=None):
    spec = {"model": str(work / "model"), "node": node, "prompts": [prompt], "max_tokens": 16,
            "dtype": "float16", "block_size": 16, "timeout_ms": 2000, "extra": extra or {},
            "llm_args": {"gpu_memory_utilization": 0.3}}
    out = subprocess.run([sys.executable, runner, json.dumps(spec)], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        sys.exit(out.stdout[-4000:] + out.stderr[-4000:])
    return json.loads([x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1][7:])["results"][0]


node = StrataNode(work / "node").start()
try:
    first = run(node.address)
    node.wait_for(lambda: node.blocks_stored() >= 8, "8 blocks stored", 60)
    second = run(node.address)
    # Layer mode on the GPU: pinned staging per layer GET, device copies in wait_for_layer_load.
    layered = run(node.address, {"strata.load_mode": "layer"})
finally:
    node.stop()
third = run(node.address)
print(f"process 1: {first['seconds']:.3f} s, cached {first['num_cached_tokens']}")
print(f"process 2: {second['seconds']:.3f} s, cached {second['num_cached_tokens']} (from Strata)")
print(f"node stopped: {third['seconds']:.3f} s, cached {third['num_cached_tokens']}")
assert first["num_cached_tokens"] == 0
assert second["num_cached_tokens"] == 8 * 16, second
assert layered["num_cached_tokens"] == 8 * 16, layered
assert second["tokens"] == first["tokens"] == third["tokens"] == layered["tokens"], (first, second, third, layered)
print("vLLM on the GPU: Strata hit with identical tokens (block and layer mode), and recompute with the node stopped")
PY
  rm -rf "$work"
}

if [ "${1:-}" = vllm ]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  vllm_check
  exit 0
fi

blocks=${1:-256}
block_bytes=${2:-2097152}
cuda=${CUDA_HOME:-/usr/local/cuda}
work=$(mktemp -d)
node_pid=""
cleanup() {
  if [ -n "$node_pid" ]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
swift build -c release --product strata
swift build -c release --product strata_client
bin=$(swift build -c release --show-bin-path)

ram=$(( (blocks * block_bytes * 3 / 2) / 1048576 + 64 ))MiB
"$bin/strata" serve --listen 127.0.0.1:0 --data-dir "$work/data" --ram "$ram" --ram-unlocked >"$work/node.log" 2>&1 &
node_pid=$!
address=""
for _ in $(seq 1 600); do  # the node's own "listening on" line says when it is ready
  address=$(sed -n 's/.* listening on \([^ ]*\)$/\1/p' "$work/node.log" | head -1)
  [ -n "$address" ] && break
  kill -0 "$node_pid" 2>/dev/null || { cat "$work/node.log"; exit 1; }
  sleep 0.1
done
[ -n "$address" ] || { echo "node did not start"; cat "$work/node.log"; exit 1; }

cat >"$work/gpu_check.c" <<'C'
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "strata_client.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}
#define CHECK_CUDA(call) do { cudaError_t e = (call); if (e != cudaSuccess) { \
  fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e)); return 1; } } while (0)
#define CHECK(call) do { int rc = (call); if (rc != 0) { \
  fprintf(stderr, "%s: %d %s\n", #call, rc, strata_last_error()); return 1; } } while (0)

int main(int argc, char **argv) {
  const char *address = argv[1];
  size_t count = strtoull(argv[2], 0, 10), bytes = strtoull(argv[3], 0, 10), total = count * bytes;
  strata_client *c;
  CHECK(strata_client_open(address, "", 4, 60000, &c));
  uint8_t *keys = malloc(count * 32), *host = malloc(total), *back = malloc(total);
  for (size_t i = 0; i < count * 32; i++) keys[i] = (uint8_t)(i * 131 + 7);
  for (size_t i = 0; i < total; i++) host[i] = (uint8_t)(i * 2654435761u >> 13);
  const void **sources = malloc(count * sizeof *sources);
  void **destinations = malloc(count * sizeof *destinations);
  uint64_t *lengths = malloc(count * 8);
  int64_t *got = malloc(count * 8);
  uint8_t *outcomes = malloc(count);
  for (size_t i = 0; i < count; i++) { sources[i] = host + i * bytes; lengths[i] = bytes; }
  CHECK(strata_put(c, keys, count, sources, lengths, outcomes));
  uint8_t *device;
  CHECK_CUDA(cudaMalloc((void **)&device, total));
  for (size_t i = 0; i < count; i++) destinations[i] = device + i * bytes;
  CHECK(strata_get_gpu(c, 0, keys, count, (void *const *)destinations, lengths, got)); /* warm-up */
  CHECK_CUDA(cudaMemset(device, 0, total));
  double start = now();
  CHECK(strata_get_gpu(c, 0, keys, count, (void *const *)destinations, lengths, got));
  double staged = now() - start;
  for (size_t i = 0; i < count; i++) if (got[i] != (int64_t)bytes) { fprintf(stderr, "block %zu: %lld\n", i, (long long)got[i]); return 1; }
  CHECK_CUDA(cudaMemcpy(back, device, total, cudaMemcpyDeviceToHost));
  if (memcmp(back, host, total) != 0) { fprintf(stderr, "GPU bytes differ from what was written\n"); return 1; }
  /* The same bytes with a plain pinned host -> device copy: the ceiling for the staging path. */
  uint8_t *pinned;
  CHECK_CUDA(cudaHostAlloc((void **)&pinned, total, 0));
  memcpy(pinned, host, total);
  CHECK_CUDA(cudaMemcpy(device, pinned, total, cudaMemcpyHostToDevice));
  start = now();
  CHECK_CUDA(cudaMemcpy(device, pinned, total, cudaMemcpyHostToDevice));
  double plain = now() - start;
  double gib = total / (double)(1 << 30);
  printf("blocks %zu x %zu bytes (%.2f GiB), all bytes verified on the GPU\n", count, bytes, gib);
  printf("strata_get_gpu over TCP (staging ring): %.3f s, %.2f GiB/s\n", staged, gib / staged);
  printf("plain pinned cudaMemcpy H2D:             %.3f s, %.2f GiB/s\n", plain, gib / plain);
  cudaFreeHost(pinned);
  cudaFree(device);
  strata_client_close(c);
  return 0;
}
C
gcc -O2 -I Sources/StrataClientC/include -I "$cuda/include" "$work/gpu_check.c" -o "$work/gpu_check" \
  -L "$bin" -lstrata_client -Wl,-rpath,"$bin" -L "$cuda/lib64" -lcudart -Wl,-rpath,"$cuda/lib64"
"$work/gpu_check" "$address" "$blocks" "$block_bytes"
