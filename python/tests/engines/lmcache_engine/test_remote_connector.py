"""StrataConnectorAdapter as an LMCache remote storage plugin, driven through LMCache's own
RemoteBackend and LocalCPUBackend (lmcache 0.5.6, CPU torch): the configuration an operator
writes (remote_storage_plugins + extra_config) is the one used here.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

pytest.importorskip("lmcache")

import torch  # noqa: E402
from lmcache.utils import CacheEngineKey  # noqa: E402
from lmcache.v1.config import LMCacheEngineConfig  # noqa: E402
from lmcache.v1.memory_management import MemoryFormat  # noqa: E402
from lmcache.v1.metadata import LMCacheMetadata  # noqa: E402
from lmcache.v1.storage_backend.connector import CreateConnector  # noqa: E402
from lmcache.v1.storage_backend.local_cpu_backend import LocalCPUBackend  # noqa: E402
from lmcache.v1.storage_backend.remote_backend import RemoteBackend  # noqa: E402

from strata_kv import StrataStore  # noqa: E402
from strata_kv.keys import lmcache_key  # noqa: E402

CHUNK_TOKENS = 256
LAYERS, HEADS, HEAD_SIZE = 2, 4, 32
FULL_SHAPE = torch.Size([2, LAYERS, CHUNK_TOKENS, HEADS * HEAD_SIZE])


def engine_config(address: str, **more):
    extra = {
        "remote_storage_plugin.strata.module_path": "strata_kv.lmcache",
        "remote_storage_plugin.strata.class_name": "StrataConnectorAdapter",
        "strata.node": address,
        "strata.timeout_ms": 2000,
        **more,
    }
    return LMCacheEngineConfig.from_defaults(
        chunk_size=CHUNK_TOKENS,
        local_cpu=True,
        max_local_cpu_size=0.2,
        remote_storage_plugins=["strata"],
        remote_serde="naive",
        extra_config=extra,
    )


def metadata() -> LMCacheMetadata:
    return LMCacheMetadata(
        model_name="tiny/model",
        world_size=1,
        local_world_size=1,
        worker_id=0,
        local_worker_id=0,
        kv_dtype=torch.float16,
        kv_shape=(LAYERS, 2, CHUNK_TOKENS, HEADS, HEAD_SIZE),
    )


class Backends:
    """LMCache's LocalCPUBackend and RemoteBackend (plugin "strata") with a running event loop."""

    def __init__(self, address: str, **extra) -> None:
        self.config = engine_config(address, **extra)
        self.metadata = metadata()
        self.local = LocalCPUBackend(self.config, self.metadata)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.remote = RemoteBackend(self.config, self.metadata, self.loop, self.local, "cpu", plugin_name="strata")

    def chunk(self, tokens: int, seed: int):
        obj = self.local.allocate(torch.Size([2, LAYERS, tokens, HEADS * HEAD_SIZE]), torch.float16, MemoryFormat.KV_2LTD)
        generator = torch.Generator().manual_seed(seed)
        obj.tensor.copy_(torch.randn(obj.tensor.shape, generator=generator).to(torch.float16))
        return obj

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def close(self) -> None:
        self.remote.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(params=[True, False], ids=["with-chunk-header", "no-chunk-header"])
def backends(strata_node, request):
    b = Backends(strata_node.address, save_chunk_meta=request.param)
    try:
        yield b
    finally:
        b.close()


def key(i: int) -> CacheEngineKey:
    return CacheEngineKey("tiny/model", 1, 0, 0x5EED0000 + i, torch.float16)


def wait_until(condition, what: str, deadline_s: float = 30.0):
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, f"{what} not reached within {deadline_s} s"
        time.sleep(0.05)


