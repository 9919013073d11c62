"""The forward and trajectory parity cases against gputrain's CUDA backend (--device cuda). Skipped
where `gputrain info` reports no usable CUDA device (no GPU, or a build without the CUDA backend).
The oracle is the same PyTorch float32 CPU computation as for the CPU backend.

Tolerances (FP32 throughout; gputrain's CUDA backend does not use TF32):
  forward logits / loss   3e-5   cuDNN may pick Winograd/FFT/implicit-GEMM convolutions and cuBLAS
                                 split-K GEMMs: other summation orders and, for Winograd/FFT, transform
                                 rounding of a few ulp per output; over K = 25088-term dot products
                                 (fc1) that is ~1e-6..1e-5 of max|logit|, so 3e-5 leaves headroom
                                 without hiding a convention error (mutants differ by >= 0.3).
  weights after 16 steps  1e-4   the acceptance bar of the CPU backend: weights are dominated by the
                                 init, and PyTorch fp32 vs fp64 already differs by up to 1.6e-5 here.
  updates w - w0          2e-3   twice the CPU bar: per-step gradient noise of the convolution
                                 algorithms enters the updates directly.

train.precision tf32 / bf16 against the same FP32 oracle (relative to max |reference|, as above):
  tf32 forward            1e-2   TF32 rounds each conv/GEMM input to 10 mantissa bits (relative error
                                 <= 2^-11 = 4.9e-4 per input, ~1e-3 per product); with FP32
                                 accumulation the errors of a K-term dot product add up like a random
                                 walk, so a layer's output is off by ~1e-3 of its scale and 4-5
                                 layers compound to a few 1e-3: 1e-2 is the bound PyTorch's own TF32
                                 notes give for convnets, still 30x below a convention error (>= 0.3).
  bf16 forward            5e-2   BF16 keeps 7 mantissa bits (2^-9 = 2e-3 per input, 4e-3 per product,
                                 8x TF32) on the GEMM inputs (convolutions are TF32, precision.hpp):
                                 a few 1e-2 after the fc layers; 5e-2 is still 6x below a convention
                                 error.
  weights after 16 steps  1e-3 / 5e-3   the weights are the init plus 16 small updates: the updates'
                                 error below, times their size relative to the weights (<~ 5%).
  updates w - w0          3e-2 / 1e-1   each update carries the gradients' relative error (the
                                 forward's, through the backward's GEMMs once more).
These bounds are derived, not yet measured on a GPU; the first GPU run reports the actual values.
"""
import re
import subprocess

import numpy as np
import pytest

import cases
import parity_lib as pl

FWD_TOL_CUDA = 3e-5
TRAJ_TOL_CUDA = 1e-4
UPDATE_TOL_CUDA = 2e-3
# train.precision -> (forward, weights after the trajectory, updates) bounds against FP32 PyTorch.
PRECISION_TOLS = {"tf32": (1e-2, 1e-3, 3e-2), "bf16": (5e-2, 5e-3, 1e-1)}


