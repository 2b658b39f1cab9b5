#!/usr/bin/env bash
# Builds Strata (release) and starts a node on the embedded default: one node, RAM tier and an
# NVMe tier under ./strata-data, listening on 127.0.0.1:7400. Extra arguments go to `strata serve`.
# This is the README's first command.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
swift build -c release --product strata
exec .build/release/strata serve "$@"
