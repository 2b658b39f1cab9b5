"""SGLang HiCache storage backend on Strata (``--hicache-storage-backend dynamic``).

Configuration::

    --enable-hierarchical-cache --hicache-storage-backend dynamic
    --hicache-storage-backend-extra-config '{"backend_name":"strata",
        "module_path":"strata_kv.sglang","class_name":"StrataHiCacheStorage",
        "interface_v1":1,"strata.seeds":"HOST:PORT,...","strata.token":"..."}'

``interface_v1: 1`` selects SGLang's page-based zero-copy path: ``batch_get_v1`` /
``batch_set_v1`` move whole pages between Strata and the registered host memory pool. One page
is one Strata block: its K and V runs (and, in the layer-first layout, every layer's runs) travel
as the segments of one vectored request, located by the pool's own ``get_page_buffer_meta``
(every host layout: ``layer_first``, ``page_first``, ``page_first_direct``, ``page_head``).
``batch_exists`` answers with the leading run of one LOOKUP. The plain ``get`` / ``set`` /
``batch_get`` / ``batch_set`` / ``exists`` (SGLang's generic path) work on flat page tensors.
The hybrid-pool interface (``register_mem_host_pool_v2``, ``batch_exists_v2``,
``batch_get_v2``, ``batch_set_v2``) moves the pages of every registered pool (KV, SWA, Mamba
state, ...) the same way, all pools of a call in one request.

Keys: SGLang's page hashes (chained SHA-256 hex strings) become Strata keys through
``strata_kv.keys.sglang_page_key``, with the layout (model, dtype, page size, TP rank and size,
layers) folded in, so ranks and models never share keys; the salt names the page's byte format
(the host layout and path, since each lays a page's bytes out differently) and the pool, so a
page is only ever read into a pool that lays it out the same way.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, List, Optional

import torch

from sglang.srt.mem_cache.hicache_storage import (
    HiCacheStorage,
    HiCacheStorageConfig,
    HiCacheStorageExtraInfo,
    PoolHitPolicy,
    PoolName,
    PoolTransfer,
    PoolTransferResult,
)

from strata_kv import StrataError, StrataStore
from strata_kv.keys import Layout, sglang_page_key

logger = logging.getLogger(__name__)

_DTYPE_TAGS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.uint8: "u8"}


def _config(extra: dict[str, Any]) -> dict[str, Any]:
    config = {"strata.timeout_ms": 5000, "strata.connections": 4}
    config.update({k: v for k, v in extra.items() if k.startswith("strata.")})
    if not (config.get("strata.seeds") or config.get("strata.node")):
        raise ValueError(
            "StrataHiCacheStorage needs strata.seeds (or strata.node) in "
            "--hicache-storage-backend-extra-config"
        )
    return config


def _pool_layout(pool: Any, model: str, rank: int, ranks: int) -> Layout:
    dtype = _DTYPE_TAGS.get(pool.dtype, str(pool.dtype).removeprefix("torch.").lower())
    return Layout(
        model_id=model,
        dtype=dtype,
        tokens_per_block=int(pool.page_size),
        tp_rank=rank,
        tp_size=ranks,
        layer_start=0,
        layer_end=int(getattr(pool, "layer_num", 0)) or None,
    )


def page_format(pool: Any, flat: bool) -> str:
    """The byte order of a stored page: the host layout, and for the generic path's flat pages of
    the layer-first layout (K of every layer, then V) a format of their own (the zero-copy path
    interleaves K and V per layer)."""
    layout = str(getattr(pool, "layout", "page_first"))
    return f"{layout}/flat" if flat and layout == "layer_first" else layout


def _pool_segments(pool: Any, pages: int, host_indices: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Each page's runs in a host pool, from the pool's own ``get_page_buffer_meta``."""
    if len(host_indices) != pages * pool.page_size:
        raise ValueError(f"{pages} pages need {pages * pool.page_size} host indices, got {len(host_indices)}")
    if pages == 0:
        return []
    pointers, sizes = pool.get_page_buffer_meta(host_indices)
    flat: list[tuple[int, int]] = []
    for pointer, size in zip(pointers, sizes):
        if isinstance(pointer, (list, tuple)):  # pools with several buffers per entry
            flat.extend((int(p), int(n)) for p, n in zip(pointer, size))
        else:
            flat.append((int(pointer), int(size)))
    per_page = len(flat) // pages
    if per_page == 0 or per_page * pages != len(flat):
        raise ValueError(f"the host pool gave {len(flat)} buffers for {pages} pages")
    return [flat[p * per_page : (p + 1) * per_page] for p in range(pages)]


