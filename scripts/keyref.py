#!/usr/bin/env python3
# Independent reference for the Strata block-key scheme (strata-block-key-v1, docs/keys.md):
# computes layout tags, root keys and chained block keys, and generates/verifies test vectors.
"""Reference implementation of the Strata block-key scheme, standard library only.

Subcommands:
  verify FILE   recompute every case of a vectors file, report mismatches (exit 1 if any)
  compute       read cases as JSON on stdin, fill layout_hex/root_hex/keys_hex, write to stdout
  generate      print the checked-in vectors file (Tests/Fixtures/key-vectors.json)
"""

import argparse
import hashlib
import json
import re
import struct
import sys

SCHEME = "strata-block-key-v1"
LAYOUT_VERSION = 1
DOMAIN_ROOT = b"strata/v1/root\x00"
DOMAIN_BLOCK = b"strata/v1/block\x00"

MAX_MODEL_ID_BYTES = 255
MAX_DTYPE_BYTES = 32
MAX_TOKENS_PER_BLOCK = 1 << 20  # 1048576
MAX_SALT_BYTES = 1024
MAX_EXTRA_BYTES = 65536
MAX_TOKEN = (1 << 32) - 1
MAX_U16 = (1 << 16) - 1

LAYOUT_FIELDS = ("model_id", "dtype", "tokens_per_block", "tp_rank", "tp_size",
                 "layer_start", "layer_end")
_DTYPE_RE = re.compile(r"[a-z0-9_]+\Z")


# ---------------------------------------------------------------------------
# Validation helpers

def _int_field(layout, name, lo, hi):
    if name not in layout:
        raise ValueError(f"layout.{name}: missing")
    v = layout[name]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"layout.{name}: must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise ValueError(f"layout.{name}: {v} out of range {lo}..{hi}")
    return v


