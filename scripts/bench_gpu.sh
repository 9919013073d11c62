#!/usr/bin/env bash
# GPU benchmark, one run on one GPU: the tutorial's CNN (configs/cifar10.yaml) on CIFAR-10-shaped
# data (3×32×32, 50,000 training images, batch 64), the same data for every row.
#
#   gputrain --device cuda, per precision (train.precision = fp32 | tf32 | bf16) in graph mode and
#            eager (--no-graph);
#   PyTorch  (scripts/torch_reference.py) per precision, three ways: the tutorial's DataLoader loop
#            (loader), the data resident on the GPU (resident), resident + torch.compile (compile);
#            PyTorch's TF32 switches match the gputrain mode (fp32: TF32 off in cuDNN and cuBLAS;
#            tf32: on; bf16: forward + loss under autocast(bfloat16)).
# Prints for each row images/s, epoch milliseconds (training part of the epoch, from images/s) and
# NVML GPU busy %, then gputrain graph's speed-up over each PyTorch variant at the same precision.
# A precision this gputrain build does not know (its config rejects train.precision: exit 2,
# "unknown key") is reported as "n/a (not supported by this build)", not as a failure.
#
# Each run trains --epochs epochs (default 2) and reports its LAST epoch, so one-time costs (CUDA
# context, cuDNN/cuBLAS set-up, graph capture, torch.compile) stay out of the numbers. Each run is
# capped in time (--cap-gputrain, --cap-torch, --cap-compile seconds; killed runs read "n/a
# (timed out)"), and --time-limit S bounds the whole benchmark: runs go in order of value (fp32
# first: gputrain graph, eager, PyTorch resident, loader, compile; then tf32, then bf16), each
# capped by the time left, and those that get no time read "n/a (no time left)".
#
# Data: --data DIR, else data/cifar-10-batches-bin when present (scripts/fetch_cifar10.sh), else
# random pixels written by scripts/make_random_cifar10.py (speed does not depend on pixel values).
#
#   scripts/bench_gpu.sh [--bin DIR | --build DIR] [--epochs N] [--data DIR]
#                        [--precisions fp32,tf32,bf16] [--torch loader,resident,compile]
#                        [--skip-torch] [--time-limit S] [--cap-gputrain S] [--cap-torch S]
#                        [--cap-compile S] [--table-out FILE]
# Exit status: 0 when gputrain's fp32 graph row ran; 1 when a gputrain run failed (other than an
# unsupported precision); 2 bad usage or nothing to run. PyTorch failures make their row "n/a" and
# do not fail the benchmark.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
bin=""; build=build; epochs=2; data=""; precisions="fp32,tf32,bf16"; torch_variants="loader,resident,compile"
time_limit=0; cap_gputrain=90; cap_torch=90; cap_compile=150; table_out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --precisions) precisions="$2"; shift 2 ;;
    --torch) torch_variants="$2"; shift 2 ;;
    --skip-torch) torch_variants=""; shift ;;
    --time-limit) time_limit="$2"; shift 2 ;;
    --cap-gputrain) cap_gputrain="$2"; shift 2 ;;
    --cap-torch) cap_torch="$2"; shift 2 ;;
    --cap-compile) cap_compile="$2"; shift 2 ;;
    --table-out) table_out="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench_gpu: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$bin" ]] || bin="$build"
gputrain="$bin/gputrain"
python=$(command -v python3 || true)
[[ -n "$python" ]] || { echo "bench_gpu: python3 not on PATH" >&2; exit 2; }
[[ -x "$gputrain" ]] || { echo "bench_gpu: $gputrain not built (cmake --build $build --target gputrain)" >&2; exit 2; }
start=$SECONDS
out=$(mktemp -d "${TMPDIR:-/tmp}/gputrain-bench.XXXXXX")
trap 'rm -rf "$out"' EXIT

# Seconds a run may take: its cap, bounded by what is left of --time-limit (0 when none is left).
allowance() {
  local cap=$1
  if [[ "$time_limit" -gt 0 ]]; then
    local left=$((time_limit - (SECONDS - start) - 5))
    ((left < cap)) && cap=$left
    ((cap < 0)) && cap=0
  fi
  echo "$cap"
}

if [[ -z "$data" ]]; then
  if [[ -f data/cifar-10-batches-bin/test_batch.bin ]]; then
    data=data/cifar-10-batches-bin
    data_note="CIFAR-10 (data/cifar-10-batches-bin)"
  else
    data="$out/cifar-random"
    data_note="random CIFAR-10-shaped data, 50,000 + 10,000 images"
    # 5 × 10,000 training records + 10,000 test records of 1 label byte + 3072 pixel bytes.
    "$python" scripts/make_random_cifar10.py "$data" 10000 10000 || exit 1
  fi
