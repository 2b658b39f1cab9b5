"""StrataHiCacheStorage against SGLang's own HiCache storage interface (sglang 0.5.23).

SGLang serves only with CUDA, so the engine does not run here. What runs is SGLang's real code
around the backend: its StorageBackendFactory loads the backend exactly as
`--hicache-storage-backend dynamic` does, the backend is a HiCacheStorage subclass, and the host
pool stand-in below borrows MHATokenToKVPoolHost's own methods (get_page_buffer_meta,
get_data_page, set_from_flat_data_page, get_dummy_flat_data_page) over a CPU buffer laid out as
its init_kv_buffer lays it out, so every pointer the backend uses is computed by SGLang.
"""

from __future__ import annotations

import pytest

pytest.importorskip("sglang")

import ast  # noqa: E402
import hashlib  # noqa: E402
import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from sglang.srt.mem_cache.hicache_storage import HiCacheStorage, HiCacheStorageConfig  # noqa: E402
from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory  # noqa: E402

PAGE = 16
LAYERS, HEADS, HEAD_DIM = 3, 2, 32
HOST_POOL_METHODS = ("get_page_buffer_meta", "get_data_page", "get_dummy_flat_data_page", "set_from_flat_data_page")


def sglang_host_pool_methods() -> dict:
    """MHATokenToKVPoolHost's own page methods, compiled from the installed sglang source.

    Importing sglang.srt.mem_cache.pool_host pulls in every model config (and torchvision, CUDA
    kernels), which a CPU-only environment cannot import; these four methods need only torch.
    """
    spec = importlib.util.find_spec("sglang.srt.mem_cache.pool_host")
    source_path = Path(spec.submodule_search_locations[0]) / "mha.py"
    source = source_path.read_text()
    tree = ast.parse(source)
    pool = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MHATokenToKVPoolHost")
    functions = [n for n in pool.body if isinstance(n, ast.FunctionDef) and n.name in HOST_POOL_METHODS]
    assert sorted(f.name for f in functions) == sorted(HOST_POOL_METHODS)
    module = ast.Module(body=functions, type_ignores=[])
    namespace = {"torch": torch}
    exec(compile(module, str(source_path), "exec"), namespace)
    return {name: namespace[name] for name in HOST_POOL_METHODS}


class HostPool:
    """MHATokenToKVPoolHost's attributes and (SGLang's own) page methods over a CPU kv_buffer."""

    locals().update(sglang_host_pool_methods())

    def __init__(self, layout: str, pages: int, dtype=torch.bfloat16, seed: int = 0) -> None:
        self.layout = layout
        self.page_size = PAGE
        self.page_num = pages
        self.size = pages * PAGE
        self.layer_num = LAYERS
        self.head_num = HEADS
        self.head_dim = HEAD_DIM
        self.dtype = dtype
        self.device = "cpu"
        self.pin_memory = False
        dims = {
            "layer_first": (2, LAYERS, self.size, HEADS, HEAD_DIM),
            "page_first": (2, self.size, LAYERS, HEADS, HEAD_DIM),
        }[layout]
        generator = torch.Generator().manual_seed(seed)
        self.kv_buffer = torch.randn(dims, generator=generator).to(dtype)

    def indices(self, pages: list[int]) -> torch.Tensor:
        return torch.cat([torch.arange(p * PAGE, (p + 1) * PAGE) for p in pages])

    def page(self, p: int) -> torch.Tensor:
        return self.get_data_page(p * PAGE, flat=True).clone()


def storage_config(address: str, tp_rank: int = 0, tp_size: int = 1, **extra) -> HiCacheStorageConfig:
    return HiCacheStorageConfig(
        tp_rank=tp_rank,
        tp_size=tp_size,
        pp_rank=0,
        pp_size=1,
        attn_cp_rank=0,
        attn_cp_size=1,
        is_mla_model=False,
        enable_storage_metrics=False,
        is_page_first_layout=True,
        model_name="tiny/model",
        extra_config={
            "backend_name": "strata",
            "module_path": "strata_kv.sglang",
            "class_name": "StrataHiCacheStorage",
            "interface_v1": 1,
            "strata.node": address,
            **extra,
        },
    )


def backend(address: str, pool: HostPool, **kwargs):
    created = StorageBackendFactory.create_backend("dynamic", storage_config(address, **kwargs), pool)
    created.register_mem_pool_host(pool)
    return created


def page_hashes(n: int, tag: str = "") -> list[str]:
    """SGLang-style page hashes: SHA-256 hex strings."""
    return [hashlib.sha256(f"{tag}/{i}".encode()).hexdigest() for i in range(n)]