def _as_bytes(value, field, max_len):
    """Accept bytes-like or a hex string; enforce the length limit."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
    elif isinstance(value, str):
        try:
            b = bytes.fromhex(value)
        except ValueError:
            raise ValueError(f"{field}: not valid hex: {value[:40]!r}") from None
    elif value is None:
        b = b""
    else:
        raise ValueError(f"{field}: expected bytes or hex string, got {type(value).__name__}")
    if len(b) > max_len:
        raise ValueError(f"{field}: {len(b)} bytes exceeds limit of {max_len}")
    return b


# ---------------------------------------------------------------------------
# The scheme

def layout_bytes(layout):
    """Canonical encoding of a layout tag (version 1)."""
    if not isinstance(layout, dict):
        raise ValueError("layout: must be an object")
    unknown = set(layout) - set(LAYOUT_FIELDS)
    if unknown:
        raise ValueError(f"layout: unknown field(s) {sorted(unknown)}")

    model_id = layout.get("model_id")
    if not isinstance(model_id, str):
        raise ValueError("layout.model_id: must be a string")
    try:
        model_b = model_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("layout.model_id: not encodable as UTF-8") from None
    if not 1 <= len(model_b) <= MAX_MODEL_ID_BYTES:
        raise ValueError(f"layout.model_id: UTF-8 length {len(model_b)} out of range "
                         f"1..{MAX_MODEL_ID_BYTES}")

    dtype = layout.get("dtype")
    if not isinstance(dtype, str):
        raise ValueError("layout.dtype: must be a string")
    if not 1 <= len(dtype) <= MAX_DTYPE_BYTES:
        raise ValueError(f"layout.dtype: length {len(dtype)} out of range 1..{MAX_DTYPE_BYTES}")
    if not _DTYPE_RE.match(dtype):
        raise ValueError(f"layout.dtype: {dtype!r} may contain only a-z, 0-9 and '_'")
    dtype_b = dtype.encode("ascii")

    tpb = _int_field(layout, "tokens_per_block", 1, MAX_TOKENS_PER_BLOCK)
    tp_size = _int_field(layout, "tp_size", 1, MAX_U16)
    tp_rank = _int_field(layout, "tp_rank", 0, MAX_U16)
    if tp_rank >= tp_size:
        raise ValueError(f"layout.tp_rank: {tp_rank} must be less than tp_size {tp_size}")
    layer_start = _int_field(layout, "layer_start", 0, MAX_U16)
    layer_end = _int_field(layout, "layer_end", 0, MAX_U16)
    if layer_start >= layer_end:
        raise ValueError(f"layout.layer_end: {layer_end} must be greater than "
                         f"layer_start {layer_start} (end is exclusive)")

    return b"".join([
        struct.pack("<B", LAYOUT_VERSION),
        struct.pack("<B", len(model_b)), model_b,
        struct.pack("<B", len(dtype_b)), dtype_b,
        struct.pack("<I", tpb),
        struct.pack("<HH", tp_rank, tp_size),
        struct.pack("<HH", layer_start, layer_end),
    ])


def root_key(layout, salt=b""):
    """root = SHA-256(DOMAIN_ROOT || layoutBytes || u32le(len(salt)) || salt)."""
    salt_b = _as_bytes(salt, "salt", MAX_SALT_BYTES)
    h = hashlib.sha256()
    h.update(DOMAIN_ROOT)
    h.update(layout_bytes(layout))
    h.update(struct.pack("<I", len(salt_b)))
    h.update(salt_b)
    return h.digest()


def _tokens_per_block(layout):
    layout_bytes(layout)  # full validation
    return layout["tokens_per_block"]


def chain_keys(layout, salt, tokens, extras=None):
    """Keys of every full block of `tokens`, in order (a trailing partial block gets none).

    extras: sequence (one entry per full block, bytes or hex; missing trailing entries and
    None mean empty). Supplying more entries than there are full blocks is an error.
    """
    tpb = _tokens_per_block(layout)
    if isinstance(tokens, (str, bytes)) or not hasattr(tokens, "__len__"):
        raise ValueError("tokens: must be a sequence of integers")
    for idx, t in enumerate(tokens):
        if isinstance(t, bool) or not isinstance(t, int):
            raise ValueError(f"tokens[{idx}]: must be an integer, got {t!r}")
        if not 0 <= t <= MAX_TOKEN:
            raise ValueError(f"tokens[{idx}]: {t} out of range 0..{MAX_TOKEN}")
    n_keys = len(tokens) // tpb

    extras = list(extras or [])
    if len(extras) > n_keys:
        raise ValueError(f"extras: {len(extras)} entries but only {n_keys} full block(s); "
                         f"extras are given only for keyed (full) blocks")
    extras_b = [_as_bytes(e, f"extras[{i}]", MAX_EXTRA_BYTES) for i, e in enumerate(extras)]
    extras_b += [b""] * (n_keys - len(extras_b))

    parent = root_key(layout, salt)
    keys = []
    fmt = "<%dI" % tpb
    for i in range(n_keys):
        h = hashlib.sha256()
        h.update(DOMAIN_BLOCK)
        h.update(parent)
        h.update(struct.pack(fmt, *tokens[i * tpb:(i + 1) * tpb]))
        h.update(extras_b[i])
        parent = h.digest()
        keys.append(parent)
    return keys


# ---------------------------------------------------------------------------
# Vector cases

def compute_case(case):
    """Return (layout_hex, root_hex, keys_hex) for a vectors-file case."""
    if not isinstance(case, dict):
        raise ValueError("case: must be an object")
    layout = case.get("layout")
    salt_hex = case.get("salt_hex", "")
    if not isinstance(salt_hex, str):
        raise ValueError("salt_hex: must be a hex string")
    tokens = case.get("tokens", [])
    if not isinstance(tokens, list):
        raise ValueError("tokens: must be an array of integers")
    extras_hex = case.get("extras_hex", [])
    if not isinstance(extras_hex, list) or not all(isinstance(e, str) for e in extras_hex):
        raise ValueError("extras_hex: must be an array of hex strings")
    lb = layout_bytes(layout)
    root = root_key(layout, salt_hex)
    keys = chain_keys(layout, salt_hex, tokens, extras_hex)
    return lb.hex(), root.hex(), [k.hex() for k in keys]


def _dump(obj):
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def _write_stdout(text):
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.flush()


def _load_doc(text, source):
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"{source}: invalid JSON: {e}")
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise SystemExit(f"{source}: expected an object with a \"cases\" array")
    scheme = doc.get("scheme", SCHEME)
    if scheme != SCHEME:
        raise SystemExit(f"{source}: unsupported scheme {scheme!r} (expected {SCHEME!r})")
    return doc


def cmd_verify(args):
    with open(args.file, "rb") as f:
        doc = _load_doc(f.read().decode("utf-8"), args.file)
    if "scheme" not in doc:
        print(f"{args.file}: missing \"scheme\" field", file=sys.stderr)
        return 1
    cases = doc["cases"]
    failed = 0
    for i, case in enumerate(cases):
        name = case.get("name", "?") if isinstance(case, dict) else "?"
        label = f"case {i} ({name})"
        try:
            layout_hex, root_hex, keys_hex = compute_case(case)
        except ValueError as e:
            print(f"{label}: invalid input: {e}")
            failed += 1
            continue
        problems = []
        if case.get("layout_hex") != layout_hex:
            problems.append(f"layout_hex: expected {case.get('layout_hex')!r}, computed {layout_hex}")
        if case.get("root_hex") != root_hex:
            problems.append(f"root_hex: expected {case.get('root_hex')!r}, computed {root_hex}")
        expected_keys = case.get("keys_hex")
        if not isinstance(expected_keys, list):
            problems.append("keys_hex: missing or not an array")
        else:
            if len(expected_keys) != len(keys_hex):
                problems.append(f"keys_hex: expected {len(expected_keys)} keys, "
                                f"computed {len(keys_hex)}")
            for k, (exp, got) in enumerate(zip(expected_keys, keys_hex)):
                if exp != got:
                    problems.append(f"keys_hex[{k}]: expected {exp!r}, computed {got}")
        for p in problems:
            print(f"{label}: {p}")
        if problems:
            failed += 1
    if failed:
        print(f"key vectors: {failed} of {len(cases)} cases disagree", file=sys.stderr)
        return 1
    print(f"key vectors: {len(cases)} cases agree")
    return 0


def cmd_compute(_args):
    doc = _load_doc(sys.stdin.buffer.read().decode("utf-8"), "stdin")
    out_cases = []
    for i, case in enumerate(doc["cases"]):
        try:
            layout_hex, root_hex, keys_hex = compute_case(case)
        except ValueError as e:
            name = case.get("name", "?") if isinstance(case, dict) else "?"
            print(f"case {i} ({name}): {e}", file=sys.stderr)
            return 2
        filled = dict(case)
        filled["layout_hex"] = layout_hex
        filled["root_hex"] = root_hex
        filled["keys_hex"] = keys_hex
        out_cases.append(filled)
    out = dict(doc)
    out["scheme"] = SCHEME
    out["cases"] = out_cases
    _write_stdout(_dump(out))
    return 0


# ---------------------------------------------------------------------------
# Checked-in vectors (deterministic)

def _det_bytes(label, n):
    """n deterministic bytes derived from SHA-256(label || counter)."""
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(label.encode() + struct.pack("<I", counter)).digest()
        counter += 1
    return out[:n]


def _det_tokens(label, n, limit=MAX_TOKEN + 1):
    raw = _det_bytes("tokens/" + label, 4 * n)
    return [v % limit for v in struct.unpack("<%dI" % n, raw)] if n else []


def _layout(model_id="meta-llama/Llama-3.1-8B-Instruct", dtype="bf16", tokens_per_block=16,
            tp_rank=0, tp_size=1, layer_start=0, layer_end=32):
    return {"model_id": model_id, "dtype": dtype, "tokens_per_block": tokens_per_block,
            "tp_rank": tp_rank, "tp_size": tp_size,
            "layer_start": layer_start, "layer_end": layer_end}


def _vector_inputs():
    L = _layout
    prompt64 = _det_tokens("prompt", 64, 128256)   # vocabulary-sized ids
    prompt80 = _det_tokens("prompt", 80, 128256)   # same first 64 tokens as prompt64
    image_hash = _det_bytes("image-0", 32).hex()
    lora_id = b"lora:sql-adapter@3".hex()
    cases = []

    def add(name, layout, tokens, salt_hex="", extras_hex=None):
        tpb = layout["tokens_per_block"]
        n = len(tokens) // tpb
        if extras_hex is None:
            extras_hex = [""] * n
        cases.append({"name": name, "layout": layout, "salt_hex": salt_hex,
                      "tokens": list(tokens), "extras_hex": list(extras_hex)})

    # Basics and chain shapes.
    add("basic-two-blocks", L(), prompt64[:32])
    add("single-full-block", L(), prompt64[:16])
    add("five-block-chain", L(), prompt80)
    add("prefix-of-five-block-chain", L(), prompt80[:48])
    add("trailing-partial-block", L(), prompt80[:16 * 3 + 7])
    add("zero-full-blocks", L(), prompt64[:15])
    add("empty-token-list", L(), [])
    add("one-token-blocks", L(tokens_per_block=1), [1, 2, 3, 4, 5, 1])
    add("256-token-blocks-with-partial",
        L(tokens_per_block=256), _det_tokens("long", 256 * 2 + 100, 151936))
    add("max-tokens-per-block-no-full-block",
        L(tokens_per_block=1 << 20), [7, 8, 9])
    add("token-extremes-0-and-max",
        L(tokens_per_block=4), [0, 4294967295, 0, 4294967295, 4294967295, 4294967295,
                                4294967295, 4294967295, 0, 0, 0, 0])
    add("full-u32-random-tokens", L(tokens_per_block=8), _det_tokens("u32", 24))

    # Salt.
    add("salt-pair-a-unsalted", L(), prompt64)
    add("salt-pair-b-salted", L(), prompt64, salt_hex=_det_bytes("tenant-a", 32).hex())
    add("salt-single-zero-byte", L(), prompt64, salt_hex="00")
    add("salt-max-1024-bytes", L(), prompt64[:16], salt_hex=_det_bytes("big-salt", 1024).hex())

    # Layout variants, each differing in one field from a partner.
    add("dtype-pair-a-bf16", L(), prompt64[:32])
    add("dtype-pair-b-fp16", L(dtype="fp16"), prompt64[:32])
    add("dtype-fp8-e4m3", L(dtype="fp8_e4m3"), prompt64[:32])
    add("tp-rank-pair-a-0-of-8", L(tp_rank=0, tp_size=8), prompt64[:32])
    add("tp-rank-pair-b-3-of-8", L(tp_rank=3, tp_size=8), prompt64[:32])
    add("layers-pair-a-0-16", L(layer_start=0, layer_end=16), prompt64[:32])
    add("layers-pair-b-16-32", L(layer_start=16, layer_end=32), prompt64[:32])
    add("u16-maxima", L(tp_rank=65534, tp_size=65535, layer_start=65534, layer_end=65535),
        prompt64[:16])
    add("same-tokens-layout-a-llama", L(), prompt64)
    add("same-tokens-layout-b-mistral-32-per-block",
        L(model_id="mistralai/Mistral-7B-Instruct-v0.3", tokens_per_block=32), prompt64)
    add("non-ascii-model-id", L(model_id="模型/Qwen2.5-7B-Instruct-café-ü"), prompt64[:32])
    add("max-length-model-id", L(model_id="m" * 200 + "/" + "x" * 54), prompt64[:16])

    # Extras.
    add("extras-on-some-blocks", L(), prompt64,
        extras_hex=["", image_hash, "", lora_id])
    add("extras-on-all-blocks", L(), prompt64[:48],
        extras_hex=[lora_id, lora_id + image_hash, "ff"])
    add("extras-missing-means-empty", L(), prompt64, extras_hex=[])
    add("extras-large-4096-bytes", L(), prompt64[:32],
        extras_hex=[_det_bytes("big-extra", 4096).hex(), ""])
    return cases


def generate_doc():
    cases = []
    for case in _vector_inputs():
        layout_hex, root_hex, keys_hex = compute_case(case)
        case = dict(case, layout_hex=layout_hex, root_hex=root_hex, keys_hex=keys_hex)
        cases.append(case)
    return {"scheme": SCHEME, "cases": cases}


def _self_check(doc):
    """Assert the properties the hand-chosen cases are meant to demonstrate."""
    by = {c["name"]: c for c in doc["cases"]}

    def differ(a, b):
        assert by[a]["root_hex"] != by[b]["root_hex"], (a, b)
        assert not set(by[a]["keys_hex"]) & set(by[b]["keys_hex"]), (a, b)

    for a, b in [("salt-pair-a-unsalted", "salt-pair-b-salted"),
                 ("salt-pair-a-unsalted", "salt-single-zero-byte"),
                 ("dtype-pair-a-bf16", "dtype-pair-b-fp16"),
                 ("tp-rank-pair-a-0-of-8", "tp-rank-pair-b-3-of-8"),
                 ("layers-pair-a-0-16", "layers-pair-b-16-32"),
                 ("same-tokens-layout-a-llama", "same-tokens-layout-b-mistral-32-per-block")]:
        differ(a, b)
    five, pre = by["five-block-chain"]["keys_hex"], by["prefix-of-five-block-chain"]["keys_hex"]
    assert len(five) == 5 and pre == five[:3]
    assert len(by["trailing-partial-block"]["keys_hex"]) == 3
    assert by["trailing-partial-block"]["keys_hex"] == five[:3]
    assert by["zero-full-blocks"]["keys_hex"] == [] and by["empty-token-list"]["keys_hex"] == []
    some, plain = by["extras-on-some-blocks"]["keys_hex"], by["salt-pair-a-unsalted"]["keys_hex"]
    assert some[0] == plain[0] and some[1] != plain[1] and some[2] != plain[2]
    assert by["extras-missing-means-empty"]["keys_hex"] == plain
    assert by["basic-two-blocks"]["keys_hex"] == plain[:2]
    assert len(doc["cases"]) >= 24


def cmd_generate(_args):
    doc = generate_doc()
    _self_check(doc)
    _write_stdout(_dump(doc))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description="Reference implementation of " + SCHEME)
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="recompute every case of a vectors file")
    v.add_argument("file")
    v.set_defaults(func=cmd_verify)
    c = sub.add_parser("compute", help="fill layout_hex/root_hex/keys_hex for cases on stdin")
    c.set_defaults(func=cmd_compute)
    g = sub.add_parser("generate", help="print the checked-in vectors file")
    g.set_defaults(func=cmd_generate)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
