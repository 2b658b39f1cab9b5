"""Loading libstrata_client with ctypes and declaring its calls (Sources/StrataClientC/include/strata_client.h).

The library is searched for, in order:

1. the path in the ``STRATA_CLIENT_LIBRARY`` environment variable;
2. ``libstrata_client.so`` next to this package (what ``pip install ./python`` and the wheel ship);
3. the ``.build/release`` and then ``.build/debug`` folder of the Strata checkout this package
   lies in (a development checkout, before anything was installed).
"""

from __future__ import annotations

import ctypes
import os
import sys
from ctypes import POINTER, c_char_p, c_int, c_int32, c_int64, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p
from pathlib import Path
from typing import Optional

LIBRARY_NAME = "libstrata_client.dylib" if sys.platform == "darwin" else "libstrata_client.so"
KEY_BYTES = 32


class Segment(ctypes.Structure):
    """``strata_segment``: one piece of a block in caller memory."""

    _fields_ = [("base", c_void_p), ("length", c_uint64)]


class CompletionStruct(ctypes.Structure):
    """``strata_completion`` (256 bytes)."""

    _fields_ = [
        ("ticket", c_uint64),
        ("status", c_int32),
        ("operation", c_uint32),
        ("leading_run", c_uint64),
        ("lease", c_uint64),
        ("message", ctypes.c_char * 224),
    ]


assert ctypes.sizeof(CompletionStruct) == 256
assert ctypes.sizeof(Segment) == 16


def candidate_paths() -> list[Path]:
    """Where the library is looked for, in order."""
    paths: list[Path] = []
    configured = os.environ.get("STRATA_CLIENT_LIBRARY")
    if configured:
        paths.append(Path(configured))
    here = Path(__file__).resolve().parent
    paths.append(here / LIBRARY_NAME)
    for parent in here.parents:
        if (parent / "Package.swift").is_file():
            paths.append(parent / ".build" / "release" / LIBRARY_NAME)
            paths.append(parent / ".build" / "debug" / LIBRARY_NAME)
            break
    return paths


_library: Optional[ctypes.CDLL] = None


def library() -> ctypes.CDLL:
    """The loaded library (loaded once, on first use), with every call's signature declared."""
    global _library
    if _library is not None:
        return _library
    tried = []
    for path in candidate_paths():
        if path.is_file():
            _library = _declare(ctypes.CDLL(str(path)))
            return _library
        tried.append(str(path))
    raise OSError(
        "libstrata_client was not found; looked at: " + ", ".join(tried)
        + ". Set STRATA_CLIENT_LIBRARY to its path, or build it with scripts/build-wheel.sh "
        "(docs/client.md, 'Python')."
    )


def library_path() -> str:
    """The file the library was loaded from."""
    lib = library()
    return str(lib._name)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    client = c_void_p
    keys = c_char_p
    signatures = {
        "strata_client_open": [c_char_p, c_char_p, c_int, c_uint32, POINTER(c_void_p)],
        "strata_client_open_options": [
            c_char_p, c_char_p, c_int, c_uint32, c_int, c_uint64, c_char_p, c_char_p, c_char_p, POINTER(c_void_p),
        ],
        "strata_shared_memory": [client, POINTER(c_void_p), POINTER(c_uint64)],
        "strata_client_open_tls": [
            c_char_p, c_char_p, c_int, c_uint32, c_char_p, c_char_p, c_char_p, POINTER(c_void_p),
        ],
        "strata_lookup": [client, keys, c_size_t, POINTER(c_uint8), POINTER(c_size_t)],
        "strata_lookup_leased": [
            client, keys, c_size_t, c_uint32, POINTER(c_uint8), POINTER(c_uint64), POINTER(c_size_t),
            POINTER(c_uint64),
        ],
        "strata_get": [client, keys, c_size_t, POINTER(c_void_p), POINTER(c_uint64), POINTER(c_int64)],
        "strata_getv": [
            client, keys, c_size_t, c_uint64, POINTER(Segment), POINTER(c_size_t), POINTER(c_uint64),
            POINTER(c_int64),
        ],
        "strata_putv": [client, keys, c_size_t, POINTER(Segment), POINTER(c_size_t), POINTER(c_uint8)],
        "strata_delete": [client, keys, c_size_t, POINTER(c_uint8)],
        "strata_stat": [client, c_char_p, c_size_t, POINTER(c_size_t)],
        "strata_register": [client, c_void_p, c_uint64],
        "strata_unregister": [client, c_void_p],
        "strata_submit_lookup": [
            client, keys, c_size_t, c_uint32, POINTER(c_uint8), POINTER(c_uint64), POINTER(c_uint64),
        ],
        "strata_submit_get": [
            client, keys, c_size_t, c_uint64, POINTER(Segment), POINTER(c_size_t), POINTER(c_uint64),
            POINTER(c_int64), POINTER(c_uint64),
        ],
        "strata_submit_put": [
            client, keys, c_size_t, POINTER(Segment), POINTER(c_size_t), POINTER(c_uint8), POINTER(c_uint64),
        ],
        "strata_submit_delete": [client, keys, c_size_t, POINTER(c_uint8), POINTER(c_uint64)],
        "strata_completion_fd": [client, POINTER(c_int)],
        "strata_poll_completions": [client, POINTER(CompletionStruct), c_size_t, POINTER(c_size_t)],
        "strata_hash_prefix": [
            c_char_p, c_char_p, c_size_t, POINTER(c_uint32), c_size_t, c_char_p, c_size_t, POINTER(c_size_t),
        ],
    }
    for name, argtypes in signatures.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = c_int
    lib.strata_client_close.argtypes = [c_void_p]
    lib.strata_client_close.restype = None
    lib.strata_last_error.argtypes = []
    lib.strata_last_error.restype = c_char_p
    return lib
