#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks formatting, builds, runs every test.
# This is the README's second command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh

echo "== format check (swift format, configuration in .swift-format)"
if ! swift format lint --strict -r Sources Tests Package.swift; then
  echo "formatting differs: run scripts/format.sh and commit the result" >&2
  exit 1
fi

echo "== build"
swift build --build-tests

echo "== tests"
swift test --disable-xctest  # every test uses Swift Testing
