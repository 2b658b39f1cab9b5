from __future__ import annotations

import pytest

from strata_node import StrataNode


@pytest.fixture
def strata_node(tmp_path):
    node = StrataNode(tmp_path / "node").start()
    try:
        yield node
    finally:
        node.stop()
