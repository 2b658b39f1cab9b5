"""LMCache backends on Strata: the multiprocess-mode L2 adapter and the remote connector plugin.

1. ``StrataL2Client``: the ``native_plugin`` L2 adapter of LMCache's multiprocess mode::

       --l2-adapter '{"type":"native_plugin","module_path":"strata_kv.lmcache",
                      "class_name":"StrataL2Client",
                      "adapter_params":{"seeds":"HOST:PORT,...","token":"..."}}'

   LMCache wraps it in its ``NativeConnectorL2Adapter``: submissions return an id at once, the
   event fd becomes readable when completions are ready, and ``drain_completions`` hands them
   over. Each submission is one asynchronous client call (``submit_get`` / ``submit_put`` /
   ``submit_lookup`` / ``submit_delete``), reading and writing LMCache's L1 memory in place.

2. ``StrataConnectorAdapter`` / ``StrataRemoteConnector``: the in-process remote connector, as a
   remote storage plugin (``remote_storage_plugins: ["strata"]``, ``plugin://strata``) or a
   ``strata://HOST:PORT[,HOST:PORT...]`` remote URL. Batched get/put/contains go to Strata in one
   call each; gets read straight into the memory objects LMCache allocates; the leading-run lookup
   answers ``batched_async_contains`` (pinning the run under a lease when asked to).

Keys: LMCache's key strings (``model@world@worker@chunkhash@dtype`` and the multiprocess form)
become Strata keys through ``strata_kv.keys.lmcache_key`` (docs/keys.md); ``l2_key`` says how the
multiprocess form is keyed.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ctypes
import threading
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse

from strata_kv import StrataError, StrataStore
from strata_kv.keys import as_key, lmcache_key

MISSING = -704  # the client's "not found" result


def _segment(obj: Any) -> tuple[int, int]:
    """(pointer, length) of LMCache's (writable) buffer, without copying it."""
    view = memoryview(obj).cast("B")
    if view.readonly:
        raise ValueError("LMCache buffer is read-only")
    if view.nbytes == 0:
        return 0, 0
    return ctypes.addressof(ctypes.c_char.from_buffer(view)), view.nbytes


def _client_config(params: dict[str, Any]) -> dict[str, Any]:
    """adapter_params (short names or strata.* names) -> StrataStore.from_config keys."""
    config: dict[str, Any] = {}
    for name in ("seeds", "node", "token", "timeout_ms", "connections"):
        for spelling in (name, "strata." + name):
            if spelling in params:
                config["strata." + name] = params[spelling]
    if not (config.get("strata.seeds") or config.get("strata.node")):
        raise ValueError("the Strata LMCache backend needs seeds (HOST:PORT,...) or node (HOST:PORT)")
    return config


def l2_key(key_str: str) -> bytes:
    """The Strata key of an L2 adapter key string.

    LMCache's classic key strings (``model@world@worker@chunkhash@dtype``) go through
    ``lmcache_key``; the multiprocess form the native_plugin adapter sends
    (``model@rank_hex@group_hex@chunkhash_hex[@salt]``, every field it identifies a chunk by) is
    hashed as a string key (docs/keys.md).
    """
    try:
        return lmcache_key(key_str)
    except ValueError:
        return as_key(key_str)