def _tensor_segment(tensor: torch.Tensor) -> list[tuple[int, int]]:
    if not tensor.is_contiguous() or tensor.device.type != "cpu":
        raise ValueError("HiCache page tensors must be contiguous host tensors")
    return [(tensor.data_ptr(), tensor.numel() * tensor.element_size())]


class StrataHiCacheStorage(HiCacheStorage):
    """A ``HiCacheStorage`` whose pages live on a Strata node or cluster."""

    def __init__(self, storage_config: HiCacheStorageConfig, kwargs: Optional[dict] = None) -> None:
        self.storage_config = storage_config
        extra = dict(storage_config.extra_config or {})
        unsupported = {
            name: size
            for name in ("pp_size", "attn_cp_size", "dcp_size")
            if (size := int(getattr(storage_config, name, 1) or 1)) > 1
        }
        if unsupported:
            # Only the tensor-parallel rank is in the layout: pipeline stages and context-parallel
            # shards would store their different parts of a page under one key (wrong KV, not a miss).
            raise ValueError(
                f"StrataHiCacheStorage does not support {', '.join(f'{k}={v}' for k, v in unsupported.items())} "
                "yet: those stages or shards would share keys. Run with tensor parallelism only."
            )
        self._store = StrataStore.from_config(_config(extra))
        self._model = str(extra.get("strata.model_id") or storage_config.model_name or "model")
        # MLA KV is the same on every TP rank: one copy, shared by all ranks, written by one.
        self._rank = 0 if storage_config.is_mla_model else storage_config.tp_rank
        self._ranks = 1 if storage_config.is_mla_model else storage_config.tp_size
        self._writer = storage_config.is_storage_writer
        salt = extra.get("strata.salt", "")
        self._salt = salt.encode() if isinstance(salt, str) else bytes(salt)
        self._layout: Optional[Layout] = None
        self._pools: dict[str, tuple[Any, Layout]] = {}  # v2: pool name -> (pool, layout)
        self._page_bytes = 0
        self._lock = threading.Lock()
        self._stats = {"pages_read": 0, "pages_written": 0, "pages_missing": 0, "errors": 0}

    # -- registration -------------------------------------------------------------------------

    def register_mem_pool_host(self, mem_pool_host: Any) -> None:
        super().register_mem_pool_host(mem_pool_host)
        pool = mem_pool_host
        self._layout = _pool_layout(pool, self._model, self._rank, self._ranks)
        self._page_bytes = pool.get_dummy_flat_data_page().numel() * pool.dtype.itemsize
        self._register_buffers(pool)
        logger.info(
            "StrataHiCacheStorage: %s, %s layout, %d bytes per page",
            self._layout,
            getattr(pool, "layout", "?"),
            self._page_bytes,
        )

    def register_mem_host_pool_v2(self, host_pool: Any, host_pool_name: Any) -> None:
        super().register_mem_host_pool_v2(host_pool, host_pool_name)
        name = str(host_pool_name)
        self._pools[name] = (host_pool, _pool_layout(host_pool, self._model, self._rank, self._ranks))
        if host_pool is not getattr(self, "mem_pool_host", None):
            self._register_buffers(host_pool)

    def _register_buffers(self, pool: Any) -> None:
        for attribute in ("kv_buffer", "k_buffer", "v_buffer"):
            buffer = getattr(pool, attribute, None)
            if isinstance(buffer, torch.Tensor) and buffer.device.type == "cpu" and buffer.numel():
                try:
                    self._store.register_buffer(buffer.data_ptr(), buffer.numel() * buffer.element_size())
                except (StrataError, ValueError) as error:  # an overlap, or the range limit
                    logger.info("StrataHiCacheStorage: %s of %s not registered: %s", attribute, pool, error)

    def _keys(self, keys: List[str], flat: bool = False) -> list[bytes]:
        if self._layout is None:
            raise RuntimeError("StrataHiCacheStorage: register_mem_pool_host was not called")
        return self._pool_keys(keys, self.mem_pool_host, self._layout, str(PoolName.KV), flat)

    def _pool_keys(self, keys: List[str], pool: Any, layout: Layout, name: str, flat: bool = False) -> list[bytes]:
        salt = f"sglang:{name}:{page_format(pool, flat)}:".encode() + self._salt
        return [sglang_page_key(key, layout, rank=self._rank, salt=salt) for key in keys]

    def _page_segments(self, keys: List[str], host_indices: torch.Tensor) -> list[list[tuple[int, int]]]:
        return _pool_segments(self.mem_pool_host, len(keys), host_indices)

    # -- zero-copy page interface (interface_v1) ----------------------------------------------

    def batch_get_v1(
        self,
        keys: List[str],
        host_indices: torch.Tensor,
        extra_info: Optional[HiCacheStorageExtraInfo] = None,
    ) -> List[bool]:
        if not keys:
            return []
        segments = self._page_segments(keys, host_indices)
        expected = [sum(length for _, length in page) for page in segments]
        try:
            lengths = self._store.get_into(self._keys(keys), segments)
        except StrataError as error:
            self._failed("get", error)
            return [False] * len(keys)
        ok = [n == want for n, want in zip(lengths, expected)]
        self._count(ok)
        return ok

    def batch_set_v1(
        self,
        keys: List[str],
        host_indices: torch.Tensor,
        extra_info: Optional[HiCacheStorageExtraInfo] = None,
    ) -> List[bool]:
        if not keys:
            return []
        if not self._writer:
            return [True] * len(keys)  # another rank stores the shared (MLA) pages
        # Pages already stored are not sent again: one LOOKUP, then one PUT of the rest.
        results = self._put_missing(self._keys(keys), self._page_segments(keys, host_indices))
        return [r == 0 for r in results]

    def batch_exists(self, keys: List[str], extra_info: Optional[HiCacheStorageExtraInfo] = None) -> int:
        if not keys:
            return 0
        try:
            return self._store.lookup(self._keys(keys), sizes=False).leading_run
        except StrataError as error:
            self._failed("exists", error)
            return 0

    # -- hybrid-pool interface (v2) ---------------------------------------------------------

    def _pool(self, name: Any) -> tuple[Any, Layout]:
        entry = self._pools.get(str(name))
        if entry is None and str(name) == str(PoolName.KV) and self._layout is not None:
            entry = (self.mem_pool_host, self._layout)
        if entry is None:
            raise ValueError(f"StrataHiCacheStorage: host pool {name!s} was not registered")
        return entry

    def batch_exists_v2(
        self,
        keys: List[str],
        pool_transfers: Optional[List[PoolTransfer]] = None,
        extra_info: Optional[HiCacheStorageExtraInfo] = None,
    ) -> PoolTransferResult:
        """The usable prefix: the KV pages' leading run, cut by every other pool's policy
        (all pages present, or the trailing window before each stop point). One LOOKUP."""
        if not keys:
            return PoolTransferResult(0, {}, [])
        transfers = list(pool_transfers or [])
        for transfer in transfers:
            if transfer.hit_policy not in (PoolHitPolicy.ALL_PAGES, PoolHitPolicy.TRAILING_PAGES):
                raise ValueError(f"StrataHiCacheStorage: unsupported pool hit policy {transfer.hit_policy}")
        logical_kv = getattr(self.mem_pool_host, "kv_buffer", True) is None
        strata_keys = [] if logical_kv else self._keys(keys)
        spans = []
        for transfer in transfers:
            pool, layout = self._pool(transfer.name)
            pool_keys = self._pool_keys(keys, pool, layout, str(transfer.name))
            spans.append((transfer, len(strata_keys)))
            strata_keys.extend(pool_keys)
        try:
            tiers = self._store.lookup(strata_keys, sizes=False).tiers if strata_keys else []
        except StrataError as error:
            self._failed("exists", error)
            return PoolTransferResult(0, {}, [])
        present = [tier != 0 for tier in tiers]
        if logical_kv:
            kv_pages = len(keys)  # a logical anchor stores nothing: the other pools decide
        else:
            kv_pages = present.index(False) if False in present[: len(keys)] else len(keys)
        hits: dict = {PoolName.KV: kv_pages} if kv_pages else {}
        restorable = set(range(1, kv_pages + 1))
        for transfer, start in spans:
            exists = present[start : start + kv_pages]
            if transfer.hit_policy == PoolHitPolicy.ALL_PAGES:
                boundary = exists.index(False) if False in exists else kv_pages
                stops = set(range(1, boundary + 1))
            else:
                window = max(1, len(transfer.keys) if transfer.keys else 1)
                stops = {n for n in range(1, kv_pages + 1) if all(exists[max(0, n - window) : n])}
                boundary = max(stops, default=0)
            if boundary:
                hits[transfer.name] = boundary
            restorable &= stops
        ordered = sorted(restorable)
        return PoolTransferResult(ordered[-1] if ordered else 0, hits, ordered)

    def _v2_plan(self, transfers: List[PoolTransfer]) -> tuple[list, list[bytes], list[list[tuple[int, int]]]]:
        """Every transfer's pages as one batch: (name, first item, count) per transfer, keys, runs."""
        plan: list = []
        flat_keys: list[bytes] = []
        segments: list[list[tuple[int, int]]] = []
        for transfer in transfers:
            keys = list(transfer.keys or [])
            if not keys:
                plan.append((transfer.name, 0, 0))
                continue
            pool, layout = self._pool(transfer.name)
            plan.append((transfer.name, len(flat_keys), len(keys)))
            flat_keys.extend(self._pool_keys(keys, pool, layout, str(transfer.name)))
            segments.extend(_pool_segments(pool, len(keys), transfer.host_indices))
        return plan, flat_keys, segments

    def batch_get_v2(
        self,
        transfers: List[PoolTransfer],
        extra_info: Optional[HiCacheStorageExtraInfo] = None,
    ) -> dict:
        """Reads every transfer's pages into its pool, all pools in one vectored GET."""
        plan, keys, segments = self._v2_plan(transfers)
        lengths: list[int] = []
        if keys:
            try:
                lengths = self._store.get_into(keys, segments)
            except StrataError as error:
                self._failed("get", error)
                lengths = [-1] * len(keys)
        ok = [n == sum(length for _, length in page) for n, page in zip(lengths, segments)]
        self._count(ok)
        return {name: ok[start : start + count] for name, start, count in plan}

    def batch_set_v2(
        self,
        transfers: List[PoolTransfer],
        extra_info: Optional[HiCacheStorageExtraInfo] = None,
    ) -> dict:
        """Stores every transfer's pages not stored yet: one LOOKUP, then one vectored PUT."""
        plan, keys, segments = self._v2_plan(transfers)
        if not self._writer:
            return {name: [True] * count for name, _, count in plan}
        results = self._put_missing(keys, segments)
        return {name: [r == 0 for r in results[start : start + count]] for name, start, count in plan}

    def _put_missing(self, keys: list[bytes], segments: list[list[tuple[int, int]]]) -> list[int]:
        if not keys:
            return []
        try:
            present = self._store.lookup(keys, sizes=False).tiers
            todo = [i for i, tier in enumerate(present) if tier == 0]
            results = [0] * len(keys)
            if todo:
                stored = self._store.put_from([keys[i] for i in todo], [segments[i] for i in todo])
                for i, result in zip(todo, stored):
                    results[i] = result
        except StrataError as error:
            self._failed("set", error)
            return [-1] * len(keys)
        with self._lock:
            self._stats["pages_written"] += sum(1 for i in todo if results[i] == 0)
        return results

    # -- generic interface (flat page tensors) ------------------------------------------------

    def get(self, key: str, target_location: Optional[Any] = None, target_sizes: Optional[Any] = None):
        return self.batch_get([key], [target_location])[0]

    def batch_get(self, keys: List[str], target_locations: Optional[Any] = None, target_sizes: Optional[Any] = None):
        if not keys:
            return []
        if target_locations is None:
            target_locations = [self.mem_pool_host.get_dummy_flat_data_page() for _ in keys]
        try:
            lengths = self._store.get_into(self._keys(keys, flat=True), [_tensor_segment(t) for t in target_locations])
        except StrataError as error:
            self._failed("get", error)
            return [None] * len(keys)
        ok = [n == t.numel() * t.element_size() for n, t in zip(lengths, target_locations)]
        self._count(ok)
        return [t if good else None for t, good in zip(target_locations, ok)]

    def set(self, key: str, value: Optional[Any] = None, target_location: Optional[Any] = None, target_sizes: Optional[Any] = None) -> bool:
        return self.batch_set([key], [value])

    def batch_set(self, keys: List[str], values: Optional[Any] = None, target_locations: Optional[Any] = None, target_sizes: Optional[Any] = None) -> bool:
        if not keys:
            return True
        if not self._writer:
            return True
        pages = [v.contiguous() for v in values]
        try:
            results = self._store.put_from(self._keys(keys, flat=True), [_tensor_segment(p) for p in pages])
        except StrataError as error:
            self._failed("set", error)
            return False
        with self._lock:
            self._stats["pages_written"] += sum(1 for r in results if r == 0)
        return all(r == 0 for r in results)

    def exists(self, key: str) -> bool:
        # The generic path's own pages (flat format); batch_exists asks about zero-copy pages.
        try:
            return self._store.lookup(self._keys([key], flat=True), sizes=False).leading_run == 1
        except StrataError as error:
            self._failed("exists", error)
            return False

    def clear(self) -> bool:
        # Strata names pages by hash and has no listing by model: pages age out by eviction.
        logger.warning("StrataHiCacheStorage.clear: pages stay on Strata until evicted")
        return False

    def get_stats(self):
        with self._lock:
            return dict(self._stats)

    def close(self) -> None:
        self._store.close()

    # -- helpers ------------------------------------------------------------------------------

    def _count(self, ok: list[bool]) -> None:
        with self._lock:
            self._stats["pages_read"] += sum(ok)
            self._stats["pages_missing"] += len(ok) - sum(ok)

    def _failed(self, operation: str, error: BaseException) -> None:
        with self._lock:
            self._stats["errors"] += 1
        logger.warning("StrataHiCacheStorage %s failed: %s", operation, error)
