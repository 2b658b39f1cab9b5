"""The same-host path through the C ABI: a client on the node's machine reaches it over its Unix
socket, and blocks read into or written from the client's shared memory move through it (the
node's STAT counts them); a client that declines stays on TCP."""

import json
import os

import numpy as np

from strata_kv import StrataStore


def counters(store):
    return json.loads(store.stat())


def test_shared_memory_round_trip_is_byte_exact_and_moves_through_the_region(address):
    sizes = [1, 4096, 100_000, 1 << 20] + [256 << 10] * 16
    total = sum(sizes)
    with StrataStore(node=address, connections=2, timeout_ms=10000, shared_memory_bytes=32 << 20) as store:
        shared = store.shared_memory()
        assert shared is not None and len(shared) >= 32 << 20
        before = counters(store)
        region = np.frombuffer(shared, dtype=np.uint8)
        rng = np.random.default_rng(7)
        names = [os.urandom(32) for _ in sizes]
        sources, destinations, offset = [], [], 0
        for size in sizes:
            region[offset:offset + size] = rng.integers(0, 256, size=size, dtype=np.uint8)
            sources.append(shared[offset:offset + size])
            destinations.append(shared[(16 << 20) + offset:(16 << 20) + offset + size])
            offset += size
        assert store.put_from(names, sources) == [0] * len(sizes)
        assert store.get_into(names, destinations) == sizes
        assert np.array_equal(region[:total], region[16 << 20:(16 << 20) + total])
        after = counters(store)
        assert after["same_host_connections_open"] >= 2
        assert after["same_host_put_bytes"] - before["same_host_put_bytes"] == total
        assert after["same_host_get_bytes"] - before["same_host_get_bytes"] == total
        # Through the region, not the socket's stream: at least one PUT and one GET batch.
        assert after["same_host_region_requests"] - before["same_host_region_requests"] >= 2


def test_other_memory_uses_the_unix_socket_stream(address):
    with StrataStore(node=address, connections=1, timeout_ms=10000) as store:
        assert store.shared_memory() is None
        before = counters(store)
        name, block = os.urandom(32), np.random.default_rng(8).integers(0, 256, size=300_000, dtype=np.uint8)
        assert store.put_from([name], [block]) == [0]
        back = np.zeros_like(block)
        assert store.get_into([name], [back]) == [block.nbytes]
        assert np.array_equal(back, block)
        after = counters(store)
        assert after["same_host_get_bytes"] - before["same_host_get_bytes"] == block.nbytes
        assert after["same_host_region_requests"] == before["same_host_region_requests"]


def test_a_client_that_declines_stays_on_tcp(address):
    with StrataStore(node=address, connections=1, timeout_ms=10000) as watcher:
        before = counters(watcher)
        with StrataStore(node=address, connections=3, timeout_ms=10000, same_host=False,
                         shared_memory_bytes=1 << 20) as store:
            shared = store.shared_memory()
            shared[:4096] = os.urandom(4096)
            name = os.urandom(32)
            assert store.put_from([name], [shared[:4096]]) == [0]
            assert store.get_into([name], [shared[8192:12288]]) == [4096]
            assert bytes(shared[:4096]) == bytes(shared[8192:12288])
            after = counters(watcher)
        assert after["same_host_connections_accepted"] == before["same_host_connections_accepted"]
        assert after["connections_accepted"] - before["connections_accepted"] >= 3
        assert after["same_host_get_bytes"] == before["same_host_get_bytes"]