class StrataL2Client:
    """LMCache ``native_plugin`` L2 client (event fd + submit + drain) on Strata's async calls.

    adapter_params: ``seeds`` or ``node``; optional ``token``, ``timeout_ms`` (default 5000),
    ``connections`` (default 4), ``lease_ms`` (0: existence checks take no lease; LMCache pins
    on its side). Thread-safe: LMCache submits from its worker threads while its demux thread
    drains.
    """

    _GET, _SET, _EXISTS, _DELETE = "get", "set", "exists", "delete"

    def __init__(self, **adapter_params: Any) -> None:
        config = {"strata.timeout_ms": 5000, "strata.connections": 4, **_client_config(adapter_params)}
        self._lease_ms = int(adapter_params.get("lease_ms", 0))
        self._store = StrataStore.from_config(config)
        self._lock = threading.Lock()
        # ticket -> (operation, expected lengths for gets, buffers kept alive until completion)
        self._pending: dict[int, tuple[str, list[int], Any]] = {}
        self._closed = False

    def event_fd(self) -> int:
        return self._store.event_fd

    def _submit(self, operation: str, submit, expected: list[int], keep: Any) -> int:
        with self._lock:
            if self._closed:
                raise RuntimeError("StrataL2Client is closed")
            ticket = int(submit())
            self._pending[ticket] = (operation, expected, keep)
            return ticket

    def submit_batch_get(self, keys: list[str], memoryviews: list[Any]) -> int:
        buffers = [[_segment(view)] for view in memoryviews]
        strata_keys = [l2_key(key) for key in keys]
        return self._submit(
            self._GET,
            lambda: self._store.submit_get(strata_keys, buffers),
            [segments[0][1] for segments in buffers],
            memoryviews,
        )

    def submit_batch_set(self, keys: list[str], memoryviews: list[Any]) -> int:
        strata_keys = [l2_key(key) for key in keys]
        buffers = [[_segment(view)] for view in memoryviews]
        return self._submit(
            self._SET, lambda: self._store.submit_put(strata_keys, buffers), [], memoryviews
        )

    def submit_batch_exists(self, keys: list[str]) -> int:
        strata_keys = [l2_key(key) for key in keys]
        return self._submit(
            self._EXISTS, lambda: self._store.submit_lookup(strata_keys, lease_ms=self._lease_ms), [], None
        )

    def submit_batch_delete(self, keys: list[str]) -> int:
        strata_keys = [l2_key(key) for key in keys]
        return self._submit(self._DELETE, lambda: self._store.submit_delete(strata_keys), [], None)

    def drain_completions(self) -> list[tuple[int, bool, str, Optional[list[bool]]]]:
        """(future id, ok, error message, per-key results) for every finished submission."""
        drained = []
        with self._lock:
            if self._closed:
                return []
            while True:
                completions = self._store.poll_completions(256)
                if not completions:
                    break
                for completion in completions:
                    entry = self._pending.pop(completion.ticket, None)
                    if entry is not None:
                        drained.append(self._result(completion, *entry[:2]))
        return drained

    def _result(self, completion: Any, operation: str, expected: list[int]):
        ticket = completion.ticket
        if completion.status != 0:
            return ticket, False, f"strata {operation} failed with status {completion.status}", None
        if operation == self._EXISTS:
            found = completion.lookup
            return ticket, True, "", [tier != 0 for tier in found.tiers]
        results = list(completion.results)
        if operation == self._GET:
            # A block of another length is not this object: never deliver part of one.
            flags = [n == want for n, want in zip(results, expected)]
        else:
            flags = [n == 0 for n in results]
        error = "" if all(flags) else f"strata {operation}: per-key results {sorted(set(results))}"
        return ticket, all(flags), error, flags

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pending.clear()
        self._store.close()


# ---------------------------------------------------------------------------------------------
# The in-process remote connector (remote storage plugin)
# ---------------------------------------------------------------------------------------------

try:  # LMCache is optional for the rest of strata_kv; these classes need it.
    from lmcache.logging import init_logger
    from lmcache.v1.protocol import RemoteMetadata
    from lmcache.v1.storage_backend.connector import (
        ConnectorAdapter,
        ConnectorContext,
        extract_plugin_type,
    )
    from lmcache.v1.storage_backend.connector.base_connector import RemoteConnector

    _HAVE_LMCACHE = True
except ImportError:  # pragma: no cover - exercised only without lmcache installed
    _HAVE_LMCACHE = False

