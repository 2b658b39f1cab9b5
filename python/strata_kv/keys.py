"""Strata block keys in Python (docs/keys.md): the token-prefix chain and engine key translation.

``hash_prefix`` computes the chained keys of ``strata-block-key-v1`` (it reproduces
``Tests/Fixtures/key-vectors.json``). The engine functions map an inference engine's own identity
of a block (vLLM block hashes, SGLang HiCache page hashes, LMCache key strings) to a 32-byte Strata
key by ``strata-engine-key-v1``, folding in the layout so that incompatible layouts never share
keys; ``Tests/Fixtures/engine-key-vectors.json`` holds the vectors, which the Swift
implementation (``StrataCore.EngineKeys``) reproduces too. Standard library only.

    python -m strata_kv keys verify Tests/Fixtures/engine-key-vectors.json
    python -m strata_kv keys generate > Tests/Fixtures/engine-key-vectors.json
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import sys
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Union

DOMAIN_ROOT = b"strata/v1/root\x00"
DOMAIN_BLOCK = b"strata/v1/block\x00"
DOMAIN_ENGINE = b"strata/v1/engine\x00"
DOMAIN_STRING = b"strata/v1/string\x00"
ENGINE_SCHEME = "strata-engine-key-v1"

MAX_SALT_BYTES = 1024
MAX_EXTRA_BYTES = 65536
MAX_ENGINE_HASH_BYTES = 64
MAX_STRING_KEY_BYTES = 4096
_DTYPE = re.compile(r"[a-z0-9_]+\Z")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+\Z")
_DECIMAL = re.compile(r"[0-9]+\Z")

SGLANG_KINDS = {"kv": 0, "k": 1, "v": 2}


@dataclass(frozen=True)
class Layout:
    """What a block's KV tensors were computed for (docs/keys.md, "Layout tag").

    ``layer_end`` is exclusive; None means every layer (65535). Pipeline-parallel stages are
    layer ranges.
    """

    model_id: str
    dtype: str
    tokens_per_block: int
    tp_rank: int = 0
    tp_size: int = 1
    layer_start: int = 0
    layer_end: Optional[int] = None

    def __post_init__(self) -> None:
        self.to_bytes()  # validates every field

    @property
    def end(self) -> int:
        return 0xFFFF if self.layer_end is None else self.layer_end

    def to_bytes(self) -> bytes:
        """``layoutBytes`` (version 1)."""
        model = self.model_id.encode("utf-8") if isinstance(self.model_id, str) else b""
        if not 1 <= len(model) <= 255:
            raise ValueError(f"layout.model_id: {len(model)} UTF-8 bytes, must be 1..255")
        if not isinstance(self.dtype, str) or not 1 <= len(self.dtype) <= 32 or not _DTYPE.match(self.dtype):
            raise ValueError(f"layout.dtype: {self.dtype!r} must be 1..32 characters of [a-z0-9_]")
        _check_int("layout.tokens_per_block", self.tokens_per_block, 1, 1 << 20)
        _check_int("layout.tp_size", self.tp_size, 1, 0xFFFF)
        _check_int("layout.tp_rank", self.tp_rank, 0, 0xFFFF)
        if self.tp_rank >= self.tp_size:
            raise ValueError(f"layout.tp_rank: {self.tp_rank} must be less than tp_size {self.tp_size}")
        _check_int("layout.layer_start", self.layer_start, 0, 0xFFFF)
        _check_int("layout.layer_end", self.end, 1, 0xFFFF)
        if self.layer_start >= self.end:
            raise ValueError(f"layout.layer_start: {self.layer_start} must be less than layer_end {self.end}")
        return (
            bytes([1, len(model)]) + model + bytes([len(self.dtype)]) + self.dtype.encode("ascii")
            + struct.pack("<IHHHH", self.tokens_per_block, self.tp_rank, self.tp_size, self.layer_start, self.end)
        )

    def spec(self) -> str:
        """The layout as ``strata hash --layout`` and ``strata_hash_prefix`` take it."""
        if "," in self.model_id:
            raise ValueError("layout.model_id: a model id with ',' has no spec string")
        return (
            f"model={self.model_id},dtype={self.dtype},block={self.tokens_per_block},"
            f"tp={self.tp_rank}/{self.tp_size},layers={self.layer_start}-{self.end}"
        )

    @classmethod
    def from_dict(cls, fields: dict) -> "Layout":
        return cls(**{name: fields[name] for name in cls.__dataclass_fields__ if name in fields})


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name}: {value} out of range {low}..{high}")


def _salt(salt: Union[bytes, bytearray, memoryview, None]) -> bytes:
    value = bytes(salt or b"")
    if len(value) > MAX_SALT_BYTES:
        raise ValueError(f"salt: {len(value)} bytes exceeds the limit of {MAX_SALT_BYTES}")
    return value


def root(layout: Layout, salt: bytes = b"") -> bytes:
    """The chain's root: SHA-256(DOMAIN_ROOT ‖ layoutBytes ‖ u32le(len(salt)) ‖ salt)."""
    value = _salt(salt)
    return hashlib.sha256(DOMAIN_ROOT + layout.to_bytes() + struct.pack("<I", len(value)) + value).digest()


