"""vLLM KV connector (v1 API) that loads and saves prefix blocks through Strata.

Select it with::

    --kv-transfer-config '{"kv_connector":"StrataConnector",
                           "kv_connector_module_path":"strata_kv.vllm",
                           "kv_role":"kv_both",
                           "kv_connector_extra_config":{"strata.seeds":"HOST:PORT,...",
                                                        "strata.token":"..."}}'

How it works (docs/integrations.md has the whole story):

- Scheduler side: ``get_num_new_matched_tokens`` turns the request's ``block_hashes`` into Strata
  keys (``strata_kv.keys.vllm_block_key``: the hash, the layout and the salt) and asks for them in
  one leased LOOKUP; only the leading run of present blocks counts, and never the block holding the
  prompt's last token (vLLM must compute at least one token). ``update_state_after_alloc`` and
  ``build_connector_meta`` hand the worker the block hashes, the lease and the block ids to fill,
  and the full blocks each step computes that Strata does not hold yet; each worker keys the hashes
  with its own layout (its tensor-parallel rank).
- Worker side: ``register_kv_caches`` works out, once, where each block's bytes lie in the paged
  KV tensors (one run per layer and per K/V plane) and registers the tensors with the client.
  ``start_load_kv`` reads every block with one vectored GET straight into those runs;
  ``wait_for_save`` stores new blocks with one vectored PUT per request without waiting for it;
  ``get_finished`` reports a finished request once its PUTs have completed, so vLLM frees its
  blocks only then. A block that fails to load is reported through
  ``get_block_ids_with_load_errors`` and vLLM recomputes it.
- Strata being unreachable never stops the engine: every call is bounded by the client's timeout,
  a failure turns into "no hit" (scheduler) or "recompute" (worker), the connector backs off for
  ``strata.retry_interval_s`` before trying again, and it logs one warning per
  ``strata.warn_interval_s``.

CUDA KV caches are moved through a pinned host staging buffer (the GPU path is built but has not
run in this project's CI; scripts/gpu-check.sh runs it where a GPU is lent).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import select
import threading
import time
from typing import TYPE_CHECKING, Any

import torch

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

from strata_kv import StrataError, StrataStore
from strata_kv.keys import Layout, vllm_block_key

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.attention.backend import AttentionMetadata
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

# A child of vLLM's logger, so its handlers and level apply.
logger = logging.getLogger("vllm.strata_kv")

# Defaults of the kv_connector_extra_config keys this connector reads (besides the client's own
# strata.seeds / strata.node / strata.token / strata.timeout_ms / strata.connections).
DEFAULTS: dict[str, Any] = {
    "strata.timeout_ms": 5000,
    "strata.connections": 4,
    "strata.lease_ms": 30000,  # pin looked-up blocks until the worker has read them
    "strata.salt": "",  # separates tenants or adapters: different salt, different keys
    "strata.model_id": None,  # defaults to the model (path or hub id, revision, quantization)
    "strata.save": True,  # store newly computed full blocks
    "strata.warn_interval_s": 30.0,  # at most one "Strata unreachable" warning per interval
    "strata.retry_interval_s": 5.0,  # after a failure, skip Strata this long (recompute)
    "strata.save_wait_s": 30.0,  # shutdown / preemption wait for PUTs in flight
    # "block": every block whole (all layers) in one vectored GET before the forward pass.
    # "layer": one ranged GET per group of strata.layers_per_load layers, each awaited only by
    # its layers (wait_for_layer_load), and saves captured layer by layer (save_kv_layer).
    "strata.load_mode": "block",
    "strata.layers_per_load": 1,
    # A block that fails to load (gone, corrupt, node down) is recomputed: the connector sets
    # vLLM's kv_load_failure_policy to "recompute" (vLLM's own default fails the request), unless
    # this is "fail".
    "strata.load_failure": "recompute",
}

#: Keys one leased LOOKUP may name (the C library's limit: one batch).
LEASED_LOOKUP_KEYS_MAX = 4096

LOAD_MODES = ("block", "layer")

_TORCH_DTYPE_TAGS = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float8_e4m3fn: "fp8_e4m3",
    torch.float8_e5m2: "fp8_e5m2",
    torch.uint8: "u8",
    torch.int8: "i8",
}


def dtype_tag(dtype: torch.dtype, cache_dtype: str = "auto") -> str:
    """The layout tag of a KV dtype (docs/keys.md: a-z, 0-9 and '_' only). vLLM keeps every fp8
    KV cache as torch.uint8, so a quantized cache is named by vLLM's ``cache_dtype`` ("fp8_e4m3",
    "fp8_e5m2", ...): caches of different formats never share keys."""
    if cache_dtype and cache_dtype != "auto":
        return re.sub(r"[^a-z0-9_]", "_", str(cache_dtype).lower())[:32]
    tag = _TORCH_DTYPE_TAGS.get(dtype)
    if tag is None:
        tag = str(dtype).removeprefix("torch.").lower()
    return tag


def default_model_id(model_config: Any) -> str:
    """What a layout's model is by default: the model itself (path or hub id, its revision and
    quantization), never the served name, which is an alias two different models may share."""
    model_id = str(model_config.model)
    revision = getattr(model_config, "revision", None)
    quantization = getattr(model_config, "quantization", None)
    if revision:
        model_id += f"@{revision}"
    if quantization:
        model_id += f"+{quantization}"
    return model_id


@dataclasses.dataclass
class LoadSpec:
    """Blocks the worker reads before this step's forward: block hashes[i] into block_ids[i].

    vLLM's block hashes travel, not Strata keys: each worker keys them with its own layout (its
    tensor-parallel rank). The lease covers the scheduler's lookup, made with rank 0's keys.
    """

    req_id: str
    hashes: list[bytes]
    block_ids: list[int]
    lease: int


@dataclasses.dataclass
class SaveSpec:
    """Full blocks this step computes that Strata does not hold yet: hashes[i] from block_ids[i]."""

    req_id: str
    hashes: list[bytes]
    block_ids: list[int]


@dataclasses.dataclass
class StrataConnectorMetadata(KVConnectorMetadata):
    loads: list[LoadSpec] = dataclasses.field(default_factory=list)
    saves: list[SaveSpec] = dataclasses.field(default_factory=list)
    # Requests preempted this step whose blocks may still be read by saves in flight.
    preempted: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _RequestState:
    """Scheduler-side bookkeeping of one running request."""

    request: "Request"
    block_ids: list[int] = dataclasses.field(default_factory=list)
    handled_blocks: int = 0  # blocks [0, handled) are loaded, locally cached, or being saved
    saving: bool = False  # some blocks were handed to the worker to save


@dataclasses.dataclass
class _Lookup:
    """A request's leased lookup: blocks [start, start + len(hashes)) are present and pinned."""

    start: int
    loadable: int  # the end of the range looked up
    hashes: list[bytes]
    lease: int
    taken_at: float  # time.monotonic()

    def fresh(self, start: int, loadable: int, now: float, lease_ms: int) -> bool:
        """Whether it still answers a lookup of the same range: the lease has half its time left."""
        return start == self.start and loadable == self.loadable and now - self.taken_at < lease_ms / 2000