else
  data_note="$data"
fi

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)
echo "== bench_gpu: ${gpu:-unknown GPU}; data: $data_note; batch 64; $epochs epoch(s), last one reported"
[[ "$time_limit" -gt 0 ]] && echo "== time limit ${time_limit}s; caps: gputrain ${cap_gputrain}s, PyTorch ${cap_torch}s, torch.compile ${cap_compile}s"

torch_ok=0
if [[ -n "$torch_variants" ]]; then
  if timeout 60 "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    torch_ok=1
  else
    echo "== PyTorch with CUDA not available to $python: PyTorch rows are n/a"
  fi
fi

# Every run leaves $out/<name>.jsonl (its epoch lines) or $out/<name>.na (why it has no numbers).
gputrain_failed=0
run_gputrain() {  # name precision graph|eager
  local name=$1 precision=$2 mode=$3 cap
  cap=$(allowance "$cap_gputrain")
  if ((cap < 5)); then echo "n/a (no time left)" > "$out/$name.na"; return; fi
  local args=(train --config configs/cifar10.yaml --device cuda --out "$out/run-$name" --quiet
              --set train.epochs="$epochs" --set train.batch_size=64 --set data.dir="$data")
  # fp32 is the default: leave the key out so a build without train.precision still runs it.
  [[ "$precision" != fp32 ]] && args+=(--set train.precision="$precision")
  [[ "$mode" == eager ]] && args+=(--no-graph)
  echo "== gputrain $precision $mode (cap ${cap}s)"
  local t0=$SECONDS rc
  timeout -k 5 "$cap" "$gputrain" "${args[@]}" 2> "$out/$name.err"
  rc=$?
  if [[ $rc == 2 ]] && grep -q "train.precision" "$out/$name.err"; then
    echo "   this build has no train.precision: $precision rows n/a"
    echo "n/a (not supported by this build)" > "$out/$name.na"
  elif cat "$out/$name.err" >&2; [[ $rc == 124 || $rc == 137 ]]; then
    echo "n/a (timed out after ${cap}s)" > "$out/$name.na"; gputrain_failed=1
  elif [[ $rc != 0 ]]; then
    echo "n/a (failed: exit $rc)" > "$out/$name.na"; gputrain_failed=1
  else
    cp "$out/run-$name/metrics.jsonl" "$out/$name.jsonl"
    echo "   $(tail -n 1 "$out/$name.jsonl") ($((SECONDS - t0))s)"
  fi
}
run_torch() {  # name precision variant
  local name=$1 precision=$2 variant=$3 cap args
  if [[ $torch_ok != 1 ]]; then echo "n/a (no PyTorch with CUDA)" > "$out/$name.na"; return; fi
  case "$variant" in
    loader) args=(--mode loader); cap=$cap_torch ;;
    resident) args=(--mode resident); cap=$cap_torch ;;
    compile) args=(--mode resident --compile); cap=$cap_compile ;;
  esac
  cap=$(allowance "$cap")
  if ((cap < 10)); then echo "n/a (no time left)" > "$out/$name.na"; return; fi
  echo "== PyTorch $precision $variant (cap ${cap}s)"
  local t0=$SECONDS rc
  timeout -k 5 "$cap" "$python" scripts/torch_reference.py --data "$data" --epochs "$epochs" --batch 64 \
    --threads "$(nproc)" --precision "$precision" --nvml "${args[@]}" > "$out/$name.jsonl"
  rc=$?
  if [[ $rc == 124 || $rc == 137 ]]; then
    echo "n/a (timed out after ${cap}s)" > "$out/$name.na"; rm -f "$out/$name.jsonl"
  elif [[ $rc != 0 ]] || [[ ! -s "$out/$name.jsonl" ]]; then
    echo "n/a (failed: exit $rc)" > "$out/$name.na"; rm -f "$out/$name.jsonl"
  else
    echo "   $(tail -n 1 "$out/$name.jsonl") ($((SECONDS - t0))s)"
  fi
}

