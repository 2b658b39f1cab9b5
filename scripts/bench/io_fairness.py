#!/usr/bin/env python3
"""I/O fairness between tenants on one node: does one tenant's flood of NVMe reads delay another
tenant's NVMe reads?

    PYTHONPATH=python STRATA_CLIENT_LIBRARY=.build/release/libstrata_client.so \\
        python3 scripts/bench/io_fairness.py [--strata .build/release/strata] [--rounds 3] \\
        [--seconds 20] [--victim-blocks 400] [--flood-connections 8] [--json-only]

Each round starts a fresh node (``strata serve --config FILE``) with two tenants, each its own
token and namespace: A (``flood``) and B (``victim``), both with scopes read and write. The RAM
tier is small and the NVMe tier is a file in the round's temporary folder, so most GETs read
from NVMe. A round:

1. B PUTs two sets of ``--victim-blocks`` blocks of ``--victim-size`` with distinct keys (one set
   for the baseline, one for the flood).
2. A PUTs filler blocks (1.5 × the RAM tier) until a LOOKUP finds every B block on NVMe only,
   then the node is left to finish writing behind.
3. Baseline: B GETs its baseline blocks one at a time, each a different key, timing each GET.
4. Flood: ``strata bench --op get`` as A (a subprocess): it writes a working set of 4 batches per
   connection (1 GiB with the defaults, several times the RAM tier, read in a cycle, so its GETs
   come from NVMe), then reads it for ``--seconds``. Once its first GET reaches the node (seen in
   ``strata_requests_total{op="get"}``) and ``--warmup`` has passed, B GETs its second set one at
   a time as in the baseline, until the set is done or the flood is about to end.

Attribution of B's reads to a tier: the node's hit counters (``strata_hits_total{tier}``) are
node-wide. In the baseline nothing else runs, so their change over B's reads is B's. During the
flood, a LOOKUP of B's keys just before B reads them gives each key's tier (only a GET of B's
own promotes a B block into RAM, and B reads each key once); the flood's own NVMe share is the
node-wide change less B's.

The RAM tier: ``--ram auto`` is the flood's bytes in flight (connections × batch × size) plus
64 MiB. A GET of a block on NVMe promotes it into RAM and sends it from there, so the RAM tier has
to hold every batch in flight at once: smaller, and the flood's GETs come back with blocks
missing (64 MiB with 8 connections of 16 × 2 MiB does that).

Prints one line per round on standard error, then a table of medians over the rounds and, as
the last line of standard output, one JSON object (``--json-only``: that line alone).
Latencies are in milliseconds, measured in the client around each blocking GET (TCP, one
connection). Everything the run creates lies in one ``mkdtemp`` folder under /var/tmp, removed at
the end. The rounds run in a child process in a session of its own: however it ends (even by a
crash in the client library), the node and the flood are stopped and the folder removed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[2]
try:
    import numpy as np
    from strata_kv.store import StrataStore
except ImportError:  # a checkout run without PYTHONPATH: use the checkout's package
    sys.path.insert(0, str(REPO / "python"))
    import numpy as np
    from strata_kv.store import StrataStore

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
FLOOD_NAMESPACE, VICTIM_NAMESPACE = "flood", "victim"


# MARK: Helpers


def parse_size(text: str) -> int:
    """Bytes of a size like ``2MiB``, ``256KiB`` or ``4GiB`` (powers of 1024; a bare number is bytes)."""
    match = re.fullmatch(r"\s*(\d+)\s*(B|KiB|MiB|GiB|TiB)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number and B, KiB, MiB, GiB or TiB")
    factor = {None: 1, "B": 1, "KiB": KIB, "MiB": MIB, "GiB": GIB, "TiB": 1 << 40}[match.group(2)]
    return int(match.group(1)) * factor


def size_text(size: int) -> str:
    """``size`` as the node's configuration writes it: the largest unit that divides it."""
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(latencies_ms: List[float]) -> Dict[str, float]:
    ordered = sorted(latencies_ms)
    return {
        "p50_ms": round(percentile(ordered, 0.50), 3),
        "p90_ms": round(percentile(ordered, 0.90), 3),
        "p99_ms": round(percentile(ordered, 0.99), 3),
        "max_ms": round(ordered[-1], 3) if ordered else math.nan,
    }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def new_token() -> Tuple[str, str]:
    """A random tenant token and the digest ``auth.tokens`` stores (what ``strata token hash`` prints)."""
    token = secrets.token_hex(32)
    return token, "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def process_cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU seconds of a process (Linux /proc), or None when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# MARK: Metrics


