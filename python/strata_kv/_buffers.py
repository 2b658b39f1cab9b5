"""Caller memory as (address, length) without copying.

Accepted: any object with the buffer protocol (bytearray, memoryview, array.array, mmap, numpy
arrays, ctypes arrays; bytes for writes only), an object with ``data_ptr()`` (a torch CPU
tensor), an ndarray-like with ``ctypes.data``, or an explicit ``(address, length)`` pair. The
memory must be C-contiguous, and writable when Strata writes into it; anything else is a
``ValueError`` before any request is sent. The objects stay referenced (and buffer exports stay
held) until the call, or the submission, has finished.
"""

from __future__ import annotations

import ctypes
from typing import Any, List, Sequence, Tuple

Span = Tuple[int, int]

_PyBUF_WRITABLE = 0x0001
_PyBUF_FORMAT = 0x0004
_PyBUF_ND = 0x0008
_PyBUF_STRIDES = 0x0010 | _PyBUF_ND
_PyBUF_C_CONTIGUOUS = 0x0020 | _PyBUF_STRIDES


class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None


class Pins:
    """Keeps the objects behind some addresses alive (and their buffer exports held) until released."""

    __slots__ = ("_objects", "_views")

    def __init__(self) -> None:
        self._objects: List[Any] = []
        self._views: List[_PyBuffer] = []

    def keep(self, obj: Any) -> None:
        self._objects.append(obj)

    def release(self) -> None:
        views, self._views = self._views, []
        for view in views:
            _release_buffer(ctypes.byref(view))
        self._objects.clear()

    def __del__(self) -> None:
        self.release()

    def span(self, obj: Any, writable: bool, what: str) -> Span:
        """The address and length in bytes of ``obj``'s memory."""
        if isinstance(obj, tuple) and len(obj) == 2 and all(isinstance(x, int) for x in obj):
            address, length = obj
            if length < 0:
                raise ValueError(f"{what}: length {length} is negative")
            if address == 0 and length > 0:
                raise ValueError(f"{what}: address 0 with a length of {length} bytes")
            return address, length
        if isinstance(obj, int):
            raise ValueError(f"{what}: a bare address needs a length: pass (address, length)")
        data_ptr = getattr(obj, "data_ptr", None)
        if callable(data_ptr) and hasattr(obj, "is_contiguous"):  # a torch tensor
            device = getattr(obj, "device", None)
            if device is not None and getattr(device, "type", "cpu") != "cpu":
                raise ValueError(f"{what}: a tensor on {device} (this call takes host memory)")
            if not obj.is_contiguous():
                raise ValueError(f"{what}: the tensor is not contiguous (call .contiguous() first)")
            self.keep(obj)
            return int(data_ptr()), int(obj.numel()) * int(obj.element_size())
        flags = getattr(obj, "flags", None)
        interface = getattr(obj, "__array_interface__", None)
        if interface is not None and flags is not None and hasattr(flags, "c_contiguous"):  # a numpy array
            if not flags.c_contiguous:
                raise ValueError(f"{what}: the array is not C-contiguous (numpy.ascontiguousarray makes a copy)")
            if writable and not flags.writeable:
                raise ValueError(f"{what}: the array is read-only and cannot receive data")
            self.keep(obj)
            return int(interface["data"][0]), int(obj.nbytes)
        view = _PyBuffer()
        request = _PyBUF_C_CONTIGUOUS | (_PyBUF_WRITABLE if writable else 0)
        try:
            _get_buffer(obj, ctypes.byref(view), request)
        except BufferError as error:
            readonly = False
            try:
                readonly = memoryview(obj).readonly
            except TypeError:
                pass
            if writable and readonly:
                raise ValueError(f"{what}: {type(obj).__name__} is read-only and cannot receive data") from None
            raise ValueError(f"{what}: {type(obj).__name__} is not C-contiguous memory ({error})") from None
        except TypeError:
            raise ValueError(
                f"{what}: {type(obj).__name__} has no buffer interface, data_ptr() or (address, length)"
            ) from None
        self._views.append(view)
        return int(view.buf or 0), int(view.len)

    def segments(self, item: Any, writable: bool, what: str) -> List[Span]:
        """One key's memory: a buffer-like, an (address, length) pair, or a list of either."""
        if isinstance(item, list):
            if not item:
                raise ValueError(f"{what}: an empty list of segments")
            return [self.span(part, writable, f"{what}[{index}]") for index, part in enumerate(item)]
        return [self.span(item, writable, what)]


def per_key(buffers: Sequence[Any], count: int, what: str) -> Sequence[Any]:
    if isinstance(buffers, (bytes, bytearray, memoryview)) or not isinstance(buffers, (list, tuple)):
        raise ValueError(f"{what}: one buffer (or list of segments) per key is needed, got {type(buffers).__name__}")
    if len(buffers) != count:
        raise ValueError(f"{what}: {len(buffers)} given for {count} key(s)")
    return buffers
