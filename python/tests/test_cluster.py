"""A static cluster of three nodes, named by its seeds: routing, every call, async, a node down."""

import asyncio
import json
import os
import signal

import numpy as np

from strata_kv import StrataStore

from conftest import wait_for


def seeds(cluster):
    return ",".join(node.address for node in cluster)


def test_round_trips_through_the_cluster(cluster):
    with StrataStore(seeds=seeds(cluster), connections=2, timeout_ms=10000) as store:
        keys = [os.urandom(32) for _ in range(60)]
        data = [np.random.default_rng(i).integers(0, 256, 40000 + i, dtype=np.uint8) for i in range(60)]
        assert store.put_from(keys, data) == [0] * 60
        result = store.lookup(keys, lease_ms=5000)
        assert result.leading_run == 60 and result.sizes == [len(d) for d in data]
        out = [np.zeros(len(d), np.uint8) for d in data]
        assert store.get_into(keys, out, lease=result.lease) == [len(d) for d in data]
        assert all(np.array_equal(a, b) for a, b in zip(out, data))
        # Scattered reads and ranges are routed the same way.
        halves = [[np.zeros(20000, np.uint8), np.zeros(len(d) - 20000, np.uint8)] for d in data[:10]]
        assert store.get_into(keys[:10], halves) == [len(d) for d in data[:10]]
        assert all(np.array_equal(np.concatenate(h), d) for h, d in zip(halves, data))
        part = np.zeros(100, np.uint8)
        assert store.get_range_into(keys[5], part, 1000, 100) == 100 and np.array_equal(part, data[5][1000:1100])

        async def many():
            return await asyncio.gather(*[store.aget_into([k], [o]) for k, o in zip(keys, out)])

        assert asyncio.run(many()) == [[len(d)] for d in data]
        assert store.put("cluster/string", b"abc") == 0 and store.get("cluster/string") == b"abc"
        assert store.remove(keys[:5]) == [0] * 5
        assert store.lookup(keys[:5], sizes=False).tiers == [0] * 5
        # Every node took part.
        for node in cluster:
            with StrataStore(node=node.address) as one:
                assert json.loads(one.stat()).get("put_blocks", 0) > 0


def stored_blocks(cluster):
    total = 0
    for node in cluster:
        with StrataStore(node=node.address) as one:
            total += json.loads(one.stat()).get("put_blocks", 0)
    return total


def test_zz_a_node_down_the_replicas_answer(cluster):
    with StrataStore(seeds=seeds(cluster), timeout_ms=3000) as store:
        keys = [os.urandom(32) for _ in range(30)]
        data = [np.random.default_rng(200 + i).integers(0, 256, 30000, dtype=np.uint8) for i in range(30)]
        before = stored_blocks(cluster)
        assert store.put_from(keys, data) == [0] * 30
        # Copies to the second owner are sent in the background: wait until all 60 have landed.
        wait_for(lambda: stored_blocks(cluster) - before >= 60, what="the replica copies")
        cluster[1].stop(signal.SIGKILL)
        out = [np.zeros(30000, np.uint8) for _ in range(30)]
        assert store.get_into(keys, out) == [30000] * 30
        assert all(np.array_equal(a, b) for a, b in zip(out, data))
