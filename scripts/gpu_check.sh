#!/usr/bin/env bash
# gputrain's check for one short window on a GPU machine: at most 8 minutes (480 s) from a bare
# machine with no network, given the repository, the carried .deps (scripts/offline_deps.sh) and,
# optionally, binaries prebuilt elsewhere (--prebuild). Stages, in order of value, each capped by
# its budget and by what is left of the total:
#
#   stage      budget  what
#   setup        20 s  unpack .deps (Debian's -dev packages as .deb files), find Python, Ninja,
#                      compute-sanitizer, the pip wheels' cuDNN/cuBLAS; write small data sets
#   build       150 s  use the prebuilt gputrain + GPU test binary when they start here and match
#                      this tree and GPU; else configure (Ninja, Release, this GPU's architecture
#                      only) and build only gputrain, gputrain_gpu_tests, gputrain_kernel_bench and
#                      gputrain_cuda_host_tests
#   info         15 s  `gputrain info` must list a CUDA device
#   gpu-tests    60 s  the GPU test binary (ctest -L gpu's cases) with GPUTRAIN_REQUIRE_GPU=1, then
#                      the CUDA host tests (cuDNN/cuBLAS glue) when built
#   kernel-bench 15 s  build/tests/gputrain_kernel_bench: each hand-written kernel, GPU vs CPU µs
#                      (SKIP with prebuilt binaries that lack it)
#   parity       90 s  tests/parity/test_parity_cuda.py (CUDA vs PyTorch, fp32 and the tf32/bf16
#                      bounds), 4 workers if xdist is there
#   train        50 s  one short run (320 images, 2 epochs, deterministic) with CUDA graphs, with
#                      eager steps (--no-graph), with train.precision tf32 and bf16 and on the CPU
#                      engine; weights compared (fp32 to 1e-4 of the CPU's largest, or 1e-3
#                      relative L2 when a ReLU/max-pool branch flipped; tf32 1e-2 and bf16 3e-2
#                      relative L2 per tensor: test_parity_cuda.py says why)
#   memcheck     60 s  compute-sanitizer memcheck of a short run (graph, then --no-graph),
#                      instrumenting gputrain's own kernels only (--kernel-name kns=gputrain)
#   bench      rest    scripts/bench_gpu.sh with the time that is left (PyTorch variants capped)
#   total       480 s  (--budget S to change; stages that get no time are SKIPped)
#
# Each stage prints one line as soon as it ends: PASS, FAIL or SKIP, seconds, and a note; a FAIL
# also prints the end of its output. A summary table follows at the end. With --log-dir DIR the
# log is written as the check goes, so a killed run still tells how far it got:
#   DIR/summary.txt  the table, rewritten at each stage's start and end (RUNNING / not reached)
#   DIR/log.txt      every stage's full output, appended as it comes
#   DIR/bench.txt    the benchmark's table
# Exit status: 0 every stage passed or was skipped, 1 a stage failed, 2 bad usage, 3 no GPU here.
#
#   scripts/gpu_check.sh [--log-dir DIR] [--build DIR] [--prebuilt DIR | --no-prebuilt]
#                        [--skip STAGE[,STAGE...]] [--budget SECONDS] [--verbose]
#   scripts/gpu_check.sh --dry-run [--arch SM] ...   no GPU needed: setup and build stages only
#   scripts/gpu_check.sh --prebuild [DIR] [--arch SM]
#       on a machine with the CUDA toolkit (no GPU needed): build gputrain and the GPU test binary
#       for SM (default 90: H100/H200), host code generic (no -march=native), and copy them with a
#       fingerprint of the sources into DIR (default build-prebuilt/, ignored by git), to carry.
#
# A lent GPU machine without network or Debian's -dev packages: here, `scripts/offline_deps.sh
# download .deps` and `scripts/gpu_check.sh --prebuild`; carry .deps and build-prebuilt; there,
# `scripts/gpu_check.sh --log-dir "$OUT/check"` (the log folder holds 3 files).
set -uo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.." || exit 2
repo=$PWD

usage() { sed -n '2,/^set -uo/p' "$self" | sed '$d; s/^# \{0,1\}//'; }

