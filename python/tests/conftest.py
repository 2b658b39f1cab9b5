"""Real `strata serve` processes for the tests: one node, a node with a small store (eviction), and a
static cluster of three. The `strata` binary is $STRATA_BINARY, or the checkout's .build/debug or
.build/release build (`swift build` first)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "Tests" / "Fixtures"


def strata_binary() -> str:
    configured = os.environ.get("STRATA_BINARY")
    if configured:
        return configured
    for folder in ("debug", "release"):
        path = REPO / ".build" / folder / "strata"
        if path.is_file():
            return str(path)
    pytest.exit("no strata binary: run `swift build` (or set STRATA_BINARY)", returncode=2)
    raise AssertionError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Node:
    """A `strata serve` process on loopback with its own data folder."""

    def __init__(self, listen: str = "127.0.0.1:0", peers: Optional[str] = None, ram: str = "1GiB",
                 nvme: str = "1GiB", config: str = "", directory: Optional[str] = None) -> None:
        self.directory = directory or tempfile.mkdtemp(prefix="strata-py-")
        self.listen, self.peers, self.ram, self.nvme = listen, peers, ram, nvme
        self.config = Path(self.directory) / "node.yaml"
        self.config.write_text("limits:\n  max_block_size: 4MiB\nadmin:\n  listen: 127.0.0.1:0\n" + config)
        self.process: Optional[subprocess.Popen] = None
        self.address = ""
        self.output: List[str] = []
        self.start()

    def start(self) -> None:
        listen = self.address or self.listen
        arguments = [strata_binary(), "serve", "--config", str(self.config), "--data-dir",
                     str(Path(self.directory) / "data"), "--listen", listen, "--ram", self.ram, "--nvme", self.nvme,
                     "--ram-unlocked"]
        if self.peers:
            arguments += ["--peers", self.peers]
        self.output = []
        process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   stdin=subprocess.DEVNULL)
        found = threading.Event()

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.output.append(line)
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
        process, self.process = self.process, None
        if process is None:
            return None
        process.send_signal(sig)
        try:
            return process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def node():
    started = Node()
    yield started
    started.remove()


@pytest.fixture(scope="session")
def address(node) -> str:
    return node.address


@pytest.fixture
def store(address):
    from strata_kv import StrataStore

    with StrataStore(node=address, connections=4, timeout_ms=10000) as opened:
        yield opened


@pytest.fixture(scope="session")
def cluster():
    ports = set()
    while len(ports) < 3:
        ports.add(free_port())
    addresses = [f"127.0.0.1:{port}" for port in sorted(ports)]
    peers = ",".join(addresses)
    nodes = []
    try:
        for listen in addresses:
            nodes.append(Node(listen=listen, peers=peers))
        yield nodes
    finally:
        for member in nodes:
            member.remove()


def wait_for(condition, timeout: float = 30.0, what: str = "condition"):
    """Polls ``condition`` until it returns something true (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
