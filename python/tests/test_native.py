"""The native API against a real node: every method, byte-exact round trips, scatter/gather,
ranges, sizes, leases, missing keys, wrong sizes and bad buffers."""

import array
import ctypes
import os

import numpy as np
import pytest

from strata_kv import LookupResult, StrataError, StrataStore
from strata_kv.store import BUFFER_OVERFLOW, INVALID_PARAMS, OBJECT_NOT_FOUND


def keys(count):
    return [os.urandom(32) for _ in range(count)]


def blocks(count, size=64 << 10, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=size + index, dtype=np.uint8) for index in range(count)]


def test_numpy_round_trip_is_byte_exact(store):
    names, data = keys(16), blocks(16, 256 << 10, seed=1)
    assert store.put_from(names, data) == [0] * 16
    out = [np.zeros(len(block) + 100, dtype=np.uint8) for block in data]
    assert store.get_into(names, out) == [len(block) for block in data]
    for block, got in zip(data, out):
        assert np.array_equal(got[:len(block)], block)
        assert not got[len(block):].any()


def test_other_dtypes_and_buffer_kinds(store):
    name = keys(5)
    floats = np.random.default_rng(2).standard_normal((64, 128)).astype(np.float16)
    assert store.put_from([name[0]], [floats]) == [0]
    back = np.empty_like(floats)
    assert store.get_into([name[0]], [back]) == [floats.nbytes]
    assert np.array_equal(back, floats)
    # bytes, bytearray, memoryview, array.array and ctypes arrays as sources and destinations.
    payload = os.urandom(5000)
    assert store.put_from(name[1:4], [payload, bytearray(payload), memoryview(payload)]) == [0, 0, 0]
    for destination in (bytearray(5000), array.array("B", bytes(5000)), (ctypes.c_char * 5000)()):
        assert store.get_into([name[1]], [destination]) == [5000]
        assert bytes(destination) == payload


def test_torch_cpu_tensor_round_trip(store):
    torch = pytest.importorskip("torch")
    name = keys(1)
    tensor = torch.randn(32, 256, dtype=torch.bfloat16)
    assert store.put_from(name, [tensor]) == [0]
    back = torch.empty_like(tensor)
    assert store.get_into(name, [back]) == [tensor.numel() * tensor.element_size()]
    assert torch.equal(back, tensor)
    with pytest.raises(ValueError, match="not contiguous"):
        store.get_into(name, [torch.empty(256, 32, dtype=torch.bfloat16).t()])


def test_already_present_counts_as_success(store):
    name, data = keys(1), blocks(1)
    assert store.put_from(name, data) == [0]
    assert store.put_from(name, data) == [0]


def test_missing_keys(store):
    present, missing = keys(1), keys(2)
    store.put_from(present, blocks(1))
    out = [np.zeros(70000, np.uint8) for _ in range(3)]
    assert store.get_into([missing[0], present[0], missing[1]], out)[0::2] == [OBJECT_NOT_FOUND] * 2
    assert store.remove(missing) == [OBJECT_NOT_FOUND] * 2


def test_scattered_put_and_get(store):
    """One block gathered from K and V pieces of a pool, read back scattered into another pool."""
    pool = np.random.default_rng(3).integers(0, 256, size=1 << 20, dtype=np.uint8)
    name = keys(4)
    base = pool.ctypes.data
    layout = [[(base + 0, 4096), (base + 500_000, 8192), (base + 900_000, 1000)] for _ in range(4)]
    for index, parts in enumerate(layout):
        layout[index] = [(address + index * 16384, length) for address, length in parts]
    assert store.put_from(name, layout) == [0] * 4
    # Stored: the concatenation of the pieces.
    whole = np.zeros(13288, np.uint8)
    assert store.get_into(name[2:3], [whole]) == [13288]
    expected = np.concatenate([pool[offset + 2 * 16384:offset + 2 * 16384 + length]
                               for offset, length in ((0, 4096), (500_000, 8192), (900_000, 1000))])
    assert np.array_equal(whole, expected)
    # Scattered back into a second pool at other places; buffers may be mixed with (address, length).
    target = np.zeros(1 << 20, np.uint8)
    t = target.ctypes.data
    plan = [[(t + 700_000 + index * 20000, 1000), (t + index * 20000, 12288)] for index in range(4)]
    assert store.get_into(name, plan) == [13288] * 4
    for index in range(4):
        got = np.concatenate([target[700_000 + index * 20000:700_000 + index * 20000 + 1000],
                              target[index * 20000:index * 20000 + 12288]])
        source = np.concatenate([pool[offset + index * 16384:offset + index * 16384 + length]
                                 for offset, length in ((0, 4096), (500_000, 8192), (900_000, 1000))])
        assert np.array_equal(got, source)
    halves = [np.zeros(6644, np.uint8), np.zeros(6644, np.uint8)]
    assert store.get_into(name[:1], [halves]) == [13288]
    assert np.array_equal(np.concatenate(halves), np.concatenate(
        [pool[offset:offset + length] for offset, length in ((0, 4096), (500_000, 8192), (900_000, 1000))]))


