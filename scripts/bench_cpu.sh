#!/usr/bin/env bash
# CPU benchmark: the default net on the same Fashion-MNIST images, one epoch at batch 64, with gputrain
# and with PyTorch (scripts/torch_reference.py, the tutorial's loop with the data resident), same
# machine, same threads, one after the other. Prints both images/s, accuracies and the ratio.
#   scripts/bench_cpu.sh [--threads N] [--epochs N] [--limit N] [--build DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=$(nproc); epochs=1; limit=0; build=build
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    *) echo "usage: $0 [--threads N] [--epochs N] [--limit N] [--build DIR]" >&2; exit 2 ;;
  esac
done
data=/usr/share/datasets/fashion-mnist
python=/usr/bin/python3
[[ -x "$build/gputrain" ]] || { echo "bench_cpu: $build/gputrain not built (cmake --build $build)" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== gputrain ($threads threads, batch 64, $epochs epoch(s), limit ${limit:-all})"
"$build/gputrain" train --config configs/fashion_mnist.yaml --device cpu --out "$out/run" --quiet \
  --set train.epochs="$epochs" --set train.threads="$threads" --set train.batch_size=64 \
  --set data.train_limit="$limit" --set data.dir="$data"
tail -n 1 "$out/run/metrics.jsonl"

echo "== PyTorch ($threads threads, batch 64, $epochs epoch(s))"
torch_args=(--data "$data" --epochs "$epochs" --batch 64 --threads "$threads" --mode resident)
[[ "$limit" != 0 ]] && torch_args+=(--limit "$limit")
OMP_NUM_THREADS="$threads" "$python" scripts/torch_reference.py "${torch_args[@]}" | tee "$out/torch.jsonl"

"$python" - "$out/run/metrics.jsonl" "$out/torch.jsonl" <<'PY'
import json, sys
g = [json.loads(l) for l in open(sys.argv[1])][-1]
t = [json.loads(l) for l in open(sys.argv[2])][-1]
print(f"gputrain: {g['images_per_s']:.0f} images/s, test accuracy {g['test_acc']:.4f}")
print(f"pytorch : {t['images_per_s']:.0f} images/s, test accuracy {t['test_acc']:.4f} ({t['peer']})")
print(f"ratio gputrain/pytorch: {g['images_per_s'] / t['images_per_s']:.2f}x")
PY
