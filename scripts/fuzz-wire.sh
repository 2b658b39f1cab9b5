#!/usr/bin/env bash
# Fuzzes the data-plane wire decoders with libFuzzer for N seconds (default 60), starting from a copy
# of the seed corpus Tests/Fixtures/wire-corpus. Usage: scripts/fuzz-wire.sh [SECONDS] [libFuzzer flags...]
# WIRE_FUZZ_SANITIZERS=fuzzer,address adds AddressSanitizer (slower; catches out-of-bounds reads that
# release builds do not trap on).
# Crashing inputs land in .build-fuzz/artifacts/; replay one with
#   swift run strata-wire-fuzz PATH   (a normal build replays files instead of fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true

sanitizers="${WIRE_FUZZ_SANITIZERS:-fuzzer}"

echo "== build (libFuzzer, release, -D FUZZING, -sanitize=$sanitizers)"
# Extern: the @_extern(c) declaration of LLVMFuzzerRunDriver (see Sources/WireFuzzer/FuzzerEntry.swift).
flags=(-c release --product strata-wire-fuzz --scratch-path .build-fuzz
  -Xswiftc -sanitize="$sanitizers" -Xswiftc -parse-as-library -Xswiftc -DFUZZING
  -Xswiftc -enable-experimental-feature -Xswiftc Extern)
swift build "${flags[@]}"
binary="$(swift build "${flags[@]}" --show-bin-path)/strata-wire-fuzz"

# libFuzzer adds what it finds to the first corpus directory: work on a copy, keep the seeds clean.
corpus=".build-fuzz/corpus"
artifacts=".build-fuzz/artifacts"
mkdir -p "$corpus" "$artifacts"
cp Tests/Fixtures/wire-corpus/* "$corpus/"

echo "== fuzz for ${seconds}s (corpus $corpus, crashes in $artifacts/)"
"$binary" "$corpus" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=4096 \
  -print_final_stats=1 -artifact_prefix="$artifacts/" "$@"