def test_wrong_sizes_are_rejected(store):
    name, data = keys(1), blocks(1, 10000)
    store.put_from(name, data)
    assert store.get_into(name, [np.zeros(9999, np.uint8)]) == [BUFFER_OVERFLOW]
    assert store.get_into(name, [[np.zeros(5000, np.uint8), np.zeros(5001, np.uint8)]]) == [INVALID_PARAMS]
    assert store.get_into(name, [[np.zeros(5000, np.uint8), np.zeros(4999, np.uint8)]]) == [INVALID_PARAMS]
    untouched = np.full(9999, 7, np.uint8)
    store.get_into(name, [untouched])
    assert (untouched == 7).all()


def test_get_range_into(store):
    name, data = keys(1), blocks(1, 100_000)
    store.put_from(name, data)
    out = np.zeros(3000, np.uint8)
    assert store.get_range_into(name[0], out, 12_345, 3000) == 3000
    assert np.array_equal(out, data[0][12_345:15_345])
    assert store.get_range_into(name[0], out, 99_000, 3000) == INVALID_PARAMS
    with pytest.raises(ValueError, match="cannot hold"):
        store.get_range_into(name[0], out, 0, 4000)


def test_lookup_tiers_sizes_and_leading_run(store):
    name, data = keys(6), blocks(6, 30000)
    store.put_from(name[:3] + name[4:], data[:3] + data[4:])
    result = store.lookup(name)
    assert isinstance(result, LookupResult)
    assert result.leading_run == 3 and result.lease == 0
    assert [tier != 0 for tier in result.tiers] == [True, True, True, False, True, True]
    assert result.sizes == [30000, 30001, 30002, 0, 30004, 30005]
    assert store.lookup(name, sizes=False).sizes == []
    assert store.lookup([]).leading_run == 0


def test_lease_is_granted_and_named_by_the_read(store):
    name, data = keys(3), blocks(3)
    store.put_from(name, data)
    result = store.lookup(name, lease_ms=10_000)
    assert result.leading_run == 3 and result.lease != 0
    out = [np.zeros(len(block), np.uint8) for block in data]
    assert store.get_into(name, out, lease=result.lease) == [len(block) for block in data]
    assert all(np.array_equal(a, b) for a, b in zip(out, data))


def test_the_read_naming_a_lease_releases_it(address):
    """The node keeps a lease with its connection: with a pool of 4, the GET must go where the
    LOOKUP went, or leases pile up (pinning blocks) until they expire."""
    import json

    with StrataStore(node=address, connections=4) as store:
        name, data = keys(2), blocks(2)
        store.put_from(name, data)
        before = json.loads(store.stat())["leases_active"]
        for _ in range(12):
            result = store.lookup(name, lease_ms=60_000, sizes=False)
            assert result.lease != 0
            assert store.get_into(name, [np.zeros(len(d), np.uint8) for d in data], lease=result.lease) == [
                len(d) for d in data]
        assert json.loads(store.stat())["leases_active"] <= before


def test_remove(store):
    name = keys(3)
    store.put_from(name, blocks(3))
    assert store.remove(name[:2]) == [0, 0]
    assert store.lookup(name, sizes=False).tiers[:2] == [0, 0]
    assert store.lookup(name[2:], sizes=False).tiers == [1] or store.lookup(name[2:]).tiers[0] != 0


def test_register_buffer(store):
    pool = np.zeros(1 << 20, np.uint8)
    assert store.register_buffer(pool) == 0
    assert store.register_buffer(pool) == -705
    assert store.register_buffer(pool.ctypes.data + 10, 100) == INVALID_PARAMS
    name = keys(2)
    pool[:4096] = 9
    pool[4096:8192] = 10
    assert store.put_from(name, [(pool.ctypes.data, 4096), pool[4096:8192]]) == [0, 0]
    out = np.zeros(8192, np.uint8)
    assert store.get_into(name, [out[:4096], out[4096:]]) == [4096, 4096]
    assert np.array_equal(out, pool[:8192])
    assert store.unregister_buffer(pool) == 0
    assert store.unregister_buffer(pool) == OBJECT_NOT_FOUND


def test_bad_buffers_are_value_errors(store):
    name = keys(1)
    store.put_from(name, blocks(1, 100))
    read_only = np.zeros(200, np.uint8)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        store.get_into(name, [read_only])
    with pytest.raises(ValueError, match="read-only"):
        store.get_into(name, [b"\0" * 200])
    with pytest.raises(ValueError, match="not C-contiguous"):
        store.get_into(name, [np.zeros((20, 20), np.uint8)[:, ::2]])
    with pytest.raises(ValueError, match="not C-contiguous"):
        store.get_into(name, [memoryview(bytearray(400))[::2]])
    with pytest.raises(ValueError, match="per key"):
        store.get_into(name, np.zeros(200, np.uint8))
    with pytest.raises(ValueError, match="2 given for 1"):
        store.get_into(name, [bytearray(10), bytearray(10)])
    with pytest.raises(ValueError, match="needs a length"):
        store.get_into(name, [12345])
    with pytest.raises(ValueError, match="32 bytes"):
        store.get_into([b"short"], [bytearray(10)])
    with pytest.raises(ValueError, match="list of keys"):
        store.lookup(name[0])