def _cuda_available():
    try:
        p = subprocess.run([pl.gputrain_bin(), "info"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"gputrain info failed: {e}"
    text = p.stdout + p.stderr
    if p.returncode != 0:
        return False, f"gputrain info exited {p.returncode}: {text.strip()[:300]}"
    m = re.search(r"^cuda:\d+\s.*$", p.stdout, re.M)      # "cuda:0  NVIDIA H100 ...  compute capability 9.0"
    if m:
        return True, m.group(0)
    return False, text.strip()[:300]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    ok, why = _cuda_available()
    if not ok:
        pytest.skip(f"no CUDA device for gputrain: {why}")
    pl.report("cuda", "devices found", 1, note=why)
    return cases.Env(tmp_path_factory.mktemp("parity-cuda"))


@pytest.mark.parametrize("arch", list(cases.ARCHS))
def test_forward_cuda(env, arch, tmp_path):
    seed = 100 + list(cases.ARCHS).index(arch)
    w, _ = env.init_weights(arch, seed)
    m, s = env.norm(arch)
    logits, y, loss = env.forward_oracle(arch, seed)
    res, dump = pl.evaluate(env.configs[arch], w, tmp_path / "logits.safetensors", device="cuda",
                            data__test_limit=64, data__train_limit=64, data__mean=m, data__std=s)
    cases.check_eval(f"cuda forward {arch}", res, dump, logits, y, loss, FWD_TOL_CUDA)


CUDA_TRAJ = ["accept", "partial-1000", "nesterov-wd-partial", "epochs-2", "tutorial-32x3", "pooled-28", "linear-28"]


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "no-graph"])
@pytest.mark.parametrize("case", CUDA_TRAJ)
def test_trajectory_cuda(env, case, graph):
    if not graph and case != "accept":
        pytest.skip("--no-graph only for the acceptance case")
    arch, seed, *_ = cases.TRAJECTORIES[case]
    tensors, _ = env.trajectory_gputrain(case, device="cuda", extra_args=() if graph else ("--no-graph",))
    ref = env.trajectory_oracle(case)
    _, init = env.init_weights(arch, seed)
    tag = f"cuda trajectory {case}{'' if graph else ' --no-graph'}"
    worst, where = pl.worst_rel(tensors, ref)
    pl.report(tag, f"max rel weight diff after {cases.steps_of(case)} steps", worst, TRAJ_TOL_CUDA, f"({where})")
    upd, uwhere = pl.worst_rel({k: tensors[k].astype(np.float64) - init[k] for k in init},
                               {k: ref[k] - init[k] for k in init})
    pl.report(tag, "max rel update diff", upd, UPDATE_TOL_CUDA, f"({uwhere})")
    assert worst <= TRAJ_TOL_CUDA, f"{case}: CUDA weights differ from PyTorch's by {worst:.3g} ({where})"
    assert upd <= UPDATE_TOL_CUDA, f"{case}: CUDA updates differ from PyTorch's by {upd:.3g} ({uwhere})"


@pytest.mark.parametrize("precision", list(PRECISION_TOLS))
@pytest.mark.parametrize("arch", list(cases.ARCHS))
def test_forward_cuda_reduced_precision(env, arch, precision, tmp_path):
    seed = 100 + list(cases.ARCHS).index(arch)
    w, _ = env.init_weights(arch, seed)
    m, s = env.norm(arch)
    logits, y, loss = env.forward_oracle(arch, seed)
    res, dump = pl.evaluate(env.configs[arch], w, tmp_path / "logits.safetensors", device="cuda",
                            data__test_limit=64, data__train_limit=64, data__mean=m, data__std=s,
                            train__precision=precision)
    cases.check_eval(f"cuda {precision} forward {arch}", res, dump, logits, y, loss,
                     PRECISION_TOLS[precision][0])


@pytest.mark.parametrize("precision", list(PRECISION_TOLS))
@pytest.mark.parametrize("case", ["accept", "tutorial-32x3"])
def test_trajectory_cuda_reduced_precision(env, case, precision):
    _, traj_tol, update_tol = PRECISION_TOLS[precision]
    arch, seed, *_ = cases.TRAJECTORIES[case]
    tensors, _ = env.trajectory_gputrain(case, device="cuda",
                                         extra_args=("--set", f"train.precision={precision}"))
    ref = env.trajectory_oracle(case)
    _, init = env.init_weights(arch, seed)
    tag = f"cuda {precision} trajectory {case}"
    worst, where = pl.worst_rel(tensors, ref)
    pl.report(tag, f"max rel weight diff after {cases.steps_of(case)} steps", worst, traj_tol, f"({where})")
    upd, uwhere = pl.worst_rel({k: tensors[k].astype(np.float64) - init[k] for k in init},
                               {k: ref[k] - init[k] for k in init})
    pl.report(tag, "max rel update diff", upd, update_tol, f"({uwhere})")
    assert worst <= traj_tol, f"{case} {precision}: weights differ from PyTorch's by {worst:.3g} ({where})"
    assert upd <= update_tol, f"{case} {precision}: updates differ from PyTorch's by {upd:.3g} ({uwhere})"