if _HAVE_LMCACHE:
    logger = init_logger(__name__)

    PLUGIN_TYPE = "strata"

    def connector_config(url: str, extra_config: Optional[dict]) -> dict[str, Any]:
        """The client configuration of a strata:// URL or of plugin://strata (extra_config)."""
        extra = dict(extra_config or {})
        params = {k: v for k, v in extra.items() if k.startswith("strata.")}
        if url.startswith("strata://"):
            parsed = urlparse(url)
            params["strata.seeds"] = parsed.netloc.rsplit("@", 1)[-1]
            for name, values in parse_qs(parsed.query).items():
                params["strata." + name] = values[-1]
        return {"strata.timeout_ms": 5000, "strata.connections": 4, **_client_config(params)}

    class StrataRemoteConnector(RemoteConnector):
        """LMCache ``RemoteConnector`` on Strata: one call per batch, reads into LMCache memory.

        Each chunk is one Strata block: LMCache's remote metadata header (when
        ``save_chunk_meta`` is on, the default) followed by the chunk's bytes, written and read
        as two segments of one vectored request.
        """

        def __init__(self, context: "ConnectorContext", client_config: dict[str, Any]) -> None:
            backend = context.local_cpu_backend
            super().__init__(context.config, context.metadata or getattr(backend, "metadata", None))
            self.loop = context.loop
            self.local_cpu_backend = backend
            self.lease_ms = int((context.config.extra_config or {}).get("strata.lease_ms", 30000))
            self.store = StrataStore.from_config(client_config)
            # Blocking client calls run here, never on LMCache's event loop thread.
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="strata-lmcache"
            )
            # Leases taken by batched_async_contains(pin=True), by lookup id, until the read of
            # that lookup names (and so releases) them. Bounded: a lookup never read leaves its
            # lease to expire on the node (lease_ms), and its entry is dropped oldest first here.
            self._pins: "collections.OrderedDict[str, int]" = collections.OrderedDict()
            self._pins_lock = threading.Lock()

        def _key(self, key: Any) -> bytes:
            return lmcache_key(key.to_string())

        async def _run(self, fn, *args):
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

        # -- existence ------------------------------------------------------------------------

        def exists_sync(self, key: Any) -> bool:
            return self.store.lookup([self._key(key)], sizes=False).tiers[0] != 0

        async def exists(self, key: Any) -> bool:
            return await self._run(self.exists_sync, key)

        def support_batched_contains(self) -> bool:
            return True

        def batched_contains(self, keys: list[Any]) -> int:
            return self.store.lookup([self._key(k) for k in keys], sizes=False).leading_run

        def support_batched_async_contains(self) -> bool:
            return True

        async def batched_async_contains(self, lookup_id: str, keys: list[Any], pin: bool = False) -> int:
            strata_keys = [self._key(k) for k in keys]
            found = await self._run(
                lambda: self.store.lookup(strata_keys, lease_ms=self.lease_ms if pin else 0, sizes=False)
            )
            if found.lease:
                with self._pins_lock:
                    self._pins[lookup_id] = found.lease
                    while len(self._pins) > self.PINS_MAX:
                        self._pins.popitem(last=False)
            return found.leading_run

        #: Leases remembered for lookups not yet read (the node's per-connection limit is 1024).
        PINS_MAX = 1024

        def _take_pin(self, lookup_id: str) -> int:
            with self._pins_lock:
                return self._pins.pop(lookup_id, 0)

        # -- get ------------------------------------------------------------------------------

        def _read(self, keys: list[Any], lease: int = 0) -> list[Any]:
            """Reads chunks into newly allocated memory objects; None where a chunk is missing.

            One LOOKUP gives each chunk's stored length; one GET then reads every present chunk,
            naming ``lease`` (the pin batched_async_contains took for this lookup, released by
            that read; a chunk evicted between the two calls without one is only a miss). A full chunk lands in place: its header and its bytes are the two segments of
            one vectored read straight into the LMCache object. A partial chunk (a prompt's tail,
            stored with a shorter length) is read whole into a scratch buffer first, since its
            object's shape is known only from its header.
            """
            strata_keys = [self._key(k) for k in keys]
            results: list[Any] = [None] * len(keys)
            try:
                found = self.store.lookup(strata_keys)
            except StrataError as error:
                logger.warning("Strata lookup failed: %s", error)
                return results
            header_bytes = self.remote_metadata_bytes if self.save_chunk_meta else 0
            full = header_bytes + self.full_chunk_size_bytes
            plans = []  # (index, object or None, header buffer or None, scratch or None)
            buffers = []
            for i, size in enumerate(found.sizes):
                if size == 0:
                    continue
                if size > full or size <= header_bytes:
                    logger.warning("Strata chunk of %d bytes does not fit this LMCache layout", size)
                    continue
                if size == full or not self.save_chunk_meta:
                    obj = self.local_cpu_backend.allocate(self.meta_shapes, self.meta_dtypes, self.meta_fmt)
                    if obj is None:
                        continue
                    header = (ctypes.c_char * header_bytes)() if header_bytes else None
                    segments = [(obj.data_ptr, obj.get_size())]
                    if header is not None:
                        segments.insert(0, (ctypes.addressof(header), header_bytes))
                    plans.append((i, obj, header, None))
                    buffers.append(segments)
                else:
                    scratch = (ctypes.c_char * size)()
                    plans.append((i, None, None, scratch))
                    buffers.append([(ctypes.addressof(scratch), size)])
            if not plans:
                return results
            try:
                lengths = self.store.get_into([strata_keys[p[0]] for p in plans], buffers, lease=lease)
            except StrataError as error:
                logger.warning("Strata get failed: %s", error)
                lengths = [-1] * len(plans)
            for (i, obj, header, scratch), length in zip(plans, lengths):
                if scratch is not None:
                    results[i] = self._from_scratch(scratch, length)
                    continue
                checked = self._finish(obj, header, length)
                if checked is None:
                    obj.ref_count_down()
                results[i] = checked
            return results

        def _header(self, raw: bytes, data: int) -> Any:
            """The chunk's LMCache header, or None when it does not describe `data` bytes of this layout."""
            try:
                meta = RemoteMetadata.deserialize(raw)
            except Exception as error:  # a header that does not parse is not a chunk
                logger.warning("Strata chunk with a malformed header: %s", error)
                return None
            if meta.length != data or list(meta.dtypes) != list(self.meta_dtypes) or meta.fmt != self.meta_fmt:
                logger.warning(
                    "Strata chunk does not match this LMCache layout (length %d of %d, %s, %s)",
                    meta.length,
                    data,
                    meta.dtypes,
                    meta.fmt,
                )
                return None
            return meta

        def _from_scratch(self, scratch: Any, length: int) -> Any:
            """A partial chunk read whole: its header gives its shape; its bytes are copied once."""
            if length != len(scratch):
                if length != MISSING:
                    logger.warning("Strata get of a partial chunk returned %d", length)
                return None
            data = length - self.remote_metadata_bytes
            meta = self._header(bytes(scratch[: self.remote_metadata_bytes]), data)
            if meta is None:
                return None
            obj = self.local_cpu_backend.allocate(meta.shapes, meta.dtypes, meta.fmt)
            if obj is None:
                return None
            if obj.get_size() != data:
                obj.ref_count_down()
                return None
            ctypes.memmove(obj.data_ptr, ctypes.addressof(scratch) + self.remote_metadata_bytes, data)
            return obj

        def _finish(self, obj: Any, header: Any, length: int) -> Any:
            """The object holding a read of `length` bytes, or None when it is not a valid chunk."""
            if length <= 0:
                if length != MISSING:
                    logger.warning("Strata get of a chunk returned %d", length)
                return None
            if header is not None:
                data = length - self.remote_metadata_bytes
                if data != obj.get_size() or self._header(bytes(header), data) is None:
                    return None
                return obj
            try:
                return self.reshape_partial_chunk(obj, length)
            except ValueError as error:
                logger.warning("Strata chunk of %d bytes rejected: %s", length, error)
                return None

        async def get(self, key: Any) -> Optional[Any]:
            return (await self._run(self._read, [key]))[0]

        def support_batched_get(self) -> bool:
            return True

        async def batched_get(self, keys: list[Any]) -> list[Optional[Any]]:
            return await self._run(self._read, list(keys))

        def support_batched_get_non_blocking(self) -> bool:
            return True

        async def batched_get_non_blocking(self, lookup_id: str, keys: list[Any]) -> list[Any]:
            objects = await self._run(self._read, list(keys), self._take_pin(lookup_id))
            prefix = []
            for obj in objects:
                if obj is None:
                    break
                prefix.append(obj)
            for obj in objects[len(prefix) :]:
                if obj is not None:
                    obj.ref_count_down()
            return prefix

        # -- put ------------------------------------------------------------------------------

        def _write(self, keys: list[Any], objects: list[Any]) -> None:
            buffers = []
            keep = []
            for obj in objects:
                segments = [(obj.data_ptr, obj.get_size())]
                if self.save_chunk_meta:
                    header = RemoteMetadata(
                        obj.get_size(), obj.get_shapes(), obj.get_dtypes(), obj.get_memory_format()
                    ).serialize()
                    raw = ctypes.create_string_buffer(header, len(header))
                    keep.append(raw)
                    segments.insert(0, (ctypes.addressof(raw), len(header)))
                buffers.append(segments)
            results = self.store.put_from([self._key(k) for k in keys], buffers)
            failed = [r for r in results if r != 0]
            if failed:
                raise StrataError(failed[0], f"Strata put: {len(failed)} of {len(results)} chunks not stored")

        async def put(self, key: Any, memory_obj: Any) -> None:
            await self._run(self._write, [key], [memory_obj])

        def support_batched_put(self) -> bool:
            return True

        async def batched_put(self, keys: list[Any], memory_objs: list[Any]) -> None:
            await self._run(self._write, list(keys), list(memory_objs))

        # -- the rest -------------------------------------------------------------------------

        def remove_sync(self, key: Any) -> bool:
            return self.store.remove([self._key(key)])[0] == 0

        async def list(self) -> list[str]:
            # Strata names blocks by hash: there is no listing of LMCache's key strings.
            return []

        def support_ping(self) -> bool:
            return True

        async def ping(self) -> int:
            try:
                # One key (none is sent at all): a round trip that fails when the node is away.
                await self._run(lambda: self.store.lookup([bytes(32)], sizes=False))
                return 0
            except StrataError as error:
                return int(getattr(error, "code", 1)) or 1

        async def close(self) -> None:
            self._pool.shutdown(wait=True)
            self.store.close()

    class StrataConnectorAdapter(ConnectorAdapter):
        """Creates StrataRemoteConnector for strata://HOST:PORT[,...] and plugin://strata URLs."""

        def __init__(self) -> None:
            super().__init__("strata://")

        def can_parse(self, url: str) -> bool:
            if url.startswith(self.schema):
                return True
            return url.startswith("plugin://") and extract_plugin_type(url[len("plugin://") :]) == PLUGIN_TYPE

        def create_connector(self, context: "ConnectorContext") -> "RemoteConnector":
            config = connector_config(context.url, context.config.extra_config if context.config else None)
            logger.info("Creating Strata connector for %s (%s)", context.url, config.get("strata.seeds") or config.get("strata.node"))
            return StrataRemoteConnector(context, config)
