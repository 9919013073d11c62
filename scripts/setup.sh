#!/usr/bin/env bash
# Installs what gputrain needs to build, train and run its tests, from Debian's packages.
# Idempotent: installs only what is missing, and says what it does.
#   scripts/setup.sh            build + data + test dependencies
#   scripts/setup.sh --minimal  build + data only (no Python/PyTorch for the test suites)
set -euo pipefail

# protobuf-compiler (protoc) compiles proto/tensorboard_event.proto for output.tensorboard.
BUILD_PACKAGES=(g++ make cmake libcli11-dev libspdlog-dev catch2 libyaml-cpp-dev zlib1g-dev
                libopenblas-openmp-dev nlohmann-json3-dev libpng-dev libturbojpeg0-dev libonnx-dev
                libprotobuf-dev protobuf-compiler openmpi-bin libopenmpi-dev)
DATA_PACKAGES=(dataset-fashion-mnist)
# The CLI and parity suites drive gputrain from Python; PyTorch is the parity oracle (Debian's
# python3-torch: CPU-only, one package, no multi-GB CUDA wheels to fetch); PyYAML writes their
# configs; PIL writes the image-folder tests' files; python3-venv for onnxruntime (PyPI) in .ci/run;
# matplotlib draws curves.png. libopenblas0-pthread puts the pthread OpenBLAS beside the OpenMP one,
# so tests/cli/test_blas.py trains under both (installing it also makes it the alternatives' default
# libopenblas.so.0, as on many Debian machines).
# clang + libclang-rt-dev (libclang_rt.fuzzer, ASan, UBSan) build the fuzz targets (ctest -L fuzz).
TEST_PACKAGES=(python3 python3-numpy python3-pytest python3-torch python3-yaml python3-pil
               python3-venv python3-matplotlib libopenblas0-pthread clang libclang-rt-dev)

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