def hash_prefix(
    layout: Layout, tokens: Sequence[int], salt: bytes = b"", extras: Optional[Sequence[bytes]] = None
) -> List[bytes]:
    """The key of every full block of ``tokens``: key i chains the layout, the salt and blocks 0..i.

    A partial tail block gets no key. ``extras`` (optional) are bytes bound to each full block in
    turn (multimodal hashes, adapter ids).
    """
    size = layout.tokens_per_block
    blocks = len(tokens) // size
    extras = list(extras or [])
    if len(extras) > blocks:
        raise ValueError(f"extras: {len(extras)} entries for {blocks} full block(s)")
    parent = root(layout, salt)
    keys: List[bytes] = []
    for index in range(blocks):
        chunk = tokens[index * size:(index + 1) * size]
        try:
            packed = struct.pack(f"<{size}I", *chunk)
        except struct.error:
            bad = next(t for t in chunk if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= 0xFFFFFFFF)
            raise ValueError(f"tokens: {bad!r} is not a token id 0..4294967295") from None
        extra = bytes(extras[index]) if index < len(extras) else b""
        if len(extra) > MAX_EXTRA_BYTES:
            raise ValueError(f"extras[{index}]: {len(extra)} bytes exceeds the limit of {MAX_EXTRA_BYTES}")
        parent = hashlib.sha256(DOMAIN_BLOCK + parent + packed + extra).digest()
        keys.append(parent)
    return keys


# MARK: Engine keys (strata-engine-key-v1)

def engine_key(engine: str, layout: Optional[Layout], salt: bytes, identity: bytes) -> bytes:
    """SHA-256(DOMAIN_ENGINE ‖ u8(len(engine)) ‖ engine ‖ u16le(len(L)) ‖ L ‖ u32le(len(salt)) ‖ salt ‖ identity),
    L being ``layout.to_bytes()`` (empty for engines whose identity names the layout itself)."""
    name = engine.encode("ascii")
    if not 1 <= len(name) <= 32:
        raise ValueError(f"engine: {engine!r} must be 1..32 ASCII characters")
    layout_bytes = layout.to_bytes() if layout is not None else b""
    value = _salt(salt)
    return hashlib.sha256(
        DOMAIN_ENGINE + bytes([len(name)]) + name + struct.pack("<H", len(layout_bytes)) + layout_bytes
        + struct.pack("<I", len(value)) + value + identity
    ).digest()


def vllm_block_key(block_hash: Union[bytes, int], layout: Layout, salt: bytes = b"", kv_group: int = 0) -> bytes:
    """The key of a vLLM block from ``request.block_hashes[i]``.

    bytes (sha256, sha256_cbor: 32 bytes; any digest of 1..64 bytes) or int (the xxhash and
    builtin-hash variants; -2**127..2**127-1). ``kv_group`` is the KV cache group of hybrid models.
    Identity: u32le(kv_group) ‖ (0x01 ‖ u8(len) ‖ digest | 0x02 ‖ i128le(value)).
    """
    _check_int("kv_group", kv_group, 0, 0xFFFFFFFF)
    if isinstance(block_hash, (bytes, bytearray, memoryview)):
        digest = bytes(block_hash)
        if not 1 <= len(digest) <= MAX_ENGINE_HASH_BYTES:
            raise ValueError(f"block_hash: {len(digest)} bytes, must be 1..{MAX_ENGINE_HASH_BYTES}")
        hashed = b"\x01" + bytes([len(digest)]) + digest
    elif isinstance(block_hash, int) and not isinstance(block_hash, bool):
        if not -(1 << 127) <= block_hash < (1 << 127):
            raise ValueError(f"block_hash: {block_hash} does not fit 128 signed bits")
        hashed = b"\x02" + (block_hash & ((1 << 128) - 1)).to_bytes(16, "little")
    else:
        raise ValueError(f"block_hash: expected bytes or int, got {type(block_hash).__name__}")
    return engine_key("vllm", layout, salt, struct.pack("<I", kv_group) + hashed)


