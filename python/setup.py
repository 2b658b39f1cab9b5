"""Puts libstrata_client into the package when it is built (``pip install ./python``, ``pip wheel``).

The library comes from, in order: $STRATA_CLIENT_LIBRARY; the checkout's
``.build/release/libstrata_client.so`` when it was linked with the Swift runtime inside it;
otherwise, where ``swift`` is on PATH, a release build of the library product with the Swift
runtime linked statically (``swift build -c release --product strata_client -Xswiftc -static-stdlib``).
Without any of them the package installs without the library and finds it at run time
(STRATA_CLIENT_LIBRARY, or the checkout's .build). See docs/client.md, "Python".
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:
    from wheel.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover
    bdist_wheel = None

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NAME = "libstrata_client.dylib" if sys.platform == "darwin" else "libstrata_client.so"
BUILT = REPO / ".build" / "release" / NAME


def _links_swift_runtime(path: Path) -> bool:
    """Whether the library needs the Swift runtime's shared libraries (readelf; False if unknown)."""
    try:
        dynamic = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return False
    return "libswiftCore" in dynamic


def _library() -> "Path | None":
    configured = os.environ.get("STRATA_CLIENT_LIBRARY")
    if configured:
        return Path(configured)
    if BUILT.is_file() and not _links_swift_runtime(BUILT):
        return BUILT
    if (REPO / "Package.swift").is_file() and shutil.which("swift"):
        print("strata-kv: building libstrata_client (swift build -c release, Swift runtime linked statically)")
        subprocess.run(
            ["swift", "build", "-c", "release", "--product", "strata_client", "-Xswiftc", "-static-stdlib"],
            cwd=REPO, check=True)
        return BUILT
    print("strata-kv: no libstrata_client to ship; set STRATA_CLIENT_LIBRARY at run time", file=sys.stderr)
    return None


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        library = _library()
        if library is None:
            return
        target = Path(self.build_lib) / "strata_kv" / NAME
        shutil.copyfile(library, target)
        os.chmod(target, 0o755)
        if shutil.which("strip") and sys.platform != "darwin":
            subprocess.run(["strip", "--strip-unneeded", str(target)], check=False)


commands = {"build_py": BuildWithLibrary}
if bdist_wheel is not None:

    class PlatformWheel(bdist_wheel):
        """The wheel holds a native library: tag it for this platform, any Python 3."""

        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            _, _, platform = super().get_tag()
            return "py3", "none", platform

    commands["bdist_wheel"] = PlatformWheel

class BinaryDistribution(Distribution):
    """Holds a native library: installed as platform-specific (platlib), not pure Python."""

    def has_ext_modules(self):
        return True


setup(cmdclass=commands, distclass=BinaryDistribution)
