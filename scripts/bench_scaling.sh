#!/usr/bin/env bash
# Data-parallel scaling on the CPU: the default net on Fashion-MNIST at one global batch, one
# process with 2 threads against 2 MPI ranks with 1 thread each (same cores, same trajectory).
# Prints the training images/s of each (metrics.jsonl, the last epoch) and their ratio.
#   scripts/bench_scaling.sh [--epochs N] [--limit N] [--batch N] [--build DIR]
# GPUs (not measured here): the same comparison with `mpirun -np N` on a machine with N GPUs at a
# fixed per-GPU batch, --set train.batch_size=$((512 * N)).
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=1; limit=10000; batch=64; build=build
while [[ $# -gt 0 ]]; do
  case "$1" in
    --epochs) epochs="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    *) echo "usage: $0 [--epochs N] [--limit N] [--batch N] [--build DIR]" >&2; exit 2 ;;
  esac
done
data=/usr/share/datasets/fashion-mnist
[[ -x "$build/gputrain" ]] || { echo "bench_scaling: $build/gputrain not built" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "bench_scaling: mpirun missing (apt-get install openmpi-bin)" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
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
