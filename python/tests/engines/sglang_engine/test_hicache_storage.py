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
from sglang.srt.mem_cache.hicache_storage import (  # noqa: E402
    HiCacheStorage,
    HiCacheStorageConfig,
    PoolHitPolicy,
    PoolName,
    PoolTransfer,
    PoolTransferResult,
)
from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory  # noqa: E402

PAGE = 16
LAYERS, HEADS, HEAD_DIM = 3, 2, 32
LAYOUTS = ["layer_first", "page_first", "page_first_direct", "page_head"]
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

    def __init__(self, layout: str, pages: int, dtype=torch.bfloat16, seed: int = 0, layers: int = LAYERS) -> None:
        self.layout = layout
        self.page_size = PAGE
        self.page_num = pages
        self.size = pages * PAGE
        self.layer_num = layers
        self.head_num = HEADS
        self.head_dim = HEAD_DIM
        self.dtype = dtype
        self.device = "cpu"
        self.pin_memory = False
        # As MHATokenToKVPoolHost.init_kv_buffer lays kv_buffer out for each layout.
        dims = {
            "layer_first": (2, layers, self.size, HEADS, HEAD_DIM),
            "page_first": (2, self.size, layers, HEADS, HEAD_DIM),
            "page_first_direct": (2, pages, layers, PAGE, HEADS, HEAD_DIM),
            "page_head": (2, pages, HEADS, PAGE, layers, HEAD_DIM),
        }[layout]
        generator = torch.Generator().manual_seed(seed)
        self.kv_buffer = torch.randn(dims, generator=generator).to(dtype)

    def indices(self, pages: list[int]) -> torch.Tensor:
        return torch.cat([torch.arange(p * PAGE, (p + 1) * PAGE) for p in pages])

    def page(self, p: int) -> torch.Tensor:
        return self.get_data_page(p * PAGE, flat=True).clone()


