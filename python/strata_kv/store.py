"""``StrataStore``: the Strata client for Python workers, over libstrata_client's C ABI (ctypes).

Two faces on one object:

* the native API: ``lookup`` (leases, sizes), ``get_into`` / ``put_from`` of whole batches into
  any buffer (or scattered segments), ``get_range_into``, ``remove``, ``register_buffer``,
  submissions with tickets (``submit_get`` …, ``event_fd``, ``poll_completions``) and their
  ``asyncio`` forms (``aget_into`` …). Whole-call failures raise ``StrataError``.
* the Mooncake Store method names and return conventions (``setup``, ``put``, ``get``,
  ``put_from(key, ptr, size)``, ``batch_get_into``, ``is_exist``, ``get_size``, …): integer codes,
  0 or a byte count for success, negative Mooncake codes (``-704`` not found) otherwise.

Per-key codes of both faces (negative; docs/client.md, "Python"):

    -704 not found   -10 destination too small   -600 range outside the block or wrong sizes
    -800 the bytes failed their checksum (never delivered)   -200 no space on the node
    -900 the node could not be reached or timed out   -1 any other failure

Thread safety: every method may be called from many threads at once (the C calls release the
GIL); ``close`` must not race with other calls. A store belongs to the process that opened it: a
child made by fork finds it closed (open stores only in processes started with exec).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
import weakref
from ctypes import byref, c_int, c_int64, c_size_t, c_uint8, c_uint64, c_void_p
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import _native
from ._buffers import Pins, per_key
from .keys import as_key

KeyLike = Union[bytes, bytearray, memoryview, str]

# Mooncake Store codes used for per-key and whole-call outcomes.
OK = 0
INTERNAL_ERROR = -1
BUFFER_OVERFLOW = -10
NO_AVAILABLE_HANDLE = -200
INVALID_PARAMS = -600
OBJECT_NOT_FOUND = -704
OBJECT_ALREADY_EXISTS = -705
TRANSFER_FAIL = -800
RPC_FAIL = -900

#: Strata's stable error codes (strata_client.h), by number.
ERROR_NAMES = {
    1: "invalid_argument", 2: "invalid_configuration", 3: "not_found", 4: "already_exists",
    5: "checksum_mismatch", 6: "resource_exhausted", 7: "io_error", 8: "protocol_error", 9: "unavailable",
    10: "timeout", 11: "permission_denied", 12: "unsupported", 13: "stale_epoch", 14: "cancelled", 15: "internal",
    16: "quorum_not_reached",
}
# io_error: the node's disk failed, or did not answer within the node's request deadline (the
# connection is fine): the transfer failed.
_MOONCAKE_OF_ERROR = {1: INVALID_PARAMS, 3: OBJECT_NOT_FOUND, 4: OBJECT_ALREADY_EXISTS, 5: TRANSFER_FAIL,
                      6: NO_AVAILABLE_HANDLE, 7: TRANSFER_FAIL, 9: RPC_FAIL, 10: RPC_FAIL, 11: INVALID_PARAMS,
                      16: TRANSFER_FAIL}
_GET_CODES = {-1: OBJECT_NOT_FOUND, -2: TRANSFER_FAIL, -3: BUFFER_OVERFLOW, -4: INVALID_PARAMS, -5: INVALID_PARAMS}
_PUT_CODES = [OK, OK, TRANSFER_FAIL, INVALID_PARAMS, NO_AVAILABLE_HANDLE]
_OPERATIONS = {1: "lookup", 2: "get", 3: "put", 4: "delete"}


# Every store with an open client, so that a child made by fork can forget them (below).
_OPEN_STORES: "weakref.WeakSet[StrataStore]" = weakref.WeakSet()


def _forget_inherited_stores() -> None:
    """In a child made by fork (without exec), the parent's clients stay the parent's: their
    threads did not come along and their connections are the parent's sessions. The child must
    neither use nor close them (a GOODBYE from it would end the parent's session, and the library
    cannot run in a child of a process whose threads it started): each becomes a closed store.
    Open a new StrataStore after fork only in a process started with exec (spawn)."""
    for store in list(_OPEN_STORES):
        store._handle = None
        store._lib = None
        store._readers = set()
        store._pending = {}
        store._futures = {}
    _OPEN_STORES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_stores)


class StrataError(Exception):
    """A whole call failed. ``code`` is Strata's stable error number (1 invalid argument … 16
    quorum not reached), ``name`` its name, ``mooncake_code`` the negative Mooncake-style code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.name = ERROR_NAMES.get(code, "unknown")
        self.message = message

    @property
    def mooncake_code(self) -> int:
        return _MOONCAKE_OF_ERROR.get(self.code, INTERNAL_ERROR)

    def __str__(self) -> str:
        return f"{self.message} [{self.name}, code {self.code}]"