class Metrics:
    """One scrape of the node's Prometheus text (``GET /metrics`` on the admin address)."""

    _LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
    _LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

    def __init__(self, admin: str) -> None:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as response:
            text = response.read().decode()
        self.series: List[Tuple[str, Dict[str, str], float]] = []
        for line in text.splitlines():
            match = self._LINE.match(line)
            if match and not line.startswith("#"):
                labels = dict(self._LABEL.findall(match.group(2) or ""))
                self.series.append((match.group(1), labels, float(match.group(3))))

    def value(self, name: str, **labels: str) -> float:
        """The sum of the series named ``name`` whose labels include ``labels``."""
        return sum(v for n, ls, v in self.series if n == name and all(ls.get(k) == w for k, w in labels.items()))

    def hits(self) -> Dict[str, float]:
        return {tier: self.value("strata_hits_total", tier=tier) for tier in ("ram", "nvme")}


# MARK: Node


class Node:
    """A ``strata serve`` process with two tenant tokens, in its own folder."""

    def __init__(self, strata: str, folder: Path, args: argparse.Namespace) -> None:
        self.strata, self.folder = strata, folder
        self.flood_token, flood_digest = new_token()
        self.victim_token, victim_digest = new_token()
        folder.mkdir(parents=True)
        max_block = max(args.flood_size, args.victim_size)
        # A region holds whole records (a block and its 4 KiB header): 16 of the largest block.
        region = 16 * (max_block + 4 * KIB)
        self.config = folder / "node.yaml"
        self.config.write_text(
            "node:\n  id: io-fairness\n"
            # Port 0: the node binds free loopback ports itself and prints the ones it got.
            "listen: 127.0.0.1:0\n"
            f"data_dir: {folder / 'data'}\n"
            f"ram:\n  capacity: {size_text(args.ram)}\n  lock: false\n"
            f"nvme:\n  paths:\n    - {{path: {folder / 'data' / 'nvme'}, capacity: {size_text(args.nvme)}}}\n"
            f"  region_size: {size_text(region)}\n"
            f"limits:\n  max_block_size: {size_text(max_block)}\n"
            "admin:\n  listen: 127.0.0.1:0\n"
            "auth:\n  tokens:\n"
            f"    - {{token: \"{flood_digest}\", namespace: {FLOOD_NAMESPACE}, scopes: [read, write]}}\n"
            f"    - {{token: \"{victim_digest}\", namespace: {VICTIM_NAMESPACE}, scopes: [read, write]}}\n"
        )
        self.log_path = folder / "node.log"
        self.process: Optional[subprocess.Popen] = None
        self.address = self.admin = ""

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                [self.strata, "serve", "--config", str(self.config)],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            admin = re.search(r"^strata admin API at http://(\S+?)[\s(]", text, re.M)
            listening = re.search(r"^strata node .* listening on (\S+)$", text, re.M)
            if admin and listening:
                self.admin, self.address = admin.group(1), listening.group(1)
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"strata serve exited with {self.process.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"strata serve did not report its addresses within {timeout:.0f} s:\n{self.log_tail()}")

    def metrics(self) -> Metrics:
        return Metrics(self.admin)

    def settle(self, timeout: float = 30.0) -> float:
        """Waits until no block waits to be written behind to NVMe; returns the seconds waited."""
        began = time.monotonic()
        quiet = 0
        while time.monotonic() - began < timeout and quiet < 3:
            quiet = quiet + 1 if self.metrics().value("strata_writeback_pending_blocks") == 0 else 0
            time.sleep(0.1)
        return time.monotonic() - began

    def stop(self) -> None:
        """SIGTERM (a graceful stop), SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# MARK: Tenant B


class Victim:
    """Tenant B: writes sets of blocks and reads them back one GET at a time, timing each."""

    def __init__(self, node: Node, size: int) -> None:
        self.size = size
        self.store = StrataStore(node=node.address, token=node.victim_token, connections=1, same_host=False)
        self.buffer = np.zeros(size, dtype=np.uint8)
        self.store.register_buffer(self.buffer)
        self.sets = 0

    def write_set(self, count: int, batch: int = 16) -> Tuple[int, List[bytes]]:
        """PUTs ``count`` blocks with new keys as set number ``s`` (returned with the keys): block
        ``i`` begins with ``(s << 32) | i``, checked when it is read back."""
        self.sets += 1
        keys = [os.urandom(32) for _ in range(count)]
        pool = np.random.default_rng(self.sets).integers(0, 256, size=(batch, self.size), dtype=np.uint8)
        for first in range(0, count, batch):
            chunk = keys[first:first + batch]
            for offset in range(len(chunk)):
                pool[offset, :8].view(np.uint64)[0] = (self.sets << 32) | (first + offset)
            outcomes = self.store.put_from(chunk, [pool[i] for i in range(len(chunk))])
            if any(outcomes):
                raise RuntimeError(f"victim PUT failed: {outcomes}")
        return self.sets, keys

    def tiers(self, keys: Sequence[bytes]) -> List[int]:
        """Each key's tier by LOOKUP (no lease): 0 absent, 1 RAM, 2 NVMe."""
        tiers: List[int] = []
        for first in range(0, len(keys), 64):
            tiers += self.store.lookup(keys[first:first + 64], sizes=False).tiers
        return tiers

    def read(self, keys: Sequence[bytes], set_number: int, deadline: float = math.inf) -> Tuple[List[float], int]:
        """GETs ``keys`` one at a time until done or ``deadline`` (monotonic); returns each GET's
        latency in ms and how many GETs did not return the block whole and intact."""
        latencies: List[float] = []
        failures = 0
        header = self.buffer[:8]
        for index, key in enumerate(keys):
            if time.monotonic() >= deadline:
                break
            began = time.perf_counter()
            got = self.store.get_into([key], [self.buffer])[0]
            latencies.append((time.perf_counter() - began) * 1e3)
            if got != self.size or int(header.view(np.uint64)[0]) != (set_number << 32) | index:
                failures += 1
        return latencies, failures

    def close(self) -> None:
        self.store.close()