def storage_config(
    address: str, tp_rank: int = 0, tp_size: int = 1, pp_size: int = 1, attn_cp_size: int = 1, **extra
) -> HiCacheStorageConfig:
    return HiCacheStorageConfig(
        tp_rank=tp_rank,
        tp_size=tp_size,
        pp_rank=pp_size - 1,
        pp_size=pp_size,
        attn_cp_rank=attn_cp_size - 1,
        attn_cp_size=attn_cp_size,
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


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stand_in_buffer_fits_sglang_page_methods(layout):
    """SGLang's own set_from_flat_data_page / get_data_page reshape pages to the buffer shape its
    init_kv_buffer gives each layout: they fail on a stand-in buffer of another shape."""
    pool = HostPool(layout, pages=3, seed=9)
    page = torch.randn(pool.get_dummy_flat_data_page().shape, generator=torch.Generator().manual_seed(1)).to(pool.dtype)
    before = pool.page(0)
    pool.set_from_flat_data_page(1 * PAGE, page)
    assert torch.equal(pool.page(1), page)
    assert torch.equal(pool.page(0), before)


@pytest.mark.parametrize("layout", LAYOUTS)
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


@pytest.mark.parametrize("layout", ["page_first", "page_head"])
def test_generic_interface_flat_pages(strata_node, layout):
    pool = HostPool(layout, pages=4, seed=3)
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


@pytest.mark.parametrize("parallel", [{"pp_size": 2}, {"attn_cp_size": 2}])
def test_pipeline_or_context_parallel_ranks_are_refused_at_start(strata_node, parallel):
    """Their stages or shards would store different bytes under one page key: refused at start with
    a message that names the setting, never served wrong."""
    name = next(iter(parallel))
    with pytest.raises(ValueError, match=f"{name}=2"):
        StorageBackendFactory.create_backend("dynamic", storage_config(strata_node.address, **parallel), None)


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


def test_layouts_never_share_pages(strata_node):
    """Each host layout orders a page's bytes its own way: a page stored from one layout is a miss
    for the others (never read scrambled), and the generic path's flat layer-first pages are a
    format of their own."""
    keys = page_hashes(1, "77")
    pools = {layout: HostPool(layout, pages=2, seed=8) for layout in LAYOUTS}
    storages = {layout: backend(strata_node.address, pool) for layout, pool in pools.items()}
    try:
        assert storages["page_first"].batch_set_v1(keys, pools["page_first"].indices([0])) == [True]
        assert {layout: s.batch_exists(keys) for layout, s in storages.items()} == {
            "layer_first": 0,
            "page_first": 1,
            "page_first_direct": 0,
            "page_head": 0,
        }
        flat = page_hashes(1, "78")
        assert storages["layer_first"].batch_set(flat, [pools["layer_first"].get_data_page(0)])
        assert storages["layer_first"].exists(flat[0])
        assert storages["layer_first"].batch_exists(flat) == 0  # zero-copy pages are another format
    finally:
        for storage in storages.values():
            storage.close()


def test_v2_pools_round_trip_and_hit_policies(strata_node):
    """The hybrid-pool interface with the KV pool and a side pool (SWA-like, one layer): pages of
    both pools in one call, byte for byte; batch_exists_v2 folds each pool's hit policy into the
    usable prefix as SGLang's own backends do."""
    kv = HostPool("page_first", pages=8, seed=11)
    swa = HostPool("page_first", pages=8, seed=12, layers=1)
    storage = backend(strata_node.address, kv)
    storage.register_mem_host_pool_v2(swa, PoolName.SWA)
    try:
        keys = page_hashes(6, "v2")
        assert storage.batch_set_v1(keys, kv.indices(range(6))) == [True] * 6
        # The side pool holds only pages 0, 1, 4 and 5 (a window ends at each kept node).
        side = [keys[i] for i in (0, 1, 4, 5)]
        written = storage.batch_set_v2([PoolTransfer(name=PoolName.SWA, host_indices=swa.indices([0, 1, 4, 5]), keys=side)])
        assert written == {PoolName.SWA: [True] * 4}

        all_pages = storage.batch_exists_v2(
            keys, [PoolTransfer(name=PoolName.SWA, keys=keys, hit_policy=PoolHitPolicy.ALL_PAGES)]
        )
        assert isinstance(all_pages, PoolTransferResult)
        assert all_pages.kv_hit_pages == 2 and all_pages.extra_pool_hit_pages[PoolName.SWA] == 2
        trailing = storage.batch_exists_v2(
            keys, [PoolTransfer(name=PoolName.SWA, keys=keys[:2], hit_policy=PoolHitPolicy.TRAILING_PAGES)]
        )
        assert trailing.kv_hit_pages == 6
        assert trailing.restorable_prefix_pages == [1, 2, 6]
        assert storage.batch_exists_v2(keys[:3] + page_hashes(1, "no") + keys[4:], []).kv_hit_pages == 3
        with pytest.raises(ValueError, match="hit policy"):
            storage.batch_exists_v2(keys, [PoolTransfer(name=PoolName.SWA, keys=keys, hit_policy=PoolHitPolicy.BLOCK_GROUPS)])

        kv_dst = HostPool("page_first", pages=8, seed=13)
        swa_dst = HostPool("page_first", pages=8, seed=14, layers=1)
        storage.register_mem_pool_host(kv_dst)
        storage.register_mem_host_pool_v2(swa_dst, PoolName.SWA)
        got = storage.batch_get_v2(
            [
                PoolTransfer(name=PoolName.KV, host_indices=kv_dst.indices([7, 6]), keys=keys[:2]),
                PoolTransfer(name=PoolName.SWA, host_indices=swa_dst.indices([3, 2, 1]), keys=[keys[5], keys[2], keys[4]]),
            ]
        )
        assert got == {PoolName.KV: [True, True], PoolName.SWA: [True, False, True]}
        assert torch.equal(kv_dst.page(7), kv.page(0)) and torch.equal(kv_dst.page(6), kv.page(1))
        assert torch.equal(swa_dst.page(3), swa.page(5)) and torch.equal(swa_dst.page(1), swa.page(4))
        assert not torch.equal(swa_dst.page(2), swa.page(2))  # the missing page is left alone
        # KV and SWA pages of the same hash are different blocks.
        assert storage.batch_exists(page_hashes(6, "v2")) == 6
        with pytest.raises(ValueError, match="not registered"):
            storage.batch_get_v2([PoolTransfer(name=PoolName.MAMBA, host_indices=kv.indices([0]), keys=keys[:1])])
    finally:
        storage.close()
