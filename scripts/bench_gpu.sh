#!/usr/bin/env bash
# GPU benchmark: the tutorial's CNN (configs/cifar10.yaml) on CIFAR-10-shaped data (3×32×32, 50,000
# training images, batch 64) with gputrain --device cuda, then on the same GPU in the same run with
# PyTorch (scripts/torch_reference.py, a copy of the shared reference) three ways: the tutorial's
# DataLoader loop (--mode loader), the data resident on the GPU (--mode resident), and resident with
# torch.compile. Prints images/s of each, gputrain's ratio to each, and gputrain's GPU busy % (NVML,
# metrics.jsonl's gpu_busy_percent).
#
# Data: data/cifar-10-batches-bin when present (scripts/fetch_cifar10.sh), else random pixels written
# as CIFAR-10 binary files into a temporary folder (speed does not depend on the pixel values).
# Each run trains --epochs epochs (default 2) and reports its LAST epoch, so one-time costs (CUDA
# context, cuDNN/cuBLAS set-up, graph capture, torch.compile) stay out of the number.
#
#   scripts/bench_gpu.sh [--build DIR] [--epochs N] [--data DIR] [--skip-torch]
# Exit status: non-zero when gputrain fails; PyTorch rows say "n/a" when torch (with CUDA) is missing
# or a PyTorch run fails, which is reported but does not fail the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build; epochs=2; data=""; skip_torch=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --skip-torch) skip_torch=1; shift ;;
    *) echo "usage: $0 [--build DIR] [--epochs N] [--data DIR] [--skip-torch]" >&2; exit 2 ;;
  esac
done
python=$(command -v python3 || true)
[[ -n "$python" ]] || { echo "bench_gpu: python3 not on PATH" >&2; exit 2; }
[[ -x "$build/gputrain" ]] || { echo "bench_gpu: $build/gputrain not built (cmake --build $build)" >&2; exit 2; }
out=$(mktemp -d "${TMPDIR:-/tmp}/gputrain-bench.XXXXXX")
trap 'rm -rf "$out"' EXIT

if [[ -z "$data" ]]; then
  if [[ -f data/cifar-10-batches-bin/test_batch.bin ]]; then
    data=data/cifar-10-batches-bin
    data_note="CIFAR-10 (data/cifar-10-batches-bin)"
  else
    data="$out/cifar-random"
    data_note="random CIFAR-10-shaped data (no data/cifar-10-batches-bin)"
    # 5 × 10,000 training records + 10,000 test records of 1 label byte + 3072 pixel bytes.
    "$python" scripts/make_random_cifar10.py "$data" 10000 10000
  fi
else
  data_note="$data"
fi

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)
echo "== bench_gpu: ${gpu:-unknown GPU}; data: $data_note; batch 64; $epochs epoch(s), last one reported"

echo "== gputrain (CUDA graph)"
"$build/gputrain" train --config configs/cifar10.yaml --device cuda --out "$out/graph" --quiet \
  --set train.epochs="$epochs" --set train.batch_size=64 --set data.dir="$data"
tail -n 1 "$out/graph/metrics.jsonl"
echo "== gputrain (--no-graph: eager steps)"
"$build/gputrain" train --config configs/cifar10.yaml --device cuda --out "$out/eager" --quiet \
  --no-graph --set train.epochs="$epochs" --set train.batch_size=64 --set data.dir="$data"
tail -n 1 "$out/eager/metrics.jsonl"

torch_ok=0
if [[ $skip_torch == 0 ]]; then
  if "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    torch_ok=1
  else
    echo "== PyTorch with CUDA not available to $python: PyTorch rows are n/a"
  fi
fi
run_torch() {  # name, args...
  local name=$1; shift
  echo "== PyTorch $name"
  if ! "$python" scripts/torch_reference.py --data "$data" --epochs "$epochs" --batch 64 \
      --threads "$(nproc)" "$@" > "$out/torch-$name.jsonl"; then
    echo "   (failed; row n/a)"
    rm -f "$out/torch-$name.jsonl"
  else
    tail -n 1 "$out/torch-$name.jsonl"
  fi
}
if [[ $torch_ok == 1 ]]; then
  run_torch loader --mode loader
  run_torch resident --mode resident
  run_torch compile --mode resident --compile
fi

"$python" - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def last(path):
    try:
        with open(path) as f:
            lines = [l for l in f if l.strip()]
        return json.loads(lines[-1]) if lines else None
    except OSError:
        return None
g, e = last(f"{out}/graph/metrics.jsonl"), last(f"{out}/eager/metrics.jsonl")
rows = [("gputrain (graph)", g), ("gputrain (--no-graph)", e)]
for name, label in (("loader", "pytorch --mode loader"), ("resident", "pytorch --mode resident"),
                    ("compile", "pytorch resident --compile")):
    rows.append((label, last(f"{out}/torch-{name}.jsonl")))
ref = g["images_per_s"]
print()
print(f"{'run':30} {'images/s':>10} {'test acc':>9} {'gputrain/this':>14}")
for name, r in rows:
    if r is None:
        print(f"{name:30} {'n/a':>10}")
        continue
    ips = r["images_per_s"]
    print(f"{name:30} {ips:10.0f} {r['test_acc']:9.4f} {ref / ips:13.2f}x")
busy = g.get("gpu_busy_percent")
print(f"gputrain GPU busy: {busy:.1f} % (NVML, last epoch)" if busy is not None
      else "gputrain GPU busy: n/a (no NVML)")
PY
