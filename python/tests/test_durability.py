"""Leases under eviction pressure, corrupt data on disk, a node that goes away."""

import asyncio
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from strata_kv import StrataError, StrataStore

from conftest import Node, wait_for

BLOCK = 1 << 20


def data(count, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, BLOCK, dtype=np.uint8) for _ in range(count)]


@pytest.fixture
def small_node():
    started = Node(ram="16MiB", nvme="32MiB", config="nvme:\n  region_size: 8MiB\n")
    yield started
    started.remove()


def test_a_lease_pins_blocks_through_eviction_pressure(small_node):
    with StrataStore(node=small_node.address, timeout_ms=20000) as store:
        leased_keys, leased = [os.urandom(32) for _ in range(4)], data(4, 1)
        plain_keys = [os.urandom(32) for _ in range(4)]
        assert store.put_from(leased_keys, leased) == [0] * 4
        assert store.put_from(plain_keys, data(4, 2)) == [0] * 4
        lease = store.lookup(leased_keys, lease_ms=60_000)
        assert lease.leading_run == 4 and lease.lease != 0
        # Ten times the store's capacity, written after the lease was taken.
        for round in range(40):
            store.put_from([os.urandom(32) for _ in range(4)], data(4, 100 + round))
        # The blocks nobody leased were evicted (the pressure was real) …
        assert store.lookup(plain_keys, sizes=False).tiers.count(0) >= 1
        # … the leased ones are all there, byte for byte, through the read that names the lease.
        out = [np.zeros(BLOCK, np.uint8) for _ in range(4)]
        assert store.get_into(leased_keys, out, lease=lease.lease) == [BLOCK] * 4
        assert all(np.array_equal(a, b) for a, b in zip(out, leased))


def test_corrupt_data_on_disk_is_never_returned():
    node = Node(ram="64MiB", nvme="256MiB", config="nvme:\n  region_size: 8MiB\n")
    try:
        keys = [os.urandom(32) for _ in range(48)]
        blocks = [np.random.default_rng(50 + i).integers(0, 256, 256 << 10, dtype=np.uint8) for i in range(48)]
        with StrataStore(node=node.address) as store:
            assert store.put_from(keys, blocks) == [0] * 48
        assert node.stop() == 0  # graceful: RAM blocks are written to NVMe
        store_file = next(Path(node.directory, "data").rglob("*.dat"))
        flipped = 0
        with open(store_file, "r+b") as handle:
            size = store_file.stat().st_size
            for offset in range(10_000, min(size, 12 << 20), 1 << 20):
                handle.seek(offset)
                byte = handle.read(1)
                handle.seek(offset)
                handle.write(bytes([byte[0] ^ 0x40]))
                flipped += 1
        assert flipped >= 5
        node.start()
        with StrataStore(node=node.address) as store:
            out = [np.zeros(256 << 10, np.uint8) for _ in range(48)]
            results = store.get_into(keys, out)
            intact = 0
            for result, got, block in zip(results, out, blocks):
                if result >= 0:
                    assert result == len(block) and np.array_equal(got, block), "a corrupt block was returned"
                    intact += 1
            assert intact < 48, "no flipped byte hit a block: the test proved nothing"
            assert intact >= 48 - flipped
            assert json.loads(store.stat()).get("corrupt_dropped", 0) >= 0
    finally:
        node.remove()


def test_node_down_is_a_clear_error():
    node = Node()
    try:
        store = StrataStore(node=node.address, timeout_ms=2000)
        key = os.urandom(32)
        assert store.put_from([key], [b"x" * 100]) == [0]
        node.stop(signal.SIGKILL)
        with pytest.raises(StrataError) as error:
            store.get_into([key], [bytearray(100)])
        assert error.value.code in (9, 10, 7) and node.address.split(":")[1] in str(error.value)
        assert store.batch_get_into([key], [bytearray(100)])[0] in (-900, -1)
        # A submission fails through its completion, with the code and the message.
        ticket = store.submit_get([key], [bytearray(100)])
        completion = wait_for(lambda: next(iter(store.poll_completions()), None), what="the failed completion")
        assert completion.ticket == ticket and completion.status < 0 and completion.results == []
        assert completion.error is not None and completion.error.code in (7, 9, 10)
        assert node.address.split(":")[1] in completion.error.message

        async def awaited():
            await store.aget_into([key], [bytearray(100)])

        with pytest.raises(StrataError) as awaited_error:
            asyncio.run(awaited())
        assert awaited_error.value.code in (7, 9, 10)
        store.close()
    finally:
        node.remove()