def test_string_keys_are_hashed(store):
    assert store.put_from(["a/string/key"], [b"value"]) == [0]
    out = bytearray(5)
    from strata_kv.keys import key_from_string
    assert store.get_into([key_from_string("a/string/key")], [out]) == [5] and out == b"value"


def test_stat_is_json(store):
    import json
    stats = json.loads(store.stat())
    assert isinstance(stats, dict) and stats


def test_a_connection_the_node_closed_while_idle_is_replaced_not_failed():
    """A node closes connections idle past limits.idle_timeout; the store's next calls connect
    again. Before, with 4 connections and 2 retries, the first call after an idle spell found
    three closed connections and failed."""
    import json

    from conftest import Node, wait_for

    def idle_closed(stats):
        if isinstance(stats, dict):
            return stats.get("idle_closed", 0) + sum(idle_closed(value) for key, value in stats.items()
                                                     if key != "idle_closed")
        return 0

    node = Node(limits={"idle_timeout": "100ms"}, ram="64MiB", nvme="128MiB")
    try:
        with StrataStore(node=node.address, connections=4, same_host=False) as idle, \
                StrataStore(node=node.address, connections=1, same_host=False) as observer:
            data = np.arange(4096, dtype=np.uint8)
            assert [idle.put(os.urandom(32), data) for _ in range(4)] == [0] * 4
            # The observer asks every 10 ms, so only the idle store's four connections time out.
            wait_for(lambda: idle_closed(json.loads(observer.stat())) >= 4, timeout=30,
                     what="the node closing the store's four idle connections")
            assert [idle.put(os.urandom(32), data) for _ in range(4)] == [0] * 4
    finally:
        node.remove()


def test_from_config_and_errors(address):
    with StrataStore.from_config({"strata.node": address, "strata.timeout_ms": 5000, "strata.connections": 2}) as s:
        assert s.put(os.urandom(32), b"x") == 0
    with pytest.raises(ValueError, match="strata.seeds"):
        StrataStore.from_config({})
    with pytest.raises(StrataError) as error:
        StrataStore(node="not an address")
    assert error.value.code == 1 and error.value.name == "invalid_argument"
    closed = StrataStore(node=address)
    closed.close()
    closed.close()
    with pytest.raises(StrataError, match="not connected"):
        closed.lookup([os.urandom(32)])


def test_nothing_listening_is_a_clear_error():
    port_owner = __import__("socket").socket()
    port_owner.bind(("127.0.0.1", 0))
    port = port_owner.getsockname()[1]
    port_owner.close()
    with pytest.raises(StrataError) as error:
        StrataStore(node=f"127.0.0.1:{port}", timeout_ms=2000)
    assert error.value.code == 9 and "127.0.0.1" in str(error.value)


def test_batches_split_into_parallel_parts_come_back_whole(store):
    """Batches over the client's 64 MiB part size, and over the 4,096 items of one request, are
    split into parts sent in parallel and reassembled in order. This runs the release build of
    libstrata_client.so, where a part's result once went missing (a crash on a 512 MiB batch)."""
    names, data = keys(40), blocks(40, (4 << 20) - 64, seed=11)  # ~160 MiB: three parts by bytes
    assert store.put_from(names, data) == [0] * 40
    out = [np.zeros(len(block), dtype=np.uint8) for block in data]
    assert store.get_into(names, out) == [len(block) for block in data]
    for index, (block, got) in enumerate(zip(data, out)):
        assert np.array_equal(got, block), f"block {index} of a split batch"
    many = keys(5000)  # two parts by item count
    small = [np.full(512, index % 251, dtype=np.uint8) for index in range(5000)]
    assert store.put_from(many, small) == [0] * 5000
    back = [np.zeros(512, dtype=np.uint8) for _ in range(5000)]
    assert store.get_into(many, back) == [512] * 5000
    assert all(np.array_equal(a, b) for a, b in zip(small, back))
    assert store.remove(names) == [0] * 40  # the session node's RAM is shared with other tests


def test_a_forked_child_forgets_the_parents_client(store):
    """A child made by fork finds the parent's store closed: using it is a clear error, and dropping
    it sends nothing on the parent's connections (a GOODBYE from the child would end the parent's
    session; the library's threads do not survive fork). The parent's store works on."""
    import gc
    import os
    import time

    from strata_kv import StrataError

    key = os.urandom(32)
    assert store.put_from([key], [np.arange(64, dtype=np.uint8)]) == [0]
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only if the store is closed here and dropping it is quiet
        code = 1
        try:
            try:
                store.lookup([key])
            except StrataError as error:
                code = 0 if error.code == 1 else 2
            store.close()
            gc.collect()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child hung using the parent's client")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.lookup([key]).leading_run == 1
    out = np.zeros(64, np.uint8)
    assert store.get_into([key], [out]) == [64] and np.array_equal(out, np.arange(64, dtype=np.uint8))
