"""``python -m strata_kv``: a small command line for checking a node from Python.

    python -m strata_kv ping  --node 127.0.0.1:7400
    python -m strata_kv stat  --node 127.0.0.1:7400
    python -m strata_kv put   --node 127.0.0.1:7400 KEY FILE
    python -m strata_kv get   --node 127.0.0.1:7400 KEY FILE
    python -m strata_kv keys  verify Tests/Fixtures/engine-key-vectors.json

KEY is a string (hashed to 32 bytes, docs/keys.md) or ``hex:`` and 64 hex digits. ``--seeds``
names a cluster instead of ``--node``; ``--token`` and ``--timeout-ms`` as StrataStore takes them.
The trace replay and the benchmarks have modules of their own: ``python -m strata_kv.replay``,
``python -m strata_kv.bench``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

from . import keys as keymod
from .store import StrataError, StrataStore


def _key(text: str) -> bytes:
    if text.startswith("hex:"):
        value = bytes.fromhex(text[4:])
        if len(value) != 32:
            raise ValueError(f"KEY: hex: needs 64 hex digits, got {len(text) - 4}")
        return value
    return keymod.key_from_string(text)


def _store(args: argparse.Namespace) -> StrataStore:
    if not args.node and not args.seeds:
        raise ValueError("--node HOST:PORT or --seeds HOST:PORT,... is needed")
    return StrataStore(seeds=args.seeds, node=args.node, token=args.token, timeout_ms=args.timeout_ms)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strata_kv", description="Talk to a Strata node from Python.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("ping", "connect and time one lookup"), ("stat", "the node's counters as JSON"),
                       ("put", "store a file's bytes under KEY"), ("get", "write the block under KEY to FILE")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--node", help="HOST:PORT of one node")
        command.add_argument("--seeds", help="HOST:PORT,... of a cluster's nodes")
        command.add_argument("--token", default="")
        command.add_argument("--timeout-ms", type=int, default=5000)
        if name in ("put", "get"):
            command.add_argument("key", metavar="KEY")
            command.add_argument("file", metavar="FILE")
    keys_command = sub.add_parser("keys", help="engine key vectors: generate | verify FILE")
    keys_command.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "keys":
            return keymod.main(args.rest)
        with _store(args) as store:
            if args.command == "ping":
                started = time.perf_counter()
                store.lookup([bytes(32)], sizes=False)
                print(f"ok {args.seeds or args.node} {1000 * (time.perf_counter() - started):.2f} ms")
            elif args.command == "stat":
                print(store.stat())
            elif args.command == "put":
                with open(args.file, "rb") as handle:
                    data = handle.read()
                code = store.put_from([_key(args.key)], [data])[0]
                if code != 0:
                    print(f"put failed: code {code}", file=sys.stderr)
                    return 1
                print(f"stored {len(data)} bytes")
            elif args.command == "get":
                key = _key(args.key)
                size = store.lookup([key]).sizes[0]
                buffer = bytearray(size)
                got = store.get_into([key], [buffer])[0]
                if got < 0 or size == 0 and got != 0:
                    print(f"get failed: code {got if got < 0 else -704}", file=sys.stderr)
                    return 1
                with open(args.file, "wb") as handle:
                    handle.write(buffer[:got])
                print(f"wrote {got} bytes")
    except (StrataError, ValueError, OSError) as error:
        print(f"python -m strata_kv {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