@dataclass
class LookupResult:
    """Which keys are stored: ``leading_run`` leading keys present (the prefix to load instead of
    recomputing), ``lease`` (0 for none) to name in ``get_into``, per key ``tiers`` (0 absent,
    1 RAM, 2 NVMe) and ``sizes`` in bytes (0 for absent; empty when sizes were not asked for)."""

    leading_run: int
    lease: int
    tiers: List[int]
    sizes: List[int]


@dataclass
class Completion:
    """A finished submission: ``status`` 0, or the negative Mooncake-style code of a whole-call
    failure (``error`` then holds the ``StrataError``); ``results`` per key as the blocking call
    returns them; ``lookup`` for a lookup."""

    ticket: int
    status: int
    results: List[int]
    lookup: Optional[LookupResult] = None
    operation: str = ""
    error: Optional[StrataError] = None


def _check(rc: int, lib: ctypes.CDLL) -> None:
    if rc != 0:
        raise StrataError(rc, (lib.strata_last_error() or b"").decode("utf-8", "replace"))


def _keys(keys: Iterable[KeyLike]) -> Tuple[bytes, int]:
    if isinstance(keys, (bytes, bytearray, memoryview, str)):
        raise ValueError("keys: a list of keys is needed (wrap a single key in a list)")
    packed = [as_key(key) for key in keys]
    return b"".join(packed), len(packed)


@dataclass
class _Prepared:
    """Arguments of one call, converted, with the caller's objects pinned until it finishes."""

    keys: bytes
    count: int
    pins: Pins
    arrays: Dict[str, Any] = field(default_factory=dict)