class _Warner:
    """One warning per interval, with a count of what was suppressed in between."""

    def __init__(self, interval_s: float, clock=time.monotonic) -> None:
        self._interval = interval_s
        self._clock = clock
        self._last: float | None = None
        self._suppressed = 0
        self._lock = threading.Lock()

    def warn(self, message: str, *args: Any) -> None:
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self._interval:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        if suppressed:
            message += " (%d similar failures since the last warning)"
            args = (*args, suppressed)
        logger.warning(message, *args)


_WARNERS: dict[float, _Warner] = {}
_WARNERS_LOCK = threading.Lock()


def _process_warner(interval_s: float) -> _Warner:
    """The scheduler and the worker connector of one process share their warnings."""
    with _WARNERS_LOCK:
        return _WARNERS.setdefault(interval_s, _Warner(interval_s))


class _StoreHandle:
    """The client, opened lazily and reopened after failures, never faster than the retry interval.

    ``get()`` returns None while Strata is considered down: callers then behave as on a miss.
    """

    def __init__(self, config: dict[str, Any], warner: _Warner, clock=time.monotonic) -> None:
        self._config = config
        self._warner = warner
        self._clock = clock
        self._retry_s = float(config["strata.retry_interval_s"])
        self._store: StrataStore | None = None
        self._down_until = 0.0
        self._lock = threading.Lock()

    def get(self) -> StrataStore | None:
        with self._lock:
            # Backing off after a failure holds for an open client too: a node that stopped
            # answering must not cost every lookup, load and save its full timeout meanwhile.
            if self._clock() < self._down_until:
                return None
            if self._store is not None:
                return self._store
            try:
                self._store = StrataStore.from_config(self._config)
            except (StrataError, OSError) as error:
                self._down_until = self._clock() + self._retry_s
                self._warner.warn("Strata unreachable, computing KV instead: %s", error)
                return None
            return self._store

    def failed(self, error: BaseException) -> None:
        """A call failed: back off (recompute meanwhile) and warn at most once per interval."""
        with self._lock:
            self._down_until = self._clock() + self._retry_s
        self._warner.warn("Strata call failed, computing KV instead: %s", error)

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()


@dataclasses.dataclass
class _LayerRuns:
    """Where block b of one layer lies: base + b * block_stride + offset, for each run."""

    tensor: torch.Tensor
    base: int
    block_stride: int  # bytes
    runs: list[tuple[int, int]]  # (offset, length) in bytes, relative to the block's start


def block_runs(tensor: torch.Tensor, num_blocks: int) -> _LayerRuns:
    """Describes the byte runs of one block in a paged KV tensor.

    The block axis is the first axis of length ``num_blocks``; the axes before it (the K/V plane,
    say) give one run each, and the axes after it must be laid out contiguously (the block's
    [heads, tokens, head_size] bytes of that plane form one run). Any other layout is rejected
    with a clear error rather than read wrongly.
    """
    shape, strides = list(tensor.shape), list(tensor.stride())
    item = tensor.element_size()
    candidates = [dim for dim, length in enumerate(shape) if length == num_blocks]
    if not candidates:
        raise ValueError(f"KV tensor of shape {tuple(shape)} has no axis of {num_blocks} blocks")
    axis = max(candidates, key=lambda dim: strides[dim])  # the outermost such axis
    inner = 1
    for dim in range(len(shape) - 1, axis, -1):
        if strides[dim] != inner:
            raise ValueError(
                f"KV tensor of shape {tuple(shape)}, strides {tuple(strides)}: the bytes of a "
                "block are not contiguous after the block axis; this layout is not supported"
            )
        inner *= shape[dim]
    run_length = inner * item
    offsets = [0]
    for dim in range(axis):
        offsets = [o + i * strides[dim] * item for o in offsets for i in range(shape[dim])]
    return _LayerRuns(
        tensor=tensor,
        base=tensor.data_ptr(),
        block_stride=strides[axis] * item,
        runs=[(offset, run_length) for offset in offsets],
    )


