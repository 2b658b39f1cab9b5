#!/usr/bin/env bash
# Tier benchmarks side by side in one run: RAM tier vs memcpy, NVMe-tier reads of demoted 2 MiB
# blocks vs fio sequential O_DIRECT reads of a same-size file on the same disk (1 and 4 readers),
# repeated and reported as medians and ratios. Usage: scripts/bench-tiers.sh [DIR] [REPEATS]
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
    for bs in 2M 2052k; do
      fio --name=seq --filename="$dir/fio.dat" --size=$((bytes_mib / jobs))M --offset_increment=$((bytes_mib / jobs))M \
        --numjobs=$jobs --group_reporting --rw=read --bs=$bs --direct=1 --ioengine=psync --output-format=json \
        | python3 -c "import json,sys; print('fio-$bs threads=$jobs', json.load(sys.stdin)['jobs'][0]['read']['bw_bytes']/1e9)" \
        >> "$results"
    done
  done
  .build/release/strata-microbench tiers --seconds 0.5 --repeat 1 --dir "$dir" | tee -a "$results.log" \
    | awk '/^nvme-read/ {print $1" "$2, $4}' >> "$results"
done
rm -f "$dir/fio.dat"

python3 - "$results" <<'PY'
import statistics, sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, value = line.rsplit(" ", 1)
    runs[name].append(float(value))
med = {k: statistics.median(v) for k, v in runs.items()}
print("\nNVMe tier vs fio, GB/s (medians of %d rounds)" % len(next(iter(runs.values()))))
print("%-10s %-12s %-16s %-16s %-14s" % ("readers", "strata", "fio bs=2M", "fio bs=2052k", "strata/fio 2M"))
for t in (1, 4):
    s, f, g = med["nvme-read threads=%d" % t], med["fio-2M threads=%d" % t], med["fio-2052k threads=%d" % t]
    print("%-10d %-12.2f %-16.2f %-16.2f %.2fx" % (t, s, f, g, s / f))
PY
echo
echo "RAM tier (last round):"
grep -A4 '^RAM tier' "$results.log" | tail -4
rm -f "$results" "$results.log"
