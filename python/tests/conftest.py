"""Real `strata serve` processes for the tests (strata_kv.local): one node, and a static cluster of
three. The `strata` binary is $STRATA_BIN, or the checkout's .build/release or .build/debug build
(`swift build` first)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from strata_kv.local import LocalNode, find_strata, free_port, wait_for  # noqa: F401 (wait_for: the tests)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "Tests" / "Fixtures"


def strata_binary() -> str:
    """$STRATA_BIN, else the checkout's debug build (what `swift build` made), else its release build."""
    for candidate in (REPO / ".build" / "debug" / "strata", REPO / ".build" / "release" / "strata"):
        if candidate.is_file():
            return find_strata(os.environ.get("STRATA_BIN") or str(candidate))
    try:
        return find_strata()
    except FileNotFoundError as error:
        pytest.exit(str(error), returncode=2)
        raise


def Node(**options) -> LocalNode:
    return LocalNode(binary=strata_binary(), **options)


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