def sglang_page_key(page_hash_hex: str, layout: Layout, rank: int = 0, kind: str = "kv", salt: bytes = b"") -> bytes:
    """The key of an SGLang HiCache page from its page hash (chained SHA-256, as hex).

    ``rank`` is the worker's rank, ``kind`` "k" or "v" for separate K and V pages, "kv" for one
    page holding both (MLA). Identity: u32le(rank) ‖ u8(kind: kv 0, k 1, v 2) ‖ hash bytes.
    """
    if not isinstance(page_hash_hex, str) or not _HEX.match(page_hash_hex) or len(page_hash_hex) > 2 * MAX_ENGINE_HASH_BYTES:
        raise ValueError(f"page_hash_hex: {str(page_hash_hex)[:80]!r} is not 1..64 bytes of hex")
    _check_int("rank", rank, 0, 0xFFFFFFFF)
    if kind not in SGLANG_KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {sorted(SGLANG_KINDS)}")
    identity = struct.pack("<I", rank) + bytes([SGLANG_KINDS[kind]]) + bytes.fromhex(page_hash_hex)
    return engine_key("sglang", layout, salt, identity)


def lmcache_key(key_str: str, salt: bytes = b"") -> bytes:
    """The key of an LMCache chunk from its key string.

    ``model@world_size@worker_id@chunk_hash@dtype`` (and forms with more '@' fields after those
    five). LMCache's multiprocess keys (``model@rank_hex@group_hex@hash[@salt]``) are not this form:
    they are keyed as string keys (``key_from_string``, as ``strata_kv.lmcache`` does). The string
    itself names model, world, worker and dtype, so it is the identity
    (UTF-8) and the layout field is empty. world_size and worker_id must be integers, worker_id <
    world_size, and no field empty.
    """
    if not isinstance(key_str, str):
        raise ValueError(f"key_str: expected str, got {type(key_str).__name__}")
    fields = key_str.split("@")
    if len(fields) < 5 or any(not field for field in fields[:5]):
        raise ValueError(f"key_str: {key_str[:80]!r} is not model@world_size@worker_id@chunk_hash@dtype")
    if not all(_DECIMAL.match(text) and int(text) < (1 << 64) for text in fields[1:3]):
        raise ValueError(f"key_str: world_size {fields[1]!r} and worker_id {fields[2]!r} must be integers")
    world, worker = int(fields[1]), int(fields[2])
    if not 0 <= worker < world:
        raise ValueError(f"key_str: worker_id {worker} must be less than world_size {world}")
    identity = key_str.encode("utf-8")
    if len(identity) > MAX_STRING_KEY_BYTES:
        raise ValueError(f"key_str: {len(identity)} bytes exceeds the limit of {MAX_STRING_KEY_BYTES}")
    return engine_key("lmcache", None, salt, identity)


def key_from_string(s: str) -> bytes:
    """A string key (Mooncake-style) as a Strata key: SHA-256(DOMAIN_STRING ‖ UTF-8 bytes)."""
    if not isinstance(s, str):
        raise ValueError(f"key: expected str, got {type(s).__name__}")
    data = s.encode("utf-8")
    if len(data) > MAX_STRING_KEY_BYTES:
        raise ValueError(f"key: {len(data)} UTF-8 bytes exceeds the limit of {MAX_STRING_KEY_BYTES}")
    return hashlib.sha256(DOMAIN_STRING + data).digest()


def as_key(key: Union[bytes, bytearray, memoryview, str]) -> bytes:
    """32-byte keys pass through; strings are hashed by ``key_from_string``."""
    if isinstance(key, str):
        return key_from_string(key)
    if isinstance(key, (bytes, bytearray, memoryview)):
        value = bytes(key)
        if len(value) != 32:
            raise ValueError(f"key: {len(value)} bytes; a key is 32 bytes (or a str, which is hashed)")
        return value
    raise ValueError(f"key: expected 32 bytes or str, got {type(key).__name__}")


# MARK: Vectors

_LAYOUT_A = {"model_id": "meta-llama/Llama-3.1-8B-Instruct", "dtype": "bf16", "tokens_per_block": 16,
             "tp_rank": 0, "tp_size": 1, "layer_start": 0, "layer_end": 32}