def layer_order(name: str) -> list[Any]:
    """Sort key putting layer names in model order ("layers.2" before "layers.10")."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@dataclasses.dataclass
class BlockLayer:
    """One layer's place in a stored block (``offset``: blocks hold layers in sorted-name order)
    and in the paged KV cache (``runs``)."""

    name: str
    offset: int
    runs: _LayerRuns

    @property
    def nbytes(self) -> int:
        return sum(length for _, length in self.runs.runs)

    def segments(self, block_id: int) -> list[tuple[int, int]]:
        start = self.runs.base + block_id * self.runs.block_stride
        return [(start + offset, length) for offset, length in self.runs.runs]

    def views(self, block_id: int) -> list[torch.Tensor]:
        return run_views(self.runs, block_id)


def run_views(layer: _LayerRuns, block_id: int) -> list[torch.Tensor]:
    """Byte views of one layer's runs of one block, on the KV cache's device."""
    storage = layer.tensor.untyped_storage()
    flat = torch.empty(0, dtype=torch.uint8, device=layer.tensor.device).set_(storage)
    start = layer.base - storage.data_ptr() + block_id * layer.block_stride
    return [flat[start + offset : start + offset + length] for offset, length in layer.runs]


def split_kv_hazard(vllm_config: Any, layer_names: list[str], environ: Any = os.environ) -> str | None:
    """A warning when vLLM's CPU attention may decode this model wrong (docs/integrations.md):
    the KV cache group holds layers of different sliding windows (a hybrid model with the hybrid
    manager off, as a connector without SupportsHMA gets it) and the split of a decode's keys
    across threads is on (``VLLM_CPU_ATTN_SPLIT_KV``, 1 by default). None otherwise."""
    context = vllm_config.compilation_config.static_forward_context
    windows = {getattr(getattr(context.get(name), "impl", None), "sliding_window", None) for name in layer_names}
    if len(windows) < 2 or environ.get("VLLM_CPU_ATTN_SPLIT_KV", "1") == "0":
        return None
    shown = sorted("global" if window in (None, -1) else str(window) for window in windows)
    return (
        f"StrataConnector: this model's one KV cache group mixes attention windows ({', '.join(shown)}) "
        "and vLLM's CPU attention splits decodes across threads; vLLM then now and then decodes "
        "such models wrong (token 0 from the second token on). Set VLLM_CPU_ATTN_SPLIT_KV=0."
    )


def block_layers(layers: dict[str, _LayerRuns]) -> list[BlockLayer]:
    """Each layer's offset in a stored block (sorted-name order, the whole-block format), listed
    in model order (the order the forward pass needs them)."""
    placed, offset = [], 0
    for name in sorted(layers):
        placed.append(BlockLayer(name, offset, layers[name]))
        offset += placed[-1].nbytes
    return sorted(placed, key=lambda layer: layer_order(layer.name))


@dataclasses.dataclass
class _GroupLoad:
    """One ranged GET in flight: item i reads layers spans[i] of block block_ids[i]."""

    group: int
    block_ids: list[int]
    spans: list[list[BlockLayer]]
    expected: list[int]
    staging: torch.Tensor | None  # pinned host buffer (CUDA KV caches)


class LayerwiseLoader:
    """Loads blocks one layer group at a time (``strata.load_mode: layer``).

    ``submit`` issues one ranged GET per group of ``layers_per_load`` consecutive layers (model
    order), each item reading that group's bytes of one stored block straight into the paged KV
    cache. ``wait(layer)`` returns once the GET carrying that layer has completed, while later
    groups may still be in flight. A stored block keeps every layer in one object (the
    whole-block format), so both modes read what either wrote; the node checks the whole block's
    CRC-32C before it serves any range of it, and the client checks the range's own checksum.
    A block any of whose ranges fails is reported in ``failed`` (vLLM recomputes it).
    """

    def __init__(self, layers: list[BlockLayer], layers_per_load: int, on_gpu: bool = False) -> None:
        if layers_per_load < 1:
            raise ValueError(f"strata.layers_per_load must be at least 1, got {layers_per_load}")
        groups = [layers[i : i + layers_per_load] for i in range(0, len(layers), layers_per_load)]
        self.groups = [[layer.name for layer in group] for group in groups]
        self._group_of = {layer.name: g for g, group in enumerate(groups) for layer in group}
        # Each group's layers as maximal runs contiguous in the stored block: one GET item each.
        self._spans: list[list[list[BlockLayer]]] = []
        for group in groups:
            spans: list[list[BlockLayer]] = []
            for layer in sorted(group, key=lambda layer: layer.offset):
                last = spans[-1][-1] if spans else None
                if last is not None and last.offset + last.nbytes == layer.offset:
                    spans[-1].append(layer)
                else:
                    spans.append([layer])
            self._spans.append(spans)
        self._on_gpu = on_gpu
        self._inflight: dict[int, _GroupLoad] = {}
        self._waiting: list[set[int]] = [set() for _ in groups]
        self.failed: set[int] = set()
        self.loaded = 0  # block groups read
        self.gets = 0  # GETs submitted

    def busy(self) -> bool:
        return bool(self._inflight)

    def submit(self, store: Any, keys: list[bytes], block_ids: list[int], lease: int = 0) -> None:
        """One GET per layer group, in model order; the last one names the lookup's lease."""
        for g, spans in enumerate(self._spans):
            item_keys, offsets, buffers, items_blocks, item_spans, expected = [], [], [], [], [], []
            for key, block_id in zip(keys, block_ids):
                for span in spans:
                    item_keys.append(key)
                    offsets.append(span[0].offset)
                    items_blocks.append(block_id)
                    item_spans.append(span)
                    expected.append(sum(layer.nbytes for layer in span))
                    buffers.append([seg for layer in span for seg in layer.segments(block_id)])
            staging = None
            if self._on_gpu:
                staging = torch.empty(max(1, sum(expected)), dtype=torch.uint8, pin_memory=True)
                base, cursor, buffers = staging.data_ptr(), 0, []
                for length in expected:
                    buffers.append([(base + cursor, length)])
                    cursor += length
            try:
                ticket = store.submit_get(
                    item_keys, buffers, lease=lease if g == len(self._spans) - 1 else 0, offsets=offsets
                )
            except StrataError:
                self.failed.update(block_ids)
                raise
            self.gets += 1
            self._inflight[ticket] = _GroupLoad(g, items_blocks, item_spans, expected, staging)
            self._waiting[g].add(ticket)

    def complete(self, completion: Any) -> bool:
        """Takes a completion of one of this loader's GETs (False: not one of them)."""
        load = self._inflight.pop(completion.ticket, None)
        if load is None:
            return False
        self._waiting[load.group].discard(completion.ticket)
        results = completion.results if completion.status == 0 else [-1] * len(load.block_ids)
        ok = [i < len(results) and results[i] == want for i, want in enumerate(load.expected)]
        self.failed.update(block_id for block_id, good in zip(load.block_ids, ok) if not good)
        self.loaded += sum(ok)
        if load.staging is not None:
            cursor = 0
            for i, (block_id, span) in enumerate(zip(load.block_ids, load.spans)):
                if ok[i]:
                    for layer in span:
                        for view in layer.views(block_id):
                            view.copy_(load.staging[cursor : cursor + view.numel()], non_blocking=True)
                            cursor += view.numel()
                else:
                    cursor += load.expected[i]
            torch.cuda.current_stream().synchronize()
        return True

    def pump(self, store: Any, timeout_s: float, other: Any = None) -> None:
        """Waits up to timeout_s for completions and hands them out (``other`` takes the rest)."""
        if timeout_s > 0:
            select.select([store.event_fd], [], [], timeout_s)
        for completion in store.poll_completions(256):
            if not self.complete(completion) and other is not None:
                other(completion)

    def wait(self, layer_name: str, store: Any, deadline: float, other: Any = None) -> bool:
        """Returns once the GET carrying ``layer_name`` completed (True), or at the deadline
        (False: its blocks are then reported failed). Unknown layers have nothing to wait for."""
        group = self._group_of.get(layer_name)
        if group is None:
            return True
        return self._wait_until(lambda: not self._waiting[group], store, deadline, other)

    def wait_all(self, store: Any, deadline: float, other: Any = None) -> bool:
        return self._wait_until(lambda: not self._inflight, store, deadline, other)

    def _wait_until(self, done: Any, store: Any, deadline: float, other: Any) -> bool:
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                # Past every client timeout: count these blocks lost (recomputed).
                for load in self._inflight.values():
                    self.failed.update(load.block_ids)
                return False
            self.pump(store, min(0.1, left), other)
        return True