@pytest.mark.parametrize("layout", ["page_first", "layer_first"])
def test_zero_copy_pages_round_trip_byte_exact(strata_node, layout):
    source = HostPool(layout, pages=12, seed=1)
    storage = backend(strata_node.address, source)
    try:
        assert isinstance(storage, HiCacheStorage)
        keys = page_hashes(8)
        pages = [0, 3, 4, 7, 8, 9, 10, 11]
        assert storage.batch_set_v1(keys, source.indices(pages)) == [True] * 8
        assert storage.batch_exists(keys) == 8
        assert storage.batch_exists(keys[:3] + page_hashes(1, "f") + keys[3:]) == 3

        destination = HostPool(layout, pages=12, seed=2)
        storage.register_mem_pool_host(destination)
        landing = [11, 10, 1, 2, 3, 4, 5, 6]
        missing = page_hashes(2, "e")
        ok = storage.batch_get_v1(keys[:4] + missing + keys[4:6], destination.indices(landing))
        assert ok == [True, True, True, True, False, False, True, True]
        for key_index, page in [(0, 11), (1, 10), (2, 1), (3, 2)]:
            assert torch.equal(destination.page(page), source.page(pages[key_index]))
        assert torch.equal(destination.page(5), source.page(pages[4]))
        assert storage.get_stats()["pages_read"] == 6
        # Storing pages that are there already sends nothing and still succeeds.
        assert storage.batch_set_v1(keys[:2], source.indices(pages[:2])) == [True, True]
    finally:
        storage.close()


def test_generic_interface_flat_pages(strata_node):
    pool = HostPool("page_first", pages=4, seed=3)
    storage = backend(strata_node.address, pool)
    try:
        keys = page_hashes(3, "a")
        assert storage.batch_set(keys, [pool.get_data_page(p * PAGE) for p in range(3)])
        assert storage.exists(keys[1]) and not storage.exists(page_hashes(1, "b")[0])
        targets = [pool.get_dummy_flat_data_page() for _ in range(4)]
        got = storage.batch_get(keys + page_hashes(1, "b"), targets)
        assert got[3] is None
        for p in range(3):
            assert torch.equal(got[p], pool.page(p))
        assert storage.set(page_hashes(1, "c")[0], pool.get_data_page(3 * PAGE))
        assert torch.equal(storage.get(page_hashes(1, "c")[0], pool.get_dummy_flat_data_page()), pool.page(3))
    finally:
        storage.close()


def test_ranks_and_layouts_do_not_share_pages(strata_node):
    pool = HostPool("page_first", pages=2, seed=4)
    rank0 = backend(strata_node.address, pool, tp_rank=0, tp_size=2)
    rank1 = backend(strata_node.address, pool, tp_rank=1, tp_size=2)
    fp16 = HostPool("page_first", pages=2, dtype=torch.float16, seed=4)
    other_dtype = backend(strata_node.address, fp16)
    try:
        keys = page_hashes(1, "d")
        assert rank0.batch_set_v1(keys, pool.indices([0])) == [True]
        assert rank0.batch_exists(keys) == 1
        assert rank1.batch_exists(keys) == 0
        assert other_dtype.batch_exists(keys) == 0
    finally:
        for s in (rank0, rank1, other_dtype):
            s.close()


def test_node_down_reads_as_miss(strata_node):
    pool = HostPool("page_first", pages=2, seed=5)
    storage = backend(strata_node.address, pool, **{"strata.timeout_ms": 1000})
    try:
        keys = page_hashes(2, "9")
        assert storage.batch_set_v1(keys, pool.indices([0, 1])) == [True, True]
        strata_node.stop()
        assert storage.batch_exists(keys) == 0
        assert storage.batch_get_v1(keys, pool.indices([0, 1])) == [False, False]
        assert storage.batch_set_v1(keys, pool.indices([0, 1])) == [False, False]
        assert storage.get_stats()["errors"] == 3
    finally:
        storage.close()


def test_missing_address_is_a_clear_error():
    with pytest.raises(ValueError, match="strata.seeds"):
        StorageBackendFactory.create_backend(
            "dynamic",
            HiCacheStorageConfig(
                tp_rank=0, tp_size=1, pp_rank=0, pp_size=1, attn_cp_rank=0, attn_cp_size=1,
                is_mla_model=False, enable_storage_metrics=False, is_page_first_layout=True,
                model_name="m",
                extra_config={"backend_name": "strata", "module_path": "strata_kv.sglang",
                              "class_name": "StrataHiCacheStorage"},
            ),
            None,
        )