class StrataStore:
    """A connection pool to a Strata node or cluster.

    ``StrataStore(node="host:port")`` or ``StrataStore(seeds="a:7400,b:7400")`` connects at once;
    ``StrataStore()`` connects on ``setup(...)`` (Mooncake style). ``connections`` per node,
    ``timeout_ms`` bounds every request. ``tls_ca`` (a PEM file: the CA that signed the nodes'
    certificates) makes every TCP connection TLS 1.3; ``tls_cert`` and ``tls_key`` add a client
    certificate. ``from_config(dict)`` takes ``strata.seeds``, ``strata.node``, ``strata.token``,
    ``strata.timeout_ms``, ``strata.connections``, ``strata.tls_ca``, ``strata.tls_cert``,
    ``strata.tls_key``, ``strata.same_host``, ``strata.shared_memory_bytes``.

    Same-host path: when the node runs on this machine the client talks to it over its Unix
    socket (``same_host=False`` keeps TCP); that local socket stays plaintext even with ``tls_ca``.
    ``shared_memory_bytes`` allocates shared memory (``shared_memory()``); blocks read into it or
    written from it move with one copy, made by the node.
    """

    def __init__(self, seeds: Optional[Union[str, Sequence[str]]] = None, node: Optional[str] = None,
                 token: str = "", connections: int = 4, timeout_ms: int = 30000, tls_ca: Optional[str] = None,
                 tls_cert: Optional[str] = None, tls_key: Optional[str] = None, same_host: bool = True,
                 shared_memory_bytes: int = 0) -> None:
        self._handle: Optional[int] = None
        self._lib: Optional[ctypes.CDLL] = None
        self._lock = threading.Lock()
        self._pending: Dict[int, Tuple[str, _Prepared]] = {}
        self._unclaimed: List[Completion] = []
        self._futures: Dict[int, "asyncio.Future[Completion]"] = {}
        self._readers: set = set()
        self._same_host, self._shared_memory_bytes = bool(same_host), int(shared_memory_bytes)
        if seeds is not None or node is not None:
            self._open(seeds, node, token, connections, timeout_ms, tls_ca, tls_cert, tls_key)

    # MARK: Construction

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "StrataStore":
        """A store from a flat dict (an engine's extra config): ``strata.seeds`` or ``strata.node``,
        ``strata.token``, ``strata.timeout_ms``, ``strata.connections`` (the prefix is optional)."""

        def value(name: str, default: Any = None) -> Any:
            return config.get(f"strata.{name}", config.get(name, default))

        seeds, node = value("seeds"), value("node")
        if seeds is None and node is None:
            raise ValueError("config: strata.seeds or strata.node is needed")
        same_host = value("same_host", True)
        if isinstance(same_host, str):
            same_host = same_host.strip().lower() not in ("0", "false", "no", "off")
        return cls(seeds=seeds, node=node, token=value("token", "") or "",
                   connections=int(value("connections", 4)), timeout_ms=int(value("timeout_ms", 30000)),
                   tls_ca=value("tls_ca"), tls_cert=value("tls_cert"), tls_key=value("tls_key"),
                   same_host=bool(same_host), shared_memory_bytes=int(value("shared_memory_bytes", 0)))

    def setup(self, local_hostname: str = "", metadata_server: str = "", global_segment_size: int = 0,
              local_buffer_size: int = 0, protocol: str = "tcp", rdma_devices: str = "",
              master_server_addr: str = "", *, seeds: Optional[Union[str, Sequence[str]]] = None,
              node: Optional[str] = None, token: str = "", connections: int = 4, timeout_ms: int = 30000,
              tls_ca: Optional[str] = None, tls_cert: Optional[str] = None, tls_key: Optional[str] = None) -> int:
        """Mooncake-style setup: connects to ``seeds``/``node`` (or ``master_server_addr``, taken as
        the Strata node or comma-separated seeds). The Mooncake sizing arguments are accepted and
        ignored (the nodes own their memory). Returns 0, or a negative code."""
        if self._handle is not None:
            return OBJECT_ALREADY_EXISTS
        try:
            self._open(seeds if seeds is not None else (master_server_addr or None), node, token, connections,
                       timeout_ms, tls_ca, tls_cert, tls_key)
        except StrataError as error:
            return error.mooncake_code
        except ValueError:
            return INVALID_PARAMS
        return OK

    def _open(self, seeds: Optional[Union[str, Sequence[str]]], node: Optional[str], token: str, connections: int,
              timeout_ms: int, tls_ca: Optional[str] = None, tls_cert: Optional[str] = None,
              tls_key: Optional[str] = None) -> None:
        if seeds is not None and not isinstance(seeds, str):
            seeds = ",".join(seeds)
        address = seeds or node
        if not address:
            raise ValueError("an address is needed: seeds='host:port,...' or node='host:port'")
        if not 0 <= connections <= 1024:
            raise ValueError(f"connections: {connections} is not 0..1024")
        if not 0 <= timeout_ms <= 0xFFFFFFFF:
            raise ValueError(f"timeout_ms: {timeout_ms} is out of range")
        if not 0 <= self._shared_memory_bytes < 1 << 63:
            raise ValueError(f"shared_memory_bytes: {self._shared_memory_bytes} is out of range")
        lib = _native.library()
        handle = ctypes.c_void_p()
        if tls_ca:
            if (tls_cert is None) != (tls_key is None):
                raise ValueError("tls_cert and tls_key go together")
        elif tls_cert or tls_key:
            raise ValueError("tls_cert and tls_key need tls_ca (the CA of the nodes' certificates)")
        # TLS covers the TCP connections; the same-host path (a local Unix socket) stays plaintext.
        _check(lib.strata_client_open_options(address.encode(), (token or "").encode(), connections, timeout_ms,
                                              1 if self._same_host else 0, self._shared_memory_bytes,
                                              tls_ca.encode() if tls_ca else None,
                                              tls_cert.encode() if tls_cert else None,
                                              tls_key.encode() if tls_key else None, byref(handle)), lib)
        self._lib = lib
        self._handle = handle.value
        _OPEN_STORES.add(self)

    def _client(self) -> Tuple[ctypes.CDLL, int]:
        if self._handle is None or self._lib is None:
            raise StrataError(1, "the store is not connected (closed, or setup() was not called)")
        return self._lib, self._handle

    def close(self) -> int:
        """Waits for submissions in flight, says GOODBYE and frees the client. Idempotent; returns 0."""
        # The event loops stop watching the completion descriptor while it is still open: once the
        # client is freed its number can be reused, and a loop still "watching" it would never
        # register the new descriptor of that number (an await on it would wait forever).
        fd = self._fd if self._handle is not None and self._readers else None
        handle, self._handle = self._handle, None
        _OPEN_STORES.discard(self)
        if handle is not None and self._lib is not None:
            for loop in list(self._readers):
                try:
                    loop.remove_reader(fd)
                except Exception:
                    pass
            self._readers.clear()
            self._lib.strata_client_close(handle)
            with self._lock:
                for _, prepared in self._pending.values():
                    prepared.pins.release()
                self._pending.clear()
                futures, self._futures = self._futures, {}
            for future in futures.values():
                cancelled = StrataError(14, "the store was closed before the call's completion was polled")
                _deliver(future, _fail, cancelled)
        return OK

    def __enter__(self) -> "StrataStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # MARK: Native API

    def lookup(self, keys: Sequence[KeyLike], lease_ms: int = 0, sizes: bool = True) -> LookupResult:
        """Which of ``keys`` are stored. ``lease_ms`` > 0 pins the leading run that long; name the
        lease in ``get_into`` (which releases it). ``sizes=False`` skips measuring block lengths."""
        lib, handle = self._client()
        prepared = self._prepare_lookup(keys, sizes)
        run, lease = c_size_t(0), c_uint64(0)
        _check(lib.strata_lookup_leased(handle, prepared.keys, prepared.count, _lease_ms(lease_ms),
                                        prepared.arrays["tiers"], prepared.arrays["sizes"], byref(run), byref(lease)),
               lib)
        return self._lookup_result(prepared, run.value, lease.value)

    def get_into(self, keys: Any, buffers: Any = None, size: Optional[int] = None, lease: int = 0) -> Any:
        """Reads blocks into caller memory.

        Native: ``get_into(keys, buffers, lease=0) -> list[int]``: per key a buffer-like (the block
        must fit) or a list of ``(address, length)`` segments / buffers (scatter: the block must fill
        them exactly); bytes read per key, or a negative code. Mooncake:
        ``get_into(key, buffer_ptr, size) -> int``.
        """
        if not isinstance(keys, (list, tuple)):
            return self.batch_get_into([keys], [buffers], [size])[0]
        return self._get(keys, buffers, lease, None)

    def get_range_into(self, key: KeyLike, buffer: Any, offset: int, length: int) -> int:
        """Reads ``length`` bytes at ``offset`` of one block into ``buffer`` (which holds at least
        that). Returns ``length``, or a negative code (-600 when the range is outside the block)."""
        if length <= 0 or offset < 0:
            raise ValueError(f"offset {offset} and length {length}: length must be positive, offset not negative")
        pins = Pins()
        try:
            address, capacity = pins.span(buffer, True, "buffer")
        finally:
            pins.release()
        if capacity < length:
            raise ValueError(f"buffer: {capacity} bytes cannot hold {length}")
        return self._get([key], [[(address, length)]], 0, [offset], keep=[buffer])[0]

    def put_from(self, keys: Any, buffers: Any = None, size: Optional[int] = None, config: Any = None) -> Any:
        """Writes blocks from caller memory (gathered from segments when a key has a list).

        Native: ``put_from(keys, buffers) -> list[int]``: 0 stored or already present, negative
        otherwise. Mooncake: ``put_from(key, buffer_ptr, size) -> int``.
        """
        if not isinstance(keys, (list, tuple)):
            return self.batch_put_from([keys], [buffers], [size])[0]
        lib, handle = self._client()
        prepared = self._prepare_put(keys, buffers)
        try:
            _check(lib.strata_putv(handle, prepared.keys, prepared.count, prepared.arrays["segments"],
                                   prepared.arrays["counts"], prepared.arrays["outcomes"]), lib)
            return _put_results(prepared)
        finally:
            prepared.pins.release()

    def remove(self, keys: Any, force: bool = False) -> Any:
        """Deletes blocks: per key 0, or -704 when it was not there. ``remove(key) -> int`` (Mooncake)."""
        if not isinstance(keys, (list, tuple)):
            return self.batch_remove([keys])[0]
        lib, handle = self._client()
        prepared = self._prepare_delete(keys)
        _check(lib.strata_delete(handle, prepared.keys, prepared.count, prepared.arrays["removed"]), lib)
        return _delete_results(prepared)

    def register_buffer(self, obj_or_ptr: Any, length: Optional[int] = None) -> int:
        """Registers host memory once (a pinned KV pool): later calls inside it reuse its region.
        Returns 0, or a negative code (-705 registered already, -600 overlap or bad range)."""
        lib, handle = self._client()
        address, size = self._span(obj_or_ptr, length)
        rc = lib.strata_register(handle, address, size)
        return OK if rc == 0 else StrataError(rc, "").mooncake_code

    def unregister_buffer(self, obj_or_ptr: Any) -> int:
        """Forgets a registered range (by its start). Returns 0, or -704 when none starts there."""
        lib, handle = self._client()
        address = obj_or_ptr if isinstance(obj_or_ptr, int) else self._span(obj_or_ptr, None)[0]
        rc = lib.strata_unregister(handle, address)
        return OK if rc == 0 else StrataError(rc, "").mooncake_code

    def shared_memory(self) -> Optional[memoryview]:
        """The client's shared memory (``shared_memory_bytes``) as a writable memoryview, or None.
        Blocks read into it or written from it over the same-host path move with one copy. Valid
        until ``close``."""
        lib, handle = self._client()
        base, length = c_void_p(), c_uint64(0)
        _check(lib.strata_shared_memory(handle, byref(base), byref(length)), lib)
        if not base.value or length.value == 0:
            return None
        return memoryview((ctypes.c_char * length.value).from_address(base.value)).cast("B")

    def stat(self) -> str:
        """The node's counters as JSON (the first node of a cluster)."""
        lib, handle = self._client()
        needed = c_size_t(0)
        buffer = ctypes.create_string_buffer(1 << 16)
        rc = lib.strata_stat(handle, buffer, len(buffer), byref(needed))
        if rc == 1 and needed.value >= len(buffer):
            buffer = ctypes.create_string_buffer(needed.value + 1)
            rc = lib.strata_stat(handle, buffer, len(buffer), byref(needed))
        _check(rc, lib)
        return buffer.value.decode()

    # MARK: Submissions

    @property
    def event_fd(self) -> int:
        """A descriptor readable exactly while completions wait (an eventfd): watch it, never read it."""
        return self._fd

    @property
    def _fd(self) -> int:
        lib, handle = self._client()
        fd = c_int(-1)
        _check(lib.strata_completion_fd(handle, byref(fd)), lib)
        return fd.value

    def submit_get(self, keys: Sequence[KeyLike], buffers: Any, lease: int = 0, _future: Any = None,
                   offsets: Optional[Sequence[int]] = None) -> int:
        """``get_into`` as a submission: returns a ticket at once. Keep the buffers untouched until
        its completion is polled. ``offsets`` (one per key) reads ranges: exactly the segments'
        total from that offset of each block (the node checks the whole block's checksum first)."""
        if offsets is not None and len(offsets) != len(keys):
            raise ValueError(f"offsets: {len(offsets)} for {len(keys)} keys")
        lib, handle = self._client()
        prepared = self._prepare_get(keys, buffers, None if offsets is None else list(offsets))
        return self._submit("get", prepared, _future, lambda ticket: lib.strata_submit_get(
            handle, prepared.keys, prepared.count, lease, prepared.arrays["segments"], prepared.arrays["counts"],
            prepared.arrays["offsets"], prepared.arrays["lengths"], ticket))

    def submit_put(self, keys: Sequence[KeyLike], buffers: Any, _future: Any = None) -> int:
        """``put_from`` as a submission."""
        lib, handle = self._client()
        prepared = self._prepare_put(keys, buffers)
        return self._submit("put", prepared, _future, lambda ticket: lib.strata_submit_put(
            handle, prepared.keys, prepared.count, prepared.arrays["segments"], prepared.arrays["counts"],
            prepared.arrays["outcomes"], ticket))

    def submit_lookup(self, keys: Sequence[KeyLike], lease_ms: int = 0, sizes: bool = True,
                      _future: Any = None) -> int:
        """``lookup`` as a submission (the completion's ``lookup`` holds the result)."""
        lib, handle = self._client()
        prepared = self._prepare_lookup(keys, sizes)
        return self._submit("lookup", prepared, _future, lambda ticket: lib.strata_submit_lookup(
            handle, prepared.keys, prepared.count, _lease_ms(lease_ms), prepared.arrays["tiers"],
            prepared.arrays["sizes"], ticket))

    def submit_delete(self, keys: Sequence[KeyLike], _future: Any = None) -> int:
        """``remove`` as a submission."""
        lib, handle = self._client()
        prepared = self._prepare_delete(keys)
        return self._submit("delete", prepared, _future, lambda ticket: lib.strata_submit_delete(
            handle, prepared.keys, prepared.count, prepared.arrays["removed"], ticket))

    def _submit(self, operation: str, prepared: _Prepared, future: Any, call: Any) -> int:
        lib, _ = self._client()
        ticket = c_uint64(0)
        # A poller on another thread must find the ticket (and the future awaiting it) registered.
        with self._lock:
            rc = call(byref(ticket))
            if rc == 0:
                self._pending[ticket.value] = (operation, prepared)
                if future is not None:
                    self._futures[ticket.value] = future
        if rc != 0:
            prepared.pins.release()
            _check(rc, lib)
        return ticket.value

    def poll_completions(self, max_count: int = 64) -> List[Completion]:
        """Up to ``max_count`` finished submissions (never blocks; [] when none is ready). Tickets an
        ``a…`` coroutine awaits are delivered to it instead."""
        return self._poll(max_count, claim=True)

    def _poll(self, max_count: int, claim: bool) -> List[Completion]:
        lib, handle = self._client()
        delivered: List[Completion] = []
        with self._lock:
            if claim and self._unclaimed:
                delivered, self._unclaimed = self._unclaimed[:max_count], self._unclaimed[max_count:]
            room = max(0, max_count - len(delivered)) if claim else max_count
            if room == 0:
                return delivered
            raw = (_native.CompletionStruct * room)()
            got = c_size_t(0)
            _check(lib.strata_poll_completions(handle, raw, room, byref(got)), lib)
            for entry in raw[:got.value]:
                operation, prepared = self._pending.pop(entry.ticket)
                completion = _completion(entry, operation, prepared)
                future = self._futures.pop(entry.ticket, None)
                if future is not None:
                    _deliver(future, _resolve, completion)
                elif claim:
                    delivered.append(completion)
                else:
                    self._unclaimed.append(completion)
        return delivered

    # MARK: asyncio

    async def aget_into(self, keys: Sequence[KeyLike], buffers: Any, lease: int = 0) -> List[int]:
        """``get_into`` awaited on the event descriptor (many may be in flight from one thread)."""
        return _raise_or_results(await self._await(lambda future: self.submit_get(keys, buffers, lease, future)))

    async def aput_from(self, keys: Sequence[KeyLike], buffers: Any) -> List[int]:
        return _raise_or_results(await self._await(lambda future: self.submit_put(keys, buffers, future)))

    async def alookup(self, keys: Sequence[KeyLike], lease_ms: int = 0, sizes: bool = True) -> LookupResult:
        completion = await self._await(lambda future: self.submit_lookup(keys, lease_ms, sizes, future))
        _raise_or_results(completion)
        assert completion.lookup is not None
        return completion.lookup

    async def aremove(self, keys: Sequence[KeyLike]) -> List[int]:
        return _raise_or_results(await self._await(lambda future: self.submit_delete(keys, future)))

    async def _await(self, submit: Any) -> Completion:
        loop = asyncio.get_running_loop()
        future: "asyncio.Future[Completion]" = loop.create_future()
        submit(future)
        if loop not in self._readers:
            loop.add_reader(self._fd, self._on_readable)
            self._readers.add(loop)
        self._on_readable()  # it may have finished already
        return await future

    def _on_readable(self) -> None:
        if self._handle is not None:
            self._poll(1024, claim=False)

    # MARK: Mooncake Store API

    def put(self, key: KeyLike, value: Any, config: Any = None) -> int:
        """Stores ``value`` (bytes or any buffer) under ``key``. 0, or a negative code."""
        return self.batch_put_from([key], [value])[0]

    def get(self, key: KeyLike) -> bytes:
        """The block stored under ``key`` as bytes (b"" when it is not there)."""
        size = self.get_size(key)
        if size < 0:
            return b""
        buffer = bytearray(size)
        got = self.batch_get_into([key], [buffer])[0]
        return bytes(buffer) if got == size else b""

    def batch_put_from(self, keys: Sequence[KeyLike], buffer_ptrs: Sequence[Any],
                       sizes: Optional[Sequence[Optional[int]]] = None, config: Any = None) -> List[int]:
        """Per key 0 (stored or already present) or a negative code; a whole-call failure gives
        every key its code."""
        try:
            return self.put_from(list(keys), _with_sizes(buffer_ptrs, sizes, len(keys)))
        except StrataError as error:
            return [error.mooncake_code] * len(keys)

    def batch_get_into(self, keys: Sequence[KeyLike], buffer_ptrs: Sequence[Any],
                       sizes: Optional[Sequence[Optional[int]]] = None) -> List[int]:
        """Per key the bytes read, or a negative code (-704 not found)."""
        try:
            return self._get(list(keys), _with_sizes(buffer_ptrs, sizes, len(keys)), 0, None)
        except StrataError as error:
            return [error.mooncake_code] * len(keys)

    def batch_put_from_multi_buffers(self, keys: Sequence[KeyLike], all_buffer_ptrs: Sequence[Sequence[int]],
                                     all_sizes: Sequence[Sequence[int]], config: Any = None) -> List[int]:
        """Each block gathered from several (address, size) buffers."""
        return self.batch_put_from(keys, _multi(all_buffer_ptrs, all_sizes, len(keys)))

    def batch_get_into_multi_buffers(self, keys: Sequence[KeyLike], all_buffer_ptrs: Sequence[Sequence[int]],
                                     all_sizes: Sequence[Sequence[int]], prefer_same_node: bool = False) -> List[int]:
        """Each block scattered over several (address, size) buffers, which it must fill exactly."""
        return self.batch_get_into(keys, _multi(all_buffer_ptrs, all_sizes, len(keys)))

    def is_exist(self, key: KeyLike) -> int:
        """1 when stored, 0 when not, a negative code when the lookup failed."""
        return self.batch_is_exist([key])[0]

    def batch_is_exist(self, keys: Sequence[KeyLike]) -> List[int]:
        try:
            return [1 if tier else 0 for tier in self.lookup(list(keys), sizes=False).tiers]
        except StrataError as error:
            return [error.mooncake_code] * len(keys)

    def get_size(self, key: KeyLike) -> int:
        """The block's length in bytes, or -704 when it is not there."""
        try:
            result = self.lookup([key])
        except StrataError as error:
            return error.mooncake_code
        return result.sizes[0] if result.tiers[0] else OBJECT_NOT_FOUND

    def batch_get_size(self, keys: Sequence[KeyLike]) -> List[int]:
        try:
            result = self.lookup(list(keys))
        except StrataError as error:
            return [error.mooncake_code] * len(keys)
        return [size if tier else OBJECT_NOT_FOUND for tier, size in zip(result.tiers, result.sizes)]

    def batch_remove(self, keys: Sequence[KeyLike]) -> List[int]:
        try:
            return self.remove(list(keys))
        except StrataError as error:
            return [error.mooncake_code] * len(keys)

    # MARK: Internals

    def _span(self, obj: Any, length: Optional[int]) -> Tuple[int, int]:
        if isinstance(obj, int):
            if length is None:
                raise ValueError("length: needed with a bare address")
            return obj, length
        pins = Pins()
        try:
            address, size = pins.span(obj, False, "buffer")
        finally:
            pins.release()
        return address, size if length is None else min(length, size)

    def _get(self, keys: Sequence[KeyLike], buffers: Any, lease: int, offsets: Optional[List[int]],
             keep: Optional[list] = None) -> List[int]:
        lib, handle = self._client()
        prepared = self._prepare_get(keys, buffers, offsets)
        if keep:
            prepared.pins.keep(keep)
        try:
            _check(lib.strata_getv(handle, prepared.keys, prepared.count, lease, prepared.arrays["segments"],
                                   prepared.arrays["counts"], prepared.arrays["offsets"], prepared.arrays["lengths"]),
                   lib)
            return _get_results(prepared)
        finally:
            prepared.pins.release()

    def _segments(self, keys: Sequence[KeyLike], buffers: Any, writable: bool) -> _Prepared:
        packed, count = _keys(keys)
        per_key(buffers, count, "buffers")
        pins = Pins()
        try:
            spans = [pins.segments(item, writable, f"buffers[{index}]") for index, item in enumerate(buffers)]
        except Exception:
            pins.release()
            raise
        segments = (_native.Segment * max(1, sum(len(parts) for parts in spans)))()
        counts = (c_size_t * max(1, count))()
        cursor = 0
        for index, parts in enumerate(spans):
            counts[index] = len(parts)
            for address, length in parts:
                segments[cursor].base = address
                segments[cursor].length = length
                cursor += 1
        return _Prepared(packed, count, pins, {"segments": segments, "counts": counts})

    def _prepare_get(self, keys: Sequence[KeyLike], buffers: Any, offsets: Optional[List[int]]) -> _Prepared:
        prepared = self._segments(keys, buffers, writable=True)
        prepared.arrays["lengths"] = (c_int64 * max(1, prepared.count))()
        prepared.arrays["offsets"] = (c_uint64 * len(offsets))(*offsets) if offsets is not None else None
        return prepared

    def _prepare_put(self, keys: Sequence[KeyLike], buffers: Any) -> _Prepared:
        prepared = self._segments(keys, buffers, writable=False)
        prepared.arrays["outcomes"] = (c_uint8 * max(1, prepared.count))()
        return prepared

    def _prepare_lookup(self, keys: Sequence[KeyLike], sizes: bool) -> _Prepared:
        packed, count = _keys(keys)
        return _Prepared(packed, count, Pins(), {
            "tiers": (c_uint8 * max(1, count))(),
            "sizes": (c_uint64 * max(1, count))() if sizes else None,
        })

    def _prepare_delete(self, keys: Sequence[KeyLike]) -> _Prepared:
        packed, count = _keys(keys)
        return _Prepared(packed, count, Pins(), {"removed": (c_uint8 * max(1, count))()})

    def _lookup_result(self, prepared: _Prepared, run: int, lease: int) -> LookupResult:
        tiers = list(prepared.arrays["tiers"][:prepared.count])
        sizes = prepared.arrays["sizes"]
        return LookupResult(run, lease, tiers, list(sizes[:prepared.count]) if sizes is not None else [])


