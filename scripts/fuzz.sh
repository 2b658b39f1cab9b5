#!/usr/bin/env bash
# Fuzzes with libFuzzer for N seconds (default 60), starting from a copy of the target's seed corpus.
#   scripts/fuzz.sh wire [SECONDS] [libFuzzer flags...]      the data-plane wire decoders (Tests/Fixtures/wire-corpus)
#   scripts/fuzz.sh pipeline [SECONDS] [libFuzzer flags...]  the node's request pipeline over the in-memory
#                                                            transport (Tests/Fixtures/pipeline-corpus)
# FUZZ_SANITIZERS=fuzzer,address adds AddressSanitizer (slower; catches out-of-bounds reads that
# release builds do not trap on).
# Crashing inputs land in .build-fuzz/artifacts-TARGET/; replay one with
#   swift run strata-TARGET-fuzz PATH   (a normal build replays files instead of fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-}"
case "$target" in
  wire | pipeline) ;;
  *) echo "usage: scripts/fuzz.sh wire|pipeline [SECONDS] [libFuzzer flags...]" >&2; exit 64 ;;
esac
shift
seconds="${1:-60}"
shift || true
sanitizers="${FUZZ_SANITIZERS:-${WIRE_FUZZ_SANITIZERS:-fuzzer}}"
product="strata-$target-fuzz"

echo "== build $product (libFuzzer, release, -D FUZZING, -sanitize=$sanitizers)"
# Extern: the @_extern(c) declaration of LLVMFuzzerRunDriver (see Sources/WireFuzzer/FuzzerEntry.swift).
flags=(-c release --product "$product" --scratch-path .build-fuzz
  -Xswiftc -sanitize="$sanitizers" -Xswiftc -parse-as-library -Xswiftc -DFUZZING
  -Xswiftc -enable-experimental-feature -Xswiftc Extern)
swift build "${flags[@]}"
binary="$(swift build "${flags[@]}" --show-bin-path)/$product"

# libFuzzer adds what it finds to the first corpus directory: work on a copy, keep the seeds clean.
corpus=".build-fuzz/corpus-$target"
artifacts=".build-fuzz/artifacts-$target"
mkdir -p "$corpus" "$artifacts"
cp "Tests/Fixtures/$target-corpus/"* "$corpus/"

echo "== fuzz for ${seconds}s (corpus $corpus, crashes in $artifacts/)"
"$binary" "$corpus" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=4096 \
  -print_final_stats=1 -artifact_prefix="$artifacts/" "$@"
