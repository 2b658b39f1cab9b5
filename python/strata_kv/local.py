"""Local `strata serve` processes on loopback, for tests, the trace replay's capacity sweep and
benchmarks. Not needed to use a store: workers connect to nodes run as services (docs/deployment.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence, TypeVar

T = TypeVar("T")


def find_strata(explicit: Optional[str] = None) -> str:
    """The `strata` binary: ``explicit``, $STRATA_BIN, or the checkout's .build/release or .build/debug."""
    if explicit:
        return explicit
    configured = os.environ.get("STRATA_BIN")
    if configured:
        return configured
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "Package.swift").is_file():
            for folder in ("release", "debug"):
                path = parent / ".build" / folder / "strata"
                if path.is_file():
                    return str(path)
    found = shutil.which("strata")
    if found:
        return found
    raise FileNotFoundError("no strata binary: pass its path, set STRATA_BIN, or run `swift build`")


_next_port: List[int] = []
_next_port_lock = threading.Lock()


def free_port() -> int:
    """A loopback port that was free a moment ago, from below the kernel's ephemeral range.

    A port from inside it (what binding port 0 gives) can be taken, before a node binds it, as the
    source port of an outgoing connection: a peer reconnecting to a node not started yet does that.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            ephemeral_low = int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low, high = 10000, max(ephemeral_low, 20000)
    for _ in range(high - low):
        with _next_port_lock:
            if not _next_port:
                _next_port.append(low + (os.getpid() * 7919) % (high - low))
            port = _next_port[0]
            _next_port[0] = low if port + 1 >= high else port + 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free loopback port in {low}..{high - 1}")


def wait_for(condition: Callable[[], T], what: str = "condition", timeout: float = 30.0) -> T:
    """Polls ``condition`` until it returns something true (returned); TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class LocalNode:
    """A `strata serve` process on loopback with its own data folder (removed by ``remove``).

    ``config`` is appended to a base YAML configuration (the ``limits`` section: ``max_block_size``,
    None for the node's default, and any of ``limits``, such as ``{"idle_timeout": "100ms"}``; the
    admin API on a free port, at ``admin``). ``start`` waits (up to 120 s) for the "listening on" line.
    """

    def __init__(self, listen: str = "127.0.0.1:0", peers: Optional[str] = None, ram: str = "1GiB",
                 nvme: str = "1GiB", config: str = "", max_block_size: Optional[str] = "4MiB",
                 binary: Optional[str] = None, extra: Sequence[str] = (),
                 limits: Optional[Mapping[str, str]] = None) -> None:
        self.binary = find_strata(binary)
        self.directory = tempfile.mkdtemp(prefix="strata-py-")
        self.listen, self.peers, self.ram, self.nvme = listen, peers, ram, nvme
        self.extra = list(extra)
        self.config = Path(self.directory) / "node.yaml"
        all_limits = {**({"max_block_size": max_block_size} if max_block_size else {}), **(limits or {})}
        limit_lines = "".join(f"  {name}: {value}\n" for name, value in all_limits.items())
        self.config.write_text(("limits:\n" + limit_lines if limit_lines else "")
                               + "admin:\n  listen: 127.0.0.1:0\n" + config)
        self.process: Optional[subprocess.Popen] = None
        self.address = ""
        self.admin = ""
        self.output: List[str] = []
        try:
            self.start()
        except Exception:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise

    def start(self) -> None:
        """Starts the process (again, on the same address and data folder after ``stop``)."""
        arguments = [self.binary, "serve", "--config", str(self.config), "--data-dir",
                     str(Path(self.directory) / "data"), "--listen", self.address or self.listen, "--ram", self.ram,
                     "--nvme", self.nvme, "--ram-unlocked"]
        if self.peers:
            arguments += ["--peers", self.peers]
        arguments += self.extra
        self.output = []
        process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   stdin=subprocess.DEVNULL)
        found = threading.Event()

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.output.append(line)
                if line.startswith("strata admin API at "):
                    self.admin = line.split()[4].split("://", 1)[-1]
                if " listening on " in line and not found.is_set():
                    self.address = line.split()[-1]
                    found.set()
            found.set()

        threading.Thread(target=pump, daemon=True).start()
        if not found.wait(120) or not self.address or process.poll() is not None:
            process.kill()
            raise RuntimeError("strata serve did not start:\n" + "".join(self.output))
        self.process = process

    def stop(self, sig: int = signal.SIGTERM) -> Optional[int]:
        """Sends ``sig`` and waits (a minute, then SIGKILL); the exit status, None if not running."""
        process, self.process = self.process, None
        if process is None:
            return None
        process.send_signal(sig)
        try:
            return process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def metrics(self) -> dict:
        """The node's Prometheus metrics from its admin API, ``name{labels}`` -> value."""
        with urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=10) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def admin_post(self, path: str, body: Any) -> None:
        """POSTs ``body`` as JSON to the admin API (``/v1/debug/flip-bit`` needs ``--fault-injection``)."""
        request = urllib.request.Request(f"http://{self.admin}{path}", data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"POST {path} answered {response.status}: {response.read()!r}")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "LocalNode":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
