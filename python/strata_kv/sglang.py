"""SGLang HiCache storage backend on Strata (``--hicache-storage-backend dynamic``).

Configuration::

    --enable-hierarchical-cache --hicache-storage-backend dynamic
    --hicache-storage-backend-extra-config '{"backend_name":"strata",
        "module_path":"strata_kv.sglang","class_name":"StrataHiCacheStorage",
        "interface_v1":1,"strata.seeds":"HOST:PORT,...","strata.token":"..."}'

``interface_v1: 1`` selects SGLang's page-based zero-copy path: ``batch_get_v1`` /
``batch_set_v1`` move whole pages between Strata and the registered host memory pool. One page
is one Strata block: its K and V runs (and, in the layer-first layout, every layer's runs) travel
as the segments of one vectored request, located by the pool's own ``get_page_buffer_meta``.
``batch_exists`` answers with the leading run of one LOOKUP. The plain ``get`` / ``set`` /
``batch_get`` / ``batch_set`` / ``exists`` (SGLang's generic path) work on flat page tensors.

Keys: SGLang's page hashes (chained SHA-256 hex strings) become Strata keys through
``strata_kv.keys.sglang_page_key``, with the layout (model, dtype, page size, TP rank and size,
layers) folded in, so ranks and models never share keys.
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


def _tensor_segment(tensor: torch.Tensor) -> list[tuple[int, int]]:
    if not tensor.is_contiguous() or tensor.device.type != "cpu":
        raise ValueError("HiCache page tensors must be contiguous host tensors")
    return [(tensor.data_ptr(), tensor.numel() * tensor.element_size())]


class StrataHiCacheStorage(HiCacheStorage):
    """A ``HiCacheStorage`` whose pages live on a Strata node or cluster."""

    def __init__(self, storage_config: HiCacheStorageConfig, kwargs: Optional[dict] = None) -> None:
        self.storage_config = storage_config
        extra = dict(storage_config.extra_config or {})
        self._store = StrataStore.from_config(_config(extra))
        self._model = str(extra.get("strata.model_id") or storage_config.model_name or "model")
        # MLA KV is the same on every TP rank: one copy, shared by all ranks, written by one.
        self._rank = 0 if storage_config.is_mla_model else storage_config.tp_rank
        self._ranks = 1 if storage_config.is_mla_model else storage_config.tp_size
        self._writer = storage_config.is_storage_writer
        self._layout: Optional[Layout] = None
        self._page_bytes = 0
        self._lock = threading.Lock()
        self._stats = {"pages_read": 0, "pages_written": 0, "pages_missing": 0, "errors": 0}

    # -- registration -------------------------------------------------------------------------

    def register_mem_pool_host(self, mem_pool_host: Any) -> None:
        super().register_mem_pool_host(mem_pool_host)
        pool = mem_pool_host
        layers = int(getattr(pool, "layer_num"))
        dtype = _DTYPE_TAGS.get(pool.dtype, str(pool.dtype).removeprefix("torch.").lower())
        self._layout = Layout(
            model_id=self._model,
            dtype=dtype,
            tokens_per_block=int(pool.page_size),
            tp_rank=self._rank,
            tp_size=self._ranks,
            layer_start=0,
            layer_end=layers,
        )
        self._page_bytes = pool.get_dummy_flat_data_page().numel() * pool.dtype.itemsize
        buffer = getattr(pool, "kv_buffer", None)
        if isinstance(buffer, torch.Tensor) and buffer.device.type == "cpu":
            self._store.register_buffer(buffer.data_ptr(), buffer.numel() * buffer.element_size())
        logger.info("StrataHiCacheStorage: %s, %d bytes per page", self._layout, self._page_bytes)

    def _keys(self, keys: List[str]) -> list[bytes]:
        if self._layout is None:
            raise RuntimeError("StrataHiCacheStorage: register_mem_pool_host was not called")
        return [sglang_page_key(key, self._layout, rank=self._rank) for key in keys]

    def _page_segments(self, keys: List[str], host_indices: torch.Tensor) -> list[list[tuple[int, int]]]:
        pool = self.mem_pool_host
        if len(host_indices) != len(keys) * pool.page_size:
            raise ValueError(
                f"{len(keys)} pages need {len(keys) * pool.page_size} host indices, got {len(host_indices)}"
            )
        pointers, sizes = pool.get_page_buffer_meta(host_indices)
        per_page = len(pointers) // max(len(keys), 1)
        if per_page * len(keys) != len(pointers):
            raise ValueError(f"the host pool gave {len(pointers)} buffers for {len(keys)} pages")
        return [
            [(int(pointers[p * per_page + j]), int(sizes[p * per_page + j])) for j in range(per_page)]
            for p in range(len(keys))
        ]

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
        segments = self._page_segments(keys, host_indices)
        strata_keys = self._keys(keys)
        try:
            # Pages already stored are not sent again: one LOOKUP, then one PUT of the rest.
            present = self._store.lookup(strata_keys).tiers
            todo = [i for i, tier in enumerate(present) if tier == 0]
            results = [0] * len(keys)
            if todo:
                stored = self._store.put_from([strata_keys[i] for i in todo], [segments[i] for i in todo])
                for i, result in zip(todo, stored):
                    results[i] = result
        except StrataError as error:
            self._failed("set", error)
            return [False] * len(keys)
        with self._lock:
            self._stats["pages_written"] += sum(1 for r in results if r == 0)
        return [r == 0 for r in results]

    def batch_exists(self, keys: List[str], extra_info: Optional[HiCacheStorageExtraInfo] = None) -> int:
        if not keys:
            return 0
        try:
            return self._store.lookup(self._keys(keys)).leading_run
        except StrataError as error:
            self._failed("exists", error)
            return 0

    # -- generic interface (flat page tensors) ------------------------------------------------

    def get(self, key: str, target_location: Optional[Any] = None, target_sizes: Optional[Any] = None):
        return self.batch_get([key], [target_location])[0]

    def batch_get(self, keys: List[str], target_locations: Optional[Any] = None, target_sizes: Optional[Any] = None):
        if not keys:
            return []
        if target_locations is None:
            target_locations = [self.mem_pool_host.get_dummy_flat_data_page() for _ in keys]
        try:
            lengths = self._store.get_into(self._keys(keys), [_tensor_segment(t) for t in target_locations])
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
            results = self._store.put_from(self._keys(keys), [_tensor_segment(p) for p in pages])
        except StrataError as error:
            self._failed("set", error)
            return False
        with self._lock:
            self._stats["pages_written"] += sum(1 for r in results if r == 0)
        return all(r == 0 for r in results)

    def exists(self, key: str) -> bool:
        return self.batch_exists([key]) == 1

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
