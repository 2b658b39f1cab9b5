"""vLLM (CPU) time to first token for a long shared prefix: Strata hit vs recompute, same run.

Run through `scripts/test-engines.sh bench [--prefix-tokens N] [--layers L] [--hidden H]`.
Every phase is a fresh engine process (engine_run.py) with prefix caching off, on one node:

  recompute  no connector: the prompt is computed from scratch (median of --repeat runs)
  populate   the connector computes a prompt with the same prefix and saves its blocks
  hit        a fresh engine with the connector: the shared prefix is loaded from Strata and only
             the suffix is computed (median of --repeat runs; each run loads again)
  miss       the same engine, a prompt with no stored prefix: the connector's cost on a miss
  layer hit  a fresh engine with strata.load_mode "layer" (one ranged GET per layer, each layer's
             attention waiting only for its own), median of --repeat runs

TTFT is the wall time of generate() with max_tokens=1 (prefill plus one token).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from strata_kv.local import wait_for
from strata_node import StrataNode  # noqa: E402

RUNNER = HERE / "engine_run.py"


def run(spec: dict) -> dict:
    completed = subprocess.run(
        [sys.executable, str(RUNNER), json.dumps(spec)], capture_output=True, text=True, timeout=1800
    )
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout[-4000:] + completed.stderr[-4000:])
        raise SystemExit(f"engine run failed ({completed.returncode})")
    line = [x for x in completed.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix-tokens", type=int, default=2048)
    parser.add_argument("--suffix-tokens", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    block = 32
    prefix = [3 + (i * 7919) % 500 for i in range(args.prefix_tokens)]
    suffix_a = [400 + i % 100 for i in range(args.suffix_tokens)]
    suffix_b = [300 + i % 100 for i in range(args.suffix_tokens)]
    novel = [5 + (i * 104729) % 500 for i in range(args.prefix_tokens + args.suffix_tokens)]
    populate, probe = prefix + suffix_a, prefix + suffix_b

    with tempfile.TemporaryDirectory(prefix="strata-ttft-") as work:
        model = Path(work) / "model"
        subprocess.run(
            [sys.executable, str(RUNNER), "make-model", str(model), str(args.layers), str(args.hidden), str(args.heads)],
            check=True,
            timeout=600,
        )
        node = StrataNode(ram="2GiB", nvme="1GiB")
        try:
            common = {"model": str(model), "max_tokens": 1, "block_size": block, "max_model_len": 8192,
                      "max_num_batched_tokens": 8192}
            recompute = run({**common, "node": None, "prompts": [probe] * args.repeat})
            populated = run({**common, "node": node.address, "prompts": [populate]})
            wait_for(lambda: node.blocks_stored() >= len(populate) // block, what="prefix blocks stored", timeout=120)
            stored_bytes = sum(v for k, v in node.metrics().items() if k.startswith("strata_tier_bytes{"))
            hit = run({**common, "node": node.address, "prompts": [probe] * args.repeat + [novel]})
            layer_hit = run({**common, "node": node.address, "prompts": [probe] * args.repeat,
                             "extra": {"strata.load_mode": "layer"}})
        finally:
            node.remove()

    recompute_s = statistics.median(r["seconds"] for r in recompute["results"])
    hits = hit["results"][: args.repeat]
    hit_s = statistics.median(r["seconds"] for r in hits)
    miss = hit["results"][-1]
    layer_hit_s = statistics.median(r["seconds"] for r in layer_hit["results"])
    assert all(r["num_cached_tokens"] == hits[0]["num_cached_tokens"] for r in layer_hit["results"])
    cached = hits[0]["num_cached_tokens"]
    kv_bytes = cached * 2 * args.layers * args.hidden * 4  # K and V, every layer, fp32
    result = {
        "prompt_tokens": len(probe),
        "shared_prefix_tokens": args.prefix_tokens,
        "model": {"layers": args.layers, "hidden": args.hidden, "heads": args.heads, "dtype": "float32"},
        "recompute_ttft_s": recompute_s,
        "strata_hit_ttft_s": hit_s,
        "speedup": recompute_s / hit_s,
        "tokens_loaded_from_strata": cached,
        "kv_bytes_loaded": int(kv_bytes),
        "populate_ttft_s": populated["results"][0]["seconds"],
        "miss_with_connector_ttft_s": miss["seconds"],
        "strata_hit_layer_mode_ttft_s": layer_hit_s,
        "layer_hit_runs_s": [r["seconds"] for r in layer_hit["results"]],
        "miss_cached_tokens": miss["num_cached_tokens"],
        "recompute_runs_s": [r["seconds"] for r in recompute["results"]],
        "hit_runs_s": [r["seconds"] for r in hits],
        "stored_bytes": int(stored_bytes),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    print()
    print("| prompt | TTFT | tokens from Strata |")
    print("|---|---|---|")
    print(f"| {len(probe)} tokens, recompute (no connector) | {recompute_s * 1000:.0f} ms | 0 |")
    print(f"| {len(probe)} tokens, Strata hit ({cached} tokens loaded, {kv_bytes / 2**20:.0f} MiB) | {hit_s * 1000:.0f} ms | {cached} |")
    print(f"| {len(probe)} tokens, Strata hit, layer mode (one ranged GET per layer) | {layer_hit_s * 1000:.0f} ms | {cached} |")
    print(f"| {len(novel)} tokens, connector on a miss (lookup + save) | {miss['seconds'] * 1000:.0f} ms | {miss['num_cached_tokens']} |")
    print(f"\nspeedup (recompute / hit): {recompute_s / hit_s:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