def test_plugin_round_trip_through_remote_backend(backends):
    assert "StrataRemoteConnector" in repr(backends.remote.connection)
    count = 12
    keys = [key(i) for i in range(count)]
    # The last chunk is partial (100 tokens), as LMCache stores a prompt's tail.
    objects = [backends.chunk(CHUNK_TOKENS if i < count - 1 else 100, seed=i) for i in range(count)]
    originals = [o.tensor.clone() for o in objects]
    backends.remote.batched_submit_put_task(keys, objects)
    # LMCache's connector wrapper releases each put object once it is sent.
    wait_until(lambda: backends.remote.batched_contains(keys) == count, "all chunks stored")

    missing = key(999)
    assert backends.remote.contains(keys[3]) and not backends.remote.contains(missing)
    assert backends.remote.batched_contains(keys[:5] + [missing] + keys[5:]) == 5
    assert backends.run(backends.remote.batched_async_contains("lookup-1", keys + [missing], pin=True)) == count

    got = backends.remote.batched_get_blocking(keys + [missing])
    assert got[-1] is None
    for obj, original in zip(got[:-1], originals):
        assert obj is not None
        # The engine reads the object's tensor; without chunk headers LMCache itself reshapes a
        # partial chunk (reshape_partial_chunk), which updates the tensor, not get_shapes().
        assert obj.tensor.shape == original.shape
        assert torch.equal(obj.tensor, original)
        obj.ref_count_down()

    prefix = backends.run(backends.remote.batched_get_non_blocking("lookup-2", keys[:3] + [missing] + keys[3:5]))
    assert [torch.equal(o.tensor, originals[i]) for i, o in enumerate(prefix)] == [True, True, True]
    for obj in prefix:
        obj.ref_count_down()

    assert backends.remote.remove(keys[0])
    assert not backends.remote.contains(keys[0])
    assert backends.remote.get_blocking(keys[0]) is None


def test_block_that_is_not_a_chunk_of_this_layout_is_never_returned(backends, strata_node):
    # Bytes under the chunk's key that do not start with a matching LMCache header (another
    # layout, or anything else) are rejected, not handed to the engine as KV.
    with StrataStore(node=strata_node.address) as store:
        raw = bytearray(FULL_SHAPE.numel() * 2 + 128)  # a full fp16 chunk and more
        raw[:16] = b"\xff" * 16
        assert store.put_from([lmcache_key(key(77).to_string())], [raw]) == [0]
    assert backends.remote.contains(key(77))
    assert backends.remote.get_blocking(key(77)) is None


def test_strata_url_creates_the_connector(strata_node):
    config = engine_config("unused:1")  # the URL's address wins
    md = metadata()
    local = LocalCPUBackend(config, md)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        connector = CreateConnector(f"strata://{strata_node.address}?timeout_ms=3000", loop, local, config, md)
        assert "StrataRemoteConnector" in repr(connector)
        obj = local.allocate(FULL_SHAPE, torch.float16, MemoryFormat.KV_2LTD)
        obj.tensor.copy_(torch.linspace(-3, 3, FULL_SHAPE.numel()).reshape(FULL_SHAPE))
        expected = obj.tensor.clone()
        asyncio.run_coroutine_threadsafe(connector.put(key(5), obj), loop).result(timeout=30)
        back = asyncio.run_coroutine_threadsafe(connector.get(key(5)), loop).result(timeout=30)
        assert back is not None and torch.equal(back.tensor, expected)
        back.ref_count_down()
        asyncio.run_coroutine_threadsafe(connector.close(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def test_pinned_lookups_release_their_leases_and_ping_sees_a_stopped_node(strata_node):
    """batched_async_contains(pin=True) pins through a lease that the read of the same lookup id
    names and so releases: many lookups leave no lease behind (each used to keep two for 30 s, and
    a connection holds 1,024 at most). ping is a real round trip: 0 while the node serves, an
    error code once it is gone."""
    b = Backends(strata_node.address)
    try:
        keys = [key(200 + i) for i in range(3)]
        b.remote.batched_submit_put_task(keys, [b.chunk(CHUNK_TOKENS, seed=200 + i) for i in range(3)])
        wait_until(lambda: b.remote.batched_contains(keys) == 3, "chunks stored")
        for round_ in range(20):
            lookup = f"pinned-{round_}"
            assert b.run(b.remote.batched_async_contains(lookup, keys, pin=True)) == 3
            got = b.run(b.remote.batched_get_non_blocking(lookup, keys))
            assert len(got) == 3
            for obj in got:
                obj.ref_count_down()
        assert strata_node.metrics().get("strata_leases_active") == 0
        connector = b.remote.connection
        assert b.run(connector.ping()) == 0
        strata_node.stop()
        assert b.run(connector.ping()) != 0
    finally:
        b.close()
