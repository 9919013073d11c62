#!/usr/bin/env bash
# CPU benchmark: the default net on the same Fashion-MNIST images, batch 64, with gputrain and with
# PyTorch (scripts/torch_reference.py, the tutorial's loop with the data resident), same machine, same
# threads, one after the other: first with the system's default BLAS (what Debian's alternatives
# point libopenblas.so.0 at), then with each installed OpenBLAS build forced for both programs
# (LD_LIBRARY_PATH=/usr/lib/<arch>/openblas-{openmp,pthread,serial}). Prints, per run, the BLAS each
# program actually loaded, images/s, accuracy and the ratio, then gputrain's spread across builds.
#   scripts/bench_cpu.sh [--threads N] [--epochs N] [--limit N] [--build DIR] [--variants "a b"]
# --variants picks among: default openmp pthread serial (default: all that are installed).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=$(nproc); epochs=1; limit=0; build=build; variants=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --variants) variants="$2"; shift 2 ;;
    *) echo "usage: $0 [--threads N] [--epochs N] [--limit N] [--build DIR] [--variants \"default openmp pthread serial\"]" >&2; exit 2 ;;
  esac
done
data=/usr/share/datasets/fashion-mnist
python=/usr/bin/python3
libdir=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
[[ -x "$build/gputrain" ]] || { echo "bench_cpu: $build/gputrain not built (cmake --build $build)" >&2; exit 2; }
if [[ -z "$variants" ]]; then
  variants="default"
  for v in openmp pthread serial; do
    [[ -e "$libdir/openblas-$v/libopenblas.so.0" ]] && variants+=" $v"
  done
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "bench_cpu: $threads threads, batch 64, $epochs epoch(s), train limit ${limit} (0 = all), builds: $variants"
echo "bench_cpu: load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other processes skew the figures)"

# Which BLAS PyTorch loads (its libtorch_cpu links libblas.so.3 and libopenblas.so.0) and how that
# library threads: read from the process's own mappings after a matrix product.
cat > "$out/torch_blas.py" <<'PY'
import ctypes, torch
torch.mm(torch.ones(256, 256), torch.ones(256, 256))
paths = sorted({l.split()[-1] for l in open("/proc/self/maps")
                if "/" in l and ("blas" in l.split()[-1] or "mkl" in l.split()[-1])})
desc = []
for p in paths:
    if "openblas" in p:
        lib = ctypes.CDLL(p)
        lib.openblas_get_config.restype = ctypes.c_char_p
        kind = {0: "sequential", 1: "pthreads", 2: "openmp"}.get(lib.openblas_get_parallel(), "?")
        version = lib.openblas_get_config().decode().split()[1]
        text = f"OpenBLAS {version} ({kind}, {lib.openblas_get_num_threads()} threads)"
        if text not in desc:
            desc.append(text)
names = " ".join(p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p in paths)
print(("; ".join(desc) if desc else "no OpenBLAS") + (f" [{names}]" if names else ""))
PY

for v in $variants; do
  if [[ "$v" == default ]]; then env_prefix=(env); else env_prefix=(env "LD_LIBRARY_PATH=$libdir/openblas-$v"); fi
  run="$out/$v"
  mkdir -p "$run"
  echo "== $v: gputrain"
  "${env_prefix[@]}" "$build/gputrain" train --config configs/fashion_mnist.yaml --device cpu \
    --out "$run/gputrain" --set train.epochs="$epochs" --set train.threads="$threads" \
    --set train.batch_size=64 --set data.train_limit="$limit" --set data.dir="$data" \
    > "$run/gputrain.log" 2>&1 || { cat "$run/gputrain.log"; exit 1; }
  grep -o 'training on .*' "$run/gputrain.log" | head -n 1 | sed 's/:.*//' > "$run/gputrain.blas"
  tail -n 1 "$run/gputrain/metrics.jsonl"
  echo "== $v: PyTorch"
  "${env_prefix[@]}" "$python" "$out/torch_blas.py" > "$run/torch.blas"
  torch_args=(--data "$data" --epochs "$epochs" --batch 64 --threads "$threads" --mode resident)
  [[ "$limit" != 0 ]] && torch_args+=(--limit "$limit")
  "${env_prefix[@]}" OMP_NUM_THREADS="$threads" "$python" scripts/torch_reference.py "${torch_args[@]}" \
    | tee "$run/torch.jsonl"
done
echo "bench_cpu: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

"$python" - "$out" $variants <<'PY'
import json, sys
from pathlib import Path
out, variants = Path(sys.argv[1]), sys.argv[2:]
rows = []
for v in variants:
    g = [json.loads(l) for l in open(out / v / "gputrain" / "metrics.jsonl")][-1]
    t = [json.loads(l) for l in open(out / v / "torch.jsonl")][-1]
    gb = (out / v / "gputrain.blas").read_text().strip().replace("training on ", "")
    tb = (out / v / "torch.blas").read_text().strip()
    rows.append((v, g["images_per_s"], g["test_acc"], gb, t["images_per_s"], t["test_acc"], tb))
print()
print(f"{'BLAS':8} | {'gputrain img/s':>14} | {'acc':>6} | {'PyTorch img/s':>13} | {'acc':>6} | {'ratio':>6}")
print("-" * 68)
for v, gi, ga, gb, ti, ta, tb in rows:
    print(f"{v:8} | {gi:14.0f} | {ga:6.4f} | {ti:13.0f} | {ta:6.4f} | {gi / ti:5.2f}x")
print()
for v, gi, ga, gb, ti, ta, tb in rows:
    print(f"{v:8}  gputrain: {gb}\n{'':8}  PyTorch : {tb}")
g = [r[1] for r in rows]
print(f"\ngputrain across builds: min {min(g):.0f}, max {max(g):.0f} images/s "
      f"(max/min {max(g) / min(g):.2f}; goal <= 1.15)")
print(f"gputrain/PyTorch: min {min(r[1] / r[4] for r in rows):.2f}x (goal >= 1.3x)")
PY
