"""Throughput of the Python client next to ``strata bench`` (Swift), in the same run.

    python -m strata_kv.bench --strata .build/release/strata \\
        [--size 2MiB] [--batch 16] [--connections 1] [--seconds 2] [--rounds 3] [--node HOST:PORT]

Each round starts a fresh node (``strata serve --ram 3GiB --nvme 256MiB --ram-unlocked`` of the
same binary; ``--node`` uses a running one instead) and runs, interleaved: strata bench GET, Python
GET, Python async GET one batch at a time and 4 in flight, strata bench PUT, Python PUT (odd rounds
swap the Swift and Python runs of each pair, since the second of a pair finds a fuller node). Each
figure is the median of the rounds; each ratio is given as the ratio of the medians and as the
median of the per-round ratios. (A fresh node per round: PUT fills the RAM tier, and on a full
tier a GET working set written but not yet read may be evicted before it is read.) The Python side does what
``strata bench`` does: ``connections`` threads, each with one request in flight, GET reading a
working set of 4 batches per thread (written first) into numpy buffers registered once, PUT writing
new keys throughout; it uses the Mooncake-style ``batch_get_into`` / ``batch_put_from`` with
addresses and sizes, over a store with the same number of connections. The async case: one Python
thread keeping 4 GET batches in flight through submit_get + the event descriptor, against the same
thread doing one blocking batch at a time (both over a store of 4 connections).
Prints a table and, with --json, one JSON object per line. docs/performance.md has the results.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import threading
import time
from typing import Dict, List

import numpy as np

from .local import LocalNode
from .store import StrataStore


def parse_size(text: str) -> int:
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "b": 1}
    lowered = text.strip().lower()
    for suffix, factor in units.items():
        if lowered.endswith(suffix):
            return int(float(lowered[:-len(suffix)]) * factor)
    return int(lowered)


def _pool(count: int, size: int, seed: int) -> np.ndarray:
    pool = np.random.default_rng(seed).integers(0, 1 << 63, size=(count * size) // 8, dtype=np.uint64)
    return pool.view(np.uint8)


def python_blocking(store: StrataStore, op: str, size: int, batch: int, connections: int, seconds: float) -> float:
    """GB/s of ``connections`` threads each doing one batch at a time."""
    moved = [0] * connections
    failures: List[str] = []
    run = os.urandom(8)

    def worker(index: int) -> None:
        pool = _pool(batch, size, index)
        store.register_buffer(pool)
        addresses = [pool.ctypes.data + i * size for i in range(batch)]
        sizes = [size] * batch
        working = [[run + bytes([index, round_]) + os.urandom(22) for _ in range(batch)] for round_ in range(4)]
        if op == "get":
            for keys in working:
                if store.batch_put_from(keys, addresses, sizes) != [0] * batch:
                    failures.append("the working set was not stored")
                    return
        barrier.wait()
        deadline = time.perf_counter() + seconds
        round_ = 0
        while time.perf_counter() < deadline:
            if op == "get":
                if store.batch_get_into(working[round_ % 4], addresses, sizes) != sizes:
                    failures.append(f"a block was not read back whole: {store.batch_get_into(working[round_ % 4], addresses, sizes)}")
                    return
            else:
                keys = [os.urandom(32) for _ in range(batch)]
                if store.batch_put_from(keys, addresses, sizes) != [0] * batch:
                    failures.append("a block was not stored")
                    return
            moved[index] += batch * size
            round_ += 1
        store.unregister_buffer(pool)

    barrier = threading.Barrier(connections + 1)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(failures[0])
    return sum(moved) / elapsed / 1e9


def python_async(store: StrataStore, size: int, batch: int, in_flight: int, seconds: float) -> float:
    """GB/s of one thread keeping ``in_flight`` GET batches in flight (1: blocking calls)."""
    pools = [_pool(batch, size, 100 + i) for i in range(in_flight)]
    for pool in pools:
        store.register_buffer(pool)
    buffers = [[pool[i * size:(i + 1) * size] for i in range(batch)] for pool in pools]
    working = [[os.urandom(32) for _ in range(batch)] for _ in range(4)]
    for keys in working:
        assert store.put_from(keys, buffers[0]) == [0] * batch
    moved = 0
    round_ = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    if in_flight == 1:
        while time.perf_counter() < deadline:
            assert store.get_into(working[round_ % 4], buffers[0]) == [size] * batch
            moved += batch * size
            round_ += 1
    else:
        fd = store.event_fd
        slot_of: Dict[int, int] = {}
        for slot in range(in_flight):
            slot_of[store.submit_get(working[round_ % 4], buffers[slot])] = slot
            round_ += 1
        while slot_of:
            select.select([fd], [], [], 1.0)
            for completion in store.poll_completions(in_flight):
                slot = slot_of.pop(completion.ticket)
                assert completion.results == [size] * batch, completion
                moved += batch * size
                if time.perf_counter() < deadline:
                    slot_of[store.submit_get(working[round_ % 4], buffers[slot])] = slot
                    round_ += 1
    elapsed = time.perf_counter() - started
    for pool in pools:
        store.unregister_buffer(pool)
    return moved / elapsed / 1e9


def strata_bench(binary: str, node: str, op: str, size: int, batch: int, connections: int, seconds: float) -> float:
    run = subprocess.run(
        [binary, "bench", "--node", node, "--op", op, "--size", str(size), "--batch", str(batch),
         "--connections", str(connections), "--seconds", str(seconds), "--json"],
        capture_output=True, text=True, check=True)
    return float(json.loads(run.stdout.strip().splitlines()[-1])["gbps"])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m strata_kv.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", help="a running node (default: a fresh local node per round)")
    parser.add_argument("--strata", required=True, help="the strata binary (a release build)")
    parser.add_argument("--ram", default="3GiB")
    parser.add_argument("--nvme", default="256MiB")
    parser.add_argument("--size", default="2MiB")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = parse_size(args.size)
    results: Dict[str, List[float]] = {}
    for round_ in range(args.rounds):
        node = None if args.node else LocalNode(ram=args.ram, nvme=args.nvme, binary=args.strata,
                                                max_block_size=f"{max(4, 2 * size >> 20)}MiB")
        address = args.node or node.address
        # The same connections as strata bench for the comparison; one per batch in flight for async.
        store = StrataStore(node=address, connections=args.connections, timeout_ms=60000)
        async_store = StrataStore(node=address, connections=args.in_flight, timeout_ms=60000)
        cases = {
            "strata bench get": lambda: strata_bench(args.strata, address, "get", size, args.batch,
                                                     args.connections, args.seconds),
            "python get": lambda: python_blocking(store, "get", size, args.batch, args.connections, args.seconds),
            "python get, 1 batch at a time": lambda: python_async(async_store, size, args.batch, 1, args.seconds),
            f"python get, {args.in_flight} in flight": lambda: python_async(async_store, size, args.batch,
                                                                            args.in_flight, args.seconds),
            "strata bench put": lambda: strata_bench(args.strata, address, "put", size, args.batch,
                                                     args.connections, args.seconds),
            "python put": lambda: python_blocking(store, "put", size, args.batch, args.connections, args.seconds),
        }
        # Each pair runs in turn order: the first of a pair finds the node emptier (PUT fills the RAM
        # tier), so odd rounds swap them.
        order = list(cases)
        if round_ % 2:
            order = [order[1], order[0], order[2], order[3], order[5], order[4]]
        try:
            for name in order:
                case = cases[name]
                value = case()
                results.setdefault(name, []).append(value)
                if args.json:
                    print(json.dumps({"round": round_ + 1, "case": name, "gbps": round(value, 3)}), flush=True)
        finally:
            store.close()
            async_store.close()
            if node is not None:
                node.remove()
    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"\n{args.size} x {args.batch}, {args.connections} connection(s), {args.rounds} rounds of "
          f"{args.seconds:g} s (median GB/s; rounds in brackets)")
    for name, values in results.items():
        print(f"  {name:<32} {median[name]:6.2f}   [{', '.join(f'{v:.2f}' for v in values)}]")
    in_flight = f"python get, {args.in_flight} in flight"
    for label, top, bottom in (("python/strata get", "python get", "strata bench get"),
                               ("python/strata put", "python put", "strata bench put"),
                               (f"async {args.in_flight} in flight / 1 at a time", in_flight,
                                "python get, 1 batch at a time")):
        # Ratio of the medians, and the median of each round's ratio (its two runs were adjacent in time).
        paired = statistics.median(a / b for a, b in zip(results[top], results[bottom]))
        print(f"  {label:<40} {median[top] / median[bottom]:.2f}x (median of per-round ratios {paired:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
