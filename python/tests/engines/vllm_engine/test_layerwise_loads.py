"""Layer-wise loading (strata.load_mode: layer) against a real node, with a client that holds
back the GETs of later layers: a layer's wait must return while a later layer is still in flight.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402
from strata_kv import StrataStore  # noqa: E402
from strata_kv.vllm import LayerwiseLoader, block_layers, block_runs  # noqa: E402

BLOCKS = 8
WAIT_S = 30.0  # a wait that does not return within this fails the test


def paged_kv(names: list[str], seed: int, zero: bool = False) -> dict[str, torch.Tensor]:
    """One [blocks, 2 (K/V), heads, tokens, head size] tensor per layer, as the CPU backend has."""
    generator = torch.Generator().manual_seed(seed)
    shape = (BLOCKS, 2, 2, 16, 8)
    return {name: torch.zeros(shape) if zero else torch.randn(shape, generator=generator) for name in names}


def store_blocks(store: StrataStore, kv: dict[str, torch.Tensor], keys: list[bytes], block_ids: list[int]) -> int:
    """Stores whole blocks (the format both load modes read); returns the block length."""
    layers = sorted(block_layers({n: block_runs(t, BLOCKS) for n, t in kv.items()}), key=lambda l: l.offset)
    buffers = [[seg for layer in layers for seg in layer.segments(b)] for b in block_ids]
    assert store.put_from(keys, buffers) == [0] * len(keys)
    return sum(layer.nbytes for layer in layers)


class HeldBackStore:
    """A real StrataStore whose GETs from the ``hold_from``-th on are only submitted on
    ``release()``: until then their layers stay in flight. Tickets it hands out are its own."""

    def __init__(self, store: StrataStore, hold_from: int) -> None:
        self.store = store
        self.hold_from = hold_from
        self.calls = 0
        self._held: list[tuple[int, tuple, dict]] = []
        self._tickets: dict[int, int] = {}  # real ticket -> ours
        self._lock = threading.Lock()

    @property
    def event_fd(self) -> int:
        return self.store.event_fd

    def submit_get(self, keys, buffers, lease=0, offsets=None) -> int:
        with self._lock:
            self.calls += 1
            ours = 1_000_000 + self.calls
            if self.calls > self.hold_from:
                self._held.append((ours, (keys, buffers), {"lease": lease, "offsets": offsets}))
            else:
                self._tickets[self.store.submit_get(keys, buffers, lease=lease, offsets=offsets)] = ours
            return ours

    def release(self) -> None:
        with self._lock:
            for ours, args, kwargs in self._held:
                self._tickets[self.store.submit_get(*args, **kwargs)] = ours
            self._held = []

    def poll_completions(self, max_count: int = 64):
        with self._lock:
            return [
                dataclasses.replace(c, ticket=self._tickets.pop(c.ticket))
                for c in self.store.poll_completions(max_count)
            ]


def layer_bytes(kv: dict[str, torch.Tensor], name: str, block: int) -> bytes:
    return kv[name][block].numpy().tobytes()


def in_thread(function) -> tuple[threading.Thread, list]:
    result: list = []
    thread = threading.Thread(target=lambda: result.append(function()), daemon=True)
    thread.start()
    return thread, result


def test_a_layer_wait_returns_while_later_layers_are_held_back(strata_node):
    import time

    names = [f"model.layers.{i}.self_attn.attn" for i in range(3)]
    source = paged_kv(names, seed=1)
    destination = paged_kv(names, seed=0, zero=True)
    keys = [bytes([i]) * 32 for i in range(3)]
    with StrataStore(node=strata_node.address) as store:
        store_blocks(store, source, keys, [1, 3, 5])
        held = HeldBackStore(store, hold_from=1)
        loader = LayerwiseLoader(block_layers({n: block_runs(t, BLOCKS) for n, t in destination.items()}), 1)
        loader.submit(held, keys, [2, 4, 6])
        assert held.calls == 3  # one GET per layer, all issued by submit
        deadline = time.monotonic() + WAIT_S

        first, first_result = in_thread(lambda: loader.wait(names[0], held, deadline))
        first.join(WAIT_S)
        assert not first.is_alive() and first_result == [True], "layer 0's wait waited for held-back layers"
        for src, dst in [(1, 2), (3, 4), (5, 6)]:
            assert layer_bytes(destination, names[0], dst) == layer_bytes(source, names[0], src)
            assert not destination[names[1]][dst].any() and not destination[names[2]][dst].any()

        second, second_result = in_thread(lambda: loader.wait(names[1], held, deadline))
        second.join(0.5)
        assert second.is_alive(), "layer 1's wait returned while its GET was held back"
        held.release()
        second.join(WAIT_S)
        assert not second.is_alive() and second_result == [True]
        assert loader.wait_all(held, deadline)
        assert loader.failed == set() and not loader.busy()
        for name in names:
            for src, dst in [(1, 2), (3, 4), (5, 6)]:
                assert layer_bytes(destination, name, dst) == layer_bytes(source, name, src)


def test_layer_groups_out_of_stored_order_missing_and_foreign_blocks(strata_node):
    """Layers 1, 2, 10: stored in name order (1, 10, 2), loaded in model order two per GET, so the
    first GET reads two ranges of each block. A missing block and a block of another length fail
    (and only those); the good ones land byte for byte."""
    import time

    names = [f"model.layers.{i}.attn" for i in (1, 2, 10)]
    source = paged_kv(names, seed=3)
    destination = paged_kv(names, seed=0, zero=True)
    keys = [bytes([0x40 + i]) * 32 for i in range(4)]
    with StrataStore(node=strata_node.address) as store:
        store_blocks(store, source, keys[:2], [0, 7])
        assert store.put_from([keys[3]], [b"x" * 100]) == [0]  # another layout's short block
        layers = block_layers({n: block_runs(t, BLOCKS) for n, t in destination.items()})
        assert [layer.name for layer in layers] == names  # model order
        loader = LayerwiseLoader(layers, 2)
        assert loader.groups == [names[:2], names[2:]]
        loader.submit(store, keys, [1, 2, 3, 4])
        assert loader.gets == 2
        assert loader.wait_all(store, time.monotonic() + WAIT_S)
        assert loader.failed == {3, 4}
        for src, dst in [(0, 1), (7, 2)]:
            for name in names:
                assert layer_bytes(destination, name, dst) == layer_bytes(source, name, src)


def test_layers_per_load_must_be_positive():
    kv = paged_kv(["a"], seed=0)
    with pytest.raises(ValueError, match="layers_per_load"):
        LayerwiseLoader(block_layers({"a": block_runs(kv["a"], BLOCKS)}), 0)
