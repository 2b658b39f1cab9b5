"""How StrataConnector finds a block's bytes in paged KV tensors, and how it rate-limits warnings."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402
from strata_kv.vllm import StrataConnector, _Warner, block_runs, split_kv_hazard  # noqa: E402


def gather(tensor: torch.Tensor, block: int) -> bytes:
    runs = block_runs(tensor, tensor.shape[[i for i, n in enumerate(tensor.shape) if n == 7][0]])
    raw = tensor.untyped_storage()
    base = tensor.data_ptr() - raw.data_ptr()
    data = bytes(raw)
    start = base + block * runs.block_stride
    return b"".join(data[start + offset : start + offset + length] for offset, length in runs.runs)


def test_block_major_tensor_is_one_run_per_block():
    kv = torch.arange(7 * 2 * 4 * 8, dtype=torch.float32).reshape(7, 2, 4, 8)
    runs = block_runs(kv, 7)
    assert runs.runs == [(0, 2 * 4 * 8 * 4)]
    assert runs.block_stride == 2 * 4 * 8 * 4
    assert gather(kv, 3) == kv[3].numpy().tobytes()


def test_kv_plane_outer_tensor_is_one_run_per_plane():
    kv = torch.arange(2 * 7 * 4 * 8, dtype=torch.bfloat16).reshape(2, 7, 4, 8)
    runs = block_runs(kv, 7)
    assert [length for _, length in runs.runs] == [4 * 8 * 2, 4 * 8 * 2]
    assert gather(kv, 5) == kv[0, 5].contiguous().view(torch.uint8).numpy().tobytes() + kv[
        1, 5
    ].contiguous().view(torch.uint8).numpy().tobytes()


def test_non_contiguous_block_is_rejected():
    kv = torch.zeros(7, 8, 4).transpose(1, 2)
    with pytest.raises(ValueError, match="not contiguous"):
        block_runs(kv, 7)
    with pytest.raises(ValueError, match="no axis of 9 blocks"):
        block_runs(torch.zeros(7, 4), 9)


def test_warner_logs_once_per_interval(caplog):
    now = [0.0]
    warner = _Warner(30.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="vllm.strata_kv"):
        for _ in range(5):
            warner.warn("down: %s", "x")
        now[0] = 31.0
        warner.warn("down: %s", "y")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["down: x", "down: y (4 similar failures since the last warning)"]


def test_device_copy_views_cover_the_same_bytes_as_the_runs():
    """The CUDA path copies a block through byte views of the KV storage: same bytes, same order."""

    def raw(t: torch.Tensor) -> bytes:
        return t.contiguous().view(torch.uint8).numpy().tobytes()

    planes_outer = torch.arange(2 * 7 * 4 * 8, dtype=torch.float16).reshape(2, 7, 4, 8)
    blocks_outer = -torch.arange(7 * 2 * 4 * 8, dtype=torch.float16).reshape(7, 2, 4, 8)
    layers = [block_runs(planes_outer, 7), block_runs(blocks_outer, 7)]
    views = StrataConnector._block_views(SimpleNamespace(_layers=layers), 4)
    assert b"".join(raw(v) for v in views) == raw(planes_outer[0, 4]) + raw(planes_outer[1, 4]) + raw(blocks_outer[4])


def forward_context(**windows) -> SimpleNamespace:
    """A vLLM config whose attention layers have these sliding windows (None: global)."""
    layers = {name: SimpleNamespace(impl=SimpleNamespace(sliding_window=w)) for name, w in windows.items()}
    return SimpleNamespace(compilation_config=SimpleNamespace(static_forward_context=layers))


def test_split_kv_hazard_is_named_only_for_mixed_windows_with_the_split_on():
    mixed = forward_context(a=64, b=None)
    warning = split_kv_hazard(mixed, ["a", "b"], environ={})
    assert warning is not None and "VLLM_CPU_ATTN_SPLIT_KV=0" in warning and "64, global" in warning
    assert split_kv_hazard(mixed, ["a", "b"], environ={"VLLM_CPU_ATTN_SPLIT_KV": "1"}) is not None
    assert split_kv_hazard(mixed, ["a", "b"], environ={"VLLM_CPU_ATTN_SPLIT_KV": "0"}) is None
    # One window for every layer (or only global layers): nothing to warn about.
    assert split_kv_hazard(forward_context(a=64, b=64), ["a", "b"], environ={}) is None
    assert split_kv_hazard(forward_context(a=None, b=None), ["a", "b"], environ={}) is None
