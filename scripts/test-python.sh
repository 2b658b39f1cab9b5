#!/usr/bin/env bash
# The Python client's tests (python/tests) against real `strata serve` processes.
#
# Creates or reuses a virtual environment cached by the hash of python/requirements-test.txt
# (${XDG_CACHE_HOME:-$HOME/.cache}/strata/venv-<hash>), builds libstrata_client in release with the
# Swift runtime linked statically (the library product only), installs ./python into the
# environment (which ships that library inside the package) and runs pytest. Assumes `swift build`
# has built the `strata` binary (scripts/test.sh does; STRATA_BIN overrides). Extra arguments
# go to pytest. Exits non-zero on any failure, including a run that collected no test.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=python/requirements-test.txt
hash=$(sha256sum "$requirements" | cut -c1-16)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/strata"
venv="$cache/venv-$hash"
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "== python: creating $venv"
  rm -rf "$venv"
  mkdir -p "$cache"
  # Debian's python3 makes environments only with python3-venv (ensurepip) installed.
  if ! "$python" -c "import ensurepip, venv" 2>/dev/null && command -v apt-get >/dev/null; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  touch "$venv/.complete"
else
  echo "== python: reusing $venv"
fi

echo "== python: libstrata_client (release, Swift runtime linked statically)"
swift build -c release --product strata_client -Xswiftc -static-stdlib
library=.build/release/libstrata_client.so
if env -i LD_LIBRARY_PATH= ldd "$library" | grep -q "libswift"; then
  echo "$library still needs the Swift runtime's shared libraries" >&2
  exit 1
fi

echo "== python: installing ./python"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps --no-build-isolation ./python

echo "== python: pytest"
# A test running past 5 minutes has every thread's stack printed (pytest's faulthandler_timeout).
status=0
# Not from the checkout's python/ folder, so the installed package (with its library) is tested.
(cd python/tests && env -u STRATA_CLIENT_LIBRARY "$venv/bin/python" -m pytest -q -p no:cacheprovider -o faulthandler_timeout=300 --ignore=engines . "$@") || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no test: that is a failure here" >&2
  exit 1
fi
exit "$status"
