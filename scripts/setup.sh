#!/usr/bin/env bash
# Installs what gputrain needs to build, train and run its tests, from Debian's packages.
# Idempotent: installs only what is missing, and says what it does.
#   scripts/setup.sh            build + data + test dependencies
#   scripts/setup.sh --minimal  build + data only (no Python/PyTorch for the test suites)
set -euo pipefail

BUILD_PACKAGES=(g++ make cmake libcli11-dev libspdlog-dev catch2 libyaml-cpp-dev zlib1g-dev
                libopenblas-openmp-dev nlohmann-json3-dev
                openmpi-bin libopenmpi-dev)
DATA_PACKAGES=(dataset-fashion-mnist)
# The CLI and parity suites drive gputrain from Python; PyTorch is the parity oracle (Debian's
# python3-torch: CPU-only, one package, no multi-GB CUDA wheels to fetch); PyYAML writes their configs.
TEST_PACKAGES=(python3 python3-numpy python3-pytest python3-torch python3-yaml)

packages=("${BUILD_PACKAGES[@]}" "${DATA_PACKAGES[@]}")
if [[ "${1:-}" != "--minimal" ]]; then
  packages+=("${TEST_PACKAGES[@]}")
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all ${#packages[@]} packages already installed"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  SUDO="sudo"
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "setup: done"
