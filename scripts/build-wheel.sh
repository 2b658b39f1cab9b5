#!/usr/bin/env bash
# Builds the strata-kv wheel with libstrata_client.so inside, for workers without a Swift toolchain.
#
#   scripts/build-wheel.sh [OUT_DIR]        # default dist/
#
# The library is a release build with the Swift runtime linked statically (-static-stdlib): it
# needs only the C libraries every Linux worker has plus OpenSSL 3 and rdma-core's libibverbs and
# librdmacm (checked below with ldd in an empty environment). The wheel is tagged py3-none-<platform>
# (any Python 3, this OS and architecture). Install it with `pip install dist/strata_kv-*.whl`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}

swift build -c release --product strata_client -Xswiftc -static-stdlib
library=.build/release/libstrata_client.so
echo "== what the library needs (empty environment, no Swift toolchain on the path)"
env -i LD_LIBRARY_PATH= ldd "$library"
if env -i LD_LIBRARY_PATH= ldd "$library" | grep -Eq "libswift|libdispatch|libFoundation|not found"; then
  echo "$library needs the Swift runtime or a missing library" >&2
  exit 1
fi

python=${PYTHON:-python3}
rm -rf python/build
"$python" -m pip wheel --no-deps --wheel-dir "$out" ./python
ls -l "$out"/strata_kv-*.whl