STAGES=(setup build info gpu-tests kernel-bench parity train memcheck bench)
declare -A BUDGET=([setup]=20 [build]=150 [info]=15 [gpu-tests]=60 [kernel-bench]=15 [parity]=90
                   [train]=50 [memcheck]=60 [bench]=0)
SKIP_RC=77   # a stage's exit status for "could not run here" (SKIP, not FAIL)

# Sources that make the two binaries: a prebuilt pair is used only when this fingerprint matches.
source_fingerprint() {
  (cd "$repo" && find CMakeLists.txt cmake src include kernels tests/CMakeLists.txt tests/catch_main.cpp \
     tests/gpu tests/support tests/bench -type f 2>/dev/null | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
}

# ============================ stages (run as `gpu_check.sh --run-stage NAME`) ============================
# They read the GC_* variables the main part exports and leave results in files under $GC_STATE.
note() { echo "$*" > "$GC_STATE/note-$GC_STAGE"; }

stage_build() {
  local pre=$GC_PREBUILT
  if [[ -n "$pre" && -x "$pre/gputrain" && -x "$pre/gputrain_gpu_tests" ]]; then
    local why="" lib dir extra=""
    # Libraries the loader cannot find for them (e.g. libcudnn.so.9 where cuDNN is only a pip
    # wheel): the wheel folders that hold them go to LD_LIBRARY_PATH, for this and later stages.
    for lib in $(ldd "$pre/gputrain" "$pre/gputrain_gpu_tests" 2> /dev/null | awk '/not found/ {print $1}' | sort -u); do
      IFS=: read -r -a wheel_dirs <<< "$GC_WHEEL_LIBS"
      for dir in "${wheel_dirs[@]}"; do
        if [[ -e "$dir/$lib" && ":$extra:" != *":$dir:"* ]]; then extra+="${extra:+:}$dir"; break; fi
      done
    done
    if [[ -n "$extra" ]]; then
      echo "gpu_check: libraries from pip wheels for the prebuilt binaries: $extra"
      export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$extra"
    fi
    if [[ "$(cat "$pre/arch.txt" 2>/dev/null)" != "$GC_ARCH" ]]; then
      why="built for sm_$(cat "$pre/arch.txt" 2>/dev/null), this GPU is sm_$GC_ARCH"
    elif [[ "$(cat "$pre/fingerprint.txt" 2>/dev/null)" != "$(source_fingerprint)" ]]; then
      why="built from other sources than this tree"
    elif ! LD_BIND_NOW=1 timeout 30 "$pre/gputrain" --version; then
      why="gputrain does not start here (libraries or symbols missing?)"
    else
      # Catch2 v2 exits with the number of tests listed: "starts" = it listed some and was neither
      # refused by the loader (127) nor killed by a signal.
      local listed rc
      listed=$(LD_BIND_NOW=1 timeout 30 "$pre/gputrain_gpu_tests" --list-test-names-only 2>&1)
      rc=$?
      if ((rc >= 126)) || [[ -z "$listed" ]]; then
        why="gputrain_gpu_tests does not start here (exit $rc: $(tail -n 1 <<< "$listed"))"
      fi
    fi
    if [[ -z "$why" ]]; then
      echo "$pre/gputrain" > "$GC_STATE/gputrain"
      echo "$pre/gputrain_gpu_tests" > "$GC_STATE/gpu_tests"
      [[ -x "$pre/gputrain_kernel_bench" ]] && echo "$pre/gputrain_kernel_bench" > "$GC_STATE/kernel_bench"
      echo "$extra" > "$GC_STATE/ld_path"
      note "prebuilt binaries start ($pre)${extra:+, with pip-wheel libraries}"
      return 0
    fi
    echo "gpu_check: not using the prebuilt binaries in $pre: $why; building here"
  fi
  local build=$GC_BUILD
  # A build folder made with another generator cannot be reused.
  if [[ -f "$build/CMakeCache.txt" ]] &&
     ! grep -q "^CMAKE_GENERATOR:INTERNAL=$GC_GENERATOR\$" "$build/CMakeCache.txt"; then
    rm -rf "$build"
  fi
  local args=(-S . -B "$build" -G "$GC_GENERATOR" -DCMAKE_BUILD_TYPE=Release -DGPUTRAIN_CUDA=ON
              -DCMAKE_CUDA_ARCHITECTURES="$GC_ARCH" -DGPUTRAIN_TESTS=ON)
  # The Python suites' interpreter: python3 on PATH where it has pytest (on the lent GPU machines
  # the one with PyTorch), else the build's default.
  if [[ -n "$GC_PYTHON" ]] && "$GC_PYTHON" -c "import pytest" 2> /dev/null; then
    args+=(-DGPUTRAIN_PYTHON="$GC_PYTHON")
  fi
  [[ -n "$GC_DEPS_PREFIX" ]] && args+=(-DCMAKE_PREFIX_PATH="$GC_DEPS_PREFIX")
  [[ "${GC_NATIVE:-ON}" == OFF ]] && args+=(-DGPUTRAIN_NATIVE=OFF)
  echo "+ cmake ${args[*]}"
  cmake "${args[@]}" || { note "configure failed"; return 1; }
  local targets=(gputrain gputrain_gpu_tests gputrain_kernel_bench gputrain_cuda_host_tests)
  echo "+ cmake --build $build -j $(nproc) --target ${targets[*]}"
  cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" || { note "build failed"; return 1; }
  build=$(cd "$build" && pwd)
  echo "$build/gputrain" > "$GC_STATE/gputrain"
  echo "$build/tests/gputrain_gpu_tests" > "$GC_STATE/gpu_tests"
  echo "$build/tests/gputrain_kernel_bench" > "$GC_STATE/kernel_bench"
  echo "$build/tests/gputrain_cuda_host_tests" > "$GC_STATE/cuda_host_tests"
  "$(cat "$GC_STATE/gputrain")" --version
  note "built in $build for sm_$GC_ARCH ($GC_GENERATOR)"
}

gputrain_bin() { cat "$GC_STATE/gputrain"; }

stage_info() {
  local out
  out=$("$(gputrain_bin)" info 2>&1)
  local rc=$?
  echo "$out"
  local dev
  dev=$(grep -E '^cuda:[0-9]+' <<< "$out" | head -n 1)
  if [[ $rc == 0 && -n "$dev" ]]; then note "$dev"; return 0; fi
  note "no CUDA device listed (exit $rc)"
  return 1
}

stage_gpu_tests() {
  local out rc
  out=$(GPUTRAIN_REQUIRE_GPU=1 "$(cat "$GC_STATE/gpu_tests")" 2>&1)
  rc=$?
  echo "$out"
  local summary
  summary=$(grep -E 'test cases|passed|failed' <<< "$out" | tail -n 1)
  local host_tests
  host_tests=$(cat "$GC_STATE/cuda_host_tests" 2> /dev/null)
  if [[ -n "$host_tests" && -x "$host_tests" ]]; then
    local host_out host_rc
    host_out=$("$host_tests" 2>&1)
    host_rc=$?
    echo "$host_out"
    summary+="; host: $(grep -E 'test cases|passed|failed' <<< "$host_out" | tail -n 1)"
    [[ $host_rc == 0 ]] || rc=1
  fi
  note "$summary"
  return $rc
}

stage_kernel_bench() {
  local bench
  bench=$(cat "$GC_STATE/kernel_bench" 2> /dev/null)
  if [[ -z "$bench" || ! -x "$bench" ]]; then note "no gputrain_kernel_bench (prebuilt pair)"; return $SKIP_RC; fi
  local t0=$SECONDS out rc
  out=$("$bench" 2>&1)
  rc=$?
  echo "$out"
  [[ $rc == 4 ]] && { note "no CUDA device for the bench"; return $SKIP_RC; }
  note "$(grep -c . <<< "$out") lines of GPU vs CPU µs in log.txt ($((SECONDS - t0))s)"
  return $rc
}

stage_parity() {
  if [[ -z "$GC_PYTHON" ]] || ! "$GC_PYTHON" -c "import pytest, numpy, torch" 2> /dev/null; then
    note "python3 on PATH lacks pytest, numpy or torch"
    return $SKIP_RC
  fi
  local args=(-m pytest -q -p no:cacheprovider -rs tests/parity/test_parity_cuda.py)
  "$GC_PYTHON" -c "import xdist" 2> /dev/null && args+=(-n 4)
  local out rc
  out=$(GPUTRAIN_BIN="$(gputrain_bin)" PYTHONDONTWRITEBYTECODE=1 "$GC_PYTHON" "${args[@]}" 2>&1)
  rc=$?
  echo "$out"
  local last
  last=$(grep -E '(passed|failed|skipped|error)' <<< "$out" | tail -n 1 | sed 's/=//g; s/^ *//; s/ *$//')
  note "$last"
  [[ $rc == 0 ]] || return 1
  # Everything skipped means gputrain saw no device: a failure here, where there is one.
  grep -q passed <<< "$last" || { note "all skipped: $last"; return 1; }
}

# gputrain train on a small random CIFAR-10-shaped set; extra args follow.
train_small() {  # out-dir data-dir args...
  local out=$1 data=$2; shift 2
  "$(gputrain_bin)" train --config configs/cifar10.yaml --quiet --out "$out" --set data.dir="$data" \
    --set train.batch_size=64 --set train.seed=7 "$@"
}

stage_train() {
  local d=$GC_STATE/train common=(--set train.epochs=2 --set train.deterministic=true)
  local t0 rc=0
  for run in "graph --device cuda" "eager --device cuda --no-graph" \
             "tf32 --device cuda --set train.precision=tf32" \
             "bf16 --device cuda --set train.precision=bf16" "cpu --device cpu"; do
    read -r name args <<< "$run"
    t0=$SECONDS
    # shellcheck disable=SC2086  # args holds separate words on purpose
    train_small "$d/$name" "$GC_STATE/data-train" "${common[@]}" $args || { note "$name run failed"; return 1; }
    echo "$name: $(tail -n 1 "$d/$name/metrics.jsonl") ($((SECONDS - t0))s)"
  done
  # Weights after 10 steps: graph vs eager runs the same kernels and (deterministic) algorithms, so
  # they agree to rounding; CUDA vs CPU sums in other orders: the parity suite's bound (1e-4 of the
  # largest weight after 16 steps), or a branch flip (see the Python below).
  "$GC_PYTHON" - "$d" <<'PY' || rc=1
import json, os, sys
sys.path[:0] = ["tests/parity", "tests/support"]  # safetensors_io.py is in tests/support
d = sys.argv[1]
def metrics(run):
    with open(os.path.join(d, run, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]
RUNS = ("graph", "eager", "tf32", "bf16", "cpu")
for run in RUNS:
    print(run, " ".join(f"epoch {m['epoch']}: train_loss {m['train_loss']:.6f} test_loss {m['test_loss']:.6f}"
                        for m in metrics(run)))
try:
    import numpy as np
    import safetensors_io
except ImportError as e:
    print(f"no numpy ({e}): losses compared, not weights")
    ok = all(abs(a["train_loss"] - b["train_loss"]) <= 1e-3 * max(1.0, abs(b["train_loss"]))
             for x, y in (("graph", "eager"), ("graph", "cpu")) for a, b in zip(metrics(x), metrics(y)))
    with open(os.environ["GC_STATE"] + "/note-train", "w") as f:
        f.write(f"no numpy: train losses {'agree' if ok else 'DIFFER'} to 1e-3 (weights not compared)\n")
    sys.exit(0 if ok else 1)
w = {run: safetensors_io.read(os.path.join(d, run, "model.safetensors"))[0] for run in RUNS}
worst = {}
ok = True
def max_rel(a, b):  # worst tensor: largest element difference over the tensor's largest |ref|
    return max(float(np.max(np.abs(w[a][k].astype(np.float64) - w[b][k])))
               / max(float(np.max(np.abs(w[b][k]))), 1e-30) for k in w[b])
def l2_rel(a, b):  # worst tensor: ||got - ref|| / ||ref||
    return max(float(np.linalg.norm(w[a][k].astype(np.float64) - w[b][k]))
               / max(float(np.linalg.norm(w[b][k].astype(np.float64))), 1e-30) for k in w[b])
# fp32 CUDA vs CPU: element-wise 1e-4, as the parity suite. A ReLU input or max-pool tie within
# FP32 rounding of the branch point can go the other way on the GPU (other summation orders) and
# move one whole gradient term (tests/gpu/test_cuda_engine.cpp's Net::before_branch); ~400 k ReLU
# inputs a step over 10 steps make one such flip likely. Such a run passes when the relative L2
# norm stays within 1e-3 (a flip spreads over the tensor; a wrong gradient does not), marked so.
# tf32/bf16: the weights bounds of tests/parity/test_parity_cuda.py (PRECISION_TOLS), in relative
# L2 norm per tensor (there, no element-wise bound holds at all).
for a, b, tol, l2 in (("graph", "eager", 1e-5, False), ("graph", "cpu", 1e-4, False),
                      ("eager", "cpu", 1e-4, False), ("tf32", "cpu", 1e-2, True), ("bf16", "cpu", 3e-2, True)):
    if l2:
        rel = l2_rel(a, b)
        good = rel <= tol
        text = f"relative L2 difference {rel:.2e} (bound {tol:.0e})"
    else:
        rel = max_rel(a, b)
        good = rel <= tol
        text = f"max rel difference {rel:.2e} (bound {tol:.0e})"
        if not good and b == "cpu":
            l2_diff = l2_rel(a, b)
            good = l2_diff <= 1e-3
            text += f", relative L2 {l2_diff:.2e} (bound 1e-3{': a branch flip' if good else ''})"
    ok &= good
    worst[f"{a}/{b}"] = rel
    print(f"weights {a} vs {b}: {text} {'ok' if good else 'TOO FAR'}")
with open(os.environ["GC_STATE"] + "/note-train", "w") as f:
    f.write("weights rel diff " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()) + "\n")
sys.exit(0 if ok else 1)
PY
  return $rc
}

stage_memcheck() {
  if [[ -z "$GC_SANITIZER" ]]; then note "compute-sanitizer not found"; return $SKIP_RC; fi
  # Only gputrain's kernels (namespace gputrain::kernels, and the device probe): cuDNN's and cuBLAS's
  # own kernels are not ours to fix, and instrumenting them multiplies the run time. API errors are
  # not reported: gputrain checks every CUDA call itself (a failing one ends the run with exit 1),
  # and the libraries' internal probing calls would count as errors.
  local san=("$GC_SANITIZER" --tool memcheck --kernel-name kns=gputrain --error-exitcode 9
             --report-api-errors no --print-limit 20)
  local rc=0 out mode
  for mode in graph eager; do
    local extra=()
    [[ $mode == eager ]] && extra=(--no-graph)
    echo "+ ${san[*]} gputrain train ... ${extra[*]}"
    out=$("${san[@]}" "$(gputrain_bin)" train --config configs/cifar10.yaml --device cuda --quiet \
          --out "$GC_STATE/memcheck-$mode" --set data.dir="$GC_STATE/data-small" --set train.epochs=1 \
          --set train.batch_size=64 "${extra[@]}" 2>&1)
    local r=$?
    echo "$out"
    if grep -q "Device not supported\|not supported on this" <<< "$out"; then
      note "compute-sanitizer refuses this device (e.g. under gVisor)"
      return $SKIP_RC
    fi
    if [[ $r != 0 ]]; then
      rc=1
      note "$mode: $(grep -m1 -E 'ERROR SUMMARY|error' <<< "$out" || echo "exit $r")"
    fi
  done
  [[ $rc == 0 ]] && note "graph and --no-graph: $(grep -m1 'ERROR SUMMARY' <<< "$out" || echo clean)"
  return $rc
}

stage_bench() {
  local bin_dir
  bin_dir=$(dirname "$(gputrain_bin)")
  scripts/bench_gpu.sh --bin "$bin_dir" --time-limit "$GC_STAGE_CAP" --table-out "$GC_LOG_DIR/bench.txt"
  local rc=$?
  note "table in $GC_LOG_DIR/bench.txt"
  return $rc
}

if [[ "${1:-}" == "--run-stage" ]]; then
  GC_STAGE=$2
  case "$2" in
    build) stage_build ;;
    info) stage_info ;;
    gpu-tests) stage_gpu_tests ;;
    kernel-bench) stage_kernel_bench ;;
    parity) stage_parity ;;
    train) stage_train ;;
    memcheck) stage_memcheck ;;
    bench) stage_bench ;;
    *) echo "gpu_check: no stage '$2'" >&2; exit 2 ;;
  esac
  exit $?
