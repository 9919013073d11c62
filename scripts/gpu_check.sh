#!/usr/bin/env bash
# Everything a GPU machine can check, in one command:
#   1. configure for the local GPU (CMAKE_CUDA_ARCHITECTURES from nvidia-smi's compute_cap, else
#      "native") and build everything;
#   2. the whole ctest suite, with GPUTRAIN_REQUIRE_GPU=1 so the gpu tests fail instead of skipping
#      if the device is not usable;
#   3. compute-sanitizer memcheck (graph and --no-graph) and racecheck on a short training run
#      (1 epoch on 200 random CIFAR-10-shaped images: full batches, a partial last batch, eval);
#   4. scripts/bench_gpu.sh;
# then prints a summary table. Exit status 0 only when every step passed.
#
#   scripts/gpu_check.sh [--build DIR] [--skip-bench] [--skip-sanitizer]
#
# Without network or Debian's -dev packages (the lent GPU machines): first, on a Debian machine,
# `scripts/offline_deps.sh download .deps` (43 MB), then carry .deps along; this script unpacks it.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
build="build-gpu"; skip_bench=0; skip_sanitizer=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --skip-bench) skip_bench=1; shift ;;
    --skip-sanitizer) skip_sanitizer=1; shift ;;
    *) echo "usage: $0 [--build DIR] [--skip-bench] [--skip-sanitizer]" >&2; exit 2 ;;
  esac
done

names=(); results=(); times=(); failed=0
record() {  # name, status (PASS/FAIL/SKIP), seconds
  names+=("$1"); results+=("$2"); times+=("$3")
  [[ "$2" == FAIL ]] && failed=1
  return 0
}
step() {  # name, command...: runs it, records PASS/FAIL with its duration
  local name=$1; shift
  echo; echo "==== $name: $*"
  local t0=$SECONDS
  if "$@"; then record "$name" PASS $((SECONDS - t0)); else record "$name" FAIL $((SECONDS - t0)); fi
}
summary() {
  echo; echo "==== gpu_check summary (${gpu_name:-no GPU found})"
  printf '%-34s %-6s %8s\n' step result seconds
  for i in "${!names[@]}"; do printf '%-34s %-6s %8s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"; done
  if [[ $failed == 0 ]]; then echo "gpu_check: all passed"; else echo "gpu_check: FAILED"; fi
}

gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
if [[ -z "$gpu_name" ]]; then
  echo "gpu_check: nvidia-smi finds no GPU; this script is for a machine with one" >&2
  record "find a GPU (nvidia-smi)" FAIL 0
  summary
  exit 1
fi
[[ "$cap" =~ ^[0-9]+$ ]] || cap=native
echo "gpu_check: $gpu_name, CUDA architecture $cap, build folder $build"

# A machine without Debian's -dev packages and without network: use the .deb files carried in
# .deps (scripts/offline_deps.sh download, here: see that script), unpacked next to the repo.
extra=()
if [[ -d .deps ]] && ls .deps/*.deb >/dev/null 2>&1; then
  [[ -d .deps/root ]] || scripts/offline_deps.sh unpack .deps
  deps=$PWD/.deps/root
  extra+=(-DCMAKE_PREFIX_PATH="$deps/usr")
  export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:$deps/usr/lib/x86_64-linux-gnu/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export GPUTRAIN_FASHION_DIR="$deps/usr/share/datasets/fashion-mnist"
  echo "gpu_check: build dependencies from $deps"
fi
# The Python that has PyTorch (on the lent machines that is python3 on PATH, not /usr/bin/python3).
if command -v python3 >/dev/null; then extra+=(-DGPUTRAIN_PYTHON="$(command -v python3)"); fi

jobs=$(nproc)
step "configure (sm $cap)" cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DGPUTRAIN_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$cap" "${extra[@]}"
step "build" cmake --build "$build" -j "$jobs"
if [[ "${results[1]}" != PASS ]]; then summary; exit 1; fi

step "ctest (all suites)" env GPUTRAIN_REQUIRE_GPU=1 ctest --test-dir "$build" --output-on-failure -j 2

# ---- compute-sanitizer on a short real training run ----
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gputrain-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
python=$(command -v python3 || true)
sanitizer=$(command -v compute-sanitizer || true)
for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [[ -z "$sanitizer" && -x "$c" ]] && sanitizer=$c
done
if [[ $skip_sanitizer == 1 ]]; then
  record "compute-sanitizer" SKIP 0
elif [[ -z "$sanitizer" || -z "$python" ]]; then
  echo "gpu_check: compute-sanitizer or python3 not found: sanitizer steps not run" >&2
  record "compute-sanitizer (not found)" FAIL 0
else
  # 5 × 40 training records = 200 images: batches of 64 (eager warm-up, graph capture, a replay)
  # and a partial one of 8 (eager); 100 test records: eval chunks of 64 and 36. Small, because
  # racecheck instruments every shared-memory access of the cuDNN/cuBLAS kernels.
  "$python" scripts/make_random_cifar10.py "$tmp/data" 40 100
  run=("$build/gputrain" train --config configs/cifar10.yaml --device cuda --quiet
       --set train.epochs=1 --set train.batch_size=64 --set data.dir="$tmp/data")
  step "memcheck (graph)" "$sanitizer" --tool memcheck --error-exitcode 1 "${run[@]}" --out "$tmp/mc"
  step "memcheck (--no-graph)" "$sanitizer" --tool memcheck --error-exitcode 1 "${run[@]}" \
    --out "$tmp/mc2" --no-graph
  step "racecheck" "$sanitizer" --tool racecheck --error-exitcode 1 "${run[@]}" --out "$tmp/rc"
fi

if [[ $skip_bench == 1 ]]; then
  record "bench_gpu.sh" SKIP 0
else
  step "bench_gpu.sh" scripts/bench_gpu.sh --build "$build"
fi

summary
exit $failed
