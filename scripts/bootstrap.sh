#!/usr/bin/env bash
# Installs the system packages that Strata builds, runs and tests with (Debian 12; idempotent:
# installs only what is missing, and asks apt nothing when everything is present).
set -euo pipefail

packages=(
  pkg-config       # finds the C libraries below for SwiftPM
  libibverbs-dev   # RDMA verbs
  librdmacm-dev    # RDMA connection manager
  rdma-core        # RDMA user-space providers and tools (rdma link, ibv_devices)
  liblz4-dev       # NVMe-tier compression
  libssl-dev       # TLS and SHA-256
  python3          # the independent block-key reference (scripts/keyref.py) run by the tests
  gcc              # the C ABI test program (Tests/CABI) is compiled by the tests
  libc6-dev
  etcd-server      # etcd for the membership tests (StrataEtcdTests, the etcd cluster and dashboard tests)
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} > 0)); then
  echo "bootstrap: installing ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
  echo "bootstrap: a Swift 6 toolchain is required (swift was not found on PATH)" >&2
  exit 1
fi

# promtool, which checks and unit-tests deploy/prometheus/strata-alerts.yml (AlertRulesTests): taken
# from Debian's prometheus package without installing it (installing would start a Prometheus
# server), kept in the cache beside the Python environments. Tests find it at this path.
promtool_dir="${XDG_CACHE_HOME:-$HOME/.cache}/strata/promtool"
if [ ! -x "$promtool_dir/promtool" ]; then
  echo "bootstrap: fetching promtool (Debian's prometheus package, unpacked only)" >&2
  scratch="$(mktemp -d)"
  (cd "$scratch" && apt-get download -qq prometheus 2>/dev/null || { sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"; $sudo apt-get update -qq && apt-get download -qq prometheus; })
  mkdir -p "$promtool_dir"
  dpkg-deb --fsys-tarfile "$scratch"/prometheus_*.deb | tar -x -O ./usr/bin/promtool >"$promtool_dir/promtool.part"
  chmod +x "$promtool_dir/promtool.part" && mv "$promtool_dir/promtool.part" "$promtool_dir/promtool"
  rm -rf "$scratch"
fi