def _lease_ms(lease_ms: int) -> int:
    if not 0 <= lease_ms <= 0xFFFFFFFF:
        raise ValueError(f"lease_ms: {lease_ms} is out of range")
    return lease_ms


def _get_results(prepared: _Prepared) -> List[int]:
    return [value if value >= 0 else _GET_CODES.get(value, INTERNAL_ERROR)
            for value in prepared.arrays["lengths"][:prepared.count]]


def _put_results(prepared: _Prepared) -> List[int]:
    return [_PUT_CODES[value] if value < len(_PUT_CODES) else INTERNAL_ERROR
            for value in prepared.arrays["outcomes"][:prepared.count]]


def _delete_results(prepared: _Prepared) -> List[int]:
    return [OK if removed else OBJECT_NOT_FOUND for removed in prepared.arrays["removed"][:prepared.count]]


def _completion(entry: Any, operation: str, prepared: _Prepared) -> Completion:
    prepared.pins.release()
    if entry.status != 0:
        error = StrataError(entry.status, entry.message.decode("utf-8", "replace"))
        return Completion(entry.ticket, error.mooncake_code, [], None, operation, error)
    if operation == "lookup":
        tiers = list(prepared.arrays["tiers"][:prepared.count])
        sizes = prepared.arrays["sizes"]
        lookup = LookupResult(entry.leading_run, entry.lease, tiers,
                              list(sizes[:prepared.count]) if sizes is not None else [])
        return Completion(entry.ticket, OK, tiers, lookup, operation)
    results = {"get": _get_results, "put": _put_results, "delete": _delete_results}[operation](prepared)
    return Completion(entry.ticket, OK, results, None, operation)


