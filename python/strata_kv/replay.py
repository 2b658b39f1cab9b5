"""Trace replay: multi-turn conversations through the Python client, to see what Strata buys.

    python -m strata_kv.replay --node 127.0.0.1:7400 [options]           # against a running node/cluster
    python -m strata_kv.replay --sweep 256MiB,512MiB,1GiB [options]      # starts one node per capacity

An LMBenchmark-style workload: ``--users`` conversations of ``--turns`` turns share one system
prompt (``--system-tokens``); each turn adds ``--turn-tokens`` (the user's message and the answer).
Requests pick a conversation by Zipf popularity (``--zipf``; 0 is uniform) and play its next turn:

1. key the prompt so far (strata_kv.keys.hash_prefix, ``--block-tokens`` per block);
2. ``lookup`` with a lease: the leading run is what the worker can load instead of recomputing;
3. ``get_into`` the leading run (naming the lease) into a pool of numpy buffers, checking that every
   loaded block is the one that was stored (its first 32 bytes are its key; a block that went away
   between lookup and read ends the run there, counted, with or without a lease);
4. ``put_from`` the blocks that were not loaded (as a worker stores what it just computed).

Blocks are ``--kv-bytes-per-token`` x ``--block-tokens`` bytes (default 128 KiB per token: Llama-3.1-8B
in bf16, 32 layers x 8 KV heads x 128 x 2 x 2 bytes, so 2 MiB per 16-token block). It reports the hit
rate (prompt tokens served from Strata vs recomputed), bytes moved, lookup and load latency p50/p99,
blocks the node refused to store (no space), and the prefill time saved at ``--prefill-tokens-per-s``. With ``--sweep`` it starts a local node per
RAM capacity (``strata`` from --strata / STRATA_BIN / the checkout), replays the same trace
against each, prints a table and draws hit rate against capacity to ``--png`` when matplotlib is
installed. ``--json`` prints one JSON object per run.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import numpy as np

from .keys import Layout, hash_prefix
from .local import LocalNode
from .store import StrataStore


@dataclass
class Workload:
    users: int = 20
    turns: int = 6
    system_tokens: int = 1024
    turn_tokens: int = 256
    block_tokens: int = 16
    kv_bytes_per_token: int = 128 << 10
    zipf: float = 1.1
    requests: int = 0  # 0: users x turns
    seed: int = 7
    prefill_tokens_per_s: float = 10_000.0

    @property
    def block_bytes(self) -> int:
        return self.block_tokens * self.kv_bytes_per_token


@dataclass
class Report:
    label: str
    requests: int
    prompt_tokens: int
    hit_tokens: int
    hit_rate: float
    bytes_loaded: int
    bytes_stored: int
    puts_refused: int
    gone_before_read: int
    gone_under_lease: int
    lookup_p50_ms: float
    lookup_p99_ms: float
    load_p50_ms: float
    load_p99_ms: float
    prefill_saved_s: float
    wall_s: float


def trace(workload: Workload) -> List[int]:
    """The conversation played by each request, in order (a conversation ends after its turns)."""
    rng = random.Random(workload.seed)
    weights = [1.0 / (rank + 1) ** workload.zipf for rank in range(workload.users)]
    played = [0] * workload.users
    total = workload.requests or workload.users * workload.turns
    order: List[int] = []
    while len(order) < total:
        open_users = [u for u in range(workload.users) if played[u] < workload.turns]
        if not open_users:
            played = [0] * workload.users  # every conversation finished: they start over (same tokens)
            continue
        user = rng.choices(open_users, weights=[weights[u] for u in open_users])[0]
        order.append(user)
        played[user] += 1
    return order


def tokens_of(workload: Workload, user: int, turns: int) -> List[int]:
    """The shared system prompt, then ``turns`` turns of ``user``'s conversation (deterministic)."""
    system = random.Random(1).choices(range(32000), k=workload.system_tokens)
    rng = random.Random(1000 + user)
    return system + rng.choices(range(32000), k=workload.turn_tokens * turns)


