#!/usr/bin/env bash
# Tier benchmarks side by side in one run: RAM tier vs memcpy, NVMe-tier reads of demoted 2 MiB
# blocks vs fio sequential O_DIRECT reads of a same-size file on the same disk (1 and 4 readers,
# each its own contiguous share, 2 MiB reads), rounds interleaved, ratios taken within each round,
# and the issue's target (>= 0.9x fio) reported met or not. Usage: scripts/bench-tiers.sh [DIR] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-./strata-bench}"
repeats="${2:-3}"
mkdir -p "$dir"
command -v fio >/dev/null || { apt-get update -qq && apt-get install -y -qq fio >/dev/null; }
swift build -c release --product strata-microbench >/dev/null

# The NVMe benchmark stores 447 blocks of 2 MiB: fio reads the same number of bytes.
bytes_mib=894
fio --name=prepare --filename="$dir/fio.dat" --size=${bytes_mib}M --rw=write --bs=2M --direct=1 \
  --ioengine=psync --output-format=terse >/dev/null

results=$(mktemp)
for round in $(seq "$repeats"); do
  for jobs in 1 4; do
    fio --name=seq --filename="$dir/fio.dat" --size=$((bytes_mib / jobs))M --offset_increment=$((bytes_mib / jobs))M \
      --numjobs=$jobs --group_reporting --rw=read --bs=2M --direct=1 --ioengine=psync --output-format=json \
      | python3 -c "import json,sys; print('$round fio threads=$jobs', json.load(sys.stdin)['jobs'][0]['read']['bw_bytes']/1e9)" \
      >> "$results"
  done
  .build/release/strata-microbench tiers --seconds 0.5 --repeat 3 --dir "$dir" | tee -a "$results.log" \
    | awk -v round="$round" '/^nvme-read/ {print round" nvme "$2, $4}' >> "$results"
done
rm -f "$dir/fio.dat"

# Each round's ratio is taken within the round (the disk's speed swings between rounds); the
# target is the median of those ratios.
python3 - "$results" <<'PY'
import statistics, sys, collections
rounds = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    round_, who, threads, value = line.split()
    rounds[threads][(int(round_), who)] = float(value)
print("\nNVMe tier vs fio (O_DIRECT, psync, 2 MiB reads, the same bytes), GB/s, %d rounds interleaved"
      % len({r for r, _ in rounds["threads=1"]}))
print("%-8s %-28s %-28s %-22s %s" % ("readers", "strata (rounds)", "fio (rounds)", "strata/fio (rounds)", "median ratio"))
for threads in ("threads=1", "threads=4"):
    runs = rounds[threads]
    order = sorted({r for r, _ in runs})
    strata = [runs[(r, "nvme")] for r in order]
    fio = [runs[(r, "fio")] for r in order]
    ratios = [s / f for s, f in zip(strata, fio)]
    median = statistics.median(ratios)
    print("%-8s %-28s %-28s %-22s %.2fx  target >= 0.9x: %s" % (
        threads.split("=")[1], " ".join("%.2f" % v for v in strata), " ".join("%.2f" % v for v in fio),
        " ".join("%.2f" % v for v in ratios), median, "met" if median >= 0.9 else "NOT met"))
PY
echo
echo "RAM tier (last round):"
grep -A4 '^RAM tier' "$results.log" | tail -4
rm -f "$results" "$results.log"