class StrataConnector(KVConnectorBase_V1):
    """A ``KVConnectorBase_V1`` that shares prefix KV blocks between vLLM instances via Strata."""

    @property
    def requires_kv_delivery(self) -> bool:
        # A cache, not a hand-off: a save dropped by a preemption is only a later miss.
        return False

    def __init__(
        self,
        vllm_config: "VllmConfig",
        role: KVConnectorRole,
        kv_cache_config: "KVCacheConfig | None" = None,
    ) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        extra = dict(self._kv_transfer_config.kv_connector_extra_config or {})
        self._config: dict[str, Any] = {**DEFAULTS, **extra}
        if not (self._config.get("strata.seeds") or self._config.get("strata.node")):
            raise ValueError(
                "StrataConnector needs strata.seeds (or strata.node) in kv_connector_extra_config"
            )
        self._block_size = vllm_config.cache_config.block_size
        self._warner = _process_warner(float(self._config["strata.warn_interval_s"]))
        self._store = _StoreHandle(self._config, self._warner)
        self._lease_ms = int(self._config["strata.lease_ms"])
        self._save = bool(self._config["strata.save"])
        self._save_wait_s = float(self._config["strata.save_wait_s"])
        self._mode = str(self._config["strata.load_mode"])
        if self._mode not in LOAD_MODES:
            raise ValueError(f"strata.load_mode must be one of {LOAD_MODES}, got {self._mode!r}")
        self._layers_per_load = int(self._config["strata.layers_per_load"])
        if self._layers_per_load < 1:
            raise ValueError(f"strata.layers_per_load must be at least 1, got {self._layers_per_load}")
        # A layer-wise wait gives up only past every client timeout (retries included).
        self._load_wait_s = 4 * int(self._config["strata.timeout_ms"]) / 1000 + 5
        salt = self._config["strata.salt"]
        self._salt = salt.encode() if isinstance(salt, str) else bytes(salt)
        load_failure = str(self._config["strata.load_failure"])
        if load_failure not in ("recompute", "fail"):
            raise ValueError(f"strata.load_failure must be 'recompute' or 'fail', got {load_failure!r}")
        transfer = self._kv_transfer_config
        if load_failure == "recompute" and getattr(transfer, "kv_load_failure_policy", "recompute") != "recompute":
            # The scheduler reads the policy after it made its connector (this object).
            transfer.kv_load_failure_policy = "recompute"
            logger.info(
                "StrataConnector: kv_load_failure_policy set to 'recompute': a block that fails to "
                "load is computed again instead of failing its request (strata.load_failure: fail keeps vLLM's)"
            )

        groups = kv_cache_config.kv_cache_groups if kv_cache_config is not None else []
        if len(groups) != 1:
            # vLLM gives a connector without SupportsHMA one group (hybrid models run with the
            # hybrid allocator off), so this is reached only by an engine that changed that rule.
            raise ValueError(
                f"StrataConnector supports one KV cache group; this engine has {len(groups)} "
                "(hybrid KV cache manager on). Run with --disable-hybrid-kv-cache-manager."
            )
        spec = groups[0].kv_cache_spec
        self._num_layers = len(groups[0].layer_names)
        self._block_bytes = spec.page_size_bytes * self._num_layers
        hash_block_size = getattr(kv_cache_config, "hash_block_size", None) or self._block_size
        if hash_block_size != self._block_size:
            raise ValueError(
                f"StrataConnector needs hash_block_size ({hash_block_size}) == block_size "
                f"({self._block_size})"
            )
        parallel = vllm_config.parallel_config
        unsupported = {
            name: size
            for name, size in (
                ("pipeline_parallel_size", getattr(parallel, "pipeline_parallel_size", 1)),
                ("prefill_context_parallel_size", getattr(parallel, "prefill_context_parallel_size", 1)),
                ("decode_context_parallel_size", getattr(parallel, "decode_context_parallel_size", 1)),
            )
            if (size or 1) > 1
        }
        if unsupported:
            # Each stage or shard would key its own part of a block under the same key as the
            # others' (only the tensor-parallel rank is in the layout): wrong KV, not a miss.
            raise ValueError(
                f"StrataConnector does not support {', '.join(f'{k}={v}' for k, v in unsupported.items())} "
                "yet: its stages or shards would share keys. Run with tensor parallelism only."
            )
        model_id = self._config["strata.model_id"] or default_model_id(vllm_config.model_config)
        if isinstance(model_id, list):
            model_id = model_id[0]
        self._layout = Layout(
            model_id=str(model_id),
            dtype=dtype_tag(spec.dtype, getattr(vllm_config.cache_config, "cache_dtype", "auto")),
            tokens_per_block=self._block_size,
            tp_rank=parallel.rank % max(parallel.tensor_parallel_size, 1),
            tp_size=parallel.tensor_parallel_size,
            layer_start=0,
            layer_end=self._num_layers,
        )
        algo = vllm_config.cache_config.prefix_caching_hash_algo
        if algo.startswith("xxhash") and os.getenv("PYTHONHASHSEED") is None:
            logger.warning(
                "prefix_caching_hash_algo=%s without PYTHONHASHSEED gives block hashes that differ "
                "between processes: Strata hits only within this process. Set PYTHONHASHSEED to "
                "the same value on every instance, or use sha256.",
                algo,
            )

        # Scheduler side.
        self._requests: dict[str, _RequestState] = {}
        self._lookups: dict[str, _Lookup] = {}  # req -> its last leased lookup
        self._loads: list[LoadSpec] = []

        # Worker side.
        self._layers: list[_LayerRuns] = []
        self._block_layers: dict[str, BlockLayer] = {}  # layer mode: each layer's place
        self._loader: LayerwiseLoader | None = None  # layer mode
        self._step_loaded: list[int] = []  # layer mode: blocks whose loads this step started
        self._snapshots: dict[int, tuple[torch.Tensor, set[str]]] = {}  # layer mode saves
        self._staging: torch.Tensor | None = None  # pinned host buffer for CUDA KV caches
        self._pending: dict[int, tuple[str, int]] = {}  # put ticket -> (req_id, block count)
        self._keep_alive: dict[int, torch.Tensor] = {}  # put ticket -> staging copy (CUDA path)
        self._pending_by_request: dict[str, int] = {}
        self._saved_requests: set[str] = set()  # requests with saves handed to this worker
        self._finishing: set[str] = set()
        self._load_errors: set[int] = set()
        self._stats = {
            "blocks_loaded": 0,
            "blocks_saved": 0,
            "load_failures": 0,
            "save_failures": 0,
            "layer_gets": 0,  # layer mode: ranged GETs issued
            "layer_waits": 0,  # layer mode: wait_for_layer_load calls in steps that loaded blocks
            "layer_snapshots": 0,  # layer mode: blocks saved from snapshots taken layer by layer
        }
        logger.info(
            "StrataConnector (%s): layout %s, %d bytes per block, load mode %s",
            role.name,
            self._layout,
            self._block_bytes,
            self._mode if self._mode == "block" else f"layer ({self._layers_per_load} per GET)",
        )

    # ------------------------------------------------------------------------------------------
    # Keys
    # ------------------------------------------------------------------------------------------

    def _keys(self, block_hashes: list[bytes]) -> list[bytes]:
        return [vllm_block_key(h, self._layout, self._salt) for h in block_hashes]

    # ------------------------------------------------------------------------------------------
    # Scheduler side
    # ------------------------------------------------------------------------------------------

    def get_num_new_matched_tokens(
        self, request: "Request", num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        self._requests.setdefault(request.request_id, _RequestState(request=request))
        previous = self._lookups.pop(request.request_id, None)
        size = self._block_size
        # vLLM must compute at least the prompt's last token, so that block is never loaded.
        loadable = min(len(request.block_hashes), (request.num_tokens - 1) // size)
        start = num_computed_tokens // size
        loadable = min(loadable, start + LEASED_LOOKUP_KEYS_MAX)
        if loadable <= start:
            return 0, False
        if previous is not None and previous.fresh(start, loadable, time.monotonic(), self._lease_ms):
            # A request left waiting is asked again every step: its lease still pins the blocks,
            # so the answer stands (a new lookup each step would pile up leases on the node).
            self._lookups[request.request_id] = previous
            return len(previous.hashes) * size, False
        store = self._store.get()
        if store is None:
            return 0, False
        hashes = [bytes(h) for h in request.block_hashes[start:loadable]]
        keys = self._keys(hashes)
        try:
            found = store.lookup(keys, lease_ms=self._lease_ms)
        except StrataError as error:
            self._store.failed(error)
            return 0, False
        hits = found.leading_run
        for i in range(hits):
            # A block of another length was written under another layout: never load it.
            if i < len(found.sizes) and found.sizes[i] not in (0, self._block_bytes):
                hits = i
                break
        if hits == 0:
            return 0, False
        self._lookups[request.request_id] = _Lookup(start, loadable, hashes[:hits], found.lease, time.monotonic())
        return hits * size, False

    def update_state_after_alloc(
        self, request: "Request", blocks: "KVCacheBlocks", num_external_tokens: int
    ) -> None:
        state = self._requests.setdefault(request.request_id, _RequestState(request=request))
        lookup = self._lookups.pop(request.request_id, None)
        if num_external_tokens <= 0 or lookup is None:
            return
        start, hashes, lease = lookup.start, lookup.hashes, lookup.lease
        count = num_external_tokens // self._block_size
        block_ids = blocks.get_block_ids()[0][start : start + count]
        self._loads.append(LoadSpec(request.request_id, hashes[:count], list(block_ids), lease))
        state.handled_blocks = max(state.handled_blocks, start + count)

    def build_connector_meta(self, scheduler_output: "SchedulerOutput") -> KVConnectorMetadata:
        meta = StrataConnectorMetadata(loads=self._loads)
        self._loads = []
        for req_id in scheduler_output.preempted_req_ids or ():
            state = self._requests.get(req_id)
            if state is not None and state.saving:
                meta.preempted.append(req_id)
        if meta.preempted:
            logger.info(
                "StrataConnector: %d preempted request(s) had blocks saved; the worker lets their "
                "saves finish before the blocks are reused",
                len(meta.preempted),
            )
        scheduled = scheduler_output.num_scheduled_tokens
        for new in scheduler_output.scheduled_new_reqs:
            state = self._requests.get(new.req_id)
            if state is None:
                continue
            state.block_ids = list(new.block_ids[0])
            # Blocks vLLM found in its own prefix cache were stored when first computed here.
            state.handled_blocks = max(state.handled_blocks, new.num_computed_tokens // self._block_size)
            self._plan_saves(state, new.num_computed_tokens + scheduled.get(new.req_id, 0), meta)
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            state = self._requests.get(req_id)
            if state is None:
                continue
            new_ids = cached.new_block_ids[i]
            if req_id in cached.resumed_req_ids:
                if new_ids is not None:
                    state.block_ids = list(new_ids[0])
            elif new_ids is not None:
                state.block_ids.extend(new_ids[0])
            self._plan_saves(state, cached.num_computed_tokens[i] + scheduled.get(req_id, 0), meta)
        return meta

    def _plan_saves(
        self, state: _RequestState, tokens_after_step: int, meta: StrataConnectorMetadata
    ) -> None:
        if not self._save:
            return
        hashes = state.request.block_hashes
        full = min(tokens_after_step // self._block_size, len(hashes), len(state.block_ids))
        if full <= state.handled_blocks:
            return
        first = state.handled_blocks
        meta.saves.append(
            SaveSpec(
                state.request.request_id,
                [bytes(h) for h in hashes[first:full]],
                state.block_ids[first:full],
            )
        )
        state.handled_blocks = full
        state.saving = True

    def update_connector_output(self, connector_output: Any) -> None:
        """Blocks that failed to load are computed again by vLLM; they must then be saved again
        too (a block missing or corrupt on one tensor-parallel rank would otherwise fail to load
        on every later request, since the scheduler had counted it as handled)."""
        invalid = getattr(connector_output, "invalid_block_ids", None)
        if not invalid:
            return
        for state in self._requests.values():
            for index, block_id in enumerate(state.block_ids[: state.handled_blocks]):
                if block_id in invalid:
                    state.handled_blocks = index
                    break

    def request_finished(
        self, request: "Request", block_ids: list[int]
    ) -> tuple[bool, dict[str, Any] | None]:
        self._lookups.pop(request.request_id, None)
        state = self._requests.pop(request.request_id, None)
        # A request with saves in flight keeps its blocks until get_finished reports it.
        return (state is not None and state.saving), None

    # ------------------------------------------------------------------------------------------
    # Worker side
    # ------------------------------------------------------------------------------------------

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        num_blocks = self._kv_cache_config.num_blocks
        runs = {name: block_runs(tensor, num_blocks) for name, tensor in kv_caches.items()}
        layers = [runs[name] for name in sorted(kv_caches)]
        block_bytes = sum(length for layer in layers for _, length in layer.runs)
        if block_bytes != self._block_bytes:
            raise ValueError(
                f"KV tensors hold {block_bytes} bytes per block, the KV cache spec says "
                f"{self._block_bytes}"
            )
        self._layers = layers
        first = layers[0].tensor
        if self._mode == "layer":
            placed = block_layers(runs)
            self._block_layers = {layer.name: layer for layer in placed}
            self._loader = LayerwiseLoader(placed, self._layers_per_load, on_gpu=first.device.type != "cpu")
        logger.info(
            "StrataConnector: %d KV tensors (%s, %s, %s), %d runs of %d bytes per block",
            len(layers),
            tuple(first.shape),
            first.dtype,
            first.device,
            sum(len(layer.runs) for layer in layers),
            layers[0].runs[0][1],
        )
        if first.device.type == "cpu":
            hazard = split_kv_hazard(self._vllm_config, list(kv_caches))
            if hazard is not None:
                logger.warning(hazard)
            store = self._store.get()
            if store is not None:
                seen: set[int] = set()
                for layer in layers:
                    storage = layer.tensor.untyped_storage()
                    if storage.data_ptr() in seen:
                        continue
                    seen.add(storage.data_ptr())
                    store.register_buffer(storage.data_ptr(), storage.nbytes())

    def _segments(self, block_id: int) -> list[tuple[int, int]]:
        segments = []
        for layer in self._layers:
            start = layer.base + block_id * layer.block_stride
            segments.extend((start + offset, length) for offset, length in layer.runs)
        return segments

    def _on_gpu(self) -> bool:
        return bool(self._layers) and self._layers[0].tensor.device.type != "cpu"

    def _staging_buffer(self, blocks: int) -> torch.Tensor:
        needed = blocks * self._block_bytes
        if self._staging is None or self._staging.numel() < needed:
            self._staging = torch.empty(needed, dtype=torch.uint8, pin_memory=True)
        return self._staging

    def _block_views(self, block_id: int) -> list[torch.Tensor]:
        """Byte views of one block's runs in device memory (CUDA path)."""
        return [view for layer in self._layers for view in run_views(layer, block_id)]

    def start_load_kv(self, forward_context: "ForwardContext", **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, StrataConnectorMetadata)
        for load in meta.loads:
            if self._loader is not None:
                self._load_layerwise(load)
            else:
                self._load(load)

    def _load_layerwise(self, load: LoadSpec) -> None:
        assert self._loader is not None
        store = self._store.get()
        if store is None:
            self._load_errors.update(load.block_ids)
            self._stats["load_failures"] += len(load.block_ids)
            return
        self._step_loaded.extend(load.block_ids)
        lease = load.lease if self._layout.tp_rank == 0 else 0
        try:
            self._loader.submit(store, self._keys(load.hashes), load.block_ids, lease=lease)
        except StrataError as error:
            self._store.failed(error)
        self._stats["layer_gets"] = self._loader.gets

    def _finish_layerwise_loads(self) -> None:
        """Waits for every layer GET still in flight and books their outcome (once per step)."""
        if self._loader is None:
            return
        store = self._store.get()
        if store is not None and self._loader.busy():
            if not self._loader.wait_all(store, time.monotonic() + self._load_wait_s, self._on_completion):
                self._warner.warn("Strata: layer loads still in flight after %.1f s; recomputing", self._load_wait_s)
        failed, self._loader.failed = self._loader.failed, set()
        if not self._step_loaded:
            return
        failed &= set(self._step_loaded)
        if failed:
            self._warner.warn("Strata: %d blocks failed to load layer-wise; recomputing", len(failed))
        self._load_errors.update(failed)
        self._stats["load_failures"] += len(failed)
        self._stats["blocks_loaded"] += len(set(self._step_loaded) - failed)
        self._step_loaded = []

    def _load(self, load: LoadSpec) -> None:
        store = self._store.get()
        if store is None:
            self._load_errors.update(load.block_ids)
            self._stats["load_failures"] += len(load.block_ids)
            return
        gpu = self._on_gpu()
        if gpu:
            staging = self._staging_buffer(len(load.block_ids))
            base = staging.data_ptr()
            buffers: list[Any] = [
                [(base + i * self._block_bytes, self._block_bytes)] for i in range(len(load.block_ids))
            ]
        else:
            buffers = [self._segments(block_id) for block_id in load.block_ids]
        # The lease pins rank 0's keys (the scheduler's lookup); other ranks read without it.
        lease = load.lease if self._layout.tp_rank == 0 else 0
        keys = self._keys(load.hashes)
        try:
            lengths = store.get_into(keys, buffers, lease=lease)
        except StrataError as error:
            self._store.failed(error)
            lengths = [-1] * len(load.hashes)
        failed = [b for b, n in zip(load.block_ids, lengths) if n != self._block_bytes]
        if failed:
            # vLLM recomputes from the first failed block on; report every block that failed.
            self._load_errors.update(failed)
            self._stats["load_failures"] += len(failed)
            self._warner.warn(
                "Strata: %d of %d blocks failed to load for request %s (results %s); recomputing",
                len(failed),
                len(load.block_ids),
                load.req_id,
                sorted(set(n for n in lengths if n != self._block_bytes)),
            )
        loaded = [i for i, n in enumerate(lengths) if n == self._block_bytes]
        self._stats["blocks_loaded"] += len(loaded)
        if gpu:
            for i in loaded:
                offset = i * self._block_bytes
                for view in self._block_views(load.block_ids[i]):
                    view.copy_(staging[offset : offset + view.numel()], non_blocking=True)
                    offset += view.numel()
            torch.cuda.current_stream().synchronize()

    def wait_for_layer_load(self, layer_name: str) -> None:
        # Block mode: every block was read whole in start_load_kv, before the forward pass.
        # Layer mode: wait only for the GET carrying this layer; later layers may be in flight.
        if self._loader is None or not self._step_loaded:
            return
        self._stats["layer_waits"] += 1
        if not self._loader.busy():
            return
        store = self._store.get()
        if store is None:
            return
        if not self._loader.wait(layer_name, store, time.monotonic() + self._load_wait_s, self._on_completion):
            self._warner.warn("Strata: layer %s not loaded after %.1f s; recomputing", layer_name, self._load_wait_s)

    def save_kv_layer(
        self,
        layer_name: str,
        kv_layer: torch.Tensor,
        attn_metadata: "AttentionMetadata",
        **kwargs: Any,
    ) -> None:
        # Block mode: blocks are saved whole (all layers) in wait_for_save, after the forward pass.
        # Layer mode: this layer's bytes of every block to save are copied now into a host
        # snapshot at their place in the stored block (on a GPU the copy overlaps the later
        # layers); wait_for_save PUTs the snapshots.
        layer = self._block_layers.get(layer_name)
        if layer is None or not self._save:
            return
        meta = self._get_connector_metadata()
        if not isinstance(meta, StrataConnectorMetadata):
            return
        gpu = self._on_gpu()
        for index, save in enumerate(meta.saves):
            snapshot = self._snapshots.get(index)
            if snapshot is None:
                host = torch.empty(len(save.block_ids) * self._block_bytes, dtype=torch.uint8, pin_memory=gpu)
                snapshot = self._snapshots[index] = (host, set())
            host, captured = snapshot
            for i, block_id in enumerate(save.block_ids):
                cursor = i * self._block_bytes + layer.offset
                for view in layer.views(block_id):
                    host[cursor : cursor + view.numel()].copy_(view, non_blocking=gpu)
                    cursor += view.numel()
            captured.add(layer_name)

    def wait_for_save(self) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, StrataConnectorMetadata)
        self._finish_layerwise_loads()
        snapshots, self._snapshots = self._snapshots, {}
        if snapshots and self._on_gpu():
            torch.cuda.current_stream().synchronize()
        for index, save in enumerate(meta.saves):
            self._saved_requests.add(save.req_id)
            snapshot = snapshots.get(index)
            if snapshot is not None and len(snapshot[1]) == len(self._block_layers):
                host = snapshot[0]
                base = host.data_ptr()
                buffers = [[(base + i * self._block_bytes, self._block_bytes)] for i in range(len(save.block_ids))]
                self._put(save, buffers, host)
                self._stats["layer_snapshots"] += len(save.block_ids)
            else:
                self._submit_save(save)  # some layer was not captured: read the KV cache now

    def _submit_save(self, save: SaveSpec) -> None:
        store = self._store.get()
        if store is None:
            self._stats["save_failures"] += len(save.hashes)
            return
        if self._on_gpu():
            # Copy out of the device first: the PUT then runs from host memory we own.
            host = torch.empty(len(save.block_ids) * self._block_bytes, dtype=torch.uint8, pin_memory=True)
            offset = 0
            for block_id in save.block_ids:
                for view in self._block_views(block_id):
                    host[offset : offset + view.numel()].copy_(view, non_blocking=True)
                    offset += view.numel()
            # The copies queue on the current stream; one wait for all of them before the PUT.
            torch.cuda.current_stream().synchronize()
            base = host.data_ptr()
            buffers: list[Any] = [
                [(base + i * self._block_bytes, self._block_bytes)] for i in range(len(save.block_ids))
            ]
        else:
            host = None
            buffers = [self._segments(block_id) for block_id in save.block_ids]
        self._put(save, buffers, host)

    def _put(self, save: SaveSpec, buffers: list[Any], host: torch.Tensor | None) -> None:
        """Submits one vectored PUT of a request's new blocks (``host`` lives until it completes)."""
        store = self._store.get()
        if store is None:
            self._stats["save_failures"] += len(save.hashes)
            return
        try:
            ticket = store.submit_put(self._keys(save.hashes), buffers)
        except StrataError as error:
            self._store.failed(error)
            self._stats["save_failures"] += len(save.hashes)
            return
        if host is not None:
            self._keep_alive[ticket] = host
        self._pending[ticket] = (save.req_id, len(save.hashes))
        self._pending_by_request[save.req_id] = self._pending_by_request.get(save.req_id, 0) + 1

    def _drain(self, timeout_s: float = 0.0) -> None:
        """Collects PUT completions; waits up to timeout_s for the first one."""
        store = self._store.get()
        if store is None or not (self._pending or (self._loader is not None and self._loader.busy())):
            if store is None and self._pending:
                # The client is gone: nothing will complete; release the requests.
                for ticket, (req_id, count) in list(self._pending.items()):
                    self._complete(ticket, req_id, ok=False, count=count)
            return
        if timeout_s > 0:
            select.select([store.event_fd], [], [], timeout_s)
        for completion in store.poll_completions(256):
            self._on_completion(completion)

    def _on_completion(self, completion: Any) -> None:
        """Routes one polled completion: a layer GET to the loader, a PUT to the save books."""
        if self._loader is not None and self._loader.complete(completion):
            return
        entry = self._pending.get(completion.ticket)
        if entry is None:
            return
        req_id, count = entry
        ok = completion.status == 0 and all(r == 0 for r in completion.results)
        if not ok:
            self._warner.warn(
                "Strata: saving %d blocks of request %s failed (status %d, results %s)",
                count,
                req_id,
                completion.status,
                sorted(set(completion.results)),
            )
        self._complete(completion.ticket, req_id, ok, count)

    def _complete(self, ticket: int, req_id: str, ok: bool, count: int) -> None:
        self._pending.pop(ticket, None)
        self._keep_alive.pop(ticket, None)
        self._stats["blocks_saved" if ok else "save_failures"] += count
        left = self._pending_by_request.get(req_id, 1) - 1
        if left <= 0:
            self._pending_by_request.pop(req_id, None)
        else:
            self._pending_by_request[req_id] = left

    def _wait_all(self, timeout_s: float, busy=None) -> None:
        """Waits until no save is in flight (or none of those `busy` says matter), or the timeout."""
        busy = busy or (lambda: bool(self._pending))
        deadline = time.monotonic() + timeout_s
        while busy() and time.monotonic() < deadline:
            self._drain(timeout_s=min(0.1, max(0.0, deadline - time.monotonic())))
        if busy():
            self._warner.warn("Strata: %d saves still in flight after %.1f s", len(self._pending), timeout_s)

    def handle_preemptions(self, kv_connector_metadata: KVConnectorMetadata) -> None:
        # A preempted request's blocks are reused at once: no PUT may still be reading them.
        assert isinstance(kv_connector_metadata, StrataConnectorMetadata)
        preempted = set(kv_connector_metadata.preempted)
        if preempted:
            self._wait_all(self._save_wait_s, lambda: any(self._pending_by_request.get(r) for r in preempted))

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        self._drain()
        self._finishing.update(r for r in finished_req_ids if r in self._saved_requests)
        done = {r for r in self._finishing if self._pending_by_request.get(r, 0) == 0}
        self._finishing -= done
        self._saved_requests -= done
        return (done or None), None

    def get_block_ids_with_load_errors(self) -> set[int]:
        self._finish_layerwise_loads()  # no-op unless wait_for_save was deferred
        errors, self._load_errors = self._load_errors, set()
        return errors

    def shutdown(self) -> None:
        self._wait_all(self._save_wait_s)
        self._store.close()
        if self._role == KVConnectorRole.WORKER:
            logger.info("StrataConnector: %s", self._stats)

    @property
    def stats(self) -> dict[str, int]:
        """Blocks loaded and saved, and failures, since start (worker side)."""
        return dict(self._stats)
