from __future__ import annotations

import os

import pytest

from strata_node import StrataNode


@pytest.fixture
def strata_node(tmp_path):
    node = StrataNode()
    try:
        yield node
    finally:
        node.remove()


def pytest_sessionfinish(session, exitstatus):
    """Under scripts/test-engines.sh (STRATA_ENGINE_SKIPS_FAIL=1) a skipped engine test fails the
    run: the tests skip themselves when their engine does not import, and an environment that
    cannot import its engine must not pass as a green run."""
    if os.environ.get("STRATA_ENGINE_SKIPS_FAIL") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and session.exitstatus == 0:
        reasons = sorted({str(getattr(report, "longrepr", ""))[-200:] for report in skipped})
        reporter.write_line(f"{len(skipped)} engine test(s) skipped, which fails this run: {reasons}", red=True)
        session.exitstatus = 1