IFS=, read -r -a precision_list <<< "$precisions"
for p in "${precision_list[@]}"; do
  case "$p" in fp32|tf32|bf16) ;; *) echo "bench_gpu: unknown precision '$p' (fp32, tf32, bf16)" >&2; exit 2 ;; esac
  run_gputrain "gputrain-$p-graph" "$p" graph
  if [[ -f "$out/gputrain-$p-graph.na" ]] && grep -q "not supported" "$out/gputrain-$p-graph.na"; then
    cp "$out/gputrain-$p-graph.na" "$out/gputrain-$p-eager.na"
  else
    run_gputrain "gputrain-$p-eager" "$p" eager
  fi
  for v in resident loader compile; do
    [[ ",$torch_variants," == *",$v,"* ]] && run_torch "torch-$p-$v" "$p" "$v"
  done
done

"$python" - "$out" "$precisions" "$torch_variants" "${gpu:-unknown GPU}" "$data_note" "$epochs" \
  "$data" > "$out/table.txt" <<'PY'
import json, os, sys
out, precisions, variants, gpu, data_note, epochs, data_dir = sys.argv[1:8]
train_images = sum(os.path.getsize(os.path.join(data_dir, f"data_batch_{i}.bin")) // 3073
                   for i in range(1, 6))
precisions = [p for p in precisions.split(",") if p]
variants = [v for v in ("loader", "resident", "compile") if v in variants.split(",")]

def row(name):
    path = os.path.join(out, name + ".jsonl")
    try:
        with open(path) as f:
            lines = [json.loads(l) for l in f if l.strip()]
        if lines:
            return lines[-1], None
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(out, name + ".na")) as f:
            return None, f.read().strip()
    except OSError:
        return None, "n/a (not run)"

results = {}
labels = {"graph": "gputrain (graph)", "eager": "gputrain (--no-graph)",
          "loader": "pytorch DataLoader loop", "resident": "pytorch data on GPU",
          "compile": "pytorch torch.compile"}
print(f"bench_gpu: {gpu}; {data_note} ({train_images} training images); batch 64; last of {epochs} epoch(s)")
print(f"{'precision':9} {'run':24} {'images/s':>10} {'epoch ms':>9} {'busy %':>7} {'graph/this':>10}")
for p in precisions:
    ref, _ = row(f"gputrain-{p}-graph")
    names = [(f"gputrain-{p}-{m}", labels[m]) for m in ("graph", "eager")]
    names += [(f"torch-{p}-{v}", labels[v]) for v in variants]
    for name, label in names:
        r, why = row(name)
        if r is None:
            print(f"{p:9} {label:24} {why}")
            continue
        ips = r["images_per_s"]
        # Both report images/s = training images / training seconds of the epoch (eval excluded).
        ms = 1000.0 * train_images / ips
        busy = r.get("gpu_busy_percent")
        busy_s = f"{busy:7.1f}" if isinstance(busy, (int, float)) else f"{'n/a':>7}"
        ratio = f"{ref['images_per_s'] / ips:9.2f}x" if ref else f"{'n/a':>10}"
        print(f"{p:9} {label:24} {ips:10.0f} {ms:9.1f} {busy_s} {ratio}")
        results[name] = (ips, ms, busy)

# The speed goals of issue 9 (H100/H200, batch 64): not tests, a reading of the table above.
goal_ms = {"fp32": 120, "tf32": 90, "bf16": 60}
print("goals (gputrain graph): epoch ms <= fp32 120 / tf32 90 / bf16 60; >= 20x the DataLoader loop; "
      ">= 1.5x torch.compile; GPU busy >= 95%")
for p in precisions:
    g = results.get(f"gputrain-{p}-graph")
    if g is None:
        print(f"  {p}: n/a")
        continue
    ips, ms, busy = g
    parts = [f"epoch {ms:.1f} ms {'<=' if ms <= goal_ms[p] else '>'} {goal_ms[p]} "
             f"{'met' if ms <= goal_ms[p] else 'MISSED'}"]
    for v, need in (("loader", 20.0), ("compile", 1.5)):
        t = results.get(f"torch-{p}-{v}")
        if t is not None:
            x = ips / t[0]
            parts.append(f"{x:.1f}x {v} {'met' if x >= need else 'MISSED'}")
        else:
            parts.append(f"{v} n/a")
    if isinstance(busy, (int, float)):
        parts.append(f"busy {busy:.0f}% {'met' if busy >= 95 else 'MISSED'}")
    else:
        parts.append("busy n/a")
    print(f"  {p}: " + "; ".join(parts))
PY
cat "$out/table.txt"
[[ -n "$table_out" ]] && cp "$out/table.txt" "$table_out"
if [[ ! -f "$out/gputrain-fp32-graph.jsonl" ]] && [[ " ${precision_list[*]} " == *" fp32 "* ]]; then
  exit 1
fi
exit $gputrain_failed