def _resolve(future: "asyncio.Future[Completion]", completion: Completion) -> None:
    if not future.done():
        future.set_result(completion)


def _deliver(future: "asyncio.Future[Completion]", how: Any, value: Any) -> None:
    """Hands ``value`` to ``future`` on its loop's thread (nothing when that loop has closed)."""
    try:
        future.get_loop().call_soon_threadsafe(how, future, value)
    except RuntimeError:
        pass


def _fail(future: "asyncio.Future[Completion]", error: StrataError) -> None:
    if not future.done():
        future.set_exception(error)


def _raise_or_results(completion: Completion) -> List[int]:
    if completion.error is not None:
        raise completion.error
    return completion.results


def _with_sizes(buffers: Sequence[Any], sizes: Optional[Sequence[Optional[int]]], count: int) -> List[Any]:
    """Mooncake passes (address, size) as two lists: pair them; buffer objects pass as they are."""
    if len(buffers) != count:
        raise ValueError(f"buffers: {len(buffers)} given for {count} key(s)")
    if sizes is not None and len(sizes) != count:
        raise ValueError(f"sizes: {len(sizes)} given for {count} key(s)")
    out = []
    for index, buffer in enumerate(buffers):
        size = sizes[index] if sizes is not None else None
        if isinstance(buffer, int):
            if size is None:
                raise ValueError(f"sizes[{index}]: needed with a bare address")
            out.append((buffer, size))
        elif size is not None and not isinstance(buffer, (list, tuple)):
            out.append([_prefix(buffer, size, index)])
        else:
            out.append(buffer)
    return out


def _prefix(buffer: Any, size: int, index: int) -> Any:
    """The first ``size`` bytes of a buffer object (a view, not a copy)."""
    try:
        view = memoryview(buffer).cast("B")
    except TypeError:
        return buffer  # torch tensors and ndarray-likes are taken whole
    if size > len(view):
        raise ValueError(f"sizes[{index}]: {size} is larger than the buffer's {len(view)} bytes")
    return view[:size]


def _multi(all_ptrs: Sequence[Sequence[int]], all_sizes: Sequence[Sequence[int]], count: int) -> List[Any]:
    if len(all_ptrs) != count or len(all_sizes) != count:
        raise ValueError(f"all_buffer_ptrs / all_sizes: {len(all_ptrs)} / {len(all_sizes)} given for {count} key(s)")
    out = []
    for index, (ptrs, sizes) in enumerate(zip(all_ptrs, all_sizes)):
        if len(ptrs) != len(sizes):
            raise ValueError(f"key {index}: {len(ptrs)} buffers but {len(sizes)} sizes")
        out.append([(int(ptr), int(size)) for ptr, size in zip(ptrs, sizes)])
    return out
