"""The installed package: its library is found, needs no Swift toolchain, and loads in a bare
environment (no LD_LIBRARY_PATH, nothing of /opt/swift)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import strata_kv
from strata_kv import _native


def test_the_library_is_found_and_loaded():
    path = Path(_native.library_path())
    assert path.is_file() and path.name.startswith("libstrata_client")
    if os.environ.get("STRATA_CLIENT_LIBRARY") is None and "site-packages" in strata_kv.__file__:
        assert path.parent == Path(strata_kv.__file__).parent, "pip install ./python ships the library"


def test_the_library_needs_no_swift_runtime():
    ldd = shutil.which("ldd")
    if ldd is None:
        pytest.skip("no ldd")
    listing = subprocess.run([ldd, _native.library_path()], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin"}).stdout
    assert "not found" not in listing, listing
    if "site-packages" in strata_kv.__file__:
        assert "libswift" not in listing and "libdispatch" not in listing, listing


def test_it_loads_in_a_bare_environment():
    code = ("import strata_kv; from strata_kv import _native; lib = _native.library(); "
            "print(lib.strata_last_error() == b'')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                         env={"PATH": "/usr/bin:/bin", **({"STRATA_CLIENT_LIBRARY": os.environ["STRATA_CLIENT_LIBRARY"]}
                                                          if "STRATA_CLIENT_LIBRARY" in os.environ else {})})
    assert run.returncode == 0 and run.stdout.strip() == "True", run.stderr
