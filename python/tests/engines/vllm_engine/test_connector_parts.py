"""Parts of StrataConnector that need no engine: the client handle's back-off, a waiting request's
lookup kept while its lease lasts, and what a layout's dtype and model are."""

from __future__ import annotations

import types

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402
from strata_kv import StrataError  # noqa: E402
from strata_kv.vllm import _Lookup, _StoreHandle, _Warner, default_model_id, dtype_tag  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_open_client_is_not_used_while_backing_off_after_a_failure():
    """After a failed call the handle answers None (recompute) for the retry interval even though
    its client is open: a node that stopped answering must not cost every call its timeout."""
    clock = Clock()
    handle = _StoreHandle({"strata.retry_interval_s": 5.0}, _Warner(30.0, clock), clock=clock)
    opened = object()
    handle._store = opened  # as if opened before the node stopped answering
    assert handle.get() is opened
    handle.failed(StrataError(10, "timed out"))
    assert handle.get() is None
    clock.now += 4.9
    assert handle.get() is None
    clock.now += 0.2
    assert handle.get() is opened


def test_a_waiting_requests_lookup_stands_while_half_its_lease_is_left():
    lookup = _Lookup(start=2, loadable=9, hashes=[b"a", b"b"], lease=7, taken_at=50.0)
    assert lookup.fresh(2, 9, 50.0 + 14.9, lease_ms=30_000)
    assert not lookup.fresh(2, 9, 50.0 + 15.1, lease_ms=30_000), "past half the lease: look up again"
    assert not lookup.fresh(3, 9, 51.0, lease_ms=30_000), "another start (blocks computed meanwhile)"
    assert not lookup.fresh(2, 10, 51.0, lease_ms=30_000), "another range (the prompt grew)"


def test_fp8_caches_of_different_formats_get_different_dtype_tags():
    assert dtype_tag(torch.float16) == "fp16" and dtype_tag(torch.bfloat16, "auto") == "bf16"
    # vLLM keeps every fp8 cache as uint8: the format comes from cache_dtype.
    tags = {dtype_tag(torch.uint8, name) for name in ("fp8", "fp8_e4m3", "fp8_e5m2")}
    assert len(tags) == 3 and all(tag.startswith("fp8") for tag in tags)
    assert dtype_tag(torch.uint8, "fp8_e4m3") != dtype_tag(torch.uint8, "auto")


def test_the_default_model_id_is_the_model_not_its_served_alias():
    config = types.SimpleNamespace(model="/models/llama", revision=None, quantization=None, served_model_name="default")
    assert default_model_id(config) == "/models/llama"
    other = types.SimpleNamespace(model="org/llama", revision="abc123", quantization="awq", served_model_name="default")
    assert default_model_id(other) == "org/llama@abc123+awq"
