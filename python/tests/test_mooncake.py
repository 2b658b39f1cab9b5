"""The Mooncake Store method names and return conventions, each against a real node."""

import os
import re

import numpy as np

from strata_kv import StrataError, StrataStore
from strata_kv.store import BUFFER_OVERFLOW, ERROR_NAMES, INVALID_PARAMS, OBJECT_NOT_FOUND, TRANSFER_FAIL

from conftest import REPO


def test_every_error_code_of_the_c_library_has_its_name():
    """The numbers in strata_client.h's STRATA_E_* are exactly those the package names."""
    header = (REPO / "Sources" / "StrataClientC" / "include" / "strata_client.h").read_text()
    numbers = {int(n) for n in re.findall(r"#define STRATA_E_[A-Z_]+ (\d+)", header)}
    assert numbers and numbers == set(ERROR_NAMES)
    error = StrataError(16, "2 of 3 owners")
    assert error.name == "quorum_not_reached" and error.mooncake_code == TRANSFER_FAIL
    stalled = StrataError(7, "GET: the node's disk did not answer within the request's deadline")
    assert stalled.name == "io_error" and stalled.mooncake_code == TRANSFER_FAIL


def test_setup_style_construction(address):
    store = StrataStore()
    assert store.setup("localhost", "", 0, 0, "tcp", "", address) == 0
    assert store.setup("localhost", "", 0, 0, "tcp", "", address) == -705
    assert store.put("k", b"v") == 0
    store.close()
    other = StrataStore()
    assert other.setup(node=address, connections=2) == 0
    other.close()
    assert StrataStore().setup(master_server_addr="bad") == INVALID_PARAMS


def test_put_get_is_exist_get_size_remove(store):
    key = "mooncake/" + os.urandom(8).hex()
    value = os.urandom(12345)
    assert store.is_exist(key) == 0
    assert store.get_size(key) == OBJECT_NOT_FOUND
    assert store.get(key) == b""
    assert store.put(key, value) == 0
    assert store.put(key, value) == 0  # already present is success
    assert store.is_exist(key) == 1
    assert store.get_size(key) == 12345
    assert store.get(key) == value
    assert store.remove(key) == 0
    assert store.remove(key) == OBJECT_NOT_FOUND
    assert store.is_exist(key) == 0


def test_single_key_put_from_get_into_with_addresses(store):
    key = "mc/ptr/" + os.urandom(8).hex()
    source = np.random.default_rng(5).integers(0, 256, 50000, dtype=np.uint8)
    destination = np.zeros(60000, np.uint8)
    assert store.register_buffer(source.ctypes.data, source.nbytes) == 0
    assert store.put_from(key, source.ctypes.data, source.nbytes) == 0
    assert store.get_into(key, destination.ctypes.data, destination.nbytes) == 50000
    assert np.array_equal(destination[:50000], source)
    assert store.get_into(key, destination.ctypes.data, 100) == BUFFER_OVERFLOW
    assert store.get_into("mc/none/" + os.urandom(8).hex(), destination.ctypes.data, 100) == OBJECT_NOT_FOUND
    assert store.unregister_buffer(source.ctypes.data) == 0


def test_batches(store):
    keys = [f"mc/batch/{os.urandom(6).hex()}/{index}" for index in range(8)]
    data = [np.full(4096 * (index + 1), index, np.uint8) for index in range(8)]
    assert store.batch_put_from(keys, [d.ctypes.data for d in data], [d.nbytes for d in data]) == [0] * 8
    assert store.batch_is_exist(keys + ["mc/absent"]) == [1] * 8 + [0]
    assert store.batch_get_size(keys[:2] + ["mc/absent"]) == [4096, 8192, OBJECT_NOT_FOUND]
    out = [np.zeros(d.nbytes, np.uint8) for d in data]
    assert store.batch_get_into(keys, [o.ctypes.data for o in out], [o.nbytes for o in out]) == [d.nbytes for d in data]
    assert all(np.array_equal(a, b) for a, b in zip(out, data))
    # Buffer objects work in place of addresses.
    again = [np.zeros(d.nbytes, np.uint8) for d in data]
    assert store.batch_get_into(keys, again) == [d.nbytes for d in data]
    assert store.batch_remove(keys[:4] + ["mc/absent"]) == [0] * 4 + [OBJECT_NOT_FOUND]


def test_multi_buffer_batches(store):
    keys = [f"mc/multi/{os.urandom(6).hex()}/{index}" for index in range(4)]
    k_pool = np.random.default_rng(6).integers(0, 256, (4, 2048), dtype=np.uint8)
    v_pool = np.random.default_rng(7).integers(0, 256, (4, 2048), dtype=np.uint8)
    ptrs = [[k_pool[i].ctypes.data, v_pool[i].ctypes.data] for i in range(4)]
    sizes = [[2048, 2048]] * 4
    assert store.batch_put_from_multi_buffers(keys, ptrs, sizes) == [0] * 4
    k_out, v_out = np.zeros_like(k_pool), np.zeros_like(v_pool)
    out_ptrs = [[k_out[i].ctypes.data, v_out[i].ctypes.data] for i in range(4)]
    assert store.batch_get_into_multi_buffers(keys, out_ptrs, sizes) == [4096] * 4
    assert np.array_equal(k_out, k_pool) and np.array_equal(v_out, v_pool)
    assert store.batch_get_into_multi_buffers(keys[:1], out_ptrs[:1], [[2048, 1000]]) == [INVALID_PARAMS]


def test_whole_call_failure_gives_every_key_a_code(address):
    store = StrataStore(node=address)
    store.close()
    assert store.batch_get_into(["a", "b"], [bytearray(1), bytearray(1)]) == [INVALID_PARAMS, INVALID_PARAMS]
    assert store.batch_is_exist(["a"]) == [INVALID_PARAMS]
