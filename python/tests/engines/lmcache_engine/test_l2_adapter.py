"""StrataL2Client inside LMCache's own native_plugin L2 adapter (lmcache 0.5.6, CPU torch).

The adapter is built exactly as `--l2-adapter '{"type":"native_plugin",...}'` builds it: LMCache
parses the JSON, imports strata_kv.lmcache, checks the client's methods and wraps it in its
NativeConnectorL2Adapter, whose demux thread drains our completions.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import time

import pytest

pytest.importorskip("lmcache")

import torch  # noqa: E402
from lmcache.v1.distributed.api import ObjectKey  # noqa: E402
from lmcache.v1.distributed.l2_adapters import create_l2_adapter  # noqa: E402
from lmcache.v1.distributed.l2_adapters.config import (  # noqa: E402
    add_l2_adapters_args,
    parse_args_to_l2_adapters_config,
)
from lmcache.v1.memory_management import MemoryFormat, MemoryObjMetadata, TensorMemoryObj  # noqa: E402

DEADLINE_S = 30.0
CHUNK = 64 * 1024


def l2_adapter(node_address: str, **params):
    parser = argparse.ArgumentParser()
    add_l2_adapters_args(parser)
    spec = {
        "type": "native_plugin",
        "module_path": "strata_kv.lmcache",
        "class_name": "StrataL2Client",
        "adapter_params": {"node": node_address, **params},
    }
    config = parse_args_to_l2_adapters_config(parser.parse_args(["--l2-adapter", json.dumps(spec)]))
    return create_l2_adapter(config.adapters[0])


def memory_object(data: torch.Tensor) -> TensorMemoryObj:
    raw = data.contiguous().view(torch.uint8).flatten().clone()
    meta = MemoryObjMetadata(torch.Size([raw.numel()]), torch.uint8, 0, raw.numel(), 1, fmt=MemoryFormat.KV_2LTD)
    return TensorMemoryObj(raw, meta, None)


def key(i: int, salt: str = "") -> ObjectKey:
    return ObjectKey(chunk_hash=i.to_bytes(8, "little") * 2, model_name="tiny/model", kv_rank=0, cache_salt=salt)


def wait_result(query, task_id, event_fd: int):
    """Polls LMCache's result query, sleeping on its event fd, until a result or the deadline."""
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        result = query(task_id)
        if result is not None:
            return result
        select.select([event_fd], [], [], 0.1)
    raise TimeoutError(f"task {task_id} did not complete within {DEADLINE_S} s")


def store(adapter, keys, objects):
    task = adapter.submit_store_task(keys, objects)
    end = time.monotonic() + DEADLINE_S
    done = {}
    while task not in done:
        assert time.monotonic() < end, "store did not complete"
        select.select([adapter.get_store_event_fd()], [], [], 0.1)
        done.update(adapter.pop_completed_store_tasks())
    return done[task]


def lookup(adapter, keys) -> list[int]:
    task = adapter.submit_lookup_and_lock_task(keys, {})
    found = wait_result(adapter.query_lookup_and_lock_result, task, adapter.get_lookup_and_lock_event_fd())
    adapter.submit_unlock([k for i, k in enumerate(keys) if i in set(found.get_indices_list())])
    return found.get_indices_list()


def load(adapter, keys, objects) -> list[int]:
    task = adapter.submit_load_task(keys, objects)
    return wait_result(adapter.query_load_result, task, adapter.get_load_event_fd()).get_indices_list()


@pytest.fixture
def adapter(strata_node):
    a = l2_adapter(strata_node.address)
    try:
        yield a
    finally:
        a.close()


