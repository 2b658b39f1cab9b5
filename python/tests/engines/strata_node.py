"""A real `strata serve` on a free loopback port, for the engine tests.

The binary is $STRATA_BIN, else the repository's .build/debug/strata (scripts/test-engines.sh
builds it). Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def strata_binary() -> Path:
    configured = os.environ.get("STRATA_BIN")
    if configured:
        return Path(configured)
    for flavour in ("debug", "release"):
        candidate = REPO / ".build" / flavour / "strata"
        if candidate.exists():
            return candidate
    raise FileNotFoundError("no strata binary: run `swift build --product strata` or set STRATA_BIN")


class StrataNode:
    """One node: RAM tier (and a small NVMe tier) under a temporary data folder."""

    def __init__(
        self, data_dir: Path, ram: str = "512MiB", nvme: str = "1GiB", fault_injection: bool = False, ram_only: bool = False
    ) -> None:
        self.data_dir = data_dir
        self.ram = ram
        self.nvme = nvme
        self.fault_injection = fault_injection  # strata serve --fault-injection: flip_bit works
        self.ram_only = ram_only  # nvme.admission: never (no copy written behind to disk)
        self.address: str | None = None
        self.admin: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "node.log"

    def start(self, listen: str = "127.0.0.1:0", deadline_s: float = 60.0) -> "StrataNode":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        extra = ["--fault-injection"] if self.fault_injection else []
        if self.ram_only:
            config = self.data_dir / "node.yaml"
            config.write_text("nvme:\n  admission: never\n")
            extra += ["--config", str(config)]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                str(strata_binary()),
                "serve",
                "--listen",
                listen,
                "--admin",
                "127.0.0.1:0",
                "--data-dir",
                str(self.data_dir / "data"),
                "--ram",
                self.ram,
                "--nvme",
                self.nvme,
                "--ram-unlocked",
            ]
            + extra,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            text = self.log_path.read_text(errors="replace")
            listening = re.findall(r" listening on (\S+)$", text, re.M)
            admin = re.findall(r"admin API at http://(\S+) ", text)
            if listening and admin:
                self.address, self.admin = listening[-1], admin[-1]
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"strata serve exited {self.process.returncode}:\n{text}")
            time.sleep(0.05)
        raise TimeoutError(f"strata serve did not listen within {deadline_s} s")

    def stop(self, deadline_s: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def flip_bit(self, key: bytes) -> None:
        """Flips one bit of the block's RAM copy, its stored checksum unchanged (a memory fault):
        the node then answers a read of it as corrupt. Needs fault_injection."""
        request = urllib.request.Request(
            f"http://{self.admin}/v1/debug/flip-bit", data=json.dumps({"key": key.hex()}).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, response.read()

    def metrics(self) -> dict[str, float]:
        """The node's Prometheus metrics, name{labels} -> value."""
        with urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=10) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def blocks_stored(self) -> int:
        """Distinct blocks the node holds. Write-behind keeps a block in RAM after writing it to
        NVMe, so it is counted in both tiers' `strata_tier_blocks`: each tier's count is a lower
        bound on the distinct blocks (RAM's is exact until RAM evicts, NVMe's once written behind),
        and the larger of the two is what the node holds in these tests."""
        m = self.metrics()

        def tier(name: str) -> int:
            return int(sum(v for k, v in m.items() if k.startswith(f'strata_tier_blocks{{tier="{name}"')))

        return max(tier("ram"), tier("nvme"))

    def bytes_served(self) -> int:
        """Payload bytes the node sent for GETs, over every transport."""
        return int(sum(v for k, v in self.metrics().items() if k.startswith('strata_transfer_bytes_total{op="get"')))

    def wait_for(self, condition, what: str, deadline_s: float = 30.0):
        end = time.monotonic() + deadline_s
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > end:
                raise TimeoutError(f"{what} not reached within {deadline_s} s")
            time.sleep(0.05)