def fill_ram_as_flood(node: Node, ram: int, block: int) -> None:
    """Tenant A PUTs 1.5 × the RAM tier in new blocks: everything older leaves RAM."""
    store = StrataStore(node=node.address, token=node.flood_token, connections=2, same_host=False)
    try:
        batch = max(1, (32 * MIB) // block)
        pool = np.random.default_rng(0).integers(0, 256, size=(batch, block), dtype=np.uint8)
        for _ in range(max(1, math.ceil(1.5 * ram / (batch * block)))):
            outcomes = store.put_from([os.urandom(32) for _ in range(batch)], [pool[i] for i in range(batch)])
            if any(outcomes):
                raise RuntimeError(f"filler PUT failed: {outcomes}")
    finally:
        store.close()


# MARK: A round


def run_round(args: argparse.Namespace, folder: Path, number: int) -> Dict[str, object]:
    node = Node(args.strata, folder, args)
    flood: Optional[subprocess.Popen] = None
    victim: Optional[Victim] = None
    try:
        node.start()
        victim = Victim(node, args.victim_size)
        baseline_set, baseline_keys = victim.write_set(args.victim_blocks)
        flood_set, flood_keys = victim.write_set(args.victim_blocks)

        # Push B's blocks out of RAM: A writes filler until a LOOKUP finds all of B's on NVMe.
        for _ in range(4):
            fill_ram_as_flood(node, args.ram, args.flood_size)
            node.settle()
            tiers = victim.tiers(baseline_keys + flood_keys)
            if all(tier == 2 for tier in tiers):
                break
        else:
            raise RuntimeError(f"B's blocks stayed in RAM: tiers {sorted(set(tiers))} after 4 fills")

        # Baseline: nothing else runs, so the node-wide hit counters' change is B's.
        before = node.metrics().hits()
        baseline_latencies, baseline_failures = victim.read(baseline_keys, baseline_set)
        after = node.metrics().hits()
        baseline = {
            "reads": len(baseline_latencies), "failures": baseline_failures,
            "nvme_hits": int(after["nvme"] - before["nvme"]), "ram_hits": int(after["ram"] - before["ram"]),
            **latency_summary(baseline_latencies),
        }

        # The flood: strata bench GET as tenant A. Its timed part begins with its first GET.
        gets_before = node.metrics().value("strata_requests_total", op="get")
        flood_log = folder / "flood.log"
        with open(flood_log, "wb") as out:
            flood = subprocess.Popen(
                [args.strata, "bench", "--node", node.address, "--token", node.flood_token, "--op", "get",
                 "--size", size_text(args.flood_size), "--batch", str(args.flood_batch),
                 "--connections", str(args.flood_connections), "--seconds", str(args.seconds), "--json"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until = time.monotonic() + 120
        while node.metrics().value("strata_requests_total", op="get") <= gets_before:
            if flood.poll() is not None or time.monotonic() > wait_until:
                raise RuntimeError(f"the flood never reached its GETs:\n{flood_log.read_text(errors='replace')}")
            time.sleep(0.02)
        flood_started = time.monotonic()
        time.sleep(args.warmup)

        # B reads its second set while the flood runs; each key's tier is taken just before.
        tiers = victim.tiers(flood_keys)
        before = node.metrics().hits()
        cpu_before, cpu_clock = process_cpu_seconds(node.process.pid), time.monotonic()
        flood_latencies, flood_failures = victim.read(
            flood_keys, flood_set, deadline=flood_started + args.seconds - 0.5)
        cpu_after, cpu_seconds = process_cpu_seconds(node.process.pid), time.monotonic() - cpu_clock
        after = node.metrics().hits()
        still_flooding = flood.poll() is None

        try:
            flood.wait(timeout=args.seconds + 60)
        except subprocess.TimeoutExpired:
            raise RuntimeError("the flood did not finish")
        flood_output = flood_log.read_text(errors="replace")
        if flood.returncode != 0:
            raise RuntimeError(f"strata bench exited with {flood.returncode}:\n{flood_output}")
        flood_result = json.loads(flood_output.strip().splitlines()[-1])

        reads = len(flood_latencies)
        victim_nvme = sum(1 for tier in tiers[:reads] if tier == 2)
        # The flood's GETs over B's reads: every hit but B's.
        flood_nvme = after["nvme"] - before["nvme"] - victim_nvme
        flood_all = (after["nvme"] + after["ram"]) - (before["nvme"] + before["ram"]) - reads
        flooded = {
            "reads": reads, "failures": flood_failures,
            "nvme_hits": victim_nvme, "ram_hits": sum(1 for tier in tiers[:reads] if tier == 1),
            "flood_still_running_at_end": still_flooding,
            **latency_summary(flood_latencies),
        }
        result: Dict[str, object] = {
            "round": number,
            "baseline": baseline,
            "flood": flooded,
            "flood_gbps": flood_result.get("gbps"),
            "flood_request_p50_ms": round(flood_result["p50_us"] / 1e3, 2) if flood_result.get("p50_us") else None,
            "flood_nvme_fraction": round(flood_nvme / flood_all, 3) if flood_all > 0 else None,
            "node_cpu_cores_during_flood": (
                round((cpu_after - cpu_before) / cpu_seconds, 2) if cpu_before is not None and cpu_after is not None
                and cpu_seconds > 0 else None),
        }
        return result
    except Exception:
        log(f"node log ({node.log_path}):\n{node.log_tail()}")
        raise
    finally:
        if flood is not None and flood.poll() is None:
            flood.terminate()
            try:
                flood.wait(timeout=10)
            except subprocess.TimeoutExpired:
                flood.kill()
                flood.wait()
        if victim is not None:
            victim.close()
        node.stop()
        shutil.rmtree(folder, ignore_errors=True)


# MARK: Report


def median_of(rounds: List[Dict[str, object]], *path: str) -> Optional[float]:
    values = []
    for result in rounds:
        value: object = result
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
            values.append(float(value))
    return round(statistics.median(values), 3) if values else None


def summarize(args: argparse.Namespace, rounds: List[Dict[str, object]]) -> Dict[str, object]:
    summary: Dict[str, object] = {
        "benchmark": "io_fairness",
        "rounds": len(rounds),
        "victim_blocks": args.victim_blocks, "victim_size": args.victim_size,
        "flood_size": args.flood_size, "flood_batch": args.flood_batch,
        "flood_connections": args.flood_connections, "flood_seconds": args.seconds,
        "ram": args.ram, "nvme": args.nvme,
    }
    for phase in ("baseline", "flood"):
        summary[phase] = {
            key: median_of(rounds, phase, key)
            for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "reads", "nvme_hits", "ram_hits", "failures")
        }
    for key in ("flood_gbps", "flood_request_p50_ms", "flood_nvme_fraction", "node_cpu_cores_during_flood"):
        summary[key] = median_of(rounds, key)
    base, flood = summary["baseline"], summary["flood"]
    summary["p50_ratio"] = round(flood["p50_ms"] / base["p50_ms"], 2) if base["p50_ms"] and flood["p50_ms"] else None
    summary["p99_ratio"] = round(flood["p99_ms"] / base["p99_ms"], 2) if base["p99_ms"] and flood["p99_ms"] else None
    summary["per_round"] = rounds
    return summary


def table(summary: Dict[str, object]) -> str:
    base, flood = summary["baseline"], summary["flood"]

    def cell(value: object) -> str:
        return "-" if value is None else (f"{value:.3f}" if isinstance(value, float) and value % 1 else f"{value:g}")

    rows = [("", "no flood", "with flood")]
    for key, name in (("p50_ms", "B GET p50 ms"), ("p90_ms", "B GET p90 ms"), ("p99_ms", "B GET p99 ms"),
                      ("max_ms", "B GET max ms"), ("reads", "B reads"), ("nvme_hits", "B NVMe hits"),
                      ("ram_hits", "B RAM hits"), ("failures", "B failed reads")):
        rows.append((name, cell(base[key]), cell(flood[key])))
    rows.append(("flood GB/s", "", cell(summary["flood_gbps"])))
    rows.append(("flood NVMe share", "", cell(summary["flood_nvme_fraction"])))
    rows.append(("node CPU cores", "", cell(summary["node_cpu_cores_during_flood"])))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"B ({summary['victim_size'] // KIB} KiB GETs, one at a time) against A's flood "
             f"({summary['flood_connections']} connections × {summary['flood_batch']} × "
             f"{summary['flood_size'] // MIB} MiB GETs); medians of {summary['rounds']} round(s)"]
    lines += ["  ".join(row[i].ljust(widths[i]) if i == 0 else row[i].rjust(widths[i]) for i in range(3))
              for row in rows]
    return "\n".join(lines)


# MARK: Main


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strata", default=str(REPO / ".build" / "release" / "strata"),
                        help="the strata binary (default: .build/release/strata)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, each on a fresh node; medians are reported")
    parser.add_argument("--seconds", type=float, default=20.0, help="the flood's timed part, seconds (default 20)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds between the flood's first GET and B's first (default 1)")
    parser.add_argument("--victim-blocks", type=int, default=400, help="B's blocks per phase (default 400)")
    parser.add_argument("--victim-size", type=parse_size, default=256 * KIB, help="B's block size (default 256KiB)")
    parser.add_argument("--flood-size", type=parse_size, default=2 * MIB, help="the flood's block size (default 2MiB)")
    parser.add_argument("--flood-batch", type=int, default=16, help="blocks per flood GET (default 16)")
    parser.add_argument("--flood-connections", type=int, default=8, help="flood connections (default 8)")
    parser.add_argument("--ram", default="auto",
                        help="RAM tier size; auto: the flood's bytes in flight + 64MiB (default auto)")
    parser.add_argument("--nvme", type=parse_size, default=4 * GIB, help="NVMe tier file size (default 4GiB)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument("--worker", metavar="DIR", help=argparse.SUPPRESS)  # set by supervise()
    args = parser.parse_args(argv)

    args.strata = str(Path(args.strata).resolve())
    if not os.access(args.strata, os.X_OK):
        parser.error(f"--strata {args.strata}: not an executable file")
    inflight = args.flood_connections * args.flood_batch * args.flood_size
    args.ram = inflight + 64 * MIB if args.ram == "auto" else parse_size(args.ram)
    working_set = 4 * inflight
    if working_set < 2 * args.ram:
        log(f"warning: the flood's working set ({working_set // MIB} MiB) is under twice the RAM tier "
            f"({args.ram // MIB} MiB): many of its GETs may be RAM hits")
    needed = working_set + 3 * args.ram + 2 * args.victim_blocks * (args.victim_size + 4 * KIB)
    if needed > args.nvme:
        parser.error(f"--nvme {size_text(args.nvme)}: the run stores about {needed // MIB} MiB; give more")

    if args.worker is None:
        return supervise(argv if argv is not None else sys.argv[1:])

    # The worker: SIGTERM (from the supervisor) stops the run like Ctrl-C: the round's node and
    # flood are stopped and its folder removed.
    signal.signal(signal.SIGTERM, _interrupt)
    workspace = Path(args.worker)
    rounds: List[Dict[str, object]] = []
    for number in range(1, args.rounds + 1):
        began = time.monotonic()
        try:
            result = run_round(args, workspace / f"round-{number}", number)
        except KeyboardInterrupt:
            return 130
        rounds.append(result)
        base, flood = result["baseline"], result["flood"]
        log(f"round {number}: B p50/p99 {base['p50_ms']:.2f}/{base['p99_ms']:.2f} ms alone, "
            f"{flood['p50_ms']:.2f}/{flood['p99_ms']:.2f} ms under the flood ({flood['reads']} reads, "
            f"{flood['nvme_hits']} from NVMe); flood {result['flood_gbps']} GB/s; "
            f"{time.monotonic() - began:.0f} s")

    summary = summarize(args, rounds)
    if not args.json_only:
        print(table(summary))
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0


def supervise(argv: Sequence[str]) -> int:
    """Runs the benchmark in a child process in a session of its own, and afterwards stops
    whatever is left in that session (the node, the flood) and removes the temporary folder, even
    when the child died without cleaning up (a crash in the client library, a SIGKILL)."""
    workspace = tempfile.mkdtemp(prefix="strata-io-fairness-", dir="/var/tmp")
    signal.signal(signal.SIGTERM, _interrupt)
    child: Optional[subprocess.Popen] = None
    try:
        child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv, "--worker", workspace],
                                 start_new_session=True)
        child.wait()
    except KeyboardInterrupt:
        log("interrupted: stopping the node and the flood")
        return 130
    finally:
        if child is not None:
            _stop_group(child)
        shutil.rmtree(workspace, ignore_errors=True)
    if child.returncode < 0:
        log(f"the benchmark process died of signal {-child.returncode}; its node and flood were stopped")
        return 1
    return child.returncode


def _stop_group(child: subprocess.Popen) -> None:
    """SIGTERM to the child's session (a graceful stop, up to 40 s), then SIGKILL to what is left."""
    for sig, grace in ((signal.SIGTERM, 40.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if child.poll() is not None and not _group_alive(child.pid):
                return
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


if __name__ == "__main__":
    sys.exit(main())