def test_store_lookup_load_delete_round_trip(adapter):
    generator = torch.Generator().manual_seed(7)
    count = 64
    keys = [key(i) for i in range(count)]
    originals = [torch.randint(0, 256, (CHUNK,), dtype=torch.uint8, generator=generator) for _ in keys]
    result = store(adapter, keys, [memory_object(t) for t in originals])
    assert result >= 0  # L2StoreResult: success, bytes transferred
    assert int(result) == count * CHUNK

    missing = [key(1000 + i) for i in range(3)]
    mixed = [keys[0], missing[0], keys[1], keys[2], missing[1], keys[63], missing[2]]
    assert lookup(adapter, mixed) == [0, 2, 3, 5]

    destinations = [memory_object(torch.zeros(CHUNK, dtype=torch.uint8)) for _ in mixed]
    assert load(adapter, mixed, destinations) == [0, 2, 3, 5]
    expected = {0: originals[0], 2: originals[1], 3: originals[2], 5: originals[63]}
    for i, destination in enumerate(destinations):
        if i in expected:
            assert torch.equal(destination.raw_data, expected[i])
        else:
            assert int(destination.raw_data.count_nonzero()) == 0  # a miss writes nothing

    adapter.delete(keys[:32])
    assert lookup(adapter, keys) == list(range(32, 64))


def test_salted_keys_are_separate_and_sizes_must_match(adapter):
    plain, salted = key(1), key(1, salt="tenant-b")
    data = torch.arange(CHUNK, dtype=torch.int32).view(torch.uint8)[:CHUNK]
    store(adapter, [plain], [memory_object(data)])
    assert lookup(adapter, [plain, salted]) == [0]
    # An object of another size is not this chunk: the load reports it failed.
    bigger = memory_object(torch.zeros(2 * CHUNK, dtype=torch.uint8))
    assert load(adapter, [plain], [bigger]) == []


def test_node_down_fails_operations_without_hanging(strata_node):
    adapter = l2_adapter(strata_node.address, timeout_ms=1000)
    try:
        keys = [key(i) for i in range(4)]
        store(adapter, keys, [memory_object(torch.ones(CHUNK, dtype=torch.uint8)) for _ in keys])
        strata_node.stop()
        assert lookup(adapter, keys) == []
        assert load(adapter, keys, [memory_object(torch.zeros(CHUNK, dtype=torch.uint8)) for _ in keys]) == []
        assert store(adapter, [key(9)], [memory_object(torch.ones(CHUNK, dtype=torch.uint8))]) < 0
        assert adapter.report_status()["is_healthy"]
    finally:
        adapter.close()


def test_unreachable_node_is_a_clear_error_at_creation(tmp_path):
    from strata_node import StrataNode

    node = StrataNode()
    address = node.address
    node.remove()
    with pytest.raises(Exception, match="(?i)unavailable|connect"):
        l2_adapter(address, timeout_ms=1000)


def test_event_fd_and_drain_contract(strata_node):
    """The raw client: ids at once, readable event fd, one completion per submission."""
    from strata_kv.lmcache import StrataL2Client

    client = StrataL2Client(node=strata_node.address)
    try:
        buffer = bytearray(os.urandom(4096))
        back = bytearray(4096)
        ids = [
            client.submit_batch_set(["a@1"], [memoryview(buffer)]),
        ]
        drained = drain(client, len(ids))
        assert drained == [(ids[0], True, "", [True])]
        # Submissions in flight together complete in any order: no delete among them.
        ids = [
            client.submit_batch_exists(["a@1", "b@1"]),
            client.submit_batch_get(["a@1", "b@1"], [memoryview(back), memoryview(bytearray(4096))]),
        ]
        by_id = {d[0]: d for d in drain(client, 2)}
        assert by_id[ids[0]][1:] == (True, "", [True, False])
        assert by_id[ids[1]][1] is False and by_id[ids[1]][3] == [True, False]
        assert back == buffer
        deleted = client.submit_batch_delete(["a@1", "b@1"])
        assert [(d[0], d[3][0]) for d in drain(client, 1)] == [(deleted, True)]
    finally:
        client.close()


def drain(client, count: int):
    out = []
    end = time.monotonic() + DEADLINE_S
    while len(out) < count:
        assert time.monotonic() < end, f"only {len(out)} of {count} completions"
        select.select([client.event_fd()], [], [], 0.1)
        out.extend(client.drain_completions())
    return out
