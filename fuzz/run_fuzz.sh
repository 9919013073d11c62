#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang under ASan + UBSan in BUILD_DIR and runs each for a
# short while from the committed seeds (fuzz/corpus/<target>, read only; new inputs go to a
# temporary folder). Exit 0: no target found anything; 1: a crash, sanitizer report, timeout or
# leak (the log tail and the reproducer's path are printed); 77: no clang/libFuzzer here (ctest
# reports the test as skipped). `ctest -L fuzz` runs it.
#   fuzz/run_fuzz.sh [BUILD_DIR]        GPUTRAIN_FUZZ_SECONDS (default 20) per target,
#                                       GPUTRAIN_FUZZ_TARGETS to pick ("json config ...")
# Targets run as many at a time as there are cores: on 2 cores, 6 targets x 20 s ≈ 60 s plus the
# build (≈ 45 s of CPU).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-fuzz}
seconds=${GPUTRAIN_FUZZ_SECONDS:-20}
targets=${GPUTRAIN_FUZZ_TARGETS:-"json config plan safetensors idx cifar10"}

cxx=""
for c in clang++ clang++-14 clang++-15 clang++-16; do
  if command -v "$c" > /dev/null; then cxx=$(command -v "$c"); break; fi
done
if [[ -z "$cxx" ]]; then echo "run_fuzz: no clang++ found: skipped"; exit 77; fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  > "$probe/p.cpp"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" 2> "$probe/err"; then
  echo "run_fuzz: $cxx cannot link libFuzzer (libclang-rt-dev missing?): skipped"
  head -n 3 "$probe/err"
  exit 77
fi

generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
echo "run_fuzz: building the targets with $cxx in $build"
mkdir -p "$build"
cmake -S "$root/fuzz" -B "$build" "${generator[@]}" -DCMAKE_CXX_COMPILER="$cxx" > "$build/configure.log" 2>&1 \
  || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" > "$build/build.log" 2>&1 || { tail -n 40 "$build/build.log"; exit 1; }

run_one() {
  local t=$1 work
  work=$(mktemp -d "$probe/$t.XXXXXX")
  # -rss_limit_mb: a reader must reject a header that claims gigabytes, not allocate them.
  if "$build/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
       -print_final_stats=1 -artifact_prefix="$build/crash-$t-" "$work" "$root/fuzz/corpus/$t" \
       > "$build/fuzz_$t.log" 2>&1; then
    echo "run_fuzz: $t: ok ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$build/fuzz_$t.log" \
      | grep -o '[0-9]*$') executions in ${seconds} s)"
  else
    echo "run_fuzz: $t: FOUND A PROBLEM (log: $build/fuzz_$t.log)"
    grep -E 'ERROR|runtime error|SUMMARY|Test unit written|==[0-9]+==' "$build/fuzz_$t.log" | head -n 20
    return 1
  fi
}
export -f run_one
export build seconds root probe
rm -f "$build"/crash-*
# Each target is one process on one core: run as many at once as there are cores.
if printf '%s\n' $targets | xargs -P "$(nproc)" -I{} bash -c 'run_one {}'; then
  echo "run_fuzz: every target ran ${seconds} s without a finding"
else
  echo "run_fuzz: a target found a problem; reproduce with $build/fuzz_<target> <crash file>"
  exit 1
fi
