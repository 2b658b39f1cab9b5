"""strata_kv.keys against the checked-in vectors and the C library's strata_hash_prefix."""

import ctypes
import json
import subprocess
import sys

import pytest

from strata_kv import _native
from strata_kv.keys import (Layout, as_key, hash_prefix, key_from_string, lmcache_key, root, sglang_page_key,
                            verify_file, vllm_block_key)

from conftest import FIXTURES

LAYOUT = Layout("meta-llama/Llama-3.1-8B-Instruct", "bf16", 16, layer_end=32)


def test_every_block_key_vector():
    document = json.loads((FIXTURES / "key-vectors.json").read_text())
    assert len(document["cases"]) >= 20
    for case in document["cases"]:
        layout = Layout.from_dict(case["layout"])
        assert layout.to_bytes().hex() == case["layout_hex"], case["name"]
        assert root(layout, bytes.fromhex(case["salt_hex"])).hex() == case["root_hex"], case["name"]
        keys = hash_prefix(layout, case["tokens"], bytes.fromhex(case["salt_hex"]),
                           [bytes.fromhex(extra) for extra in case["extras_hex"]])
        assert [key.hex() for key in keys] == case["keys_hex"], case["name"]


def test_hash_prefix_agrees_with_the_c_library():
    lib = _native.library()
    tokens = list(range(1000, 1000 + 16 * 9 + 5))
    for salt in (b"", b"tenant"):
        expected = hash_prefix(LAYOUT, tokens, salt)
        out = ctypes.create_string_buffer(32 * 16)
        count = ctypes.c_size_t(0)
        array = (ctypes.c_uint32 * len(tokens))(*tokens)
        assert lib.strata_hash_prefix(LAYOUT.spec().encode(), salt, len(salt), array, len(tokens), out, 16,
                                      ctypes.byref(count)) == 0
        assert [out.raw[i * 32:(i + 1) * 32] for i in range(count.value)] == expected


def test_engine_key_vectors():
    assert verify_file(str(FIXTURES / "engine-key-vectors.json")) == []
    cli = subprocess.run([sys.executable, "-m", "strata_kv", "keys", "verify", str(FIXTURES / "engine-key-vectors.json")],
                         capture_output=True, text=True)
    assert cli.returncode == 0 and "cases agree" in cli.stdout


def test_engine_keys_separate_what_must_differ():
    sha = bytes(range(32))
    base = vllm_block_key(sha, LAYOUT)
    assert len(base) == 32
    assert vllm_block_key(sha, Layout("meta-llama/Llama-3.1-8B-Instruct", "fp16", 16, layer_end=32)) != base
    assert vllm_block_key(sha, Layout("meta-llama/Llama-3.1-8B-Instruct", "bf16", 16, 1, 2, 0, 32)) != base
    assert vllm_block_key(sha, LAYOUT, kv_group=1) != base
    assert vllm_block_key(sha, LAYOUT, salt=b"t") != base
    assert vllm_block_key(1, LAYOUT) != vllm_block_key(b"\x01", LAYOUT)
    assert vllm_block_key(-1, LAYOUT) != vllm_block_key(2**128 - 1 if False else 2**64 - 1, LAYOUT)
    page = "ab" * 32
    assert len({sglang_page_key(page, LAYOUT, rank, kind) for rank in (0, 1) for kind in ("k", "v", "kv")}) == 6
    assert sglang_page_key(page, LAYOUT) == sglang_page_key(page.upper(), LAYOUT)
    assert lmcache_key("m@2@0@abc@bf16") != lmcache_key("m@2@1@abc@bf16")
    assert key_from_string("a") != key_from_string("b") and as_key("a") == key_from_string("a")
    assert vllm_block_key(sha, LAYOUT) != key_from_string(sha.hex())


@pytest.mark.parametrize("call, message", [
    (lambda: Layout("m", "BF16", 16), "dtype"),
    (lambda: Layout("m", "bf16", 16, tp_rank=2, tp_size=2), "tp_rank"),
    (lambda: Layout("", "bf16", 16), "model_id"),
    (lambda: Layout("m", "bf16", 16, layer_start=5, layer_end=5), "layer_start"),
    (lambda: hash_prefix(LAYOUT, [-1] * 16), "token"),
    (lambda: hash_prefix(LAYOUT, [1] * 16, b"x" * 1025), "salt"),
    (lambda: vllm_block_key(b"", LAYOUT), "block_hash"),
    (lambda: vllm_block_key(2**127, LAYOUT), "128"),
    (lambda: vllm_block_key(1.5, LAYOUT), "bytes or int"),
    (lambda: sglang_page_key("xyz", LAYOUT), "hex"),
    (lambda: sglang_page_key("ab", LAYOUT, kind="q"), "kind"),
    (lambda: lmcache_key("model@1@0@hash"), "model@world_size"),
    (lambda: lmcache_key("model@x@0@hash@bf16"), "integers"),
    (lambda: lmcache_key("model@2@2@hash@bf16"), "less than"),
    (lambda: as_key(b"123"), "32 bytes"),
])
def test_bad_inputs_name_the_field(call, message):
    with pytest.raises(ValueError, match=message):
        call()
