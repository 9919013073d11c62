#!/usr/bin/env bash
# Data-parallel scaling on the CPU: the default net on Fashion-MNIST at one global batch, one
# process with 2 threads against 2 MPI ranks with 1 thread each (same cores, same trajectory).
# Prints the training images/s of each (metrics.jsonl, the last epoch) and their ratio.
#   scripts/bench_scaling.sh [--epochs N] [--limit N] [--batch N] [--build DIR]
# GPUs (--gpus "1 2 4 8"): `mpirun -np N --device cuda` for each N (as many as are visible) at a
# fixed per-GPU batch (--per-gpu-batch, 512): images/s and the scaling efficiency against 1 GPU,
# images_per_s(N) / (N × images_per_s(1)), of the last epoch (the first one captures the graphs).
#   scripts/bench_scaling.sh --gpus "1 2 4 8" [--per-gpu-batch 512] [--epochs 3] [--limit 0]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=""; limit=""; batch=64; build=build; gpus=""; per_gpu=512
usage="usage: $0 [--epochs N] [--limit N] [--batch N] [--build DIR] [--gpus \"1 2 4 8\" [--per-gpu-batch N]]"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --epochs) epochs="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --gpus) gpus="$2"; shift 2 ;;
    --per-gpu-batch) per_gpu="$2"; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
data=/usr/share/datasets/fashion-mnist
[[ -x "$build/gputrain" ]] || { echo "bench_scaling: $build/gputrain not built" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "bench_scaling: mpirun missing (apt-get install openmpi-bin)" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

if [[ -n "$gpus" ]]; then
  visible=$("$build/gputrain" info --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
  [[ "$visible" -gt 0 ]] || { echo "bench_scaling: no CUDA device visible" >&2; exit 3; }
  epochs=${epochs:-3}; limit=${limit:-0}
  echo "== GPUs: $visible visible; per-GPU batch $per_gpu, $epochs epoch(s), data.train_limit=$limit"
  for n in $gpus; do
    if [[ "$n" -gt "$visible" ]]; then echo "-- $n GPUs: skipped ($visible visible)"; continue; fi
    echo "-- $n GPU(s), global batch $((per_gpu * n))"
    mpirun -np "$n" --allow-run-as-root --bind-to none \
      "$build/gputrain" train --config configs/fashion_mnist.yaml --device cuda --quiet \
      --set train.epochs="$epochs" --set train.batch_size=$((per_gpu * n)) \
      --set data.train_limit="$limit" --set data.dir="$data" --out "$out/gpu$n"
  done
  python3 - "$out" $gpus <<'PY'
import json, os, sys
out, counts = sys.argv[1], [int(n) for n in sys.argv[2:]]
rates = {}
for n in counts:
    path = os.path.join(out, f"gpu{n}", "metrics.jsonl")
    if os.path.exists(path):
        rates[n] = [json.loads(l) for l in open(path)][-1]["images_per_s"]
base = rates.get(1)
print("GPUs  images/s  per GPU  efficiency vs 1 GPU")
for n, r in rates.items():
    eff = f"{r / (n * base):.1%}" if base else "n/a (no 1-GPU run)"
    print(f"{n:>4}  {r:>8.0f}  {r / n:>7.0f}  {eff}")
PY
  exit 0
fi

epochs=${epochs:-1}; limit=${limit:-10000}
common=(train --config configs/fashion_mnist.yaml --device cpu --quiet --set train.epochs="$epochs"
        --set train.batch_size="$batch" --set data.train_limit="$limit" --set data.dir="$data")

echo "== 1 rank x 2 threads (global batch $batch, $limit images, $epochs epoch(s))"
OMP_NUM_THREADS=2 "$build/gputrain" "${common[@]}" --set train.threads=2 --out "$out/one"
echo "== 2 ranks x 1 thread"
mpirun -np 2 --oversubscribe --allow-run-as-root --bind-to none -x OMP_NUM_THREADS=1 \
  "$build/gputrain" "${common[@]}" --set train.threads=1 --out "$out/two"

python3 - "$out/one/metrics.jsonl" "$out/two/metrics.jsonl" <<'PY'
import json, sys
one = [json.loads(l) for l in open(sys.argv[1])][-1]
two = [json.loads(l) for l in open(sys.argv[2])][-1]
print(f"1 rank  x 2 threads: {one['images_per_s']:.0f} images/s, test accuracy {one['test_acc']:.4f}")
print(f"2 ranks x 1 thread : {two['images_per_s']:.0f} images/s, test accuracy {two['test_acc']:.4f}")
print(f"ratio (2 ranks / 1 rank): {two['images_per_s'] / one['images_per_s']:.2f}")
PY