_LAYOUT_B = dict(_LAYOUT_A, tp_rank=1, tp_size=2)
_LAYOUT_C = dict(_LAYOUT_A, dtype="fp8_e4m3", tokens_per_block=256, layer_start=16, layer_end=32)
_SHA = hashlib.sha256(b"vllm block 0").hexdigest()
_PAGE = hashlib.sha256(b"sglang page 0").hexdigest()


def _vector_cases() -> List[dict]:
    cases: List[dict] = []
    for layout in (_LAYOUT_A, _LAYOUT_B, _LAYOUT_C):
        for block_hash in (_SHA, hashlib.sha256(b"vllm block 1").hexdigest(), "00", "ff" * 64):
            for kv_group in (0, 1):
                cases.append({"engine": "vllm", "layout": layout, "block_hash_hex": block_hash, "kv_group": kv_group,
                              "salt_hex": ""})
        for value in (0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**127 - 1, -(2**127), 1234567890123456789):
            cases.append({"engine": "vllm", "layout": layout, "block_hash_int": str(value), "kv_group": 0,
                          "salt_hex": ""})
        cases.append({"engine": "vllm", "layout": layout, "block_hash_hex": _SHA, "kv_group": 0, "salt_hex": "00"})
        cases.append({"engine": "vllm", "layout": layout, "block_hash_hex": _SHA, "kv_group": 0,
                      "salt_hex": "74656e616e742d61"})
        for kind in ("kv", "k", "v"):
            for rank in (0, 3):
                cases.append({"engine": "sglang", "layout": layout, "page_hash_hex": _PAGE, "rank": rank,
                              "kind": kind, "salt_hex": ""})
        cases.append({"engine": "sglang", "layout": layout, "page_hash_hex": _PAGE.upper(), "rank": 0, "kind": "k",
                      "salt_hex": ""})
    for key in ("meta-llama/Llama-3.1-8B-Instruct@1@0@4f1c2e3d5a6b7c8d@bfloat16",
                "meta-llama/Llama-3.1-8B-Instruct@8@7@-3750763034362895579@bfloat16",
                "Qwen/Qwen3-32B@4@2@a1b2c3@float16@tag%user1",
                "modèle@2@1@ff@fp8"):
        cases.append({"engine": "lmcache", "key_str": key, "salt_hex": ""})
    cases.append({"engine": "lmcache", "key_str": "m@1@0@c@bf16", "salt_hex": "01"})
    for text in ("", "a", "mooncake/key/0001", "ключ", "x" * 4096):
        cases.append({"engine": "string", "key_str": text})
    for index, case in enumerate(cases):
        case["name"] = f"{case['engine']}-{index}"
    return cases


def compute_case(case: dict) -> str:
    """The hex key of one vector case."""
    engine = case["engine"]
    salt = bytes.fromhex(case.get("salt_hex", ""))
    if engine == "string":
        return key_from_string(case["key_str"]).hex()
    if engine == "lmcache":
        return lmcache_key(case["key_str"], salt).hex()
    layout = Layout.from_dict(case["layout"])
    if engine == "vllm":
        block_hash: Union[bytes, int] = (
            bytes.fromhex(case["block_hash_hex"]) if "block_hash_hex" in case else int(case["block_hash_int"])
        )
        return vllm_block_key(block_hash, layout, salt, case.get("kv_group", 0)).hex()
    if engine == "sglang":
        return sglang_page_key(case["page_hash_hex"], layout, case["rank"], case["kind"], salt).hex()
    raise ValueError(f"engine: unknown {engine!r}")


def generate() -> dict:
    cases = _vector_cases()
    for case in cases:
        case["key_hex"] = compute_case(case)
    return {"scheme": ENGINE_SCHEME, "cases": cases}


def verify_file(path: str) -> List[str]:
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    problems = []
    for case in document["cases"]:
        got = compute_case(case)
        if got != case["key_hex"]:
            problems.append(f"{case['name']}: computed {got}, file says {case['key_hex']}")
    return problems


def main(argv: Iterable[str]) -> int:
    """``generate`` (the vectors file to stdout) or ``verify FILE``; the exit status says."""
    args = list(argv)
    if args[:1] == ["generate"]:
        json.dump(generate(), sys.stdout, indent=1, sort_keys=True, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    if args[:1] == ["verify"] and len(args) == 2:
        problems = verify_file(args[1])
        for problem in problems:
            print(problem)
        if not problems:
            with open(args[1], encoding="utf-8") as handle:
                print(f"engine key vectors: {len(json.load(handle)['cases'])} cases agree")
        return 1 if problems else 0
    print("usage: python -m strata_kv keys generate | verify FILE", file=sys.stderr)
    return 2