fi

# ============================ main ============================
log_dir=""; build="build-gpu"; prebuilt="build-prebuilt"; skip=""; total=480; verbose=0
dry_run=0; prebuild=""; arch=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --log-dir) log_dir="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --prebuilt) prebuilt="$2"; shift 2 ;;
    --no-prebuilt) prebuilt=""; shift ;;
    --skip) skip="$2"; shift 2 ;;
    --budget) total="$2"; shift 2 ;;
    --verbose) verbose=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --arch) arch="$2"; shift 2 ;;
    --prebuild)
      prebuild="build-prebuilt"
      if [[ $# -gt 1 && "$2" != --* ]]; then prebuild="$2"; shift; fi
      shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$total" =~ ^[0-9]+$ ]] || { echo "gpu_check: --budget wants seconds, got '$total'" >&2; exit 2; }
for s in ${skip//,/ }; do
  [[ " ${STAGES[*]} " == *" $s "* && $s != setup && $s != build ]] ||
    { echo "gpu_check: --skip: no skippable stage '$s' (info gpu-tests kernel-bench parity train memcheck bench)" >&2; exit 2; }
done

if [[ -n "$prebuild" ]]; then
  arch=${arch:-90}
  tree="build-sm$arch"
  gen=Ninja
  command -v ninja > /dev/null || gen="Unix Makefiles"
  echo "gpu_check --prebuild: sm_$arch, generic host code, build folder $tree, binaries into $prebuild"
  cmake -S . -B "$tree" -G "$gen" -DCMAKE_BUILD_TYPE=Release -DGPUTRAIN_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" -DGPUTRAIN_NATIVE=OFF -DGPUTRAIN_TESTS=ON || exit 1
  cmake --build "$tree" -j "$(nproc)" --target gputrain gputrain_gpu_tests gputrain_kernel_bench || exit 1
  rm -rf "$prebuild" && mkdir -p "$prebuild"
  cp "$tree/gputrain" "$tree/tests/gputrain_gpu_tests" "$tree/tests/gputrain_kernel_bench" "$prebuild/"
  strip "$prebuild/gputrain" "$prebuild/gputrain_gpu_tests" "$prebuild/gputrain_kernel_bench" 2> /dev/null || true
  echo "$arch" > "$prebuild/arch.txt"
  source_fingerprint > "$prebuild/fingerprint.txt"
  "$prebuild/gputrain" --version | tee "$prebuild/version.txt"
  du -sh "$prebuild"
  echo "gpu_check --prebuild: carry $prebuild (and .deps); there: scripts/gpu_check.sh --log-dir DIR"
  exit 0
fi

# ---- a GPU, or nothing to do ----
gpu_line=$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2> /dev/null | head -n 1)
if [[ -z "$gpu_line" && $dry_run == 0 ]]; then
  msg="gpu_check: no NVIDIA GPU here (nvidia-smi is missing or fails): nothing run; --dry-run checks the build without one"
  echo "$msg" >&2
  [[ -n "$log_dir" ]] && mkdir -p "$log_dir" && echo "$msg" > "$log_dir/summary.txt"
  exit 3
fi
gpu_name=${gpu_line%%,*}
cap=$(tr -d ' .' <<< "${gpu_line#*,}")
[[ "$cap" =~ ^[0-9]+$ ]] || cap=""
arch=${arch:-${cap:-90}}

start=$SECONDS
deadline=$((start + total))
[[ -n "$log_dir" ]] || log_dir=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
mkdir -p "$log_dir" || exit 2
log_dir=$(cd "$log_dir" && pwd)
log="$log_dir/log.txt"
: > "$log"
state=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-state.XXXXXX")
trap 'rm -rf "$state"' EXIT

declare -A RESULT SECS NOTE CAPS
write_summary() {  # [running-stage]
  local s
  {
    echo "gpu_check: ${gpu_name:-no GPU (dry run)}, sm_$arch; budget ${total}s; $(date -u '+%F %T') UTC, $((SECONDS - start))s in"
    printf '%-12s %-8s %7s %7s  %s\n' stage result seconds budget note
    for s in "${STAGES[@]}"; do
      local r=${RESULT[$s]:-} b=${CAPS[$s]:-${BUDGET[$s]}}
      [[ $s == bench && -z ${CAPS[$s]:-} ]] && b=rest
      if [[ -z "$r" ]]; then
        if [[ "${1:-}" == "$s" ]]; then r=RUNNING; else r="-"; fi
      fi
      printf '%-12s %-8s %7s %7s  %s\n' "$s" "$r" "${SECS[$s]:-}" "$b" "${NOTE[$s]:-}"
    done
  } > "$log_dir/summary.txt.new" && mv "$log_dir/summary.txt.new" "$log_dir/summary.txt"
}
report() {  # stage result seconds note
  RESULT[$1]=$2; SECS[$1]=$3; NOTE[$1]=$4
  printf '[%4ss] %-12s %-5s %4ss  %s\n' "$((SECONDS - start))" "$1" "$2" "$3" "$4"
  echo "==== $1: $2 in $3s: $4" >> "$log"
  write_summary
}
stage_output() {  # stage command...: runs it with its output in the log (and on screen with --verbose)
  if [[ $verbose == 1 ]]; then "$@" 2>&1 | tee -a "$log"; return "${PIPESTATUS[0]}"; fi
  "$@" >> "$log" 2>&1
}
run_stage() {  # stage
  local s=$1 cap=${BUDGET[$1]} left=$((deadline - SECONDS))
  if [[ ",$skip," == *",$s,"* ]]; then report "$s" SKIP 0 "--skip"; return; fi
  if [[ $s == bench || $cap -gt $left ]]; then cap=$left; fi
  if ((cap < 5)); then report "$s" SKIP 0 "no time left of ${total}s"; return; fi
  CAPS[$s]=$cap
  write_summary "$s"
  echo "==== $s (budget ${cap}s) $(date -u +%T)" >> "$log"
  local t0=$SECONDS from rc
  from=$(stat -c %s "$log")
  export GC_STAGE_CAP=$cap
  stage_output timeout -k 5 "$cap" "$self" --run-stage "$s"
  rc=$?
  local secs=$((SECONDS - t0)) n=""
  n=$(cat "$state/note-$s" 2> /dev/null)
  if [[ $rc == 0 ]]; then
    report "$s" PASS "$secs" "$n"
  elif [[ $rc == "$SKIP_RC" ]]; then
    report "$s" SKIP "$secs" "$n"
  else
    [[ $rc == 124 || $rc == 137 ]] && n="timed out after ${cap}s${n:+; $n}"
    report "$s" FAIL "$secs" "${n:-exit $rc}"
    [[ $verbose == 1 ]] || tail -c +"$((from + 1))" "$log" | grep -v '^====' | tail -n 20 | sed 's/^/      | /'
  fi
}

# ---- setup (here, in this shell: the stages inherit what it exports) ----
t0=$SECONDS
write_summary setup
setup_notes=()
export GC_STATE=$state GC_LOG_DIR=$log_dir GC_BUILD=$build GC_ARCH=$arch GC_DEPS_PREFIX=""
if [[ -d .deps ]] && ls .deps/*.deb > /dev/null 2>&1; then
  if [[ ! -d .deps/root ]]; then
    timeout 60 scripts/offline_deps.sh unpack .deps >> "$log" 2>&1 || setup_notes+=("unpacking .deps failed")
  fi
  deps=$repo/.deps/root
  GC_DEPS_PREFIX="$deps/usr"
  export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:$deps/usr/lib/x86_64-linux-gnu/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  [[ -d "$deps/usr/share/datasets/fashion-mnist" ]] && export GPUTRAIN_FASHION_DIR="$deps/usr/share/datasets/fashion-mnist"
  [[ -x "$deps/usr/bin/ninja" ]] && export PATH="$PATH:$deps/usr/bin"
  setup_notes+=(".deps")
fi
GC_PYTHON=$(command -v python3 || true)
export GC_PYTHON
# The pip wheels' CUDA library folders (cuDNN, cuBLAS, the runtime): the build stage adds those that
# hold a library the prebuilt binaries cannot find otherwise (only those: LD_LIBRARY_PATH comes
# before a binary's own run path, so adding them all would replace the toolkit's copies).
GC_WHEEL_LIBS=""
if [[ -n "$GC_PYTHON" ]]; then
  GC_WHEEL_LIBS=$(timeout 30 "$GC_PYTHON" - <<'PY' 2> /dev/null
import importlib, os
dirs = []
for name in ("cudnn", "cu13", "cublas", "cuda_runtime"):
    try:
        mod = importlib.import_module("nvidia." + name)
    except Exception:
        continue
    for p in list(getattr(mod, "__path__", None) or []):
        if os.path.isdir(os.path.join(p, "lib")):
            dirs.append(os.path.join(p, "lib"))
print(":".join(dirs))
PY
)
  [[ -n "$GC_WHEEL_LIBS" ]] && setup_notes+=("pip-wheel CUDA libs")
fi
export GC_WHEEL_LIBS
if command -v ninja > /dev/null; then GC_GENERATOR=Ninja
elif command -v make > /dev/null; then GC_GENERATOR="Unix Makefiles"; setup_notes+=("no ninja: make")
else GC_GENERATOR=Ninja; setup_notes+=("neither ninja nor make")
fi
export GC_GENERATOR
GC_SANITIZER=$(command -v compute-sanitizer || true)
for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer \
         "$(dirname "$(command -v nvcc 2> /dev/null || echo /nonexistent/x)")/compute-sanitizer"; do
  [[ -z "$GC_SANITIZER" && -x "$c" ]] && GC_SANITIZER=$c
done
export GC_SANITIZER
GC_PREBUILT=""
[[ -n "$prebuilt" && -d "$prebuilt" ]] && GC_PREBUILT=$(cd "$prebuilt" && pwd)
export GC_PREBUILT
{
  echo "gpu_check: ${gpu_name:-no GPU (dry run)}, sm_$arch, budget ${total}s, log folder $log_dir"
  echo "python3: ${GC_PYTHON:-none}; generator: $GC_GENERATOR; compute-sanitizer: ${GC_SANITIZER:-none}"
  echo "prebuilt: ${GC_PREBUILT:-none}; LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  echo "pip-wheel CUDA library folders: ${GC_WHEEL_LIBS:-none}"
  nvidia-smi 2>&1 | head -n 15
} >> "$log"
echo "gpu_check: ${gpu_name:-no GPU (dry run)}, sm_$arch, budget ${total}s, log folder $log_dir"
# Data for the train and memcheck stages: 5 × 64 = 320 training images (5 full batches) + 128 test;
# 5 × 40 = 200 (3 full batches, a partial one of 8) + 100 test.
if [[ -n "$GC_PYTHON" ]] && "$GC_PYTHON" scripts/make_random_cifar10.py "$state/data-train" 64 128 >> "$log" 2>&1 &&
   "$GC_PYTHON" scripts/make_random_cifar10.py "$state/data-small" 40 100 >> "$log" 2>&1; then
  setup_result=PASS
else
  setup_result=FAIL; setup_notes+=("no python3 to write the data sets")
fi
CAPS[setup]=${BUDGET[setup]}
setup_note=""
for n in "${setup_notes[@]}"; do setup_note+="${setup_note:+, }$n"; done
report setup "$setup_result" $((SECONDS - t0)) "$setup_note"

run_stage build
extra_ld=$(cat "$state/ld_path" 2> /dev/null)
[[ -n "$extra_ld" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$extra_ld"
if [[ $dry_run == 1 ]]; then
  for s in info gpu-tests kernel-bench parity train memcheck bench; do report "$s" SKIP 0 "--dry-run"; done
elif [[ "${RESULT[build]}" != PASS ]]; then
  for s in info gpu-tests kernel-bench parity train memcheck bench; do report "$s" SKIP 0 "no binaries"; done
else
  for s in info gpu-tests kernel-bench parity train memcheck bench; do run_stage "$s"; done
fi

echo
cat "$log_dir/summary.txt"
failed=0
for s in "${STAGES[@]}"; do [[ "${RESULT[$s]:-}" == FAIL ]] && failed=1; done
if [[ $failed == 0 ]]; then echo "gpu_check: no stage failed ($((SECONDS - start))s)"
else echo "gpu_check: FAILED ($((SECONDS - start))s)"; fi
[[ -f "$log_dir/bench.txt" ]] && { echo; cat "$log_dir/bench.txt"; }
exit $failed