def _percentile(values: List[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def replay(store: StrataStore, workload: Workload, label: str = "") -> Report:
    layout = Layout("replay/llama-3.1-8b", "bf16", workload.block_tokens, layer_end=32)
    size = workload.block_bytes
    played: Dict[int, int] = {}
    max_blocks = (workload.system_tokens + workload.turn_tokens * workload.turns) // workload.block_tokens + 1
    pool = np.zeros((max_blocks, size), np.uint8)
    store.register_buffer(pool)
    lookups: List[float] = []
    loads: List[float] = []
    prompt_tokens = hit_tokens = loaded = stored = refused = lost = lease_broken = 0
    started = time.perf_counter()
    order = trace(workload)
    for user in order:
        turn = played.get(user, 0) % workload.turns
        played[user] = played.get(user, 0) + 1
        # The prompt: the system prompt, every earlier turn, and this turn's message.
        keys = hash_prefix(layout, tokens_of(workload, user, turn + 1))
        began = time.perf_counter()
        hit = store.lookup(keys, lease_ms=30_000, sizes=False)
        lookups.append(time.perf_counter() - began)
        run = hit.leading_run
        if run:
            began = time.perf_counter()
            got = store.get_into(keys[:run], [pool[i] for i in range(run)], lease=hit.lease)
            loads.append(time.perf_counter() - began)
            # A block can go between the lookup and the read when no lease was granted: the run
            # ends there and the rest is recomputed. A block read whole must be the one stored.
            whole = next((index for index, result in enumerate(got) if result != size), run)
            for index in range(whole):
                if bytes(pool[index, :32]) != keys[index]:
                    raise AssertionError(f"block {index} of user {user} came back with other content")
            if whole < run:
                if hit.lease:
                    lease_broken += 1
                else:
                    lost += 1
            run = whole
            loaded += run * size
        # What was not loaded is computed and stored: its first 32 bytes are its key.
        fresh = list(range(run, len(keys)))
        for index in fresh:
            pool[index, :32] = np.frombuffer(keys[index], np.uint8)
        if fresh:
            outcomes = store.put_from([keys[i] for i in fresh], [pool[i] for i in fresh])
            stored += size * sum(1 for outcome in outcomes if outcome == 0)
            refused += sum(1 for outcome in outcomes if outcome != 0)
        prompt_tokens += len(keys) * workload.block_tokens
        hit_tokens += run * workload.block_tokens
    store.unregister_buffer(pool)
    wall = time.perf_counter() - started
    return Report(
        label=label, requests=len(order), prompt_tokens=prompt_tokens, hit_tokens=hit_tokens,
        hit_rate=hit_tokens / prompt_tokens if prompt_tokens else 0.0, bytes_loaded=loaded, bytes_stored=stored,
        puts_refused=refused, gone_before_read=lost, gone_under_lease=lease_broken,
        lookup_p50_ms=1000 * _percentile(lookups, 50), lookup_p99_ms=1000 * _percentile(lookups, 99),
        load_p50_ms=1000 * _percentile(loads, 50), load_p99_ms=1000 * _percentile(loads, 99),
        prefill_saved_s=hit_tokens / workload.prefill_tokens_per_s, wall_s=wall)


def table(reports: List[Report]) -> str:
    lines = ["| run | requests | hit rate | tokens served / recomputed | GiB loaded | GiB stored | puts refused | gone before read (no lease / leased) | lookup p50/p99 ms "
             "| load p50/p99 ms | prefill saved s | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        lines.append(
            f"| {r.label} | {r.requests} | {100 * r.hit_rate:.1f}% | {r.hit_tokens} / {r.prompt_tokens - r.hit_tokens} "
            f"| {r.bytes_loaded / 2**30:.2f} | {r.bytes_stored / 2**30:.2f} | {r.puts_refused} | {r.gone_before_read} / {r.gone_under_lease} | {r.lookup_p50_ms:.2f} / "
            f"{r.lookup_p99_ms:.2f} | {r.load_p50_ms:.1f} / {r.load_p99_ms:.1f} | {r.prefill_saved_s:.1f} "
            f"| {r.wall_s:.1f} |")
    return "\n".join(lines)


def plot(reports: List[Report], capacities: List[str], path: str) -> Optional[str]:
    """Hit rate against capacity as a PNG; None (and nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(range(len(reports)), [100 * r.hit_rate for r in reports], marker="o")
    axes.set_xticks(range(len(reports)), capacities)
    axes.set_xlabel("node RAM capacity")
    axes.set_ylabel("prompt tokens served from Strata (%)")
    axes.set_ylim(0, 100)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    defaults = Workload()
    parser = argparse.ArgumentParser(prog="python -m strata_kv.replay",
                                     description="Multi-turn conversation replay through the Python client.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--node", help="HOST:PORT of a running node")
    target.add_argument("--seeds", help="HOST:PORT,... of a running cluster")
    target.add_argument("--sweep", help="RAM capacities to start one local node each with, like 256MiB,1GiB")
    parser.add_argument("--strata", help="the strata binary for --sweep")
    parser.add_argument("--nvme", default="8MiB", help="NVMe tier of each --sweep node (default 8MiB: RAM decides)")
    for name, value in asdict(defaults).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--png", default="replay-hit-rate.png")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    workload = Workload(**{name: getattr(args, name) for name in asdict(defaults)})
    reports: List[Report] = []
    if args.sweep:
        capacities = [c.strip() for c in args.sweep.split(",") if c.strip()]
        block = f"{max(1, workload.block_bytes >> 20)}MiB" if workload.block_bytes >= 1 << 20 else "1MiB"
        for capacity in capacities:
            region = f"{2 * max(1, workload.block_bytes >> 20) + 1}MiB"
            with LocalNode(ram=capacity, nvme=args.nvme, binary=args.strata, max_block_size=block,
                           config=f"nvme:\n  region_size: {region}\n") as node:
                with StrataStore(node=node.address, connections=4, timeout_ms=60_000) as store:
                    reports.append(replay(store, workload, label=f"RAM {capacity}"))
            if args.json:
                print(json.dumps(asdict(reports[-1])), flush=True)
    else:
        with StrataStore(node=args.node, seeds=args.seeds, connections=4, timeout_ms=60_000) as store:
            reports.append(replay(store, workload, label=args.node or args.seeds))
        if args.json:
            print(json.dumps(asdict(reports[-1])))
    total_tokens = workload.system_tokens + workload.turn_tokens * workload.turns
    print(f"\n{workload.users} users x {workload.turns} turns, zipf {workload.zipf}, system prompt "
          f"{workload.system_tokens} tokens, {workload.turn_tokens} per turn (up to {total_tokens}), "
          f"{workload.block_tokens} tokens = {workload.block_bytes >> 10} KiB per block; prefill at "
          f"{workload.prefill_tokens_per_s:g} tokens/s")
    print(table(reports))
    if args.sweep:
        drawn = plot(reports, capacities, args.png)
        print(f"hit rate vs capacity: {drawn}" if drawn else "hit rate vs capacity: no PNG (matplotlib missing)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
